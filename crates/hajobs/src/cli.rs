//! The command line: raw flags ([`Cli`]) and what each command does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use hajobs_core::schema::{self, MIGRATIONS};
use hajobs_core::{
    CassandraConfig, JobId, JobType, LeaseStore, LockType, NodeStore, RequestOutcome, RequestStore,
    StatusEntry, StatusStore, TriggerId,
};
use hajobs_scheduler::{CancelOutcome, JobManager, StartOutcome};
use hajobs_supervisor::Supervisor;
use scylla::client::session::Session;

use crate::config::{self, DaemonConfig, Overrides};

/// An error of the CLI with its exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        self.code
    }

    /// Bad input: exit code 2.
    pub(crate) fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }

    /// A lock held by another attempt: exit code 3.
    fn locked(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 3,
            error: error.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

/// hajobs: jobs that run on exactly one replica at a time, with their state
/// in Cassandra or ScyllaDB.
///
/// Exit codes: 0 success; 1 a runtime failure (Cassandra unreachable, a
/// request failed, a triggered job failed); 2 bad input (flags,
/// configuration); 3 the lock is held by another attempt.
#[derive(Debug, Parser)]
#[command(name = "hajobs", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// The daemon's TOML configuration (jobs, cluster, supervisor).
    #[arg(long, short, global = true, env = "HAJOBS_CONFIG")]
    config: Option<PathBuf>,
    /// Contact points, comma-separated host:port (overrides the file; default 127.0.0.1:9042).
    #[arg(long, global = true, env = "HAJOBS_CQL_NODES")]
    nodes: Option<String>,
    /// The keyspace holding hajobs' tables (overrides the file; default `hajobs`).
    #[arg(long, global = true, env = "HAJOBS_KEYSPACE")]
    keyspace: Option<String>,
    /// The local data centre (preferred coordinators, LOCAL_QUORUM scope).
    #[arg(long, global = true, env = "HAJOBS_DATACENTER")]
    datacenter: Option<String>,
    /// This replica's node id (overrides the file; default the host name).
    #[arg(long, global = true, env = "HAJOBS_NODE_ID")]
    node_id: Option<String>,
    /// Log lines as text (coloured on a terminal) or as JSON objects, one per
    /// line, for log shippers. Logs go to stderr; a command's output to stdout.
    #[arg(
        long,
        global = true,
        env = "HAJOBS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: schedule and run the configured jobs until SIGTERM / Ctrl-C.
    Serve,
    /// Create or print the CQL schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Print a shell completion script: `hajobs completions bash > /etc/bash_completion.d/hajobs`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List the configured jobs and their next firing.
    Jobs {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow the running attempt of a job: each progress update (its
    /// `ctx.progress` content) as it is published, then its final status.
    /// Exit 0 only for a successful end.
    Watch {
        /// The job type.
        job: String,
        /// How long to wait for an attempt to be running.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Run a job now on one of the replicas: a live replica that has it
    /// configured claims the request and starts it. Exit 0 started, 3 the lock
    /// is held, 1 an error or no live replica has the job.
    Trigger {
        /// The job type.
        job: String,
        /// Follow the attempt to its end; exit 0 only for a successful result.
        #[arg(long)]
        wait: bool,
        /// Run it in this process instead, under its lease, and wait for its
        /// end (one-off use; needs the jobs' configuration).
        #[arg(long, conflicts_with = "wait")]
        here: bool,
    },
    /// Cancel the running attempt of a job, on whichever replica runs it.
    Cancel {
        /// The job type.
        job: String,
    },
    /// The latest attempt of every job type, or the last attempts of one.
    Status {
        /// A job type; all job types when absent.
        job: Option<String>,
        /// How many attempts to show for one job type.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every status one attempt went through, with its content.
    History {
        /// The job type.
        job: String,
        /// The attempt's job id.
        job_id: String,
    },
    /// The locks held now.
    Locks {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per job type over the statuses kept (14 days): attempts, FINISHED /
    /// FAILED / DEAD / CANCELED, success rate, p50 / p95 / max duration, last
    /// success, last failure.
    Stats {
        /// One job type (default: every job type with statuses).
        job: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The live replicas: node id, host, pid, version, started, last seen,
    /// job types configured, attempts running.
    Nodes {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Free a lock safely: ask its holder to stop (SIGTERM, then SIGKILL
    /// after the grace, for a command) and wait until the lock is free —
    /// released by the holder once its job is gone, or expired by its TTL if
    /// the holder is dead. The lock is never free while the old job runs.
    Unlock {
        /// The lock type.
        lock_type: String,
        /// How long to wait for the holder to stop or its lease to expire.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Delete the lock at once, without waiting. UNSAFE while the holder
        /// still runs: another replica may start the job next to it. For a
        /// holder you know is gone, or one that ignores cancel requests.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Create the keyspace and apply every migration not yet applied (idempotent).
    Apply(ReplicationArg),
    /// Print the whole schema as CQL, for applying by hand.
    Print(ReplicationArg),
    /// Compare the live tables with what hajobs needs; print each difference
    /// and the statement that fixes it (exit 1 when anything differs).
    Check,
}

#[derive(Debug, Args)]
struct ReplicationArg {
    /// Keyspace replication: `simple:RF` (SimpleStrategy) or `DC:RF[,DC:RF…]`
    /// (NetworkTopologyStrategy). Used only when the keyspace is created.
    /// Default: the file's `cassandra.replication`, else `simple:1`.
    #[arg(long)]
    replication: Option<String>,
}

/// What the commands need to know: the file (if any) with overrides applied.
struct Settings {
    daemon: Option<DaemonConfig>,
    cassandra: CassandraConfig,
    replication: schema::Replication,
}

impl GlobalArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            nodes: self.nodes.clone(),
            keyspace: self.keyspace.clone(),
            datacenter: self.datacenter.clone(),
            node_id: self.node_id.clone(),
        }
    }

    fn settings(&self) -> Result<Settings, CliError> {
        let overrides = self.overrides();
        let daemon = match &self.config {
            Some(path) => Some(config::load(path, &overrides).map_err(CliError::input)?),
            None => None,
        };
        let (cassandra, replication) = match &daemon {
            Some(d) => (d.cassandra.clone(), d.replication.clone()),
            None => {
                // No file: flags, environment and defaults only.
                let parsed = config::parse(std::path::Path::new("(flags)"), "", &overrides)
                    .map_err(CliError::input)?;
                (parsed.cassandra, parsed.replication)
            }
        };
        Ok(Settings {
            daemon,
            cassandra,
            replication,
        })
    }
}

impl Settings {
    fn daemon(&self, command: &str) -> Result<&DaemonConfig, CliError> {
        self.daemon.as_ref().ok_or_else(|| {
            CliError::input(anyhow::anyhow!("`hajobs {command}` needs the jobs' configuration: pass --config FILE or set HAJOBS_CONFIG"))
        })
    }

    async fn session(&self) -> Result<Arc<Session>, CliError> {
        let session = self.cassandra.connect().await?;
        let ks = &self.cassandra.keyspace;
        let applied = schema::applied_versions(&session, ks).await.map_err(|e| {
            // Cassandra names a missing keyspace or table so; anything else
            // (no quorum, a timeout) is a problem of the cluster, said as is.
            let chain = anyhow::Error::from(e);
            let text = format!("{chain:#}");
            if text.contains("unconfigured table") || text.contains("does not exist") {
                anyhow::anyhow!(
                    "keyspace `{ks}` has no hajobs schema ({text}): run `hajobs schema apply`"
                )
            } else {
                chain.context(format!("cannot read the schema version of keyspace `{ks}`"))
            }
        })?;
        let missing: Vec<i32> = MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if !missing.is_empty() {
            return Err(anyhow::anyhow!(
                "keyspace `{ks}` lacks schema versions {missing:?}: run `hajobs schema apply`"
            )
            .into());
        }
        Ok(session)
    }

    async fn status_store(&self) -> Result<StatusStore, CliError> {
        let retention = hajobs_core::status_store::DEFAULT_RETENTION;
        Ok(StatusStore::new(self.session().await?, &self.cassandra, retention).await?)
    }

    async fn manager(&self, command: &str) -> Result<JobManager, CliError> {
        self.manager_on(command, self.session().await?).await
    }

    async fn manager_on(
        &self,
        command: &str,
        session: Arc<Session>,
    ) -> Result<JobManager, CliError> {
        let daemon = self.daemon(command)?;
        let mut builder =
            JobManager::builder(self.cassandra.clone(), daemon.node.clone()).session(session);
        for job in &daemon.jobs {
            builder = builder.job(
                job.spec.clone(),
                crate::command_job::CommandJob::new(job.clone()),
            );
        }
        Ok(builder.build().await?)
    }
}

fn replication(arg: &ReplicationArg, settings: &Settings) -> Result<schema::Replication, CliError> {
    match &arg.replication {
        Some(r) => schema::Replication::parse(r)
            .map_err(|e| CliError::input(anyhow::anyhow!("--replication: {e}"))),
        None => Ok(settings.replication.clone()),
    }
}

impl Cli {
    /// How the process logs (`--log-format`).
    pub(crate) fn log_format(&self) -> LogFormat {
        self.global.log_format
    }

    pub(crate) async fn run(self) -> Result<(), CliError> {
        if let Command::Completions { shell } = self.command {
            let mut command = <Self as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "hajobs", &mut std::io::stdout());
            return Ok(());
        }
        let settings = self.global.settings()?;
        match self.command {
            Command::Schema(SchemaCommand::Print(r)) => {
                let cql = schema::print(&settings.cassandra.keyspace, &replication(&r, &settings)?)
                    .map_err(CliError::input)?;
                print!("{cql}");
            }
            Command::Schema(SchemaCommand::Apply(r)) => {
                let replication = replication(&r, &settings)?;
                let ks = &settings.cassandra.keyspace;
                let session = settings.cassandra.connect().await?;
                let before = schema::check(&session, ks).await?;
                let report = schema::apply(&session, ks, &replication).await?;
                for r in &report.repaired {
                    println!("repaired: {r}");
                }
                println!(
                    "keyspace {ks}: applied migrations {:?}, already applied {:?}",
                    report.applied, report.already_applied
                );
                if before.ha_jobs_keyspace {
                    println!("{}", ha_jobs_advice(&settings));
                }
            }
            Command::Schema(SchemaCommand::Check) => {
                let ks = &settings.cassandra.keyspace;
                let session = settings.cassandra.connect().await?;
                let report = schema::check(&session, ks).await?;
                if report.is_clean() {
                    println!("keyspace {ks}: the schema is what hajobs needs");
                    return Ok(());
                }
                if !report.unrecorded.is_empty() {
                    println!("migrations not recorded: {:?}", report.unrecorded);
                }
                for d in &report.drifts {
                    println!("- {d}");
                    if let Some(fix) = d.fix(ks) {
                        println!("    fix: {fix}");
                    }
                }
                if report.ha_jobs_keyspace {
                    println!("{}", ha_jobs_advice(&settings));
                }
                let repairable = report.drifts.iter().all(|d| d.repairable());
                return Err(anyhow::anyhow!(
                    "keyspace {ks} differs from what hajobs needs{}",
                    if repairable {
                        ": `hajobs schema apply` repairs all of it"
                    } else {
                        "; some of it no statement can repair (see docs/migrating-from-ha-jobs.md)"
                    }
                )
                .into());
            }
            Command::Serve => serve(&settings).await?,
            Command::Completions { .. } => unreachable!("answered before the settings"),
            Command::Jobs { json } => {
                let daemon = settings.daemon("jobs")?;
                let now = chrono::Utc::now();
                if !json {
                    println!(
                        "{:<24} {:<24} {:<28} NEXT FIRING (UTC)",
                        "JOB TYPE", "LOCK TYPE", "CRON"
                    );
                }
                for job in &daemon.jobs {
                    let next = job
                        .spec
                        .schedule
                        .as_ref()
                        .and_then(|s| s.next_after(now))
                        .map(|t| t.to_rfc3339());
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "job_type": job.spec.job_type.as_str(),
                                "lock_type": job.spec.lock_type.as_str(),
                                "cron": job.spec.schedule.as_ref().map(|s| s.expression().to_owned()),
                                "time_zone": job.spec.schedule.as_ref().map(|s| s.time_zone().to_string()),
                                "next_firing": next,
                                "command": job.command,
                                "retrigger_count": job.spec.retrigger_count,
                                "timeout_ms": job.spec.timeout.map(|t| t.as_millis() as u64),
                                "lease_ttl_ms": job.spec.keeper.ttl().duration().as_millis() as u64,
                            })
                        );
                        continue;
                    }
                    let cron = match &job.spec.schedule {
                        Some(s) => format!("{} {}", s.expression(), s.time_zone()),
                        None => "(manual)".into(),
                    };
                    println!(
                        "{:<24} {:<24} {:<28} {}",
                        job.spec.job_type,
                        job.spec.lock_type,
                        cron,
                        next.unwrap_or_default()
                    );
                }
            }
            Command::Watch { job, wait } => watch(&settings, &job, wait).await?,
            Command::Trigger {
                job, here: true, ..
            } => trigger(&settings, &job).await?,
            Command::Trigger { job, wait, .. } => trigger_in_cluster(&settings, &job, wait).await?,
            Command::Cancel { job } => {
                let manager = settings.manager("cancel").await?;
                match manager.cancel(&job).await.map_err(input_if_unknown)? {
                    CancelOutcome::CancelledLocally(id)
                    | CancelOutcome::CancelledRemotely(hajobs_core::Holder {
                        job_id: id, ..
                    }) => {
                        println!(
                            "cancelled {job} attempt {id}: its replica stops it within one renewal interval"
                        )
                    }
                    CancelOutcome::NotRunning => println!("{job} is not running"),
                    CancelOutcome::ForeignHolder(h) => {
                        return Err(anyhow::anyhow!(
                            "{job} attempt {} is held by a holder that cannot be cancelled through the lock (ha-jobs?); use its own API or `hajobs unlock {}`",
                            h.job_id,
                            h.lock_type
                        )
                        .into());
                    }
                }
            }
            Command::Status { job, limit, json } => {
                let store = settings.status_store().await?;
                let entries = match job {
                    Some(j) => {
                        store
                            .history(&JobType::new(j).map_err(CliError::input)?, limit)
                            .await?
                    }
                    None => with_last_good(&store, store.latest_of_all().await?).await?,
                };
                print_entries(&entries, json)?;
            }
            Command::History { job, job_id } => {
                let job_id: JobId = job_id
                    .parse()
                    .map_err(|e| CliError::input(anyhow::anyhow!("job id `{job_id}`: {e}")))?;
                let store = settings.status_store().await?;
                let entries = store
                    .run_history(&JobType::new(job).map_err(CliError::input)?, job_id)
                    .await?;
                if entries.is_empty() {
                    return Err(anyhow::anyhow!("no attempt {job_id} recorded").into());
                }
                print_entries(&entries, true)?;
            }
            Command::Stats { job, json } => {
                let store = settings.status_store().await?;
                let job_types: Vec<JobType> = match job {
                    Some(j) => vec![JobType::new(j).map_err(CliError::input)?],
                    None => store
                        .latest_of_all()
                        .await?
                        .iter()
                        .filter_map(|e| match e {
                            StatusEntry::Status(s) => Some(s.job_type.clone()),
                            StatusEntry::Corrupt { job_type, .. } => {
                                job_type.clone().and_then(|t| JobType::new(t).ok())
                            }
                        })
                        .collect(),
                };
                if !json {
                    println!(
                        "{:<24} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}  {:<24} LAST FAILURE",
                        "JOB TYPE",
                        "ATTEMPTS",
                        "FINISHED",
                        "FAILED",
                        "DEAD",
                        "CANCELED",
                        "SUCCESS",
                        "P50",
                        "P95",
                        "MAX",
                        "LAST SUCCESS"
                    );
                }
                for job_type in job_types {
                    let latest: Vec<hajobs_core::JobStatus> = store
                        .history(&job_type, STATS_DEPTH)
                        .await?
                        .into_iter()
                        .filter_map(|e| e.status().cloned())
                        .collect();
                    let s = hajobs_core::JobStats::from_latest(job_type.as_str(), &latest);
                    if json {
                        println!("{}", serde_json::to_string(&s)?);
                        continue;
                    }
                    let ms = |v: Option<u64>| {
                        v.map_or("-".to_owned(), |v| format!("{:.1}s", v as f64 / 1000.0))
                    };
                    let at = |v: Option<i64>| {
                        v.and_then(chrono::DateTime::from_timestamp_millis)
                            .map_or("-".to_owned(), |t| {
                                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            })
                    };
                    println!(
                        "{:<24} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}  {:<24} {}",
                        s.job_type,
                        s.attempts,
                        s.finished,
                        s.failed,
                        s.dead,
                        s.canceled,
                        s.success_rate
                            .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                        ms(s.p50_ms),
                        ms(s.p95_ms),
                        ms(s.max_ms),
                        at(s.last_success_ms),
                        at(s.last_failure_ms)
                    );
                }
            }
            Command::Nodes { json } => {
                let store = NodeStore::new(settings.session().await?, &settings.cassandra).await?;
                let now = hajobs_core::node_store::now_millis();
                let nodes = store.list().await?;
                if json {
                    for n in &nodes {
                        println!("{}", serde_json::to_string(n)?);
                    }
                    return Ok(());
                }
                println!(
                    "{:<20} {:<16} {:>8} {:<8} {:<24} {:>9}  JOB TYPES / RUNNING",
                    "NODE", "HOST", "PID", "VERSION", "STARTED (UTC)", "SEEN"
                );
                for n in &nodes {
                    let started = chrono::DateTime::from_timestamp_millis(n.started_at_ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default();
                    println!(
                        "{:<20} {:<16} {:>8} {:<8} {:<24} {:>7.1}s  {} / {}",
                        n.node_id,
                        n.host,
                        n.pid,
                        n.version,
                        started,
                        (now - n.seen_at_ms).max(0) as f64 / 1000.0,
                        n.job_types.join(","),
                        if n.running.is_empty() {
                            "-".to_owned()
                        } else {
                            n.running.join(",")
                        }
                    );
                }
            }
            Command::Locks { json } => {
                let store = LeaseStore::new(settings.session().await?, &settings.cassandra).await?;
                if json {
                    for h in store.list().await? {
                        println!(
                            "{}",
                            serde_json::json!({
                                "lock_type": h.lock_type.as_str(),
                                "job_id": h.job_id.to_string(),
                                "owner": h.owner,
                                "fencing_token": h.fencing_token.filter(|_| !h.is_foreign()).map(|t| t.0),
                                "since_ms": h.since.map(|t| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)),
                                "foreign": h.is_foreign(),
                            })
                        );
                    }
                    return Ok(());
                }
                println!(
                    "{:<28} {:<38} {:<20} {:>8}  SINCE",
                    "LOCK TYPE", "JOB ID", "OWNER", "TOKEN"
                );
                for h in store.list().await? {
                    println!(
                        "{:<28} {:<38} {:<20} {:>8}  {}",
                        h.lock_type.as_str(),
                        h.job_id,
                        h.owner.as_deref().unwrap_or("(ha-jobs?)"),
                        // A foreign holder took no token; the cell is an older holder's.
                        h.fencing_token
                            .filter(|_| !h.is_foreign())
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "-".into()),
                        h.since.map(rfc3339).unwrap_or_default()
                    );
                }
            }
            Command::Unlock {
                lock_type,
                wait,
                force,
            } => {
                let lock = LockType::new(lock_type).map_err(CliError::input)?;
                let store = LeaseStore::new(settings.session().await?, &settings.cassandra).await?;
                if force {
                    match store.force_release(&lock).await? {
                        Some(h) => println!(
                            "released {lock} by force, held by job {} on {} (if it still runs, it runs unfenced until its next renewal)",
                            h.job_id,
                            h.owner.as_deref().unwrap_or("?")
                        ),
                        None => println!("{lock} was not held"),
                    }
                } else {
                    unlock_safely(&store, &lock, wait).await?;
                }
            }
        }
        Ok(())
    }
}

