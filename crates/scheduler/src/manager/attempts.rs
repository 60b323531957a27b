//! One attempt from its lease to its end: RUNNING written, the job run
//! under its lock keeper, its ending recorded, a retry planned.

use super::*;

/// A lease taken for a new attempt before the attempt starts: its job id
/// and what the acquisition gave. The attempt is listed for the
/// supervisors from then on; one that does not start is unlisted.
pub(super) struct Taken {
    job_id: JobId,
    acquired: Result<Acquired, hajobs_core::StoreError>,
}

/// How an attempt gets its lease.
pub(super) enum LeaseFirst {
    /// Taken ahead ([`JobManager::take_lease`]).
    Taken(Taken),
    /// Taken now, and the attempt listed for the supervisors in the same
    /// round trip: the lock is expected free.
    Now,
    /// Taken now, the attempt listed only once it holds it: a retry of a
    /// lock just found held, which would otherwise list and unlist an
    /// attempt at every try.
    Retry,
}

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
        self.start_attempt_with(job_type, trigger_id, queued, LeaseFirst::Now, None)
            .await
    }

    /// Takes the lease of a new attempt of `job_type` ahead of its start
    /// (a cron firing takes it while its claim is in flight), for
    /// [`JobManager::start_attempt_with`].
    pub(super) async fn take_lease(&self, job_type: &JobType) -> Result<Taken, ManagerError> {
        let spec = &self.registered(job_type.as_str())?.spec;
        let job_id = JobId::new();
        let acquired = self.lease_listed(spec, job_id).await;
        Ok(Taken { job_id, acquired })
    }

    /// Takes the lease of attempt `job_id` and lists the attempt for the
    /// supervisors at the same time: listed before its RUNNING status can
    /// be seen, one round trip instead of two. An attempt that does not
    /// get the lease is unlisted with the next write of the list (listed
    /// meanwhile, it costs a supervisor pass one read and decides nothing:
    /// it has no RUNNING status).
    async fn lease_listed(
        &self,
        spec: &JobSpec,
        job_id: JobId,
    ) -> Result<Acquired, hajobs_core::StoreError> {
        let (acquired, ()) = futures::join!(
            steps::step(
                "lease",
                self.acquire(&spec.lock_type, job_id, spec.keeper.ttl())
            ),
            steps::step(
                "watch",
                self.inner.watch.attempt_starts(&spec.job_type, job_id)
            ),
        );
        if !matches!(acquired, Ok(Acquired::Acquired(_))) {
            self.inner.watch.attempt_not_started(job_id);
        }
        acquired
    }

    /// Gives up a lease taken ahead that will not be used.
    pub(super) async fn give_back(&self, job_type: &JobType, taken: Taken) {
        if let (Ok(registered), Ok(Acquired::Acquired(lease))) =
            (self.registered(job_type.as_str()), taken.acquired)
        {
            self.not_started(&registered.spec, &lease).await;
        }
    }

    /// An attempt that holds `lease` does not start after all: the lease
    /// is released and the attempt unlisted.
    async fn not_started(&self, spec: &JobSpec, lease: &hajobs_core::Lease) {
        let _ = self.leases_of(&spec.lock_type).release(lease).await;
        self.inner.watch.attempt_not_started(lease.job_id);
    }

    /// [`JobManager::start_attempt`], with the lease taken as `lease` says;
    /// `known`: what the trigger carries, when known here (else read back,
    /// see [`JobManager::args_for`]).
    pub(super) async fn start_attempt_with(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        queued: Option<&QueueEntry>,
        lease: LeaseFirst,
        known: Option<TriggerArgs>,
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
            if let LeaseFirst::Taken(taken) = lease {
                self.give_back(job_type, taken).await;
            }
            return error("the replica is shutting down".into());
        }
        let (job_id, taken, list_now) = match lease {
            LeaseFirst::Taken(Taken { job_id, acquired }) => (job_id, Some(acquired), false),
            LeaseFirst::Now => (JobId::new(), None, true),
            LeaseFirst::Retry => (JobId::new(), None, false),
        };
        let ttl = spec.keeper.ttl();
        let listed_ahead = taken.is_some() || list_now;
        // What the trigger carries: an attempt whose parameters cannot be
        // read or no longer fit its job does not start.
        let args = match self.args_for(spec, trigger_id, known).await {
            Ok(args) => args,
            Err(details) => {
                if let Some(Ok(Acquired::Acquired(lease))) = &taken {
                    self.not_started(spec, lease).await;
                }
                return error(details);
            }
        };
        // Which attempt of its trigger this is, for a job that retries.
        let retry = if spec.retry.count > 0 {
            let earlier = match self.attempts_of(job_type, trigger_id).await {
                Ok(n) => n as u32,
                Err(e) => {
                    // A lease taken ahead is not kept for nothing.
                    if let Some(Ok(Acquired::Acquired(lease))) = &taken {
                        self.not_started(spec, lease).await;
                    }
                    return Err(e);
                }
            };
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
        let acquired = match taken {
            Some(acquired) => acquired,
            None if list_now => self.lease_listed(spec, job_id).await,
            None => steps::step("lease", self.acquire(&spec.lock_type, job_id, ttl)).await,
        };
        let lease = match acquired {
            Ok(Acquired::Acquired(lease)) => lease,
            Ok(Acquired::Held(holder)) => return Ok(StartOutcome::Locked { trigger_id, holder }),
            Err(e) => return error(format!("{e:#}")),
        };
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            // Holding the lock, the entry is claimed once: a replica that
            // read the same head and gets the lock later finds it claimed.
            let claimed = queues.claim(entry, job_id).await;
            if !matches!(claimed, Ok(true)) {
                self.not_started(spec, &lease).await;
                return error(match claimed {
                    Err(e) => format!("queued trigger not claimed: {e:#}"),
                    _ => "the queued trigger was claimed by another replica".into(),
                });
            }
        }
        let fencing_token = lease.fencing_token;
        let restart = spec.keep_running.map(|policy| attempt::RestartNote {
            policy,
            streak: self.restart_streak(job_type),
        });
        let cancellation = Cancellation::new();
        let keeper = hajobs_lock_keeper::keep(
            self.leases_of(&spec.lock_type).clone(),
            lease.clone(),
            spec.keeper,
            cancellation.clone(),
        );
        let kept = match steps::step("keeper", keeper).await {
            Ok(kept) => kept,
            Err(e) => {
                self.not_started(spec, &lease).await;
                return error(format!("{e:#}"));
            }
        };
        // A job with checkpoints fences its trigger's with this lease's
        // token and reads the last: an attempt that is not the newest of
        // its trigger does not run.
        let last_checkpoint = match (&self.inner.checkpoints, spec.checkpoints) {
            (Some(store), true) => {
                let fenced = store
                    .fence(trigger_id, job_type.as_str(), fencing_token)
                    .await;
                match fenced {
                    Ok(hajobs_core::Fenced::Newest { last }) => last,
                    Ok(hajobs_core::Fenced::Stale(newer)) => {
                        let _ = kept.release().await;
                        self.inner.watch.attempt_not_started(job_id);
                        return error(format!(
                            "a newer attempt of trigger {trigger_id} (fencing token {newer}) holds its checkpoint: this one does not start"
                        ));
                    }
                    Err(e) => {
                        let _ = kept.release().await;
                        self.inner.watch.attempt_not_started(job_id);
                        return error(format!("checkpoint not fenced, attempt not started: {e:#}"));
                    }
                }
            }
            _ => None,
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
            args,
            checkpoints: self.inner.checkpoints.clone().filter(|_| spec.checkpoints),
            last_checkpoint: last_checkpoint.map(|c| Arc::new(c.value)),
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
                self.inner.watch.attempt_not_started(job_id);
                return error("the replica is shutting down".into());
            }
            running.insert(
                job_id,
                Running {
                    job_type: job_type.clone(),
                    trigger_id,
                    cancellation,
                    ended: tokio::sync::watch::channel(()).0,
                },
            );
        }
        // Listed for the supervisors before RUNNING can be seen, so that
        // a pass that reads the lists finds every attempt that can die
        // (with the lease, unless this is a retry of a held lock).
        if !listed_ahead {
            steps::step("watch", self.inner.watch.attempt_starts(job_type, job_id)).await;
        }
        let running = ctx.status(hajobs_core::JobState::Running, ctx.with_args(None));
        if let Err(e) = steps::step("running", self.inner.statuses.write(&running)).await {
            // Not recorded, so not run: a job nobody can see must not run.
            self.finished(job_type, job_id);
            let _ = kept.release().await;
            self.inner.watch.attempt_not_started(job_id);
            return error(format!(
                "RUNNING status not recorded, attempt not started: {e:#}"
            ));
        }
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            if let Err(e) = queues.remove(entry).await {
                tracing::warn!(trigger_id = %entry.trigger_id, error = %e, "started queue entry not removed; the next look at the queue removes it");
            }
        }
        let before_final = self.follow_up_hook(spec, &ctx);
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
                let state = attempt::run(
                    job,
                    ctx,
                    kept,
                    timeout,
                    grace,
                    statuses,
                    retry,
                    restart,
                    before_final,
                )
                .await;
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
                    .start_or_queue(
                        &job_type,
                        trigger_id,
                        manager.inner.node.as_str(),
                        None,
                        None,
                    )
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
