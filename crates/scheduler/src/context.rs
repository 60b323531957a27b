//! [`JobContext`]: what a running job knows and can do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hajobs_lock_keeper::LeaseState;

use hajobs_core::{
    Cancellation, CheckpointStore, FencingToken, JobId, JobState, JobStatus, JobType, NodeId,
    StatusStore, TriggerArgs, TriggerId,
};
use serde_json::Value;

use crate::error::{CheckpointError, MAX_PROGRESS_BYTES, ProgressError};
use crate::job::JobError;

/// Whether a job's lease certainly still holds, for code that cannot
/// await (see [`JobContext::spawn_blocking`]). Reading it needs no task to
/// run: it looks at the cancellation flag and at the keeper's deadline on
/// the monotonic clock, so it is exact even while the runtime is stalled.
#[derive(Debug, Clone)]
pub struct LeaseCheck {
    cancellation: Cancellation,
    lease: tokio::sync::watch::Receiver<LeaseState>,
}

impl LeaseCheck {
    pub(crate) fn new(
        cancellation: Cancellation,
        lease: tokio::sync::watch::Receiver<LeaseState>,
    ) -> Self {
        Self {
            cancellation,
            lease,
        }
    }

    pub(crate) fn updates(&self) -> tokio::sync::watch::Receiver<LeaseState> {
        self.lease.clone()
    }

    /// True while the job may go on: not cancelled, before the deadline.
    pub fn is_valid(&self) -> bool {
        !self.cancellation.is_cancelled() && Instant::now() < self.lease.borrow().deadline
    }
}

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
    /// What its trigger carries.
    pub(crate) args: Arc<TriggerArgs>,
    /// Where its checkpoints go, for a job that declares them.
    pub(crate) checkpoints: Option<Arc<CheckpointStore>>,
    /// Its trigger's last checkpoint when the attempt started.
    pub(crate) last_checkpoint: Option<Arc<Value>>,
}

impl JobContext {
    /// The trigger's parameters, checked against the job's declaration,
    /// defaults added: the same for every attempt of the trigger (retries,
    /// re-runs, handovers).
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.args.params
    }

    /// One parameter, if the trigger has it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.args.params.get(name).map(String::as_str)
    }

    /// The trigger's payload, if it carries one.
    pub fn payload(&self) -> Option<&Value> {
        self.args.payload.as_ref()
    }

    /// Both, as the trigger carries them.
    pub fn args(&self) -> &TriggerArgs {
        &self.args
    }

    /// For a follow-up (`on_success`, `on_failure`): the attempt it
    /// follows and the chain it belongs to.
    pub fn parent(&self) -> Option<&hajobs_core::Parent> {
        self.args.parent.as_ref()
    }

    /// The last checkpoint of this attempt's trigger when it started
    /// (recorded by an earlier attempt of it: a retry, a re-run, a
    /// handover, an always-on restart), for a job that declares
    /// checkpoints.
    pub fn last_checkpoint(&self) -> Option<&Value> {
        self.last_checkpoint.as_deref()
    }

    /// Records `value` as the trigger's checkpoint: the next attempt of the
    /// trigger starts from it. Written only while this attempt's lease
    /// certainly holds, and only if no newer attempt of the trigger has
    /// fenced it (conditional on this attempt's fencing token): a stale
    /// holder's checkpoint is refused ([`CheckpointError::Stale`]).
    pub async fn checkpoint(&self, value: Value) -> Result<(), CheckpointError> {
        let store = self
            .checkpoints
            .as_ref()
            .ok_or(CheckpointError::NotDeclared)?;
        let size = serde_json::to_string(&value).map_or(usize::MAX, |s| s.len());
        let limit = hajobs_core::checkpoint_store::MAX_CHECKPOINT_BYTES;
        if size > limit {
            return Err(CheckpointError::TooLarge { size, limit });
        }
        if !self.lease_valid() {
            return Err(CheckpointError::LeaseLost);
        }
        match store
            .write(self.trigger_id, self.job_id, self.fencing_token, &value)
            .await?
        {
            true => Ok(()),
            false => Err(CheckpointError::Stale),
        }
    }

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

    /// A cheap handle for code that cannot await: blocking steps on another
    /// thread check [`LeaseCheck::is_valid`] between steps.
    pub fn lease_check(&self) -> LeaseCheck {
        LeaseCheck {
            cancellation: self.cancellation.clone(),
            lease: self.lease.clone(),
        }
    }

    /// Runs blocking work (no await points: a CPU-bound loop, a synchronous
    /// client) on tokio's blocking threads, handing it a [`LeaseCheck`].
    ///
    /// Cancellation cannot interrupt a thread: when the lease is lost the
    /// manager drops this future at once, but the closure runs on until it
    /// returns. So the closure must call [`LeaseCheck::is_valid`] before each
    /// externally visible step and stop when it is false, and pass
    /// [`JobContext::fencing_token`] to the systems it writes to. Blocking
    /// inside an `async` job instead (without this helper) is worse: it also
    /// stalls the runtime thread that renews leases.
    pub async fn spawn_blocking<F, R>(&self, work: F) -> Result<R, JobError>
    where
        F: FnOnce(LeaseCheck) -> R + Send + 'static,
        R: Send + 'static,
    {
        let check = self.lease_check();
        tokio::task::spawn_blocking(move || work(check))
            .await
            .map_err(|e| JobError::new(format!("blocking work failed: {e}")))
    }

    /// A snapshot of the lease: last confirmed renewal, deadline, renewals.
    pub fn lease_state(&self) -> LeaseState {
        self.lease.borrow().clone()
    }

    /// Publishes progress: a RUNNING status with `content`, readable from
    /// every replica while the job runs.
    ///
    /// Each update is a row of the attempt: publish when something changed
    /// for a reader (a batch done, a phase begun), not in a tight loop. An
    /// update larger than [`MAX_PROGRESS_BYTES`] as JSON is refused
    /// ([`ProgressError::TooLarge`]) and nothing is written.
    pub async fn progress(&self, content: Value) -> Result<(), ProgressError> {
        let size = serde_json::to_string(&content).map_or(usize::MAX, |s| s.len());
        if size > MAX_PROGRESS_BYTES {
            return Err(ProgressError::TooLarge {
                size,
                limit: MAX_PROGRESS_BYTES,
            });
        }
        Ok(self
            .statuses
            .write(&self.status(JobState::Running, Some(content)))
            .await?)
    }

    /// Adds what the trigger carries to a status's content (its
    /// parameters, the payload's size), for the history: a content that is
    /// not an object is left as the job gave it.
    pub(crate) fn with_args(&self, mut content: Option<Value>) -> Option<Value> {
        if self.args.is_empty() {
            return content;
        }
        let c = content.get_or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(map) = c {
            use hajobs_core::status::content_keys;
            if !self.args.params.is_empty() {
                map.insert(
                    content_keys::PARAMS.into(),
                    serde_json::json!(self.args.params),
                );
            }
            if let Some(text) = self.args.payload_text() {
                map.insert(content_keys::PAYLOAD_BYTES.into(), text.len().into());
            }
            if let Some(p) = &self.args.parent {
                map.insert("parent_job_type".into(), p.job_type.clone().into());
                map.insert("parent_job_id".into(), p.job_id.to_string().into());
                map.insert("chain_id".into(), p.chain_id.to_string().into());
            }
        }
        content
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
