//! One job attempt: lease, RUNNING, the job, its final status, release.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hajobs_core::status::content_keys;
use hajobs_core::{CancelReason, JobState, StatusStore};
use hajobs_lock_keeper::{KeptLease, LeasePhase};
use serde_json::{Value, json};

use crate::context::JobContext;
use crate::job::{Job, JobOutcome};
use crate::spec::KeepRunning;

/// How an attempt ended, before it becomes a status.
enum Ending {
    /// The job returned (or panicked: `Err` holds the panic message).
    Returned(Result<JobOutcome, String>),
    /// It was cancelled; it may still have returned during the grace period.
    Cancelled(CancelReason, Option<Result<JobOutcome, String>>),
}

/// Where an attempt stands among its trigger's retries (a job with
/// `retry_count` > 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryNote {
    /// This attempt's number for its trigger (1 for the first).
    pub(crate) attempt: u32,
    /// How many attempts the trigger gets (retries + 1).
    pub(crate) of: u32,
    /// The backoff before the next one, should this one fail.
    pub(crate) backoff: Duration,
}

impl RetryNote {
    /// Whether a FAILED end of this attempt is retried.
    pub(crate) fn retried(&self) -> bool {
        self.attempt < self.of
    }
}

/// Where an always-on job's attempt stands among its restarts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartNote {
    pub(crate) policy: KeepRunning,
    /// Runs in a row before this one that failed early.
    pub(crate) streak: u32,
}

/// What an attempt does once its ending is known, before its final status
/// is written (its follow-ups recorded).
pub(crate) type BeforeFinal =
    Box<dyn FnOnce(JobState) -> futures::future::BoxFuture<'static, ()> + Send>;

