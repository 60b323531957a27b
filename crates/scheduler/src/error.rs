//! [`ManagerError`]: what the job manager refuses or fails at.

use hajobs_core::{InvalidInput, JobId, JobType, StoreError};

/// Errors of the job manager and of job specs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// A cron expression or time zone that cannot be used.
    #[error("job `{job_type}`: {problem}")]
    InvalidCron {
        /// The job.
        job_type: String,
        /// What is wrong, naming the expression.
        problem: String,
    },
    /// A name, TTL or interval that cannot be used.
    #[error("job `{job_type}`: {source}")]
    InvalidSpec {
        /// The job.
        job_type: String,
        /// What is wrong.
        #[source]
        source: InvalidInput,
    },
    /// A lock type's limits that cannot be used.
    #[error("lock type `{lock_type}`: {problem}")]
    InvalidLock {
        /// The lock type.
        lock_type: String,
        /// What is wrong.
        problem: String,
    },
    /// Policies of a job that do not fit together or with its lock type.
    #[error("job `{job_type}`: {problem}")]
    Policy {
        /// The job.
        job_type: String,
        /// What does not fit.
        problem: String,
    },
    /// A trigger's parameters or payload that its job does not accept:
    /// refused before anything of the trigger is recorded.
    #[error("job `{job_type}`: {problem}")]
    BadArgs {
        /// The job.
        job_type: String,
        /// What is wrong, naming the parameter (never its value).
        problem: String,
    },
    /// Two registrations of one job type.
    #[error("job type `{0}` is registered twice")]
    DuplicateJobType(JobType),
    /// A job type nobody registered.
    #[error("unknown job type `{name}` (registered: {known})")]
    UnknownJobType {
        /// The name asked for.
        name: String,
        /// The registered job types.
        known: String,
    },
    /// The precondition hook refused to start scheduling.
    #[error("precondition failed, scheduling not started: {0}")]
    Precondition(String),
    /// A work item's check-out or failure by a ticket that no longer holds
    /// the item (its lease expired and another worker took it over, or it
    /// ended already): nothing was written.
    #[error(
        "work item `{key}` of `{work_set}`: ticket {ticket} no longer holds it (its lease expired or it ended); nothing recorded"
    )]
    StaleTicket {
        /// The work set.
        work_set: String,
        /// The item's key.
        key: String,
        /// The refused ticket.
        ticket: JobId,
    },
    /// Cassandra failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most bytes one progress update may take, as JSON: enough for a
/// status line with counters, small enough that a job publishing in a loop
/// cannot make its attempt's rows, or a read of them, grow without bound.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;

/// Why a progress update was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgressError {
    /// The update is larger than [`MAX_PROGRESS_BYTES`]: refused, nothing written.
    #[error("progress update of {size} bytes refused: at most {limit} bytes (as JSON)")]
    TooLarge {
        /// Its size as JSON.
        size: usize,
        /// [`MAX_PROGRESS_BYTES`].
        limit: usize,
    },
    /// Writing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a checkpoint was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The job does not declare checkpoints ([`crate::JobSpec::checkpoints`]).
    #[error("the job does not declare checkpoints (`checkpoints = true`)")]
    NotDeclared,
    /// Larger than
    /// [`MAX_CHECKPOINT_BYTES`](hajobs_core::checkpoint_store::MAX_CHECKPOINT_BYTES)
    /// as JSON: refused, nothing written.
    #[error("checkpoint of {size} bytes refused: at most {limit} bytes (as JSON)")]
    TooLarge {
        /// Its size as JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The attempt's lease is no longer certainly held: nothing written.
    #[error("the attempt's lease is no longer held: checkpoint not written")]
    LeaseLost,
    /// A newer attempt of the trigger fenced the checkpoint: this attempt
    /// is stale and its write was refused.
    #[error("a newer attempt of the trigger holds its checkpoint: this write was refused")]
    Stale,
    /// Writing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
