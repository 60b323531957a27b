//! Cron: each job type's timer, a firing claimed once cluster-wide and
//! started, missed runs caught up, and firings whose start was lost closed.

use super::*;

impl JobManager {
    /// Reads which other replicas configure which job types (the order of
    /// cron claims) and whether cron claims have moved to their day-bucketed
    /// table (schema 10); on failure, keeps what it knew.
    pub(super) async fn refresh_peers(&self) {
        if let Err(e) = self.inner.firings.refresh().await {
            tracing::warn!(error = %e, "schema version of the cron claims not read; looked again later");
        }
        match self.inner.nodes.list().await {
            Ok(records) => self.inner.peers.set(&records, &self.inner.node),
            Err(e) => {
                tracing::warn!(error = %e, "node registry not read; cron claims keep the order they had")
            }
        }
    }

    /// The cron of one job type: sleeps until its next scheduled instant
    /// on tokio's timer (millisecond resolution), then fires that instant
    /// in a task of its own, so that a firing waiting for a held lock never
    /// delays the next. The instant is read on this replica's clock; the
    /// firing's claim makes it run once cluster-wide whatever the clocks say.
    pub(super) async fn timer(
        &self,
        job_type: JobType,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Ok(registered) = self.registered(job_type.as_str()) else {
            return;
        };
        let Some(schedule) = registered.spec.schedule.clone() else {
            return;
        };
        let mut after = self.inner.clock.now();
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(next) = schedule.next_after(after) else {
                tracing::info!(%job_type, "the schedule has no further firings");
                return;
            };
            // A moment before the instant, the job prepares its start
            // (nothing runs: no lease is held).
            let warm_at = next - chrono::Duration::from_std(WARM_UP).unwrap_or_default();
            let early = (warm_at - self.inner.clock.now())
                .to_std()
                .unwrap_or_default();
            if !early.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(early) => {}
                    _ = stop.changed() => return,
                }
                registered.job.warm_up(job_type.as_str());
            }
            // Sleep to the instant; the wall clock may be slewed meanwhile,
            // so sleep again until it agrees (never fire early).
            loop {
                let left = (next - self.inner.clock.now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    _ = stop.changed() => return,
                }
            }
            if *stop.borrow() {
                return;
            }
            let manager = self.clone();
            let job = job_type.clone();
            tokio::spawn(async move {
                manager.fire(&job, next).await;
            });
            after = next.max(self.inner.clock.now());
        }
    }

    /// Claims the firing of `job_type` at `instant` and, if this replica won
    /// the claim, starts it under the trigger id derived from both.
    pub async fn fire(&self, job_type: &JobType, instant: DateTime<Utc>) -> Option<StartOutcome> {
        use tracing::Instrument;
        self.fire_claimed(job_type, instant)
            .instrument(steps::firing(instant.timestamp_millis()))
            .await
    }

    async fn fire_claimed(
        &self,
        job_type: &JobType,
        instant: DateTime<Utc>,
    ) -> Option<StartOutcome> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        let at = SystemTime::from(instant);
        let trigger_id = TriggerId::for_firing(job_type.as_str(), at);
        let spec = self.registered(job_type.as_str()).ok().map(|r| &r.spec);
        let queues = spec.is_some_and(|s| s.on_locked == OnLocked::Queue);
        let rank = self
            .inner
            .peers
            .rank(&self.inner.node, job_type, instant.timestamp_millis());
        let claim = steps::step("claim", self.claim_firing(job_type, instant, rank));
        // The preferred replica takes the lease while its claim is in
        // flight: one round trip instead of two. The claim still decides
        // who runs the firing (a lease taken for a firing lost is given
        // back at once); the lease still decides that nothing runs twice.
        // Only when the ranks are shared (this replica is in the registry):
        // without it every replica ranks itself first, and their leases
        // taken ahead would keep the claim's winner waiting. Not with a
        // `min_interval` gate, which cannot be given back.
        let gated = spec.is_some_and(|s| {
            self.inner
                .locks
                .limits(&s.lock_type)
                .is_some_and(|l| l.min_interval.is_some())
        });
        let ahead = rank == 0 && !queues && !gated && self.inner.peers.coordinated();
        let (won, taken) = if ahead {
            let (won, taken) = futures::join!(claim, self.take_lease(job_type));
            (won, taken.ok())
        } else {
            (claim.await, None)
        };
        if !won {
            if let Some(taken) = taken {
                self.give_back(job_type, taken).await;
            }
            return None;
        }
        let deadline = StartingDeadline {
            instant,
            within: spec.and_then(|s| s.starting_deadline),
        };
        if let Some(d) = deadline.passed(self.inner.clock.now()) {
            if let Some(taken) = taken {
                self.give_back(job_type, taken).await;
            }
            self.skip_past_deadline(job_type, trigger_id, instant, d)
                .await;
            self.record_firing(job_type, at, FiringOutcome::Skipped)
                .await;
            return None;
        }
        let (outcome, listed) = if queues {
            // A firing of a job that queues joins its lock type's queue
            // when the lock is held, like any trigger of it; what is left
            // of the starting deadline bounds its wait.
            let left = deadline.left(self.inner.clock.now());
            let outcome = self
                .start_or_queue(
                    job_type,
                    trigger_id,
                    self.inner.node.as_str(),
                    left,
                    self.firing_args(job_type),
                )
                .await;
            (outcome, false)
        } else {
            self.start_waiting_for_the_lock(job_type, instant, trigger_id, &deadline, taken)
                .await
        };
        // What became of the claim. An attempt that could not start leaves it
        // open: a supervisor closes it as lost and re-runs its trigger.
        match &outcome {
            Ok(StartOutcome::Started { .. }) => {
                self.record_firing(job_type, at, FiringOutcome::Started)
                    .await
            }
            Ok(StartOutcome::Locked { .. }) => {
                self.record_firing(job_type, at, FiringOutcome::Skipped)
                    .await
            }
            Ok(StartOutcome::Queued { .. }) => {
                self.record_firing(job_type, at, FiringOutcome::Queued)
                    .await
            }
            _ => {}
        }
        if listed {
            self.inner.watch.firing_decided(trigger_id).await;
        }
        match &outcome {
            Ok(StartOutcome::Started { job_id, .. }) => {
                let lag = (self.inner.clock.now() - instant)
                    .to_std()
                    .unwrap_or_default();
                hajobs_core::metrics::cron_firing_lag(job_type.as_str(), lag);
                tracing::info!(%job_type, %instant, %job_id, %trigger_id, ?lag, "cron firing started")
            }
            Ok(StartOutcome::Locked { holder, .. }) => {
                let next_try = self.inner.clock.now()
                    + chrono::TimeDelta::milliseconds(FIRING_RETRY.as_millis() as i64);
                match deadline.passed(next_try) {
                    Some(d) => {
                        self.skip_past_deadline(job_type, trigger_id, instant, d)
                            .await
                    }
                    None => {
                        tracing::warn!(%job_type, %instant, holder = %holder.job_id, "cron firing skipped: lock held for a whole period")
                    }
                }
            }
            Ok(StartOutcome::Queued { position, .. }) => {
                tracing::info!(%job_type, %instant, %trigger_id, position, "cron firing queued: its lock is held")
            }
            Ok(StartOutcome::Error { details, .. }) => {
                tracing::error!(%job_type, %instant, details, "cron firing failed to start")
            }
            Err(e) => tracing::error!(%job_type, error = %e, "cron firing failed"),
        }
        outcome.ok()
    }

    /// Claims the firing of `job_type` at `instant` once cluster-wide: the
    /// preferred replica (`rank` 0) at once; the others look a little later
    /// whether it did, and claim only if not (see `claim_order`). Whether
    /// this replica won it.
    async fn claim_firing(&self, job_type: &JobType, instant: DateTime<Utc>, rank: u32) -> bool {
        let at = SystemTime::from(instant);
        if rank > 0 {
            tokio::time::sleep(claim_order::CLAIM_STEP * rank).await;
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return false;
            }
            match self.inner.firings.claimed_by(job_type, at).await {
                Ok(Some(owner)) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "claimed");
                    tracing::debug!(%job_type, %instant, owner, "cron firing claimed by another replica");
                    return false;
                }
                Ok(None) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "free");
                    tracing::info!(%job_type, %instant, rank, "cron firing not claimed by the replicas before this one: claiming it");
                }
                Err(e) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "error");
                    tracing::warn!(%job_type, %instant, error = %e, "cron claim not read; claiming");
                }
            }
        }
        let trigger_id = TriggerId::for_firing(job_type.as_str(), at);
        match self
            .inner
            .firings
            .claim(job_type, at, trigger_id, &self.inner.node)
            .await
        {
            Ok(true) => {
                hajobs_core::metrics::cron_claim(job_type.as_str(), "won");
                true
            }
            Ok(false) => {
                hajobs_core::metrics::cron_claim(job_type.as_str(), "lost");
                tracing::debug!(%job_type, %instant, "cron firing claimed by another replica");
                false
            }
            Err(e) => {
                hajobs_core::metrics::cron_claim(job_type.as_str(), "error");
                tracing::error!(%job_type, %instant, error = %e, "cron firing not claimed: Cassandra failed; another replica may run it");
                false
            }
        }
    }

    /// Starts a claimed firing whose job does not queue. One that finds its
    /// lock held (the previous firing, or another job type sharing the
    /// lock, still runs) tries again until one period of the schedule has
    /// passed — or its starting deadline, if that comes first — listed for
    /// the supervisors while it waits. The first try uses the lease taken
    /// with the claim, if any. The outcome, and whether it was listed.
    async fn start_waiting_for_the_lock(
        &self,
        job_type: &JobType,
        instant: DateTime<Utc>,
        trigger_id: TriggerId,
        deadline: &StartingDeadline,
        taken: Option<Taken>,
    ) -> (Result<StartOutcome, ManagerError>, bool) {
        let at = SystemTime::from(instant);
        let period = self
            .registered(job_type.as_str())
            .ok()
            .and_then(|r| r.spec.schedule.as_ref()?.next_after(instant))
            .and_then(|next| (next - instant).to_std().ok())
            .unwrap_or_default();
        let wait = deadline
            .left(self.inner.clock.now())
            .map_or(period, |left| left.min(period));
        let give_up = tokio::time::Instant::now() + wait;
        let mut listed = false;
        let mut touched = tokio::time::Instant::now();
        let mut lease = taken.map_or(LeaseFirst::Now, LeaseFirst::Taken);
        let mut tries = 0u32;
        loop {
            let outcome = self
                .start_attempt_with(
                    job_type,
                    trigger_id,
                    None,
                    lease,
                    self.firing_args(job_type),
                )
                .await;
            lease = LeaseFirst::Retry;
            tries += 1;
            let retry = matches!(outcome, Ok(StartOutcome::Locked { .. }))
                && tokio::time::Instant::now() + FIRING_RETRY < give_up
                && !self.inner.shutting_down.load(Ordering::SeqCst);
            if !retry {
                return (outcome, listed);
            }
            if !listed {
                // Waiting: listed, so that a supervisor closes the claim
                // should this replica die before starting it.
                listed = true;
                self.inner.watch.firing_waits(job_type, trigger_id).await;
            }
            // Still ours: said now and then, so that no supervisor closes
            // the claim as lost while this replica waits for the lock.
            if touched.elapsed() >= FIRING_TOUCH {
                touched = tokio::time::Instant::now();
                if let Err(e) = self.inner.firings.touch(job_type, at).await {
                    tracing::warn!(%job_type, %instant, error = %e, "cron firing not marked as waiting");
                }
            }
            // The first retry comes soon: the holder is most often a lease
            // taken ahead for this very firing by a replica that lost its
            // claim and gives it back at once (two replicas that briefly
            // disagree on the claim order, as when one has just joined).
            tokio::time::sleep(if tries == 1 {
                FIRST_FIRING_RETRY
            } else {
                FIRING_RETRY
            })
            .await;
        }
    }

    /// Records what became of a claimed firing (best effort: a claim left
    /// open is closed as lost by a supervisor).
    async fn record_firing(&self, job_type: &JobType, at: SystemTime, outcome: FiringOutcome) {
        let recorded = steps::step("outcome", self.inner.firings.record(job_type, at, outcome));
        if let Err(e) = recorded.await {
            tracing::warn!(%job_type, ?at, error = %e, "outcome of a cron firing not recorded");
        }
    }

    pub(super) async fn catch_up_missed_runs(&self) {
        let now = self.inner.clock.now();
        for registered in self.inner.jobs.values() {
            if let (Some(_), MissedRuns::All { cap }) =
                (&registered.spec.schedule, registered.spec.missed_runs)
            {
                // In a task of its own: the firings run one after another.
                let manager = self.clone();
                let job_type = registered.spec.job_type.clone();
                tokio::spawn(async move { manager.catch_up_all(&job_type, cap, now).await });
                continue;
            }
            let (Some(schedule), MissedRuns::RunOnce { threshold }) =
                (&registered.spec.schedule, registered.spec.missed_runs)
            else {
                continue;
            };
            let job_type = &registered.spec.job_type;
            let (Some(missed), Some(next)) = (schedule.latest_at(now), schedule.next_after(now))
            else {
                continue;
            };
            if (next - now).to_std().unwrap_or_default() <= threshold {
                continue; // the next firing comes soon enough
            }
            match self.missed(job_type, schedule, missed).await {
                Ok(true) => {
                    tracing::info!(%job_type, %missed, %next, "running a firing missed during downtime");
                    self.fire(job_type, missed).await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%job_type, error = %e, "cannot check for missed runs"),
            }
        }
    }

    /// `missed_runs = "all"`: the firings since the last one claimed (at
    /// most the `cap` newest), oldest first, each claimed once. When no
    /// claim is found within `cap` + 16 instants back, the job type must
    /// have run before at all (a status, a claim of the last month).
    pub(super) async fn catch_up_all(&self, job_type: &JobType, cap: u32, now: DateTime<Utc>) {
        let Ok(registered) = self.registered(job_type.as_str()) else {
            return;
        };
        let Some(schedule) = &registered.spec.schedule else {
            return;
        };
        // Newest first, back to the newest claimed instant (looking at no
        // more than `cap` + 16 instants).
        let firings = &self.inner.firings;
        let mut missed = Vec::new();
        let mut found_claim = false;
        let mut t = now;
        for _ in 0..cap as usize + 16 {
            let Some(instant) = schedule.latest_at(t) else {
                break;
            };
            match firings
                .claimed_by(job_type, SystemTime::from(instant))
                .await
            {
                Ok(Some(_)) => {
                    found_claim = true;
                    break;
                }
                Ok(None) => missed.push(instant),
                Err(e) => {
                    tracing::warn!(%job_type, error = %e, "cannot check for missed runs");
                    return;
                }
            }
            t = instant - chrono::TimeDelta::milliseconds(1);
        }
        if !found_claim {
            let ran_before = matches!(self.inner.statuses.latest(job_type).await, Ok(Some(_)))
                || matches!(firings.last_claimed(job_type).await, Ok(Some(_)));
            if !ran_before {
                return; // a job type that never ran missed nothing
            }
        }
        missed.truncate(cap as usize);
        missed.reverse(); // oldest first
        if !missed.is_empty() {
            tracing::info!(%job_type, count = missed.len(), "running the firings missed during downtime");
        }
        for instant in missed {
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            self.fire(job_type, instant).await;
        }
    }

    /// Records SKIPPED for the cron firing `trigger_id` at `instant`, whose
    /// starting deadline passed before it could start.
    pub(super) async fn skip_past_deadline(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        instant: DateTime<Utc>,
        deadline: Duration,
    ) {
        let status = JobStatus::never_ran(
            job_type.clone(),
            trigger_id,
            JobState::Skipped,
            Some(self.inner.node.clone()),
            serde_json::json!({
                hajobs_core::status::content_keys::REASON: format!("starting_deadline: the firing at {instant} could not start within {} s of its instant", deadline.as_secs()),
                "timeout": "starting_deadline",
                "instant": instant.to_rfc3339(),
            }),
        );
        tracing::warn!(%job_type, %instant, %trigger_id, ?deadline, "cron firing past its starting deadline: recorded SKIPPED");
        if let Err(e) = self.inner.statuses.write(&status).await {
            tracing::error!(%job_type, %trigger_id, error = %e, "SKIPPED status of a late firing not recorded");
        }
    }

    /// Whether the firing at `missed` was missed: nobody claimed it, and the
    /// job type ran before (a claim of the firing before it, any status, or
    /// any claim of the last month); a job type that never ran missed
    /// nothing.
    pub(super) async fn missed(
        &self,
        job_type: &JobType,
        schedule: &crate::cron::CronSchedule,
        missed: DateTime<Utc>,
    ) -> Result<bool, ManagerError> {
        let firings = &self.inner.firings;
        if firings
            .claimed_by(job_type, SystemTime::from(missed))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let previous = schedule.latest_at(missed - chrono::TimeDelta::milliseconds(1));
        if let Some(previous) = previous {
            if firings
                .claimed_by(job_type, SystemTime::from(previous))
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        if self.inner.statuses.latest(job_type).await?.is_some() {
            return Ok(true);
        }
        Ok(firings.last_claimed(job_type).await?.is_some())
    }

    /// Closes the claimed cron firings of `job_type` that no replica started:
    /// claims among its newest that have no outcome, whose claimant has not
    /// said it still waits for `after`, and of whose trigger no attempt was
    /// recorded. Each is closed once (an LWT) and its trigger recorded
    /// FAILED, so that the supervisor's retrigger rule re-runs it. Returns
    /// the triggers closed here.
    pub async fn close_lost_firings(
        &self,
        job_type: &JobType,
        after: Duration,
    ) -> Result<Vec<TriggerId>, ManagerError> {
        let Some(schedule) = &self.registered(job_type.as_str())?.spec.schedule else {
            return Ok(Vec::new());
        };
        // Only a job type with a firing in the last LOST_WINDOW (before
        // `after`) is read for lost claims: a daily job costs nothing
        // between its firings.
        let horizon = self.inner.clock.now()
            - chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::zero());
        let recent_firing = schedule
            .latest_at(horizon)
            .and_then(|t| (horizon - t).to_std().ok())
            .is_some_and(|age| age <= LOST_WINDOW);
        if !recent_firing {
            return Ok(Vec::new());
        }
        let now = SystemTime::now();
        let since = SystemTime::from(horizon) - LOST_WINDOW;
        let firings = self
            .inner
            .firings
            .recent(job_type, since, RECENT_FIRINGS)
            .await?;
        let mut closed = Vec::new();
        for f in firings {
            // Claims from before schema 8 carry neither; decided ones are done.
            let (None, Some(seen)) = (&f.outcome, f.seen_at) else {
                continue;
            };
            let quiet = now
                .duration_since(seen.max(f.instant))
                .is_ok_and(|age| age >= after);
            if !quiet {
                continue;
            }
            if self.attempts_of(job_type, f.trigger_id).await? > 0 {
                // It started; only its outcome went unrecorded.
                self.inner
                    .firings
                    .record(job_type, f.instant, FiringOutcome::Started)
                    .await?;
                continue;
            }
            if !self.inner.firings.close_lost(job_type, f.instant).await? {
                continue;
            }
            let instant = DateTime::<Utc>::from(f.instant);
            let owner = f.owner.as_deref().unwrap_or("?");
            let message = format!(
                "the cron firing at {instant} was claimed by {owner} but never started (that replica died or stalled before starting it)"
            );
            tracing::warn!(%job_type, %instant, trigger_id = %f.trigger_id, owner, "claimed cron firing never started: recorded FAILED");
            let status = JobStatus::never_ran(
                job_type.clone(),
                f.trigger_id,
                JobState::Failed,
                Some(self.inner.node.clone()),
                serde_json::json!({ "error": message, "lost_firing": instant.to_rfc3339() }),
            );
            self.inner.statuses.write(&status).await?;
            // Listed, so that the next passes apply the retrigger rule.
            self.inner
                .watch
                .ended_elsewhere(job_type, status.job_id)
                .await;
            closed.push(f.trigger_id);
        }
        Ok(closed)
    }
}

/// A firing's starting deadline (`starting_deadline`), counted from its
/// scheduled instant; computed in one place.
struct StartingDeadline {
    instant: DateTime<Utc>,
    within: Option<Duration>,
}

impl StartingDeadline {
    /// How long the firing may still take to start at `now` (none: no deadline).
    fn left(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.within
            .map(|d| d.saturating_sub((now - self.instant).to_std().unwrap_or_default()))
    }

    /// The deadline, if it has passed at `now`.
    fn passed(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.within
            .filter(|d| (now - self.instant).to_std().unwrap_or_default() > *d)
    }
}
