//! Queued triggers (`on_locked = "queue"`) on a real Cassandra: three
//! replicas triggering jobs that share one lock type; verdicts from the
//! jobs' own records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{JobState, JobType, StatusEntry, TriggerId};
use hajobs_scheduler::{Done, JobContext, JobError, JobManager, JobSpec, OnLocked, StartOutcome};

use crate::{eventually, replica};

/// What a run writes of itself: trigger, fencing token, start and end.
type Records = Arc<Mutex<Vec<(TriggerId, i64, Instant, Instant)>>>;

fn spec(job: &str) -> JobSpec {
    JobSpec::new(job, "shared")
        .unwrap()
        .on_locked(OnLocked::Queue)
}

async fn queue_replica(
    ks: &TestKeyspace,
    node: &str,
    records: &Records,
    run_for: Duration,
) -> JobManager {
    let mut builder = replica(ks, node).await;
    for job in ["qa", "qb"] {
        let records = records.clone();
        builder = builder.job(spec(job), move |ctx: JobContext| {
            let records = records.clone();
            async move {
                let start = Instant::now();
                tokio::time::sleep(run_for).await;
                records.lock().unwrap().push((
                    ctx.trigger_id,
                    ctx.fencing_token.0,
                    start,
                    Instant::now(),
                ));
                Ok::<_, JobError>(Done::finished())
            }
        });
    }
    let m = builder.build().await.unwrap();
    m.start().await.unwrap();
    m
}

#[tokio::test]
async fn fifty_triggers_from_three_replicas_run_one_at_a_time_in_queue_order() {
    let ks = TestKeyspace::new("queue_order").await;
    let records: Records = Arc::default();
    let run_for = Duration::from_millis(60);
    let replicas = [
        queue_replica(&ks, "r1", &records, run_for).await,
        queue_replica(&ks, "r2", &records, run_for).await,
        queue_replica(&ks, "r3", &records, run_for).await,
    ];
    // Triggered one after another, round robin over replicas and jobs: the
    // order of the calls is the order of the queue.
    let mut order = Vec::new();
    let mut queued = 0;
    for i in 0..50 {
        let job = if i % 2 == 0 { "qa" } else { "qb" };
        match replicas[i % 3].trigger(job).await.unwrap() {
            StartOutcome::Started { trigger_id, .. } => order.push(trigger_id),
            StartOutcome::Queued {
                trigger_id,
                position,
            } => {
                assert!(position >= 1);
                queued += 1;
                order.push(trigger_id);
            }
            other => panic!("trigger {i}: {other:?}"),
        }
    }
    assert!(
        queued > 10,
        "the lock was busy for most triggers ({queued} queued)"
    );
    eventually(Duration::from_secs(120), "50 runs", || async {
        records.lock().unwrap().len() >= 50
    })
    .await;
    let mut runs = records.lock().unwrap().clone();
    runs.sort_by_key(|r| r.2);
    let ran: Vec<TriggerId> = runs.iter().map(|r| r.0).collect();
    assert_eq!(ran, order, "every trigger ran once, in queue order");
    for pair in runs.windows(2) {
        assert!(
            pair[1].2 >= pair[0].3,
            "one at a time: {:?} started before {:?} ended",
            pair[1].0,
            pair[0].0
        );
        assert!(pair[1].1 > pair[0].1, "fencing tokens rise with each run");
    }
    for m in &replicas {
        m.shutdown(Duration::from_secs(5)).await;
    }
    ks.drop().await;
}

