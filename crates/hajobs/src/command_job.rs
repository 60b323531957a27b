//! A job of the daemon: one command run per attempt, under the lease, its
//! whole process tree governed by a [guard](crate::guard) process.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hajobs_core::{CancelReason, TriggerArgs};
use hajobs_scheduler::{
    DEFAULT_CANCEL_GRACE, Done, Job, JobContext, JobError, JobOutcome, MAX_PROGRESS_BYTES,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::CommandJobConfig;
use crate::guard::{GUARD_ARG, monotonic_nanos};
use crate::job_env;
use crate::orphans;
use crate::output::{self, ProgressLine, Tail};

/// The least time between two progress writes of one attempt.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// How long the manager waits, after "stop now", for the guard to have
/// killed and reaped the whole tree. `SIGKILL` takes effect at once; only a
/// process stuck in the kernel (uninterruptible I/O) takes longer.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How long the output is read after the guard exited. Every process that
/// held the pipes is gone by then, so this only bounds the unexpected.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// The daemon's jobs: `config.command`, one process tree per attempt.
///
/// The command sees `HAJOBS_JOB_TYPE`, `HAJOBS_JOB_ID`, `HAJOBS_TRIGGER_ID`,
/// `HAJOBS_FENCING_TOKEN` and `HAJOBS_NODE_ID` in a declared environment
/// (see [`crate::job_env`]): never the daemon's secrets; its trigger's
/// parameters as `HAJOBS_PARAM_<NAME>` and its payload, one line of JSON,
/// on its standard input (empty without one); for a job with
/// `checkpoints = true`, its trigger's last checkpoint as
/// `HAJOBS_CHECKPOINT`, and a stdout line `HAJOBS_CHECKPOINT <json>`
/// records a new one; for a follow-up, `HAJOBS_PARENT_JOB_TYPE`,
/// `HAJOBS_PARENT_JOB_ID` and `HAJOBS_CHAIN_ID`. Exit 0 is
/// FINISHED, anything else FAILED with the exit status and the tail of its
/// output.
///
/// The command runs under a guard process (see [`crate::guard`]): cancelled
/// by request, timeout or shutdown, its whole process group gets `SIGTERM`
/// and the cancel grace, then `SIGKILL`; on a lost or expiring lease
/// `SIGKILL` at once; whatever it leaves running when it exits is ended;
/// and if this daemon dies or is paused past the lease's deadline, the
/// guard ends the tree by itself. The attempt ends, and the lease is
/// released, only once the whole tree is gone.
#[derive(Clone)]
pub(crate) struct CommandJob {
    config: CommandJobConfig,
    /// Between `SIGTERM` and `SIGKILL` when cancelled gracefully.
    grace: Duration,
    /// A guard started just before a scheduled firing ([`Job::warm_up`]),
    /// waiting to be told an attempt: the command then starts without
    /// waiting for a process to be created and loaded. At most one; used
    /// within [`WARM_FOR`] or dropped (it then exits, having run nothing).
    warm: Arc<std::sync::Mutex<Option<Spawned>>>,
}

impl std::fmt::Debug for CommandJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandJob")
            .field("config", &self.config)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl CommandJob {
    pub(crate) fn new(config: CommandJobConfig) -> Self {
        Self {
            config,
            grace: DEFAULT_CANCEL_GRACE,
            warm: Arc::default(),
        }
    }

    /// The warm guard, if one is fresh and still waiting; a stale one, or
    /// one that has exited (killed by hand), is dropped.
    fn take_warm(&self) -> Option<Spawned> {
        let mut warm = self.warm.lock().expect("poisoned").take()?;
        let waiting = matches!(warm.guard.try_wait(), Ok(None));
        (waiting && warm.at.elapsed() < WARM_FOR).then_some(warm)
    }
}

impl Job for CommandJob {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        if !self.config.steps.is_empty() {
            return Box::pin(crate::command_steps::run_steps(
                self.config.clone(),
                self.grace,
                ctx,
            ));
        }
        let warm = self.take_warm();
        Box::pin(run(self.config.clone(), self.grace, ctx, warm, None))
    }

    /// Starts the guard of the next attempt ahead of a scheduled firing:
    /// it waits, running nothing, until an attempt tells it its ids and
    /// lease deadline (or is dropped unused after [`WARM_FOR`]).
    fn warm_up(&self, job_type: &str) {
        if !self.config.steps.is_empty() {
            // Which step comes first is known only from the checkpoint.
            return;
        }
        let mut warm = self.warm.lock().expect("poisoned");
        if warm.as_ref().is_some_and(|w| w.at.elapsed() < WARM_FOR) {
            return;
        }
        match spawn_guard(&self.config, job_type, self.grace) {
            Ok(spawned) => *warm = Some(spawned),
            Err(e) => {
                *warm = None;
                tracing::debug!(job_type, error = %e.message, "no guard started ahead; the attempt starts one");
            }
        }
    }

    fn stop_wait(&self) -> Duration {
        STOP_WAIT
    }
}

