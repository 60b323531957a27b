//! [`RequestWatcher`]: this replica's part in triggers asked of the cluster.
//!
//! Whenever it is woken ([`RequestWake::wake`]: the requester calls the
//! replicas that have the job) and at the latest every
//! [`WatchConfig::interval`], it reads the requests of the last
//! [`WatchConfig::window`] (one partition, one read) and, for each request
//! of a job type registered here that nobody claimed or withdrew, tries to
//! claim it (an LWT: exactly one replica wins). A wake carries nothing: the
//! Cassandra row stays the record, the poll the fallback for a wake that
//! never arrives, and wakes in a burst make one read (at most one per
//! [`WAKE_GAP`]). The winner starts the
//! attempt under the request's trigger id — [`JobManager::retrigger`], so
//! the lease, the statuses and the supervisor's rules apply as to any other
//! trigger — and records the outcome for the CLI.
//!
//! A request claimed by a replica that then died before starting it would
//! otherwise be lost: a live replica that has the job type closes such a
//! request once its claim is older than [`WatchConfig::stale`] (an LWT, so
//! once), recording it as an error and writing a FAILED status for its
//! trigger, which `hajobs status` shows and the supervisor's retrigger rule
//! re-runs within the job's retrigger count.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hajobs_core::{
    JobId, JobState, JobStatus, JobType, RequestOutcome, RequestStore, TriggerId, TriggerRequest,
};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::manager::{JobManager, StartOutcome};

/// The shortest time between two reads a wake asks for: a flood of wakes
/// costs at most one read per gap.
pub const WAKE_GAP: Duration = Duration::from_millis(25);

/// The poll of a replica that requesters can wake
/// ([`WatchConfig::wakeable`]).
pub const WAKEABLE_INTERVAL: Duration = Duration::from_secs(2);

/// How the watcher polls.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Between two reads of the recent requests when no wake comes
    /// (default 250 ms; [`WAKEABLE_INTERVAL`] for a replica whose address
    /// requesters know).
    pub interval: Duration,
    /// How far back a read looks (default 60 s): older unclaimed requests
    /// were withdrawn by their CLI long ago.
    pub window: Duration,
    /// A claim older than this without an outcome is closed as failed
    /// (default 20 s).
    pub stale: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            window: Duration::from_secs(60),
            stale: Duration::from_secs(20),
        }
    }
}

impl WatchConfig {
    /// The configuration of a replica requesters wake directly: the poll
    /// is only the fallback, every [`WAKEABLE_INTERVAL`].
    pub fn wakeable() -> Self {
        Self {
            interval: WAKEABLE_INTERVAL,
            ..Self::default()
        }
    }
}

/// Wakes a [`RequestWatcher`]: it reads the recent requests now instead of
/// at its next poll. Cheap to clone; a wake before the watcher runs, or
/// while it reads, is kept (one) for its next turn.
#[derive(Debug, Clone, Default)]
pub struct RequestWake(Arc<tokio::sync::Notify>);

