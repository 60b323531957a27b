//! One-time triggers at a given time, as an operator asks for them:
//! scheduled (`hajobs trigger JOB --at T | --in D`, `POST /scheduled/{job}`),
//! listed (`hajobs scheduled`, `GET /scheduled`), removed before they fire
//! (`hajobs scheduled rm`, `DELETE /scheduled/{trigger_id}`, recorded).

use std::time::{Duration, SystemTime};

use hajobs_core::scheduled_store::MAX_AHEAD;
use hajobs_core::{
    JobState, JobStatus, JobType, ScheduledStore, ScheduledTrigger, TriggerArgs, TriggerId,
};
use hajobs_scheduler::SCHEDULED_POLL;
use serde::Serialize;

use super::{Admin, AdminError, AdminResult, ErrorKind, epoch_ms};

/// A scheduled trigger, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ScheduledView {
    /// The trigger it starts.
    pub(crate) trigger_id: String,
    /// The job type.
    pub(crate) job_type: String,
    /// When it is due (RFC 3339, UTC).
    pub(crate) due_at: String,
    /// The same, epoch ms.
    pub(crate) due_at_ms: i64,
    /// `pending`, `claimed` (firing now), `started`, `queued`, `skipped`,
    /// `error` or `removed`.
    pub(crate) state: String,
    /// Who scheduled it.
    pub(crate) scheduled_by: Option<String>,
    /// The replica that fired it.
    pub(crate) claimed_by: Option<String>,
    /// The attempt it started, or why it did not start.
    pub(crate) detail: Option<String>,
    /// Who removed it.
    pub(crate) removed_by: Option<String>,
}

impl From<&ScheduledTrigger> for ScheduledView {
    fn from(t: &ScheduledTrigger) -> Self {
        let state = match (&t.removed_by, &t.claimed_by, &t.outcome) {
            (Some(_), _, _) => "removed".to_owned(),
            (None, None, _) => "pending".to_owned(),
            (None, Some(_), None) => "claimed".to_owned(),
            (None, Some(_), Some(o)) => o.clone(),
        };
        Self {
            trigger_id: t.trigger_id.to_string(),
            job_type: t.job_type.clone(),
            due_at: chrono::DateTime::<chrono::Utc>::from(t.due_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            due_at_ms: epoch_ms(t.due_at),
            state,
            scheduled_by: t.scheduled_by.clone(),
            claimed_by: t.claimed_by.clone(),
            detail: t.detail.clone(),
            removed_by: t.removed_by.clone(),
        }
    }
}

/// How far back `scheduled` lists triggers that already fired.
const LISTED_PAST: Duration = Duration::from_secs(3600);

/// When a trigger is due: `at` (RFC 3339) or `in` (a duration from now),
/// exactly one of them; in the future, at most [`MAX_AHEAD`] away. The one
/// reading of both, for the CLI and HTTP.
pub(crate) fn due_at(at: Option<&str>, r#in: Option<&str>) -> AdminResult<SystemTime> {
    let now = SystemTime::now();
    let due = match (at, r#in) {
        (Some(at), None) => chrono::DateTime::parse_from_rfc3339(at.trim())
            .map(SystemTime::from)
            .map_err(|e| {
                AdminError::bad_input(format!(
                    "at `{}` is not an RFC 3339 time like 2026-12-01T02:00:00Z ({e})",
                    at.escape_debug()
                ))
            })?,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d.trim()).map_err(|e| {
                AdminError::bad_input(format!(
                    "in `{}` is not a duration like 90m or 2h ({e})",
                    d.escape_debug()
                ))
            })?;
            now + d
        }
        _ => {
            return Err(AdminError::bad_input(
                "give exactly one of `at` (an RFC 3339 time) and `in` (a duration)",
            ));
        }
    };
    if due <= now {
        return Err(AdminError::bad_input(format!(
            "{} is in the past: a scheduled trigger must be due later (`hajobs trigger JOB` runs it now)",
            chrono::DateTime::<chrono::Utc>::from(due).to_rfc3339()
        )));
    }
    if due > now + MAX_AHEAD {
        return Err(AdminError::bad_input(format!(
            "{} is more than {} days ahead",
            chrono::DateTime::<chrono::Utc>::from(due).to_rfc3339(),
            MAX_AHEAD.as_secs() / 86_400
        )));
    }
    Ok(due)
}

