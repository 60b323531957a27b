//! [`JobContext`]: what a running job knows and can do.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hajobs_lock_keeper::LeaseState;

use hajobs_core::{
    Cancellation, FencingToken, JobId, JobState, JobStatus, JobType, NodeId, StatusStore,
    StoreError, TriggerId,
};
use serde_json::Value;

/// Handed to every job attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The kind of job.
    pub job_type: JobType,
    /// This attempt.
    pub job_id: JobId,
    /// The trigger it serves (kept by retries).
    pub trigger_id: TriggerId,
    /// The token of its lease: pass it to downstream systems.
    pub fencing_token: FencingToken,
    /// This replica.
    pub node: NodeId,
    /// Fired when the job must stop.
    pub cancellation: Cancellation,
    /// Fired when the job must stop *now*: the lease is lost or about to
    /// expire, or the cancel grace is over (see [`crate::Job::stop_wait`]).
    pub(crate) stop_now: Cancellation,
    /// Where progress goes.
    pub(crate) statuses: Arc<StatusStore>,
    /// The lease as its keeper sees it.
    pub(crate) lease: tokio::sync::watch::Receiver<LeaseState>,
}

impl JobContext {
    /// Whether the job must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes when the job must stop.
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }

    /// Whether the lease is certainly still held right now: not cancelled,
    /// and before the keeper's deadline (monotonic clock). Check it right
    /// before each externally visible step; unlike the cancellation, it
    /// needs no task to have run, so it is exact even just after the
    /// process was paused.
    pub fn lease_valid(&self) -> bool {
        !self.cancellation.is_cancelled() && Instant::now() < self.lease.borrow().deadline
    }

    /// Completes when the job must stop at once, with no further grace:
    /// the lease is lost or about to expire, or the cancel grace is over.
    /// A job that started work outside the process (a child process) ends it
    /// here; the manager waits [`crate::Job::stop_wait`] for that.
    pub async fn stop_now(&self) {
        self.stop_now.cancelled().await;
    }

    /// Every change of the lease as its keeper sees it: each confirmed
    /// renewal moves [`LeaseState::deadline`]. A job that hands the deadline
    /// to something outside the process (the daemon's command guard) follows
    /// it here.
    pub fn lease_updates(&self) -> tokio::sync::watch::Receiver<LeaseState> {
        self.lease.clone()
    }

    /// A snapshot of the lease: last confirmed renewal, deadline, renewals.
    pub fn lease_state(&self) -> LeaseState {
        self.lease.borrow().clone()
    }

    /// Publishes progress: a RUNNING status with `content`, readable from
    /// every replica while the job runs.
    pub async fn progress(&self, content: Value) -> Result<(), StoreError> {
        self.statuses
            .write(&self.status(JobState::Running, Some(content)))
            .await
    }

    pub(crate) fn status(&self, state: JobState, content: Option<Value>) -> JobStatus {
        JobStatus {
            job_type: self.job_type.clone(),
            job_id: self.job_id,
            trigger_id: self.trigger_id,
            timestamp: SystemTime::now(),
            state,
            owner: Some(self.node.clone()),
            fencing_token: Some(self.fencing_token),
            content,
        }
    }
}
