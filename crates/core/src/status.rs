//! Job status: job types, the nine job states, their three results, and the
//! status record written for every step of a job attempt.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::ids::{JobId, NodeId, TriggerId, name_type};
use crate::lease::FencingToken;

name_type!(
    /// The name of a kind of job (ha-jobs' `JobType`): `nightly-import`,
    /// `send-reports`. Each names the [`LockType`](crate::LockType) it runs under.
    JobType,
    "job type"
);

/// The state of a job attempt, as ha-jobs names it (stored as its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Started, lease held, work not begun.
    Preparing,
    /// Running under its lease.
    Running,
    /// Done, all well.
    Finished,
    /// Done, with something worth a look.
    Warning,
    /// Decided not to run (e.g. nothing new upstream).
    Skipped,
    /// Ran and found nothing to do.
    NoActionNeeded,
    /// Failed: an error, a panic, a timeout.
    Failed,
    /// Cancelled: by request, lease loss or shutdown.
    Canceled,
    /// Its replica died while it ran (recorded by the supervisor).
    Dead,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 9] = [
        Self::Preparing,
        Self::Running,
        Self::Finished,
        Self::Warning,
        Self::Skipped,
        Self::NoActionNeeded,
        Self::Failed,
        Self::Canceled,
        Self::Dead,
    ];

    /// ha-jobs' mapping of states to results.
    pub fn result(self) -> JobResult {
        match self {
            Self::Running | Self::Preparing => JobResult::Pending,
            Self::Finished | Self::Warning | Self::Skipped | Self::NoActionNeeded => {
                JobResult::Success
            }
            Self::Failed | Self::Canceled | Self::Dead => JobResult::Failed,
        }
    }

    /// The stored name, e.g. `NO_ACTION_NEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "PREPARING",
            Self::Running => "RUNNING",
            Self::Finished => "FINISHED",
            Self::Warning => "WARNING",
            Self::Skipped => "SKIPPED",
            Self::NoActionNeeded => "NO_ACTION_NEEDED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::Dead => "DEAD",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`"))
    }
}

/// The result of a job attempt: ha-jobs' three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobResult {
    /// Not done yet (or its replica died and nobody recorded it).
    Pending,
    /// Done well.
    Success,
    /// Done badly.
    Failed,
}

impl JobResult {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
        }
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status of one job attempt, as stored in `job_status_data` (every
/// step) and `job_status_meta` (the latest step).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobStatus {
    /// The kind of job.
    pub job_type: JobType,
    /// The attempt.
    pub job_id: JobId,
    /// The trigger the attempt serves; retries keep it.
    pub trigger_id: TriggerId,
    /// When the status was written (the writer's clock, millisecond precision).
    #[serde(with = "epoch_millis")]
    pub timestamp: SystemTime,
    /// The state.
    pub state: JobState,
    /// The replica that wrote it.
    pub owner: Option<NodeId>,
    /// The fencing token of the lease the attempt ran under.
    pub fencing_token: Option<FencingToken>,
    /// Free JSON: progress, results, error details.
    pub content: Option<serde_json::Value>,
}

/// The keys hajobs writes in a status's content and reads back, named once.
pub mod content_keys {
    /// Why an attempt ended as it did: CANCELED (the cancel reason), DEAD,
    /// SKIPPED, or FAILED without having run.
    pub const REASON: &str = "reason";
    /// When the planned retry of a FAILED attempt is due (epoch ms).
    pub const NEXT_RETRY_AT_MS: &str = "next_retry_at_ms";
    /// When an always-on job may start again after this attempt (epoch ms).
    pub const NEXT_RESTART_AT_MS: &str = "next_restart_at_ms";
    /// How many runs of an always-on job in a row, this one included,
    /// failed early (its restart backoff doubles with each).
    pub const RESTART_STREAK: &str = "restart_streak";
    /// The parameters of the attempt's trigger (an object), on its RUNNING
    /// and final statuses.
    pub const PARAMS: &str = "params";
    /// The size of the trigger's payload (compact JSON, bytes): the
    /// payload itself is not copied into statuses.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
}

impl JobStatus {
    /// The one status of an attempt that never ran: a trigger that ended
    /// without starting (a firing past its starting deadline, a queued
    /// trigger given up or removed, a claim nobody followed up), written now
    /// by `owner` under a fresh job id and without a fencing token.
    pub fn never_ran(
        job_type: JobType,
        trigger_id: TriggerId,
        state: JobState,
        owner: Option<NodeId>,
        content: serde_json::Value,
    ) -> Self {
        Self {
            job_type,
            job_id: JobId::new(),
            trigger_id,
            timestamp: SystemTime::now(),
            state,
            owner,
            fencing_token: None,
            content: Some(content),
        }
    }

    /// The reason its content gives ([`content_keys::REASON`]), if any.
    pub fn reason(&self) -> Option<&str> {
        self.content.as_ref()?.get(content_keys::REASON)?.as_str()
    }

    /// When its planned retry is due, in epoch ms
    /// ([`content_keys::NEXT_RETRY_AT_MS`]), if one is planned.
    pub fn next_retry_at_ms(&self) -> Option<i64> {
        self.content
            .as_ref()?
            .get(content_keys::NEXT_RETRY_AT_MS)?
            .as_i64()
    }

    /// The result of its state.
    pub fn result(&self) -> JobResult {
        self.state.result()
    }
}

/// A row read back from the status tables: a status, or a row that could
/// not be understood — named, never dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum StatusEntry {
    /// A status.
    Status(JobStatus),
    /// A row that is not a valid status.
    Corrupt {
        /// Table and key of the row.
        row: String,
        /// The row's job type as stored, when it is readable text, so that
        /// a reader can still find that job type's valid rows.
        job_type: Option<String>,
        /// What is wrong with it.
        problem: String,
    },
}

impl StatusEntry {
    /// The status, if the row was valid.
    pub fn status(&self) -> Option<&JobStatus> {
        match self {
            Self::Status(s) => Some(s),
            Self::Corrupt { .. } => None,
        }
    }
}

mod epoch_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        s.serialize_i64(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_ha_jobs_results_and_round_trip_their_names() {
        use JobResult::{Pending, Success};
        use JobState::*;
        let expected = [
            (Running, Pending),
            (Preparing, Pending),
            (Finished, Success),
            (Warning, Success),
            (Skipped, Success),
            (NoActionNeeded, Success),
            (JobState::Failed, JobResult::Failed),
            (Canceled, JobResult::Failed),
            (Dead, JobResult::Failed),
        ];
        for (state, result) in expected {
            assert_eq!(state.result(), result, "{state}");
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert_eq!(NoActionNeeded.to_string(), "NO_ACTION_NEEDED");
        assert!("BOGUS".parse::<JobState>().unwrap_err().contains("BOGUS"));
    }
}