/// What the guard reported about the command.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) pid: Option<i32>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) deadline_passed: bool,
    pub(crate) error: Option<String>,
}

impl Report {
    pub(crate) fn take(&mut self, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "started" => self.pid = rest.parse().ok(),
            "exited" => self.exit_code = rest.parse().ok(),
            "signalled" => self.signal = rest.parse().ok(),
            "deadline-passed" => self.deadline_passed = true,
            "error" => self.error = Some(rest.to_owned()),
            _ => tracing::warn!(line, "unknown line from the command guard"),
        }
    }
}

/// What the trigger carries, told to the guard: each parameter as
/// `HAJOBS_PARAM_<NAME>` (names are `[a-z][a-z0-9_]*`, values hold no
/// control character: checked when triggered), the payload as one line of
/// compact JSON on the command's standard input.
fn args_lines(args: &TriggerArgs) -> String {
    let mut lines = String::new();
    for (name, value) in &args.params {
        lines.push_str(&format!(
            "env HAJOBS_PARAM_{}={value}\n",
            name.to_ascii_uppercase()
        ));
    }
    if let Some(json) = args.payload_text() {
        lines.push_str(&format!("payload {json}\n"));
    }
    if let Some(p) = &args.parent {
        // A follow-up: the attempt it follows, and its chain.
        lines.push_str(&format!(
            "env HAJOBS_PARENT_JOB_TYPE={}\nenv HAJOBS_PARENT_JOB_ID={}\nenv HAJOBS_CHAIN_ID={}\n",
            p.job_type, p.job_id, p.chain_id
        ));
    }
    lines
}

/// A guard process started for an attempt, still waiting for its first
/// deadline: nothing runs until the attempt's daemon tells it one.
struct Spawned {
    guard: tokio::process::Child,
    socket: tokio::net::UnixStream,
    mark: String,
    /// When it was started: a guard kept warm is used only while fresh.
    at: Instant,
}

/// The longest a guard started ahead of a firing waits to be used; then it
/// is dropped (its socket closed: it exits without running anything).
const WARM_FOR: Duration = Duration::from_secs(5);