impl RequestWake {
    /// A wake for a watcher yet to be spawned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the watcher for a read now (coalesced with any wake pending).
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The running watcher; [`RequestWatcher::stop`] ends it.
#[derive(Debug)]
pub struct RequestWatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RequestWatcher {
    /// Starts watching for requests of the job types `manager` has, read
    /// at once whenever `wake` is woken.
    pub fn spawn(
        manager: JobManager,
        store: Arc<RequestStore>,
        config: WatchConfig,
        wake: RequestWake,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        // Claimed here and still starting: not stale, whatever the clocks say.
        let in_flight: Arc<Mutex<HashSet<TriggerId>>> = Arc::default();
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                match store.recent(config.window).await {
                    Ok(requests) => {
                        failing = false;
                        for r in requests {
                            handle(&manager, &store, &config, &in_flight, r).await;
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read trigger requests; retrying");
                    }
                    Err(_) => {}
                }
                let read_at = tokio::time::Instant::now();
                tokio::select! {
                    () = tokio::time::sleep(config.interval) => {}
                    () = wake.0.notified() => {
                        // Bursts of wakes make one read per gap.
                        tokio::select! {
                            () = tokio::time::sleep_until(read_at + WAKE_GAP) => {}
                            _ = stopped.changed() => return,
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Self { stop, task }
    }

    /// Stops watching (a claim in progress completes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn handle(
    manager: &JobManager,
    store: &Arc<RequestStore>,
    config: &WatchConfig,
    in_flight: &Arc<Mutex<HashSet<hajobs_core::TriggerId>>>,
    r: TriggerRequest,
) {
    if r.outcome.is_some() || r.withdrawn || manager.spec(&r.job_type).is_err() {
        return;
    }
    match &r.claimed_by {
        None => match store.claim(r.trigger_id, manager.node()).await {
            Ok(true) => {
                hajobs_core::metrics::trigger_request_claimed(&r.job_type);
                in_flight.lock().expect("poisoned").insert(r.trigger_id);
                // Started in its own task: a slow start of one job does not
                // hold up the requests of the others.
                let (manager, store, in_flight) =
                    (manager.clone(), store.clone(), in_flight.clone());
                tokio::spawn(async move {
                    start(&manager, &store, &r).await;
                    in_flight.lock().expect("poisoned").remove(&r.trigger_id);
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(trigger_id = %r.trigger_id, error = %e, "claim of a trigger request failed")
            }
        },
        Some(claimant) => {
            let stale = r
                .claimed_at
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > config.stale);
            if stale && !in_flight.lock().expect("poisoned").contains(&r.trigger_id) {
                close_stale(manager, store, &r, claimant).await;
            }
        }
    }
}

async fn start(manager: &JobManager, store: &RequestStore, r: &TriggerRequest) {
    // A resumed trigger (a handover) takes the lock it left; a new one
    // queues like any trigger of its job.
    let started = match r.resumes {
        Some(resumed) => manager.retrigger(&r.job_type, resumed).await,
        None => {
            manager
                .trigger_request(&r.job_type, r.trigger_id, r.requested_by.as_deref())
                .await
        }
    };
    let outcome = match started {
        Ok(StartOutcome::Started {
            job_id,
            fencing_token,
            ..
        }) => RequestOutcome::Started {
            job_id,
            fencing_token,
        },
        Ok(StartOutcome::Locked { holder, .. }) => RequestOutcome::Locked {
            holder: holder.job_id,
            owner: holder.owner,
        },
        Ok(StartOutcome::Queued { position, .. }) => RequestOutcome::Queued {
            position: u32::try_from(position).unwrap_or(u32::MAX),
        },
        Ok(StartOutcome::Error { details, .. }) => RequestOutcome::Error(details),
        Err(e) => RequestOutcome::Error(e.to_string()),
    };
    tracing::info!(job_type = %r.job_type, trigger_id = %r.trigger_id, requested_by = ?r.requested_by, ?outcome, "trigger request handled");
    if let Err(e) = store.record(r.trigger_id, &outcome).await {
        tracing::error!(trigger_id = %r.trigger_id, error = %e, "outcome of a trigger request not recorded");
    }
}

/// A claim nobody followed up: recorded as failed, once, with a FAILED
/// status for its trigger.
async fn close_stale(
    manager: &JobManager,
    store: &RequestStore,
    r: &TriggerRequest,
    claimant: &str,
) {
    let message = format!(
        "claimed by {claimant} but never started (that replica died or stalled before starting it)"
    );
    match store
        .record_if_none(r.trigger_id, &RequestOutcome::Error(message.clone()))
        .await
    {
        Ok(true) => {
            let Ok(job_type) = JobType::new(r.job_type.clone()) else {
                return;
            };
            let status = JobStatus::never_ran(
                job_type,
                runs_under(r),
                JobState::Failed,
                Some(manager.node().clone()),
                json!({ "error": message, "requested_by": r.requested_by }),
            );
            tracing::warn!(job_type = %r.job_type, trigger_id = %r.trigger_id, claimant, "trigger request claimed but never started: recorded FAILED");
            match manager.statuses().write(&status).await {
                // Listed, so that the next supervisor passes apply the
                // retrigger rule to it.
                Ok(()) => manager.watch_ending(&status.job_type, status.job_id).await,
                Err(e) => {
                    tracing::error!(trigger_id = %r.trigger_id, error = %e, "FAILED status of an unstarted request not recorded")
                }
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(trigger_id = %r.trigger_id, error = %e, "closing a stale trigger request failed")
        }
    }
}

/// The trigger a request's attempt runs under: its own id, or the earlier
/// trigger it resumes (a handover).
fn runs_under(r: &TriggerRequest) -> TriggerId {
    r.resumes.unwrap_or(r.trigger_id)
}

/// What [`hand_over`] did with one cancelled attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// A request to resume its trigger was recorded; another replica
    /// claims it when woken, at the latest within one watch interval.
    Requested {
        /// The job type.
        job_type: JobType,
        /// The trigger resumed.
        trigger_id: TriggerId,
    },
    /// Its trigger has used its retrigger count: it stays as it ended.
    Exhausted(JobType, TriggerId),
    /// It did not end CANCELED by the shutdown (it finished, failed, or was
    /// cancelled by an operator): nothing to resume.
    NotNeeded(JobType, JobId),
    /// The handover could not be recorded; the supervisor's retrigger rule
    /// still applies.
    Failed(JobType, String),
}

/// Hands the attempts a stopping replica cancelled to the others: for each
/// attempt of `attempts` (taken before [`JobManager::shutdown`]) that ended
/// CANCELED by the shutdown and whose trigger has attempts left under its
/// job's retrigger count (the supervisor's rule; an always-on job always
/// has), a request that resumes its trigger. Call it after the shutdown released the leases, so that the
/// replica claiming a request finds the lock free.
pub async fn hand_over(
    manager: &JobManager,
    store: &RequestStore,
    attempts: &[(JobType, JobId, TriggerId)],
) -> Vec<Handover> {
    let mut out = Vec::with_capacity(attempts.len());
    for (job_type, job_id, trigger_id) in attempts {
        let Ok(spec) = manager.spec(job_type.as_str()) else {
            continue;
        };
        let ended = match manager.statuses().get(job_type, *job_id).await {
            Ok(Some(hajobs_core::StatusEntry::Status(s))) => s,
            Ok(_) => {
                out.push(Handover::NotNeeded(job_type.clone(), *job_id));
                continue;
            }
            Err(e) => {
                out.push(Handover::Failed(job_type.clone(), e.to_string()));
                continue;
            }
        };
        let by_shutdown = ended.state == JobState::Canceled
            && ended
                .reason()
                .is_some_and(|r| r == hajobs_core::CancelReason::Shutdown.to_string());
        if !by_shutdown {
            out.push(Handover::NotNeeded(job_type.clone(), *job_id));
            continue;
        }
        let attempts_of_trigger = match manager.attempts_of(job_type, *trigger_id).await {
            Ok(n) => n,
            Err(e) => {
                out.push(Handover::Failed(job_type.clone(), e.to_string()));
                continue;
            }
        };
        // An always-on job is handed over however often it was before.
        if spec.keep_running.is_none() && attempts_of_trigger > spec.retrigger_count as usize {
            tracing::info!(%job_type, %trigger_id, attempts = attempts_of_trigger, "not handed over: retriggers used up");
            out.push(Handover::Exhausted(job_type.clone(), *trigger_id));
            continue;
        }
        let by = format!("handover from {}", manager.node());
        match store
            .request_resuming(job_type.as_str(), TriggerId::new(), *trigger_id, &by)
            .await
        {
            Ok(()) => {
                tracing::info!(%job_type, %trigger_id, "attempt handed over to the other replicas");
                out.push(Handover::Requested {
                    job_type: job_type.clone(),
                    trigger_id: *trigger_id,
                });
            }
            Err(e) => {
                tracing::warn!(%job_type, %trigger_id, error = %e, "handover not recorded; the supervisor's retrigger rule applies");
                out.push(Handover::Failed(job_type.clone(), e.to_string()));
            }
        }
    }
    out
}
