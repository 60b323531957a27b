//! The queue runners: the oldest queued trigger of a lock type started once
//! the lock is free, claimed once cluster-wide; expired entries recorded.

use super::*;

/// What a look at the head of a lock type's queue found.
enum Head {
    /// Nobody waits.
    Empty,
    /// The head waits (lock held, claimed, or another replica's job).
    Waits,
    /// The head was settled (started, expired, closed): look again at once.
    Settled,
}

impl JobManager {
    /// The queue runner of one lock type on this replica: whenever woken
    /// (an attempt of the lock type ended here, a trigger was queued here)
    /// or every [`QUEUE_POLL`], starts the oldest queued trigger if its job
    /// type is registered here and the lock is free. Expired entries are
    /// recorded SKIPPED; claimed entries whose start was lost, FAILED.
    pub(super) async fn run_queue(
        &self,
        lock_type: LockType,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(queues) = self.inner.queues.clone() else {
            return;
        };
        // An empty queue is looked at less often: what is queued here, and
        // every end of an attempt here, wakes the runner at once.
        let mut poll = QUEUE_POLL;
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            // Several entries may be settled in a row (expired, lost).
            for _ in 0..16 {
                match self.serve_queue_head(&queues, &lock_type).await {
                    Ok(Head::Settled) => continue,
                    Ok(head) => {
                        poll = match head {
                            Head::Empty => QUEUE_IDLE_POLL,
                            _ => QUEUE_POLL,
                        };
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%lock_type, error = %e, "queue not served; trying again");
                        break;
                    }
                }
            }
        }
    }

    /// Deals with the head of `lock_type`'s queue once, without waiting:
    /// a claimed head whose start was lost is closed FAILED, an expired one
    /// SKIPPED, one of a job type registered here is started if its lock is
    /// free; anything else is left to wait for the next look.
    async fn serve_queue_head(
        &self,
        queues: &QueueStore,
        lock_type: &LockType,
    ) -> Result<Head, ManagerError> {
        let Some(entry) = queues.head(lock_type).await? else {
            return Ok(Head::Empty);
        };
        let now = SystemTime::now();
        let job_type = JobType::new(entry.job_type.clone()).ok();
        if let Some(claimed_at) = entry.claimed_at {
            // Claimed: its attempt starts now, or its claimant died between
            // the claim and RUNNING.
            if now.duration_since(claimed_at).unwrap_or_default() < QUEUE_CLAIM_STALE {
                return Ok(Head::Waits);
            }
            let started = match &job_type {
                Some(t) => self.attempts_of(t, entry.trigger_id).await? > 0,
                None => false,
            };
            if !started {
                if let Some(job_type) = &job_type {
                    let status = JobStatus::never_ran(
                        job_type.clone(),
                        entry.trigger_id,
                        JobState::Failed,
                        Some(self.inner.node.clone()),
                        serde_json::json!({
                            "error": "the queued trigger was claimed but never started (its replica died or stalled before starting it)",
                            "lock_type": lock_type.as_str(),
                        }),
                    );
                    self.inner.statuses.write(&status).await?;
                    self.inner
                        .watch
                        .ended_elsewhere(job_type, status.job_id)
                        .await;
                }
            }
            queues.remove(&entry).await?;
            return Ok(Head::Settled);
        }
        if entry.expired(now) {
            if queues.remove_unclaimed(&entry).await? {
                let waited = entry
                    .queued_at()
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                let timeout = entry.expiry.as_deref().unwrap_or("lock_wait_timeout");
                tracing::warn!(%lock_type, job_type = entry.job_type, trigger_id = %entry.trigger_id, ?waited, timeout, "queued trigger gave up waiting for its lock");
                if let Some(job_type) = &job_type {
                    self.inner
                        .statuses
                        .write(&JobStatus::never_ran(
                            job_type.clone(),
                            entry.trigger_id,
                            JobState::Skipped,
                            Some(self.inner.node.clone()),
                            serde_json::json!({
                                hajobs_core::status::content_keys::REASON: format!("{timeout}: waited {} s in the queue of lock type `{lock_type}` without getting it", waited.as_secs()),
                                "timeout": timeout,
                                "queued_by": entry.queued_by,
                            }),
                        ))
                        .await?;
                }
            }
            return Ok(Head::Settled);
        }
        let Some(job_type) = job_type.filter(|t| self.inner.jobs.contains_key(t)) else {
            // Another replica's job: it runs it.
            return Ok(Head::Waits);
        };
        match self
            .start_attempt(&job_type, entry.trigger_id, Some(&entry))
            .await?
        {
            StartOutcome::Started { job_id, .. } => {
                tracing::info!(%lock_type, %job_type, trigger_id = %entry.trigger_id, %job_id, "queued trigger started");
                Ok(Head::Waits)
            }
            // Claimed by another replica first: look at the next.
            StartOutcome::Error { .. } => Ok(Head::Waits),
            _ => Ok(Head::Waits),
        }
    }
}