/// Starts the guard of an attempt of `job` (its own executable, even if the
/// file was replaced by an upgrade), in the job's declared environment; the
/// attempt's ids are told over the socket before its first deadline.
fn spawn_guard(
    job: &CommandJobConfig,
    job_type: &str,
    grace: Duration,
) -> Result<Spawned, JobError> {
    let program = job.command.first().cloned().unwrap_or_default();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| JobError::new(format!("cannot make the guard's socket: {e}")))?;
    ours.set_nonblocking(true)
        .map_err(|e| JobError::new(format!("cannot make the guard's socket: {e}")))?;
    let socket = tokio::net::UnixStream::from_std(ours)
        .map_err(|e| JobError::new(format!("cannot make the guard's socket: {e}")))?;
    let mark = orphans::new_mark();
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command
        .arg0("hajobs-guard")
        .arg(GUARD_ARG)
        .arg(grace.as_millis().to_string())
        .arg("--")
        .args(&job.command)
        // A declared environment: never the daemon's secrets (see `job_env`).
        .env_clear()
        .envs(job_env::inherited(&job.inherit_env))
        .envs(&job.env)
        .env("HAJOBS_JOB_TYPE", job_type)
        // Found again by this mark should the guard die (see `orphans`).
        .env(orphans::MARK, &mark)
        // Out of the daemon's group: a terminal's Ctrl-C is the daemon's to handle.
        .process_group(0)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Not `kill_on_drop`: killing the guard would orphan the tree. Dropping
    // the socket instead tells the guard to end the tree (or, before its
    // first deadline, to start nothing).
    if let Some(dir) = &job.working_dir {
        command.current_dir(dir);
    }
    let guard = command
        .spawn()
        .map_err(|e| JobError::new(format!("cannot start the guard for `{program}`: {e}")))?;
    drop(command); // closes our copy of the guard's end of the socket
    Ok(Spawned {
        guard,
        socket,
        mark,
        at: Instant::now(),
    })
}

/// One step of a job with steps, as its command run sees it.
pub(crate) struct StepRun {
    /// Its name (`HAJOBS_STEP`).
    pub(crate) name: String,
    /// How long it may run: then it is ended (SIGTERM, then SIGKILL after
    /// the grace) and failed.
    pub(crate) timeout: Option<Duration>,
}

/// Runs `job.command` as one step of an attempt to its end, under the
/// attempt's lease (see `command_steps`).
pub(crate) async fn run_step(
    job: CommandJobConfig,
    grace: Duration,
    ctx: JobContext,
    step: &StepRun,
) -> JobOutcome {
    run(job, grace, ctx, None, Some(step)).await
}

