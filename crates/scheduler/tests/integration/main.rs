//! The job manager on a real Cassandra: several managers in one process
//! stand for replicas (separate sessions, separate node ids).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hajobs_core::testing::{TestKeyspace, connect};
use hajobs_core::{JobId, JobResult, JobState, JobStatus, JobType, LockType, NodeId, StatusEntry};
use hajobs_scheduler::{
    CancelOutcome, Done, JobContext, JobError, JobManager, JobManagerBuilder, JobSpec,
    ManagerError, OffsetClock, StartOutcome,
};
use serde_json::json;

mod always;
mod args;
mod capacity;
mod checkpoints;
mod follow_ups;
mod queue;
mod retries;
mod scheduled;
mod work;

/// A manager for replica `node` with its own session.
async fn replica(ks: &TestKeyspace, node: &str) -> JobManagerBuilder {
    JobManager::builder(ks.config(), NodeId::new(node).unwrap()).session(connect().await)
}

/// Writes the node registry as the daemons do: a live row for each of
/// `nodes`, configuring `job_type`.
async fn register(ks: &TestKeyspace, nodes: &[&str], job_type: &str) {
    let store = hajobs_core::NodeStore::new(ks.session.clone(), &ks.config())
        .await
        .unwrap();
    for node in nodes {
        let record = hajobs_core::NodeRecord {
            node_id: (*node).into(),
            host: "test".into(),
            pid: 0,
            version: String::new(),
            http: None,
            started_at_ms: 0,
            seen_at_ms: 0,
            job_types: vec![job_type.into()],
            running: Vec::new(),
        };
        store
            .refresh(&record, Duration::from_secs(120))
            .await
            .unwrap();
    }
}

/// Polls `condition` until it holds, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(m: &JobManager, job_type: &str, job_id: JobId) -> JobStatus {
    match m
        .statuses()
        .get(&JobType::new(job_type).unwrap(), job_id)
        .await
        .unwrap()
    {
        Some(StatusEntry::Status(s)) => s,
        other => panic!("no status for {job_type} {job_id}: {other:?}"),
    }
}

async fn final_status(m: &JobManager, job_type: &str, job_id: JobId) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_of(m, job_type, job_id).await;
        if s.result() != JobResult::Pending {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{job_type} {job_id} still {} after 20 s",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lock_free(m: &JobManager, lock: &str) {
    let lock = LockType::new(lock).unwrap();
    eventually(Duration::from_secs(20), "the lock freed", || async {
        m.leases().read(&lock, true).await.unwrap().is_none()
    })
    .await;
}

/// Waits for cancellation, then returns.
async fn until_cancelled(ctx: JobContext) -> Result<Done, JobError> {
    ctx.cancelled().await;
    Ok(Done::finished())
}

fn started(outcome: &StartOutcome) -> Option<JobId> {
    match outcome {
        StartOutcome::Started { job_id, .. } => Some(*job_id),
        _ => None,
    }
}

#[tokio::test]
async fn two_replicas_trigger_at_once_and_exactly_one_starts_every_time() {
    let ks = TestKeyspace::new("trigger_race").await;
    let spec = || JobSpec::new("import", "import").unwrap();
    let a = replica(&ks, "a")
        .await
        .job(spec(), until_cancelled)
        .build()
        .await
        .unwrap();
    let b = replica(&ks, "b")
        .await
        .job(spec(), until_cancelled)
        .build()
        .await
        .unwrap();
    for round in 0..100 {
        let (ra, rb) = tokio::join!(a.trigger("import"), b.trigger("import"));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (winner, runner, other) = match (started(&ra), started(&rb)) {
            (Some(id), None) => (id, &a, rb),
            (None, Some(id)) => (id, &b, ra),
            _ => panic!("round {round}: {ra:?} / {rb:?}"),
        };
        match other {
            StartOutcome::Locked { holder, .. } => {
                assert_eq!(holder.job_id, winner, "round {round}");
                assert_eq!(
                    holder.owner.as_deref(),
                    Some(runner.node().as_str()),
                    "round {round}"
                );
            }
            o => panic!("round {round}: the loser got {o:?}"),
        }
        assert_eq!(
            runner.cancel("import").await.unwrap(),
            CancelOutcome::CancelledLocally(winner)
        );
        assert_eq!(
            final_status(runner, "import", winner).await.state,
            JobState::Canceled
        );
        lock_free(runner, "import").await;
    }
    ks.drop().await;
}

