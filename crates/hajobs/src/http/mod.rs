//! # The HTTP API, the page and the metrics
//!
//! Routes only: every answer comes from the admin layer ([`Admin`]), the
//! same calls the CLI makes, rendered as JSON (or the page, or Prometheus'
//! text format). Off unless `[http]` is configured; `127.0.0.1:7070` unless
//! an operator says otherwise.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page: jobs, holders, live progress, recent attempts, stats, Trigger / Cancel |
//! | `GET /jobs` | every configured job type with its holder and latest attempt |
//! | `POST /jobs/{job_type}` | trigger through the cluster: 202, 409 locked, 404 unknown |
//! | `DELETE /jobs/{job_type}` | cancel the running attempt: 202 |
//! | `GET /jobs/{job_type}?limit=N` | its newest attempts |
//! | `GET /jobs/{job_type}/latest` | its newest status |
//! | `GET /jobs/{job_type}/stats` | its figures |
//! | `GET /jobs/{job_type}/{job_id}` | every status of one attempt |
//! | `GET /stats`, `GET /nodes`, `GET /locks` | all job types' figures, live replicas, held locks |
//! | `GET /queue`, `GET /queue/{lock_type}` | the triggers queued for busy lock types |
//! | `GET /work/{work_set}?limit=N`, `GET /work/{work_set}/{key}` | work items |
//! | `POST /wake` | read the trigger requests now (no token: it carries and grants nothing): 204 |
//! | `GET /health`, `GET /ready` | live; Cassandra reachable and schema current (503 otherwise) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /openapi.json` | the OpenAPI document, generated from these handlers |
//!
//! With an admin token, `POST` and `DELETE` require `Authorization: Bearer
//! TOKEN` (401 otherwise). Every error is JSON: `{"error": "…", "kind": "…"}`
//! (and `holder` for 409).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::admin::{
    Admin, AdminError, Cancelled, ErrorKind, HolderView, JobView, QueuedView, Readiness,
    TriggeredView, WorkItemView,
};

/// The largest request body accepted: a trigger's parameters and its
/// payload (at most 64 KiB) with room for the JSON around them; no other
/// route needs a body.
const MAX_BODY: usize = hajobs_core::trigger_args::MAX_PAYLOAD_BYTES + 8 * 1024;

mod protect;
mod scheduled;
mod serve;
mod stats_cache;

pub(crate) use protect::Caller;
use protect::{Documented, Protection};

/// The page, self-contained: no CDN, no external fonts; its script and
/// style are files of their own (the Content-Security-Policy allows no
/// inline script).
const PAGE: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct ServerState {
    admin: Admin,
    metrics: PrometheusHandle,
    node: Arc<str>,
    /// `/stats` is costly: served from a copy (see [`stats_cache`]).
    stats: Arc<stats_cache::StatsCache>,
}

impl ServerState {
    pub(crate) fn new(admin: Admin, metrics: PrometheusHandle, node: &str) -> Self {
        Self {
            admin,
            metrics,
            node: node.into(),
            stats: Arc::default(),
        }
    }
}

/// Installs the Prometheus recorder for this process.
pub(crate) fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    // Leases take milliseconds; jobs take seconds to hours.
    const FAST: [f64; 12] = [
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ];
    const SLOW: [f64; 12] = [
        0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
    ];
    let mut builder = PrometheusBuilder::new();
    for name in hajobs_core::metrics::HISTOGRAMS {
        let buckets: &[f64] = if name.starts_with("hajobs_lease_") {
            &FAST
        } else {
            &SLOW
        };
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
    }
    let handle = builder.install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The running server.
pub(crate) struct Server {
    stop: tokio::sync::watch::Sender<bool>,
    /// Sent when the server's runtime has finished.
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Server {
    /// Stops accepting and ends the open connections.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.done).await;
    }
}

/// Serves the routes on `listener` until stopped, under `[http]`'s rules.
///
/// Connections are accepted, read and answered on a runtime of their own
/// (one thread, `hajobs-http`): a flood of connections and requests,
/// refused or not, queues there, never among the lease keepers' tasks. A
/// request let in runs on the daemon's runtime, where the admin layer lives
/// (at most `max_concurrent_requests` at once).
pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    state: ServerState,
    http: &crate::config::HttpConfig,
) -> anyhow::Result<Server> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (finished, done) = tokio::sync::oneshot::channel();
    let app = router(state, Protection::new(http));
    let listener = listener.into_std()?;
    let header_timeout = http.request_timeout;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hajobs-http")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("hajobs-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve::serve(listener, app, header_timeout, stopped).await,
                    Err(e) => tracing::error!(error = %e, "HTTP listener unusable"),
                }
            });
            let _ = finished.send(());
        })?;
    Ok(Server { stop, done })
}

