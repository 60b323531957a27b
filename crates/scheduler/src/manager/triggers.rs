//! Triggers by hand, through the cluster or by the supervisor: a trigger
//! id, then an attempt, a place in the queue, or the running attempt
//! replaced.

use super::*;

impl JobManager {
    /// Triggers `job_type` by hand: a new trigger id, then an attempt (or,
    /// for a job that queues, a place in its lock type's queue).
    pub async fn trigger(&self, job_type: &str) -> Result<StartOutcome, ManagerError> {
        self.trigger_with(job_type, TriggerArgs::none()).await
    }

    /// Triggers `job_type` by hand with parameters and a payload: checked
    /// against the job's declaration (refused with
    /// [`ManagerError::BadArgs`], naming the parameter, before anything is
    /// recorded), defaults added, recorded for every later attempt of the
    /// trigger, then started or queued as [`JobManager::trigger`] does.
    pub async fn trigger_with(
        &self,
        job_type: &str,
        given: TriggerArgs,
    ) -> Result<StartOutcome, ManagerError> {
        let spec = &self.registered(job_type)?.spec;
        let args = Self::resolve_args(spec, given)?;
        let trigger_id = TriggerId::new();
        let by = self.inner.node.as_str();
        self.record_args(spec, trigger_id, &args, by).await?;
        self.start_or_queue(&spec.job_type, trigger_id, by, None, Some(args))
            .await
    }

    /// Serves a trigger asked of the cluster (`hajobs trigger`) under
    /// `trigger_id`: started here, or queued for a job that queues, with
    /// `requested_by` named in the queue.
    pub async fn trigger_request(
        &self,
        job_type: &str,
        trigger_id: TriggerId,
        requested_by: Option<&str>,
    ) -> Result<StartOutcome, ManagerError> {
        let job_type = self.registered(job_type)?.spec.job_type.clone();
        let by = match requested_by {
            Some(user) => format!("{user} via {}", self.inner.node),
            None => self.inner.node.to_string(),
        };
        self.start_or_queue(&job_type, trigger_id, &by, None, None)
            .await
    }

    /// Starts `trigger_id` of `job_type`; for a job that queues, queues it
    /// instead when its lock is held or others already wait for it; for a
    /// job with concurrency `replace`, stops its running attempt first. A
    /// queued cron firing waits at most what is left of its starting
    /// deadline (`deadline`), if that is shorter than the lock wait timeout.
    /// `args`: what the trigger carries, when known here (else its attempt
    /// reads it back).
    pub(super) async fn start_or_queue(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        queued_by: &str,
        deadline: Option<Duration>,
        args: Option<TriggerArgs>,
    ) -> Result<StartOutcome, ManagerError> {
        let spec = &self.registered(job_type.as_str())?.spec;
        let queues = self
            .inner
            .queues
            .as_ref()
            .filter(|_| spec.on_locked == OnLocked::Queue);
        // Never ahead of the triggers already waiting.
        let waiting = match queues {
            Some(q) => q.head(&spec.lock_type).await?.is_some(),
            None => false,
        };
        if !waiting {
            let mut outcome = self
                .start_attempt_with(job_type, trigger_id, None, LeaseFirst::Now, args.clone())
                .await?;
            if let (StartOutcome::Locked { holder, .. }, Concurrency::Replace) =
                (&outcome, spec.concurrency)
            {
                if self.stop_to_replace(spec, holder).await? {
                    outcome = self.start_when_free(spec, trigger_id, args).await?;
                }
            }
            match (outcome, queues) {
                (StartOutcome::Locked { .. }, Some(_)) => {}
                (other, _) => return Ok(other),
            }
        }
        let queues = queues.expect("only a job that queues gets here");
        let (wait, expiry) = match deadline {
            Some(d) if d < spec.lock_wait_timeout => (d, "starting_deadline"),
            _ => (spec.lock_wait_timeout, "lock_wait_timeout"),
        };
        let entry = queues
            .enqueue(
                &spec.lock_type,
                job_type.as_str(),
                trigger_id,
                queued_by,
                wait,
                expiry,
            )
            .await?;
        let position = queues
            .list(&spec.lock_type)
            .await?
            .iter()
            .position(|e| e.entry_id == entry.entry_id)
            .map_or(1, |p| p + 1);
        tracing::info!(%job_type, %trigger_id, lock_type = %spec.lock_type, position, "lock held: trigger queued");
        if let Some(wake) = self.inner.queue_wake.get(&spec.lock_type) {
            wake.notify_one();
        }
        Ok(StartOutcome::Queued {
            trigger_id,
            position,
        })
    }

    /// For concurrency `replace`: if `holder` is a running attempt of the
    /// same job type, asks it to stop (here, or through the lock on its
    /// replica) and says so; another job type's attempt is left alone.
    pub(super) async fn stop_to_replace(
        &self,
        spec: &JobSpec,
        holder: &Holder,
    ) -> Result<bool, ManagerError> {
        let local = {
            let running = self.inner.running.lock().expect("running map poisoned");
            running
                .get(&holder.job_id)
                .filter(|r| r.job_type == spec.job_type)
                .map(|r| r.cancellation.clone())
        };
        if let Some(cancellation) = local {
            tracing::info!(job_type = %spec.job_type, job_id = %holder.job_id, "replaced by a new trigger: cancelling the running attempt here");
            cancellation.cancel(CancelReason::Requested);
            return Ok(true);
        }
        Ok(matches!(
            self.cancel_holder(spec, &holder.lock_type).await?,
            Some(CancelOutcome::CancelledRemotely(_))
        ))
    }

    /// Tries to start `trigger_id` until the replaced attempt has ended and
    /// released the lock: at most its cancel grace, stop wait and a lease
    /// TTL (should its replica have died meanwhile) and a little more.
    pub(super) async fn start_when_free(
        &self,
        spec: &JobSpec,
        trigger_id: TriggerId,
        args: Option<TriggerArgs>,
    ) -> Result<StartOutcome, ManagerError> {
        let wait = self.inner.cancel_grace
            + Duration::from_secs(5)
            + spec.keeper.ttl().duration()
            + spec.keeper.renew_interval();
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let outcome = self
                .start_attempt_with(
                    &spec.job_type,
                    trigger_id,
                    None,
                    LeaseFirst::Retry,
                    args.clone(),
                )
                .await?;
            if !matches!(outcome, StartOutcome::Locked { .. })
                || tokio::time::Instant::now() >= give_up
                || self.inner.shutting_down.load(Ordering::SeqCst)
            {
                return Ok(outcome);
            }
            tokio::time::sleep(FIRING_RETRY).await;
        }
    }

    /// Re-runs `trigger_id` of `job_type` with a new attempt (the supervisor's retrigger).
    pub async fn retrigger(
        &self,
        job_type: &str,
        trigger_id: TriggerId,
    ) -> Result<StartOutcome, ManagerError> {
        let job_type = self.registered(job_type)?.spec.job_type.clone();
        self.start_attempt(&job_type, trigger_id, None).await
    }
}
