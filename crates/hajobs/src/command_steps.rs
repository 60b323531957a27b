//! A job's `[[job.step]]`s: commands run in order within one attempt,
//! under the job's one lease — no other job of its lock type runs between
//! them. The end of each step is the trigger's checkpoint, so an attempt
//! after a failover (a re-run, a retry, a handover) resumes at the first
//! unfinished step; the status says `step 2 of 3: transform` while it runs;
//! a step's failure (after its own `retry_count`) or its `timeout` ends the
//! attempt FAILED naming the step.

use std::time::Duration;

use hajobs_scheduler::{Done, JobContext, JobError, JobOutcome};
use serde_json::json;

use crate::command_job::{StepRun, run_step};
use crate::config::CommandJobConfig;

/// Runs the steps of `config` from the first unfinished one.
pub(crate) async fn run_steps(
    config: CommandJobConfig,
    grace: Duration,
    ctx: JobContext,
) -> JobOutcome {
    let n = config.steps.len();
    let first = ctx
        .last_checkpoint()
        .and_then(|c| c.get("step")?.as_u64())
        .map_or(0, |k| usize::try_from(k).unwrap_or(usize::MAX));
    for (i, step) in config.steps.iter().enumerate().skip(first) {
        let label = format!("step {} of {n}: {}", i + 1, step.name);
        if let Err(e) = ctx.progress(json!({ "step": label })).await {
            tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, error = %e, "step not published");
        }
        let mut command = config.clone();
        command.command = step.command.clone();
        command.steps.clear();
        let run_of = StepRun {
            name: step.name.clone(),
            timeout: step.timeout,
        };
        let mut tries = 0;
        loop {
            match run_step(command.clone(), grace, ctx.clone(), &run_of).await {
                Ok(_) => break,
                Err(e) if tries < step.retry_count && !ctx.is_cancelled() => {
                    tries += 1;
                    tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, step = step.name, tries, error = %e.message, "step failed; run again");
                }
                Err(mut e) => {
                    e.message = format!("{label} failed: {}", e.message);
                    return Err(e);
                }
            }
        }
        ctx.checkpoint(json!({ "step": i + 1, "done": step.name }))
            .await
            .map_err(|e| JobError::new(format!("{label}: its end not recorded: {e}")))?;
    }
    Ok(Done::finished().with_content(json!({
        "steps": n,
        "resumed_at": (first > 0).then(|| format!("step {} of {n}", first + 1)),
    })))
}