/// Runs the route on the daemon's runtime; the task is aborted if the
/// connection's side gives up on it (the request timeout, a closed
/// connection).
async fn on_daemon_runtime(
    State(daemon): State<tokio::runtime::Handle>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = daemon.spawn(next.run(request));
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(response) => response,
        Err(_) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the request was stopped",
        )
        .into_response(),
    }
}

/// Every route, behind the [protections](protect).
pub(crate) fn router(state: ServerState, protection: Protection) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/page.js", get(page_js))
        .route("/page.css", get(page_css))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/jobs", get(jobs))
        .route(
            "/jobs/{job_type}",
            get(history).post(trigger).delete(cancel),
        )
        .route("/jobs/{job_type}/latest", get(latest))
        .route("/jobs/{job_type}/stats", get(job_stats))
        .route("/jobs/{job_type}/{job_id}", get(attempt))
        .route("/stats", get(stats))
        .route("/nodes", get(nodes))
        .route("/locks", get(locks))
        .route("/queue", get(queue_all))
        .route("/scheduled", get(scheduled::list).post(scheduled::schedule))
        .route(
            "/scheduled/{trigger_id}",
            axum::routing::delete(scheduled::remove),
        )
        .route("/queue/{lock_type}", get(queue_of))
        .route("/work/{work_set}", get(work_list))
        .route("/work/{work_set}/{key}", get(work_item))
        .route("/wake", axum::routing::post(wake))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Inside the protections: only what they let in reaches the daemon's runtime.
        .layer(axum::middleware::from_fn_with_state(
            tokio::runtime::Handle::current(),
            on_daemon_runtime,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(protection),
            protect::protect,
        ))
        .with_state(state)
}

/// An error as every route answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApiError {
    /// What went wrong, naming the problem.
    error: String,
    /// `bad_input`, `unknown_job`, `not_found`, `locked`, `unavailable`,
    /// `failed`, `unauthorized`, `too_large`, `method_not_allowed`, `conflict`.
    kind: String,
    /// The holder of the lock, for `locked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<Box<HolderView>>,
}

struct Failure(StatusCode, Box<ApiError>);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(*self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl Failure {
    fn new(status: StatusCode, kind: &str, error: impl Into<String>) -> Self {
        Self(
            status,
            Box::new(ApiError {
                error: error.into(),
                kind: kind.to_owned(),
                holder: None,
            }),
        )
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        let (status, kind) = match e.kind {
            ErrorKind::BadInput => (StatusCode::BAD_REQUEST, "bad_input"),
            ErrorKind::UnknownJob => (StatusCode::NOT_FOUND, "unknown_job"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Locked => (StatusCode::CONFLICT, "locked"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
        };
        Self(
            status,
            Box::new(ApiError {
                error: e.message,
                kind: kind.to_owned(),
                holder: e.holder,
            }),
        )
    }
}

impl From<PathRejection> for Failure {
    fn from(e: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("path: {}", e.body_text()),
        )
    }
}

impl From<QueryRejection> for Failure {
    fn from(e: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("query: {}", e.body_text()),
        )
    }
}

impl From<BytesRejection> for Failure {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_input"
        };
        Self::new(
            status,
            kind,
            format!("body: {} (at most {MAX_BODY} bytes)", e.body_text()),
        )
    }
}

type ApiResult<T> = Result<T, Failure>;

/// `?limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct Limit {
    /// How many attempts, newest first (1 to 10000; default 20).
    limit: Option<u32>,
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn page_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
}

async fn page_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
}

async fn not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (see /openapi.json)",
    )
}

async fn method_not_allowed() -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see /openapi.json)",
    )
}

/// Liveness.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `live`.
    status: String,
    /// This replica.
    node: String,
}

/// This process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(state): State<ServerState>) -> Json<Health> {
    Json(Health {
        status: "live".into(),
        node: state.node.to_string(),
    })
}

/// Cassandra answers and the schema is current.
#[utoipa::path(get, path = "/ready", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(State(state): State<ServerState>) -> (StatusCode, Json<Readiness>) {
    let r = state.admin.ready().await;
    let status = if r.cassandra && r.schema_current {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r))
}

/// The metrics in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// This document.
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every configured job type: spec, cron in words, next firing, holder, latest attempt.
#[utoipa::path(get, path = "/jobs", responses((status = 200, body = [JobView])))]
async fn jobs(State(state): State<ServerState>) -> ApiResult<Json<Vec<JobView>>> {
    Ok(Json(state.admin.jobs().await?))
}