/// Runs `job.command` as one attempt (or one step of it: `step`) to its
/// end, under the attempt's lease.
async fn run(
    job: CommandJobConfig,
    grace: Duration,
    ctx: JobContext,
    warm: Option<Spawned>,
    step: Option<&StepRun>,
) -> JobOutcome {
    let program = job.command.first().cloned().unwrap_or_default();
    let Spawned {
        mut guard,
        socket,
        mark,
        ..
    } = match warm {
        Some(w) => w,
        None => spawn_guard(&job, ctx.job_type.as_str(), grace)?,
    };
    let (out, err) = (
        guard.stdout.take().expect("piped"),
        guard.stderr.take().expect("piped"),
    );
    let (reader, mut writer) = socket.into_split();
    let mut lines = BufReader::new(reader).lines();
    let mut report = Report::default();
    let mut lease = ctx.lease_updates();
    let first = lease.borrow_and_update().deadline;
    // The attempt's ids, then the deadline that lets the command start.
    let ids = format!(
        "env HAJOBS_JOB_ID={}\nenv HAJOBS_TRIGGER_ID={}\nenv HAJOBS_FENCING_TOKEN={}\nenv HAJOBS_NODE_ID={}\n",
        ctx.job_id,
        ctx.trigger_id,
        ctx.fencing_token,
        ctx.node.as_str()
    );
    let _ = writer.write_all(ids.as_bytes()).await;
    let _ = writer.write_all(args_lines(ctx.args()).as_bytes()).await;
    if let Some(step) = step {
        let _ = writer
            .write_all(format!("env HAJOBS_STEP={}\n", step.name).as_bytes())
            .await;
    }
    if let Some(last) = ctx.last_checkpoint() {
        // Compact JSON: one line.
        let _ = writer
            .write_all(format!("env HAJOBS_CHECKPOINT={last}\n").as_bytes())
            .await;
    }
    send_deadline(&mut writer, first).await;

    // Read apart from the loop below, so that a full pipe never blocks the
    // command; it ends when the last process holding the pipes is gone.
    // Memory stays bounded whatever the command prints (see `output`).
    // A stdout line `HAJOBS_PROGRESS <json or text>` is published as the
    // attempt's progress (`hajobs watch`, the page), written apart from the
    // loop below so that a slow write never delays the guard's deadline.
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(None::<String>);
    // A stdout line `HAJOBS_CHECKPOINT <json>` is the trigger's checkpoint
    // (the newest replaces one not yet written).
    let (checkpoint_tx, checkpoint_rx) = tokio::sync::watch::channel(None::<String>);
    let stepped = step.is_some();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let refused = Arc::new(AtomicU64::new(0));
    let mut output = {
        let refused = refused.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut found = |line: ProgressLine| match line {
                // The newest update replaces one not yet written.
                ProgressLine::Update(text) => {
                    progress_tx.send_replace(Some(text));
                }
                // A job with steps checkpoints at the end of each step.
                ProgressLine::Checkpoint(text) if !stepped => {
                    checkpoint_tx.send_replace(Some(text));
                }
                ProgressLine::Checkpoint(_) => {}
                ProgressLine::TooLarge(size) => {
                    if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, size, limit = MAX_PROGRESS_BYTES,
                            "a progress line larger than the limit was refused (the final status counts them)");
                    }
                }
            };
            let tails = tokio::join!(output::read(out, Some(&mut found)), output::read(err, None));
            drop(ended_tx);
            tails
        })
    };
    let mut publisher = tokio::spawn(publish_progress(ctx.clone(), progress_rx, ended_rx));
    let mut checkpointer = tokio::spawn(record_checkpoints(ctx.clone(), checkpoint_rx));
    let mut told = None::<&str>;
    // A step's timeout: its tree ended as a cancellation would end it.
    let step_timeout_after = step.and_then(|s| s.timeout);
    let step_deadline = step_timeout_after.map(|t| tokio::time::Instant::now() + t);
    let step_timeout = async {
        match step_deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(step_timeout);
    let mut timed_out = false;
    let guard_exit = loop {
        tokio::select! {
            status = guard.wait() => break status,
            () = &mut step_timeout, if told.is_none() && !timed_out => {
                timed_out = true;
                told = Some("term");
                let _ = writer.write_all(b"term\n").await;
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => report.take(&line),
                // The guard closed its end: it is about to exit.
                Ok(None) | Err(_) => {
                    break guard.wait().await;
                }
            },
            changed = lease.changed() => {
                if changed.is_ok() {
                    let deadline = lease.borrow_and_update().deadline;
                    send_deadline(&mut writer, deadline).await;
                }
            }
            () = ctx.cancelled(), if told.is_none() => {
                let word = match ctx.cancellation.reason() {
                    Some(CancelReason::LeaseLost | CancelReason::LeaseExpiredUnconfirmed | CancelReason::KeeperStopped) => "kill",
                    _ => "term",
                };
                told = Some(word);
                let _ = writer.write_all(format!("{word}\n").as_bytes()).await;
            }
            () = ctx.stop_now(), if told != Some("kill") => {
                told = Some("kill");
                let _ = writer.write_all(b"kill\n").await;
            }
        }
    };
    // Whatever the guard wrote last.
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(100), lines.next_line()).await
    {
        report.take(&line);
    }
    let (out_tail, err_tail) = match tokio::time::timeout(OUTPUT_DRAIN, &mut output).await {
        Ok(Ok(tails)) => tails,
        _ => {
            output.abort();
            let mut err = Tail::default();
            err.push(b"(output not collected)");
            (Tail::default(), err)
        }
    };
    // Every progress update lands before the final status is written.
    if tokio::time::timeout(OUTPUT_DRAIN, &mut publisher)
        .await
        .is_err()
    {
        publisher.abort();
        tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, "a progress update was still being written at the end");
    }
    // And the last checkpoint before the attempt ends.
    if tokio::time::timeout(OUTPUT_DRAIN, &mut checkpointer)
        .await
        .is_err()
    {
        checkpointer.abort();
        tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, "a checkpoint was still being written at the end");
    }
    let guard_exit = guard_exit
        .map_err(|e| JobError::new(format!("waiting for the guard of `{program}`: {e}")))?;
    let mut content = json!({
        "exit_code": report.exit_code,
        "signal": report.signal,
        "stdout": out_tail.text(),
        "stderr": err_tail.text(),
        "stdout_bytes": out_tail.seen(),
        "stderr_bytes": err_tail.seen(),
    });
    let refused = refused.load(Ordering::Relaxed);
    if refused > 0 {
        content["progress_refused"] = json!(format!(
            "{refused} progress line(s) larger than {MAX_PROGRESS_BYTES} bytes"
        ));
    }
    if timed_out {
        return Err(JobError {
            message: format!(
                "timed out after {}",
                humantime::format_duration(step_timeout_after.unwrap_or_default())
            ),
            content: Some(content),
        });
    }
    if let Some(error) = report.error {
        return Err(JobError {
            message: error,
            content: Some(content),
        });
    }
    if report.exit_code.is_none() && report.signal.is_none() {
        // The guard itself died (killed by hand, OOM): end what is left of
        // the tree it governed ourselves, and fail the attempt.
        let ended = orphans::end(&mark).await;
        tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, processes = ended, "the command's guard died; what was left of its tree was ended");
        return Err(JobError {
            message: format!("the guard of `{program}` ended ({guard_exit}) before the command"),
            content: Some(content),
        });
    }
    if report.deadline_passed {
        return Err(JobError {
            message: format!("`{program}` killed by its guard: the lease's deadline passed"),
            content: Some(content),
        });
    }
    match (report.exit_code, report.signal) {
        (Some(0), _) => Ok(Done::finished().with_content(content)),
        (Some(code), _) => Err(JobError {
            message: format!("`{program}` exited with exit status: {code}"),
            content: Some(content),
        }),
        (None, signal) => Err(JobError {
            message: format!("`{program}` was killed by signal {}", signal.unwrap_or(0)),
            content: Some(content),
        }),
    }
}

