//! The daemon's TOML configuration: raw file types ([`RawConfig`]) and the
//! validated [`DaemonConfig`]. Every error names the file, the line, the
//! field and the job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hajobs_core::schema::Replication;
use hajobs_core::{CassandraConfig, NodeId, Secret};
use hajobs_scheduler::{JobSpec, KeepRunning, LockSpec, MissedRuns, RetryPolicy};
use hajobs_supervisor::SupervisorConfig;
use serde::Deserialize;
use toml::Spanned;

mod cassandra;
pub(crate) mod http;
mod params;
mod steps;

pub(crate) use steps::StepConfig;

pub(crate) use http::HttpConfig;

/// The default time to wait for running jobs at shutdown.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    #[serde(default)]
    cassandra: cassandra::RawCassandra,
    #[serde(default)]
    supervisor: RawSupervisor,
    http: Option<http::RawHttp>,
    #[serde(default, rename = "job")]
    jobs: Vec<RawJob>,
    #[serde(default, rename = "lock")]
    locks: Vec<RawLock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    name: Spanned<String>,
    capacity: Option<Spanned<u32>>,
    min_interval: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    enabled: Option<bool>,
    interval: Option<Spanned<String>>,
    retrigger_backoff: Option<Spanned<String>>,
    sweep_period: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    lock_type: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    /// `[[job.step]]`: commands run in order under the job's one lease.
    step: Option<Spanned<Vec<steps::RawStep>>>,
    cron: Option<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retrigger_count: Option<u32>,
    lease_ttl: Option<Spanned<String>>,
    missed_runs: Option<Spanned<String>>,
    missed_runs_threshold: Option<Spanned<String>>,
    on_locked: Option<Spanned<String>>,
    lock_wait_timeout: Option<Spanned<String>>,
    concurrency: Option<Spanned<String>>,
    retry_count: Option<u32>,
    missed_runs_cap: Option<Spanned<u32>>,
    consistency: Option<Spanned<String>>,
    starting_deadline: Option<Spanned<String>>,
    retry_backoff: Option<Spanned<String>>,
    retry_factor: Option<Spanned<f64>>,
    retry_max_backoff: Option<Spanned<String>>,
    keep_running: Option<Spanned<bool>>,
    checkpoints: Option<Spanned<bool>>,
    on_success: Option<Spanned<Vec<String>>>,
    on_failure: Option<Spanned<Vec<String>>>,
    params: Option<Spanned<BTreeMap<String, params::RawParam>>>,
    payload: Option<Spanned<String>>,
    cron_params: Option<Spanned<BTreeMap<String, String>>>,
    restart_backoff: Option<Spanned<String>>,
    restart_max_backoff: Option<Spanned<String>>,
    working_dir: Option<PathBuf>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    inherit_env: Option<Spanned<Vec<String>>>,
}

/// `keep_running = true` with its restart backoff; the backoff fields
/// without it are refused.
fn keep_running(
    src: &Source<'_>,
    name: &str,
    job: &RawJob,
    spec: JobSpec,
) -> Result<JobSpec, ConfigError> {
    let on = job.keep_running.as_ref().is_some_and(|k| *k.get_ref());
    if !on {
        if let Some(b) = job
            .restart_backoff
            .as_ref()
            .or(job.restart_max_backoff.as_ref())
        {
            let field = if job.restart_backoff.is_some() {
                "restart_backoff"
            } else {
                "restart_max_backoff"
            };
            return Err(src.error(b, Some(name), field, "given without `keep_running = true`"));
        }
        return Ok(spec);
    }
    let mut policy = KeepRunning::default();
    if let Some(b) = &job.restart_backoff {
        policy.restart_backoff = src.duration(b, Some(name), "restart_backoff")?;
    }
    if let Some(m) = &job.restart_max_backoff {
        policy.restart_max_backoff = src.duration(m, Some(name), "restart_max_backoff")?;
    }
    let (at, field) = match (&job.restart_backoff, &job.restart_max_backoff) {
        (Some(b), _) => (b.span(), "restart_backoff"),
        (None, Some(m)) => (m.span(), "restart_max_backoff"),
        (None, None) => (job.name.span(), "keep_running"),
    };
    spec.keep_running(policy).map_err(|e| {
        let here = Spanned::new(at, ());
        match e {
            hajobs_scheduler::ManagerError::Policy { problem, .. } => {
                src.error(&here, Some(name), field, problem)
            }
            other => src.error(&here, Some(name), field, other),
        }
    })
}

/// A job of the daemon: a command run under its lease.
#[derive(Debug, Clone)]
pub(crate) struct CommandJobConfig {
    pub(crate) spec: JobSpec,
    /// The command (for a job with steps: the first step's, for display).
    pub(crate) command: Vec<String>,
    /// `[[job.step]]`: commands run in order within one attempt.
    pub(crate) steps: Vec<StepConfig>,
    pub(crate) working_dir: Option<PathBuf>,
    /// Set in the command's environment (see [`crate::job_env`]).
    pub(crate) env: BTreeMap<String, String>,
    /// The daemon's variables the command inherits besides the base ones.
    pub(crate) inherit_env: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    pub(crate) node: NodeId,
    pub(crate) cassandra: CassandraConfig,
    pub(crate) replication: Replication,
    pub(crate) supervisor: Option<SupervisorConfig>,
    pub(crate) jobs: Vec<CommandJobConfig>,
    /// `[[lock]]`: lock types with a capacity or a rate limit.
    pub(crate) locks: Vec<LockSpec>,
    pub(crate) shutdown_grace: Duration,
    /// The HTTP API, page and metrics; off unless configured.
    pub(crate) http: Option<HttpConfig>,
}

