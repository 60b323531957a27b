//! # hajobs-scheduler
//!
//! The job manager of hajobs. A Rust service registers jobs — async
//! functions receiving a [`JobContext`] — each with a [`JobSpec`]: its job
//! type, the lock type it runs under, an optional cron schedule, a timeout
//! and a retrigger count. The [`JobManager`] triggers them by cron or by
//! hand, runs each attempt under its lease (kept by `hajobs-lock-keeper`),
//! records every step in Cassandra and cancels attempts cluster-wide.
//!
//! The path of one trigger: [`JobManager::trigger`] (or a cron firing,
//! claimed once cluster-wide) → a new [`JobId`](hajobs_core::JobId) →
//! lease acquired ([`StartOutcome::Locked`] if held) → lock keeper started →
//! RUNNING recorded → the job runs → FINISHED / WARNING / SKIPPED /
//! NO_ACTION_NEEDED / FAILED / CANCELED recorded → lease released.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`job`] | the [`Job`] trait, [`Done`], [`JobError`] |
//! | [`context`] | [`JobContext`]: ids, fencing token, cancellation, progress, blocking work with a [`LeaseCheck`] |
//! | [`spec`] | [`JobSpec`]: lock type, cron, timeout, retrigger count, lease TTL, and the policies: [`OnLocked`] (skip / queue), [`Concurrency`] (forbid / replace / allow), [`RetryPolicy`], missed runs, starting deadline, [`LockConsistency`]; [`LockSpec`]: a lock type's capacity and `min_interval` |
//! | [`args`] | [`ArgsSpec`]: what a job's triggers may carry — declared parameters ([`ParamSpec`], a [`Pattern`] each), a payload ([`PayloadPolicy`]), its cron firings' static parameters — and the one rule that checks them |
//! | [`follow_ups`] | jobs that follow jobs (`on_success`, `on_failure`): the one rule checking them (known jobs, no cycle) |
//! | [`cron`] | [`CronSchedule`] (croner, with seconds, time zones) and [`MissedRuns`] |
//! | [`manager`] | [`JobManager`]: its state, start and accessors; its rooms: `builder` ([`JobManagerBuilder`]), `cron` (timers, firings claimed once, catch-up, lost firings), `triggers` (by hand, through the cluster, retrigger, replace), `queue` (the queue runners), `attempts` (an attempt from its lease to its end, planned retries), `cancel` (cancel and shutdown) |
//! | [`locks`] | [`Locks`]: where a lease is **taken** — a lock type's rows (slots, the gate), the lease store of its consistency, acquire; the manager and the admin layer both go through it |
//! | [`requests`] | [`RequestWatcher`]: triggers asked of the cluster, claimed once and started here, read when a requester wakes it ([`RequestWake`]) or polled; [`hand_over()`]: a stopping replica's cancelled attempts resumed elsewhere |
//! | [`work`] | [`WorkItems`]: work items processed exactly once — check-in with a kept lease, check-out, fail, [`WorkItems::process`] with a check-in timeout |
//! | [`steps`] | the firing path's steps (claim, lease, keeper, watch, RUNNING, outcome) as DEBUG tracing spans, read by the `fire_steps` bench |
//! | [`clock`] | [`Clock`]: the wall clock that names cron firings |
//! | [`error`] | [`ManagerError`] |
//! | `attempt` | one attempt from RUNNING to its final status |
//! | `claim_order` | which replica claims a cron firing first (one LWT per firing; the others read) |
//! | `watch` | this replica's row of `watch_list`: the attempts and waiting firings supervisors look at |
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use hajobs_core::{CassandraConfig, NodeId};
//! use hajobs_scheduler::{Done, JobContext, JobError, JobManager, JobSpec, StartOutcome};
//!
//! async fn import(ctx: JobContext) -> Result<Done, JobError> {
//!     for batch in 0..10 {
//!         if ctx.is_cancelled() {
//!             return Err(JobError::new("stopped"));
//!         }
//!         // … import `batch`, writing with ctx.fencing_token …
//!         ctx.progress(serde_json::json!({ "batch": batch })).await?;
//!     }
//!     Ok(Done::finished())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = JobSpec::new("nightly-import", "import-lock")?
//!     .cron("0 30 2 * * *", "Europe/Berlin")?
//!     .timeout(Duration::from_secs(3600))?
//!     .retrigger_count(2);
//! let manager = JobManager::builder(CassandraConfig::default(), NodeId::new("host-1")?)
//!     .job(spec, import)
//!     .build()
//!     .await?;
//! manager.start().await?;
//! match manager.trigger("nightly-import").await? {
//!     StartOutcome::Started { job_id, .. } => println!("started {job_id}"),
//!     StartOutcome::Locked { holder, .. } => println!("already running: {}", holder.job_id),
//!     StartOutcome::Queued { position, .. } => println!("queued at {position}"),
//!     StartOutcome::Error { details, .. } => eprintln!("not started: {details}"),
//! }
//! manager.shutdown(Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```

pub mod args;
mod attempt;
mod claim_order;
pub mod clock;
pub mod context;
pub mod cron;
pub mod error;
pub mod follow_ups;
pub mod job;
pub mod locks;
pub mod manager;
pub mod requests;
pub mod spec;
pub mod steps;
mod watch;
pub mod work;

pub use args::{ArgsSpec, ParamSpec, Pattern, PayloadPolicy};
pub use clock::{Clock, OffsetClock, SystemClock};
pub use context::{JobContext, LeaseCheck};
pub use cron::{CronSchedule, MissedRuns};
pub use error::{CheckpointError, MAX_PROGRESS_BYTES, ManagerError, ProgressError};
pub use job::{Done, FinalState, Job, JobError, JobOutcome};
pub use locks::Locks;
pub use manager::{
    CancelOutcome, DEFAULT_CANCEL_GRACE, JobManager, JobManagerBuilder, SCHEDULED_POLL,
    StartOutcome, WARM_UP,
};
pub use requests::{Handover, RequestWake, RequestWatcher, WatchConfig, hand_over};
pub use spec::{
    Concurrency, JobSpec, KeepRunning, LockConsistency, LockSpec, OnLocked, RetryPolicy,
};
pub use watch::ENDED_HOLD;
pub use work::{Processed, WorkGrant, WorkItems, WorkOptions, WorkTicket};
