//! One-time triggers due at a given time ([`JobManager::schedule`], `hajobs
//! trigger --at`): recorded in Cassandra, fired once by one replica.
//!
//! Every replica keeps a loop: it reads the triggers due in the next
//! [`HORIZON`] (and those just past) every [`POLL`], or at once when woken
//! (a trigger scheduled for soon), keeps those of its job types in memory,
//! and sleeps until the soonest is due. At its time the replicas ranked
//! for it (`claim_order`) claim it in turn — the preferred at once, the
//! others a step later and only if nobody did — with one LWT
//! (`ScheduledStore::claim`), so it fires exactly once; the winner starts
//! it under its trigger id like any trigger (its parameters read back) and
//! records what became of it. A trigger found due while no replica ran
//! follows its job's `missed_runs` (`skip`: recorded SKIPPED) and
//! `starting_deadline`; one whose claimant died before starting it is
//! taken over by a live replica after [`ABANDONED_AFTER`].

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use hajobs_core::ScheduledTrigger;

use super::*;

/// How often a replica reads the upcoming triggers when nothing wakes it:
/// a trigger scheduled at least this far ahead fires at its time on every
/// replica; one due sooner fires at once where it was scheduled, or when
/// the daemon's wake reaches the others (else at their next read).
pub const SCHEDULED_POLL: Duration = Duration::from_secs(10);
const POLL: Duration = SCHEDULED_POLL;
/// How far ahead each read looks.
pub(crate) const HORIZON: Duration = Duration::from_secs(15);
/// How far back each read looks (a trigger due while this replica was
/// between two reads). Each read costs the rows of `LOOKBACK + HORIZON`.
const LOOKBACK: Duration = Duration::from_secs(10);
/// How far back a starting replica looks: triggers missed while no replica
/// ran (older rows have expired or are left to their retention).
const CATCH_UP: Duration = Duration::from_secs(7 * 24 * 3600);
/// A trigger found this late was missed (no replica ran at its time).
const MISSED_AFTER: Duration = Duration::from_secs(30);
/// A claim this old without an outcome, whose claimant is no live
/// replica, was abandoned (its replica died between claim and start).
const ABANDONED_AFTER: Duration = Duration::from_secs(30);
/// How often a read also looks back over the minute before
/// `ABANDONED_AFTER`, for abandoned claims (the other reads look back only
/// `LOOKBACK`: one read either way).
const ABANDONED_CHECK: Duration = Duration::from_secs(30);
/// How far back such a read looks.
const ABANDONED_LOOKBACK: Duration = Duration::from_secs(90);
/// How long a trigger whose lock is held keeps trying, without a starting
/// deadline, before it is recorded SKIPPED.
const LOCKED_WAIT: Duration = Duration::from_secs(60);

impl JobManager {
    /// Schedules a one-time trigger of `job_type` at `due_at`, carrying
    /// `given` (checked and recorded as [`JobManager::trigger_with`] does):
    /// one replica that has the job fires it at that time, once, even if
    /// this one is gone by then.
    pub async fn schedule(
        &self,
        job_type: &str,
        due_at: SystemTime,
        given: TriggerArgs,
    ) -> Result<ScheduledTrigger, ManagerError> {
        let spec = &self.registered(job_type)?.spec;
        let args = Self::resolve_args(spec, given)?;
        let trigger_id = TriggerId::new();
        let by = self.inner.node.as_str();
        self.record_args(spec, trigger_id, &args, by).await?;
        let t = self
            .inner
            .scheduled
            .schedule(trigger_id, spec.job_type.as_str(), due_at, by)
            .await?;
        self.wake_scheduled();
        Ok(t)
    }

    /// Asks this replica's loop to read the upcoming triggers now (one
    /// was scheduled for soon).
    pub fn wake_scheduled(&self) {
        self.inner.scheduled_wake.notify_one();
    }

    /// The store of scheduled triggers.
    pub fn scheduled_store(&self) -> &Arc<ScheduledStore> {
        &self.inner.scheduled
    }