/// Overrides from flags and environment, applied over the file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub(crate) nodes: Option<String>,
    pub(crate) keyspace: Option<String>,
    pub(crate) datacenter: Option<String>,
    pub(crate) node_id: Option<String>,
    /// `HAJOBS_HTTP_LISTEN`: turns the HTTP server on at this address.
    pub(crate) http_listen: Option<String>,
    /// `HAJOBS_HTTP_ADVERTISE`: the address other replicas reach this one
    /// at, over the file's `http.advertise` (a pod's IP, say).
    pub(crate) http_advertise: Option<String>,
    /// `HAJOBS_ADMIN_TOKEN`: the admin token, over the file's.
    pub(crate) admin_token: Option<Secret>,
    /// `HAJOBS_READ_TOKEN`: the read token, over the file's.
    pub(crate) read_token: Option<Secret>,
    /// `HAJOBS_CASSANDRA_USER`.
    pub(crate) cassandra_user: Option<String>,
    /// `HAJOBS_CASSANDRA_PASSWORD`.
    pub(crate) cassandra_password: Option<Secret>,
    /// `HAJOBS_CASSANDRA_PASSWORD_FILE`: the password is its first line.
    pub(crate) cassandra_password_file: Option<PathBuf>,
    /// `HAJOBS_CASSANDRA_TLS_CA`: turns TLS on with this CA file.
    pub(crate) tls_ca: Option<PathBuf>,
    /// `HAJOBS_CASSANDRA_TLS_CERT`: the client certificate.
    pub(crate) tls_cert: Option<PathBuf>,
    /// `HAJOBS_CASSANDRA_TLS_KEY`: the client certificate's key.
    pub(crate) tls_key: Option<PathBuf>,
    /// `HAJOBS_CASSANDRA_TLS_VERIFY_HOSTNAME`: `true` or `false`.
    pub(crate) tls_verify_hostname: Option<String>,
}

impl Overrides {
    /// The process environment's settings (the binary's edge); flags are
    /// set over them by the caller.
    pub(crate) fn from_environment() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        Self {
            read_token: var("HAJOBS_READ_TOKEN").map(Secret::new),
            http_advertise: var("HAJOBS_HTTP_ADVERTISE"),
            cassandra_user: var("HAJOBS_CASSANDRA_USER"),
            cassandra_password: var("HAJOBS_CASSANDRA_PASSWORD").map(Secret::new),
            cassandra_password_file: var("HAJOBS_CASSANDRA_PASSWORD_FILE").map(PathBuf::from),
            tls_ca: var("HAJOBS_CASSANDRA_TLS_CA").map(PathBuf::from),
            tls_cert: var("HAJOBS_CASSANDRA_TLS_CERT").map(PathBuf::from),
            tls_key: var("HAJOBS_CASSANDRA_TLS_KEY").map(PathBuf::from),
            tls_verify_hostname: var("HAJOBS_CASSANDRA_TLS_VERIFY_HOSTNAME"),
            ..Self::default()
        }
    }
}

/// A configuration error, placed in the file.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// `FILE:LINE: [job `NAME`: ]field `FIELD`: PROBLEM`.
    fn error<T>(
        &self,
        at: &Spanned<T>,
        job: Option<&str>,
        field: &str,
        problem: impl std::fmt::Display,
    ) -> ConfigError {
        let job = job
            .map(|j| format!("job `{}`: ", shown(j)))
            .unwrap_or_default();
        ConfigError(format!(
            "{}:{}: {job}field `{field}`: {problem}",
            self.path.display(),
            self.line(at.span())
        ))
    }

    /// One of the words of a policy enum (`on_locked = "queue"`), named
    /// by the enum's own serde form: the one map between word and value.
    pub(crate) fn choice<T: serde::de::DeserializeOwned>(
        &self,
        value: &Spanned<String>,
        job: Option<&str>,
        field: &str,
    ) -> Result<T, ConfigError> {
        let word = value.get_ref().trim();
        T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(word))
            .map_err(|e| {
                let expected = e.to_string();
                let expected = expected
                    .split_once(", expected ")
                    .map_or(expected.as_str(), |(_, x)| x);
                self.error(value, job, field, format!("`{word}`: expected {expected}"))
            })
    }

    fn duration(
        &self,
        value: &Spanned<String>,
        job: Option<&str>,
        field: &str,
    ) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            self.error(
                value,
                job,
                field,
                format!(
                    "`{}` is not a duration like `30s` or `5m` ({e})",
                    value.get_ref()
                ),
            )
        })
    }
}

/// Reads and validates `path`, then applies `overrides`.
pub(crate) fn load(path: &Path, overrides: &Overrides) -> Result<DaemonConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "{}: cannot read the configuration: {e}",
            path.display()
        ))
    })?;
    parse(path, &text, overrides)
}