fn input_if_unknown(e: hajobs_scheduler::ManagerError) -> CliError {
    match e {
        hajobs_scheduler::ManagerError::UnknownJobType { .. } => CliError::input(e),
        other => other.into(),
    }
}

/// How long `hajobs trigger` waits for a replica to claim its request.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How long it waits, once claimed, for the outcome.
const OUTCOME_WAIT: Duration = Duration::from_secs(15);

/// `hajobs trigger JOB`: a request to the cluster, its outcome printed.
async fn trigger_in_cluster(settings: &Settings, job: &str, wait: bool) -> Result<(), CliError> {
    let job_type = JobType::new(job).map_err(CliError::input)?;
    if let Some(daemon) = &settings.daemon {
        if !daemon.jobs.iter().any(|j| j.spec.job_type == job_type) {
            let names: Vec<&str> = daemon
                .jobs
                .iter()
                .map(|j| j.spec.job_type.as_str())
                .collect();
            return Err(CliError::input(anyhow::anyhow!(
                "unknown job type `{job}` (registered: {})",
                names.join(", ")
            )));
        }
    }
    let session = settings.session().await?;
    let requests = RequestStore::new(session.clone(), &settings.cassandra).await?;
    let trigger_id = TriggerId::new();
    let requested_by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    );
    requests.request(job, trigger_id, &requested_by).await?;
    let asked = std::time::Instant::now();
    let mut claimed: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = requests.get(trigger_id).await?;
        let claimant = request.as_ref().and_then(|r| r.claimed_by.clone());
        match request.and_then(|r| r.outcome) {
            Some(RequestOutcome::Started {
                job_id,
                fencing_token,
            }) => {
                println!(
                    "started {job} on {} as {job_id} (trigger {trigger_id}, fencing token {fencing_token})",
                    claimant.as_deref().unwrap_or("?")
                );
                return if wait {
                    follow(settings, &job_type, job_id).await
                } else {
                    Ok(())
                };
            }
            Some(RequestOutcome::Locked { holder, owner }) => {
                return Err(CliError::locked(anyhow::anyhow!(
                    "locked: {job} is held by {holder} on {}",
                    owner.as_deref().unwrap_or("(ha-jobs?)")
                )));
            }
            Some(RequestOutcome::Error(e)) => {
                return Err(anyhow::anyhow!("error: {job} not started: {e}").into());
            }
            None => {}
        }
        match (&claimant, claimed) {
            (Some(_), None) => claimed = Some(std::time::Instant::now()),
            (Some(node), Some(at)) if at.elapsed() > OUTCOME_WAIT => {
                return Err(anyhow::anyhow!(
                    "error: {job} was claimed by {node} but not started within {OUTCOME_WAIT:?}: that replica may have died; a live replica records the trigger {trigger_id} FAILED and the supervisor's retrigger rule applies"
                )
                .into());
            }
            (None, _) if asked.elapsed() > CLAIM_WAIT && requests.withdraw(trigger_id).await? => {
                return Err(anyhow::anyhow!(
                    "no live replica has {job} configured (nobody claimed the request in {CLAIM_WAIT:?}; it was withdrawn and will never start)"
                )
                .into());
            }
            _ => {}
        }
    }
}

