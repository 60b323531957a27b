//! Always-on jobs ([`KeepRunning`]): every replica that has one keeps
//! trying to run it, and its lock decides which one does.
//!
//! A replica's loop for the job type: it reads the newest attempt's status
//! (its trigger, kept across restarts; when it may start again, which the
//! attempt that ended wrote for every replica to see), waits for that time,
//! then tries to start an attempt. Started here, it waits for the attempt's
//! end and begins again. Found held elsewhere, it reads how long the
//! holder's lease has left and reads again once it could have expired,
//! until it has: a plain read per lease TTL or so while another replica
//! runs the job (no LWT), and a survivor takes the job over about one lease
//! TTL after its holder died.
//! A stopping replica hands its attempt over at once (`hand_over`), without
//! the retrigger limit.

use super::*;
use crate::spec::KeepRunning;

/// The longest pause between two looks at a held lock (a lease renewed
/// with a longer TTL is read again after this long).
const HELD_POLL_MAX: Duration = Duration::from_secs(60);
/// Added to a held lease's time left: the node keeps TTLs in seconds.
const HELD_MARGIN: Duration = Duration::from_millis(200);

impl JobManager {
    /// Early failures in a row before the next attempt of `job_type` here.
    pub(super) fn restart_streak(&self, job_type: &JobType) -> u32 {
        let streaks = self.inner.restart_streaks.lock().expect("streaks poisoned");
        streaks.get(job_type).copied().unwrap_or(0)
    }

    /// Keeps `job_type` running on some replica until this one stops.
    pub(super) async fn keep_running(
        &self,
        job_type: JobType,
        policy: KeepRunning,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Ok(spec) = self.spec(job_type.as_str()).cloned() else {
            return;
        };
        // When an attempt of this loop last ended: the next one here starts
        // a restart backoff later at the soonest, whatever its status said.
        let mut ended_here: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() || self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            // An attempt running here (started by this loop or by a
            // handover request): its end first.
            if let Some(job_id) = self.running_here(job_type.as_str()) {
                tokio::select! {
                    () = self.wait_ended(job_id) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                ended_here = Some(tokio::time::Instant::now());
                continue;
            }
            let (trigger_id, wait) = self.next_restart(&job_type, &policy).await;
            let wait = match ended_here {
                Some(t) => wait.max(policy.restart_backoff.saturating_sub(t.elapsed())),
                None => wait,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue; // read again: another replica may have run it meanwhile
            }
            let outcome = self
                .start_attempt_with(&job_type, trigger_id, None, LeaseFirst::Retry, None)
                .await;
            let pause = match outcome {
                Ok(StartOutcome::Started { job_id, .. }) => {
                    tracing::info!(%job_type, %job_id, %trigger_id, "always-on job started");
                    Duration::ZERO
                }
                Ok(StartOutcome::Locked { .. }) => {
                    // Reads only while another replica holds it, until its
                    // lease is gone; then the newest status and a try.
                    loop {
                        let (pause, free) = self.held_for(&spec).await;
                        if free {
                            break Duration::ZERO;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        if self.running_here(job_type.as_str()).is_some() {
                            break Duration::ZERO; // handed over to this replica
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(%job_type, outcome = ?other, "always-on job not started; trying again after its restart backoff");
                    policy.restart_backoff
                }
                Err(e) => {
                    tracing::warn!(%job_type, error = %e, "always-on job not started; trying again after its restart backoff");
                    policy.restart_backoff
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// The trigger the next attempt of `job_type` serves (the newest
    /// attempt's, or a new one) and how long to wait before starting it
    /// (what the newest attempt's end said, never more than the maximum
    /// backoff); records the streak of early failures for the attempt.
    async fn next_restart(
        &self,
        job_type: &JobType,
        policy: &KeepRunning,
    ) -> (TriggerId, Duration) {
        let newest = match self.inner.statuses.history(job_type, 1).await {
            Ok(h) => h.into_iter().find_map(|e| e.status().cloned()),
            Err(e) => {
                tracing::warn!(%job_type, error = %e, "always-on job: its newest attempt not read; trying again after its restart backoff");
                return (TriggerId::new(), policy.restart_backoff);
            }
        };
        let Some(newest) = newest else {
            self.set_streak(job_type, 0);
            return (TriggerId::new(), Duration::ZERO);
        };
        if newest.result() == JobResult::Pending {
            // Running somewhere, or dead and not yet found: the lock says.
            return (newest.trigger_id, Duration::ZERO);
        }
        // The end's content is in the data row.
        let ended = match self.inner.statuses.get(job_type, newest.job_id).await {
            Ok(Some(StatusEntry::Status(s))) => s,
            _ => newest,
        };
        let field = |key: &str| {
            ended
                .content
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(serde_json::Value::as_i64)
        };
        let streak = field(hajobs_core::status::content_keys::RESTART_STREAK)
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0);
        self.set_streak(job_type, streak);
        let now_ms = hajobs_core::node_store::now_millis();
        let wait = field(hajobs_core::status::content_keys::NEXT_RESTART_AT_MS)
            .map(|at| Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0)))
            .unwrap_or_default()
            .min(policy.restart_max_backoff);
        (ended.trigger_id, wait)
    }

    fn set_streak(&self, job_type: &JobType, streak: u32) {
        self.inner
            .restart_streaks
            .lock()
            .expect("streaks poisoned")
            .insert(job_type.clone(), streak);
    }

    /// Whether the lock of `spec` is free now (a plain read), and if not,
    /// how long to wait before reading it again: until its lease could
    /// have expired unrenewed, or a renewal interval when the read fails.
    async fn held_for(&self, spec: &JobSpec) -> (Duration, bool) {
        match self
            .leases_of(&spec.lock_type)
            .expires_in(&spec.lock_type)
            .await
        {
            Ok(Some(left)) => ((left + HELD_MARGIN).min(HELD_POLL_MAX), false),
            Ok(None) => (Duration::ZERO, true),
            Err(e) => {
                tracing::warn!(job_type = %spec.job_type, error = %e, "always-on job: its lock's lease not read");
                (spec.keeper.renew_interval(), false)
            }
        }
    }
}