/// Runs `job` under `kept` until it ends, records the final status, and
/// releases the lease.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    job: Arc<dyn Job>,
    ctx: JobContext,
    kept: KeptLease,
    timeout: Option<Duration>,
    grace: Duration,
    statuses: Arc<StatusStore>,
    retry: Option<RetryNote>,
    restart: Option<RestartNote>,
    before_final: Option<BeforeFinal>,
) -> JobState {
    let cancellation = ctx.cancellation.clone();
    let mut lease_state = kept.subscribe();
    let began = std::time::Instant::now();
    hajobs_core::metrics::attempt_started(ctx.job_type.as_str());
    // A job starts only under a lease still valid: an attempt delayed past
    // its deadline (a stalled runtime, a slow RUNNING write) before its
    // keeper noticed is cancelled here, and its job never polled.
    if !ctx.lease_valid() && !cancellation.is_cancelled() {
        cancellation.cancel(CancelReason::LeaseExpiredUnconfirmed);
    }
    let fut = AssertUnwindSafe(job.run(ctx.clone())).catch_unwind();
    // Boxed so that it can be dropped (and the job with it) before the final status.
    let mut fut = Box::pin(fut.map(|r| r.map_err(panic_message)));
    let timed_out = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        biased;
        () = cancellation.cancelled() => None,
        () = timed_out => {
            cancellation.cancel(CancelReason::TimedOut(timeout.unwrap_or_default()));
            None
        }
        r = &mut fut => Some(Ending::Returned(r)),
    };
    let ending = match ending {
        Some(Ending::Returned(r)) => {
            // A job that gave up because its lease was no longer valid (see
            // `JobContext::lease_valid`) was cancelled, whatever it returned.
            let past_deadline = {
                let s = lease_state.borrow();
                s.phase == LeasePhase::Held && std::time::Instant::now() >= s.deadline
            };
            if past_deadline {
                cancellation.cancel(CancelReason::LeaseExpiredUnconfirmed);
            }
            match cancellation.reason() {
                Some(reason) if !matches!(r, Ok(Ok(_))) => Ending::Cancelled(reason, Some(r)),
                _ => Ending::Returned(r),
            }
        }
        Some(e) => e,
        None => {
            let reason = cancellation.reason().unwrap_or(CancelReason::Requested);
            // A job cancelled for its lease stops now; others get a grace
            // period to wind down, while the lease still holds.
            let mut late = match reason {
                CancelReason::LeaseLost
                | CancelReason::LeaseExpiredUnconfirmed
                | CancelReason::KeeperStopped => None,
                _ => tokio::select! {
                    r = &mut fut => Some(r),
                    () = tokio::time::sleep(grace) => None,
                    _ = lease_state.wait_for(|s| s.phase != LeasePhase::Held) => None,
                },
            };
            if late.is_none() {
                // Out of time: the job must stop now. A job that governs
                // something outside this process (a command's process tree)
                // gets `stop_wait` to end it, so that the lease is released
                // only after it is gone; plain async code is dropped at once.
                ctx.stop_now.cancel(reason.clone());
                let wait = job.stop_wait();
                if !wait.is_zero() {
                    match tokio::time::timeout(wait, &mut fut).await {
                        Ok(r) => late = Some(r),
                        Err(_) => {
                            tracing::error!(job_type = %ctx.job_type, job_id = %ctx.job_id, ?wait, "the job did not stop within its stop wait; dropped")
                        }
                    }
                }
            }
            Ending::Cancelled(reason, late)
        }
    };
    drop(fut);
    let (state, mut content) = final_status(ending);
    if let (JobState::Failed, Some(note)) = (state, retry) {
        // "attempt n of m, next retry at …", for `hajobs history`.
        let c = content.get_or_insert_with(|| json!({}));
        if let Value::Object(map) = c {
            map.insert("attempt".into(), json!(note.attempt));
            map.insert("of".into(), json!(note.of));
            if note.retried() {
                let at = chrono::Utc::now()
                    + chrono::TimeDelta::from_std(note.backoff).unwrap_or_default();
                map.insert("next_retry_at".into(), json!(at.to_rfc3339()));
                map.insert(
                    content_keys::NEXT_RETRY_AT_MS.into(),
                    json!(at.timestamp_millis()),
                );
            }
        }
    }
    if let Some(note) = restart {
        // When any replica may start it again, for every replica to see.
        let streak =
            note.policy
                .streak_after(note.streak, began.elapsed(), state == JobState::Failed);
        let at = chrono::Utc::now()
            + chrono::TimeDelta::from_std(note.policy.backoff(streak)).unwrap_or_default();
        let c = content.get_or_insert_with(|| json!({}));
        if let Value::Object(map) = c {
            map.insert(content_keys::RESTART_STREAK.into(), json!(streak));
            map.insert("next_restart_at".into(), json!(at.to_rfc3339()));
            map.insert(
                content_keys::NEXT_RESTART_AT_MS.into(),
                json!(at.timestamp_millis()),
            );
        }
    }
    tracing::info!(job_type = %ctx.job_type, job_id = %ctx.job_id, trigger_id = %ctx.trigger_id, %state, "job attempt ended");
    hajobs_core::metrics::attempt_ended(ctx.job_type.as_str(), state.as_str(), began.elapsed());
    if let Some(before) = before_final {
        before(state).await;
    }
    let content = ctx.with_args(content);
    if let Err(e) = statuses.write(&ctx.status(state, content)).await {
        tracing::error!(job_type = %ctx.job_type, job_id = %ctx.job_id, %state, error = %e, "final status not recorded");
    }
    if let Err(e) = kept.release().await {
        tracing::warn!(job_type = %ctx.job_type, job_id = %ctx.job_id, error = %e, "lease not released; it expires by its TTL");
    }
    state
}

fn final_status(ending: Ending) -> (JobState, Option<Value>) {
    match ending {
        Ending::Returned(Ok(Ok(done))) => (done.state.into(), done.content),
        Ending::Returned(Ok(Err(e))) => {
            (JobState::Failed, Some(error_content(&e.message, e.content)))
        }
        Ending::Returned(Err(panic)) => (
            JobState::Failed,
            Some(json!({ "error": format!("panicked: {panic}") })),
        ),
        Ending::Cancelled(CancelReason::TimedOut(d), _) => (
            JobState::Failed,
            Some(json!({ "error": format!("timed out after {d:?}") })),
        ),
        Ending::Cancelled(reason, late) => {
            let mut content = json!({ content_keys::REASON: reason.to_string() });
            if let Some(Ok(Err(e))) = late {
                content["error"] = Value::String(e.message);
            }
            (JobState::Canceled, Some(content))
        }
    }
}

fn error_content(message: &str, extra: Option<Value>) -> Value {
    match extra {
        Some(Value::Object(mut map)) => {
            map.insert("error".into(), Value::String(message.to_owned()));
            Value::Object(map)
        }
        Some(other) => json!({ "error": message, "details": other }),
        None => json!({ "error": message }),
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
