//! A job of the daemon: one command run per attempt, under the lease.

use std::process::Stdio;

use hajobs_scheduler::{Done, JobContext, JobError};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::config::CommandJobConfig;

/// The last bytes of a command's output kept in its final status.
const OUTPUT_TAIL: usize = 4096;

/// Runs `job.command` for one attempt.
///
/// The command sees `HAJOBS_JOB_TYPE`, `HAJOBS_JOB_ID`, `HAJOBS_TRIGGER_ID`,
/// `HAJOBS_FENCING_TOKEN` and `HAJOBS_NODE_ID` in its environment. Exit 0 is
/// FINISHED, anything else FAILED with the exit status and the tail of its
/// output.
///
/// Cancelled by request, timeout or shutdown, the command gets SIGTERM and
/// the manager's cancel grace (default 5 s) to exit; then, or at once when
/// the lease is lost or about to expire, the manager drops this future and
/// the child is killed with SIGKILL.
pub(crate) async fn run(job: CommandJobConfig, ctx: JobContext) -> Result<Done, JobError> {
    let (program, args) = job
        .command
        .split_first()
        .expect("validated: command is not empty");
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(&job.env)
        .env("HAJOBS_JOB_TYPE", ctx.job_type.as_str())
        .env("HAJOBS_JOB_ID", ctx.job_id.to_string())
        .env("HAJOBS_TRIGGER_ID", ctx.trigger_id.to_string())
        .env("HAJOBS_FENCING_TOKEN", ctx.fencing_token.to_string())
        .env("HAJOBS_NODE_ID", ctx.node.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &job.working_dir {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| JobError::new(format!("cannot start `{program}`: {e}")))?;
    let (mut out, mut err) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    let wait = async {
        let exit = child.wait();
        tokio::pin!(exit);
        tokio::select! {
            status = &mut exit => status,
            () = ctx.cancelled() => {
                // Ask first; the manager's grace, then SIGKILL, follow.
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                exit.await
            }
        }
    };
    let (status, _, _) = tokio::join!(
        wait,
        out.read_to_end(&mut out_buf),
        err.read_to_end(&mut err_buf)
    );
    let status = status.map_err(|e| JobError::new(format!("waiting for `{program}`: {e}")))?;
    let content = json!({
        "exit_code": status.code(),
        "stdout": tail(&out_buf),
        "stderr": tail(&err_buf),
    });
    if status.success() {
        Ok(Done::finished().with_content(content))
    } else {
        Err(JobError {
            message: format!("`{program}` exited with {status}"),
            content: Some(content),
        })
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(OUTPUT_TAIL);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
