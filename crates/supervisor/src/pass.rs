//! One supervisor pass: find dead attempts, record them DEAD, retrigger.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hajobs_core::{JobId, JobResult, JobState, JobStatus, JobType, StatusEntry, TriggerId};
use hajobs_scheduler::{JobManager, JobSpec, StartOutcome};
use serde_json::json;

use crate::config::SupervisorConfig;
use crate::error::SupervisorError;

/// What one pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Attempts recorded DEAD.
    pub dead: Vec<(JobType, JobId)>,
    /// Triggers re-run: job type, trigger, the new attempt.
    pub retriggered: Vec<(JobType, TriggerId, JobId)>,
    /// Triggers whose retries are used up.
    pub exhausted: Vec<(JobType, TriggerId)>,
    /// Corrupt status rows seen (named, skipped).
    pub corrupt: usize,
    /// Attempts whose final status was in their history but not in the
    /// listing, written again.
    pub repaired: usize,
    /// Claimed cron firings that no replica started, recorded FAILED.
    pub lost_firings: Vec<(JobType, TriggerId)>,
}

/// A replica's watch list unchanged this long, whose attempts have all
/// ended, belongs to a replica that is gone: its row is removed.
const STALE_LIST: Duration = Duration::from_secs(600);

/// Runs one pass: over the job types the replicas' watch lists name, and
/// this pass's slice of the sweep over every registered job type.
pub(crate) async fn run(
    manager: &JobManager,
    config: &SupervisorConfig,
) -> Result<PassReport, SupervisorError> {
    let mut report = PassReport::default();
    let lists = manager.watches().list().await?;
    // Job type → whether a claimed firing of it is listed.
    let mut watched: BTreeMap<&JobType, bool> = BTreeMap::new();
    for list in &lists {
        for job_type in list.attempts.values() {
            watched.entry(job_type).or_insert(false);
        }
        for job_type in list.firings.values() {
            watched.insert(job_type, true);
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for spec in manager.specs() {
        let swept = config.sweeps(spec.job_type.as_str(), now_ms);
        let listed = watched.get(&spec.job_type);
        if !swept && listed.is_none() {
            continue;
        }
        if report.retriggered.len() >= config.max_retriggers_per_pass {
            tracing::info!(
                "retrigger budget of this pass used up; the rest waits for the next pass"
            );
            break;
        }
        let firings = swept || listed == Some(&true);
        supervise(manager, config, spec, firings, &mut report).await?;
    }
    if config.sweep_slice(now_ms).0 == 0 {
        remove_stale_lists(manager, &lists).await?;
    }
    Ok(report)
}

/// Removes the rows of replicas that are gone: unchanged for
/// [`STALE_LIST`] (longer than an ending stays listed) with every listed
/// attempt ended. Only the version read is removed: a replica that writes
/// again keeps its newer row.
async fn remove_stale_lists(
    manager: &JobManager,
    lists: &[hajobs_core::WatchList],
) -> Result<(), SupervisorError> {
    let now = SystemTime::now();
    for list in lists {
        if list.node_id == manager.node().as_str() {
            continue;
        }
        let stale = list
            .written_at
            .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= STALE_LIST));
        if !stale {
            continue;
        }
        let mut ended = true;
        for (job_id, job_type) in &list.attempts {
            let status = manager.statuses().get(job_type, *job_id).await?;
            if matches!(&status, Some(StatusEntry::Status(s)) if s.result() == JobResult::Pending) {
                ended = false;
                break;
            }
        }
        if ended {
            manager
                .watches()
                .remove(&list.node_id, list.write_time)
                .await?;
            tracing::info!(
                node = list.node_id,
                "watch list of a replica gone for {STALE_LIST:?} removed"
            );
        }
    }
    Ok(())
}