/// What a trigger carries (`POST /jobs/{job_type}`'s optional body).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerBody {
    /// Parameters, NAME → VALUE: checked against the job's `params`
    /// (unknown, missing or malformed ones are refused with 400, naming
    /// the parameter); the command sees `HAJOBS_PARAM_<NAME>`.
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    /// Any JSON value, if the job's `payload` allows one: the command
    /// reads it on its standard input.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
}

/// Runs the job now on one live replica (through the cluster), with the
/// parameters and payload of the optional JSON body.
#[utoipa::path(post, path = "/jobs/{job_type}",
    params(("job_type" = String, Path, description = "the job type")),
    request_body(content = Option<TriggerBody>, content_type = "application/json"),
    responses(
        (status = 202, body = TriggeredView, description = "started on a replica"),
        (status = 400, body = ApiError, description = "a parameter or the payload refused, named"),
        (status = 401, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "the lock is held: `holder` says by whom"),
        (status = 413, body = ApiError), (status = 503, body = ApiError, description = "no live replica has the job")),
    security(("admin_token" = [])))]
async fn trigger(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    job_type: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<TriggeredView>)> {
    let Path(job_type) = job_type?;
    let body = body?;
    let given = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice::<TriggerBody>(&body).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "bad_input",
                format!(
                    "body: {e} (expected {{\"params\": {{NAME: VALUE, …}}, \"payload\": JSON}})"
                ),
            )
        })?
    };
    let given = hajobs_core::TriggerArgs {
        params: given.params,
        payload: given.payload,
        parent: None,
    };
    let by = format!("{}@{}", caller.name(), state.node);
    let t = state.admin.trigger(&job_type, &by, given).await?;
    Ok((StatusCode::ACCEPTED, Json(TriggeredView::from(&t))))
}

/// Asks this replica to read the trigger requests now rather than at its
/// next poll: what a requester calls after recording a request of a job
/// this replica has. It carries nothing and grants nothing (the request in
/// Cassandra is the record), so it needs no token; bursts make one read per
/// 25 ms.
#[utoipa::path(post, path = "/wake",
    responses((status = 204, description = "the request watcher reads now"),
        (status = 503, body = ApiError, description = "this process runs no replica")))]
async fn wake(State(state): State<ServerState>) -> Response {
    if state.admin.waker().wake_here() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process runs no replica to wake",
        )
        .into_response()
    }
}

/// Cancels the running attempt, wherever it runs.
#[utoipa::path(delete, path = "/jobs/{job_type}",
    params(("job_type" = String, Path, description = "the job type")),
    responses((status = 202, body = Cancelled), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("admin_token" = [])))]
async fn cancel(
    State(state): State<ServerState>,
    job_type: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Cancelled>)> {
    let Path(job_type) = job_type?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state.admin.cancel(&job_type).await?),
    ))
}

/// The newest attempts of a job type (each its newest status).
#[utoipa::path(get, path = "/jobs/{job_type}",
    params(("job_type" = String, Path, description = "the job type"), Limit),
    responses((status = 200, body = [serde_json::Value], description = "statuses, newest first"),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn history(
    State(state): State<ServerState>,
    job_type: Result<Path<String>, PathRejection>,
    limit: Result<Query<Limit>, QueryRejection>,
) -> ApiResult<Json<Vec<hajobs_core::StatusEntry>>> {
    let Path(job_type) = job_type?;
    let Query(limit) = limit?;
    state.admin.job_type(&job_type)?;
    Ok(Json(
        state
            .admin
            .status(Some(&job_type), limit.limit.unwrap_or(20))
            .await?,
    ))
}

/// The newest status of a job type.
#[utoipa::path(get, path = "/jobs/{job_type}/latest",
    params(("job_type" = String, Path, description = "the job type")),
    responses((status = 200, body = serde_json::Value), (status = 404, body = ApiError)))]
async fn latest(
    State(state): State<ServerState>,
    job_type: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<hajobs_core::StatusEntry>> {
    let Path(job_type) = job_type?;
    state.admin.job_type(&job_type)?;
    Ok(Json(state.admin.latest(&job_type).await?))
}

/// Every status one attempt went through, oldest first.
#[utoipa::path(get, path = "/jobs/{job_type}/{job_id}",
    params(("job_type" = String, Path, description = "the job type"),
        ("job_id" = String, Path, description = "the attempt's job id (a time-based UUID)")),
    responses((status = 200, body = [serde_json::Value]), (status = 400, body = ApiError),
        (status = 404, body = ApiError)))]
