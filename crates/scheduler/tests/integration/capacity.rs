//! Lock capacity and rate limits on a real Cassandra: three replicas racing
//! triggers; verdicts from the jobs' own records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hajobs_core::testing::TestKeyspace;
use hajobs_scheduler::{
    Concurrency, Done, JobContext, JobError, JobManager, JobSpec, LockSpec, ManagerError,
    StartOutcome,
};

use crate::replica;

/// What a run writes of itself: its slot's fencing token, start and end.
type Records = Arc<Mutex<Vec<(i64, Instant, Instant)>>>;

async fn pool_replica(
    ks: &TestKeyspace,
    node: &str,
    lock: LockSpec,
    records: &Records,
    run_for: fn(u128) -> Duration,
) -> JobManager {
    let records = records.clone();
    let spec = JobSpec::new("pool", lock.lock_type.as_str())
        .unwrap()
        .concurrency(Concurrency::Allow);
    let m = replica(ks, node)
        .await
        .lock(lock)
        .job(spec, move |ctx: JobContext| {
            let records = records.clone();
            async move {
                let start = Instant::now();
                tokio::time::sleep(run_for(ctx.job_id.uuid().as_u128())).await;
                records
                    .lock()
                    .unwrap()
                    .push((ctx.fencing_token.0, start, Instant::now()));
                Ok::<_, JobError>(Done::finished())
            }
        })
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    m
}

/// The most runs at once in `records` (an end at the same instant as a
/// start counts first).
fn most_at_once(records: &[(i64, Instant, Instant)]) -> usize {
    let mut events: Vec<(Instant, i32)> =
        records.iter().flat_map(|r| [(r.1, 1), (r.2, -1)]).collect();
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

/// How long the capacity race runs: `HAJOBS_CAPACITY_SECS`, 120 unless set.
fn race_for() -> Duration {
    Duration::from_secs(
        std::env::var("HAJOBS_CAPACITY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    )
}

#[tokio::test]
async fn capacity_three_with_ten_racing_triggers_never_runs_a_fourth() {
    let ks = TestKeyspace::new("capacity").await;
    let lock = LockSpec::new("pool").unwrap().capacity(3).unwrap();
    let records: Records = Arc::default();
    let run_for = |seed: u128| Duration::from_millis(150 + (seed % 7) as u64 * 60);
    let replicas = Arc::new([
        pool_replica(&ks, "r1", lock.clone(), &records, run_for).await,
        pool_replica(&ks, "r2", lock.clone(), &records, run_for).await,
        pool_replica(&ks, "r3", lock.clone(), &records, run_for).await,
    ]);
    let until = Instant::now() + race_for();
    let mut racers = Vec::new();
    for i in 0..10 {
        let replicas = replicas.clone();
        racers.push(tokio::spawn(async move {
            let (mut started, mut locked) = (0, 0);
            while Instant::now() < until {
                match replicas[i % 3].trigger("pool").await.unwrap() {
                    StartOutcome::Started { .. } => started += 1,
                    StartOutcome::Locked { .. } => locked += 1,
                    other => panic!("{other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (started, locked)
        }));
    }
    let (mut started, mut locked) = (0, 0);
    for r in racers {
        let (s, l) = r.await.unwrap();
        started += s;
        locked += l;
    }
    for m in replicas.iter() {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let records = records.lock().unwrap().clone();
    eprintln!(
        "capacity 3: {started} started, {locked} found every slot held, {} runs recorded",
        records.len()
    );
    assert!(locked > 0, "the slots were contended");
    assert_eq!(
        most_at_once(&records),
        3,
        "at most 3 at once, and 3 reached"
    );
    ks.drop().await;
}

#[tokio::test]
async fn min_interval_spaces_starts_cluster_wide() {
    let ks = TestKeyspace::new("min_interval").await;
    let lock = LockSpec::new("rate")
        .unwrap()
        .min_interval(Duration::from_secs(2))
        .unwrap();
    let records: Records = Arc::default();
    let quick = |_: u128| Duration::from_millis(20);
    // Capacity 1 needs `forbid`; the racing replicas use the pool job with
    // capacity 2 so that the interval alone spaces the starts.
    let lock = lock.capacity(2).unwrap();
    let replicas = [
        pool_replica(&ks, "r1", lock.clone(), &records, quick).await,
        pool_replica(&ks, "r2", lock.clone(), &records, quick).await,
        pool_replica(&ks, "r3", lock.clone(), &records, quick).await,
    ];
    let until = Instant::now() + Duration::from_secs(9);
    let mut i = 0;
    while Instant::now() < until {
        let _ = replicas[i % 3].trigger("pool").await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in &replicas {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let mut starts: Vec<Instant> = records.lock().unwrap().iter().map(|r| r.1).collect();
    starts.sort();
    assert!(
        (3..=6).contains(&starts.len()),
        "9 s of triggers every 50 ms at one start per 2 s: {} starts",
        starts.len()
    );
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1900),
            "two starts {gap:?} apart"
        );
    }
    ks.drop().await;
}

#[tokio::test]
async fn concurrency_policies_must_fit_the_lock_capacity() {
    let ks = TestKeyspace::new("capacity_policy").await;
    let allow_on_one = replica(&ks, "r")
        .await
        .job(
            JobSpec::new("a", "one")
                .unwrap()
                .concurrency(Concurrency::Allow),
            |_: JobContext| async { Ok::<_, JobError>(Done::finished()) },
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&allow_on_one, ManagerError::Policy { problem, .. } if problem.contains("capacity > 1")),
        "{allow_on_one}"
    );
    let forbid_on_three = replica(&ks, "r")
        .await
        .lock(LockSpec::new("three").unwrap().capacity(3).unwrap())
        .job(JobSpec::new("b", "three").unwrap(), |_: JobContext| async {
            Ok::<_, JobError>(Done::finished())
        })
        .build()
        .await
        .unwrap_err();
    assert!(
        forbid_on_three
            .to_string()
            .contains("need concurrency `allow`"),
        "{forbid_on_three}"
    );
    assert!(LockSpec::new("x").unwrap().capacity(65).is_err());
    assert!(
        LockSpec::new("x")
            .unwrap()
            .min_interval(Duration::from_millis(500))
            .is_err()
    );
    ks.drop().await;
}