impl Admin {
    async fn scheduled_store(&self) -> AdminResult<&std::sync::Arc<ScheduledStore>> {
        self.scheduled
            .get_or_try_init(|| async {
                Ok(std::sync::Arc::new(
                    ScheduledStore::new(
                        self.session.clone(),
                        &self.cassandra,
                        hajobs_core::status_store::DEFAULT_RETENTION,
                    )
                    .await?,
                ))
            })
            .await
    }

    /// Schedules a one-time trigger of `job` at `due_at`, carrying `given`
    /// (checked as for a trigger now, before anything is recorded). One
    /// replica that has the job fires it at that time; when it is due
    /// sooner than the replicas' next read, they are woken.
    pub(crate) async fn schedule(
        &self,
        job: &str,
        by: &str,
        given: TriggerArgs,
        due_at: SystemTime,
    ) -> AdminResult<ScheduledView> {
        let job_type = self.job_type(job)?;
        let args = self.resolve_args(&job_type, given)?;
        let trigger_id = TriggerId::new();
        if !args.is_empty() {
            self.args_store()
                .await?
                .write(trigger_id, job_type.as_str(), &args, by)
                .await?;
        }
        let t = self
            .scheduled_store()
            .await?
            .schedule(trigger_id, job_type.as_str(), due_at, by)
            .await?;
        if due_at < SystemTime::now() + SCHEDULED_POLL * 2 {
            self.waker.wake_every(job_type.as_str(), trigger_id).await;
        }
        tracing::info!(job_type = %job_type, %trigger_id, by, "one-time trigger scheduled");
        Ok(ScheduledView::from(&t))
    }

    /// The scheduled triggers (of `job`, or of all), due from an hour ago
    /// on, soonest first.
    pub(crate) async fn scheduled(&self, job: Option<&str>) -> AdminResult<Vec<ScheduledView>> {
        let job_type = job.map(|j| self.job_type(j)).transpose()?;
        let now = SystemTime::now();
        let all = self
            .scheduled_store()
            .await?
            .list(now - LISTED_PAST, now + MAX_AHEAD)
            .await?;
        Ok(all
            .iter()
            .filter(|t| job_type.as_ref().is_none_or(|j| t.job_type == j.as_str()))
            .map(ScheduledView::from)
            .collect())
    }

    /// Removes the scheduled trigger `trigger_id` before it fires, naming
    /// `by` (in the row, and as a SKIPPED status of the trigger). Refused
    /// once a replica claimed it.
    pub(crate) async fn scheduled_remove(
        &self,
        trigger_id: &str,
        by: &str,
    ) -> AdminResult<ScheduledView> {
        let id: TriggerId = trigger_id.parse().map_err(|e| {
            AdminError::bad_input(format!("`{trigger_id}` is not a trigger id: {e}"))
        })?;
        let store = self.scheduled_store().await?;
        let now = SystemTime::now();
        let t = store
            .list(now - LISTED_PAST, now + MAX_AHEAD)
            .await?
            .into_iter()
            .find(|t| t.trigger_id == id)
            .ok_or_else(|| {
                AdminError::new(
                    ErrorKind::NotFound,
                    format!("trigger {id} is not scheduled"),
                )
            })?;
        if !t.is_pending() || !store.remove(&t, by).await? {
            let now = store.get(&t).await?.unwrap_or(t);
            return Err(AdminError::new(
                ErrorKind::Conflict,
                format!(
                    "trigger {id} is {} (not pending): it can no longer be removed",
                    ScheduledView::from(&now).state
                ),
            ));
        }
        if let Ok(job_type) = JobType::new(t.job_type.clone()) {
            self.statuses
                .write(&JobStatus::never_ran(
                    job_type,
                    id,
                    JobState::Skipped,
                    None,
                    serde_json::json!({
                        hajobs_core::status::content_keys::REASON: format!("scheduled trigger removed by {by}"),
                        "due_at": ScheduledView::from(&t).due_at,
                    }),
                ))
                .await?;
        }
        tracing::warn!(trigger_id = %id, job_type = t.job_type, by, "scheduled trigger removed by an operator");
        let removed = store.get(&t).await?.unwrap_or(t);
        Ok(ScheduledView::from(&removed))
    }
}
