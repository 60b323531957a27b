//! The command line: raw flags ([`Cli`]) and what each command does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use hajobs_core::schema::{self, MIGRATIONS};
use hajobs_core::{CassandraConfig, JobId, JobType, StatusEntry};
use hajobs_scheduler::{JobManager, StartOutcome};
use scylla::client::session::Session;

use crate::admin::{Admin, AdminError, ErrorKind, HolderView, Unlocked};
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
        let error = error.into();
        // An admin operation's failure says its own kind.
        let code = match error.downcast_ref::<AdminError>().map(|e| e.kind) {
            Some(ErrorKind::BadInput | ErrorKind::UnknownJob) => 2,
            Some(ErrorKind::Locked) => 3,
            _ => 1,
        };
        Self { code, error }
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
    /// Serve the HTTP API, page and metrics at this address (turns `[http]`
    /// on, over the file's `listen`).
    #[arg(long, global = true, env = "HAJOBS_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// The HTTP API's admin token (over the file's `http.admin_token`): every
    /// mutating route then requires `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        global = true,
        env = "HAJOBS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
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
    /// Print the HTTP API's OpenAPI document (what `GET /openapi.json` serves).
    Openapi,
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
    /// The triggers queued for busy lock types (jobs with `on_locked =
    /// "queue"`), oldest first: position, job type, trigger id, queued at,
    /// by whom. `hajobs queue rm TRIGGER_ID` removes one.
    #[command(args_conflicts_with_subcommands = true)]
    Queue {
        /// One lock type (default: every queue).
        lock_type: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<QueueCommand>,
    },
    /// Work items (processed exactly once by whichever replica checks them
    /// in first): show one, list a work set, forget the ended ones.
    #[command(subcommand)]
    Work(WorkCommand),
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Remove a queued trigger (an operator's decision, recorded as a
    /// SKIPPED status of the trigger naming you). Refused once a replica
    /// claimed it to start.
    Rm {
        /// The trigger id, as `hajobs queue` shows it.
        trigger_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum WorkCommand {
    /// One work item: state, holder, fencing token, attempts, result, error.
    /// Exit 1 when it was never checked in (or is forgotten).
    Check {
        /// The work set.
        work_set: String,
        /// The item's key.
        key: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The items of a work set, newest first.
    List {
        /// The work set.
        work_set: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The retention the work set's items were written with (how many
        /// days of the listing to walk).
        #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
        retention: Duration,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Process one work item with a command, exactly once cluster-wide:
    /// check it in (exit 3 when another worker has it, 0 with a message when
    /// it was done before), run the command under the item's lease (its
    /// whole process tree, under a guard: killed when the lease is lost or
    /// its deadline passes, stopped when the timeout fires) with HAJOBS_WORK_SET,
    /// HAJOBS_WORK_KEY, HAJOBS_FENCING_TOKEN and HAJOBS_ATTEMPT set, then
    /// check it out (exit 0) or record it failed for a retry (exit 1).
    Run {
        /// The work set.
        work_set: String,
        /// The item's key.
        key: String,
        /// The check-in timeout: a command running longer is killed and the
        /// item recorded failed (`checkin_timeout: …`).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// The lease TTL of the check-in (how long a dead worker keeps it).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Forget the items that ended (DONE or FAILED) more than OLDER_THAN ago:
    /// their keys are processed anew by their next check-in. Items in
    /// progress are kept.
    Purge {
        /// The work set.
        work_set: String,
        /// Age of the ending, e.g. `7d`, `12h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// The retention the work set's items were written with.
        #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
        retention: Duration,
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
pub(crate) struct Settings {
    pub(crate) daemon: Option<Arc<DaemonConfig>>,
    pub(crate) cassandra: CassandraConfig,
    /// This process's node id (the file's, `--node-id`, or the host name).
    node: hajobs_core::NodeId,
    replication: schema::Replication,
}

impl GlobalArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            nodes: self.nodes.clone(),
            keyspace: self.keyspace.clone(),
            datacenter: self.datacenter.clone(),
            node_id: self.node_id.clone(),
            http_listen: self.http_listen.clone(),
            admin_token: self.admin_token.clone().map(hajobs_core::Secret::new),
            ..Overrides::from_environment()
        }
    }

    fn settings(&self) -> Result<Settings, CliError> {
        let overrides = self.overrides();
        let daemon = match &self.config {
            Some(path) => Some(Arc::new(
                config::load(path, &overrides).map_err(CliError::input)?,
            )),
            None => None,
        };
        let (cassandra, replication, node) = match &daemon {
            Some(d) => (d.cassandra.clone(), d.replication.clone(), d.node.clone()),
            None => {
                // No file: flags, environment and defaults only.
                let parsed = config::parse(std::path::Path::new("(flags)"), "", &overrides)
                    .map_err(CliError::input)?;
                (parsed.cassandra, parsed.replication, parsed.node)
            }
        };
        Ok(Settings {
            daemon,
            cassandra,
            replication,
            node,
        })
    }
}

impl Settings {
    pub(crate) fn daemon(&self, command: &str) -> Result<&Arc<DaemonConfig>, CliError> {
        self.daemon.as_ref().ok_or_else(|| {
            CliError::input(anyhow::anyhow!("`hajobs {command}` needs the jobs' configuration: pass --config FILE or set HAJOBS_CONFIG"))
        })
    }

    pub(crate) async fn session(&self) -> Result<Arc<Session>, CliError> {
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

    /// The admin layer; `with_manager` for the operations that need the
    /// jobs' configuration as a job manager (cancel).
    async fn admin(&self, with_manager: bool) -> Result<Admin, CliError> {
        let session = self.session().await?;
        let manager = if with_manager {
            Some(self.manager_on("cancel", session.clone()).await?)
        } else {
            None
        };
        Ok(Admin::new(&self.cassandra, session, self.daemon.clone(), manager).await?)
    }

    async fn manager(&self, command: &str) -> Result<JobManager, CliError> {
        self.manager_on(command, self.session().await?).await
    }

    pub(crate) async fn manager_on(
        &self,
        command: &str,
        session: Arc<Session>,
    ) -> Result<JobManager, CliError> {
        let daemon = self.daemon(command)?;
        let mut builder =
            JobManager::builder(self.cassandra.clone(), daemon.node.clone()).session(session);
        for lock in &daemon.locks {
            builder = builder.lock(lock.clone());
        }
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
        if let Command::Openapi = self.command {
            println!("{}", crate::http::openapi_json());
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
            Command::Serve => crate::daemon::serve(&settings).await?,
            Command::Completions { .. } | Command::Openapi => {
                unreachable!("answered before the settings")
            }
            Command::Jobs { json } => {
                let jobs = settings.admin(false).await?.jobs().await?;
                if json {
                    return print_json_lines(&jobs);
                }
                println!(
                    "{:<24} {:<24} {:<28} {:<26} {:<20} LATEST",
                    "JOB TYPE", "LOCK TYPE", "CRON", "NEXT FIRING (UTC)", "HOLDER"
                );
                for j in &jobs {
                    let cron = match (&j.cron, &j.time_zone) {
                        (Some(c), Some(tz)) => format!("{c} {tz}"),
                        _ => "(manual)".into(),
                    };
                    let latest = match &j.latest {
                        Some(StatusEntry::Status(s)) => {
                            format!("{} {}", s.state.as_str(), rfc3339(s.timestamp))
                        }
                        Some(StatusEntry::Corrupt { .. }) => "(corrupt row)".into(),
                        None => "-".into(),
                    };
                    println!(
                        "{:<24} {:<24} {:<28} {:<26} {:<20} {}",
                        j.job_type,
                        j.lock_type,
                        cron,
                        j.next_firing.as_deref().unwrap_or("-"),
                        j.holder
                            .as_ref()
                            .map(|h| h.owner.clone().unwrap_or_else(|| "(ha-jobs?)".into()))
                            .unwrap_or_else(|| "-".into()),
                        latest
                    );
                }
            }
            Command::Watch { job, wait } => watch(&settings, &job, wait).await?,
            Command::Trigger {
                job, here: true, ..
            } => trigger(&settings, &job).await?,
            Command::Trigger { job, wait, .. } => {
                let admin = settings.admin(false).await?;
                let t = admin.trigger(&job, &requested_by()).await?;
                match (&t.job_id, t.fencing_token, t.queue_position) {
                    (Some(job_id), Some(token), _) => {
                        println!(
                            "started {} on {} as {job_id} (trigger {}, fencing token {token})",
                            t.job_type, t.node, t.trigger_id
                        );
                        if wait {
                            let job_type = admin.job_type(&job)?;
                            let job_id: JobId = job_id.parse()?;
                            follow(&admin, &job_type, job_id).await?;
                        }
                    }
                    (_, _, position) => println!(
                        "queued {} as trigger {} at position {} of its lock type's queue (by {}): it runs when its turn comes; `hajobs queue` shows it",
                        t.job_type,
                        t.trigger_id,
                        position.unwrap_or(0),
                        t.node
                    ),
                }
            }
            Command::Cancel { job } => {
                let c = settings.admin(true).await?.cancel(&job).await?;
                match (&c.job_id, &c.node) {
                    (Some(id), node) => println!(
                        "cancelled {job} attempt {id} on {}: its replica stops it within one renewal interval",
                        node.as_deref().unwrap_or("?")
                    ),
                    (None, _) => println!("{job} is not running"),
                }
            }
            Command::Status { job, limit, json } => {
                let entries = settings
                    .admin(false)
                    .await?
                    .status(job.as_deref(), limit)
                    .await?;
                print_entries(&entries, json)?;
            }
            Command::History { job, job_id } => {
                let entries = settings.admin(false).await?.attempt(&job, &job_id).await?;
                print_entries(&entries, true)?;
            }
            Command::Stats { job, json } => {
                let stats = settings.admin(false).await?.stats(job.as_deref()).await?;
                if json {
                    return print_json_lines(&stats);
                }
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
                for s in &stats {
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
                let nodes = settings.admin(false).await?.nodes().await?;
                if json {
                    return print_json_lines(&nodes);
                }
                let now = hajobs_core::node_store::now_millis();
                println!(
                    "{:<20} {:<16} {:>8} {:<8} {:<24} {:>9}  {:<22} JOB TYPES / RUNNING",
                    "NODE", "HOST", "PID", "VERSION", "STARTED (UTC)", "SEEN", "HTTP"
                );
                for n in &nodes {
                    let started = chrono::DateTime::from_timestamp_millis(n.started_at_ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default();
                    println!(
                        "{:<20} {:<16} {:>8} {:<8} {:<24} {:>7.1}s  {:<22} {} / {}",
                        n.node_id,
                        n.host,
                        n.pid,
                        n.version,
                        started,
                        (now - n.seen_at_ms).max(0) as f64 / 1000.0,
                        n.http.as_deref().unwrap_or("-"),
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
                let holders = settings.admin(false).await?.locks().await?;
                if json {
                    let views: Vec<HolderView> = holders.iter().map(HolderView::from).collect();
                    return print_json_lines(&views);
                }
                println!(
                    "{:<28} {:<38} {:<20} {:>8}  SINCE",
                    "LOCK TYPE", "JOB ID", "OWNER", "TOKEN"
                );
                for h in &holders {
                    let v = HolderView::from(h);
                    println!(
                        "{:<28} {:<38} {:<20} {:>8}  {}",
                        v.lock_type,
                        v.job_id,
                        v.owner.as_deref().unwrap_or("(ha-jobs?)"),
                        v.fencing_token
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "-".into()),
                        h.since.map(rfc3339).unwrap_or_default()
                    );
                }
            }
            Command::Work(command) => work(&settings, command).await?,
            Command::Queue {
                command: Some(QueueCommand::Rm { trigger_id }),
                ..
            } => {
                let admin = settings.admin(false).await?;
                let q = admin.queue_remove(&trigger_id, &requested_by()).await?;
                println!(
                    "removed trigger {} of {} from the queue of {} (it was at position {}); recorded as SKIPPED",
                    q.trigger_id, q.job_type, q.lock_type, q.position
                );
            }
            Command::Queue {
                lock_type, json, ..
            } => {
                let queued = settings
                    .admin(false)
                    .await?
                    .queue(lock_type.as_deref())
                    .await?;
                if json {
                    return print_json_lines(&queued);
                }
                println!(
                    "{:<20} {:>3} {:<20} {:<36} {:<26} BY",
                    "LOCK TYPE", "POS", "JOB TYPE", "TRIGGER ID", "QUEUED AT (UTC)"
                );
                for q in &queued {
                    println!(
                        "{:<20} {:>3} {:<20} {:<36} {:<26} {}",
                        q.lock_type,
                        q.position,
                        q.job_type,
                        q.trigger_id,
                        q.queued_at_ms
                            .map(|ms| rfc3339(
                                std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
                            ))
                            .unwrap_or_else(|| "-".into()),
                        q.queued_by.as_deref().unwrap_or("-")
                    );
                }
            }
            Command::Unlock {
                lock_type,
                wait,
                force,
            } => {
                let admin = settings.admin(false).await?;
                let unlocked = admin
                    .unlock(&lock_type, wait, force, &requested_by(), |h| {
                        eprintln!(
                            "asked job {} on {} to stop; waiting for it to release {lock_type} (at most {})",
                            h.job_id,
                            h.owner.as_deref().unwrap_or("?"),
                            humantime::format_duration(wait)
                        )
                    })
                    .await?;
                match unlocked {
                    Unlocked::NotHeld => println!("{lock_type} was not held"),
                    Unlocked::Forced(h) => println!(
                        "released {lock_type} by force, held by job {} on {} (if it still runs, it runs unfenced until its next renewal)",
                        h.job_id,
                        h.owner.as_deref().unwrap_or("?")
                    ),
                    Unlocked::Released {
                        holder,
                        after,
                        now_held_by,
                    } => println!(
                        "unlocked {lock_type}: job {} on {} stopped and let it go after {:.1} s{}",
                        holder.job_id,
                        holder.owner.as_deref().unwrap_or("?"),
                        after.as_secs_f64(),
                        now_held_by
                            .map(|id| format!("; now held by job {id}"))
                            .unwrap_or_default()
                    ),
                }
            }
        }
        Ok(())
    }
}

/// Who asks, for the records: `USER@HOST`.
fn requested_by() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    )
}

/// One JSON object per line.
async fn work(settings: &Settings, command: WorkCommand) -> Result<(), CliError> {
    if let WorkCommand::Run {
        work_set,
        key,
        timeout,
        lease_ttl,
        command,
    } = command
    {
        return work_run(settings, &work_set, &key, timeout, lease_ttl, &command).await;
    }
    let admin = settings.admin(false).await?;
    match command {
        WorkCommand::Run { .. } => unreachable!("handled above"),
        WorkCommand::Check {
            work_set,
            key,
            json,
        } => {
            let item = admin.work_check(&work_set, &key).await?;
            if json {
                return print_json_lines(&[item]);
            }
            let time = |ms: Option<i64>| {
                ms.map(|ms| {
                    rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
                })
                .unwrap_or_else(|| "-".into())
            };
            println!("work item     {} / {}", item.work_set, item.key);
            println!("state         {}", item.state);
            println!("node          {}", item.node.as_deref().unwrap_or("-"));
            println!("holder        {}", item.holder.as_deref().unwrap_or("-"));
            println!("fencing token {}", item.fencing_token);
            println!("attempts      {}", item.attempts);
            println!("first         {}", time(item.created_at_ms));
            println!("since         {}", time(item.since_ms));
            println!("lease until   {}", time(item.lease_until_ms));
            println!("ended         {}", time(item.ended_at_ms));
            if let Some(r) = &item.result {
                println!("result        {r}");
            }
            if let Some(e) = &item.error {
                println!("error         {e}");
            }
        }
        WorkCommand::List {
            work_set,
            limit,
            retention,
            json,
        } => {
            let items = admin.work_list(&work_set, limit, Some(retention)).await?;
            if json {
                return print_json_lines(&items);
            }
            println!(
                "{:<32} {:<12} {:<20} {:>5} {:>8} ERROR",
                "KEY", "STATE", "NODE", "TOKEN", "ATTEMPTS"
            );
            for i in &items {
                println!(
                    "{:<32} {:<12} {:<20} {:>5} {:>8} {}",
                    i.key,
                    i.state,
                    i.node.as_deref().unwrap_or("-"),
                    i.fencing_token,
                    i.attempts,
                    i.error.as_deref().unwrap_or("")
                );
            }
        }
        WorkCommand::Purge {
            work_set,
            older_than,
            retention,
        } => {
            let removed = admin
                .work_purge(&work_set, older_than, Some(retention))
                .await?;
            println!(
                "purged {removed} work item(s) of {work_set} that ended more than {} ago",
                humantime::format_duration(older_than)
            );
        }
    }
    Ok(())
}

async fn work_run(
    settings: &Settings,
    work_set: &str,
    key: &str,
    timeout: Option<Duration>,
    lease_ttl: Duration,
    command: &[String],
) -> Result<(), CliError> {
    use hajobs_scheduler::{Processed, WorkItems, WorkOptions};
    let set = hajobs_core::WorkSet::new(work_set).map_err(CliError::input)?;
    let item = hajobs_core::WorkKey::new(key).map_err(CliError::input)?;
    let ttl = hajobs_core::LeaseTtl::new(lease_ttl)
        .map_err(|e| CliError::input(anyhow::anyhow!("--lease-ttl: {e}")))?;
    let items = WorkItems::new(
        settings.session().await?,
        &settings.cassandra,
        settings.node.clone(),
        WorkOptions {
            lease_ttl: ttl,
            ..WorkOptions::default()
        },
    )
    .await?;
    // The check-in timeout is the guarded run's: it stops the tree and
    // waits until it is gone before the item is recorded failed.
    let command = command.to_vec();
    let outcome = items
        .process(&set, &item, None, |grant| {
            crate::work_run::run(grant, command, timeout)
        })
        .await?;
    match outcome {
        Processed::Done(_) => {
            eprintln!("work item {key} of {work_set}: processed here, checked out DONE");
            Ok(())
        }
        Processed::AlreadyDone(done) => {
            eprintln!(
                "work item {key} of {work_set}: already done (by {}, fencing token {}); not run again",
                done.node.as_deref().unwrap_or("?"),
                done.fencing_token
            );
            Ok(())
        }
        Processed::InProgress { node } => Err(CliError::locked(anyhow::anyhow!(
            "work item {key} of {work_set} is in progress on {}; not run",
            node.as_deref().unwrap_or("?")
        ))),
        Processed::Failed(e) if e.starts_with(crate::work_run::CHECKIN_TIMEOUT) => {
            Err(anyhow::anyhow!("work item {key} of {work_set}: {e}; recorded FAILED").into())
        }
        Processed::Failed(e) => Err(anyhow::anyhow!(
            "work item {key} of {work_set} failed: {e}; recorded FAILED, the next check-in retries it"
        )
        .into()),
        Processed::TimedOut(t) => Err(anyhow::anyhow!(
            "work item {key} of {work_set}: the check-in timeout of {} fired; the command was killed and the item recorded FAILED",
            humantime::format_duration(t)
        )
        .into()),
        Processed::LeaseLost => Err(anyhow::anyhow!(
            "work item {key} of {work_set}: the lease was lost; the command was killed, nothing recorded"
        )
        .into()),
    }
}

fn print_json_lines<T: serde::Serialize>(items: &[T]) -> Result<(), CliError> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

/// `hajobs watch JOB`: the running attempt's progress, live, to its end.
async fn watch(settings: &Settings, job: &str, wait: Duration) -> Result<(), CliError> {
    let job_type = JobType::new(job).map_err(CliError::input)?;
    let admin = settings.admin(false).await?;
    let store = admin.statuses();
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
async fn follow(admin: &Admin, job_type: &JobType, job_id: JobId) -> Result<(), CliError> {
    let store = admin.statuses();
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
    match manager.trigger(job).await.map_err(AdminError::from)? {
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
        StartOutcome::Queued {
            trigger_id,
            position,
        } => {
            println!(
                "{job} queued as trigger {trigger_id} at position {position}: its lock is held; a replica runs it when its turn comes"
            );
            Ok(())
        }
        StartOutcome::Error { details, .. } => {
            Err(anyhow::anyhow!("{job} not started: {details}").into())
        }
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
