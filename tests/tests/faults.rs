//! Fault tests on a three-node local cluster (`deploy/local/cassandra start
//! --nodes 3`): they kill and restart Cassandra nodes, so the test command
//! runs them on their own, one at a time, after the other tests.

use std::time::{Duration, Instant};

use std::sync::Arc;

use hajobs_core::lwt::LwtOutcome;
use hajobs_core::{
    Acquired, CancelReason, Cancellation, CassandraConfig, JobId, LeaseStore, LeaseTtl, LockType,
    NodeId, schema,
};
use hajobs_lock_keeper::{KeeperConfig, keep};
use hajobs_tests::{contact_list, local_cassandra};

fn three_nodes() -> String {
    let nodes = contact_list();
    assert_eq!(
        nodes.split(',').count(),
        3,
        "fault tests need the three-node cluster: run `deploy/local/cassandra start --nodes 3` \
         and set HAJOBS_CQL_NODES to the contact points it prints (got `{nodes}`)"
    );
    nodes
}

/// Restarts a killed node even when the test fails half-way.
struct Revive(&'static str);

impl Drop for Revive {
    fn drop(&mut self) {
        if let Err(e) = local_cassandra(&["restart", self.0]) {
            eprintln!("could not restart node {}: {e:#}", self.0);
        }
    }
}

#[tokio::test]
async fn fault_rf3_takes_quorum_writes_and_serial_lwts_with_one_node_down() {
    let nodes = three_nodes();
    let config =
        CassandraConfig::from_contact_list(&nodes).with_request_timeout(Duration::from_secs(10));
    let session = config
        .connect()
        .await
        .expect("connecting to the three-node cluster");
    let ks = format!("t_rf3_{}", std::process::id());
    schema::apply(
        &session,
        &ks,
        &schema::Replication::Simple {
            replication_factor: 3,
        },
    )
    .await
    .unwrap();

    local_cassandra(&["kill", "3"]).unwrap();
    let _revive = Revive("3");

    // The driver may still try the dead node first; the default retry policy
    // moves on, and a few attempts cover the time it needs to mark it down.
    let write = session
        .prepare(format!(
            "INSERT INTO {ks}.lock (lock_type, owner) VALUES (?, ?)"
        ))
        .await
        .unwrap();
    let lwt = session
        .prepare(format!(
            "UPDATE {ks}.lock SET owner = ? WHERE lock_type = ? IF owner = ?"
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "no LOCAL_QUORUM write + LOCAL_SERIAL LWT succeeded in 60 s with one node down: {last_error:?}"
        );
        let key = format!("k{i}");
        match session.execute_unpaged(&write, (&key, "a")).await {
            Ok(_) => {}
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        }
        match session.execute_unpaged(&lwt, ("b", &key, "a")).await {
            Ok(result) => {
                let outcome = LwtOutcome::from_result(result, "lwt").unwrap();
                assert!(outcome.applied, "the LWT saw another value: {outcome:?}");
                break;
            }
            Err(e) => last_error = Some(e.to_string()),
        }
    }
}

#[tokio::test]
async fn fault_keeper_cancels_before_the_lease_can_expire_when_cassandra_is_lost() {
    let nodes = three_nodes();
    let config = CassandraConfig::from_contact_list(&nodes)
        .with_keyspace(format!("t_keeper_{}", std::process::id()))
        .with_request_timeout(Duration::from_secs(2));
    let session = config
        .connect()
        .await
        .expect("connecting to the three-node cluster");
    schema::apply(
        &session,
        &config.keyspace,
        &schema::Replication::Simple {
            replication_factor: 3,
        },
    )
    .await
    .unwrap();
    let store = Arc::new(LeaseStore::new(session, &config).await.unwrap());
    let ttl = LeaseTtl::from_secs(6).unwrap();
    let lock = LockType::new("unreachable").unwrap();
    let Acquired::Acquired(lease) = store
        .acquire(&lock, JobId::new(), &NodeId::new("replica-a").unwrap(), ttl)
        .await
        .unwrap()
    else {
        panic!("fresh lock held");
    };
    let kept = keep(
        store.clone(),
        lease,
        KeeperConfig::for_ttl(ttl),
        Cancellation::new(),
    )
    .await
    .unwrap();
    let mut rx = kept.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.renewals >= 1))
        .await
        .expect("no renewal confirmed on a healthy cluster")
        .unwrap();

    // Two of three replicas gone: no quorum, no LWT can be confirmed.
    local_cassandra(&["kill", "2"]).unwrap();
    let _revive2 = Revive("2");
    local_cassandra(&["kill", "3"]).unwrap();
    let _revive3 = Revive("3");

    tokio::time::timeout(
        ttl.duration() + Duration::from_secs(2),
        kept.cancellation().cancelled(),
    )
    .await
    .expect("the job was not cancelled within TTL + 2 s of losing Cassandra");
    let cancelled_at = Instant::now();
    let state = kept.state();
    let expiry_bound = state.last_confirmed_sent + ttl.duration();
    let ahead = expiry_bound.saturating_duration_since(cancelled_at);
    println!(
        "keeper: cancelled {ahead:?} before t + TTL (t = last confirmed renewal sent); \
         {} failed attempts; reason {:?}",
        state.consecutive_failures,
        kept.cancellation().reason()
    );
    assert!(
        cancelled_at < expiry_bound,
        "cancelled {:?} after t + TTL",
        cancelled_at - expiry_bound
    );
    assert!(
        cancelled_at + Duration::from_secs(1) <= expiry_bound,
        "cancelled only {ahead:?} before t + TTL; the lease may live just TTL − 1 s"
    );
    assert!(
        matches!(
            kept.cancellation().reason(),
            Some(CancelReason::LeaseExpiredUnconfirmed | CancelReason::LeaseLost)
        ),
        "{:?}",
        kept.cancellation().reason()
    );
    drop(kept);
}