/// Tells the guard the lease's deadline on the machine's monotonic clock.
pub(crate) async fn send_deadline(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    deadline: Instant,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    let at = monotonic_nanos() + left.as_nanos();
    let _ = writer
        .write_all(format!("deadline {at}\n").as_bytes())
        .await;
}

/// Records each checkpoint line as the trigger's checkpoint, the newest
/// first when several came while one was written. A line that is not JSON,
/// or a write refused (the lease no longer held, a newer attempt fenced it),
/// is logged and not retried. Ends when the output ended.
async fn record_checkpoints(
    ctx: JobContext,
    mut lines: tokio::sync::watch::Receiver<Option<String>>,
) {
    while lines.changed().await.is_ok() {
        let Some(text) = lines.borrow_and_update().clone() else {
            continue;
        };
        let value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, error = %e, "a checkpoint line that is not JSON was ignored");
                continue;
            }
        };
        if let Err(e) = ctx.checkpoint(value).await {
            tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, error = %e, "checkpoint not recorded");
        }
    }
}

/// Writes the newest progress update, at most one every
/// [`PROGRESS_INTERVAL`]: updates printed in between replace each other, so
/// a command printing progress in a loop costs a bounded write rate. Ends
/// once the output ended and the last update is written.
async fn publish_progress(
    ctx: JobContext,
    mut updates: tokio::sync::watch::Receiver<Option<String>>,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) {
    let mut output_ended = false;
    while updates.changed().await.is_ok() {
        let Some(text) = updates.borrow_and_update().clone() else {
            continue;
        };
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        if let Err(e) = ctx.progress(value).await {
            tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, error = %e, "progress not recorded");
        }
        if !output_ended {
            tokio::select! {
                () = tokio::time::sleep(PROGRESS_INTERVAL) => {}
                _ = &mut ended => output_ended = true,
            }
        }
    }
}