/// A job's name, start and end.
type Span = (&'static str, Instant, Instant);

#[tokio::test]
async fn job_types_sharing_a_lock_type_never_run_at_the_same_time() {
    let ks = TestKeyspace::new("shared_lock").await;
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let job = |name: &'static str| {
        let spans = spans.clone();
        move |_ctx: JobContext| {
            let spans = spans.clone();
            async move {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(30)).await;
                spans.lock().unwrap().push((name, start, Instant::now()));
                Ok(Done::finished())
            }
        }
    };
    let mut managers = Vec::new();
    for node in ["a", "b"] {
        managers.push(
            replica(&ks, node)
                .await
                .job(JobSpec::new("export", "warehouse").unwrap(), job("export"))
                .job(JobSpec::new("vacuum", "warehouse").unwrap(), job("vacuum"))
                .build()
                .await
                .unwrap(),
        );
    }
    let mut started_count = 0;
    for _ in 0..60 {
        let outcomes = join_all([
            managers[0].trigger("export"),
            managers[1].trigger("vacuum"),
            managers[1].trigger("export"),
            managers[0].trigger("vacuum"),
        ])
        .await;
        started_count += outcomes
            .iter()
            .filter(|o| started(o.as_ref().unwrap()).is_some())
            .count();
        lock_free(&managers[0], "warehouse").await;
    }
    let mut spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), started_count, "every started attempt ran");
    assert!(spans.iter().any(|s| s.0 == "export") && spans.iter().any(|s| s.0 == "vacuum"));
    spans.sort_by_key(|s| s.1);
    for pair in spans.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "{} and {} overlapped",
            pair[0].0,
            pair[1].0
        );
    }
    ks.drop().await;
}

#[tokio::test]
async fn cron_firings_run_exactly_once_across_replicas_with_a_skewed_clock() {
    let ks = TestKeyspace::new("cron_once").await;
    let spec = || {
        JobSpec::new("tick", "tick")
            .unwrap()
            .cron("* * * * * *", "UTC")
            .unwrap()
    };
    let short = |_ctx: JobContext| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Done::finished())
    };
    let mut managers = Vec::new();
    for node in ["a", "b"] {
        managers.push(
            replica(&ks, node)
                .await
                .job(spec(), short)
                .build()
                .await
                .unwrap(),
        );
    }
    // A replica whose clock runs two seconds ahead.
    managers.push(
        replica(&ks, "skewed")
            .await
            .clock(OffsetClock(chrono::TimeDelta::seconds(2)))
            .job(spec(), short)
            .build()
            .await
            .unwrap(),
    );
    for m in &managers {
        m.start().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(20)).await; // the test's length, not a synchronisation
    // The skewed replica stops first: it claims two seconds ahead, so if it
    // outlived the others the instants between would have no replica left.
    for m in managers.iter().rev() {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let (seconds, owners) = every_second_ran_once(&managers[0], 18).await;
    println!("{} firings, each run once, by {owners:?}", seconds.len());
    ks.drop().await;
}

#[tokio::test]
async fn cancel_on_a_replica_that_is_not_the_holder_stops_the_job() {
    let ks = TestKeyspace::new("remote_cancel").await;
    let spec = || {
        JobSpec::new("consumer", "consumer")
            .unwrap()
            .lease_ttl(Duration::from_secs(3))
            .unwrap()
    };
    let holder = replica(&ks, "holder")
        .await
        .job(spec(), until_cancelled)
        .build()
        .await
        .unwrap();
    let other = replica(&ks, "other")
        .await
        .job(spec(), until_cancelled)
        .build()
        .await
        .unwrap();
    let job_id = started(&holder.trigger("consumer").await.unwrap()).expect("started");
    let asked = Instant::now();
    match other.cancel("consumer").await.unwrap() {
        CancelOutcome::CancelledRemotely(h) => assert_eq!(h.job_id, job_id),
        o => panic!("{o:?}"),
    }
    eventually(
        Duration::from_secs(5),
        "the holder's attempt stopped",
        || async { holder.running_here("consumer").is_none() },
    )
    .await;
    let stopped_after = asked.elapsed();
    let interval = holder.spec("consumer").unwrap().keeper.renew_interval();
    println!("remote cancel → stop: {stopped_after:?} (renewal interval {interval:?})");
    assert!(
        stopped_after <= interval + Duration::from_millis(500),
        "stopped after {stopped_after:?}"
    );
    let status = final_status(&other, "consumer", job_id).await;
    assert_eq!(status.state, JobState::Canceled);
    assert_eq!(status.owner.as_ref().map(NodeId::as_str), Some("holder"));
    lock_free(&other, "consumer").await;
    assert_eq!(
        other.cancel("consumer").await.unwrap(),
        CancelOutcome::NotRunning
    );
    ks.drop().await;
}

