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
use hajobs_scheduler::{Done, JobContext, JobManager, JobSpec, StartOutcome};
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

/// A keyspace with replication factor 3 on the three-node cluster, its
/// schema applied, and a session with a 2 s request timeout.
async fn rf3_keyspace(prefix: &str) -> (CassandraConfig, Arc<scylla::client::session::Session>) {
    let config = CassandraConfig::from_contact_list(&three_nodes())
        .with_keyspace(format!("t_{prefix}_{}", std::process::id()))
        .with_request_timeout(Duration::from_secs(2));
    let session = config
        .connect()
        .await
        .expect("connecting to the three-node cluster");
    let rf3 = schema::Replication::Simple {
        replication_factor: 3,
    };
    schema::apply(&session, &config.keyspace, &rf3)
        .await
        .unwrap();
    (config, session)
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

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
async fn fault_keeper_cancels_before_the_lease_can_expire_when_cassandra_is_lost() {
    let (config, session) = rf3_keyspace("keeper").await;
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

#[tokio::test(flavor = "multi_thread")]
async fn fault_a_job_runs_on_through_one_node_down_and_writes_need_a_quorum() {
    let (config, session) = rf3_keyspace("nodeloss").await;
    let manager = JobManager::builder(config.clone(), NodeId::new("replica-a").unwrap())
        .session(session.clone())
        .job(
            JobSpec::new("steady", "steady")
                .unwrap()
                .lease_ttl(Duration::from_secs(10))
                .unwrap(),
            |ctx: JobContext| async move {
                let mut step = 0;
                while ctx.lease_valid() {
                    step += 1;
                    if let Err(e) = ctx.progress(serde_json::json!({ "step": step })).await {
                        println!(
                            "node loss: progress {step} not written: {e} ({:?})",
                            std::error::Error::source(&e).map(ToString::to_string)
                        );
                    }
                    tokio::select! {
                        () = ctx.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(300)) => {}
                    }
                }
                Ok(Done::finished())
            },
        )
        .build()
        .await
        .unwrap();
    let StartOutcome::Started { job_id, .. } = manager.trigger("steady").await.unwrap() else {
        panic!("not started");
    };

    // One replica of three down: leases renew, statuses are written, the job runs on.
    local_cassandra(&["kill", "3"]).unwrap();
    let revive = Revive("3");
    let through = Instant::now();
    let statuses = manager.statuses().clone();
    let job_type = hajobs_core::JobType::new("steady").unwrap();
    while through.elapsed() < Duration::from_secs(12) {
        if manager.running_here("steady") != Some(job_id) {
            let end = statuses
                .get(&hajobs_core::JobType::new("steady").unwrap(), job_id)
                .await;
            panic!(
                "the job stopped with one node down after {:?}: {end:?}",
                through.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Until the cluster notices the dead node, a read may pick it and time out: retry.
    let mut latest = None;
    for _ in 0..10 {
        match statuses.get(&job_type, job_id).await {
            Ok(found) => {
                latest = found.and_then(|e| e.status().cloned());
                break;
            }
            Err(e) => println!("node loss: a status read failed, retrying: {e}"),
        }
    }
    let latest = latest.expect("no status read succeeded with one node down");
    assert_eq!(latest.state, hajobs_core::JobState::Running);
    let step = latest
        .content
        .as_ref()
        .and_then(|c| c["step"].as_i64())
        .unwrap_or(0);
    assert!(
        step >= 20,
        "progress stalled at step {step} with one node down"
    );
    println!("node loss: 12 s with node 3 down, job still running at step {step}");
    // The cancel reads the lock at SERIAL: just after a node's loss a Paxos
    // round may time out until the coordinators mark it down (seen in a
    // rehearsal: `WriteTimeout … received 0, required 2`). An operator
    // retries; so does the test, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match manager.cancel("steady").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                println!("node loss: cancel failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cancel failed with one node down for 30 s: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.running_here("steady").is_some() {
        assert!(Instant::now() < deadline, "cancel did not stop the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(revive); // node 3 back

    // Two of three down: no quorum. A status write fails after its retries, and says so.
    local_cassandra(&["kill", "2"]).unwrap();
    let _revive2 = Revive("2");
    local_cassandra(&["kill", "3"]).unwrap();
    let _revive3 = Revive("3");
    let status = hajobs_core::JobStatus {
        job_type: job_type.clone(),
        job_id: JobId::new(),
        trigger_id: hajobs_core::TriggerId::new(),
        timestamp: std::time::SystemTime::now(),
        state: hajobs_core::JobState::Running,
        owner: None,
        fencing_token: None,
        content: None,
    };
    let err = statuses
        .write(&status)
        .await
        .expect_err("a write without quorum returned OK");
    println!("no quorum: {err}");
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
    manager.shutdown(Duration::from_secs(5)).await;
}
