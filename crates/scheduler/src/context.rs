//! [`JobContext`]: what a running job knows and can do.

use std::sync::Arc;
use std::time::SystemTime;

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
    /// Where progress goes.
    pub(crate) statuses: Arc<StatusStore>,
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