/// Validates the text of a configuration file.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    overrides: &Overrides,
) -> Result<DaemonConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(":{l}")).unwrap_or_default();
        ConfigError(format!("{}{at}: {}", path.display(), e.message()))
    })?;
    let src = Source { path, text };

    let node_name = match (&overrides.node_id, &raw.node_id) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n.get_ref().clone(),
        (None, None) => default_node_id(),
    };
    let node = NodeId::new(node_name.clone()).map_err(|e| match &raw.node_id {
        Some(at) if overrides.node_id.is_none() => src.error(at, None, "node_id", e),
        _ => ConfigError(format!("node id `{node_name}`: {e}")),
    })?;

    let c = &raw.cassandra;
    let cassandra = cassandra::cassandra_config(&src, c, overrides)?;
    let replication = match &c.replication {
        Some(r) => Replication::parse(r.get_ref())
            .map_err(|e| src.error(r, None, "cassandra.replication", e))?,
        None => Replication::default(),
    };

    let supervisor = if raw.supervisor.enabled.unwrap_or(true) {
        let mut s = SupervisorConfig::default();
        if let Some(i) = &raw.supervisor.interval {
            s = s
                .with_interval(src.duration(i, None, "supervisor.interval")?)
                .map_err(|e| src.error(i, None, "supervisor.interval", e))?;
        }
        if let Some(b) = &raw.supervisor.retrigger_backoff {
            s = s.with_retrigger_backoff(src.duration(b, None, "supervisor.retrigger_backoff")?);
        }
        if let Some(p) = &raw.supervisor.sweep_period {
            s = s
                .with_sweep_period(src.duration(p, None, "supervisor.sweep_period")?)
                .map_err(|e| src.error(p, None, "supervisor.sweep_period", e))?;
        }
        Some(s)
    } else {
        None
    };

    let mut locks: BTreeMap<String, LockSpec> = BTreeMap::new();
    for lock in &raw.locks {
        let name = lock.name.get_ref();
        let field = |f: &str| format!("lock.{f}");
        let mut spec =
            LockSpec::new(name).map_err(|e| src.error(&lock.name, None, &field("name"), e))?;
        if let Some(c) = &lock.capacity {
            spec = spec
                .capacity(*c.get_ref())
                .map_err(|e| src.error(c, None, &field("capacity"), e))?;
        }
        if let Some(i) = &lock.min_interval {
            spec = spec
                .min_interval(src.duration(i, None, &field("min_interval"))?)
                .map_err(|e| src.error(i, None, &field("min_interval"), e))?;
        }
        if locks.insert(name.clone(), spec).is_some() {
            return Err(src.error(
                &lock.name,
                None,
                &field("name"),
                format!("lock type `{}` is configured twice", shown(name)),
            ));
        }
    }
    let mut jobs = Vec::new();
    let mut seen = BTreeMap::new();
    for job in &raw.jobs {
        let name = job.name.get_ref();
        if let Some(first) = seen.insert(name.clone(), src.line(job.name.span())) {
            return Err(src.error(
                &job.name,
                Some(name),
                "name",
                format!(
                    "job `{}` is defined twice (first on line {first})",
                    shown(name)
                ),
            ));
        }
        let config = job_config(&src, job)?;
        let capacity = locks
            .get(config.spec.lock_type.as_str())
            .map_or(1, |l| l.capacity);
        if let Some(problem) = config.spec.concurrency_problem(capacity) {
            let at = job.concurrency.as_ref().unwrap_or(&job.name);
            return Err(src.error(at, Some(name), "concurrency", problem));
        }
        if let (Some(at), Some(problem)) = (
            &job.keep_running,
            config.spec.keep_running_problem(capacity),
        ) {
            return Err(src.error(at, Some(name), "keep_running", problem));
        }
        if let (Some(at), Some(problem)) =
            (&job.checkpoints, config.spec.checkpoints_problem(capacity))
        {
            return Err(src.error(at, Some(name), "checkpoints", problem));
        }
        jobs.push(config);
    }
    // Follow-ups name configured jobs and never lead back: one rule, the
    // scheduler's.
    if let Some((job_type, problem)) =
        hajobs_scheduler::follow_ups::follow_up_problem(jobs.iter().map(|j| &j.spec))
    {
        let raw_job = raw
            .jobs
            .iter()
            .find(|j| j.name.get_ref() == job_type.as_str())
            .expect("a configured job");
        let (field, at) = match (&raw_job.on_success, &raw_job.on_failure) {
            (Some(s), _) if problem.contains("on_success") || raw_job.on_failure.is_none() => {
                ("on_success", s.span())
            }
            (_, Some(f)) => ("on_failure", f.span()),
            _ => ("name", raw_job.name.span()),
        };
        return Err(src.error(
            &Spanned::new(at, ()),
            Some(job_type.as_str()),
            field,
            problem,
        ));
    }
    let shutdown_grace = match &raw.shutdown_grace {
        Some(g) => src.duration(g, None, "shutdown_grace")?,
        None => DEFAULT_SHUTDOWN_GRACE,
    };
    let http = http::http_config(&src, raw.http.as_ref(), overrides)?;
    Ok(DaemonConfig {
        node,
        cassandra,
        replication,
        supervisor,
        jobs,
        locks: locks.into_values().collect(),
        shutdown_grace,
        http,
    })
}

/// A name as errors show it: at most [`SHOWN_NAME`] characters, control
/// characters escaped, so that a 10 KB or binary name cannot flood a log.
fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(SHOWN_NAME)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > SHOWN_NAME {
        out.push('…');
    }
    out
}

/// How many characters of a name an error shows.
const SHOWN_NAME: usize = 64;