#[tokio::test]
async fn every_ending_gets_its_state_and_result_and_progress_is_readable_while_running() {
    let ks = TestKeyspace::new("endings").await;
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let m = replica(&ks, "a")
        .await
        .job(
            JobSpec::new("finish", "l1").unwrap(),
            |_c: JobContext| async { Ok(Done::finished().with_content(json!({"rows": 3}))) },
        )
        .job(
            JobSpec::new("warn", "l2").unwrap(),
            |_c: JobContext| async { Ok(Done::warning()) },
        )
        .job(
            JobSpec::new("skip", "l3").unwrap(),
            |_c: JobContext| async { Ok(Done::skipped()) },
        )
        .job(
            JobSpec::new("noop", "l4").unwrap(),
            |_c: JobContext| async { Ok(Done::no_action_needed()) },
        )
        .job(
            JobSpec::new("fail", "l5").unwrap(),
            |_c: JobContext| async { Err(JobError::new("upstream said 503")) },
        )
        .job(
            JobSpec::new("panic", "l6").unwrap(),
            |_c: JobContext| async {
                if true {
                    panic!("index out of bounds");
                }
                Ok(Done::finished())
            },
        )
        .job(
            JobSpec::new("slow", "l7")
                .unwrap()
                .timeout(Duration::from_secs(1))
                .unwrap(),
            |_c: JobContext| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Done::finished())
            },
        )
        .job(
            JobSpec::new("progress", "l8").unwrap(),
            move |ctx: JobContext| {
                let mut go = go_rx.clone();
                async move {
                    ctx.progress(json!({"step": 1})).await?;
                    go.wait_for(|g| *g)
                        .await
                        .map_err(|e| JobError::new(e.to_string()))?;
                    Ok(Done::finished())
                }
            },
        )
        .build()
        .await
        .unwrap();
    let expect = [
        (
            "finish",
            JobState::Finished,
            JobResult::Success,
            Some("rows"),
        ),
        ("warn", JobState::Warning, JobResult::Success, None),
        ("skip", JobState::Skipped, JobResult::Success, None),
        ("noop", JobState::NoActionNeeded, JobResult::Success, None),
        (
            "fail",
            JobState::Failed,
            JobResult::Failed,
            Some("upstream said 503"),
        ),
        (
            "panic",
            JobState::Failed,
            JobResult::Failed,
            Some("panicked: index out of bounds"),
        ),
        (
            "slow",
            JobState::Failed,
            JobResult::Failed,
            Some("timed out after 1s"),
        ),
    ];
    for (job_type, state, result, content) in expect {
        let job_id = started(&m.trigger(job_type).await.unwrap()).expect("started");
        let s = final_status(&m, job_type, job_id).await;
        assert_eq!((s.state, s.result()), (state, result), "{job_type}");
        if let Some(text) = content {
            assert!(
                s.content.as_ref().unwrap().to_string().contains(text),
                "{job_type}: {:?}",
                s.content
            );
        }
        let history = m
            .statuses()
            .run_history(&JobType::new(job_type).unwrap(), job_id)
            .await
            .unwrap();
        assert_eq!(
            history.last().and_then(|e| e.status()).map(|s| s.state),
            Some(JobState::Running),
            "{job_type} began RUNNING"
        );
    }
    let job_id = started(&m.trigger("progress").await.unwrap()).expect("started");
    eventually(Duration::from_secs(10), "progress readable", || async {
        let s = status_of(&m, "progress", job_id).await;
        s.state == JobState::Running && s.content == Some(json!({"step": 1}))
    })
    .await;
    go_tx.send(true).unwrap();
    assert_eq!(
        final_status(&m, "progress", job_id).await.state,
        JobState::Finished
    );
    ks.drop().await;
}

