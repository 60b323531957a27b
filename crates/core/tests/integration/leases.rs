//! The lease store on a real Cassandra: races, TTL expiry, non-holders, fencing tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use hajobs_core::{
    Acquired, FencingToken, JobId, Lease, LeaseStore, LeaseTtl, LockType, NodeId, Released, Renewed,
};

use hajobs_core::testing::TestKeyspace;

async fn store(ks: &TestKeyspace) -> LeaseStore {
    ks.lease_store().await
}

fn node(i: usize) -> NodeId {
    NodeId::new(format!("node-{i}")).unwrap()
}

fn acquired(outcome: Acquired) -> Lease {
    match outcome {
        Acquired::Acquired(lease) => lease,
        Acquired::Held(h) => panic!("expected to acquire, but {h:?} holds the lock"),
    }
}

#[tokio::test]
async fn contenders_race_and_exactly_one_acquires_each_round() {
    let ks = TestKeyspace::new("race").await;
    // One store per contender: each has its own fencing-token guess, as
    // separate replicas would.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(Arc::new(store(&ks).await));
    }
    let lock = LockType::new("race").unwrap();
    let ttl = LeaseTtl::from_secs(30).unwrap();
    let mut last_token = FencingToken(0);
    for round in 0..500 {
        let contenders = 2 + round % 7;
        let jobs: Vec<JobId> = (0..contenders).map(|_| JobId::new()).collect();
        let outcomes = join_all((0..contenders).map(|i| {
            let (store, lock, job) = (stores[i].clone(), lock.clone(), jobs[i]);
            async move { store.acquire(&lock, job, &node(i), ttl).await }
        }))
        .await;
        let mut winners = Vec::new();
        let mut held_by = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome.unwrap_or_else(|e| panic!("round {round}, contender {i}: {e:#?}")) {
                Acquired::Acquired(lease) => winners.push((i, lease)),
                Acquired::Held(holder) => held_by.push((i, holder)),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} winners among {contenders}",
            winners.len()
        );
        let (w, lease) = winners.pop().unwrap();
        assert_eq!(lease.job_id, jobs[w]);
        assert!(
            lease.fencing_token > last_token,
            "round {round}: token did not grow"
        );
        last_token = lease.fencing_token;
        for (i, holder) in held_by {
            assert_eq!(
                holder.job_id, jobs[w],
                "round {round}: contender {i} was told the wrong holder"
            );
            assert_eq!(
                holder.fencing_token,
                Some(lease.fencing_token),
                "round {round}: contender {i}"
            );
            assert_eq!(
                holder.owner.as_deref(),
                Some(node(w).as_str()),
                "round {round}: contender {i}"
            );
        }
        assert_eq!(stores[w].release(&lease).await.unwrap(), Released::Released);
    }
    ks.drop().await;
}