fn job_config(src: &Source<'_>, job: &RawJob) -> Result<CommandJobConfig, ConfigError> {
    let name = job.name.get_ref().as_str();
    let name_shown = shown(name);
    let field_err = |at_span: &dyn Fn() -> usize, field: &str, e: &dyn std::fmt::Display| {
        ConfigError(format!(
            "{}:{}: job `{name_shown}`: field `{field}`: {e}",
            src.path.display(),
            at_span()
        ))
    };
    let lock_type = job
        .lock_type
        .as_ref()
        .map(|l| l.get_ref().as_str())
        .unwrap_or(name);
    let mut spec = JobSpec::new(name, lock_type).map_err(|e| {
        let e: Box<dyn std::fmt::Display> = match e {
            hajobs_scheduler::ManagerError::InvalidSpec { source, .. } => Box::new(source),
            other => Box::new(other),
        };
        let at = job
            .lock_type
            .as_ref()
            .map(|l| src.line(l.span()))
            .unwrap_or_else(|| src.line(job.name.span()));
        field_err(
            &|| at,
            if job.lock_type.is_some() {
                "lock_type"
            } else {
                "name"
            },
            &e,
        )
    })?;
    let (command, steps) = steps::command_or_steps(src, name, job)?;
    if let Some(cron) = &job.cron {
        let tz = job
            .time_zone
            .as_ref()
            .map(|t| t.get_ref().as_str())
            .unwrap_or("UTC");
        spec = spec.cron(cron.get_ref(), tz).map_err(|e| match &e {
            hajobs_scheduler::ManagerError::InvalidCron { problem, .. }
                if problem.starts_with("unknown time zone") =>
            {
                let at = job
                    .time_zone
                    .as_ref()
                    .map(|t| src.line(t.span()))
                    .unwrap_or_else(|| src.line(cron.span()));
                field_err(&|| at, "time_zone", problem)
            }
            hajobs_scheduler::ManagerError::InvalidCron { problem, .. } => {
                src.error(cron, Some(name), "cron", problem)
            }
            other => src.error(cron, Some(name), "cron", other),
        })?;
    } else if let Some(tz) = &job.time_zone {
        return Err(src.error(tz, Some(name), "time_zone", "given without `cron`"));
    }
    if let Some(t) = &job.timeout {
        spec = spec
            .timeout(src.duration(t, Some(name), "timeout")?)
            .map_err(|e| src.error(t, Some(name), "timeout", e))?;
    }
    if let Some(n) = job.retrigger_count {
        spec = spec.retrigger_count(n);
    }
    if let Some(t) = &job.lease_ttl {
        spec = spec
            .lease_ttl(src.duration(t, Some(name), "lease_ttl")?)
            .map_err(|e| match e {
                hajobs_scheduler::ManagerError::InvalidSpec { source, .. } => {
                    src.error(t, Some(name), "lease_ttl", source)
                }
                other => src.error(t, Some(name), "lease_ttl", other),
            })?;
    }
    let threshold = match &job.missed_runs_threshold {
        Some(t) => Some(src.duration(t, Some(name), "missed_runs_threshold")?),
        None => None,
    };
    if let Some(m) = &job.missed_runs {
        spec = spec.missed_runs(match m.get_ref().as_str() {
            "skip" => MissedRuns::Skip,
            "run_once" => MissedRuns::RunOnce {
                threshold: threshold.unwrap_or(Duration::from_secs(1800)),
            },
            "all" => MissedRuns::All {
                cap: match &job.missed_runs_cap {
                    Some(c) if *c.get_ref() == 0 => {
                        return Err(src.error(
                            c,
                            Some(name),
                            "missed_runs_cap",
                            "0: at least one missed firing runs with `all` (use `skip` for none)",
                        ));
                    }
                    Some(c) => *c.get_ref(),
                    None => 10,
                },
            },
            other => {
                return Err(src.error(
                    m,
                    Some(name),
                    "missed_runs",
                    format!("`{other}`: expected `skip`, `run_once` or `all`"),
                ));
            }
        });
    } else if let Some(threshold) = threshold {
        spec = spec.missed_runs(MissedRuns::RunOnce { threshold });
    }
    if let Some(c) = &job.consistency {
        spec = spec.consistency(src.choice(c, Some(name), "consistency")?);
    }
    if let Some(d) = &job.starting_deadline {
        spec = spec
            .starting_deadline(src.duration(d, Some(name), "starting_deadline")?)
            .map_err(|e| match e {
                hajobs_scheduler::ManagerError::InvalidSpec { source, .. } => {
                    src.error(d, Some(name), "starting_deadline", source)
                }
                other => src.error(d, Some(name), "starting_deadline", other),
            })?;
    }
    if let Some(o) = &job.on_locked {
        spec = spec.on_locked(src.choice(o, Some(name), "on_locked")?);
    }
    if job.retry_count.is_some()
        || job.retry_backoff.is_some()
        || job.retry_factor.is_some()
        || job.retry_max_backoff.is_some()
    {
        let mut retry = RetryPolicy {
            count: job.retry_count.unwrap_or(0),
            ..RetryPolicy::default()
        };
        if let Some(b) = &job.retry_backoff {
            retry.backoff = src.duration(b, Some(name), "retry_backoff")?;
        }
        if let Some(m) = &job.retry_max_backoff {
            retry.max_backoff = src.duration(m, Some(name), "retry_max_backoff")?;
        }
        if let Some(f) = &job.retry_factor {
            retry.factor = *f.get_ref();
        }
        let at = job
            .retry_factor
            .as_ref()
            .map(|f| f.span())
            .or(job.retry_backoff.as_ref().map(|b| b.span()))
            .unwrap_or_else(|| job.name.span());
        spec = spec.retries(retry).map_err(|e| {
            let here = Spanned::new(at, ());
            match e {
                hajobs_scheduler::ManagerError::Policy { problem, .. } => {
                    src.error(&here, Some(name), "retry_factor", problem)
                }
                other => src.error(&here, Some(name), "retry_factor", other),
            }
        })?;
    }
    if let Some(c) = &job.concurrency {
        spec = spec.concurrency(src.choice(c, Some(name), "concurrency")?);
    }
    spec = keep_running(src, name, job, spec)?;
    let args = params::args_spec(
        src,
        name,
        params::RawArgs {
            params: job.params.as_ref(),
            payload: job.payload.as_ref(),
            cron_params: job.cron_params.as_ref(),
        },
        job.cron.is_some(),
    )?;
    spec = spec.args(args);
    if let Some(c) = &job.checkpoints {
        spec = spec.checkpoints(*c.get_ref());
    }
    if !steps.is_empty() {
        // A failover resumes at the first unfinished step: the end of each
        // is a checkpoint.
        spec = spec.checkpoints(true);
    }
    for (field, list) in [
        ("on_success", &job.on_success),
        ("on_failure", &job.on_failure),
    ] {
        let Some(list) = list else { continue };
        let names: Vec<&str> = list.get_ref().iter().map(String::as_str).collect();
        let set = if field == "on_success" {
            JobSpec::on_success
        } else {
            JobSpec::on_failure
        };
        spec = set(spec, &names).map_err(|e| match e {
            hajobs_scheduler::ManagerError::InvalidSpec { source, .. } => {
                src.error(list, Some(name), field, source)
            }
            other => src.error(list, Some(name), field, other),
        })?;
    }
    if let Some(t) = &job.lock_wait_timeout {
        spec = spec
            .lock_wait_timeout(src.duration(t, Some(name), "lock_wait_timeout")?)
            .map_err(|e| match e {
                hajobs_scheduler::ManagerError::InvalidSpec { source, .. } => {
                    src.error(t, Some(name), "lock_wait_timeout", source)
                }
                other => src.error(t, Some(name), "lock_wait_timeout", other),
            })?;
    }
    let env = job
        .env
        .as_ref()
        .map(|e| e.get_ref().clone())
        .unwrap_or_default();
    if let (Some(at), Some(problem)) =
        (&job.env, env.keys().find_map(|k| crate::job_env::refuse(k)))
    {
        return Err(src.error(at, Some(name), "env", problem));
    }
    let inherit_env = job
        .inherit_env
        .as_ref()
        .map(|i| i.get_ref().clone())
        .unwrap_or_default();
    if let (Some(at), Some(problem)) = (
        &job.inherit_env,
        inherit_env.iter().find_map(|k| crate::job_env::refuse(k)),
    ) {
        return Err(src.error(at, Some(name), "inherit_env", problem));
    }
    Ok(CommandJobConfig {
        spec,
        command,
        steps,
        working_dir: job.working_dir.clone(),
        env,
        inherit_env,
    })
}

