//! The supervisor's rules on a real Cassandra, one pass at a time.

use std::time::{Duration, SystemTime};

use hajobs_core::testing::{TestKeyspace, connect};
use hajobs_core::{FencingToken, JobId, JobState, JobStatus, JobType, NodeId, TriggerId};
use hajobs_scheduler::{Done, JobContext, JobError, JobManager, JobSpec, StartOutcome};
use hajobs_supervisor::{PassReport, Supervisor, SupervisorConfig};

async fn manager(ks: &TestKeyspace) -> JobManager {
    JobManager::builder(ks.config(), NodeId::new("survivor").unwrap())
        .session(connect().await)
        .job(
            JobSpec::new("flaky", "flaky").unwrap().retrigger_count(2),
            |_c: JobContext| async { Err::<Done, _>(JobError::new("always fails")) },
        )
        .job(
            JobSpec::new("steady", "steady").unwrap(),
            |_c: JobContext| async { Ok(Done::finished()) },
        )
        .job(
            JobSpec::new("stoppable", "stoppable").unwrap(),
            |c: JobContext| async move {
                c.cancelled().await;
                Ok(Done::finished())
            },
        )
        .build()
        .await
        .unwrap()
}

/// A supervisor whose every pass sweeps every job type, as if no replica
/// listed anything: what finds an attempt whose replica died unlisted.
fn sweeping() -> SupervisorConfig {
    SupervisorConfig {
        sweep_period: Duration::ZERO,
        ..SupervisorConfig::default()
    }
}

async fn attempts(m: &JobManager, job: &str) -> Vec<JobStatus> {
    let mut list: Vec<JobStatus> = m
        .statuses()
        .history(&JobType::new(job).unwrap(), 50)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.status().cloned())
        .collect();
    list.reverse();
    list
}

/// What a replica killed mid-run leaves: a RUNNING attempt of `steady` on
/// node `gone`, and no lease. Its job id and trigger.
async fn left_running(m: &JobManager) -> (JobId, TriggerId) {
    left_running_of(m, "steady").await
}

/// The same for `job`.
async fn left_running_of(m: &JobManager, job: &str) -> (JobId, TriggerId) {
    let (dead, trigger) = (JobId::new(), TriggerId::new());
    m.statuses()
        .write(&JobStatus {
            job_type: JobType::new(job).unwrap(),
            job_id: dead,
            trigger_id: trigger,
            timestamp: SystemTime::now(),
            state: JobState::Running,
            owner: Some(NodeId::new("gone").unwrap()),
            fencing_token: Some(FencingToken(7)),
            content: None,
        })
        .await
        .unwrap();
    (dead, trigger)
}

