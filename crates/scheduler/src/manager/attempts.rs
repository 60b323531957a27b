//! One attempt from its lease to its end: RUNNING written, the job run
//! under its lock keeper, its ending recorded, a retry planned.

use super::*;

impl JobManager {
    /// Starts an attempt of `job_type` for `trigger_id` under its lease;
    /// with `queued`, only if this attempt claims that queue entry once it
    /// holds the lock (and the entry is removed once it runs).
    pub(super) async fn start_attempt(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        queued: Option<&QueueEntry>,
    ) -> Result<StartOutcome, ManagerError> {
        let registered = self.registered(job_type.as_str())?;
        let spec = &registered.spec;
        let error = |details: String| {
            Ok(StartOutcome::Error {
                trigger_id,
                details,
            })
        };
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return error("the replica is shutting down".into());
        }
        let job_id = JobId::new();
        let ttl = spec.keeper.ttl();
        // Which attempt of its trigger this is, for a job that retries.
        let retry = if spec.retry.count > 0 {
            let earlier = self.attempts_of(job_type, trigger_id).await? as u32;
            let attempt = earlier + 1;
            let unit = {
                use std::hash::BuildHasher;
                let h = std::collections::hash_map::RandomState::new().hash_one(job_id);
                (h % 1_000_000) as f64 / 1_000_000.0
            };
            Some(attempt::RetryNote {
                attempt,
                of: spec.retry.count + 1,
                backoff: spec.retry.jittered(attempt, unit),
            })
        } else {
            None
        };
        let lease = match self.acquire(&spec.lock_type, job_id, ttl).await {
            Ok(Acquired::Acquired(lease)) => lease,
            Ok(Acquired::Held(holder)) => return Ok(StartOutcome::Locked { trigger_id, holder }),
            Err(e) => return error(format!("{e:#}")),
        };
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            // Holding the lock, the entry is claimed once: a replica that
            // read the same head and gets the lock later finds it claimed.
            let claimed = queues.claim(entry, job_id).await;
            if !matches!(claimed, Ok(true)) {
                let _ = self.leases_of(&spec.lock_type).release(&lease).await;
                return error(match claimed {
                    Err(e) => format!("queued trigger not claimed: {e:#}"),
                    _ => "the queued trigger was claimed by another replica".into(),
                });
            }
        }
        let fencing_token = lease.fencing_token;
        let cancellation = Cancellation::new();
        let kept = match hajobs_lock_keeper::keep(
            self.leases_of(&spec.lock_type).clone(),
            lease.clone(),
            spec.keeper,
            cancellation.clone(),
        )
        .await
        {
            Ok(kept) => kept,
            Err(e) => {
                let _ = self.leases_of(&spec.lock_type).release(&lease).await;
                return error(format!("{e:#}"));
            }
        };
        let ctx = JobContext {
            job_type: job_type.clone(),
            job_id,
            trigger_id,
            fencing_token,
            node: self.inner.node.clone(),
            cancellation: cancellation.clone(),
            stop_now: Cancellation::new(),
            statuses: self.inner.statuses.clone(),
            lease: kept.subscribe(),
        };
        // Registered before anything runs, under the same lock as the
        // shutdown flag: an attempt either starts before a shutdown (which
        // then cancels and awaits it) or not at all. A job ending at once
        // still finds its entry to remove.
        {
            let mut running = self.inner.running.lock().expect("running map poisoned");
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                drop(running);
                let _ = kept.release().await;
                return error("the replica is shutting down".into());
            }
            running.insert(
                job_id,
                Running {
                    job_type: job_type.clone(),
                    trigger_id,
                    cancellation,
                },
            );
        }
        // Listed for the supervisors before RUNNING can be seen, so that
        // a pass that reads the lists finds every attempt that can die.
        self.inner.watch.attempt_starts(job_type, job_id).await;
        if let Err(e) = self
            .inner
            .statuses
            .write(&ctx.status(hajobs_core::JobState::Running, None))
            .await
        {
            // Not recorded, so not run: a job nobody can see must not run.
            self.finished(job_type, job_id);
            let _ = kept.release().await;
            self.inner.watch.attempt_not_started(job_id).await;
            return error(format!(
                "RUNNING status not recorded, attempt not started: {e:#}"
            ));
        }
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            if let Err(e) = queues.remove(entry).await {
                tracing::warn!(trigger_id = %entry.trigger_id, error = %e, "started queue entry not removed; the next look at the queue removes it");
            }
        }
        tokio::spawn({
            let manager = self.clone();
            let job = registered.job.clone();
            let (timeout, grace, statuses) = (
                spec.timeout,
                self.inner.cancel_grace,
                self.inner.statuses.clone(),
            );
            let job_type = job_type.clone();
            let lock_type = spec.lock_type.clone();
            async move {
                let state = attempt::run(job, ctx, kept, timeout, grace, statuses, retry).await;
                manager.finished(&job_type, job_id);
                if let Some(note) = retry.filter(|n| state == JobState::Failed && n.retried()) {
                    manager.retry_later(job_type.clone(), trigger_id, note);
                }
                if let Some(wake) = manager.inner.queue_wake.get(&lock_type) {
                    wake.notify_one();
                }
                let success = state.result() == JobResult::Success;
                manager.inner.watch.attempt_ended(job_id, success).await;
                state
            }
        });
        Ok(StartOutcome::Started {
            trigger_id,
            job_id,
            fencing_token,
        })
    }

    /// Runs `trigger_id` again after the backoff of `note` (a failed
    /// attempt with retries left). Should this replica stop or die first,
    /// the FAILED status says when the retry was due, and a supervisor
    /// re-runs the trigger once that has passed.
    pub(super) fn retry_later(
        &self,
        job_type: JobType,
        trigger_id: TriggerId,
        note: attempt::RetryNote,
    ) {
        let manager = self.clone();
        let mut stop = self.inner.stop_timers.subscribe();
        tokio::spawn(async move {
            tracing::info!(%job_type, %trigger_id, attempt = note.attempt, of = note.of, backoff = ?note.backoff, "attempt failed; retrying after the backoff");
            tokio::select! {
                () = tokio::time::sleep(note.backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // A lock held by another attempt is waited for up to one more
            // backoff; then the supervisor's rule takes over.
            let give_up = tokio::time::Instant::now() + note.backoff.max(FIRING_RETRY);
            loop {
                let outcome = manager
                    .start_or_queue(&job_type, trigger_id, manager.inner.node.as_str(), None)
                    .await;
                match outcome {
                    Ok(StartOutcome::Locked { .. })
                        if tokio::time::Instant::now() < give_up
                            && !manager.inner.shutting_down.load(Ordering::SeqCst) =>
                    {
                        tokio::time::sleep(FIRING_RETRY).await
                    }
                    other => {
                        tracing::info!(%job_type, %trigger_id, outcome = ?other, "retry of a failed attempt");
                        return;
                    }
                }
            }
        });
    }

    /// How many attempts of `trigger_id` the newest statuses of `job_type`
    /// hold (its newest [`TRIGGER_HISTORY`] attempts are looked at): the one
    /// count for retries, retriggers and handovers.
    pub async fn attempts_of(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
    ) -> Result<usize, ManagerError> {
        Ok(self
            .inner
            .statuses
            .history(job_type, TRIGGER_HISTORY)
            .await?
            .iter()
            .filter_map(StatusEntry::status)
            .filter(|s| s.trigger_id == trigger_id)
            .count())
    }

    pub(super) fn finished(&self, job_type: &JobType, job_id: JobId) {
        let mut running = self.inner.running.lock().expect("running map poisoned");
        if running
            .get(&job_id)
            .is_some_and(|r| &r.job_type == job_type)
        {
            running.remove(&job_id);
        }
    }

    /// Lists, for the supervisors, a FAILED ending this replica recorded
    /// for an attempt that never ran (a claim nobody followed up).
    pub(crate) async fn watch_ending(&self, job_type: &JobType, job_id: JobId) {
        self.inner.watch.ended_elsewhere(job_type, job_id).await;
    }
}
