//! Cancelling attempts, here or through their lock wherever they run, and
//! the graceful shutdown.

use super::*;

impl JobManager {
    /// Cancels the running attempts of `job_type`, wherever they run (one,
    /// or several on a lock type with capacity); says what became of the
    /// first.
    pub async fn cancel(&self, job_type: &str) -> Result<CancelOutcome, ManagerError> {
        let spec = &self.registered(job_type)?.spec;
        let local: Vec<(JobId, Cancellation)> = {
            let running = self.inner.running.lock().expect("running map poisoned");
            running
                .iter()
                .filter(|(_, r)| r.job_type == spec.job_type)
                .map(|(id, r)| (*id, r.cancellation.clone()))
                .collect()
        };
        let mut outcome = None;
        for (job_id, cancellation) in local {
            cancellation.cancel(CancelReason::Requested);
            tracing::info!(job_type, %job_id, "cancel requested; the attempt runs here");
            outcome.get_or_insert(CancelOutcome::CancelledLocally(job_id));
        }
        // Elsewhere: is a slot of the lock held by an attempt of this job type?
        for slot in self.slots(&spec.lock_type) {
            if let Some(o) = self.cancel_holder(spec, &slot).await? {
                outcome.get_or_insert(o);
            }
        }
        Ok(outcome.unwrap_or(CancelOutcome::NotRunning))
    }

    pub(super) async fn cancel_holder(
        &self,
        spec: &JobSpec,
        slot: &LockType,
    ) -> Result<Option<CancelOutcome>, ManagerError> {
        let Some(holder) = self.leases_of(&spec.lock_type).read(slot, true).await? else {
            return Ok(None);
        };
        if self.is_running_here(holder.job_id) {
            return Ok(None);
        }
        let attempt = self
            .inner
            .statuses
            .get(&spec.job_type, holder.job_id)
            .await?;
        let ours =
            matches!(&attempt, Some(StatusEntry::Status(s)) if s.result() == JobResult::Pending);
        if !ours {
            return Ok(None);
        }
        if holder.is_foreign() {
            // It would never see the request: say so rather than pretend.
            return Ok(Some(CancelOutcome::ForeignHolder(holder)));
        }
        // The holder sees the request at its next renewal, stops the job,
        // records CANCELED and releases the lease itself: the lock is never
        // free while the attempt still runs.
        if self
            .leases_of(&spec.lock_type)
            .request_cancel(slot, holder.job_id)
            .await?
        {
            tracing::info!(job_type = %spec.job_type, job_id = %holder.job_id, owner = ?holder.owner, "cancel requested through the lock");
            Ok(Some(CancelOutcome::CancelledRemotely(holder)))
        } else {
            Ok(None)
        }
    }

    /// Whether attempt `job_id` runs in this process now.
    pub fn is_running_here(&self, job_id: JobId) -> bool {
        self.inner
            .running
            .lock()
            .expect("running map poisoned")
            .contains_key(&job_id)
    }

    /// Graceful shutdown: stops the cron schedules, cancels every running
    /// attempt, waits up to `grace` for them to record CANCELED and release
    /// their leases.
    pub async fn shutdown(&self, grace: Duration) {
        {
            // Under the running map's lock: no attempt starts after this.
            let running = self.inner.running.lock().expect("running map poisoned");
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            for r in running.values() {
                r.cancellation.cancel(CancelReason::Shutdown);
            }
        }
        self.inner.stop_timers.send_replace(true);
        let timers = std::mem::take(&mut *self.inner.timers.lock().expect("timers poisoned"));
        for timer in timers {
            let _ = timer.await;
        }
        // Each attempt leaves the map once it has recorded its end and
        // released its lease.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left: Vec<(JobType, JobId)> = {
                let running = self.inner.running.lock().expect("running map poisoned");
                running
                    .iter()
                    .map(|(id, r)| (r.job_type.clone(), *id))
                    .collect()
            };
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for (job_type, job_id) in left {
                    tracing::error!(%job_type, %job_id, "attempt did not end within the shutdown grace; its lease expires by TTL");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.watch.close();
        tracing::info!(node = %self.inner.node, "job manager stopped");
    }
}
