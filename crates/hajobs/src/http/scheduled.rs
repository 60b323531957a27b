//! The routes of one-time triggers at a given time, over the admin layer's
//! `schedule`, `scheduled` and `scheduled_remove`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiResult, Caller, Failure, ServerState};
use crate::admin::{ScheduledView, due_at};

/// A one-time trigger to schedule (`POST /scheduled`'s body).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// The job type.
    job_type: String,
    /// When: an RFC 3339 time (give this or `in`).
    at: Option<String>,
    /// When: a duration from now, e.g. `90m` (give this or `at`).
    #[serde(rename = "in")]
    r#in: Option<String>,
    /// Parameters, NAME → VALUE, checked against the job's `params`.
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    /// A JSON payload, if the job's `payload` allows one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
}

/// `?job=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct JobFilter {
    /// One job type (default: every job).
    job: Option<String>,
}

/// Schedules a one-time trigger: one replica that has the job runs it at
/// that time, once.
#[utoipa::path(post, path = "/scheduled",
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses((status = 201, body = ScheduledView, description = "recorded; it fires at its time"),
        (status = 400, body = super::ApiError, description = "a bad time, parameter or payload, named"),
        (status = 401, body = super::ApiError), (status = 404, body = super::ApiError),
        (status = 413, body = super::ApiError), (status = 503, body = super::ApiError)),
    security(("admin_token" = [])))]
pub(crate) async fn schedule(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ScheduledView>)> {
    let body = body?;
    let b: ScheduleBody = serde_json::from_slice(&body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!(
                "body: {e} (expected {{\"job_type\": JOB, \"at\": TIME | \"in\": DURATION, \"params\": {{…}}, \"payload\": JSON}})"
            ),
        )
    })?;
    let due = due_at(b.at.as_deref(), b.r#in.as_deref())?;
    let given = hajobs_core::TriggerArgs {
        params: b.params,
        payload: b.payload,
        parent: None,
    };
    let by = format!("{}@{}", caller.name(), state.node);
    let s = state.admin.schedule(&b.job_type, &by, given, due).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// The scheduled triggers due from an hour ago on, soonest first.
#[utoipa::path(get, path = "/scheduled", params(JobFilter),
    responses((status = 200, body = [ScheduledView]), (status = 400, body = super::ApiError),
        (status = 404, body = super::ApiError)))]
pub(crate) async fn list(
    State(state): State<ServerState>,
    filter: Result<Query<JobFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<ScheduledView>>> {
    let Query(filter) = filter?;
    Ok(Json(state.admin.scheduled(filter.job.as_deref()).await?))
}

/// Removes a scheduled trigger before it fires (recorded, naming the
/// caller); 409 once a replica claimed it.
#[utoipa::path(delete, path = "/scheduled/{trigger_id}",
    params(("trigger_id" = String, Path, description = "the trigger id")),
    responses((status = 200, body = ScheduledView), (status = 400, body = super::ApiError),
        (status = 401, body = super::ApiError), (status = 404, body = super::ApiError),
        (status = 409, body = super::ApiError)),
    security(("admin_token" = [])))]
pub(crate) async fn remove(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    trigger_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ScheduledView>> {
    let Path(trigger_id) = trigger_id?;
    let by = format!("{}@{}", caller.name(), state.node);
    Ok(Json(state.admin.scheduled_remove(&trigger_id, &by).await?))
}