#[tokio::test]
async fn wait_ended_returns_once_the_end_is_recorded_and_the_lease_released() {
    use futures::FutureExt;
    let ks = TestKeyspace::new("wait_ended").await;
    let go = Arc::new(tokio::sync::Notify::new());
    let m = replica(&ks, "a")
        .await
        .job(JobSpec::new("gated", "gated").unwrap(), {
            let go = go.clone();
            move |_ctx: JobContext| {
                let go = go.clone();
                async move {
                    go.notified().await;
                    Ok(Done::finished())
                }
            }
        })
        .build()
        .await
        .unwrap();
    let job_id = started(&m.trigger("gated").await.unwrap()).unwrap();
    let mut ended = Box::pin(m.wait_ended(job_id));
    assert!((&mut ended).now_or_never().is_none(), "still running");
    go.notify_one();
    tokio::time::timeout(Duration::from_secs(20), ended)
        .await
        .expect("the attempt ended within 20 s");
    // Nothing left to wait for: recorded and released already.
    assert_eq!(
        status_of(&m, "gated", job_id).await.state,
        JobState::Finished
    );
    assert!(
        m.leases()
            .read(&LockType::new("gated").unwrap(), true)
            .await
            .unwrap()
            .is_none()
    );
    assert!(m.running_here("gated").is_none());
    // An attempt that does not run here: at once.
    assert!(m.wait_ended(JobId::new()).now_or_never().is_some());
    ks.drop().await;
}

#[tokio::test]
async fn an_attempt_that_finds_its_lock_held_is_not_left_on_the_watch_list() {
    let ks = TestKeyspace::new("watch_locked").await;
    let holder = replica(&ks, "holder")
        .await
        .job(JobSpec::new("held", "held").unwrap(), until_cancelled)
        .build()
        .await
        .unwrap();
    let other = replica(&ks, "other")
        .await
        .job(JobSpec::new("held", "held").unwrap(), until_cancelled)
        .build()
        .await
        .unwrap();
    let running = started(&holder.trigger("held").await.unwrap()).unwrap();
    // Listed with its lease, in the same round trip; not started, so
    // unlisted again (with the list's next write, within 500 ms).
    assert!(matches!(
        other.trigger("held").await.unwrap(),
        StartOutcome::Locked { .. }
    ));
    let lists = || async {
        other
            .watches()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.node_id, l.attempts.into_keys().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>()
    };
    eventually(
        Duration::from_secs(10),
        "the locked attempt unlisted",
        || async { lists().await.get("other").is_none_or(|a| a.is_empty()) },
    )
    .await;
    assert_eq!(lists().await.get("holder"), Some(&vec![running]));
    holder.shutdown(Duration::from_secs(10)).await;
    other.shutdown(Duration::from_secs(10)).await;
    ks.drop().await;
}

#[tokio::test]
async fn shutdown_with_a_job_running_records_canceled_and_frees_the_lease() {
    let ks = TestKeyspace::new("shutdown").await;
    let m = replica(&ks, "a")
        .await
        .job(JobSpec::new("long", "long").unwrap(), until_cancelled)
        .build()
        .await
        .unwrap();
    let other = replica(&ks, "b")
        .await
        .job(JobSpec::new("long", "long").unwrap(), until_cancelled)
        .build()
        .await
        .unwrap();
    let job_id = started(&m.trigger("long").await.unwrap()).unwrap();
    m.shutdown(Duration::from_secs(10)).await;
    // Done when shutdown returns: no waiting.
    let s = status_of(&other, "long", job_id).await;
    assert_eq!(s.state, JobState::Canceled);
    assert_eq!(s.content, Some(json!({"reason": "replica shutting down"})));
    assert!(
        other
            .leases()
            .read(&LockType::new("long").unwrap(), true)
            .await
            .unwrap()
            .is_none()
    );
    let history = other
        .statuses()
        .history(&JobType::new("long").unwrap(), 10)
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .all(|e| e.status().unwrap().result() != JobResult::Pending)
    );
    assert!(
        matches!(m.trigger("long").await.unwrap(), StartOutcome::Error { .. }),
        "no start after shutdown"
    );
    ks.drop().await;
}