    /// The loop of this replica (see the module's front page).
    pub(super) async fn run_scheduled(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Upcoming triggers of this replica's job types, soonest first.
        let mut upcoming: BTreeMap<(SystemTime, TriggerId), ScheduledTrigger> = BTreeMap::new();
        // Fired here (whatever their claim gave), by due time: a read that
        // still sees one pending (its claim in flight) does not fire it
        // twice. Forgotten once out of every read's window.
        let mut fired: HashMap<TriggerId, SystemTime> = HashMap::new();
        let mut first = true;
        let mut last_abandoned_check = tokio::time::Instant::now();
        // The replicas' ranks: the cron loop refreshes them when there is one.
        let cron = self.inner.jobs.values().any(|r| r.spec.schedule.is_some());
        loop {
            if !cron {
                self.refresh_peers().await;
            }
            let now = SystemTime::from(self.inner.clock.now());
            fired.retain(|_, due| now.duration_since(*due).unwrap_or_default() <= LOOKBACK * 2);
            let look_back = if last_abandoned_check.elapsed() >= ABANDONED_CHECK {
                last_abandoned_check = tokio::time::Instant::now();
                ABANDONED_LOOKBACK
            } else {
                LOOKBACK
            };
            let read = if first {
                self.inner
                    .scheduled
                    .list(now - CATCH_UP, now + HORIZON)
                    .await
            } else {
                self.inner
                    .scheduled
                    .due_between(now - look_back, now + HORIZON)
                    .await
            };
            match read {
                Ok(rows) => {
                    first = false;
                    upcoming.clear();
                    for t in rows {
                        if self.registered(&t.job_type).is_err() {
                            continue;
                        }
                        if t.is_pending() && !fired.contains_key(&t.trigger_id) {
                            upcoming.insert((t.due_at, t.trigger_id), t);
                        } else if self.abandoned(&t, now) {
                            let manager = self.clone();
                            tokio::spawn(async move { manager.take_over(t).await });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduled triggers not read; read again at the next poll")
                }
            }
            let next_read = tokio::time::Instant::now() + POLL;
            // Fire what comes due until the next read.
            loop {
                let now = SystemTime::from(self.inner.clock.now());
                while let Some(entry) = upcoming.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let t = entry.remove();
                    fired.insert(t.trigger_id, t.due_at);
                    let manager = self.clone();
                    tokio::spawn(async move { manager.fire_scheduled(t).await });
                }
                let until_due = upcoming
                    .keys()
                    .next()
                    .and_then(|(due, _)| due.duration_since(now).ok())
                    .map(|d| tokio::time::Instant::now() + d);
                let wake_at = until_due.map_or(next_read, |d| d.min(next_read));
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at) => {
                        if tokio::time::Instant::now() >= next_read {
                            break;
                        }
                    }
                    () = self.inner.scheduled_wake.notified() => break,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Whether `t` was claimed by a replica that never said what became of
    /// it and whose run is gone: not in the registry, or restarted since
    /// (this replica's own previous run included).
    fn abandoned(&self, t: &ScheduledTrigger, now: SystemTime) -> bool {
        let (Some(claimant), Some(at), None) = (&t.claimed_by, t.claimed_at, &t.outcome) else {
            return false;
        };
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        t.removed_by.is_none()
            && now.duration_since(at).unwrap_or_default() > ABANDONED_AFTER
            && !self.inner.peers.live_since(claimant, at_ms)
    }

    /// Takes over an abandoned trigger: started if no attempt of it was
    /// recorded (one was: its outcome is written now).
    async fn take_over(&self, t: ScheduledTrigger) {
        let Ok(job_type) = JobType::new(t.job_type.as_str()) else {
            return;
        };
        let Some(from) = t.claimed_by.clone() else {
            return;
        };
        match self.attempts_of(&job_type, t.trigger_id).await {
            Ok(0) => {}
            Ok(_) => {
                let _ = self
                    .inner
                    .scheduled
                    .record(&t, "started", "by its first claimant")
                    .await;
                return;
            }
            Err(_) => return,
        }
        match self
            .inner
            .scheduled
            .take_over(&t, &from, self.inner.node.as_str())
            .await
        {
            Ok(true) => {
                tracing::warn!(%job_type, trigger_id = %t.trigger_id, from, "scheduled trigger abandoned by its claimant: taken over");
                self.start_scheduled(&job_type, &t).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(trigger_id = %t.trigger_id, error = %e, "scheduled trigger not taken over")
            }
        }
    }

    /// Fires `t` if this replica wins its claim.
    async fn fire_scheduled(&self, t: ScheduledTrigger) {
        let Ok(job_type) = JobType::new(t.job_type.as_str()) else {
            return;
        };
        let due_ms = t
            .due_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // The rank mixes in the trigger: triggers due at the same instant
        // spread over the replicas.
        let spread = due_ms ^ (t.trigger_id.uuid().as_u128() as i64);
        let rank = self.inner.peers.rank(&self.inner.node, &job_type, spread);
        if rank > 0 {
            tokio::time::sleep(claim_order::CLAIM_STEP * rank).await;
            match self.inner.scheduled.get(&t).await {
                Ok(Some(now)) if !now.is_pending() => return,
                Ok(None) => return,
                _ => {}
            }
        }
        let claimed = steps::step(
            "claim",
            self.inner.scheduled.claim(&t, self.inner.node.as_str()),
        )
        .await;
        match claimed {
            Ok(true) => self.start_scheduled(&job_type, &t).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%job_type, trigger_id = %t.trigger_id, error = %e, "scheduled trigger not claimed here (another replica may have)")
            }
        }
    }

    /// Starts a claimed trigger `t` (or records why not), then records its
    /// outcome.
    async fn start_scheduled(&self, job_type: &JobType, t: &ScheduledTrigger) {
        let Ok(spec) = self.spec(job_type.as_str()).cloned() else {
            return;
        };
        let now = SystemTime::from(self.inner.clock.now());
        let late = now.duration_since(t.due_at).unwrap_or_default();
        let skip = match (spec.starting_deadline, spec.missed_runs) {
            (Some(d), _) if late > d => Some(format!(
                "starting_deadline: due at {}, found {} s late",
                DateTime::<Utc>::from(t.due_at).to_rfc3339(),
                late.as_secs()
            )),
            (_, MissedRuns::Skip) if late > MISSED_AFTER => Some(format!(
                "missed_runs = skip: due at {} while no replica ran (found {} s late)",
                DateTime::<Utc>::from(t.due_at).to_rfc3339(),
                late.as_secs()
            )),
            _ => None,
        };
        if let Some(reason) = skip {
            self.skip_scheduled(job_type, t, &reason).await;
            return;
        }
        let deadline = spec
            .starting_deadline
            .map(|d| d.saturating_sub(late))
            .unwrap_or(LOCKED_WAIT);
        let give_up = tokio::time::Instant::now() + deadline;
        let mut tries = 0u32;
        let outcome = loop {
            tries += 1;
            // A long wait for the lock: still ours? (A replica that took
            // the claim over, thinking this one gone, now fires it.)
            if tries % 25 == 0 {
                if let Ok(Some(now)) = self.inner.scheduled.get(t).await {
                    if now.claimed_by.as_deref() != Some(self.inner.node.as_str()) {
                        tracing::warn!(%job_type, trigger_id = %t.trigger_id, "scheduled trigger taken over while its lock was held: left to the new claimant");
                        return;
                    }
                }
            }
            let outcome = self
                .start_or_queue(
                    job_type,
                    t.trigger_id,
                    self.inner.node.as_str(),
                    spec.starting_deadline.map(|_| deadline),
                    None,
                )
                .await;
            match outcome {
                Ok(StartOutcome::Locked { .. })
                    if tokio::time::Instant::now() < give_up
                        && !self.inner.shutting_down.load(Ordering::SeqCst) =>
                {
                    tokio::time::sleep(FIRING_RETRY).await;
                }
                other => break other,
            }
        };
        let (what, detail) = match &outcome {
            Ok(StartOutcome::Started { job_id, .. }) => ("started", job_id.to_string()),
            Ok(StartOutcome::Queued { position, .. }) => ("queued", format!("position {position}")),
            Ok(StartOutcome::Locked { holder, .. }) => {
                let reason = format!(
                    "its lock stayed held by {} for {} s",
                    holder.job_id,
                    deadline.as_secs()
                );
                self.skip_scheduled(job_type, t, &reason).await;
                return;
            }
            Ok(StartOutcome::Error { details, .. }) => ("error", details.clone()),
            Err(e) => ("error", e.to_string()),
        };
        let lag = now.duration_since(t.due_at).unwrap_or_default();
        tracing::info!(%job_type, trigger_id = %t.trigger_id, outcome = what, ?lag, "scheduled trigger fired");
        if let Err(e) = self.inner.scheduled.record(t, what, &detail).await {
            tracing::warn!(trigger_id = %t.trigger_id, error = %e, "outcome of a scheduled trigger not recorded");
        }
    }

    /// Records `t` SKIPPED (a status of its trigger, and its outcome).
    async fn skip_scheduled(&self, job_type: &JobType, t: &ScheduledTrigger, reason: &str) {
        let status = JobStatus::never_ran(
            job_type.clone(),
            t.trigger_id,
            JobState::Skipped,
            Some(self.inner.node.clone()),
            serde_json::json!({
                hajobs_core::status::content_keys::REASON: reason,
                "due_at": DateTime::<Utc>::from(t.due_at).to_rfc3339(),
            }),
        );
        tracing::warn!(%job_type, trigger_id = %t.trigger_id, reason, "scheduled trigger recorded SKIPPED");
        if let Err(e) = self.inner.statuses.write(&status).await {
            tracing::error!(%job_type, trigger_id = %t.trigger_id, error = %e, "SKIPPED status of a scheduled trigger not recorded");
        }
        let _ = self.inner.scheduled.record(t, "skipped", reason).await;
    }
}