#[tokio::test]
async fn a_trigger_queued_by_a_replica_that_is_gone_still_runs_and_an_expired_one_is_skipped() {
    let ks = TestKeyspace::new("queue_gone").await;
    let records: Records = Arc::default();
    let long = Duration::from_secs(2);
    let r1 = queue_replica(&ks, "r1", &records, long).await;
    let r2 = queue_replica(&ks, "r2", &records, long).await;
    let StartOutcome::Started { .. } = r2.trigger("qa").await.unwrap() else {
        panic!("the lock is free at first");
    };
    let StartOutcome::Queued { trigger_id, .. } = r1.trigger("qb").await.unwrap() else {
        panic!("queued while qa runs");
    };
    // r1 goes away while its trigger waits; r2 runs it when its turn comes.
    r1.shutdown(Duration::from_secs(5)).await;
    drop(r1);
    eventually(
        Duration::from_secs(30),
        "the queued trigger ran",
        || async { records.lock().unwrap().iter().any(|r| r.0 == trigger_id) },
    )
    .await;
    let status = r2
        .statuses()
        .latest(&JobType::new("qb").unwrap())
        .await
        .unwrap();
    match status {
        Some(StatusEntry::Status(s)) => {
            assert_eq!(s.trigger_id, trigger_id);
            assert_eq!(s.owner.as_ref().map(|o| o.as_str()), Some("r2"));
        }
        other => panic!("{other:?}"),
    }
    r2.shutdown(Duration::from_secs(5)).await;

    // A trigger that waits longer than its lock wait timeout is recorded
    // SKIPPED, naming that timeout.
    let impatient = |job: &str| spec(job).lock_wait_timeout(Duration::from_secs(1)).unwrap();
    let never_done = |ctx: JobContext| async move {
        ctx.cancelled().await;
        Ok::<_, JobError>(Done::finished())
    };
    let r3 = replica(&ks, "r3")
        .await
        .job(impatient("qa"), never_done)
        .job(impatient("qb"), never_done)
        .build()
        .await
        .unwrap();
    r3.start().await.unwrap();
    let StartOutcome::Started { .. } = r3.trigger("qa").await.unwrap() else {
        panic!("the lock is free");
    };
    let StartOutcome::Queued { trigger_id, .. } = r3.trigger("qb").await.unwrap() else {
        panic!("queued");
    };
    let qb = JobType::new("qb").unwrap();
    eventually(
        Duration::from_secs(20),
        "the expired trigger is skipped",
        || async {
            let Ok(history) = r3.statuses().history(&qb, 10).await else {
                return false;
            };
            let Some(skipped) = history
                .iter()
                .filter_map(StatusEntry::status)
                .find(|s| s.trigger_id == trigger_id && s.state == JobState::Skipped)
            else {
                return false;
            };
            matches!(r3.statuses().get(&qb, skipped.job_id).await, Ok(Some(StatusEntry::Status(s)))
            if s.content.as_ref().is_some_and(|c| c.to_string().contains("lock_wait_timeout")))
        },
    )
    .await;
    r3.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn a_queued_cron_firing_gives_up_at_its_starting_deadline_on_record() {
    let ks = TestKeyspace::new("queue_deadline").await;
    let blocker = |ctx: JobContext| async move {
        ctx.cancelled().await;
        Ok::<_, JobError>(Done::finished())
    };
    let quick = |_: JobContext| async { Ok::<_, JobError>(Done::finished()) };
    let m = replica(&ks, "r1")
        .await
        .job(spec("blocker"), blocker)
        .job(
            spec("every-second")
                .cron("* * * * * *", "UTC")
                .unwrap()
                .starting_deadline(Duration::from_secs(2))
                .unwrap(),
            quick,
        )
        .build()
        .await
        .unwrap();
    let StartOutcome::Started { .. } = m.trigger("blocker").await.unwrap() else {
        panic!("the lock is free");
    };
    m.start().await.unwrap();
    // Each firing queues behind the blocker and gives up at its deadline
    // (2 s), recorded SKIPPED naming it, long before the 24 h lock wait.
    let job = JobType::new("every-second").unwrap();
    eventually(
        Duration::from_secs(20),
        "a firing skipped at its deadline",
        || async {
            let Ok(history) = m.statuses().history(&job, 20).await else {
                return false;
            };
            for s in history.iter().filter_map(StatusEntry::status) {
                if s.state != JobState::Skipped {
                    continue;
                }
                if let Ok(Some(StatusEntry::Status(full))) = m.statuses().get(&job, s.job_id).await
                {
                    if full
                        .content
                        .as_ref()
                        .is_some_and(|c| c["timeout"] == "starting_deadline")
                    {
                        return true;
                    }
                }
            }
            false
        },
    )
    .await;
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}