async fn supervise(
    manager: &JobManager,
    config: &SupervisorConfig,
    spec: &JobSpec,
    firings: bool,
    report: &mut PassReport,
) -> Result<(), SupervisorError> {
    let job_type = &spec.job_type;
    // 0. A cron firing claimed by a replica that died before starting it
    // becomes a FAILED trigger, which the retrigger rule below re-runs.
    if firings {
        for trigger_id in manager
            .close_lost_firings(job_type, config.lost_firing_after)
            .await?
        {
            report.lost_firings.push((job_type.clone(), trigger_id));
        }
    }
    // 1. Statuses first, at quorum …
    let entries = manager
        .statuses()
        .history(job_type, config.history_depth)
        .await?;
    let mut attempts: Vec<JobStatus> = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry {
            StatusEntry::Status(s) => attempts.push(s),
            StatusEntry::Corrupt { row, problem, .. } => {
                report.corrupt += 1;
                if first_sighting(&row) {
                    tracing::warn!(%job_type, row, problem, "corrupt status row skipped by the supervisor (logged once per row)");
                }
            }
        }
    }
    // 2. … then the lock, at SERIAL. An attempt records RUNNING only after
    // acquiring its lease and releases it only after recording its end, so
    // an attempt that was PENDING before this read and whose lease is gone
    // now has either ended (its final status is visible by now) or died.
    let pending: Vec<usize> = (0..attempts.len())
        .filter(|&i| attempts[i].result() == JobResult::Pending)
        .collect();
    if !pending.is_empty() {
        // Every slot of a lock type with capacity.
        let holders = manager.holders(&spec.lock_type).await?;
        for i in pending {
            let attempt = &attempts[i];
            if holders.iter().any(|h| h.job_id == attempt.job_id) {
                continue; // alive: it holds its lease
            }
            // 3. Re-read the attempt: it may have ended in between.
            let now = manager.statuses().get(job_type, attempt.job_id).await?;
            let still_pending =
                matches!(&now, Some(StatusEntry::Status(s)) if s.result() == JobResult::Pending);
            if !still_pending {
                if let Some(StatusEntry::Status(s)) = now {
                    // The attempt's history has its end but the listing
                    // still says PENDING: a final write that failed without
                    // a quorum yet landed on a live replica (a failed write
                    // is not undone). Write the same status again so both
                    // tables agree; it is idempotent, even against the
                    // attempt writing its own end right now.
                    if s.result() != JobResult::Pending {
                        manager.statuses().write(&s).await?;
                        tracing::info!(%job_type, job_id = %s.job_id, state = %s.state, "final status repaired in the listing");
                        report.repaired += 1;
                    }
                    attempts[i] = s;
                }
                continue;
            }
            let last_sign_of_life = match &now {
                Some(StatusEntry::Status(s)) => s.timestamp,
                _ => attempt.timestamp,
            };
            let detected_at = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let dead = JobStatus {
                // Just after its last status: should the attempt still record
                // its own end, that end is newer and stands.
                timestamp: last_sign_of_life + Duration::from_millis(1),
                state: JobState::Dead,
                content: Some(json!({
                    hajobs_core::status::content_keys::REASON: "lease gone while the attempt was still RUNNING: its replica died or stalled",
                    "detected_by": manager.node().as_str(),
                    "detected_at_ms": detected_at,
                })),
                ..attempt.clone()
            };
            manager.statuses().write(&dead).await?;
            tracing::warn!(%job_type, job_id = %attempt.job_id, trigger_id = %attempt.trigger_id,
                owner = ?attempt.owner, holders = ?holders.iter().map(|h| h.job_id).collect::<Vec<_>>(), "attempt recorded DEAD: its lease is gone");
            hajobs_core::metrics::supervisor_dead(job_type.as_str());
            report.dead.push((job_type.clone(), attempt.job_id));
            attempts[i] = dead;
        }
    }
    retrigger(manager, config, spec, &attempts, report).await
}

