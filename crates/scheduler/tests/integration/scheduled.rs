//! One-time triggers due at a given time, on a real Cassandra with several
//! replicas, judged from the jobs' own records: each fires once, at its
//! time, also when the replica that scheduled it is gone; a removed one
//! never fires; one missed while no replica ran follows `missed_runs`; one
//! whose claimant died before starting it is taken over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{JobState, JobType, ScheduledStore, StatusEntry, TriggerArgs, TriggerId};
use hajobs_scheduler::{Done, JobContext, JobManager, JobSpec, MissedRuns};

use crate::{eventually, register, replica};

/// (trigger, node, when it started) as each run records it.
type Runs = Arc<Mutex<Vec<(TriggerId, String, SystemTime)>>>;

async fn recording_replica(
    ks: &TestKeyspace,
    node: &str,
    specs: &[JobSpec],
    runs: &Runs,
) -> JobManager {
    let mut b = replica(ks, node).await;
    for spec in specs {
        let runs = runs.clone();
        let node = node.to_owned();
        b = b.job(spec.clone(), move |ctx: JobContext| {
            let (runs, node) = (runs.clone(), node.clone());
            async move {
                runs.lock()
                    .unwrap()
                    .push((ctx.trigger_id, node, SystemTime::now()));
                Ok(Done::finished())
            }
        });
    }
    let m = b.build().await.unwrap();
    m.start().await.unwrap();
    m
}

fn count(runs: &Runs) -> HashMap<TriggerId, usize> {
    let mut by = HashMap::new();
    for (t, _, _) in runs.lock().unwrap().iter() {
        *by.entry(*t).or_default() += 1;
    }
    by
}

#[tokio::test]
async fn each_fires_once_at_its_time_even_when_the_replica_that_scheduled_it_is_gone() {
    let ks = TestKeyspace::new("sched_once").await;
    register(&ks, &["r1", "r2", "r3"], "report").await;
    let runs: Runs = Arc::default();
    let spec = JobSpec::new("report", "report")
        .unwrap()
        .concurrency(hajobs_scheduler::Concurrency::Allow);
    let lock = hajobs_scheduler::LockSpec::new("report")
        .unwrap()
        .capacity(8)
        .unwrap();
    let mut ms = Vec::new();
    for node in ["r1", "r2", "r3"] {
        let mut b = replica(&ks, node).await.lock(lock.clone());
        let (runs, n) = (runs.clone(), node.to_owned());
        b = b.job(spec.clone(), move |ctx: JobContext| {
            let (runs, n) = (runs.clone(), n.clone());
            async move {
                runs.lock()
                    .unwrap()
                    .push((ctx.trigger_id, n, SystemTime::now()));
                Ok(Done::finished())
            }
        });
        let m = b.build().await.unwrap();
        m.start().await.unwrap();
        ms.push(m);
    }
    // r1 schedules 20 triggers a poll and 1–3 s ahead (the others learn of
    // them at their next read), then stops at once.
    let now = SystemTime::now();
    let mut due = HashMap::new();
    for i in 0..20u64 {
        let at = now + hajobs_scheduler::SCHEDULED_POLL + Duration::from_millis(1000 + i * 100);
        let t = ms[0]
            .schedule("report", at, TriggerArgs::none())
            .await
            .unwrap();
        due.insert(t.trigger_id, at);
    }
    let r1 = ms.remove(0);
    r1.shutdown(Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(30),
        "every scheduled trigger ran",
        || async { count(&runs).len() == due.len() },
    )
    .await;
    // Nothing more comes: every one of them is claimed, none runs twice.
    let store = ms[0].scheduled_store().clone();
    eventually(
        Duration::from_secs(10),
        "every outcome recorded",
        || async {
            store
                .due_between(now, now + Duration::from_secs(10))
                .await
                .unwrap()
                .iter()
                .all(|t| t.outcome.as_deref() == Some("started"))
        },
    )
    .await;
    let by = count(&runs);
    assert!(by.values().all(|n| *n == 1), "each once: {by:?}");
    for (t, node, started) in runs.lock().unwrap().iter() {
        assert_ne!(node, "r1", "r1 was gone");
        let at = due[t];
        // At its time: never early (beyond the clock's granularity), and
        // not a poll late.
        assert!(
            *started + Duration::from_millis(5) >= at,
            "{t} started early"
        );
        let lag = started.duration_since(at).unwrap_or_default();
        assert!(lag < Duration::from_secs(5), "{t} started {lag:?} late");
    }
    for m in ms {
        m.shutdown(Duration::from_secs(5)).await;
    }
    ks.drop().await;
}