/// Runs passes until `done` holds for the job's attempts (at most 40 passes).
async fn passes_until(
    s: &Supervisor,
    m: &JobManager,
    job: &str,
    done: impl Fn(&[JobStatus]) -> bool,
) -> Vec<JobStatus> {
    for _ in 0..40 {
        let list = attempts(m, job).await;
        if done(&list) {
            return list;
        }
        s.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{job}: {:?}", attempts(m, job).await);
}

#[tokio::test]
async fn a_running_attempt_without_a_lease_is_dead_and_its_trigger_reruns_here() {
    let ks = TestKeyspace::new("sup_dead").await;
    let m = manager(&ks).await;
    let s = Supervisor::new(m.clone(), sweeping());
    // What a replica killed mid-run leaves: RUNNING, and no lease.
    let (dead, trigger) = left_running(&m).await;
    let report = s
        .pass()
        .await
        .unwrap()
        .expect("the supervisor lease was free");
    assert_eq!(report.dead, vec![(JobType::new("steady").unwrap(), dead)]);
    assert_eq!(report.retriggered.len(), 1);
    assert_eq!(report.retriggered[0].1, trigger, "same trigger id");
    let list = passes_until(&s, &m, "steady", |l| {
        l.len() == 2 && l[1].state == JobState::Finished
    })
    .await;
    assert_eq!(list[0].state, JobState::Dead);
    assert_eq!(list[0].owner.as_ref().unwrap().as_str(), "gone");
    assert_eq!(list[1].owner.as_ref().unwrap().as_str(), "survivor");
    // Finished: nothing more to do.
    let idle = s.pass().await.unwrap().unwrap();
    assert_eq!(idle, PassReport::default());
    ks.drop().await;
}

#[tokio::test]
async fn a_dead_attempt_of_an_always_on_job_is_recorded_dead_and_left_to_its_replicas() {
    let ks = TestKeyspace::new("sup_always").await;
    // Not started: no loop of its own runs the job here.
    let m = JobManager::builder(ks.config(), NodeId::new("survivor").unwrap())
        .session(connect().await)
        .job(
            JobSpec::new("consumer", "consumer")
                .unwrap()
                .keep_running(hajobs_scheduler::KeepRunning::default())
                .unwrap(),
            |c: JobContext| async move {
                c.cancelled().await;
                Ok(Done::finished())
            },
        )
        .build()
        .await
        .unwrap();
    let s = Supervisor::new(m.clone(), sweeping());
    let (dead, _) = left_running_of(&m, "consumer").await;
    let report = s
        .pass()
        .await
        .unwrap()
        .expect("the supervisor lease was free");
    assert_eq!(report.dead, vec![(JobType::new("consumer").unwrap(), dead)]);
    assert!(report.retriggered.is_empty(), "{report:?}");
    assert!(m.running_here("consumer").is_none());
    ks.drop().await;
}

#[tokio::test]
async fn a_failing_trigger_runs_one_plus_retrigger_count_times() {
    let ks = TestKeyspace::new("sup_flaky").await;
    let m = manager(&ks).await;
    let s = Supervisor::new(m.clone(), SupervisorConfig::default());
    assert!(matches!(
        m.trigger("flaky").await.unwrap(),
        StartOutcome::Started { .. }
    ));
    let list = passes_until(&s, &m, "flaky", |l| {
        l.len() == 3 && l.iter().all(|a| a.state == JobState::Failed)
    })
    .await;
    assert!(list.iter().all(|a| a.trigger_id == list[0].trigger_id));
    for _ in 0..3 {
        let report = s.pass().await.unwrap().unwrap();
        assert!(report.retriggered.is_empty());
        assert_eq!(report.exhausted.len(), 1);
    }
    assert_eq!(attempts(&m, "flaky").await.len(), 3);
    ks.drop().await;
}

#[tokio::test]
async fn a_cancelled_attempt_is_not_rerun_and_a_live_one_not_marked_dead() {
    let ks = TestKeyspace::new("sup_cancel").await;
    let m = manager(&ks).await;
    let s = Supervisor::new(m.clone(), SupervisorConfig::default());
    let StartOutcome::Started { job_id, .. } = m.trigger("stoppable").await.unwrap() else {
        panic!()
    };
    // Running and holding its lease: left alone, pass after pass.
    for _ in 0..5 {
        assert_eq!(s.pass().await.unwrap().unwrap(), PassReport::default());
    }
    m.cancel("stoppable").await.unwrap();
    passes_until(&s, &m, "stoppable", |l| {
        l.len() == 1 && l[0].state == JobState::Canceled
    })
    .await;
    for _ in 0..3 {
        assert_eq!(s.pass().await.unwrap().unwrap(), PassReport::default());
    }
    assert_eq!(attempts(&m, "stoppable").await.len(), 1);
    assert_eq!(attempts(&m, "stoppable").await[0].job_id, job_id);
    ks.drop().await;
}

#[tokio::test]
async fn a_cron_firing_claimed_by_a_replica_that_died_before_starting_it_reruns_once() {
    let ks = TestKeyspace::new("sup_lost_firing").await;
    let node = |n: &str| NodeId::new(n).unwrap();
    let build = |n: NodeId| {
        let ks_config = ks.config();
        async move {
            JobManager::builder(ks_config, n)
                .session(connect().await)
                .job(
                    // Every minute, but not firing during the test (the
                    // managers are not started): the claims below stand in.
                    JobSpec::new("nightly", "nightly")
                        .unwrap()
                        .cron("0 * * * * *", "UTC")
                        .unwrap(),
                    |_c: JobContext| async { Ok(Done::finished()) },
                )
                .build()
                .await
                .unwrap()
        }
    };
    let (a, b) = (build(node("survivor")).await, build(node("other")).await);
    let config = SupervisorConfig {
        lost_firing_after: Duration::from_secs(1),
        ..sweeping()
    };
    let (sa, sb) = (
        Supervisor::new(a.clone(), config.clone()),
        Supervisor::new(b.clone(), config),
    );
    let firings =
        hajobs_core::FiringStore::new(connect().await, &ks.config(), Duration::from_secs(3600))
            .await
            .unwrap();
    let job_type = JobType::new("nightly").unwrap();
    // A replica claims a firing and dies before starting it …
    // (Two minutes ago, on the minute: a firing of this schedule.)
    let minute = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60;
    let lost_at = SystemTime::UNIX_EPOCH + Duration::from_secs((minute - 2) * 60);
    let lost = TriggerId::for_firing("nightly", lost_at);
    assert!(
        firings
            .claim(&job_type, lost_at, lost, &node("gone"))
            .await
            .unwrap()
    );
    // … another claims one and skips it by design (its lock stayed held).
    let skipped_at = lost_at + Duration::from_secs(60);
    let skipped = TriggerId::for_firing("nightly", skipped_at);
    assert!(
        firings
            .claim(&job_type, skipped_at, skipped, &node("gone"))
            .await
            .unwrap()
    );
    firings
        .record(&job_type, skipped_at, hajobs_core::FiringOutcome::Skipped)
        .await
        .unwrap();
    // Two supervisors pass until the lost firing's trigger has run here.
    let mut closed = Vec::new();
    for _ in 0..60 {
        for s in [&sa, &sb] {
            if let Some(r) = s.pass().await.unwrap() {
                closed.extend(r.lost_firings.iter().map(|(_, t)| *t));
            }
        }
        if attempts(&a, "nightly")
            .await
            .iter()
            .any(|s| s.trigger_id == lost && s.state == JobState::Finished)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = attempts(&a, "nightly").await;
    let of_lost: Vec<JobState> = list
        .iter()
        .filter(|s| s.trigger_id == lost)
        .map(|s| s.state)
        .collect();
    assert_eq!(
        of_lost,
        [JobState::Failed, JobState::Finished],
        "recorded FAILED once, then re-run under its trigger: {list:?}"
    );
    assert_eq!(closed, [lost], "closed once, by one supervisor");
    assert!(
        list.iter().all(|s| s.trigger_id != skipped),
        "a skipped firing is not re-run: {list:?}"
    );
    let recent = firings
        .recent(&job_type, SystemTime::UNIX_EPOCH, 10)
        .await
        .unwrap();
    let lost_row = recent.iter().find(|f| f.trigger_id == lost).unwrap();
    assert_eq!(lost_row.outcome.as_deref(), Some("lost"));
}

#[tokio::test]
async fn a_pass_looks_at_what_the_watch_lists_name_and_the_sweep_at_the_rest() {
    let ks = TestKeyspace::new("sup_watch").await;
    let m = manager(&ks).await;
    // A pass sweeps 1/43,200 of the job types: in effect, only the lists.
    let config = SupervisorConfig {
        sweep_period: Duration::from_secs(86_400),
        ..SupervisorConfig::default()
    };
    let s = Supervisor::new(m.clone(), config.clone());
    let now_ms = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // Two replicas killed mid-run: "listed" wrote its watch list before its
    // RUNNING status, as every replica does; "unlisted" died in between.
    let running = |job_type: &str, node: &str| JobStatus {
        job_type: JobType::new(job_type).unwrap(),
        job_id: JobId::new(),
        trigger_id: TriggerId::new(),
        timestamp: SystemTime::now(),
        state: JobState::Running,
        owner: Some(NodeId::new(node).unwrap()),
        fencing_token: Some(FencingToken(3)),
        content: None,
    };
    let (listed, unlisted) = (
        running("steady", "listed"),
        running("stoppable", "unlisted"),
    );
    m.watches()
        .write(
            &NodeId::new("listed").unwrap(),
            &[(listed.job_id, listed.job_type.clone())]
                .into_iter()
                .collect(),
            &Default::default(),
            1,
        )
        .await
        .unwrap();
    for status in [&listed, &unlisted] {
        m.statuses().write(status).await.unwrap();
    }
    let before = now_ms();
    let report = s
        .pass()
        .await
        .unwrap()
        .expect("the supervisor lease was free");
    assert_eq!(
        report.dead,
        vec![(listed.job_type.clone(), listed.job_id)],
        "the listed attempt is found by the first pass"
    );
    // The unlisted one waits for the sweep (unless this very pass swept it).
    if !config.sweeps("stoppable", before) && !config.sweeps("stoppable", now_ms()) {
        assert_eq!(attempts(&m, "stoppable").await[0].state, JobState::Running);
    }
    // A sweeping pass finds it.
    let report = Supervisor::new(m.clone(), sweeping())
        .pass()
        .await
        .unwrap()
        .unwrap();
    assert!(
        report
            .dead
            .contains(&(unlisted.job_type.clone(), unlisted.job_id)),
        "{report:?}"
    );
    ks.drop().await;
}

/// Waits (up to 20 s) until `found` returns something.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    found: impl Fn() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = found().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_running_supervisor_keeps_its_lease_between_passes_and_gives_it_up_at_stop() {
    let ks = TestKeyspace::new("sup_kept").await;
    let m = manager(&ks).await;
    let config = SupervisorConfig {
        interval: Duration::from_millis(100),
        // Longer than the jobs' (30 s): the kept lease takes theirs.
        lease_ttl: hajobs_core::LeaseTtl::from_secs(60).unwrap(),
        ..sweeping()
    };
    let lock = config.lock_type.clone();
    let handle = Supervisor::new(m.clone(), config).spawn();
    let held = || async {
        m.leases()
            .read(&lock, true)
            .await
            .unwrap()
            .map(|h| (h.job_id, h.fencing_token))
    };
    let first = until("the supervisor's lease taken", held).await;
    // Passes keep running under it: a dead attempt written now is found and
    // its trigger re-run, and the lease is the same one throughout.
    let (dead, trigger) = left_running(&m).await;
    let list = until("the dead attempt re-run", || async {
        let l = attempts(&m, "steady").await;
        (l.len() == 2 && l[1].state == JobState::Finished).then_some(l)
    })
    .await;
    assert_eq!((list[0].job_id, list[0].state), (dead, JobState::Dead));
    assert_eq!(list[1].trigger_id, trigger);
    assert_eq!(held().await, Some(first), "one lease across the passes");
    // Its TTL is never longer than the shortest job lease TTL (30 s here,
    // where the configured one is 60 s).
    let ttl: i32 = ks
        .session
        .query_unpaged(
            format!(
                "SELECT TTL(job_lock) FROM {}.lock WHERE lock_type = ?",
                ks.name
            ),
            (lock.as_str(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row::<(Option<i32>,)>()
        .unwrap()
        .0
        .unwrap();
    assert!(ttl <= 30, "TTL {ttl}");
    handle.stop().await;
    assert_eq!(held().await, None, "released at stop");
    ks.drop().await;
}
