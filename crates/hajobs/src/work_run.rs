//! `hajobs work run SET KEY -- COMMAND…`: a command processes one work item
//! exactly once, its whole process tree living and dying with the item's
//! lease — under the same guard process as a daemon job (`guard`).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use hajobs_scheduler::WorkGrant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::command_job::{Report, send_deadline};
use crate::guard::GUARD_ARG;

/// How long the tree gets between SIGTERM and SIGKILL at a check-in timeout.
const GRACE: Duration = Duration::from_secs(5);

/// The prefix of the failure of a command stopped by its check-in timeout.
pub(crate) const CHECKIN_TIMEOUT: &str = "checkin_timeout:";

/// Runs `command` under a guard for the item of `grant`: the guard learns
/// the lease's deadline after every renewal and kills the tree when it
/// passes; dropping this future (the lease is lost) closes the guard's
/// socket and the guard kills the tree at once; at `timeout` the tree gets
/// SIGTERM, SIGKILL after a grace, and the failure names the check-in
/// timeout. Returns once the whole tree is gone.
pub(crate) async fn run(
    grant: WorkGrant,
    command: Vec<String>,
    timeout: Option<Duration>,
) -> Result<serde_json::Value, String> {
    let program = command.first().cloned().unwrap_or_default();
    let socket_error = |e: std::io::Error| format!("cannot make the guard's socket: {e}");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(socket_error)?;
    ours.set_nonblocking(true).map_err(socket_error)?;
    let socket = tokio::net::UnixStream::from_std(ours).map_err(socket_error)?;
    let mark = crate::orphans::new_mark();
    let mut command_line = tokio::process::Command::new("/proc/self/exe");
    // The caller's environment, less the secrets `hajobs` itself reads.
    for secret in crate::job_env::SECRETS {
        command_line.env_remove(secret);
    }
    let mut guard = command_line
        .arg0("hajobs-guard")
        .arg(GUARD_ARG)
        .arg(GRACE.as_millis().to_string())
        .arg("--")
        .args(&command)
        // Found again by this mark should the guard die (see `orphans`).
        .env(crate::orphans::MARK, &mark)
        .env("HAJOBS_WORK_SET", grant.work_set.as_str())
        .env("HAJOBS_WORK_KEY", grant.key.as_str())
        .env("HAJOBS_FENCING_TOKEN", grant.fencing_token.to_string())
        .env("HAJOBS_ATTEMPT", grant.attempt.to_string())
        .process_group(0)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the guard for `{program}`: {e}"))?;
    let (reader, mut writer) = socket.into_split();
    let mut lines = BufReader::new(reader).lines();
    let mut lease = grant.lease_updates();
    let first = lease.borrow_and_update().deadline;
    send_deadline(&mut writer, first).await;
    let mut report = Report::default();
    let timed_out = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timed_out);
    let mut stopped_at_timeout = false;
    let exit = loop {
        tokio::select! {
            status = guard.wait() => break status,
            line = lines.next_line() => match line {
                Ok(Some(line)) => report.take(&line),
                Ok(None) | Err(_) => break guard.wait().await,
            },
            changed = lease.changed() => {
                if changed.is_ok() {
                    let deadline = lease.borrow_and_update().deadline;
                    send_deadline(&mut writer, deadline).await;
                }
            }
            () = &mut timed_out, if !stopped_at_timeout => {
                stopped_at_timeout = true;
                let _ = writer.write_all(b"term\n").await;
            }
        }
    };
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(100), lines.next_line()).await
    {
        report.take(&line);
    }
    let exit = exit.map_err(|e| format!("waiting for the guard of `{program}`: {e}"))?;
    if stopped_at_timeout {
        let t = timeout.unwrap_or_default();
        return Err(format!(
            "{CHECKIN_TIMEOUT} the check-in timeout of {} fired; `{program}` and its process tree were stopped",
            humantime::format_duration(t)
        ));
    }
    if let Some(error) = report.error {
        return Err(error);
    }
    if report.deadline_passed {
        return Err(format!(
            "`{program}` killed by its guard: the item's lease deadline passed"
        ));
    }
    match (report.exit_code, report.signal) {
        (Some(0), _) => Ok(serde_json::json!({ "exit_code": 0, "command": program })),
        (Some(code), _) => Err(format!("`{program}` ended with exit status: {code}")),
        (None, Some(signal)) => Err(format!("`{program}` was killed by signal {signal}")),
        (None, None) => {
            // The guard died first: end what is left of the tree ourselves.
            let ended = crate::orphans::end(&mark).await;
            Err(format!(
                "the guard of `{program}` ended ({exit}) before the command; {ended} process(es) left of its tree were killed"
            ))
        }
    }
}
