//! `cargo bench -p hajobs-tests --bench scale`: how hajobs' scheduling
//! scales and how precisely it fires, on the cluster of `HAJOBS_CQL_NODES`.
//! Each measurement prints one `scale-bench …` line (see
//! `docs/performance.md`). `HAJOBS_BENCH_SECS` sets how long the timed
//! measurements run (default 30), `HAJOBS_BENCH_IDLE_SECS` the idle window
//! of the footprint (default 60).
//!
//! - `fire_lag`: two job managers (two replicas, in the node registry as
//!   daemons are) on a per-second cron of a Rust job; lag = the job's first
//!   poll − the scheduled instant (read back from the firing's trigger id,
//!   which encodes it). Beside it, `fire_steps`: the same firings by step,
//!   from the scheduler's `hajobs::steps` spans — the timer's wake (the
//!   firing's start − its instant), then claim, lease, keeper, watch,
//!   RUNNING and the outcome, p50 / p99 over the firings that started.
//! - `throughput`: 1 and 3 job managers, each with 8 no-op job types on
//!   distinct lock types, each job type triggered again as soon as its last
//!   attempt ended (acquire, RUNNING, FINISHED, release); beside it, the raw
//!   LWTs per second the same number of concurrent loops get from the node
//!   (`INSERT … IF NOT EXISTS` then `DELETE … IF EXISTS`), the physical
//!   limit, raw plain writes, and the attempt's requests sent through the
//!   stores without a manager (with and without the status writes).
//! - `supervisor`: 10 / 100 / 1,000 registered job types of which 10 run
//!   (on another job manager and session): the duration of one supervisor
//!   pass and the Cassandra requests it makes (the driver's count, the
//!   pass's own lease included), median of 20 passes; beside it, the same
//!   with a sweep of every job type on each pass (what a pass cost before
//!   the watch lists).
//! - `cron`: 1, 3, 10 and 30 job managers in this process, each registered
//!   in the node registry as the daemon registers itself, on a per-second
//!   cron of a no-op job: the claims' LWTs per firing (hajobs' own
//!   `hajobs_cron_claims_total`), firings missed and doubled in the steady
//!   window (from the instants the jobs saw), claims that failed (Paxos
//!   timeouts); beside it, 30 managers without registry rows, each claiming
//!   every firing (what a firing cost before the claim order).
//! - `renewals`: one job manager holding 1,000 leases (1,000 job types,
//!   each attempt waiting to be cancelled), lease TTL 30 s (the default,
//!   renewals every 10 s) and 6 s (every 2 s): the renewal lag — from when a
//!   renewal was due (the previous confirmed one's send time + the renewal
//!   interval) to when the job sees it confirmed.
//! - `status_partition`: one job type's `job_status_meta` partition (ha-jobs'
//!   layout, one partition per job type) with 100 rows, then 1,000,000
//!   (14 days of a per-second job; the older half written with a 1 s TTL,
//!   expired when read): the newest-20 read, which is both the history a
//!   `hajobs status` shows and the supervisor's read of a job type. Only
//!   when asked (`HAJOBS_BENCH_ONLY=status_partition`): it writes for minutes.
//! - `work_items`: 8 concurrent loops processing fresh work items through
//!   `WorkItems` (check-in LWT + its listing write, a lease kept by the lock
//!   keeper, check-out LWT): items per second and the latency of one item,
//!   p50 / p99; beside it, raw LWT pairs from as many loops (one item is two
//!   LWTs, so ratio 1.0 would be the physical limit).
//! - `scheduled`: one-time triggers, `HAJOBS_BENCH_SCHEDULED` (50,000) due
//!   evenly over `HAJOBS_BENCH_SCHEDULED_SECS` (300) on 32 job types,
//!   scheduled by a replica that stops before the first is due, fired by 3
//!   others: from the jobs' own records, how many ran once, twice, never;
//!   the lag (the job's first poll − the due time) p50 / p99 / max; beside
//!   it the raw LWTs per second of the node.
//! - `cluster_trigger`: 3 real `hajobs serve` daemons serving HTTP on one
//!   node, a job every one has: `hajobs trigger JOB` (a new process:
//!   connect, record the request, wake a replica, wait until started) and
//!   `POST /jobs/JOB` on a daemon, wall time p50 / p99; beside it the CLI's
//!   own cost, `hajobs nodes` (start, connect, one read).
//! - `command_lag`: 3 real `hajobs serve` daemons on a per-second cron of a
//!   command whose first line records the shell's clock
//!   (`$EPOCHREALTIME`) beside its trigger id; lag = that line − the
//!   scheduled instant the trigger id encodes: what an operator's command
//!   sees, guard process and shell start included, p50 / p99.
//! - `footprint`: the real `hajobs serve` (release build) with 100 cron jobs
//!   and the HTTP server on, idle: its RSS, and its CPU over 60 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hajobs_core::NodeId;
use hajobs_core::testing::TestKeyspace;
use hajobs_scheduler::{Done, JobContext, JobManager, JobSpec};

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return f64::NAN;
    }
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// The scheduled instant a firing's trigger id encodes, ns since the epoch.
fn instant_of(ctx: &JobContext) -> Option<i128> {
    let (secs, nanos) = ctx.trigger_id.uuid().get_timestamp()?.to_unix();
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Collects the firing path's step spans (`hajobs_scheduler::steps`): per
/// firing that started an attempt, how long its timer woke late and how
/// long each step took.
mod step_times {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use hajobs_scheduler::steps::TARGET;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing::{Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    /// Durations (ms) by step, over the firings that started.
    pub(crate) type Times = Arc<Mutex<BTreeMap<String, Vec<f64>>>>;

    #[derive(Default)]
    struct Fields {
        step: Option<String>,
        instant_ms: Option<i64>,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "step" {
                self.step = Some(value.to_owned());
            }
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            if field.name() == "instant_ms" {
                self.instant_ms = Some(value);
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "step" {
                self.step = Some(format!("{value:?}").trim_matches('"').to_owned());
            }
        }
    }

    /// A step span's name and start.
    struct Step(String, Instant);
    /// A firing span's wake lag and its steps so far.
    struct Firing(f64, Vec<(String, f64)>);

    /// The layer; `times` receives each started firing's steps.
    pub(crate) struct StepLayer {
        pub(crate) times: Times,
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StepLayer {
        fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
            metadata.target() == TARGET
        }

        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            if let Some(instant_ms) = fields.instant_ms {
                let wake = (super::now_ns() - instant_ms as i128 * 1_000_000) as f64 / 1e6;
                span.extensions_mut().insert(Firing(wake, Vec::new()));
            } else if let Some(step) = fields.step {
                span.extensions_mut().insert(Step(step, Instant::now()));
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(&id) else { return };
            if let Some(Step(name, started)) = span.extensions_mut().remove::<Step>() {
                let took = started.elapsed().as_secs_f64() * 1e3;
                if let Some(firing) = span.scope().skip(1).find(|s| s.name() == "firing") {
                    if let Some(f) = firing.extensions_mut().get_mut::<Firing>() {
                        f.1.push((name, took));
                    }
                }
            } else if let Some(Firing(wake, steps)) = span.extensions_mut().remove::<Firing>() {
                if steps.iter().any(|(name, _)| name == "lease") {
                    let mut times = self.times.lock().unwrap();
                    times.entry("wake".into()).or_default().push(wake);
                    for (name, took) in steps {
                        times.entry(name).or_default().push(took);
                    }
                }
            }
        }
    }
}

/// Writes `node`'s row in the node registry as its daemon would, with the
/// job types it configures.
async fn register(nodes: &hajobs_core::NodeStore, node: &str, job_types: &[&str], secs: u64) {
    let record = hajobs_core::NodeRecord {
        node_id: node.to_owned(),
        host: "bench".into(),
        pid: 0,
        version: String::new(),
        http: None,
        started_at_ms: hajobs_core::node_store::now_millis(),
        seen_at_ms: 0,
        job_types: job_types.iter().map(|t| (*t).to_owned()).collect(),
        running: Vec::new(),
    };
    nodes
        .refresh(&record, Duration::from_secs(secs + 120))
        .await
        .unwrap();
}

async fn fire_lag(secs: u64, steps: step_times::Times) {
    let ks = TestKeyspace::new("bench_lag").await;
    let nodes = hajobs_core::NodeStore::new(ks.session.clone(), &ks.config())
        .await
        .unwrap();
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut managers = Vec::new();
    for n in 0..2 {
        // Registered as daemons register: the claim order applies.
        register(&nodes, &format!("r{n}"), &["tick"], secs).await;
        let lags = lags.clone();
        let manager = JobManager::builder(ks.config(), NodeId::new(format!("r{n}")).unwrap())
            .session(ks.session.clone())
            .job(
                JobSpec::new("tick", "tick")
                    .unwrap()
                    .cron("* * * * * *", "UTC")
                    .unwrap(),
                move |ctx: JobContext| {
                    // The first poll: measured before anything else.
                    let lag = instant_of(&ctx).map(|at| (now_ns() - at) as f64 / 1e6);
                    let lags = lags.clone();
                    async move {
                        if let Some(lag) = lag {
                            lags.lock().unwrap().push(lag);
                        }
                        Ok(Done::finished())
                    }
                },
            )
            .build()
            .await
            .unwrap();
        manager.start().await.unwrap();
        managers.push(manager);
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for m in &managers {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let mut lags = lags.lock().unwrap().clone();
    let firings = lags.len();
    println!(
        "scale-bench fire_lag replicas=2 firings={firings} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        percentile(&mut lags, 1.0)
    );
    let mut times = steps.lock().unwrap().clone();
    let started = times.get("lease").map_or(0, Vec::len);
    let mut line = format!("scale-bench fire_steps replicas=2 firings={started}");
    for step in std::iter::once("wake").chain(hajobs_scheduler::steps::STEPS) {
        let samples = times.entry(step.to_owned()).or_default();
        line.push_str(&format!(
            " {step}_p50_ms={:.2} {step}_p99_ms={:.2}",
            percentile(samples, 0.5),
            percentile(samples, 0.99)
        ));
    }
    println!("{line}");
    ks.drop().await;
}

/// Job types per replica in the throughput measurement.
const LOOPS: usize = 8;

/// Raw LWT pairs per second (`INSERT … IF NOT EXISTS` then `DELETE … IF
/// EXISTS`, each loop on its own key) from `loops` concurrent loops for
/// `secs`: the node's physical limit beside what hajobs gets.
async fn raw_lwt_pairs_per_s(ks: &TestKeyspace, loops: usize, secs: u64) -> f64 {
    let k = &ks.name;
    raw_rounds_per_s(
        ks,
        loops,
        secs,
        &[
            format!("INSERT INTO {k}.lock (lock_type, job_lock) VALUES (?, now()) IF NOT EXISTS"),
            format!("DELETE FROM {k}.lock WHERE lock_type = ? IF EXISTS"),
        ],
    )
    .await
}

/// Raw plain writes per second (`INSERT` without a condition) from `loops`
/// concurrent loops for `secs`: what a write costs beside an LWT.
async fn raw_writes_per_s(ks: &TestKeyspace, loops: usize, secs: u64) -> f64 {
    let k = &ks.name;
    raw_rounds_per_s(
        ks,
        loops,
        secs,
        &[format!(
            "INSERT INTO {k}.lock (lock_type, job_lock) VALUES (?, now())"
        )],
    )
    .await
}

/// Rounds per second of `cql` (each statement in turn, bound to the
/// loop's own key) from `loops` concurrent loops for `secs`.
async fn raw_rounds_per_s(ks: &TestKeyspace, loops: usize, secs: u64, cql: &[String]) -> f64 {
    let mut statements = Vec::new();
    for text in cql {
        statements.push(ks.session.prepare(text.as_str()).await.unwrap());
    }
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut raws = Vec::new();
    for l in 0..loops {
        let (session, statements) = (ks.session.clone(), statements.clone());
        raws.push(tokio::spawn(async move {
            let key = format!("raw-{l}");
            let mut rounds = 0u64;
            while std::time::Instant::now() < deadline {
                for statement in &statements {
                    session.execute_unpaged(statement, (&key,)).await.unwrap();
                }
                rounds += 1;
            }
            rounds
        }));
    }
    let mut rounds = 0;
    for r in raws {
        rounds += r.await.unwrap();
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

/// Rounds per second of an attempt's requests sent straight through the
/// stores, without a manager, from `loops` concurrent loops for `secs`:
/// the lease taken, RUNNING and FINISHED written, the lease released (the
/// watch list left out; without `statuses`, the lease alone). What an
/// attempt would cost if the manager added nothing.
async fn store_rounds_per_s(ks: &TestKeyspace, loops: usize, secs: u64, statuses: bool) -> f64 {
    use hajobs_core::{
        Acquired, JobId, JobState, JobStatus, JobType, LeaseTtl, LockType, StatusStore, TriggerId,
    };
    let leases = Arc::new(ks.lease_store().await);
    let with_statuses = statuses;
    let statuses = Arc::new(
        StatusStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
            .await
            .unwrap(),
    );
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for l in 0..loops {
        let (leases, statuses) = (leases.clone(), statuses.clone());
        handles.push(tokio::spawn(async move {
            let lock = LockType::new(format!("stores-{l}")).unwrap();
            let job_type = JobType::new(format!("stores-{l}")).unwrap();
            let node = NodeId::new("stores").unwrap();
            let ttl = LeaseTtl::from_secs(30).unwrap();
            let mut rounds = 0u64;
            while std::time::Instant::now() < deadline {
                let job_id = JobId::new();
                let Acquired::Acquired(lease) =
                    leases.acquire(&lock, job_id, &node, ttl).await.unwrap()
                else {
                    panic!("lock {lock} held");
                };
                let trigger_id = TriggerId::new();
                let states = if with_statuses {
                    &[JobState::Running, JobState::Finished][..]
                } else {
                    &[]
                };
                for &state in states {
                    statuses
                        .write(&JobStatus {
                            job_type: job_type.clone(),
                            job_id,
                            trigger_id,
                            timestamp: std::time::SystemTime::now(),
                            state,
                            owner: Some(node.clone()),
                            fencing_token: Some(lease.fencing_token),
                            content: None,
                        })
                        .await
                        .unwrap();
                }
                leases.release(&lease).await.unwrap();
                rounds += 1;
            }
            rounds
        }));
    }
    let mut rounds = 0;
    for h in handles {
        rounds += h.await.unwrap();
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

async fn throughput(replicas: usize, secs: u64) {
    let ks = TestKeyspace::new("bench_tput").await;
    let mut managers = Vec::new();
    for r in 0..replicas {
        let mut b = JobManager::builder(ks.config(), NodeId::new(format!("r{r}")).unwrap())
            .session(ks.session.clone());
        for j in 0..LOOPS {
            let name = format!("noop-{r}-{j}");
            b = b.job(
                JobSpec::new(&name, &name).unwrap(),
                |_c: JobContext| async { Ok(Done::finished()) },
            );
        }
        let m = b.build().await.unwrap();
        m.start().await.unwrap();
        managers.push(m);
    }
    let ops0 = table_ops(&ks).await;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut loops = Vec::new();
    for (r, m) in managers.iter().enumerate() {
        for j in 0..LOOPS {
            let m = m.clone();
            let name = format!("noop-{r}-{j}");
            loops.push(tokio::spawn(async move {
                let mut done = 0u64;
                while std::time::Instant::now() < deadline {
                    if let Ok(hajobs_scheduler::StartOutcome::Started { job_id, .. }) =
                        m.trigger(&name).await
                    {
                        m.wait_ended(job_id).await;
                        done += 1;
                    }
                }
                done
            }));
        }
    }
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    let per_s = total as f64 / started.elapsed().as_secs_f64();
    // What the node did per attempt, by table (the lazy writes of the
    // watch list included).
    let mut by_table = String::new();
    let mut per_attempt = 0.0;
    for (table, after) in &table_ops(&ks).await {
        let n = (after - ops0.get(table).copied().unwrap_or(0)) as f64 / total.max(1) as f64;
        if n > 0.0 {
            per_attempt += n;
            by_table.push_str(&format!(" {table}={n:.2}"));
        }
    }
    for m in &managers {
        m.shutdown(Duration::from_secs(5)).await;
    }
    // The physical limit: raw LWT pairs from as many concurrent loops.
    let raw_per_s = 2.0 * raw_lwt_pairs_per_s(&ks, replicas * LOOPS, secs.min(10)).await;
    let writes_per_s = raw_writes_per_s(&ks, replicas * LOOPS, secs.min(10)).await;
    let stores_per_s = store_rounds_per_s(&ks, replicas * LOOPS, secs.min(10), true).await;
    let leases_per_s = store_rounds_per_s(&ks, replicas * LOOPS, secs.min(10), false).await;
    println!(
        "scale-bench throughput replicas={replicas} job_types={} triggers_per_s={per_s:.0} raw_lwt_per_s={raw_per_s:.0} ratio={:.2} raw_write_per_s={writes_per_s:.0} stores_per_s={stores_per_s:.0} stores_ratio={:.2} lease_only_ratio={:.2} ops_per_attempt={per_attempt:.2}{by_table}",
        replicas * LOOPS,
        per_s / raw_per_s,
        stores_per_s / raw_per_s,
        leases_per_s / raw_per_s
    );
}

/// `hajobs serve` with 100 daily cron jobs and HTTP on, idle for `secs`.
/// Drops a keyspace the daemons of a measurement used.
async fn drop_keyspace(name: &str) {
    let session = hajobs_core::testing::connect().await;
    let _ = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {name}"), ())
        .await;
}

/// A per-second command on 3 daemons for `secs`: from each firing's
/// instant to the command's first line. Returns the keyspace it used.
fn command_lag(secs: u64) -> String {
    use hajobs_tests::chaos::Daemons;
    const JOBS: &str = r#"
shutdown_grace = "5s"
[[job]]
name = "tick"
command = ["bash", "-c", "echo \"$HAJOBS_TRIGGER_ID $EPOCHREALTIME\" >> {records}"]
cron = "* * * * * *"
"#;
    let keyspace = format!("bench_command_{}", std::process::id());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hajobs-under-test"));
    let mut d = Daemons::start(bin, keyspace.clone(), 3, JOBS);
    // Warm-up: every daemon registered and firing.
    std::thread::sleep(Duration::from_secs(5));
    let from = std::fs::read_to_string(&d.records).unwrap().lines().count();
    std::thread::sleep(Duration::from_secs(secs));
    let text = std::fs::read_to_string(&d.records).unwrap();
    d.stop();
    let mut seen = std::collections::BTreeMap::new();
    let mut lag_ms = Vec::new();
    for line in text.lines().skip(from) {
        let Some((id, clock)) = line.split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<uuid::Uuid>() else {
            continue;
        };
        let Some((s, n)) = id.get_timestamp().map(|t| t.to_unix()) else {
            continue;
        };
        let instant = s as f64 + f64::from(n) / 1e9;
        let Ok(at) = clock.parse::<f64>() else {
            continue;
        };
        *seen.entry(id).or_insert(0) += 1;
        lag_ms.push((at - instant) * 1000.0);
    }
    let doubled = seen.values().filter(|&&c| c > 1).count();
    println!(
        "scale-bench command_lag daemons=3 secs={secs} firings={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} doubled={doubled}",
        seen.len(),
        percentile(&mut lag_ms, 0.5),
        percentile(&mut lag_ms, 0.99),
        percentile(&mut lag_ms, 1.0)
    );
    keyspace
}

/// Triggers through a cluster of 3 daemons that serve HTTP: `n` by the
/// CLI, `n` by `POST /jobs/quick` spread over the daemons. Returns the
/// keyspace it used.
fn cluster_trigger(n: usize) -> String {
    use hajobs_tests::chaos::Daemons;
    const JOBS: &str = r#"
shutdown_grace = "5s"
[http]
listen = "127.0.0.1:0"
[[job]]
name = "quick"
command = ["true"]
"#;
    let keyspace = format!("bench_trigger_{}", std::process::id());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hajobs-under-test"));
    let mut d = Daemons::start(bin, keyspace.clone(), 3, JOBS);
    let addresses = hajobs_tests::http::addresses(&d, 3);
    let timed = |f: &mut dyn FnMut() -> bool| -> Vec<f64> {
        let mut ms = Vec::new();
        for _ in 0..n {
            let t = std::time::Instant::now();
            if f() {
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ms
    };
    let (mut locked, mut errors) = (0, 0);
    let mut outcome = |code: Option<i32>| match code {
        Some(0) => true,
        Some(3) => {
            locked += 1;
            false
        }
        _ => {
            errors += 1;
            false
        }
    };
    let mut cli =
        timed(&mut || outcome(d.cli(&["trigger", "quick"]).output().unwrap().status.code()));
    let mut i = 0;
    let mut http = timed(&mut || {
        i += 1;
        let a = &addresses[i % addresses.len()].1;
        let r = hajobs_tests::http::request(a, "POST", "/jobs/quick", None, b"");
        outcome(Some(match r.status {
            202 => 0,
            409 => 3,
            _ => 1,
        }))
    });
    let mut baseline = timed(&mut || d.cli(&["nodes"]).output().unwrap().status.success());
    let line = |v: &mut Vec<f64>| {
        format!(
            "n={} p50_ms={:.1} p99_ms={:.1}",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99)
        )
    };
    println!(
        "scale-bench cluster_trigger replicas=3 cli {} http {} cli_baseline {} locked={locked} errors={errors}",
        line(&mut cli),
        line(&mut http),
        line(&mut baseline)
    );
    d.stop();
    keyspace
}

async fn footprint(secs: u64) {
    let ks = TestKeyspace::new("bench_footprint").await;
    let dir = std::env::temp_dir().join(format!("hajobs-footprint-{}", ks.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = String::from("[http]\nlisten = \"127.0.0.1:0\"\n");
    for j in 0..100 {
        toml.push_str(&format!(
            "[[job]]\nname = \"job-{j}\"\ncommand = [\"true\"]\ncron = \"0 {} 3 * * *\"\n",
            j % 60
        ));
    }
    let config = dir.join("hajobs.toml");
    std::fs::write(&config, toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_hajobs-under-test");
    let mut child = std::process::Command::new(bin)
        .args(["--keyspace", &ks.name, "--config"])
        .arg(&config)
        .arg("serve")
        .env("HAJOBS_CQL_NODES", hajobs_core::testing::contact_list())
        .env("HAJOBS_LOG", "warn")
        .spawn()
        .unwrap();
    let pid = child.id();
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let rss_kib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Warm-up: connected, schedules armed, registry written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ops0 = table_ops(&ks).await;
    let (t0, c0) = (std::time::Instant::now(), cpu_ticks());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks = cpu_ticks() - c0;
    let ops1 = table_ops(&ks).await;
    let window = t0.elapsed().as_secs_f64();
    // Clock ticks are 1/100 s on Linux.
    let cpu_pct = ticks as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_kib();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "scale-bench footprint jobs=100 http=on secs={secs} rss_kib={rss} cpu_pct={cpu_pct:.2}"
    );
    // What the idle daemon asks of Cassandra, by table (each table is one
    // component's: trigger_request the request watcher, node the registry,
    // watch_list / lock / job_status_meta the supervisor, lock_queue the
    // queue runners, cron_firing* and schema_migrations the cron claims'
    // upkeep), from the node's own counters.
    let mut total = 0.0;
    let mut by_table = String::new();
    for (table, after) in &ops1 {
        let per_s = (after - ops0.get(table).copied().unwrap_or(0)) as f64 / window;
        if per_s > 0.0 {
            total += per_s;
            by_table.push_str(&format!(" {table}={per_s:.2}"));
        }
    }
    println!(
        "scale-bench idle_requests jobs=100 http=on secs={secs} ops_per_s={total:.2}{by_table}"
    );
    ks.drop().await;
}

/// Operations the node counted per table of `ks`'s keyspace so far: reads
/// and range scans it coordinated, writes it applied (a lightweight
/// transaction counts its read and its commit).
async fn table_ops(ks: &TestKeyspace) -> std::collections::BTreeMap<String, u64> {
    let mut ops = std::collections::BTreeMap::new();
    for view in [
        "coordinator_read_latency",
        "coordinator_scan_latency",
        "local_write_latency",
    ] {
        let rows = ks
            .session
            .query_unpaged(
                format!(
                    "SELECT table_name, count FROM system_views.{view} WHERE keyspace_name = ?"
                ),
                (ks.name.as_str(),),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        for row in rows.rows::<(String, i64)>().unwrap() {
            let (table, count) = row.unwrap();
            *ops.entry(table).or_default() += u64::try_from(count).unwrap_or(0);
        }
    }
    ops
}

/// Requests the driver has sent on `session` so far.
fn requests(session: &scylla::client::session::Session) -> u64 {
    let m = session.get_metrics();
    m.get_queries_num() + m.get_queries_iter_num()
}

async fn supervisor(job_types: usize, sweep_all: bool) {
    const RUNNING: usize = 10;
    let ks = TestKeyspace::new("bench_sup").await;
    let build = |node: &str, session| {
        let mut b = JobManager::builder(ks.config(), NodeId::new(node).unwrap()).session(session);
        for j in 0..job_types {
            let name = format!("job-{j:04}");
            b = b.job(
                JobSpec::new(&name, &name).unwrap(),
                |ctx: JobContext| async move {
                    ctx.cancelled().await;
                    Ok(Done::finished())
                },
            );
        }
        b.build()
    };
    let runner = build("runner", ks.session.clone()).await.unwrap();
    for j in 0..RUNNING {
        let started = runner.trigger(&format!("job-{j:04}")).await.unwrap();
        assert!(matches!(
            started,
            hajobs_scheduler::StartOutcome::Started { .. }
        ));
    }
    // The supervisor's replica has a session of its own: its requests alone.
    let session = hajobs_core::testing::connect().await;
    let watcher = build("watcher", session.clone()).await.unwrap();
    let mut config = hajobs_supervisor::SupervisorConfig::default();
    if sweep_all {
        config.sweep_period = Duration::ZERO;
    }
    let sup = hajobs_supervisor::Supervisor::new(watcher, config);
    let (mut millis, mut counts) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let before = requests(&session);
        let t = std::time::Instant::now();
        let report = sup
            .pass()
            .await
            .unwrap()
            .expect("the supervisor lease is free");
        millis.push(t.elapsed().as_secs_f64() * 1e3);
        counts.push((requests(&session) - before) as f64);
        assert!(report.dead.is_empty(), "{report:?}");
    }
    runner.shutdown(Duration::from_secs(5)).await;
    let mode = if sweep_all {
        "sweep_all"
    } else {
        "watch_lists"
    };
    println!(
        "scale-bench supervisor job_types={job_types} running={RUNNING} mode={mode} pass_ms={:.1} requests={:.0} requests_max={:.0}",
        percentile(&mut millis, 0.5),
        percentile(&mut counts, 0.5),
        percentile(&mut counts, 1.0)
    );
    ks.drop().await;
}

/// The sum of a counter's series by their `outcome` label.
fn counter_by_outcome(
    handle: &metrics_exporter_prometheus::PrometheusHandle,
    name: &str,
) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for line in handle.render().lines() {
        let Some(rest) = line.strip_prefix(name).filter(|r| r.starts_with('{')) else {
            continue;
        };
        let outcome = rest
            .split("outcome=\"")
            .nth(1)
            .and_then(|o| o.split('"').next())
            .unwrap_or("")
            .to_owned();
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *sums.entry(outcome).or_insert(0.0) += value;
    }
    sums
}

async fn cron(
    replicas: usize,
    registry: bool,
    secs: u64,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
) {
    let ks = TestKeyspace::new("bench_cron").await;
    let nodes = hajobs_core::NodeStore::new(ks.session.clone(), &ks.config())
        .await
        .unwrap();
    let instants: Arc<Mutex<Vec<i128>>> = Arc::default();
    let mut managers = Vec::new();
    for r in 0..replicas {
        let node = format!("r{r:02}");
        if registry {
            register(&nodes, &node, &["tick"], secs).await;
        }
        let instants = instants.clone();
        let m = JobManager::builder(ks.config(), NodeId::new(node).unwrap())
            .session(ks.session.clone())
            .job(
                JobSpec::new("tick", "tick")
                    .unwrap()
                    .cron("* * * * * *", "UTC")
                    .unwrap(),
                move |ctx: JobContext| {
                    let instants = instants.clone();
                    async move {
                        if let Some(at) = instant_of(&ctx) {
                            instants.lock().unwrap().push(at);
                        }
                        Ok(Done::finished())
                    }
                },
            )
            .build()
            .await
            .unwrap();
        managers.push(m);
    }
    let claims_before = counter_by_outcome(metrics, "hajobs_cron_claims_total");
    let checks_before = counter_by_outcome(metrics, "hajobs_cron_claim_checks_total");
    let started = now_ns();
    for m in &managers {
        m.start().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ended = now_ns();
    for m in &managers {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let delta = |now: std::collections::BTreeMap<String, f64>,
                 before: &std::collections::BTreeMap<String, f64>| {
        now.into_iter()
            .map(|(k, v)| {
                let b = before.get(&k).copied().unwrap_or(0.0);
                (k, v - b)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let claims = delta(
        counter_by_outcome(metrics, "hajobs_cron_claims_total"),
        &claims_before,
    );
    let checks = delta(
        counter_by_outcome(metrics, "hajobs_cron_claim_checks_total"),
        &checks_before,
    );
    let all = instants.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<i128> = all.iter().copied().collect();
    // The steady window: whole seconds from 3 s after the start to 3 s
    // before the end.
    let (from, to) = (started / 1_000_000_000 + 3, ended / 1_000_000_000 - 3);
    let in_window = |at: &i128| (from..=to).contains(&(at / 1_000_000_000));
    let expected = (to - from + 1).max(0);
    let seen = distinct.iter().filter(|at| in_window(at)).count() as i128;
    let doubled = all.len() - distinct.len();
    // (An empty f64 sum is -0.0.)
    let lwts: f64 = claims.values().sum::<f64>() + 0.0;
    let reads: f64 = checks.values().sum::<f64>() + 0.0;
    let firings = distinct.len().max(1) as f64;
    let mode = if registry { "ordered" } else { "all_claim" };
    println!(
        "scale-bench cron replicas={replicas} mode={mode} secs={secs} firings={} lwt_per_firing={:.2} reads_per_firing={:.2} missed={} doubled={doubled} timeouts={:.0}",
        distinct.len(),
        lwts / firings,
        reads / firings,
        expected - seen,
        claims.get("error").copied().unwrap_or(0.0) + checks.get("error").copied().unwrap_or(0.0),
    );
    ks.drop().await;
}

async fn renewals(leases: usize, ttl_secs: u64, secs: u64) {
    let ks = TestKeyspace::new("bench_renew").await;
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut b = JobManager::builder(ks.config(), NodeId::new("holder").unwrap())
        .session(ks.session.clone());
    for j in 0..leases {
        let name = format!("hold-{j:04}");
        let lags = lags.clone();
        let spec = JobSpec::new(&name, &name)
            .unwrap()
            .lease_ttl(Duration::from_secs(ttl_secs))
            .unwrap();
        let interval = spec.keeper.renew_interval();
        b = b.job(spec, move |ctx: JobContext| {
            let lags = lags.clone();
            async move {
                let mut updates = ctx.lease_updates();
                let mut last = updates.borrow().last_confirmed_sent;
                loop {
                    tokio::select! {
                        () = ctx.cancelled() => break,
                        changed = updates.changed() => if changed.is_err() { break },
                    }
                    let sent = updates.borrow().last_confirmed_sent;
                    if sent != last {
                        let due = last + interval;
                        let lag = tokio::time::Instant::now().saturating_duration_since(due.into());
                        lags.lock().unwrap().push(lag.as_secs_f64() * 1e3);
                        last = sent;
                    }
                }
                Ok(Done::finished())
            }
        });
    }
    let m = b.build().await.unwrap();
    for j in 0..leases {
        let started = m.trigger(&format!("hold-{j:04}")).await.unwrap();
        assert!(matches!(
            started,
            hajobs_scheduler::StartOutcome::Started { .. }
        ));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    m.shutdown(Duration::from_secs(10)).await;
    let mut lags = lags.lock().unwrap().clone();
    println!(
        "scale-bench renewals leases={leases} ttl_s={ttl_secs} secs={secs} renewals={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        lags.len(),
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        percentile(&mut lags, 1.0)
    );
    ks.drop().await;
}

async fn status_partition(rows: usize) {
    use futures::{StreamExt, TryStreamExt};
    let ks = TestKeyspace::new("bench_part").await;
    let statuses = hajobs_core::StatusStore::new(
        ks.session.clone(),
        &ks.config(),
        Duration::from_secs(14 * 86_400),
    )
    .await
    .unwrap();
    let insert = ks
        .session
        .prepare(format!(
            "INSERT INTO {}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result, owner, fencing_token) \
             VALUES ('per-second', ?, ?, ?, 'FINISHED', 'SUCCESS', 'bench', 1) USING TTL ?",
            ks.name
        ))
        .await
        .unwrap();
    let now = std::time::SystemTime::now();
    let expired = rows / 2;
    let written = std::time::Instant::now();
    futures::stream::iter(0..rows)
        .map(|i| {
            let at = now - Duration::from_secs((rows - i) as u64);
            let id = hajobs_core::TriggerId::for_firing("per-second", at).uuid();
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let ttl: i32 = if i < expired { 1 } else { 14 * 86_400 };
            let (session, insert) = (ks.session.clone(), insert.clone());
            async move {
                session
                    .execute_unpaged(
                        &insert,
                        (
                            scylla::value::CqlTimeuuid::from(id),
                            scylla::value::CqlTimeuuid::from(id),
                            scylla::value::CqlTimestamp(ms),
                            ttl,
                        ),
                    )
                    .await
            }
        })
        .buffer_unordered(128)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let write_s = written.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // the 1 s TTLs run out
    let job_type = hajobs_core::JobType::new("per-second").unwrap();
    let mut millis = Vec::new();
    for _ in 0..200 {
        let t = std::time::Instant::now();
        let got = statuses.history(&job_type, 20).await.unwrap();
        millis.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got.len(), 20.min(rows - expired));
    }
    println!(
        "scale-bench status_partition rows={rows} expired={expired} write_s={write_s:.0} latest20_p50_ms={:.2} latest20_p99_ms={:.2}",
        percentile(&mut millis, 0.5),
        percentile(&mut millis, 0.99)
    );
    ks.drop().await;
}

async fn work_items(secs: u64) {
    use hajobs_core::{WorkKey, WorkSet};
    use hajobs_scheduler::{WorkItems, WorkOptions};
    let ks = TestKeyspace::new("bench_work").await;
    let items = WorkItems::new(
        ks.session.clone(),
        &ks.config(),
        NodeId::new("w").unwrap(),
        WorkOptions::default(),
    )
    .await
    .unwrap();
    let set = WorkSet::new("bench").unwrap();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut loops = Vec::new();
    for l in 0..LOOPS {
        let (items, set) = (items.clone(), set.clone());
        loops.push(tokio::spawn(async move {
            let mut took = Vec::new();
            let mut i = 0u64;
            while std::time::Instant::now() < deadline {
                let key = WorkKey::new(format!("{l}-{i}")).unwrap();
                i += 1;
                let t = std::time::Instant::now();
                let outcome = items
                    .process(&set, &key, None, |_| async { Ok(serde_json::Value::Null) })
                    .await
                    .unwrap();
                assert!(matches!(outcome, hajobs_scheduler::Processed::Done(_)));
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            took
        }));
    }
    let mut took = Vec::new();
    for l in loops {
        took.extend(l.await.unwrap());
    }
    let per_s = took.len() as f64 / started.elapsed().as_secs_f64();
    let raw_pairs_per_s = raw_lwt_pairs_per_s(&ks, LOOPS, secs.min(10)).await;
    println!(
        "scale-bench work_items loops={LOOPS} items_per_s={per_s:.0} p50_ms={:.1} p99_ms={:.1} raw_lwt_pairs_per_s={raw_pairs_per_s:.0} ratio={:.2}",
        percentile(&mut took.clone(), 0.50),
        percentile(&mut took, 0.99),
        per_s / raw_pairs_per_s
    );
    ks.drop().await;
}

/// One-time triggers: `count` triggers due over `window` seconds, spread
/// evenly over 32 job types, scheduled by a replica that stops before the
/// first is due, fired by 3 other replicas (each registered, so the claim
/// order applies). Counted from the jobs' own records: each ran once, none
/// lost; lag = the job's first poll − the trigger's due time.
async fn scheduled(count: usize, window: u64) {
    const JOB_TYPES: usize = 32;
    let ks = TestKeyspace::new("bench_sched").await;
    let nodes = hajobs_core::NodeStore::new(ks.session.clone(), &ks.config())
        .await
        .unwrap();
    let names: Vec<String> = (0..JOB_TYPES).map(|i| format!("sched-{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // The jobs' records: (trigger, when the job first ran).
    let records: Arc<Mutex<Vec<(hajobs_core::TriggerId, std::time::SystemTime)>>> = Arc::default();
    let build = |node: &str| {
        let mut b = JobManager::builder(ks.config(), NodeId::new(node).unwrap())
            .session(ks.session.clone());
        for name in &names {
            let records = records.clone();
            b = b.job(JobSpec::new(name, name).unwrap(), move |ctx: JobContext| {
                let now = std::time::SystemTime::now();
                records.lock().unwrap().push((ctx.trigger_id, now));
                async { Ok(Done::finished()) }
            });
        }
        b.build()
    };
    let mut replicas = Vec::new();
    for n in 1..=3 {
        let node = format!("r{n}");
        register(&nodes, &node, &name_refs, window + 600).await;
        let m = build(&node).await.unwrap();
        m.start().await.unwrap();
        replicas.push(m);
    }
    let scheduler = build("scheduler").await.unwrap();
    // Due from a lead time on (enough to schedule them all first).
    let lead = Duration::from_secs(15 + count as u64 / 300);
    let first = std::time::SystemTime::now() + lead;
    let step = Duration::from_secs(window).as_nanos() / count.max(1) as u128;
    let scheduling = std::time::Instant::now();
    let due: std::collections::HashMap<hajobs_core::TriggerId, std::time::SystemTime> =
        futures::stream::iter(0..count)
            .map(|i| {
                let scheduler = scheduler.clone();
                let name = names[i % JOB_TYPES].clone();
                let at = first + Duration::from_nanos((step * i as u128) as u64);
                async move {
                    let t = scheduler
                        .schedule(&name, at, hajobs_core::TriggerArgs::none())
                        .await
                        .unwrap();
                    (t.trigger_id, at)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
    let schedule_per_s = count as f64 / scheduling.elapsed().as_secs_f64();
    assert!(
        std::time::SystemTime::now() < first,
        "scheduling took longer than the lead time"
    );
    // The replica that scheduled them is gone before the first is due.
    scheduler.shutdown(Duration::from_secs(5)).await;
    drop(scheduler);
    let end = first + Duration::from_secs(window) + Duration::from_secs(60);
    while std::time::SystemTime::now() < end && records.lock().unwrap().len() < count {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for m in &replicas {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let records = records.lock().unwrap().clone();
    let mut runs: std::collections::HashMap<hajobs_core::TriggerId, usize> = Default::default();
    let mut lags = Vec::new();
    for (t, at) in &records {
        *runs.entry(*t).or_default() += 1;
        if let Some(d) = due.get(t) {
            lags.push(match at.duration_since(*d) {
                Ok(late) => late.as_secs_f64() * 1e3,
                Err(early) => -early.duration().as_secs_f64() * 1e3,
            });
        }
    }
    let ran_once = runs.values().filter(|n| **n == 1).count();
    let doubled = runs.values().filter(|n| **n > 1).count();
    let missing = due.keys().filter(|t| !runs.contains_key(t)).count();
    let raw = raw_lwt_pairs_per_s(&ks, LOOPS, 10).await * 2.0;
    println!(
        "scale-bench scheduled triggers={count} window_s={window} replicas=3 job_types={JOB_TYPES} ran_once={ran_once} doubled={doubled} missing={missing} lag_p50_ms={:.1} lag_p99_ms={:.1} lag_max_ms={:.1} scheduled_per_s={schedule_per_s:.0} fired_per_s={:.0} raw_lwt_per_s={raw:.0}",
        percentile(&mut lags.clone(), 0.5),
        percentile(&mut lags.clone(), 0.99),
        percentile(&mut lags, 1.0),
        count as f64 / window as f64,
    );
    assert_eq!(
        (doubled, missing),
        (0, 0),
        "each scheduled trigger runs exactly once"
    );
    ks.drop().await;
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("HAJOBS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // `HAJOBS_BENCH_ONLY=footprint` (or fire_lag, throughput): one measurement.
    let only = std::env::var("HAJOBS_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    if run("fire_lag") {
        use tracing_subscriber::layer::SubscriberExt;
        let steps = step_times::Times::default();
        let layer = step_times::StepLayer {
            times: steps.clone(),
        };
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the bench's only subscriber");
        fire_lag(secs, steps).await;
    }
    if run("supervisor") {
        for job_types in [10, 100, 1000] {
            supervisor(job_types, false).await;
            supervisor(job_types, true).await;
        }
    }
    if run("cron") {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap();
        for replicas in [1, 3, 10, 30] {
            cron(replicas, true, secs, &metrics).await;
        }
        cron(30, false, secs, &metrics).await;
    }
    if only == "status_partition" {
        // Not in the default run: writing a million rows takes minutes.
        status_partition(100).await;
        status_partition(1_000_000).await;
    }
    if run("renewals") {
        renewals(1000, 30, secs.max(30)).await;
        renewals(1000, 6, secs).await;
    }
    if run("throughput") {
        throughput(1, secs.min(20)).await;
        throughput(3, secs.min(20)).await;
    }
    if run("work_items") {
        work_items(secs.min(20)).await;
    }
    if run("scheduled") {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default)
        };
        scheduled(
            env("HAJOBS_BENCH_SCHEDULED", 50_000) as usize,
            env("HAJOBS_BENCH_SCHEDULED_SECS", 300),
        )
        .await;
    }
    if run("command_lag") {
        drop_keyspace(&command_lag(secs)).await;
    }
    if run("cluster_trigger") {
        drop_keyspace(&cluster_trigger(if secs < 30 { 40 } else { 100 })).await;
    }
    if !run("footprint") {
        return;
    }
    let idle = std::env::var("HAJOBS_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    footprint(idle).await;
}
