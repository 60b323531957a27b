//! [`JobStats`]: per job type figures over the statuses kept (the retention
//! window): attempts, endings by state, success rate, durations, last
//! success and failure — oJob Manager's statistics.
//!
//! An attempt's duration runs from its job id's time (a time-based UUID made
//! just before its lease is acquired) to its final status.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::status::{JobResult, JobState, JobStatus};

/// Figures for one job type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobStats {
    /// The job type.
    pub job_type: String,
    /// Attempts seen.
    pub attempts: usize,
    /// Attempts still PENDING (RUNNING, PREPARING).
    pub running: usize,
    /// FINISHED attempts.
    pub finished: usize,
    /// FAILED attempts.
    pub failed: usize,
    /// DEAD attempts.
    pub dead: usize,
    /// CANCELED attempts.
    pub canceled: usize,
    /// WARNING, SKIPPED and NO_ACTION_NEEDED attempts.
    pub other_success: usize,
    /// Successful among ended attempts, 0..=1 (`None` when none ended).
    pub success_rate: Option<f64>,
    /// Median duration of ended attempts, milliseconds.
    pub p50_ms: Option<u64>,
    /// 95th percentile duration, milliseconds.
    pub p95_ms: Option<u64>,
    /// Longest duration, milliseconds.
    pub max_ms: Option<u64>,
    /// When the last successful attempt ended, epoch milliseconds.
    pub last_success_ms: Option<i64>,
    /// When the last failed attempt ended, epoch milliseconds.
    pub last_failure_ms: Option<i64>,
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// When the attempt `status` belongs to began (its job id's time).
fn began(status: &JobStatus) -> Option<SystemTime> {
    let (secs, nanos) = status.job_id.uuid().get_timestamp()?.to_unix();
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

impl JobStats {
    /// The figures of `job_type` from the latest status of each of its
    /// attempts (`job_status_meta`'s rows).
    pub fn from_latest(job_type: &str, latest: &[JobStatus]) -> Self {
        let mut s = Self {
            job_type: job_type.to_owned(),
            attempts: latest.len(),
            running: 0,
            finished: 0,
            failed: 0,
            dead: 0,
            canceled: 0,
            other_success: 0,
            success_rate: None,
            p50_ms: None,
            p95_ms: None,
            max_ms: None,
            last_success_ms: None,
            last_failure_ms: None,
        };
        let mut durations = Vec::new();
        for st in latest {
            match st.state {
                JobState::Running | JobState::Preparing => s.running += 1,
                JobState::Finished => s.finished += 1,
                JobState::Failed => s.failed += 1,
                JobState::Dead => s.dead += 1,
                JobState::Canceled => s.canceled += 1,
                _ => s.other_success += 1,
            }
            let at = epoch_ms(st.timestamp);
            match st.result() {
                JobResult::Pending => continue,
                JobResult::Success => {
                    s.last_success_ms = s.last_success_ms.max(Some(at));
                }
                JobResult::Failed => {
                    s.last_failure_ms = s.last_failure_ms.max(Some(at));
                }
            }
            if let Some(b) = began(st) {
                if let Ok(d) = st.timestamp.duration_since(b) {
                    durations.push(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                }
            }
        }
        let ended = s.attempts - s.running;
        if ended > 0 {
            s.success_rate = Some((s.finished + s.other_success) as f64 / ended as f64);
        }
        durations.sort_unstable();
        s.p50_ms = quantile(&durations, 0.5);
        s.p95_ms = quantile(&durations, 0.95);
        s.max_ms = durations.last().copied();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, NodeId, TriggerId};
    use crate::status::JobType;

    fn attempt(state: JobState, began_ms: u64, took_ms: u64) -> JobStatus {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            began_ms / 1000,
            (began_ms % 1000) as u32 * 1_000_000,
        );
        JobStatus {
            job_type: JobType::new("j").unwrap(),
            job_id: JobId::from_uuid(uuid::Uuid::new_v1(ts, &[1, 2, 3, 4, 5, 6])),
            trigger_id: TriggerId::new(),
            timestamp: UNIX_EPOCH + Duration::from_millis(began_ms + took_ms),
            state,
            owner: Some(NodeId::new("n").unwrap()),
            fencing_token: None,
            content: None,
        }
    }

    #[test]
    fn counts_rates_and_durations() {
        let base = 1_800_000_000_000;
        let all = [
            attempt(JobState::Finished, base, 1000),
            attempt(JobState::Finished, base + 10_000, 3000),
            attempt(JobState::Failed, base + 20_000, 2000),
            attempt(JobState::Dead, base + 30_000, 8000),
            attempt(JobState::Running, base + 40_000, 100),
        ];
        let s = JobStats::from_latest("j", &all);
        assert_eq!(
            (s.attempts, s.running, s.finished, s.failed, s.dead),
            (5, 1, 2, 1, 1)
        );
        assert_eq!(s.success_rate, Some(0.5));
        assert_eq!(s.p50_ms, Some(3000));
        assert_eq!(s.max_ms, Some(8000));
        assert_eq!(s.last_success_ms, Some((base + 13_000) as i64));
        assert_eq!(s.last_failure_ms, Some((base + 38_000) as i64));
        let none = JobStats::from_latest("j", &[]);
        assert_eq!(
            (none.attempts, none.success_rate, none.p50_ms),
            (0, None, None)
        );
    }
}