#[tokio::test]
async fn bad_input_gets_errors_that_name_it() {
    let err = JobSpec::new("report", "r")
        .unwrap()
        .cron("*/5 * * *", "UTC")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("report") && text.contains("*/5 * * *"),
        "{text}"
    );
    assert!(matches!(err, ManagerError::InvalidCron { .. }));
    let err = JobSpec::new("", "r").unwrap_err();
    assert!(err.to_string().contains("job type is empty"), "{err}");

    let ks = TestKeyspace::new("bad_input").await;
    let m = replica(&ks, "a")
        .await
        .job(
            JobSpec::new("known", "k").unwrap(),
            |_c: JobContext| async { Ok(Done::finished()) },
        )
        .build()
        .await
        .unwrap();
    let err = m.trigger("unknown").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown job type `unknown` (registered: known)"
    );
    let dup = replica(&ks, "b")
        .await
        .job(JobSpec::new("x", "k").unwrap(), |_c: JobContext| async {
            Ok(Done::finished())
        })
        .job(JobSpec::new("x", "k").unwrap(), |_c: JobContext| async {
            Ok(Done::finished())
        })
        .build()
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("`x` is registered twice"), "{dup}");

    // Corrupt rows come back named, beside the good ones.
    let good = started(&m.trigger("known").await.unwrap()).unwrap();
    final_status(&m, "known", good).await;
    let bad_state = JobId::new();
    let bad_json = JobId::new();
    ks.session
        .query_unpaged(
            format!("INSERT INTO {}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result) VALUES ('known', {}, now(), toTimestamp(now()), 'EXPLODED', 'FAILED')", ks.name, bad_state),
            (),
        )
        .await
        .unwrap();
    ks.session
        .query_unpaged(
            format!("INSERT INTO {}.job_status_data (job_type, job_id, job_status_ts, trigger_id, job_state, job_result, content) VALUES ('known', {}, toTimestamp(now()), now(), 'RUNNING', 'PENDING', '{{not json')", ks.name, bad_json),
            (),
        )
        .await
        .unwrap();
    let history = m
        .statuses()
        .history(&JobType::new("known").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history
            .iter()
            .any(|e| e.status().map(|s| s.job_id) == Some(good))
    );
    let corrupt = history.iter().find_map(|e| match e {
        StatusEntry::Corrupt { row, problem, .. } => Some((row, problem)),
        _ => None,
    });
    let (row, problem) = corrupt.expect("the corrupt row is returned");
    assert!(
        row.contains(&bad_state.to_string()) && problem.contains("EXPLODED"),
        "{row}: {problem}"
    );
    match m
        .statuses()
        .get(&JobType::new("known").unwrap(), bad_json)
        .await
        .unwrap()
    {
        Some(StatusEntry::Corrupt { row, problem, .. }) => {
            assert!(
                row.contains(&bad_json.to_string()) && problem.contains("not valid JSON"),
                "{row}: {problem}"
            )
        }
        other => panic!("{other:?}"),
    }
    ks.drop().await;
}

#[tokio::test]
async fn a_failing_precondition_stops_start() {
    let ks = TestKeyspace::new("precondition").await;
    let m = replica(&ks, "a")
        .await
        .precondition(|| async { Err("the warehouse is in maintenance".to_owned()) })
        .job(
            JobSpec::new("j", "j")
                .unwrap()
                .cron("* * * * * *", "UTC")
                .unwrap(),
            until_cancelled,
        )
        .build()
        .await
        .unwrap();
    let err = m.start().await.unwrap_err();
    assert!(matches!(err, ManagerError::Precondition(_)));
    assert_eq!(
        err.to_string(),
        "precondition failed, scheduling not started: the warehouse is in maintenance"
    );
    ks.drop().await;
}

