//! Failover proven with real OS processes: replicas (`src/bin/replica.rs`)
//! killed with SIGKILL, paused with SIGSTOP, on the real Cassandra.
//!
//! `cargo test -p hajobs-tests --release failover -- --nocapture` runs the
//! failover trials and prints their figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{
    JobId, JobResult, JobState, JobStatus, JobType, LockType, StatusEntry, StatusStore, TriggerId,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The replicas' lease TTL (see `src/bin/replica.rs`).
const TTL: Duration = Duration::from_secs(4);

struct Replica {
    node: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Replica {
    async fn spawn(ks: &str, node: &str, trace_dir: &Path, work_secs: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replica"))
            .args([node, ks, trace_dir.to_str().unwrap()])
            .env("HAJOBS_WORK_SECS", work_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Each replica logs to TRACE_DIR/NODE.log (kept when a test fails).
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(trace_dir.join(format!("{node}.log")))
                    .unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("starting a replica");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .expect("replica not ready within 60 s")
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "replica {node} did not start"
        );
        Self {
            node: node.to_owned(),
            child,
            stdin,
            stdout,
        }
    }

    /// Sends `trigger JOB` without waiting for the reply.
    async fn send_trigger(&mut self, job: &str) {
        self.stdin
            .write_all(format!("trigger {job}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends `trigger JOB`, returns the reply's words.
    async fn trigger(&mut self, job: &str) -> Vec<String> {
        self.send_trigger(job).await;
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("no reply in 30 s")
            .unwrap()
            .unwrap_or_else(|| panic!("replica {} closed its stdout", self.node));
        line.split(' ').map(str::to_owned).collect()
    }

    /// Triggers `job`; returns the attempt and its trigger.
    async fn start(&mut self, job: &str) -> (JobId, TriggerId) {
        let reply = self.trigger(job).await;
        assert_eq!(reply[0], "started", "{job} on {}: {reply:?}", self.node);
        (reply[2].parse().unwrap(), reply[3].parse().unwrap())
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("replica running").to_string();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid} failed");
    }

    async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

struct Cluster {
    ks: TestKeyspace,
    statuses: StatusStore,
    trace_dir: PathBuf,
    replicas: Vec<Replica>,
    work_secs: u64,
}

impl Cluster {
    async fn new(prefix: &str, work_secs: u64) -> Self {
        let ks = TestKeyspace::new(prefix).await;
        let statuses =
            StatusStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
                .await
                .unwrap();
        let trace_dir = std::env::temp_dir().join(&ks.name);
        std::fs::create_dir_all(&trace_dir).unwrap();
        let mut replicas = Vec::new();
        for node in ["node-a", "node-b", "node-c"] {
            replicas.push(Replica::spawn(&ks.name, node, &trace_dir, work_secs).await);
        }
        Self {
            ks,
            statuses,
            trace_dir,
            replicas,
            work_secs,
        }
    }

    /// Restarts replica `i` (same node name) after it died.
    async fn respawn(&mut self, i: usize) {
        let node = self.replicas[i].node.clone();
        self.replicas[i] =
            Replica::spawn(&self.ks.name, &node, &self.trace_dir, self.work_secs).await;
    }

    /// Every attempt of `trigger`, oldest first.
    async fn attempts(&self, job: &str, trigger: TriggerId) -> Vec<JobStatus> {
        let mut list: Vec<JobStatus> = self
            .statuses
            .history(&JobType::new(job).unwrap(), 100)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| e.status().cloned())
            .filter(|s| s.trigger_id == trigger)
            .collect();
        list.reverse();
        list
    }

    /// Every status of one attempt, oldest first.
    async fn run_history(&self, job: &str, job_id: JobId) -> Vec<JobStatus> {
        let mut h: Vec<JobStatus> = self
            .statuses
            .run_history(&JobType::new(job).unwrap(), job_id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| match e {
                StatusEntry::Status(s) => s,
                StatusEntry::Corrupt { row, problem, .. } => panic!("corrupt {row}: {problem}"),
            })
            .collect();
        h.reverse();
        h
    }

    /// Polls until `f` returns `Some`, failing after `limit`.
    async fn wait<T, F, Fut>(&self, limit: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = f().await {
                return t;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a running attempt early (forced release: its keeper cancels it).
    async fn stop_job(&self, job_index: usize) {
        let store = self.ks.lease_store().await;
        let lock = LockType::new(format!("work-lock-{job_index}")).unwrap();
        store.force_release(&lock).await.unwrap();
    }

    async fn shutdown(mut self) {
        for r in &mut self.replicas {
            let _ = r.child.start_kill();
            let _ = r.child.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.trace_dir);
        self.ks.drop().await;
    }
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_after_kill_9_reruns_the_trigger_on_a_survivor() {
    let trials = 10;
    let mut cluster = Cluster::new("failover", 20).await;
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let job = format!("work-{trial}");
        let victim = trial % 3;
        let (first, trigger) = cluster.replicas[victim].start(&job).await;
        // Let it run a moment (a renewal or two), then kill it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed_at = SystemTime::now();
        cluster.replicas[victim].kill9().await;
        let victim_node = cluster.replicas[victim].node.clone();

        let retry = cluster
            .wait(
                Duration::from_secs(30),
                "a survivor re-ran the trigger",
                || async {
                    let attempts = cluster.attempts(&job, trigger).await;
                    attempts
                        .iter()
                        .find(|a| a.job_id != first)
                        .map(|a| a.job_id)
                },
            )
            .await;
        let retry_history = cluster.run_history(&job, retry).await;
        let running = &retry_history[0];
        assert_eq!(running.state, JobState::Running);
        let failover = running
            .timestamp
            .duration_since(killed_at)
            .unwrap_or_default();
        failovers.push(failover.as_millis());
        let survivor = running.owner.as_ref().unwrap().to_string();
        assert_ne!(
            survivor, victim_node,
            "trial {trial}: re-run on the killed replica"
        );

        let first_history = cluster.run_history(&job, first).await;
        let states: Vec<JobState> = first_history.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [JobState::Running, JobState::Dead],
            "trial {trial}: the killed attempt"
        );
        assert_eq!(
            first_history[0].owner.as_ref().unwrap().as_str(),
            victim_node
        );
        assert!(running.fencing_token > first_history[0].fencing_token);

        if trial == 0 {
            // The whole story once: RUNNING (A), DEAD, RUNNING (B), FINISHED.
            let done = cluster
                .wait(Duration::from_secs(40), "the re-run finished", || async {
                    let s = cluster.attempts(&job, trigger).await;
                    (s.len() == 2 && s[1].result() != JobResult::Pending).then_some(s)
                })
                .await;
            assert_eq!(done[0].state, JobState::Dead);
            assert_eq!(done[1].state, JobState::Finished);
        } else {
            cluster.stop_job(trial).await;
        }
        cluster.respawn(victim).await;
        println!("trial {trial}: killed {victim_node}, re-run on {survivor} after {failover:?}");
    }
    failovers.sort_unstable();
    let (p50, max) = (percentile(&failovers, 0.5), *failovers.last().unwrap());
    let ttl_ms = TTL.as_millis();
    println!("failover ttl_ms={ttl_ms} p50_ms={p50} max_ms={max} trials={trials}");
    assert!(p50 <= ttl_ms + 2000, "failover p50 {p50} ms > TTL + 2 s");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_retrigger_count_bounds_the_reruns_of_a_crashing_job() {
    let mut cluster = Cluster::new("crash", 20).await;
    // The replica aborts right after recording RUNNING, often before replying.
    cluster.replicas[0].send_trigger("crash").await;
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut restarts = 0;
    // Retrigger count 2: three attempts, then nothing more for a while.
    while started.elapsed() < Duration::from_secs(60) {
        for i in 0..3 {
            if cluster.replicas[i].has_exited() {
                cluster.respawn(i).await;
                restarts += 1;
            }
        }
        let history = cluster
            .statuses
            .history(&JobType::new("crash").unwrap(), 100)
            .await
            .unwrap();
        attempts = history
            .into_iter()
            .filter_map(|e| e.status().cloned())
            .collect::<Vec<_>>();
        let all_dead = attempts.len() == 3 && attempts.iter().all(|a| a.state == JobState::Dead);
        if all_dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.len(), 3, "attempts: {attempts:?}");
    assert!(
        attempts.iter().all(|a| a.state == JobState::Dead),
        "{attempts:?}"
    );
    let triggers: std::collections::BTreeSet<TriggerId> =
        attempts.iter().map(|a| a.trigger_id).collect();
    assert_eq!(triggers.len(), 1, "one trigger");
    // Several more supervisor passes (1 s each) and a TTL: still three.
    let calm = Instant::now();
    while calm.elapsed() < TTL + Duration::from_secs(4) {
        for i in 0..3 {
            if cluster.replicas[i].has_exited() {
                cluster.respawn(i).await;
                restarts += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = cluster
        .statuses
        .history(&JobType::new("crash").unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 3, "a fourth attempt ran: {history:?}");
    println!("crashing job: 3 attempts (1 + retrigger count 2), {restarts} replica restarts");
    cluster.shutdown().await;
}

/// Trace lines `(token, epoch_ms)` of `job` written by `node`.
fn trace(dir: &Path, node: &str, job: &str) -> Vec<(i64, u128)> {
    let text = std::fs::read_to_string(dir.join(format!("{node}.trace"))).unwrap_or_default();
    // Only whole lines: the replica may be writing the last one right now.
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| {
            let mut w = l.split(' ');
            (w.next()? == job).then(|| {
                (
                    w.next().unwrap().parse().unwrap(),
                    w.next().unwrap().parse().unwrap(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_after_sigstop_the_paused_replica_does_no_work_past_its_deadline() {
    let mut cluster = Cluster::new("pause", 30).await;
    for trial in 0..5 {
        let job_index = 10 + trial;
        let job = format!("work-{job_index}");
        let victim = trial % 3;
        let victim_node = cluster.replicas[victim].node.clone();
        let (first, trigger) = cluster.replicas[victim].start(&job).await;
        let dir = cluster.trace_dir.clone();
        cluster
            .wait(
                Duration::from_secs(10),
                "the victim's first trace lines",
                || async { (trace(&dir, &victim_node, &job).len() >= 5).then_some(()) },
            )
            .await;
        cluster.replicas[victim].signal("-STOP");
        let stopped_at = Instant::now();
        let retry = cluster
            .wait(
                Duration::from_secs(30),
                "a survivor re-ran the trigger",
                || async {
                    cluster
                        .attempts(&job, trigger)
                        .await
                        .iter()
                        .find(|a| a.job_id != first)
                        .cloned()
                },
            )
            .await;
        let survivor = retry.owner.as_ref().unwrap().to_string();
        cluster
            .wait(
                Duration::from_secs(10),
                "the survivor's trace lines",
                || async { (!trace(&dir, &survivor, &job).is_empty()).then_some(()) },
            )
            .await;
        // The survivor holds the lease, so the paused one's lease expired,
        // and with it its deadline. Wake it up.
        let paused_for = stopped_at.elapsed();
        cluster.replicas[victim].signal("-CONT");
        let first_final = cluster
            .wait(
                Duration::from_secs(20),
                "the woken attempt's end recorded",
                || async {
                    let h = cluster.run_history(&job, first).await;
                    h.iter()
                        .any(|s| s.state == JobState::Canceled || s.state == JobState::Failed)
                        .then_some(h)
                },
            )
            .await;
        // Give the woken replica a moment in which it must write nothing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = trace(&dir, &victim_node, &job);
        let new = trace(&dir, &survivor, &job);
        let (old_token, old_last) = (old[0].0, old.iter().map(|l| l.1).max().unwrap());
        let (new_token, new_first) = (new[0].0, new.iter().map(|l| l.1).min().unwrap());
        assert!(old.iter().all(|l| l.0 == old_token) && new.iter().all(|l| l.0 == new_token));
        assert!(
            new_token > old_token,
            "trial {trial}: token {new_token} after {old_token}"
        );
        assert!(
            old_last < new_first,
            "trial {trial}: the paused replica wrote at {old_last}, after the survivor began at {new_first}"
        );
        let states: Vec<JobState> = first_final.iter().map(|s| s.state).collect();
        println!(
            "pause trial {trial}: paused {paused_for:?}; {victim_node} (token {old_token}) last wrote {} ms before {survivor} (token {new_token}) began; its history {states:?}",
            new_first - old_last
        );
        cluster.stop_job(job_index).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_false_dead_among_200_short_jobs_under_a_busy_supervisor() {
    let mut cluster = Cluster::new("nofalse", 20).await;
    let mut started: BTreeMap<JobId, usize> = BTreeMap::new();
    let mut i = 0;
    while started.len() < 200 {
        let r = i % 3;
        i += 1;
        let reply = cluster.replicas[r].trigger("short").await;
        match reply[0].as_str() {
            "started" => {
                started.insert(reply[2].parse().unwrap(), r);
            }
            "locked" => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => panic!("{reply:?}"),
        }
    }
    let history = cluster
        .wait(Duration::from_secs(30), "all 200 finished", || async {
            let h: Vec<JobStatus> = cluster
                .statuses
                .history(&JobType::new("short").unwrap(), 1000)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|e| e.status().cloned())
                .collect();
            (h.len() >= 200 && h.iter().all(|s| s.result() != JobResult::Pending)).then_some(h)
        })
        .await;
    let dead: Vec<&JobStatus> = history
        .iter()
        .filter(|s| s.state == JobState::Dead)
        .collect();
    assert!(dead.is_empty(), "live jobs recorded DEAD: {dead:?}");
    assert_eq!(history.len(), 200, "no retriggers either");
    assert!(history.iter().all(|s| s.state == JobState::Finished));
    // The supervisors did look: their lease was taken during the test (and
    // is kept between passes, so its token counts the takings, not the
    // passes).
    let token: i64 = cluster
        .ks
        .session
        .query_unpaged(
            format!(
                "SELECT fencing_token FROM {}.lock WHERE lock_type = 'hajobs-supervisor'",
                cluster.ks.name
            ),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .maybe_first_row::<(Option<i64>,)>()
        .unwrap()
        .and_then(|(t,)| t)
        .unwrap_or_default();
    println!("200 short jobs, none DEAD; supervisor leases taken so far: {token}");
    assert!(token >= 1, "no supervisor ever took its lease");
    cluster.shutdown().await;
}