#[tokio::test]
async fn a_lease_never_renewed_frees_the_lock_after_its_ttl_and_not_before() {
    let ks = TestKeyspace::new("expiry").await;
    let store = store(&ks).await;
    let lock = LockType::new("expiry").unwrap();
    let ttl = LeaseTtl::from_secs(3).unwrap();
    let first = acquired(
        store
            .acquire(&lock, JobId::new(), &node(1), ttl)
            .await
            .unwrap(),
    );
    let deadline = first.sent_at + Duration::from_secs(10);
    let second = loop {
        match store
            .acquire(&lock, JobId::new(), &node(2), ttl)
            .await
            .unwrap()
        {
            Acquired::Acquired(lease) => break lease,
            Acquired::Held(holder) => assert_eq!(holder.job_id, first.job_id),
        }
        assert!(
            Instant::now() < deadline,
            "the lock was still held 10 s after a 3 s TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let free_after = second.sent_at - first.sent_at;
    // Cassandra's whole-second expiry may shorten a TTL by up to one second.
    assert!(
        free_after >= ttl.guaranteed(),
        "free after {free_after:?}, before TTL − 1 s"
    );
    assert!(
        free_after <= ttl.duration() + Duration::from_secs(1),
        "free only after {free_after:?}"
    );
    assert!(second.fencing_token > first.fencing_token);
    ks.drop().await;
}

#[tokio::test]
async fn renew_and_release_by_a_non_holder_fail_and_leave_the_holder_alone() {
    let ks = TestKeyspace::new("nonholder").await;
    let store = store(&ks).await;
    let lock = LockType::new("report").unwrap();
    let ttl = LeaseTtl::from_secs(30).unwrap();
    let holder = acquired(
        store
            .acquire(&lock, JobId::new(), &node(1), ttl)
            .await
            .unwrap(),
    );
    let impostor = Lease {
        job_id: JobId::new(),
        owner: node(2),
        ..holder.clone()
    };
    assert_eq!(store.renew(&impostor).await.unwrap(), Renewed::Lost);
    assert_eq!(store.release(&impostor).await.unwrap(), Released::NotHolder);
    let read = store.read(&lock, true).await.unwrap().expect("still held");
    assert_eq!(read.job_id, holder.job_id);
    assert_eq!(read.owner.as_deref(), Some("node-1"));
    assert_eq!(read.fencing_token, Some(holder.fencing_token));
    assert!(matches!(
        store.renew(&holder).await.unwrap(),
        Renewed::Renewed { .. }
    ));
    assert_eq!(store.release(&holder).await.unwrap(), Released::Released);
    // Released: renewing now fails, and the lock is free.
    assert_eq!(store.renew(&holder).await.unwrap(), Renewed::Lost);
    assert_eq!(store.read(&lock, true).await.unwrap(), None);
    ks.drop().await;
}

#[tokio::test]
async fn fencing_tokens_strictly_increase_over_200_handovers() {
    let ks = TestKeyspace::new("fencing").await;
    // Two stores whose token guesses go stale in turn.
    let stores = [store(&ks).await, store(&ks).await];
    let lock = LockType::new("fenced \"lock\" ü").unwrap();
    let short = LeaseTtl::from_secs(2).unwrap();
    let long = LeaseTtl::from_secs(60).unwrap();
    let mut tokens: Vec<FencingToken> = Vec::new();
    let mut expiries = 0;
    let mut forced = 0;
    for i in 0..200 {
        let store = &stores[i % 2];
        let by_expiry = i % 67 == 5; // three handovers through TTL expiry
        let ttl = if by_expiry { short } else { long };
        // After an expiry the previous lease may linger up to its TTL: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let lease = loop {
            match store
                .acquire(&lock, JobId::new(), &node(i % 2), ttl)
                .await
                .unwrap()
            {
                Acquired::Acquired(lease) => break lease,
                Acquired::Held(_) => {
                    assert!(Instant::now() < deadline, "handover {i}: lock never freed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        if let Some(last) = tokens.last() {
            assert!(
                lease.fencing_token > *last,
                "handover {i}: {} after {last}",
                lease.fencing_token
            );
        }
        tokens.push(lease.fencing_token);
        if by_expiry {
            expiries += 1; // left to expire
        } else if i % 10 == 3 {
            let other = &stores[(i + 1) % 2];
            let freed = other.force_release(&lock).await.unwrap().expect("was held");
            assert_eq!(freed.job_id, lease.job_id);
            forced += 1;
        } else {
            assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
        }
    }
    assert_eq!(tokens.len(), 200);
    assert!(
        expiries >= 3 && forced >= 15,
        "expiries {expiries}, forced {forced}"
    );
    ks.drop().await;
}

#[tokio::test]
async fn a_stale_cancel_request_left_by_a_foreign_holder_is_cleared_by_the_next_acquisition() {
    let ks = TestKeyspace::new("stale_cancel").await;
    let s = store(&ks).await;
    let lock = LockType::new("shared").unwrap();
    let ttl = LeaseTtl::from_secs(30).unwrap();
    // An ha-jobs holder: its statements alone (no owner, no token), and a
    // cancel flag set on it, as an older hajobs did.
    let foreign = JobId::new();
    let ks_name = &ks.name;
    for cql in [
        format!(
            "INSERT INTO {ks_name}.lock (lock_type) VALUES ('shared') IF NOT EXISTS USING TTL 2592000"
        ),
        format!(
            "UPDATE {ks_name}.lock USING TTL 30 SET job_lock = {} WHERE lock_type = 'shared' IF job_lock = null",
            foreign.uuid()
        ),
        format!(
            "UPDATE {ks_name}.lock SET cancel_requested = true WHERE lock_type = 'shared' IF job_lock = {}",
            foreign.uuid()
        ),
    ] {
        ks.session.query_unpaged(cql, ()).await.unwrap();
    }
    let holder = s.read(&lock, true).await.unwrap().expect("held");
    assert!(holder.is_foreign(), "{holder:?}");
    // ha-jobs releases its way; the flag stays behind it.
    ks.session
        .query_unpaged(
            format!("UPDATE {ks_name}.lock SET job_lock = null WHERE lock_type = 'shared' IF job_lock = {}", foreign.uuid()),
            (),
        )
        .await
        .unwrap();
    // hajobs takes the lock: the stale flag must not cancel it.
    let lease = acquired(s.acquire(&lock, JobId::new(), &node(1), ttl).await.unwrap());
    let h = s.read(&lock, true).await.unwrap().unwrap();
    assert!(!h.is_foreign());
    assert!(matches!(
        s.renew(&lease).await.unwrap(),
        Renewed::Renewed { .. }
    ));
    ks.drop().await;
}