#[tokio::test]
async fn a_firing_missed_during_downtime_runs_once_at_start_unless_skipped() {
    use chrono::{DateTime, Utc};
    use hajobs_core::{FiringStore, TriggerId};
    use hajobs_scheduler::MissedRuns;
    let ks = TestKeyspace::new("missed").await;
    // Yearly at New Year: the latest instant is this year's, the next is months away.
    let yearly = "0 0 0 1 1 *";
    let schedule = hajobs_scheduler::CronSchedule::parse(yearly, "UTC").unwrap();
    let missed: DateTime<Utc> = schedule.latest_at(Utc::now()).unwrap();
    let year_before = schedule
        .latest_at(missed - chrono::TimeDelta::days(1))
        .unwrap();
    let firings = FiringStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    let node = NodeId::new("before-the-downtime").unwrap();
    for job in ["catch-up", "skipper"] {
        let job_type = JobType::new(job).unwrap();
        let at = std::time::SystemTime::from(year_before);
        assert!(
            firings
                .claim(&job_type, at, TriggerId::for_firing(job, at), &node)
                .await
                .unwrap()
        );
    }
    let quick = |_c: JobContext| async { Ok(Done::finished()) };
    let m = replica(&ks, "a")
        .await
        .job(
            JobSpec::new("catch-up", "c")
                .unwrap()
                .cron(yearly, "UTC")
                .unwrap(),
            quick,
        )
        .job(
            JobSpec::new("skipper", "s")
                .unwrap()
                .cron(yearly, "UTC")
                .unwrap()
                .missed_runs(MissedRuns::Skip),
            quick,
        )
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    let expected = TriggerId::for_firing("catch-up", std::time::SystemTime::from(missed));
    let deadline = Instant::now() + Duration::from_secs(10);
    let ran = loop {
        let h = m
            .statuses()
            .history(&JobType::new("catch-up").unwrap(), 10)
            .await
            .unwrap();
        if let Some(s) = h
            .first()
            .and_then(|e| e.status().cloned())
            .filter(|s| s.state == JobState::Finished)
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the missed firing did not run in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ran.trigger_id, expected, "the missed instant's trigger id");
    m.shutdown(Duration::from_secs(5)).await;
    // A second start finds it claimed: nothing more runs.
    let again = replica(&ks, "b")
        .await
        .job(
            JobSpec::new("catch-up", "c")
                .unwrap()
                .cron(yearly, "UTC")
                .unwrap(),
            quick,
        )
        .build()
        .await
        .unwrap();
    again.start().await.unwrap();
    again.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        m.statuses()
            .history(&JobType::new("catch-up").unwrap(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        m.statuses()
            .history(&JobType::new("skipper").unwrap(), 10)
            .await
            .unwrap()
            .is_empty(),
        "Skip ran the missed firing"
    );
    ks.drop().await;
}

#[tokio::test]
async fn blocking_work_sees_its_lease_end_and_stops_at_its_next_check() {
    let ks = TestKeyspace::new("blocking").await;
    let returned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let m = replica(&ks, "a")
        .await
        .job(
            JobSpec::new("crunch", "crunch")
                .unwrap()
                .lease_ttl(Duration::from_secs(3))
                .unwrap(),
            {
                let returned = returned.clone();
                move |ctx: JobContext| {
                    let returned = returned.clone();
                    async move {
                        let steps = ctx
                            .spawn_blocking(move |lease| {
                                let mut steps = 0u64;
                                // CPU-bound, no await point: only the check stops it.
                                while lease.is_valid() {
                                    std::thread::sleep(Duration::from_millis(5));
                                    steps += 1;
                                }
                                returned.store(true, std::sync::atomic::Ordering::SeqCst);
                                steps
                            })
                            .await?;
                        Ok(Done::finished().with_content(json!({ "steps": steps })))
                    }
                }
            },
        )
        .build()
        .await
        .unwrap();
    let job_id = started(&m.trigger("crunch").await.unwrap()).expect("started");
    eventually(Duration::from_secs(5), "steps running", || async {
        m.running_here("crunch").is_some()
    })
    .await;
    let asked = Instant::now();
    assert!(matches!(
        m.cancel("crunch").await.unwrap(),
        CancelOutcome::CancelledLocally(_) | CancelOutcome::CancelledRemotely(_)
    ));
    eventually(
        Duration::from_secs(5),
        "the blocking loop returned",
        || async { returned.load(std::sync::atomic::Ordering::SeqCst) },
    )
    .await;
    println!("cancel → blocking loop returned: {:?}", asked.elapsed());
    let status = final_status(&m, "crunch", job_id).await;
    assert_eq!(status.state, JobState::Canceled);
    ks.drop().await;
}

/// Checks that every second from the first firing of "tick" to the last ran
/// exactly once, FINISHED, and that there were at least `at_least`; returns
/// the seconds and the replicas that ran them.
async fn every_second_ran_once(
    m: &JobManager,
    at_least: usize,
) -> (BTreeSet<u64>, BTreeSet<String>) {
    let history = m
        .statuses()
        .history(&JobType::new("tick").unwrap(), 1000)
        .await
        .unwrap();
    let mut per_trigger: BTreeMap<_, Vec<&JobStatus>> = BTreeMap::new();
    for entry in &history {
        let s = entry.status().expect("no corrupt rows");
        per_trigger.entry(s.trigger_id).or_default().push(s);
    }
    let mut cancelled = 0;
    for (trigger, attempts) in &per_trigger {
        assert_eq!(
            attempts.len(),
            1,
            "firing {trigger} ran {} times: {attempts:?}",
            attempts.len()
        );
        // A firing running when the test stops its replicas is CANCELED.
        match attempts[0].state {
            JobState::Finished => {}
            JobState::Canceled => cancelled += 1,
            other => panic!("firing {trigger} ended {other}"),
        }
    }
    assert!(
        cancelled <= 1,
        "{cancelled} firings cancelled: only the last may be"
    );
    // Every second from the first firing to the last ran.
    let seconds: BTreeSet<u64> = per_trigger
        .keys()
        .map(|t| t.uuid().get_timestamp().unwrap().to_unix().0)
        .collect();
    let (first, last) = (*seconds.first().unwrap(), *seconds.last().unwrap());
    let missing: Vec<u64> = (first..=last).filter(|s| !seconds.contains(s)).collect();
    if !missing.is_empty() {
        for (t, a) in &per_trigger {
            eprintln!(
                "{} {:?} {:?}",
                t.uuid().get_timestamp().unwrap().to_unix().0,
                a[0].owner,
                a[0].timestamp
            );
        }
    }
    assert!(missing.is_empty(), "firings missed: {missing:?}");
    assert!(seconds.len() >= at_least, "only {} firings", seconds.len());
    let owners: BTreeSet<String> = history
        .iter()
        .filter_map(|e| e.status()?.owner.as_ref().map(|o| o.to_string()))
        .collect();
    (seconds, owners)
}

#[tokio::test]
async fn a_lease_taken_with_a_lost_claim_is_given_back_at_once() {
    use hajobs_core::TriggerId;
    let ks = TestKeyspace::new("claim_ahead").await;
    // Listed in the registry: the ranks are shared, so this replica, alone
    // and first, takes each firing's lease while its claim is in flight.
    register(&ks, &["solo"], "tick").await;
    // Another replica claimed the next three firings first.
    let firings =
        hajobs_core::FiringStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
            .await
            .unwrap();
    let tick = JobType::new("tick").unwrap();
    let second = |k: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::time::UNIX_EPOCH + Duration::from_secs(now + k)
    };
    let first = second(3);
    let lost: Vec<_> = (0..3)
        .map(|k| first + Duration::from_secs(k))
        .map(|at| (at, TriggerId::for_firing("tick", at)))
        .collect();
    for (at, trigger_id) in &lost {
        assert!(
            firings
                .claim(&tick, *at, *trigger_id, &NodeId::new("elsewhere").unwrap())
                .await
                .unwrap()
        );
    }
    let ran: Arc<Mutex<Vec<TriggerId>>> = Arc::default();
    let m = replica(&ks, "solo")
        .await
        .job(
            JobSpec::new("tick", "tick")
                .unwrap()
                .cron("* * * * * *", "UTC")
                .unwrap(),
            {
                let ran = ran.clone();
                move |ctx: JobContext| {
                    ran.lock().unwrap().push(ctx.trigger_id);
                    async { Ok(Done::finished()) }
                }
            },
        )
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    // The firing right after the lost ones runs here, on time: the leases
    // taken with the lost claims were given back (a lease kept would hold
    // the lock for its 30 s TTL, and that firing would be skipped).
    let after = first + Duration::from_secs(3);
    let next = TriggerId::for_firing("tick", after);
    eventually(
        Duration::from_secs(15),
        "the firing after the lost ones",
        || {
            let ran = ran.clone();
            async move { ran.lock().unwrap().contains(&next) }
        },
    )
    .await;
    let ran = ran.lock().unwrap().clone();
    for (_, trigger_id) in &lost {
        assert!(
            !ran.contains(trigger_id),
            "a firing claimed elsewhere ran here"
        );
    }
    m.shutdown(Duration::from_secs(5)).await;
    // Nothing left holding the lock.
    let lock = LockType::new("tick").unwrap();
    assert_eq!(m.leases().read(&lock, true).await.unwrap(), None);
    ks.drop().await;
}