/// ha-jobs' rule, on the latest trigger: re-run it when none of its
/// attempts is PENDING or SUCCESS, it was not cancelled, and it has had at
/// most `retrigger_count` attempts.
async fn retrigger(
    manager: &JobManager,
    config: &SupervisorConfig,
    spec: &JobSpec,
    attempts: &[JobStatus],
    report: &mut PassReport,
) -> Result<(), SupervisorError> {
    let job_type = &spec.job_type;
    if spec.keep_running.is_some() {
        // Always on: the replicas that have it start it again themselves,
        // without a limit; a retrigger would only race them.
        return Ok(());
    }
    // Attempts are newest first (time-based job ids, clustering order DESC).
    let Some(latest) = attempts.first() else {
        return Ok(());
    };
    let trigger_id = latest.trigger_id;
    let of_trigger: Vec<&JobStatus> = attempts
        .iter()
        .filter(|a| a.trigger_id == trigger_id)
        .collect();
    let any = |r: JobResult| of_trigger.iter().any(|a| a.result() == r);
    if any(JobResult::Pending) || any(JobResult::Success) {
        return Ok(());
    }
    if latest.state == JobState::Canceled {
        // The reason is in the content, which only `job_status_data` keeps.
        let full = manager.statuses().get(job_type, latest.job_id).await?;
        if matches!(&full, Some(StatusEntry::Status(s)) if cancelled_on_request(s)) {
            return Ok(()); // an operator cancelled it: do not undo that
        }
    }
    if latest.state == JobState::Failed && spec.retry.count > 0 {
        // A failed attempt whose replica plans a retry: the retry is the
        // job's own. Only once it is overdue (the replica stopped or died
        // meanwhile) does the retrigger rule apply.
        let full = manager.statuses().get(job_type, latest.job_id).await?;
        let due = match &full {
            Some(StatusEntry::Status(s)) => s.next_retry_at_ms(),
            _ => None,
        };
        let now_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if due.is_some_and(|due| now_ms < due + RETRY_GRACE.as_millis() as i64) {
            return Ok(());
        }
    }
    // Retries and retriggers share the trigger's attempts.
    if of_trigger.len() > (spec.retrigger_count + spec.retry.count) as usize {
        if !report
            .exhausted
            .iter()
            .any(|(t, id)| t == job_type && *id == trigger_id)
        {
            tracing::info!(%job_type, %trigger_id, attempts = of_trigger.len(), "retriggers used up; trigger stays failed");
            report.exhausted.push((job_type.clone(), trigger_id));
        }
        return Ok(());
    }
    if let Ok(since) = SystemTime::now().duration_since(latest.timestamp) {
        // (A DEAD status carries its attempt's last time, so the backoff
        // counts from the attempt's last sign of life.)
        if since < config.retrigger_backoff {
            return Ok(()); // backoff: a later pass retries
        }
    }
    match manager.retrigger(job_type.as_str(), trigger_id).await? {
        StartOutcome::Started { job_id, .. } => {
            hajobs_core::metrics::supervisor_retrigger(job_type.as_str());
            tracing::warn!(%job_type, %trigger_id, %job_id, attempt = of_trigger.len() + 1,
                failed = %latest.job_id, state = %latest.state, "trigger re-run on this replica");
            report
                .retriggered
                .push((job_type.clone(), trigger_id, job_id));
        }
        StartOutcome::Locked { holder, .. } => {
            tracing::info!(%job_type, %trigger_id, holder = %holder.job_id, "retrigger waits: lock held");
        }
        // (A retrigger takes the lock or waits for a later pass; it never
        // queues.)
        StartOutcome::Queued { .. } => {}
        StartOutcome::Error { details, .. } => {
            tracing::error!(%job_type, %trigger_id, details, "retrigger failed to start");
        }
    }
    Ok(())
}

/// How long after a planned retry was due a supervisor waits before it
/// takes the trigger over.
const RETRY_GRACE: Duration = Duration::from_secs(30);

/// Whether `attempt` was cancelled by request (`cancel`), as opposed to
/// losing its lease or its replica shutting down, which a re-run repairs.
fn cancelled_on_request(attempt: &JobStatus) -> bool {
    attempt.state == JobState::Canceled
        && attempt.reason() == Some(&hajobs_core::CancelReason::Requested.to_string())
}

/// Whether `row` is seen corrupt for the first time by this process: the
/// supervisor reads the same rows every pass, and one warning per row is
/// enough. Bounded, so that a flood of bad rows cannot grow it forever.
fn first_sighting(row: &str) -> bool {
    const MAX_REMEMBERED: usize = 10_000;
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(row) {
        return false;
    }
    if seen.len() >= MAX_REMEMBERED {
        seen.clear();
    }
    seen.insert(row.to_owned());
    true
}
