//! Retries of failed attempts with backoff, on a real Cassandra.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{JobState, JobType, StatusEntry, TriggerId};
use hajobs_scheduler::{Done, JobContext, JobError, JobSpec, RetryPolicy, StartOutcome};

use crate::{eventually, replica};

/// A run as the job records it: trigger, start, end once it ended.
type Run = (TriggerId, Instant, Option<Instant>);

#[tokio::test]
async fn a_failed_attempt_is_retried_after_a_growing_backoff_under_its_trigger() {
    let ks = TestKeyspace::new("retries").await;
    // The job's own records: (trigger, when it started).
    let runs: Arc<Mutex<Vec<(TriggerId, Instant)>>> = Arc::default();
    let policy = RetryPolicy {
        count: 2,
        backoff: Duration::from_millis(400),
        factor: 2.0,
        max_backoff: Duration::from_secs(5),
    };
    let spec = JobSpec::new("flaky", "flaky")
        .unwrap()
        .retries(policy)
        .unwrap();
    let m = {
        let runs = runs.clone();
        replica(&ks, "r1")
            .await
            .job(spec, move |ctx: JobContext| {
                let runs = runs.clone();
                async move {
                    let n = {
                        let mut runs = runs.lock().unwrap();
                        runs.push((ctx.trigger_id, Instant::now()));
                        runs.len()
                    };
                    // Fails twice, then succeeds.
                    if n < 3 {
                        Err(JobError::new(format!("upstream down (run {n})")))
                    } else {
                        Ok(Done::finished())
                    }
                }
            })
            .build()
            .await
            .unwrap()
    };
    m.start().await.unwrap();
    let StartOutcome::Started { trigger_id, .. } = m.trigger("flaky").await.unwrap() else {
        panic!("started");
    };
    eventually(Duration::from_secs(20), "three runs", || async {
        runs.lock().unwrap().len() >= 3
    })
    .await;
    let flaky = JobType::new("flaky").unwrap();
    eventually(Duration::from_secs(10), "the third run finished", || async {
        matches!(m.statuses().latest(&flaky).await, Ok(Some(StatusEntry::Status(s))) if s.state == JobState::Finished)
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 3, "no fourth run after the success");
    assert!(
        runs.iter().all(|r| r.0 == trigger_id),
        "retries keep the trigger"
    );
    // Equal jitter: at least half the nominal backoff (400 ms, then 800 ms).
    assert!(runs[1].1 - runs[0].1 >= Duration::from_millis(200));
    assert!(runs[2].1 - runs[1].1 >= Duration::from_millis(400));
    // The history says which attempt each was and when the next was due.
    let history = m.statuses().history(&flaky, 10).await.unwrap();
    let mut failed: Vec<_> = history
        .iter()
        .filter_map(StatusEntry::status)
        .filter(|s| s.state == JobState::Failed)
        .collect();
    failed.sort_by_key(|s| s.job_id);
    assert_eq!(failed.len(), 2);
    for (i, s) in failed.iter().enumerate() {
        let Some(StatusEntry::Status(full)) = m.statuses().get(&flaky, s.job_id).await.unwrap()
        else {
            panic!("readable");
        };
        let c = full.content.expect("content");
        assert_eq!(c["attempt"], serde_json::json!(i + 1), "{c}");
        assert_eq!(c["of"], serde_json::json!(3), "{c}");
        assert!(c["next_retry_at"].is_string(), "{c}");
    }
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn concurrency_replace_stops_the_running_attempt_cluster_wide_and_takes_over() {
    use hajobs_scheduler::Concurrency;
    let ks = TestKeyspace::new("replace").await;
    // (trigger, start, end) as the job records them.
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let build = |node: &'static str| {
        let runs = runs.clone();
        let ks = &ks;
        async move {
            let spec = JobSpec::new("rep", "rep")
                .unwrap()
                .concurrency(Concurrency::Replace)
                .lease_ttl(Duration::from_secs(3))
                .unwrap();
            let m = replica(ks, node)
                .await
                .job(spec, move |ctx: JobContext| {
                    let runs = runs.clone();
                    async move {
                        let i = {
                            let mut runs = runs.lock().unwrap();
                            runs.push((ctx.trigger_id, Instant::now(), None));
                            runs.len() - 1
                        };
                        ctx.cancelled().await;
                        runs.lock().unwrap()[i].2 = Some(Instant::now());
                        Err::<Done, _>(JobError::new("replaced"))
                    }
                })
                .build()
                .await
                .unwrap();
            m.start().await.unwrap();
            m
        }
    };
    let (r1, r2) = (build("r1").await, build("r2").await);
    let StartOutcome::Started { job_id: first, .. } = r1.trigger("rep").await.unwrap() else {
        panic!("the lock is free");
    };
    // From the other replica: the running attempt is stopped through the
    // lock, then the new trigger starts.
    let StartOutcome::Started { job_id: second, .. } = r2.trigger("rep").await.unwrap() else {
        panic!("replaced across replicas");
    };
    // And on the same replica.
    let StartOutcome::Started { job_id: third, .. } = r2.trigger("rep").await.unwrap() else {
        panic!("replaced on its own replica");
    };
    eventually(Duration::from_secs(5), "the third run began", || async {
        runs.lock().unwrap().len() >= 3
    })
    .await;
    let runs_now = runs.lock().unwrap().clone();
    assert_eq!(runs_now.len(), 3);
    for pair in runs_now.windows(2) {
        let ended = pair[0].2.expect("the replaced run ended");
        assert!(
            ended <= pair[1].1,
            "the new run starts after the old one ended"
        );
    }
    let rep = JobType::new("rep").unwrap();
    for replaced in [first, second] {
        let Some(StatusEntry::Status(s)) = r1.statuses().get(&rep, replaced).await.unwrap() else {
            panic!("recorded");
        };
        assert_eq!(s.state, JobState::Canceled, "{s:?}");
    }
    assert_eq!(r2.running_here("rep"), Some(third));
    r1.shutdown(Duration::from_secs(5)).await;
    r2.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn missed_runs_all_runs_the_newest_missed_firings_and_a_starting_deadline_skips_on_record() {
    use chrono::{DateTime, Utc};
    use hajobs_core::{FiringStore, NodeId};
    use hajobs_scheduler::MissedRuns;
    let ks = TestKeyspace::new("missed_all").await;
    // Yearly: every missed instant is months old.
    let yearly = "0 0 0 1 1 *";
    let schedule = hajobs_scheduler::CronSchedule::parse(yearly, "UTC").unwrap();
    let mut instants: Vec<DateTime<Utc>> = Vec::new();
    let mut t = Utc::now();
    for _ in 0..5 {
        let i = schedule.latest_at(t).unwrap();
        instants.push(i);
        t = i - chrono::TimeDelta::days(1);
    }
    instants.reverse(); // y-4 … y0
    let firings = FiringStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    let node = NodeId::new("before-the-downtime").unwrap();
    // Both jobs last ran at y-3; y-2, y-1 and y0 were missed.
    for job in ["all", "late"] {
        let at = std::time::SystemTime::from(instants[1]);
        assert!(
            firings
                .claim(
                    &JobType::new(job).unwrap(),
                    at,
                    TriggerId::for_firing(job, at),
                    &node
                )
                .await
                .unwrap()
        );
    }
    let runs: Arc<Mutex<Vec<TriggerId>>> = Arc::default();
    let record = {
        let runs = runs.clone();
        move |ctx: JobContext| {
            let runs = runs.clone();
            async move {
                runs.lock().unwrap().push(ctx.trigger_id);
                Ok::<_, JobError>(Done::finished())
            }
        }
    };
    let m = replica(&ks, "a")
        .await
        .job(
            JobSpec::new("all", "all")
                .unwrap()
                .cron(yearly, "UTC")
                .unwrap()
                .missed_runs(MissedRuns::All { cap: 2 }),
            record.clone(),
        )
        .job(
            JobSpec::new("late", "late")
                .unwrap()
                .cron(yearly, "UTC")
                .unwrap()
                .missed_runs(MissedRuns::All { cap: 5 })
                .starting_deadline(Duration::from_secs(3600))
                .unwrap(),
            record,
        )
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    let expected: Vec<TriggerId> = instants[3..]
        .iter()
        .map(|i| TriggerId::for_firing("all", std::time::SystemTime::from(*i)))
        .collect();
    eventually(
        Duration::from_secs(20),
        "the two newest missed firings ran",
        || async { runs.lock().unwrap().len() >= 2 },
    )
    .await;
    let late = JobType::new("late").unwrap();
    eventually(
        Duration::from_secs(20),
        "three late firings skipped",
        || async {
            m.statuses().history(&late, 10).await.is_ok_and(|h| {
                h.iter()
                    .filter_map(StatusEntry::status)
                    .filter(|s| s.state == JobState::Skipped)
                    .count()
                    == 3
            })
        },
    )
    .await;
    assert_eq!(
        *runs.lock().unwrap(),
        expected,
        "y-1 then y0 (the cap drops y-2); nothing of the late job ran"
    );
    let h = m.statuses().history(&late, 10).await.unwrap();
    let skipped = h.iter().filter_map(StatusEntry::status).next().unwrap();
    let Some(StatusEntry::Status(full)) = m.statuses().get(&late, skipped.job_id).await.unwrap()
    else {
        panic!("readable");
    };
    assert!(
        full.content.unwrap()["reason"]
            .as_str()
            .unwrap()
            .starts_with("starting_deadline:"),
    );
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}
