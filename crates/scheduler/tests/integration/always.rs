//! Always-on jobs (`keep_running`) on a real Cassandra, judged from the
//! job's own records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{FencingToken, JobState, JobType, StatusEntry, TriggerId};
use hajobs_scheduler::{
    Done, JobContext, JobError, JobManager, JobSpec, KeepRunning, ManagerError,
};

use crate::{eventually, replica};

/// What a run of the job records: its replica, fencing token, trigger,
/// when it started and when it ended (once it has).
#[derive(Debug, Clone)]
struct Run {
    node: String,
    token: FencingToken,
    trigger: TriggerId,
    started: Instant,
    ended: Option<Instant>,
}

type Runs = Arc<Mutex<Vec<Run>>>;

fn always(backoff_ms: u64, max_ms: u64) -> JobSpec {
    JobSpec::new("consumer", "consumer")
        .unwrap()
        .lease_ttl(Duration::from_secs(2))
        .unwrap()
        .keep_running(KeepRunning {
            restart_backoff: Duration::from_millis(backoff_ms),
            restart_max_backoff: Duration::from_millis(max_ms),
        })
        .unwrap()
}

/// A replica running the always-on consumer: each run records itself and
/// runs until cancelled.
async fn consumer(ks: &TestKeyspace, node: &str, runs: &Runs) -> JobManager {
    let runs = runs.clone();
    let m = replica(ks, node)
        .await
        .job(always(100, 1000), move |ctx: JobContext| {
            let runs = runs.clone();
            async move {
                let me = {
                    let mut runs = runs.lock().unwrap();
                    runs.push(Run {
                        node: ctx.node.to_string(),
                        token: ctx.fencing_token,
                        trigger: ctx.trigger_id,
                        started: Instant::now(),
                        ended: None,
                    });
                    runs.len() - 1
                };
                ctx.cancelled().await;
                runs.lock().unwrap()[me].ended = Some(Instant::now());
                Ok(Done::finished())
            }
        })
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    m
}

/// No two runs overlap: each started after the one before it ended.
fn assert_no_overlap(runs: &[Run]) {
    for pair in runs.windows(2) {
        let ended = pair[0].ended.expect("an earlier run still running");
        assert!(
            ended <= pair[1].started,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
        assert!(pair[0].token < pair[1].token, "tokens grow: {pair:?}");
    }
}

#[tokio::test]
async fn an_always_on_job_runs_on_one_replica_and_moves_on_when_it_stops() {
    let ks = TestKeyspace::new("always_moves").await;
    let runs: Runs = Arc::default();
    let a = consumer(&ks, "a", &runs).await;
    let b = consumer(&ks, "b", &runs).await;
    eventually(Duration::from_secs(10), "one replica runs it", || async {
        !runs.lock().unwrap().is_empty()
    })
    .await;
    let first = runs.lock().unwrap()[0].clone();
    let (holder, survivor) = if first.node == "a" { (a, b) } else { (b, a) };
    assert!(survivor.running_here("consumer").is_none());
    // The holder stops: the survivor takes the job over (the lease was
    // released, so at its next look, within a lease TTL).
    let stopped = Instant::now();
    holder.shutdown(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the survivor runs it", || async {
        runs.lock().unwrap().len() == 2
    })
    .await;
    let moved = runs.lock().unwrap()[1].clone();
    assert_eq!(moved.node, survivor.node().as_str());
    assert_eq!(moved.trigger, first.trigger, "one trigger across restarts");
    assert!(
        moved.started - stopped < Duration::from_secs(4),
        "{:?}",
        moved.started - stopped
    );
    survivor.shutdown(Duration::from_secs(10)).await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_no_overlap(&runs);
    ks.drop().await;
}

#[tokio::test]
async fn an_always_on_job_that_fails_at_once_restarts_after_a_doubling_backoff() {
    let ks = TestKeyspace::new("always_backoff").await;
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let m = {
        let starts = starts.clone();
        replica(&ks, "r1")
            .await
            .job(always(200, 800), move |_ctx: JobContext| {
                let starts = starts.clone();
                async move {
                    starts.lock().unwrap().push(Instant::now());
                    Err::<Done, _>(JobError::new("exits 1 at once"))
                }
            })
            .build()
            .await
            .unwrap()
    };
    m.start().await.unwrap();
    eventually(Duration::from_secs(20), "five starts", || async {
        starts.lock().unwrap().len() >= 5
    })
    .await;
    m.shutdown(Duration::from_secs(10)).await;
    let starts = starts.lock().unwrap().clone();
    // 200, 400, 800, then capped at 800 ms.
    for (i, want) in [200u64, 400, 800, 800].into_iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        let want = Duration::from_millis(want);
        assert!(
            gap >= want && gap < want + Duration::from_secs(2),
            "gap {} is {gap:?}, the backoff {want:?}",
            i + 1
        );
    }
    // Each end says when it may start again, for every replica to see.
    let history = m
        .statuses()
        .history(&JobType::new("consumer").unwrap(), 3)
        .await
        .unwrap();
    let newest = history.iter().find_map(StatusEntry::status).unwrap();
    let full = m
        .statuses()
        .get(&newest.job_type, newest.job_id)
        .await
        .unwrap();
    let Some(StatusEntry::Status(full)) = full else {
        panic!("no status: {full:?}")
    };
    assert_eq!(full.state, JobState::Failed);
    let content = full.content.unwrap();
    assert!(
        content["restart_streak"].as_u64().unwrap() >= 4,
        "{content}"
    );
    assert!(
        content["next_restart_at_ms"].as_i64().is_some(),
        "{content}"
    );
    ks.drop().await;
}

#[tokio::test]
async fn an_always_on_job_with_a_schedule_or_a_queue_is_refused() {
    let ks = TestKeyspace::new("always_refused").await;
    let refused = |spec: JobSpec| async {
        replica(&ks, "r1")
            .await
            .job(spec, |_ctx: JobContext| async { Ok(Done::finished()) })
            .build()
            .await
            .unwrap_err()
    };
    let err = refused(always(100, 1000).cron("* * * * * *", "UTC").unwrap()).await;
    assert!(
        matches!(&err, ManagerError::Policy { job_type, problem } if job_type == "consumer" && problem.contains("cron schedule")),
        "{err}"
    );
    let err = refused(always(100, 1000).on_locked(hajobs_scheduler::OnLocked::Queue)).await;
    assert!(err.to_string().contains("queue"), "{err}");
    let bad = JobSpec::new("consumer", "consumer")
        .unwrap()
        .keep_running(KeepRunning {
            restart_backoff: Duration::from_secs(5),
            restart_max_backoff: Duration::from_secs(1),
        })
        .unwrap_err();
    assert!(bad.to_string().contains("consumer"), "{bad}");
    ks.drop().await;
}