#[tokio::test]
async fn cron_claims_follow_the_registry_order_and_a_dead_preferred_replica_loses_no_firing() {
    let ks = TestKeyspace::new("cron_order").await;
    // The registry as the daemons write it: three live replicas and one
    // that died a moment ago (its row not yet expired). The dead one comes
    // first for about a quarter of the firings: those must still run once.
    register(&ks, &["a", "b", "c", "dead"], "tick").await;
    let mut managers = Vec::new();
    for node in ["a", "b", "c"] {
        let m = replica(&ks, node)
            .await
            .job(
                JobSpec::new("tick", "tick")
                    .unwrap()
                    .cron("* * * * * *", "UTC")
                    .unwrap(),
                |_ctx: JobContext| async { Ok(Done::finished()) },
            )
            .build()
            .await
            .unwrap();
        managers.push(m);
    }
    for m in &managers {
        m.start().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(12)).await; // the test's length, not a synchronisation
    for m in &managers {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let (seconds, owners) = every_second_ran_once(&managers[0], 10).await;
    assert!(!owners.contains("dead"));
    // Each claim names its replica: every live one claimed some firings
    // (the order changes with every firing), none claimed all of them.
    let firings =
        hajobs_core::FiringStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
            .await
            .unwrap();
    let claims = firings
        .recent(&JobType::new("tick").unwrap(), std::time::UNIX_EPOCH, 100)
        .await
        .unwrap();
    let claimants: BTreeSet<String> = claims.iter().filter_map(|f| f.owner.clone()).collect();
    assert!(
        claimants.len() >= 2,
        "claimed by {claimants:?} over {} firings",
        seconds.len()
    );
    ks.drop().await;
}

#[tokio::test]
async fn a_woken_request_watcher_claims_at_once_however_long_its_poll() {
    use hajobs_core::{RequestOutcome, RequestStore, TriggerId};
    use hajobs_scheduler::{RequestWake, RequestWatcher, WatchConfig};
    let ks = TestKeyspace::new("sched_wake").await;
    let m = replica(&ks, "woken")
        .await
        .job(
            JobSpec::new("quick", "quick").unwrap(),
            |_c: JobContext| async { Ok(Done::finished()) },
        )
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    let store = Arc::new(
        RequestStore::new(ks.session.clone(), &ks.config())
            .await
            .unwrap(),
    );
    let outcome = |id: TriggerId| {
        let store = store.clone();
        async move { store.get(id).await.unwrap().and_then(|r| r.outcome) }
    };
    // Recorded before the watcher starts: its first read claims it.
    let first = TriggerId::new();
    store.request("quick", first, "test").await.unwrap();
    let wake = RequestWake::new();
    let config = WatchConfig {
        interval: Duration::from_secs(3600),
        ..WatchConfig::default()
    };
    let watcher = RequestWatcher::spawn(m.clone(), store.clone(), config, wake.clone());
    eventually(
        Duration::from_secs(10),
        "the first request started",
        || async { matches!(outcome(first).await, Some(RequestOutcome::Started { .. })) },
    )
    .await;
    // Recorded after that read: with an hour's poll, only a wake reads it.
    for _ in 0..3 {
        let next = TriggerId::new();
        store.request("quick", next, "test").await.unwrap();
        // A burst of wakes makes a read (or two), never a failure.
        for _ in 0..50 {
            wake.wake();
        }
        eventually(
            Duration::from_secs(10),
            "the woken request handled",
            || async { outcome(next).await.is_some() },
        )
        .await;
        let claimed = store.get(next).await.unwrap().unwrap();
        assert_eq!(claimed.claimed_by.as_deref(), Some("woken"));
        assert!(
            matches!(
                claimed.outcome,
                Some(RequestOutcome::Started { .. } | RequestOutcome::Locked { .. })
            ),
            "{claimed:?}"
        );
    }
    watcher.stop().await;
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}
