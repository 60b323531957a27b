//! [`Job`]: the code a job runs, and what it returns.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use hajobs_core::JobState;
use serde_json::Value;

use crate::context::JobContext;

/// A job: Rust code run by the job manager under its lease. Any
/// `Fn(JobContext) -> impl Future<Output = JobOutcome>` is a job.
///
/// The job should check [`JobContext::is_cancelled`] (or await
/// [`JobContext::cancelled`]) between steps. When it is cancelled because its
/// lease is lost or about to expire, the manager also drops the job's future
/// at once, so it stops at its next `.await`. Work without await points
/// (CPU-bound loops, synchronous clients) belongs in
/// [`JobContext::spawn_blocking`], which hands it a
/// [`LeaseCheck`](crate::LeaseCheck) to test before each step: a thread
/// cannot be interrupted, only asked. What a stalled thread or a frozen
/// machine still writes late is what the fencing token is for.
pub trait Job: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, JobOutcome>;

    /// How long the manager keeps polling the attempt after telling it to
    /// stop now ([`JobContext::stop_now`]: the lease is lost or about to
    /// expire, or the cancel grace is over) before dropping it, and only then
    /// records its end and releases the lease.
    ///
    /// Zero, the default, drops the future at once: right for async Rust
    /// code, which then stops at its next `.await`. A job that governs
    /// something outside the process, such as a command's process tree,
    /// returns the time it needs to end that, so that the lease is never
    /// released while it still runs.
    fn stop_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// Called on every replica that has the job a moment
    /// ([`WARM_UP`](crate::WARM_UP)) before each of its scheduled
    /// firings, whether or not this replica will run it: a job may prepare
    /// what its start needs. Nothing may run yet — no lease is held. The
    /// default does nothing; a daemon's command job starts its guard
    /// process, which waits for the lease's deadline before running
    /// anything.
    fn warm_up(&self, _job_type: &str) {}
}

impl<F, Fut> Job for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobOutcome> + Send + 'static,
{
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        Box::pin((self)(ctx))
    }
}

/// What an attempt returns: done (in a final state it chooses) or failed.
pub type JobOutcome = Result<Done, JobError>;

/// A successful end.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    /// FINISHED, WARNING, SKIPPED or NO_ACTION_NEEDED.
    pub state: FinalState,
    /// Stored as the final status's content.
    pub content: Option<Value>,
}

impl Done {
    /// FINISHED.
    pub fn finished() -> Self {
        Self {
            state: FinalState::Finished,
            content: None,
        }
    }
    /// WARNING.
    pub fn warning() -> Self {
        Self {
            state: FinalState::Warning,
            content: None,
        }
    }
    /// SKIPPED.
    pub fn skipped() -> Self {
        Self {
            state: FinalState::Skipped,
            content: None,
        }
    }
    /// NO_ACTION_NEEDED.
    pub fn no_action_needed() -> Self {
        Self {
            state: FinalState::NoActionNeeded,
            content: None,
        }
    }
    /// Adds content to the final status.
    pub fn with_content(mut self, content: Value) -> Self {
        self.content = Some(content);
        self
    }
}

/// The successful final states a job may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    /// All done.
    Finished,
    /// Done, with something worth a look.
    Warning,
    /// Chose not to run.
    Skipped,
    /// Nothing to do.
    NoActionNeeded,
}

impl From<FinalState> for JobState {
    fn from(s: FinalState) -> Self {
        match s {
            FinalState::Finished => JobState::Finished,
            FinalState::Warning => JobState::Warning,
            FinalState::Skipped => JobState::Skipped,
            FinalState::NoActionNeeded => JobState::NoActionNeeded,
        }
    }
}

/// A failed attempt: recorded FAILED with the message (and content).
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    /// What went wrong.
    pub message: String,
    /// Extra details for the status.
    pub content: Option<Value>,
}

impl JobError {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            content: None,
        }
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        Self::new(e.to_string())
    }
}