#[tokio::test]
async fn a_removed_trigger_never_fires_and_a_fired_one_cannot_be_removed() {
    let ks = TestKeyspace::new("sched_rm").await;
    let runs: Runs = Arc::default();
    let spec = JobSpec::new("report", "report").unwrap();
    let m = recording_replica(&ks, "r1", &[spec], &runs).await;
    let now = SystemTime::now();
    let removed = m
        .schedule("report", now + Duration::from_secs(2), TriggerArgs::none())
        .await
        .unwrap();
    let kept = m
        .schedule("report", now + Duration::from_secs(3), TriggerArgs::none())
        .await
        .unwrap();
    let store = m.scheduled_store().clone();
    assert!(store.remove(&removed, "ops@desk").await.unwrap());
    assert!(!store.remove(&removed, "ops@desk").await.unwrap(), "once");
    eventually(Duration::from_secs(15), "the kept one ran", || async {
        count(&runs).contains_key(&kept.trigger_id)
    })
    .await;
    assert!(!count(&runs).contains_key(&removed.trigger_id));
    assert!(
        !store.remove(&kept, "ops@desk").await.unwrap(),
        "fired: not removable"
    );
    let row = store.get(&removed).await.unwrap().unwrap();
    assert_eq!(row.removed_by.as_deref(), Some("ops@desk"));
    assert_eq!(row.claimed_by, None);
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn triggers_missed_while_no_replica_ran_follow_missed_runs_and_abandoned_ones_are_taken_over()
{
    let ks = TestKeyspace::new("sched_missed").await;
    let runs: Runs = Arc::default();
    let store = ScheduledStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    // Due five minutes ago, while no replica ran; and one claimed 10 s
    // after its time by a replica that died before starting it.
    let past = SystemTime::now() - Duration::from_secs(300);
    let skipped = store
        .schedule(TriggerId::new(), "skipper", past, "test")
        .await
        .unwrap();
    let late = store
        .schedule(TriggerId::new(), "runner", past, "test")
        .await
        .unwrap();
    let abandoned = store
        .schedule(
            TriggerId::new(),
            "runner",
            SystemTime::now() - Duration::from_secs(10),
            "test",
        )
        .await
        .unwrap();
    assert!(store.claim(&abandoned, "ghost").await.unwrap());
    let specs = [
        JobSpec::new("skipper", "skipper")
            .unwrap()
            .missed_runs(MissedRuns::Skip),
        JobSpec::new("runner", "runner").unwrap(),
    ];
    let m = recording_replica(&ks, "r1", &specs, &runs).await;
    eventually(Duration::from_secs(15), "the late one ran", || async {
        count(&runs).contains_key(&late.trigger_id)
    })
    .await;
    let skipper = JobType::new("skipper").unwrap();
    eventually(
        Duration::from_secs(15),
        "the skipped one recorded",
        || async {
            m.statuses()
                .history(&skipper, 5)
                .await
                .unwrap()
                .iter()
                .filter_map(StatusEntry::status)
                .any(|s| s.trigger_id == skipped.trigger_id && s.state == JobState::Skipped)
        },
    )
    .await;
    assert!(!count(&runs).contains_key(&skipped.trigger_id));
    // The abandoned claim is taken over once it is old enough.
    eventually(
        Duration::from_secs(120),
        "the abandoned one taken over",
        || async { count(&runs).contains_key(&abandoned.trigger_id) },
    )
    .await;
    let row = store.get(&abandoned).await.unwrap().unwrap();
    assert_eq!(row.claimed_by.as_deref(), Some("r1"));
    let by = count(&runs);
    assert!(by.values().all(|n| *n == 1), "{by:?}");
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}