/// The host name, or `hajobs-PID` when there is none.
fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("hajobs-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<DaemonConfig, String> {
        parse(Path::new("jobs.toml"), text, &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_is_read() {
        let c = check(
            r#"
node_id = "host-1"
shutdown_grace = "10s"
[cassandra]
nodes = ["10.0.0.1:9042", "10.0.0.2:9042"]
keyspace = "jobs"
consistency = "global"
[supervisor]
interval = "1s"
[[job]]
name = "import"
command = ["sh", "-c", "echo hi"]
cron = "0 */5 * * * *"
time_zone = "Europe/Berlin"
timeout = "10m"
lease_ttl = "20s"
retrigger_count = 3
missed_runs = "skip"
[[job]]
name = "consumer"
command = ["consume"]
keep_running = true
restart_max_backoff = "2m"
"#,
        )
        .unwrap();
        assert_eq!(
            c.jobs[1].spec.keep_running,
            Some(KeepRunning {
                restart_backoff: Duration::from_secs(1),
                restart_max_backoff: Duration::from_secs(120),
            })
        );
        assert_eq!(c.jobs[0].spec.keep_running, None);
        assert_eq!(c.node.as_str(), "host-1");
        assert_eq!(c.cassandra.keyspace, "jobs");
        assert_eq!(c.cassandra.contact_points.len(), 2);
        assert_eq!(c.jobs[0].spec.lock_type.as_str(), "import");
        assert_eq!(c.jobs[0].spec.retrigger_count, 3);
        assert_eq!(c.jobs[0].spec.timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.jobs[0].spec.missed_runs, MissedRuns::Skip);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_file_line_field_and_job() {
        let cases = [
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ncron = \"* * *\"\n",
                "jobs.toml:4: job `a`: field `cron`: invalid cron `* * *`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ncron = \"0 0 * * * *\"\ntime_zone = \"Moon/Base\"\n",
                "jobs.toml:5: job `a`: field `time_zone`: unknown time zone `Moon/Base`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = []\n",
                "jobs.toml:3: job `a`: field `command`: is empty",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"soon\"\n",
                "jobs.toml:4: job `a`: field `timeout`: `soon` is not a duration",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nlease_ttl = \"1s\"\n",
                "jobs.toml:4: job `a`: field `lease_ttl`: lease TTL 1s is invalid",
            ),
            (
                "[[job]]\nname = \"\"\ncommand = [\"x\"]\n",
                "jobs.toml:2: job ``: field `name`: job type is empty",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\n[[job]]\nname = \"a\"\ncommand = [\"y\"]\n",
                "jobs.toml:5: job `a`: field `name`: job `a` is defined twice (first on line 2)",
            ),
            (
                "[[job]]\nname = \"a\"\ncomand = [\"x\"]\n",
                "jobs.toml:3: unknown field `comand`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nparams = { date = { pattern = \"(\" } }\n",
                "jobs.toml:4: job `a`: field `params.date.pattern`: pattern `(` is not a valid regular expression",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nparams = { Date = {} }\n",
                "jobs.toml:4: job `a`: field `params`: parameter name `Date` is not valid",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nparams = { region = { default = \"europe\", pattern = \"[a-z]{2}\" } }\n",
                "jobs.toml:4: job `a`: field `params`: the default of parameter `region`: the value does not match its pattern `[a-z]{2}`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nparams = { date = { required = true, default = \"x\" } }\n",
                "jobs.toml:4: job `a`: field `params.date`: `required = true` with a `default`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nparams = { date = { requird = true } }\n",
                "jobs.toml:4: unknown field `requird`, expected one of `required`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\npayload = \"maybe\"\n",
                "jobs.toml:4: job `a`: field `payload`: `maybe`: expected one of `forbidden`, `optional`, `required`",
            ),
            (
                "[[job]]\nname = \"a\"\n",
                "jobs.toml:2: job `a`: field `command`: missing: give `command = [\"program\", …]` or `[[job.step]]` entries",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\n[[job.step]]\nname = \"s\"\ncommand = [\"y\"]\n",
                "jobs.toml:3: job `a`: field `command`: given with `[[job.step]]`",
            ),
            (
                "[[job]]\nname = \"a\"\n[[job.step]]\nname = \"s\"\ncommand = [\"y\"]\n[[job.step]]\nname = \"s\"\ncommand = [\"z\"]\n",
                "jobs.toml:3: job `a`: field `step[1].name`: step `s` is defined twice",
            ),
            (
                "[[job]]\nname = \"a\"\n[[job.step]]\nname = \"s\"\ncommand = [\"y\"]\ntimeout = \"soon\"\n",
                "jobs.toml:6: job `a`: field `step[0].timeout`: `soon` is not a duration",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\non_success = [\"b\"]\n",
                "jobs.toml:4: job `a`: field `on_success`: on_success names `b`, which is not a configured job",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\non_failure = [\"b\"]\n[[job]]\nname = \"b\"\ncommand = [\"x\"]\non_success = [\"a\"]\n",
                "jobs.toml:4: job `a`: field `on_failure`: its follow-ups lead back to it: a → b → a",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ncron_params = { date = \"x\" }\n",
                "jobs.toml:4: job `a`: field `cron_params`: given without `cron`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ncron = \"0 0 * * * *\"\nparams = { date = { required = true } }\n",
                "jobs.toml:5: job `a`: field `params`: missing required parameter `date`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\ncron = \"0 0 * * * *\"\nparams = { date = { required = true } }\ncron_params = { date = \"1\", zone = \"x\" }\n",
                "jobs.toml:6: job `a`: field `cron_params`: unknown parameter `zone`",
            ),
            (
                "[cassandra]\nconsistency = \"strong\"\n",
                "jobs.toml:2: field `cassandra.consistency`: `strong`: expected `local` or `global`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nmissed_runs = \"always\"\n",
                "jobs.toml:4: job `a`: field `missed_runs`: `always`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nretry_count = 2\nretry_factor = 0.5\n",
                "jobs.toml:5: job `a`: field `retry_factor`: retry backoff 10s with factor 0.5",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nconcurrency = \"allow\"\n",
                "jobs.toml:4: job `a`: field `concurrency`: `allow` needs a lock type with capacity > 1",
            ),
            (
                "[[lock]]\nname = \"a\"\ncapacity = 3\n[[job]]\nname = \"a\"\ncommand = [\"x\"]\n",
                "jobs.toml:5: job `a`: field `concurrency`: lock type `a` has capacity 3",
            ),
            (
                "[[lock]]\nname = \"a\"\ncapacity = 0\n",
                "jobs.toml:3: field `lock.capacity`: lock type `a`: capacity 0 is out of range: 1 to 64",
            ),
            (
                "[[lock]]\nname = \"a\"\nmin_interval = \"1500ms\"\n",
                "jobs.toml:3: field `lock.min_interval`: lock type `a`: min_interval 1.5s is invalid",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nkeep_running = true\ncron = \"* * * * * *\"\n",
                "jobs.toml:4: job `a`: field `keep_running`: an always-on job (keep_running) cannot have a cron schedule",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nrestart_backoff = \"5s\"\n",
                "jobs.toml:4: job `a`: field `restart_backoff`: given without `keep_running = true`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nkeep_running = true\nrestart_backoff = \"5s\"\nrestart_max_backoff = \"1s\"\n",
                "jobs.toml:5: job `a`: field `restart_backoff`: restart backoff 5s up to 1s",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\non_locked = \"wait\"\n",
                "jobs.toml:4: job `a`: field `on_locked`: `wait`: expected `skip` or `queue`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = [\"x\"]\nlock_wait_timeout = \"0s\"\n",
                "jobs.toml:4: job `a`: field `lock_wait_timeout`: lock wait timeout 0ns is invalid",
            ),
            ("[[job]\n", "jobs.toml:1:"),
            (
                "[[job]]\nname = \"a\\u0007b\"\ncommand = [\"x\"]\n",
                "jobs.toml:2: job `a\\u{7}b`: field `name`: job type \"a\\u{7}b\" contains a control character",
            ),
        ];
        for (text, expected) in cases {
            let err = check(text).unwrap_err();
            assert!(
                err.starts_with(expected),
                "for {text:?}\n got: {err}\nwant: {expected}…"
            );
        }
    }

    #[test]
    fn a_huge_name_is_cut_in_errors_and_odd_names_are_fine() {
        let huge = "x".repeat(10_000);
        let err = check(&format!("[[job]]\nname = \"{huge}\"\ncommand = [\"x\"]\n")).unwrap_err();
        assert!(err.len() < 400, "error of {} bytes: {err}", err.len());
        assert!(
            err.contains("is 10000 bytes long; the limit is 256"),
            "{err}"
        );
        let c = parse(
            Path::new("f"),
            "[[job]]\nname = \"a\\\"b 'c'\"\ncommand = [\"x\"]\n[[job]]\nname = \"ünï cödé ✓\"\ncommand = [\"x\"]\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.jobs[0].spec.job_type.as_str(), "a\"b 'c'");
        assert_eq!(c.jobs[1].spec.job_type.as_str(), "ünï cödé ✓");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../deploy/examples/hajobs.toml");
        let c = parse(
            Path::new("deploy/examples/hajobs.toml"),
            text,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.jobs.len(), 6);
        assert!(
            c.jobs[3].spec.keep_running.is_some(),
            "the always-on example"
        );
        assert_eq!(
            c.jobs[1].spec.lock_type, c.jobs[2].spec.lock_type,
            "report and cleanup share a lock"
        );
        let http = c.http.expect("the example serves the page");
        assert_eq!(http.listen.to_string(), http::DEFAULT_HTTP_LISTEN);
        assert!(http.admin_token.is_none());
    }

    #[test]
    fn http_section_errors_are_placed_and_the_environment_wins() {
        let err = parse(
            Path::new("f.toml"),
            "[http]\nlisten = \"everywhere\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("f.toml:2: field `http.listen`: `everywhere` is not an address"),
            "{err}"
        );
        let err = parse(
            Path::new("f.toml"),
            "[http]\nadmin_token = \" \"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("f.toml:2: field `http.admin_token`: empty"),
            "{err}"
        );
        let err = parse(
            Path::new("f.toml"),
            "[http]\nport = 1\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `port`"), "{err}");
        for bad in ["node-1", "node-1:0", ":7070", "a b:1", "http://x:1"] {
            let err = parse(
                Path::new("f.toml"),
                &format!("[http]\nadvertise = \"{bad}\"\n"),
                &Overrides::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("f.toml:2: field `http.advertise`: `"),
                "{bad}: {err}"
            );
        }
        let advertised = parse(
            Path::new("f.toml"),
            "[http]\nadvertise = \"node-1.internal:7070\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            advertised.http.unwrap().advertise.as_deref(),
            Some("node-1.internal:7070")
        );
        // The environment wins (a pod's IP through the downward API).
        let from_env = Overrides {
            http_advertise: Some("10.1.2.3:7070".into()),
            ..Overrides::default()
        };
        let advertised = parse(
            Path::new("f.toml"),
            "[http]\nadvertise = \"node-1.internal:7070\"\n",
            &from_env,
        )
        .unwrap();
        assert_eq!(
            advertised.http.unwrap().advertise.as_deref(),
            Some("10.1.2.3:7070")
        );
        let bad = Overrides {
            http_advertise: Some("10.1.2.3".into()),
            ..Overrides::default()
        };
        let err = parse(Path::new("f.toml"), "[http]\n", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("HAJOBS_HTTP_ADVERTISE: `10.1.2.3`"),
            "{err}"
        );
        // Off unless configured; the environment turns it on and wins.
        let off = parse(Path::new("f"), "", &Overrides::default()).unwrap();
        assert!(off.http.is_none());
        let o = Overrides {
            http_listen: Some("127.0.0.2:9999".into()),
            admin_token: Some(Secret::new("from-env")),
            ..Overrides::default()
        };
        let on = parse(
            Path::new("f"),
            "[http]\nlisten = \"127.0.0.1:1\"\nadmin_token = \"from-file\"\n",
            &o,
        )
        .unwrap();
        let http = on.http.unwrap();
        assert_eq!(http.listen.to_string(), "127.0.0.2:9999");
        assert_eq!(
            http.admin_token.as_ref().map(Secret::expose),
            Some("from-env")
        );
        assert!(
            !format!("{http:?}").contains("from-env"),
            "the token is never shown"
        );
        let err = parse(
            Path::new("f"),
            "",
            &Overrides {
                http_listen: Some("x".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("HAJOBS_HTTP_LISTEN: `x` is not an address"),
            "{err}"
        );
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let o = Overrides {
            nodes: Some("127.0.0.9:9042".into()),
            keyspace: Some("other".into()),
            datacenter: None,
            node_id: Some("n2".into()),
            ..Overrides::default()
        };
        let c = parse(
            Path::new("f"),
            "node_id = \"n1\"\n[cassandra]\nkeyspace = \"jobs\"\n",
            &o,
        )
        .unwrap();
        assert_eq!(c.node.as_str(), "n2");
        assert_eq!(c.cassandra.keyspace, "other");
        assert_eq!(
            c.cassandra.contact_points,
            vec!["127.0.0.9:9042".to_owned()]
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Lines a configuration may hold, valid or not, to shuffle.
        const LINES: &[&str] = &[
            "[[job]]",
            "[cassandra]",
            "[supervisor]",
            "name = \"a\"",
            "name = \"\"",
            "name = \"a\\\"b\"",
            "command = [\"x\"]",
            "command = []",
            "command = 3",
            "cron = \"* * * * * *\"",
            "cron = \"61 * * * * *\"",
            "time_zone = \"Europe/Berlin\"",
            "time_zone = \"Moon/Base\"",
            "timeout = \"1h\"",
            "timeout = \"-1s\"",
            "lease_ttl = \"0s\"",
            "lease_ttl = \"99999999999s\"",
            "retrigger_count = -1",
            "retrigger_count = 4294967296",
            "consistency = \"global\"",
            "interval = \"0s\"",
            "enabled = false",
            "shutdown_grace = \"1s\"",
            "nodes = [\"a:1\", 2]",
            "[[job]",
            "= = =",
            "\u{0}",
        ];

        proptest! {
            /// Any text: no panic, and every error names the file.
            #[test]
            fn any_text_parses_or_fails_with_a_placed_error(text in any::<String>()) {
                if let Err(e) = check(&text) {
                    prop_assert!(e.starts_with("jobs.toml"), "{e}");
                }
            }

            /// Shuffled lines of real configurations: the same.
            #[test]
            fn any_mix_of_config_lines_parses_or_fails_with_a_placed_error(
                picks in proptest::collection::vec(0..LINES.len(), 0..24),
            ) {
                let text: String = picks.iter().map(|&i| format!("{}\n", LINES[i])).collect();
                if let Err(e) = check(&text) {
                    prop_assert!(e.starts_with("jobs.toml"), "{e}");
                }
            }
        }
    }

    #[test]
    fn an_empty_token_from_any_source_is_an_error_naming_it() {
        let with = |o: Overrides, text: &str| {
            parse(Path::new("f.toml"), text, &o)
                .unwrap_err()
                .to_string()
        };
        let err = with(
            Overrides {
                admin_token: Some(Secret::new("")),
                ..Overrides::default()
            },
            "[http]\n",
        );
        assert!(
            err.starts_with("HAJOBS_ADMIN_TOKEN (or --admin-token): empty"),
            "{err}"
        );
        let err = with(
            Overrides {
                read_token: Some(Secret::new(" ")),
                ..Overrides::default()
            },
            "[http]\n",
        );
        assert!(err.starts_with("HAJOBS_READ_TOKEN: empty"), "{err}");
        let err = with(Overrides::default(), "[http]\nread_token = \"\"\n");
        assert!(
            err.starts_with("f.toml:2: field `http.read_token`: empty"),
            "{err}"
        );
        let err = with(
            Overrides::default(),
            "[http]\nadmin_token = \"same\"\nread_token = \"same\"\n",
        );
        assert!(
            err.contains("the read token and the admin token are the same"),
            "{err}"
        );
        assert!(!err.contains("same\""), "{err}");
    }

    #[test]
    fn a_listener_reachable_from_other_machines_needs_an_admin_token() {
        let err = parse(
            Path::new("f.toml"),
            "[http]\nlisten = \"0.0.0.0:7070\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "`0.0.0.0:7070` can be reached from other machines but no admin token is set"
            ),
            "{err}"
        );
        for ok in [
            "[http]\nlisten = \"0.0.0.0:7070\"\nadmin_token = \"t\"\n",
            "[http]\nlisten = \"0.0.0.0:7070\"\nallow_unauthenticated = true\n",
            "[http]\nlisten = \"[::1]:7070\"\n",
        ] {
            let c = parse(Path::new("f"), ok, &Overrides::default()).unwrap();
            assert!(c.http.is_some(), "{ok}");
        }
    }

    #[test]
    fn cassandra_credentials_and_tls_come_from_the_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("hajobs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "from-file-secret\n").unwrap();
        let text = format!(
            "[cassandra]\nuser = \"jobs\"\npassword_file = \"{}\"\n[cassandra.tls]\nca_file = \"/etc/ca.pem\"\n",
            pw.display()
        );
        let c = parse(Path::new("f"), &text, &Overrides::default()).unwrap();
        let creds = c.cassandra.credentials.clone().unwrap();
        assert_eq!(creds.user, "jobs");
        assert_eq!(creds.password.expose(), "from-file-secret");
        let tls = c.cassandra.tls.clone().unwrap();
        assert_eq!(tls.ca_file, PathBuf::from("/etc/ca.pem"));
        assert!(tls.verify_hostname && tls.client_cert.is_none());
        // The environment wins.
        let o = Overrides {
            cassandra_user: Some("ops".into()),
            cassandra_password: Some(Secret::new("env-secret")),
            tls_ca: Some("/env/ca.pem".into()),
            tls_cert: Some("/env/c.pem".into()),
            tls_key: Some("/env/k.pem".into()),
            tls_verify_hostname: Some("false".into()),
            ..Overrides::default()
        };
        let c = parse(Path::new("f"), &text, &o).unwrap();
        let creds = c.cassandra.credentials.clone().unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.expose()),
            ("ops", "env-secret")
        );
        let tls = c.cassandra.tls.clone().unwrap();
        assert_eq!(tls.ca_file, PathBuf::from("/env/ca.pem"));
        assert!(!tls.verify_hostname);
        assert_eq!(
            tls.client_cert.unwrap().key_file,
            PathBuf::from("/env/k.pem")
        );
        // Errors name the source, never the secret.
        for (o, text, says) in [
            (
                Overrides {
                    cassandra_password: Some(Secret::new("")),
                    ..Overrides::default()
                },
                "[cassandra]\nuser = \"u\"\n".to_owned(),
                "HAJOBS_CASSANDRA_PASSWORD: empty",
            ),
            (
                Overrides::default(),
                "[cassandra]\nuser = \"u\"\n".to_owned(),
                "a user without a password",
            ),
            (
                Overrides::default(),
                "[cassandra]\npassword = \"pw-secret\"\n".to_owned(),
                "a password without a user",
            ),
            (
                Overrides::default(),
                "[cassandra]\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n".to_owned(),
                "f:3: field `cassandra.password_file`: cannot read the password file `/nonexistent/pw`",
            ),
            (
                Overrides::default(),
                "[cassandra.tls]\ncert_file = \"/c.pem\"\n".to_owned(),
                "`ca_file` (or HAJOBS_CASSANDRA_TLS_CA) is required",
            ),
            (
                Overrides {
                    tls_ca: Some("/ca.pem".into()),
                    tls_cert: Some("/c.pem".into()),
                    ..Overrides::default()
                },
                String::new(),
                "give both `cert_file` and `key_file`",
            ),
            (
                Overrides {
                    tls_ca: Some("/ca.pem".into()),
                    tls_verify_hostname: Some("maybe".into()),
                    ..Overrides::default()
                },
                String::new(),
                "HAJOBS_CASSANDRA_TLS_VERIFY_HOSTNAME: `maybe`",
            ),
        ] {
            let err = parse(Path::new("f"), &text, &o).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("pw-secret"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    mod secrets {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the secrets are, and wherever they come from, no
            /// `Debug` of the configuration and no error shows them.
            #[test]
            fn no_secret_in_debug_output_or_errors(
                admin in "[A-Za-z0-9]{12,24}",
                read in "[A-Za-z0-9]{12,24}",
                password in "[A-Za-z0-9]{12,24}",
                from_env in any::<bool>(),
                broken in any::<bool>(),
            ) {
                prop_assume!(admin != read);
                let (o, file_secrets) = if from_env {
                    (Overrides {
                        admin_token: Some(Secret::new(admin.clone())),
                        read_token: Some(Secret::new(read.clone())),
                        cassandra_user: Some("u".into()),
                        cassandra_password: Some(Secret::new(password.clone())),
                        ..Overrides::default()
                    }, String::new())
                } else {
                    (Overrides::default(), format!(
                        "admin_token = \"{admin}\"\nread_token = \"{read}\"\n"
                    ))
                };
                let cassandra = if from_env {
                    String::new()
                } else {
                    format!("[cassandra]\nuser = \"u\"\npassword = \"{password}\"\n")
                };
                // A broken field elsewhere makes it an error.
                let job = if broken { "[[job]]\nname = \"j\"\ncommand = []\n" } else { "" };
                let text = format!("{cassandra}[http]\nlisten = \"0.0.0.0:7070\"\n{file_secrets}{job}");
                let shown = match parse(Path::new("f.toml"), &text, &o) {
                    Ok(c) => {
                        prop_assert!(!broken);
                        prop_assert_eq!(c.http.as_ref().unwrap().admin_token.as_ref().unwrap().expose(), admin.as_str());
                        format!("{c:?} {c:#?} {:?}", c.cassandra)
                    }
                    Err(e) => {
                        prop_assert!(broken);
                        format!("{e} {e:?}")
                    }
                };
                for secret in [&admin, &read, &password] {
                    prop_assert!(!shown.contains(secret.as_str()), "{} in {}", secret, shown);
                }
            }
        }
    }
}
