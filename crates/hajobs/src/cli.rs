//! The command line: the raw flags ([`Cli`]) and which command runs; what
//! each command does is in [`crate::cmd`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cmd;
use crate::config::Overrides;
use crate::exit::CliError;
use crate::settings::Settings;

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
        /// A parameter of the trigger, `NAME=VALUE` (repeat for more): checked
        /// against the job's `params`; the command sees `HAJOBS_PARAM_<NAME>`.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// The trigger's payload, JSON (the job's `payload` must allow one):
        /// the command reads it on its standard input.
        #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
        payload: Option<String>,
        /// The payload read from a file (`-`: standard input), JSON.
        #[arg(long, value_name = "FILE")]
        payload_file: Option<std::path::PathBuf>,
        /// Run it once at this time instead (RFC 3339, e.g.
        /// 2026-12-01T02:00:00Z): recorded in Cassandra, fired by one replica
        /// at that time; `hajobs scheduled` lists it.
        #[arg(long, value_name = "TIME", conflicts_with_all = ["wait", "here", "in"])]
        at: Option<String>,
        /// Run it once this long from now instead (e.g. 90m, 2h).
        #[arg(long = "in", id = "in", value_name = "DURATION", conflicts_with_all = ["wait", "here"])]
        r#in: Option<String>,
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
    /// The one-time triggers scheduled with `hajobs trigger JOB --at | --in`,
    /// due from an hour ago on, soonest first: due time, job type, trigger
    /// id, state (pending, started, skipped, removed…), by whom. `hajobs
    /// scheduled rm TRIGGER_ID` removes one before it fires.
    #[command(args_conflicts_with_subcommands = true)]
    Scheduled {
        /// One job type (default: every job).
        job: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<ScheduledCommand>,
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
pub(crate) enum ScheduledCommand {
    /// Remove a scheduled trigger before it fires (recorded in its row and
    /// as a SKIPPED status of the trigger, naming you). Refused once a
    /// replica claimed it.
    Rm {
        /// The trigger id, as `hajobs scheduled` shows it.
        trigger_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Remove a queued trigger (an operator's decision, recorded as a
    /// SKIPPED status of the trigger naming you). Refused once a replica
    /// claimed it to start.
    Rm {
        /// The trigger id, as `hajobs queue` shows it.
        trigger_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkCommand {
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
pub(crate) enum SchemaCommand {
    /// Create the keyspace and apply every migration not yet applied (idempotent).
    Apply(ReplicationArg),
    /// Print the whole schema as CQL, for applying by hand.
    Print(ReplicationArg),
    /// Compare the live tables with what hajobs needs; print each difference
    /// and the statement that fixes it (exit 1 when anything differs).
    Check,
}

#[derive(Debug, Args)]
pub(crate) struct ReplicationArg {
    /// Keyspace replication: `simple:RF` (SimpleStrategy) or `DC:RF[,DC:RF…]`
    /// (NetworkTopologyStrategy). Used only when the keyspace is created.
    /// Default: the file's `cassandra.replication`, else `simple:1`.
    #[arg(long)]
    pub(crate) replication: Option<String>,
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
        Settings::load(self.config.as_deref(), &self.overrides())
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
            Command::Schema(SchemaCommand::Print(r)) => cmd::schema::print(&settings, r)?,
            Command::Schema(SchemaCommand::Apply(r)) => cmd::schema::apply(&settings, r).await?,
            Command::Schema(SchemaCommand::Check) => cmd::schema::check(&settings).await?,
            Command::Serve => crate::daemon::serve(&settings).await?,
            Command::Completions { .. } | Command::Openapi => {
                unreachable!("answered before the settings")
            }
            Command::Jobs { json } => cmd::jobs::jobs(&settings, json).await?,
            Command::Watch { job, wait } => cmd::trigger::watch(&settings, &job, wait).await?,
            Command::Trigger {
                job,
                wait,
                here,
                params,
                payload,
                payload_file,
                at,
                r#in,
            } => {
                let given = cmd::trigger::given(&params, payload, payload_file.as_deref())?;
                if at.is_some() || r#in.is_some() {
                    cmd::trigger::schedule(&settings, &job, given, at, r#in).await?
                } else if here {
                    cmd::trigger::here(&settings, &job, given).await?
                } else {
                    cmd::trigger::through_cluster(&settings, job, wait, given).await?
                }
            }
            Command::Cancel { job } => cmd::trigger::cancel(&settings, job).await?,
            Command::Status { job, limit, json } => {
                cmd::jobs::status(&settings, job, limit, json).await?
            }
            Command::History { job, job_id } => cmd::jobs::history(&settings, job, job_id).await?,
            Command::Stats { job, json } => cmd::jobs::stats(&settings, job, json).await?,
            Command::Nodes { json } => cmd::cluster::nodes(&settings, json).await?,
            Command::Locks { json } => cmd::cluster::locks(&settings, json).await?,
            Command::Work(command) => cmd::work::run(&settings, command).await?,
            Command::Scheduled {
                command: Some(ScheduledCommand::Rm { trigger_id }),
                ..
            } => cmd::trigger::scheduled_remove(&settings, trigger_id).await?,
            Command::Scheduled { job, json, .. } => {
                cmd::trigger::scheduled(&settings, job, json).await?
            }
            Command::Queue {
                command: Some(QueueCommand::Rm { trigger_id }),
                ..
            } => cmd::cluster::queue_remove(&settings, trigger_id).await?,
            Command::Queue {
                lock_type, json, ..
            } => cmd::cluster::queue(&settings, lock_type, json).await?,
            Command::Unlock {
                lock_type,
                wait,
                force,
            } => cmd::cluster::unlock(&settings, lock_type, wait, force).await?,
        }
        Ok(())
    }
}
