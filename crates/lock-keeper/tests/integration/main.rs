//! The lock keeper on a real Cassandra (start one with `deploy/local/cassandra start`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use hajobs_core::testing::TestKeyspace;
use hajobs_core::{
    Acquired, CancelReason, Cancellation, JobId, Lease, LeaseStore, LeaseTtl, LockType, NodeId,
    Released,
};
use hajobs_lock_keeper::{KeeperConfig, KeptLease, LeasePhase, keep};

async fn acquire(store: &LeaseStore, lock: &str, ttl: LeaseTtl) -> Lease {
    let lock = LockType::new(lock).unwrap();
    match store
        .acquire(
            &lock,
            JobId::new(),
            &NodeId::new("keeper-test").unwrap(),
            ttl,
        )
        .await
        .unwrap()
    {
        Acquired::Acquired(lease) => lease,
        Acquired::Held(h) => panic!("{lock} unexpectedly held by {h:?}"),
    }
}

/// Waits for `condition` on the keeper's state, failing after `limit`.
async fn wait_for(
    kept: &KeptLease,
    limit: Duration,
    what: &str,
    condition: impl Fn(&hajobs_lock_keeper::LeaseState) -> bool,
) {
    let mut rx = kept.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|s| condition(s)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}; state {:?}", kept.state()))
        .expect("keeper state channel closed");
}

#[tokio::test]
async fn a_kept_lease_outlives_its_ttl_and_its_release_frees_the_lock() {
    let ks = TestKeyspace::new("keep").await;
    let store = Arc::new(ks.lease_store().await);
    let ttl = LeaseTtl::from_secs(3).unwrap();
    let lease = acquire(&store, "kept", ttl).await;
    let lock = lease.lock_type.clone();
    let job = lease.job_id;
    let kept = keep(
        store.clone(),
        lease,
        KeeperConfig::for_ttl(ttl),
        Cancellation::new(),
    )
    .await
    .unwrap();
    // Nine renewals at TTL/3 = three TTLs.
    wait_for(&kept, Duration::from_secs(15), "nine renewals", |s| {
        s.renewals >= 9
    })
    .await;
    assert!(
        !kept.cancellation().is_cancelled(),
        "cancelled: {:?}",
        kept.cancellation().reason()
    );
    assert_eq!(
        store.read(&lock, true).await.unwrap().map(|h| h.job_id),
        Some(job)
    );
    let state = kept.state();
    assert_eq!(state.phase, LeasePhase::Held);
    assert!(state.deadline > state.last_confirmed_sent);
    assert_eq!(kept.release().await.unwrap(), Released::Released);
    assert_eq!(store.read(&lock, true).await.unwrap(), None);
    ks.drop().await;
}

#[tokio::test]
async fn a_forced_release_cancels_the_job_within_one_renewal_interval() {
    let ks = TestKeyspace::new("forced").await;
    let store = Arc::new(ks.lease_store().await);
    let ttl = LeaseTtl::from_secs(6).unwrap();
    let config = KeeperConfig::for_ttl(ttl);
    let lease = acquire(&store, "forced", ttl).await;
    let lock = lease.lock_type.clone();
    let kept = keep(store.clone(), lease, config, Cancellation::new())
        .await
        .unwrap();
    wait_for(&kept, Duration::from_secs(10), "first renewal", |s| {
        s.renewals >= 1
    })
    .await;

    let operator = ks.lease_store().await;
    let freed = operator.force_release(&lock).await.unwrap().expect("held");
    let forced_at = Instant::now();
    assert_eq!(freed.job_id, kept.state().job_id);
    tokio::time::timeout(
        config.renew_interval() + Duration::from_secs(2),
        kept.cancellation().cancelled(),
    )
    .await
    .expect("the job was not cancelled after the forced release");
    let after = forced_at.elapsed();
    println!(
        "forced release → cancel: {after:?} (renewal interval {:?})",
        config.renew_interval()
    );
    assert!(
        after <= config.renew_interval() + Duration::from_millis(500),
        "cancelled {after:?} after the forced release"
    );
    assert_eq!(kept.cancellation().reason(), Some(CancelReason::LeaseLost));
    wait_for(&kept, Duration::from_secs(1), "phase Lost", |s| {
        s.phase == LeasePhase::Lost
    })
    .await;
    assert_eq!(kept.release().await.unwrap(), Released::NotHolder);
    ks.drop().await;
}

#[tokio::test]
async fn a_thousand_leases_are_kept_through_their_renewals_and_none_is_lost() {
    // 6 renewals each (one minute) in CI; 18 (three minutes) with
    // `HAJOBS_CHAOS_FULL=1`, the soak counts.
    let renewals: u64 = if std::env::var("HAJOBS_CHAOS_FULL").is_ok_and(|v| v == "1") {
        18
    } else {
        6
    };
    let ks = TestKeyspace::new("thousand").await;
    let store = Arc::new(ks.lease_store().await);
    let ttl = LeaseTtl::from_secs(30).unwrap();
    let leases = join_all((0..1000).map(|i| {
        let store = store.clone();
        async move { acquire(&store, &format!("lease-{i}"), ttl).await }
    }))
    .await;
    let started = Instant::now();
    let mut kept = Vec::new();
    for lease in leases {
        kept.push(
            keep(
                store.clone(),
                lease,
                KeeperConfig::for_ttl(ttl),
                Cancellation::new(),
            )
            .await
            .unwrap(),
        );
    }
    // TTL/3 = 10 s a renewal.
    for k in &kept {
        wait_for(
            k,
            Duration::from_secs(renewals * 10 + 60),
            "the renewals",
            |s| s.renewals >= renewals || s.phase != LeasePhase::Held,
        )
        .await;
    }
    let held_for = started.elapsed();
    let lost: Vec<_> = kept
        .iter()
        .filter(|k| k.cancellation().is_cancelled())
        .map(|k| (k.state(), k.cancellation().reason()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of 1000 leases lost: first {:?}",
        lost.len(),
        lost.first()
    );
    let failures: u64 = kept.iter().map(|k| k.state().failures).sum();
    let holders = store.list().await.unwrap();
    assert_eq!(holders.len(), 1000);
    println!("1000 leases kept for {held_for:?}: {failures} failed renewal attempts, none lost");
    for k in kept {
        assert_eq!(k.release().await.unwrap(), Released::Released);
    }
    assert!(store.list().await.unwrap().is_empty());
    ks.drop().await;
}