/// `hajobs watch JOB`: the running attempt's progress, live, to its end.
async fn watch(settings: &Settings, job: &str, wait: Duration) -> Result<(), CliError> {
    let job_type = JobType::new(job).map_err(CliError::input)?;
    let store = settings.status_store().await?;
    let started = std::time::Instant::now();
    let attempt = loop {
        let running = store
            .history(&job_type, 5)
            .await?
            .into_iter()
            .find_map(|e| match e {
                StatusEntry::Status(s) if s.result() == hajobs_core::JobResult::Pending => Some(s),
                _ => None,
            });
        if let Some(s) = running {
            break s;
        }
        if started.elapsed() >= wait {
            return Err(anyhow::anyhow!(
                "{job} has no running attempt (waited {})",
                humantime::format_duration(wait)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "watching {job} attempt {} on {} (trigger {})",
        attempt.job_id,
        attempt.owner.as_ref().map_or("?", |o| o.as_str()),
        attempt.trigger_id
    );
    let mut shown = None;
    loop {
        // The attempt's newest status, content included.
        if let Some(StatusEntry::Status(s)) = store.get(&job_type, attempt.job_id).await? {
            if s.result() != hajobs_core::JobResult::Pending {
                println!("{}", serde_json::to_string(&s)?);
                if s.result() != hajobs_core::JobResult::Success {
                    return Err(
                        anyhow::anyhow!("{job} attempt {} ended {}", s.job_id, s.state).into(),
                    );
                }
                return Ok(());
            }
            let progress = (s.timestamp, s.content.clone());
            if s.content.is_some() && shown.as_ref() != Some(&progress) {
                println!(
                    "{} {}",
                    rfc3339(s.timestamp),
                    s.content
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
                shown = Some(progress);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `--wait`: the attempt's statuses until its end.
async fn follow(settings: &Settings, job_type: &JobType, job_id: JobId) -> Result<(), CliError> {
    let store = settings.status_store().await?;
    loop {
        if let Some(StatusEntry::Status(s)) = store.get(job_type, job_id).await? {
            if s.result() != hajobs_core::JobResult::Pending {
                println!("{}", serde_json::to_string(&s)?);
                if s.result() != hajobs_core::JobResult::Success {
                    return Err(
                        anyhow::anyhow!("{job_type} attempt {job_id} ended {}", s.state).into(),
                    );
                }
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn trigger(settings: &Settings, job: &str) -> Result<(), CliError> {
    let manager = settings.manager("trigger").await?;
    match manager.trigger(job).await.map_err(input_if_unknown)? {
        StartOutcome::Started {
            job_id, trigger_id, ..
        } => {
            eprintln!("started {job} attempt {job_id} (trigger {trigger_id}) here");
            while manager.running_here(job) == Some(job_id) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let job_type = JobType::new(job).map_err(CliError::input)?;
            match manager.statuses().get(&job_type, job_id).await? {
                Some(StatusEntry::Status(s)) => {
                    println!("{}", serde_json::to_string(&s)?);
                    if s.result() != hajobs_core::JobResult::Success {
                        return Err(
                            anyhow::anyhow!("{job} attempt {job_id} ended {}", s.state).into()
                        );
                    }
                }
                other => {
                    return Err(anyhow::anyhow!(
                        "{job} attempt {job_id}: final status unreadable: {other:?}"
                    )
                    .into());
                }
            }
            Ok(())
        }
        StartOutcome::Locked { holder, .. } => Err(CliError::locked(anyhow::anyhow!(
            "{job} not started: lock `{}` is held by job {} on {}",
            holder.lock_type,
            holder.job_id,
            holder.owner.as_deref().unwrap_or("?")
        ))),
        StartOutcome::Error { details, .. } => {
            Err(anyhow::anyhow!("{job} not started: {details}").into())
        }
    }
}

/// How many attempts `hajobs stats` reads per job type (the newest).
const STATS_DEPTH: u32 = 10_000;

/// The longest wait between two tries to start serving.
const MAX_START_BACKOFF: Duration = Duration::from_secs(30);

async fn serve(settings: &Settings) -> Result<(), CliError> {
    let daemon = settings.daemon("serve")?;
    // A daemon may start before its database (systemd, Kubernetes): wait
    // and retry with backoff, saying why, until it answers or we are stopped.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    let (manager, nodes, requests) = loop {
        let attempt = async {
            let session = settings.session().await?;
            let manager = settings.manager_on("serve", session.clone()).await?;
            let nodes = NodeStore::new(session.clone(), &settings.cassandra).await?;
            let requests = RequestStore::new(session, &settings.cassandra).await?;
            manager.start().await?;
            Ok::<_, CliError>((manager, nodes, requests))
        };
        match attempt.await {
            Ok(ready) => break ready,
            Err(e) if e.exit_code() == 1 => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot start serving yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => {
                        tracing::info!("stopped before serving");
                        return Ok(());
                    }
                }
                backoff = (backoff * 2).min(MAX_START_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    };
    let supervisor = daemon
        .supervisor
        .clone()
        .map(|s| Supervisor::new(manager.clone(), s).spawn());
    let registry = crate::registry::Registry::spawn(nodes, manager.clone(), daemon);
    let watcher = hajobs_scheduler::RequestWatcher::spawn(
        manager.clone(),
        Arc::new(requests),
        hajobs_scheduler::WatchConfig::default(),
    );
    tracing::info!(node = %daemon.node, jobs = daemon.jobs.len(), keyspace = %settings.cassandra.keyspace, "hajobs serving");
    // ha-jobs replicas use LOCAL_SERIAL: SERIAL on the same lock rows is
    // unsafe across data centres while they run.
    if settings.cassandra.serial_consistency != scylla::statement::SerialConsistency::LocalSerial {
        if let Ok(holders) = manager.leases().list().await {
            if let Some(h) = holders.iter().find(|h| h.is_foreign()) {
                tracing::warn!(lock_type = %h.lock_type, job_id = %h.job_id, "a lock is held by a holder that does not speak hajobs' protocol (ha-jobs?) while this replica uses consistency = \"global\": mixing SERIAL and LOCAL_SERIAL on one lock is unsafe across data centres; use \"local\" until every ha-jobs replica is retired");
            }
        }
    }
    shutdown.await;
    tracing::info!(grace = ?daemon.shutdown_grace, "shutting down");
    if let Some(s) = supervisor {
        s.stop().await;
    }
    // No new requests claimed here from now on; then the attempts end.
    watcher.stop().await;
    manager.shutdown(daemon.shutdown_grace).await;
    registry.stop().await;
    Ok(())
}

/// SIGTERM or Ctrl-C, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn print_entries(entries: &[StatusEntry], json: bool) -> Result<(), CliError> {
    if json {
        for e in entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<38} {:<17} {:<8} {:<20} TIME",
        "JOB TYPE", "JOB ID", "STATE", "RESULT", "OWNER"
    );
    for e in entries {
        match e {
            StatusEntry::Status(s) => println!(
                "{:<24} {:<38} {:<17} {:<8} {:<20} {}",
                s.job_type.as_str(),
                s.job_id,
                s.state.as_str(),
                s.result().as_str(),
                s.owner.as_ref().map(|o| o.as_str()).unwrap_or("-"),
                rfc3339(s.timestamp)
            ),
            StatusEntry::Corrupt { row, problem, .. } => {
                println!("CORRUPT ROW {row}: {problem}")
            }
        }
    }
    Ok(())
}

/// `hajobs unlock` without `--force`: a cancel request through the lock,
/// then a wait until the holder is gone from it.
async fn unlock_safely(
    store: &LeaseStore,
    lock: &LockType,
    wait: Duration,
) -> Result<(), CliError> {
    let Some(holder) = store.read(lock, true).await? else {
        println!("{lock} was not held");
        return Ok(());
    };
    if holder.is_foreign() {
        return Err(anyhow::anyhow!(
            "{lock} is held by job {} whose holder cannot be cancelled through the lock (ha-jobs?): stop it through its own API, or `hajobs unlock --force {lock}` once it has stopped",
            holder.job_id
        )
        .into());
    }
    let owner = holder.owner.clone().unwrap_or_else(|| "?".into());
    let started = std::time::Instant::now();
    if store.request_cancel(lock, holder.job_id).await? {
        eprintln!(
            "asked job {} on {owner} to stop; waiting for it to release {lock} (at most {})",
            holder.job_id,
            humantime::format_duration(wait)
        );
    }
    loop {
        match store.read(lock, true).await? {
            Some(h) if h.job_id == holder.job_id => {}
            now => {
                let then = match now {
                    Some(h) => format!("; now held by job {}", h.job_id),
                    None => String::new(),
                };
                println!(
                    "unlocked {lock}: job {} on {owner} stopped and let it go after {:.1} s{then}",
                    holder.job_id,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        if started.elapsed() >= wait {
            return Err(anyhow::anyhow!(
                "{lock} is still held by job {} on {owner} after {}: its holder neither stops nor lets its lease expire (a holder that cannot be cancelled through the lock, or a stuck keeper); `hajobs unlock --force {lock}` deletes the lock anyway, which is unsafe while that job still runs",
                holder.job_id,
                humantime::format_duration(wait)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The latest entry of every job type, each corrupt one followed by that job
/// type's newest valid status: a bad row must not hide the last good run.
async fn with_last_good(
    store: &StatusStore,
    latest: Vec<StatusEntry>,
) -> Result<Vec<StatusEntry>, CliError> {
    /// How far back to look for a valid status behind a corrupt one.
    const LOOK_BACK: u32 = 50;
    let mut out = Vec::with_capacity(latest.len());
    for entry in latest {
        let behind = match &entry {
            StatusEntry::Corrupt {
                job_type: Some(t), ..
            } => JobType::new(t.clone()).ok(),
            _ => None,
        };
        out.push(entry);
        if let Some(job_type) = behind {
            if let Some(good) = store
                .history(&job_type, LOOK_BACK)
                .await?
                .into_iter()
                .find(|e| e.status().is_some())
            {
                out.push(good);
            }
        }
    }
    Ok(out)
}

/// What a team adopting an ha-jobs keyspace must keep in mind.
fn ha_jobs_advice(settings: &Settings) -> String {
    let mut advice = String::from(
        "this keyspace was made by ha-jobs: while ha-jobs replicas still run, keep \
         `consistency = \"local\"` (ha-jobs uses LOCAL_SERIAL; mixing SERIAL and LOCAL_SERIAL on one \
         lock is unsafe across data centres); see docs/migrating-from-ha-jobs.md",
    );
    if settings.cassandra.serial_consistency != scylla::statement::SerialConsistency::LocalSerial {
        advice.push_str(
            "\nWARNING: this configuration uses consistency = \"global\" (SERIAL): switch to \"local\" until every ha-jobs replica is retired",
        );
    }
    advice
}