async fn attempt(
    State(state): State<ServerState>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Vec<hajobs_core::StatusEntry>>> {
    let Path((job_type, job_id)) = ids?;
    state.admin.job_type(&job_type)?;
    Ok(Json(state.admin.attempt(&job_type, &job_id).await?))
}

/// A job type's figures over its newest attempts.
#[utoipa::path(get, path = "/jobs/{job_type}/stats",
    params(("job_type" = String, Path, description = "the job type")),
    responses((status = 200, body = serde_json::Value), (status = 404, body = ApiError)))]
async fn job_stats(
    State(state): State<ServerState>,
    job_type: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<hajobs_core::JobStats>> {
    let Path(job_type) = job_type?;
    state.admin.job_type(&job_type)?;
    let mut stats = state.stats.get(&state.admin, Some(&job_type)).await?;
    stats
        .pop()
        .map(Json)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "not_found", "no figures"))
}

/// Every job type's figures.
#[utoipa::path(get, path = "/stats", responses((status = 200, body = [serde_json::Value])))]
async fn stats(State(state): State<ServerState>) -> ApiResult<Json<Vec<hajobs_core::JobStats>>> {
    Ok(Json(state.stats.get(&state.admin, None).await?))
}

/// The live replicas.
#[utoipa::path(get, path = "/nodes", responses((status = 200, body = [serde_json::Value])))]
async fn nodes(State(state): State<ServerState>) -> ApiResult<Json<Vec<hajobs_core::NodeRecord>>> {
    Ok(Json(state.admin.nodes().await?))
}

/// The held locks.
#[utoipa::path(get, path = "/locks", responses((status = 200, body = [HolderView])))]
async fn locks(State(state): State<ServerState>) -> ApiResult<Json<Vec<HolderView>>> {
    Ok(Json(
        state
            .admin
            .locks()
            .await?
            .iter()
            .map(HolderView::from)
            .collect(),
    ))
}

/// Every queued trigger, by lock type, oldest first.
#[utoipa::path(get, path = "/queue", responses((status = 200, body = [QueuedView])))]
async fn queue_all(State(state): State<ServerState>) -> ApiResult<Json<Vec<QueuedView>>> {
    Ok(Json(state.admin.queue(None).await?))
}

/// The triggers queued for one lock type, oldest first.
#[utoipa::path(get, path = "/queue/{lock_type}",
    params(("lock_type" = String, Path, description = "the lock type")),
    responses((status = 200, body = [QueuedView]), (status = 400, body = ApiError)))]
async fn queue_of(
    State(state): State<ServerState>,
    lock_type: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<QueuedView>>> {
    let Path(lock_type) = lock_type?;
    Ok(Json(state.admin.queue(Some(&lock_type)).await?))
}

/// The items of a work set, newest first check-in day first.
#[utoipa::path(get, path = "/work/{work_set}",
    params(("work_set" = String, Path, description = "the work set"), Limit),
    responses((status = 200, body = [WorkItemView]), (status = 400, body = ApiError)))]
async fn work_list(
    State(state): State<ServerState>,
    work_set: Result<Path<String>, PathRejection>,
    limit: Result<Query<Limit>, QueryRejection>,
) -> ApiResult<Json<Vec<WorkItemView>>> {
    let Path(work_set) = work_set?;
    let Query(limit) = limit?;
    Ok(Json(
        state
            .admin
            .work_list(&work_set, limit.limit.unwrap_or(100), None)
            .await?,
    ))
}

/// One work item.
#[utoipa::path(get, path = "/work/{work_set}/{key}",
    params(("work_set" = String, Path, description = "the work set"),
        ("key" = String, Path, description = "the item's key")),
    responses((status = 200, body = WorkItemView), (status = 404, body = ApiError)))]
async fn work_item(
    State(state): State<ServerState>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<WorkItemView>> {
    let Path((work_set, key)) = ids?;
    Ok(Json(state.admin.work_check(&work_set, &key).await?))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hajobs", description = "Jobs that run on exactly one replica at a time: the admin API of a replica."),
    paths(health, ready, metrics, jobs, trigger, cancel, wake, history, latest, attempt, job_stats, stats, nodes, locks, queue_all, queue_of, scheduled::schedule, scheduled::list, scheduled::remove, work_list, work_item),
    components(schemas(ApiError, HolderView, JobView, TriggerBody, TriggeredView, Cancelled, Readiness, Health, QueuedView, crate::admin::ScheduledView, scheduled::ScheduleBody, WorkItemView)),
    modifiers(&Documented)
)]
struct ApiDoc;

/// The OpenAPI document as JSON (for `hajobs openapi`).
pub(crate) fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
