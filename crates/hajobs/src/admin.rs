//! # The admin layer
//!
//! What an operator can ask of a cluster, answered once: the CLI (`cli`) and
//! the HTTP API (`http`) both call [`Admin`] and only render its answers —
//! neither reads a store or takes a decision of its own.
//!
//! | operation | what it does |
//! |---|---|
//! | [`Admin::jobs`] | every configured job type: spec, cron in words, next firing, holder, latest attempt |
//! | [`Admin::trigger`] | a trigger request through the cluster: one live replica claims it and starts the attempt |
//! | [`Admin::cancel`] | cancels the running attempt of a job type, wherever it runs |
//! | [`Admin::status`], [`Admin::attempt`], [`Admin::latest`] | the recorded statuses |
//! | [`Admin::stats`] | per job type figures over the newest attempts |
//! | [`Admin::nodes`], [`Admin::locks`] | the live replicas, the held locks |
//! | [`Admin::unlock`] | releases a lock safely (cancel + wait) or by force |
//! | [`Admin::ready`] | Cassandra answers and the schema is current |
//! | [`Admin::queue`], [`Admin::queue_remove`] | the triggers queued for busy lock types; an operator removes one (recorded) |
//! | [`Admin::schedule`], [`Admin::scheduled`], [`Admin::scheduled_remove`] | one-time triggers at a given time (`scheduled`): schedule, list, remove one (recorded) |
//! | [`Admin::work_check`], [`Admin::work_list`], [`Admin::work_purge`] | work items: one, a work set's, forget the ended ones |
//!
//! Errors are [`AdminError`]s: a kind (bad input, unknown job, not found,
//! locked, unavailable, failed) that the CLI maps to an exit code and HTTP to
//! a status, and a message that names the problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hajobs_core::schema::{self, MIGRATIONS};
use hajobs_core::{
    ArgsStore, CassandraConfig, FencingToken, Holder, JobId, JobStats, JobStatus, JobType,
    LockType, NodeRecord, NodeStore, QueueStore, RequestOutcome, RequestStore, StatusEntry,
    StatusStore, TriggerArgs, TriggerId, WorkItem, WorkKey, WorkSet, WorkStore,
};
use hajobs_scheduler::{
    CancelOutcome, Concurrency, JobManager, Locks, OnLocked, RequestWake, StartOutcome,
};
use scylla::client::session::Session;
use serde::Serialize;

use crate::config::DaemonConfig;
use crate::wake::Waker;

mod scheduled;
pub(crate) use scheduled::{ScheduledView, due_at};

/// What kind of failure an [`AdminError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The request itself is wrong (a bad job id, a bad limit).
    BadInput,
    /// No job type of that name is configured.
    UnknownJob,
    /// The thing asked for does not exist (an attempt, a request).
    NotFound,
    /// The lock is held by another attempt.
    Locked,
    /// The operation conflicts with the state (a holder that cannot be
    /// cancelled through the lock).
    Conflict,
    /// The operation cannot be done now (no replica, Cassandra down).
    Unavailable,
    /// The operation failed.
    Failed,
}

/// A failure of an admin operation.
#[derive(Debug)]
pub(crate) struct AdminError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The holder, for [`ErrorKind::Locked`].
    pub(crate) holder: Option<Box<HolderView>>,
}

impl AdminError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            holder: None,
        }
    }

    fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

impl From<hajobs_core::StoreError> for AdminError {
    fn from(e: hajobs_core::StoreError) -> Self {
        Self::new(
            ErrorKind::Unavailable,
            format!("{:#}", anyhow::Error::from(e)),
        )
    }
}

impl From<hajobs_scheduler::ManagerError> for AdminError {
    fn from(e: hajobs_scheduler::ManagerError) -> Self {
        let kind = match e {
            hajobs_scheduler::ManagerError::UnknownJobType { .. } => ErrorKind::UnknownJob,
            hajobs_scheduler::ManagerError::BadArgs { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Failed,
        };
        Self::new(kind, format!("{:#}", anyhow::Error::from(e)))
    }
}

/// The result of an admin operation.
pub(crate) type AdminResult<T> = Result<T, AdminError>;

/// A lock's holder, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct HolderView {
    /// The lock type.
    pub(crate) lock_type: String,
    /// The attempt holding it.
    pub(crate) job_id: String,
    /// Its replica (none for an ha-jobs holder).
    pub(crate) owner: Option<String>,
    /// The fencing token of its lease (none for an ha-jobs holder).
    pub(crate) fencing_token: Option<i64>,
    /// When it took the lock, ms since the epoch.
    pub(crate) since_ms: Option<i64>,
    /// Whether the holder does not speak hajobs' protocol (ha-jobs).
    pub(crate) foreign: bool,
}

impl From<&Holder> for HolderView {
    fn from(h: &Holder) -> Self {
        Self {
            lock_type: h.lock_type.as_str().to_owned(),
            job_id: h.job_id.to_string(),
            owner: h.owner.clone(),
            // A foreign holder took no token; the cell is an older holder's.
            fencing_token: h.fencing_token.filter(|_| !h.is_foreign()).map(|t| t.0),
            since_ms: h.since.map(epoch_ms),
            foreign: h.is_foreign(),
        }
    }
}

/// A configured job type with its live state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct JobView {
    /// The job type.
    pub(crate) job_type: String,
    /// The lock it runs under.
    pub(crate) lock_type: String,
    /// Its cron expression, if scheduled.
    pub(crate) cron: Option<String>,
    /// The cron expression in words.
    pub(crate) cron_in_words: Option<String>,
    /// The schedule's time zone.
    pub(crate) time_zone: Option<String>,
    /// The next firing (RFC 3339, UTC).
    pub(crate) next_firing: Option<String>,
    /// Always on (`keep_running`): run at all times on one replica.
    pub(crate) keep_running: bool,
    /// The command it runs.
    pub(crate) command: Vec<String>,
    /// How often the supervisor re-runs a dead attempt of one trigger.
    pub(crate) retrigger_count: u32,
    /// Its timeout, ms.
    pub(crate) timeout_ms: Option<u64>,
    /// Its lease's TTL, ms.
    pub(crate) lease_ttl_ms: u64,
    /// What a trigger does when the lock is held: `skip` or `queue`.
    #[schema(value_type = String)]
    pub(crate) on_locked: OnLocked,
    /// `forbid`, `replace` or `allow`.
    #[schema(value_type = String)]
    pub(crate) concurrency: Concurrency,
    /// How often a FAILED attempt is retried.
    pub(crate) retry_count: u32,
    /// Attempts its lock type lets run at once.
    pub(crate) capacity: u32,
    /// The parameters its triggers may carry, by name.
    pub(crate) params: BTreeMap<String, ParamView>,
    /// Whether its triggers carry a payload: `forbidden`, `optional`,
    /// `required`.
    pub(crate) payload: &'static str,
    /// The parameters its cron firings give.
    pub(crate) cron_params: BTreeMap<String, String>,
    /// The current holder of its lock.
    pub(crate) holder: Option<HolderView>,
    /// Its latest recorded attempt (a status, or a corrupt row).
    #[schema(value_type = Option<Object>)]
    pub(crate) latest: Option<StatusEntry>,
}

/// A declared parameter, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ParamView {
    /// A trigger must give it.
    pub(crate) required: bool,
    /// What its value must match in full.
    pub(crate) pattern: Option<String>,
    /// Its value when not given.
    pub(crate) default: Option<String>,
    /// What it means.
    pub(crate) description: Option<String>,
}

/// A trigger that a replica took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Triggered {
    /// An attempt started under its lease.
    Started {
        job_type: String,
        /// The replica running it.
        node: String,
        trigger_id: TriggerId,
        job_id: JobId,
        fencing_token: FencingToken,
    },
    /// Its lock type was held and its job queues: it runs when its turn comes.
    Queued {
        job_type: String,
        /// The replica that queued it.
        node: String,
        trigger_id: TriggerId,
        /// Its place in the lock type's queue (1: next).
        position: u32,
    },
}

/// A [`Triggered`] as the HTTP API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Triggered)]
pub(crate) struct TriggeredView {
    /// The job type.
    pub(crate) job_type: String,
    /// The replica running it (or that queued it).
    pub(crate) node: String,
    /// The attempt (none while queued).
    pub(crate) job_id: Option<String>,
    /// The trigger.
    pub(crate) trigger_id: String,
    /// Its lease's fencing token (none while queued).
    pub(crate) fencing_token: Option<i64>,
    /// For a job that queues, found its lock held: its place in the lock
    /// type's queue (1: next). It runs when its turn comes.
    pub(crate) queue_position: Option<u32>,
}

impl From<&Triggered> for TriggeredView {
    fn from(t: &Triggered) -> Self {
        match t {
            Triggered::Started {
                job_type,
                node,
                trigger_id,
                job_id,
                fencing_token,
            } => Self {
                job_type: job_type.clone(),
                node: node.clone(),
                job_id: Some(job_id.to_string()),
                trigger_id: trigger_id.to_string(),
                fencing_token: Some(fencing_token.0),
                queue_position: None,
            },
            Triggered::Queued {
                job_type,
                node,
                trigger_id,
                position,
            } => Self {
                job_type: job_type.clone(),
                node: node.clone(),
                job_id: None,
                trigger_id: trigger_id.to_string(),
                fencing_token: None,
                queue_position: Some(*position),
            },
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Cancelled {
    /// The job type.
    pub(crate) job_type: String,
    /// The attempt asked to stop, if one ran.
    pub(crate) job_id: Option<String>,
    /// Where it runs.
    pub(crate) node: Option<String>,
}

/// What an unlock did.
#[derive(Debug, Clone)]
pub(crate) enum Unlocked {
    /// Nobody held the lock.
    NotHeld,
    /// Deleted by force; the holder, if any, runs unfenced until its next renewal.
    Forced(Holder),
    /// The holder stopped and let it go.
    Released {
        holder: Holder,
        after: Duration,
        now_held_by: Option<JobId>,
    },
}

/// The readiness of this process to serve.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// Cassandra answered.
    pub(crate) cassandra: bool,
    /// Every migration is recorded in the keyspace.
    pub(crate) schema_current: bool,
    /// What is wrong, if anything.
    pub(crate) problem: Option<String>,
}

/// The refusal of a trigger that found its lock held by `holder`.
fn locked(job: &str, holder: HolderView) -> AdminError {
    let mut e = AdminError::new(
        ErrorKind::Locked,
        format!(
            "locked: {job} is held by job {} on {}",
            holder.job_id,
            holder.owner.as_deref().unwrap_or("(ha-jobs?)")
        ),
    );
    e.holder = Some(Box::new(holder));
    e
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a cluster trigger waits for a replica to claim its request.
pub(crate) const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How long it waits, once claimed, for the outcome.
pub(crate) const OUTCOME_WAIT: Duration = Duration::from_secs(15);
/// How many attempts `stats` reads per job type (the newest).
const STATS_DEPTH: u32 = 10_000;
/// The most statuses one `status` call returns.
pub(crate) const MAX_LIMIT: u32 = 10_000;

/// The admin operations of one cluster (see the module's front page).
#[derive(Clone)]
pub(crate) struct Admin {
    cassandra: CassandraConfig,
    session: Arc<Session>,
    jobs: Option<Arc<DaemonConfig>>,
    manager: Option<JobManager>,
    statuses: Arc<StatusStore>,
    /// The lock types' rows and lease stores (the job manager's, when this
    /// process has one).
    locks: Arc<Locks>,
    nodes: Arc<NodeStore>,
    requests: Arc<RequestStore>,
    /// Whom a trigger wakes after recording its request.
    waker: Waker,
    /// Prepared on first use: only the work commands need it.
    work: Arc<tokio::sync::OnceCell<Arc<WorkStore>>>,
    /// Prepared on first use: only the queue commands need it.
    queues: Arc<tokio::sync::OnceCell<Arc<QueueStore>>>,
    /// Prepared on first use: only triggers with parameters need it.
    args: Arc<tokio::sync::OnceCell<Arc<ArgsStore>>>,
    /// Prepared on first use: only the scheduled triggers need it.
    scheduled: Arc<tokio::sync::OnceCell<Arc<hajobs_core::ScheduledStore>>>,
}

/// A queued trigger, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct QueuedView {
    /// The lock type it waits for.
    pub(crate) lock_type: String,
    /// Its place in the queue (1: next).
    pub(crate) position: usize,
    /// The job type it runs.
    pub(crate) job_type: String,
    /// The trigger.
    pub(crate) trigger_id: String,
    /// When it was queued, ms since the epoch.
    pub(crate) queued_at_ms: Option<i64>,
    /// Who queued it.
    pub(crate) queued_by: Option<String>,
    /// When it gives up waiting, ms since the epoch.
    pub(crate) expires_at_ms: Option<i64>,
    /// Which timeout that is: `lock_wait_timeout`, or `starting_deadline`
    /// for a cron firing whose deadline comes first.
    pub(crate) expiry: Option<String>,
    /// The attempt starting it, once claimed.
    pub(crate) job_id: Option<String>,
}

/// A work item, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkItemView {
    /// Its work set.
    pub(crate) work_set: String,
    /// Its key.
    pub(crate) key: String,
    /// IN_PROGRESS, DONE or FAILED.
    pub(crate) state: String,
    /// The ticket of the worker holding it now.
    pub(crate) holder: Option<String>,
    /// The replica that checked it in last.
    pub(crate) node: Option<String>,
    /// The fencing token of the last check-in.
    pub(crate) fencing_token: i64,
    /// Check-ins so far.
    pub(crate) attempts: u32,
    /// The first check-in, ms since the epoch.
    pub(crate) created_at_ms: Option<i64>,
    /// The last check-in, ms since the epoch.
    pub(crate) since_ms: Option<i64>,
    /// Until when the holder's lease runs, ms since the epoch.
    pub(crate) lease_until_ms: Option<i64>,
    /// When it was checked out or failed, ms since the epoch.
    pub(crate) ended_at_ms: Option<i64>,
    /// The result given at check-out.
    #[schema(value_type = Option<Object>)]
    pub(crate) result: Option<serde_json::Value>,
    /// The last failure.
    pub(crate) error: Option<String>,
}

impl From<WorkItem> for WorkItemView {
    fn from(i: WorkItem) -> Self {
        Self {
            work_set: i.work_set.to_string(),
            key: i.key.to_string(),
            state: i.state.as_str().to_owned(),
            holder: i.holder.map(|h| h.to_string()),
            node: i.node,
            fencing_token: i.fencing_token.0,
            attempts: i.attempts,
            created_at_ms: i.created_at.map(epoch_ms),
            since_ms: i.since.map(epoch_ms),
            lease_until_ms: i.lease_until.map(epoch_ms),
            ended_at_ms: i.ended_at.map(epoch_ms),
            result: i.result,
            error: i.error,
        }
    }
}

impl Admin {
    /// The admin layer over `session`; `jobs` is the configuration (needed by
    /// `jobs`, `cancel`), `manager` this process's job manager if it has one.
    pub(crate) async fn new(
        cassandra: &CassandraConfig,
        session: Arc<Session>,
        jobs: Option<Arc<DaemonConfig>>,
        manager: Option<JobManager>,
    ) -> AdminResult<Self> {
        // Every store prepares its statements: all at once, not one store
        // after the other (a CLI command's start is mostly this).
        let shared = async {
            Ok::<_, AdminError>(match &manager {
                Some(m) => (m.statuses().clone(), m.locks().clone()),
                None => {
                    let (statuses, locks) = futures::try_join!(
                        async {
                            Ok::<_, AdminError>(
                                StatusStore::new(
                                    session.clone(),
                                    cassandra,
                                    hajobs_core::status_store::DEFAULT_RETENTION,
                                )
                                .await?,
                            )
                        },
                        async {
                            Ok::<_, AdminError>(
                                Locks::new(
                                    session.clone(),
                                    cassandra,
                                    jobs.iter().flat_map(|c| &c.locks),
                                    jobs.iter().flat_map(|c| c.jobs.iter().map(|j| &j.spec)),
                                )
                                .await?,
                            )
                        },
                    )?;
                    (Arc::new(statuses), Arc::new(locks))
                }
            })
        };
        let (nodes, requests, (statuses, locks)) = futures::try_join!(
            async { Ok::<_, AdminError>(NodeStore::new(session.clone(), cassandra).await?) },
            async { Ok::<_, AdminError>(RequestStore::new(session.clone(), cassandra).await?) },
            shared,
        )?;
        let (nodes, requests) = (Arc::new(nodes), Arc::new(requests));
        Ok(Self {
            cassandra: cassandra.clone(),
            waker: Waker::new(nodes.clone()),
            nodes,
            requests,
            work: Arc::default(),
            queues: Arc::default(),
            args: Arc::default(),
            scheduled: Arc::default(),
            session,
            jobs,
            manager,
            statuses,
            locks,
        })
    }

    /// The same, with `wake` waking this process's request watcher: a
    /// trigger of a job it has is claimed here at once, and `POST /wake`
    /// reaches it.
    pub(crate) fn with_wake(mut self, wake: RequestWake) -> Self {
        if let Some(manager) = &self.manager {
            self.waker = self.waker.with_local(manager.clone(), wake);
        }
        self
    }

    /// Whom this process wakes (the daemon's handover uses it).
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    async fn work_store(&self) -> AdminResult<&Arc<WorkStore>> {
        self.work
            .get_or_try_init(|| async {
                Ok(Arc::new(
                    WorkStore::new(
                        self.session.clone(),
                        &self.cassandra,
                        hajobs_core::work_store::DEFAULT_WORK_RETENTION,
                    )
                    .await?,
                ))
            })
            .await
    }

    async fn queue_store(&self) -> AdminResult<&Arc<QueueStore>> {
        self.queues
            .get_or_try_init(|| async {
                Ok(Arc::new(
                    QueueStore::new(self.session.clone(), &self.cassandra).await?,
                ))
            })
            .await
    }

    /// The queued triggers of one lock type, or of all, oldest first.
    pub(crate) async fn queue(&self, lock_type: Option<&str>) -> AdminResult<Vec<QueuedView>> {
        let store = self.queue_store().await?;
        let entries = match lock_type {
            Some(l) => {
                let l = LockType::new(l).map_err(|e| AdminError::bad_input(e.to_string()))?;
                store.list(&l).await?
            }
            None => store.list_all().await?,
        };
        let mut views = Vec::with_capacity(entries.len());
        let mut position = 0;
        for (i, e) in entries.iter().enumerate() {
            position = match i {
                0 => 1,
                _ if entries[i - 1].lock_type != e.lock_type => 1,
                _ => position + 1,
            };
            views.push(QueuedView {
                lock_type: e.lock_type.to_string(),
                position,
                job_type: e.job_type.clone(),
                trigger_id: e.trigger_id.to_string(),
                queued_at_ms: e.queued_at().map(epoch_ms),
                queued_by: e.queued_by.clone(),
                expires_at_ms: e.expires_at.map(epoch_ms),
                expiry: e.expiry.clone(),
                job_id: e.job_id.map(|j| j.to_string()),
            });
        }
        Ok(views)
    }

    /// Removes the queued trigger `trigger_id` (an operator's decision):
    /// recorded as a SKIPPED status of its trigger naming who removed it.
    /// Refused once a replica has claimed it to start.
    pub(crate) async fn queue_remove(&self, trigger_id: &str, by: &str) -> AdminResult<QueuedView> {
        let id: TriggerId = trigger_id.parse().map_err(|e| {
            AdminError::bad_input(format!("`{trigger_id}` is not a trigger id: {e}"))
        })?;
        let store = self.queue_store().await?;
        let entry = store
            .list_all()
            .await?
            .into_iter()
            .find(|e| e.trigger_id == id)
            .ok_or_else(|| {
                AdminError::new(ErrorKind::NotFound, format!("trigger {id} is not queued"))
            })?;
        let view = self
            .queue(Some(entry.lock_type.as_str()))
            .await?
            .into_iter()
            .find(|v| v.trigger_id == entry.trigger_id.to_string());
        if !store.remove_unclaimed(&entry).await? {
            return Err(AdminError::new(
                ErrorKind::Conflict,
                format!(
                    "trigger {id} was claimed by a replica (it starts now) or removed meanwhile"
                ),
            ));
        }
        if let Ok(job_type) = JobType::new(entry.job_type.clone()) {
            self.statuses
                .write(&JobStatus::never_ran(
                    job_type,
                    id,
                    hajobs_core::JobState::Skipped,
                    None,
                    serde_json::json!({
                        hajobs_core::status::content_keys::REASON: format!("removed from the queue of lock type `{}` by {by}", entry.lock_type),
                        "queued_by": entry.queued_by,
                    }),
                ))
                .await?;
        }
        tracing::warn!(trigger_id = %id, lock_type = %entry.lock_type, job_type = entry.job_type, by, "queued trigger removed by an operator");
        view.ok_or_else(|| {
            AdminError::new(ErrorKind::NotFound, format!("trigger {id} is not queued"))
        })
    }

    fn work_set(name: &str) -> AdminResult<WorkSet> {
        WorkSet::new(name).map_err(|e| AdminError::bad_input(e.to_string()))
    }

    /// One work item, read without taking it.
    pub(crate) async fn work_check(&self, work_set: &str, key: &str) -> AdminResult<WorkItemView> {
        let set = Self::work_set(work_set)?;
        let key = WorkKey::new(key).map_err(|e| AdminError::bad_input(e.to_string()))?;
        match self.work_store().await?.read(&set, &key, true).await? {
            Some(item) => Ok(item.into()),
            None => Err(AdminError::new(
                ErrorKind::NotFound,
                format!(
                    "work item `{key}` of work set `{set}` was never checked in (or is forgotten: past its retention, or purged)"
                ),
            )),
        }
    }

    /// The items of a work set (at most `limit`), newest first check-in day first.
    /// `retention`: what the work set's items were written with (default
    /// 14 days): how many days of the listing are walked.
    pub(crate) async fn work_list(
        &self,
        work_set: &str,
        limit: u32,
        retention: Option<Duration>,
    ) -> AdminResult<Vec<WorkItemView>> {
        let set = Self::work_set(work_set)?;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(AdminError::bad_input(format!(
                "limit {limit} is out of range: 1 to {MAX_LIMIT}"
            )));
        }
        let items = self
            .work_store_for(retention)
            .await?
            .list(&set, limit as usize)
            .await?;
        Ok(items.into_iter().map(WorkItemView::from).collect())
    }

    /// Forgets the items of a work set that ended more than `older_than`
    /// ago; returns how many.
    pub(crate) async fn work_purge(
        &self,
        work_set: &str,
        older_than: Duration,
        retention: Option<Duration>,
    ) -> AdminResult<usize> {
        let set = Self::work_set(work_set)?;
        Ok(self
            .work_store_for(retention)
            .await?
            .purge(&set, older_than)
            .await?)
    }

    /// The work store, or one for a retention other than the default.
    async fn work_store_for(&self, retention: Option<Duration>) -> AdminResult<Arc<WorkStore>> {
        match retention {
            Some(r) if r != hajobs_core::work_store::DEFAULT_WORK_RETENTION => Ok(Arc::new(
                WorkStore::new(self.session.clone(), &self.cassandra, r).await?,
            )),
            _ => Ok(self.work_store().await?.clone()),
        }
    }

    /// The status store.
    pub(crate) fn statuses(&self) -> &Arc<StatusStore> {
        &self.statuses
    }

    /// The request store (shared with the daemon's request watcher).
    pub(crate) fn requests(&self) -> &Arc<RequestStore> {
        &self.requests
    }

    /// The node store (shared with the daemon's registry).
    pub(crate) fn node_store(&self) -> &Arc<NodeStore> {
        &self.nodes
    }

    fn config(&self, what: &str) -> AdminResult<&DaemonConfig> {
        self.jobs.as_deref().ok_or_else(|| {
            AdminError::bad_input(format!(
                "{what} needs the jobs' configuration: pass --config FILE or set HAJOBS_CONFIG"
            ))
        })
    }

    /// Checks that `job` names a configured job type (when the configuration
    /// is known) and is a valid name.
    pub(crate) fn job_type(&self, job: &str) -> AdminResult<JobType> {
        let job_type = JobType::new(job).map_err(|e| AdminError::bad_input(e.to_string()))?;
        if let Some(config) = &self.jobs {
            if !config.jobs.iter().any(|j| j.spec.job_type == job_type) {
                let names: Vec<&str> = config
                    .jobs
                    .iter()
                    .map(|j| j.spec.job_type.as_str())
                    .collect();
                return Err(AdminError::new(
                    ErrorKind::UnknownJob,
                    format!(
                        "unknown job type `{}` (configured: {})",
                        job_type.as_str(),
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(job_type)
    }

    /// What a trigger of `job_type` given `given` carries: checked against
    /// the configured job (the scheduler's one rule), or — without the
    /// configuration — only for its shape, leaving the rest to the replica
    /// that claims it. Refused as bad input, naming the parameter.
    fn resolve_args(&self, job_type: &JobType, given: TriggerArgs) -> AdminResult<TriggerArgs> {
        let spec = self
            .jobs
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|j| &j.spec.job_type == job_type));
        let checked = match spec {
            Some(job) => job.spec.args.resolve(given),
            None => match given.shape_problem() {
                Some(problem) => Err(problem),
                None => Ok(given),
            },
        };
        checked.map_err(|problem| AdminError::bad_input(format!("job `{job_type}`: {problem}")))
    }

    async fn args_store(&self) -> AdminResult<&Arc<ArgsStore>> {
        self.args
            .get_or_try_init(|| async {
                Ok(Arc::new(
                    ArgsStore::new(
                        self.session.clone(),
                        &self.cassandra,
                        hajobs_core::status_store::DEFAULT_RETENTION,
                    )
                    .await?,
                ))
            })
            .await
    }

    /// Every configured job type with its holder and latest attempt.
    pub(crate) async fn jobs(&self) -> AdminResult<Vec<JobView>> {
        let config = self.config("listing the jobs")?;
        let now = chrono::Utc::now();
        let holders = self.locks.cluster_leases().list().await?;
        let mut out = Vec::with_capacity(config.jobs.len());
        for job in &config.jobs {
            let spec = &job.spec;
            let holder = holders.iter().find(|h| h.lock_type == spec.lock_type);
            out.push(JobView {
                job_type: spec.job_type.as_str().to_owned(),
                lock_type: spec.lock_type.as_str().to_owned(),
                cron: spec.schedule.as_ref().map(|s| s.expression().to_owned()),
                cron_in_words: spec.schedule.as_ref().map(|s| s.describe()),
                time_zone: spec.schedule.as_ref().map(|s| s.time_zone().to_string()),
                next_firing: spec
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_after(now))
                    .map(|t| t.to_rfc3339()),
                keep_running: spec.keep_running.is_some(),
                command: job.command.clone(),
                retrigger_count: spec.retrigger_count,
                timeout_ms: spec.timeout.map(|t| t.as_millis() as u64),
                lease_ttl_ms: spec.keeper.ttl().duration().as_millis() as u64,
                on_locked: spec.on_locked,
                concurrency: spec.concurrency,
                retry_count: spec.retry.count,
                capacity: self.locks.capacity(&spec.lock_type),
                params: spec
                    .args
                    .params
                    .iter()
                    .map(|(name, p)| {
                        let view = ParamView {
                            required: p.required,
                            pattern: p.pattern.as_ref().map(|p| p.as_str().to_owned()),
                            default: p.default.clone(),
                            description: p.description.clone(),
                        };
                        (name.clone(), view)
                    })
                    .collect(),
                payload: spec.args.payload.as_str(),
                cron_params: spec.args.cron_params.clone(),
                holder: holder.map(HolderView::from),
                latest: self.latest_with_progress(&spec.job_type).await?,
            });
        }
        Ok(out)
    }

    /// The newest status of `job_type`; for a running attempt, read with its
    /// content (its live progress), which only the full history keeps.
    async fn latest_with_progress(&self, job_type: &JobType) -> AdminResult<Option<StatusEntry>> {
        let latest = self.statuses.latest(job_type).await?;
        if let Some(StatusEntry::Status(s)) = &latest {
            if s.result() == hajobs_core::JobResult::Pending {
                if let Some(full) = self.statuses.get(job_type, s.job_id).await? {
                    return Ok(Some(full));
                }
            }
        }
        Ok(latest)
    }

    /// Asks the cluster to run `job`: records a trigger request, which one
    /// live replica having `job` claims (LWT) and starts under the request's
    /// trigger id. Waits for the outcome; an unclaimed request is withdrawn
    /// after [`CLAIM_WAIT`] so that it can never start late.
    pub(crate) async fn trigger(
        &self,
        job: &str,
        requested_by: &str,
        given: TriggerArgs,
    ) -> AdminResult<Triggered> {
        let job_type = self.job_type(job)?;
        let job = job_type.as_str();
        let args = self.resolve_args(&job_type, given)?;
        let trigger_id = TriggerId::new();
        if !args.is_empty() {
            // Recorded before the request: whichever replica claims it
            // reads them (and checks them again against its own
            // configuration, which is all the checking a CLI without the
            // configuration gets).
            self.args_store()
                .await?
                .write(trigger_id, job, &args, requested_by)
                .await?;
        }
        self.requests.request(job, trigger_id, requested_by).await?;
        let asked = Instant::now();
        // Woken while the outcome is awaited; dropped (no more wakes) once
        // this returns.
        let waking = {
            let (waker, job) = (self.waker.clone(), job.to_owned());
            AbortOnDrop(tokio::spawn(async move {
                waker.wake_for(&job, trigger_id).await
            }))
        };
        let mut claimed: Option<Instant> = None;
        loop {
            // Often at first, where a woken replica answers in milliseconds.
            let waited = asked.elapsed();
            tokio::time::sleep(if waited < Duration::from_millis(250) {
                Duration::from_millis(5)
            } else if waited < Duration::from_secs(1) {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(50)
            })
            .await;
            let request = self.requests.get(trigger_id).await?;
            if request.as_ref().is_some_and(|r| r.claimed_by.is_some()) {
                waking.0.abort();
            }
            let claimant = request.as_ref().and_then(|r| r.claimed_by.clone());
            match request.and_then(|r| r.outcome) {
                Some(RequestOutcome::Started {
                    job_id,
                    fencing_token,
                }) => {
                    hajobs_core::metrics::trigger_requested(job, "started");
                    return Ok(Triggered::Started {
                        job_type: job.to_owned(),
                        node: claimant.unwrap_or_else(|| "?".into()),
                        trigger_id,
                        job_id,
                        fencing_token,
                    });
                }
                Some(RequestOutcome::Queued { position }) => {
                    hajobs_core::metrics::trigger_requested(job, "queued");
                    return Ok(Triggered::Queued {
                        job_type: job.to_owned(),
                        node: claimant.unwrap_or_else(|| "?".into()),
                        trigger_id,
                        position,
                    });
                }
                Some(RequestOutcome::Locked { holder, owner }) => {
                    hajobs_core::metrics::trigger_requested(job, "locked");
                    let lock = self.lock_of(&job_type);
                    let held = match &lock {
                        Some(l) => self.locks.leases_of(l).read(l, true).await?,
                        None => None,
                    };
                    return Err(locked(
                        job,
                        match held.filter(|h| h.job_id == holder) {
                            Some(h) => HolderView::from(&h),
                            None => HolderView {
                                lock_type: lock.map(|l| l.as_str().to_owned()).unwrap_or_default(),
                                job_id: holder.to_string(),
                                owner,
                                fencing_token: None,
                                since_ms: None,
                                foreign: false,
                            },
                        },
                    ));
                }
                Some(RequestOutcome::Error(e)) => {
                    hajobs_core::metrics::trigger_requested(job, "error");
                    return Err(AdminError::new(
                        ErrorKind::Failed,
                        format!("error: {job} not started: {e}"),
                    ));
                }
                None => {}
            }
            match (&claimant, claimed) {
                (Some(_), None) => claimed = Some(Instant::now()),
                (Some(node), Some(at)) if at.elapsed() > OUTCOME_WAIT => {
                    return Err(AdminError::new(
                        ErrorKind::Failed,
                        format!(
                            "error: {job} was claimed by {node} but not started within {OUTCOME_WAIT:?}: that replica may have died; a live replica records the trigger {trigger_id} FAILED and the supervisor's retrigger rule applies"
                        ),
                    ));
                }
                (None, _)
                    if asked.elapsed() > CLAIM_WAIT
                        && self.requests.withdraw(trigger_id).await? =>
                {
                    hajobs_core::metrics::trigger_requested(job, "unclaimed");
                    return Err(AdminError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "no live replica has {job} configured (nobody claimed the request in {CLAIM_WAIT:?}; it was withdrawn and will never start)"
                        ),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Runs `job` in this process, under its lease (`hajobs trigger
    /// --here`): started, queued or refused as a trigger through the cluster
    /// is. [`Admin::wait_here`] follows a started attempt to its end.
    pub(crate) async fn trigger_here(
        &self,
        job: &str,
        given: TriggerArgs,
    ) -> AdminResult<Triggered> {
        let manager = self.manager("triggering a job here")?;
        let job_type = self.job_type(job)?;
        match manager.trigger_with(job_type.as_str(), given).await? {
            StartOutcome::Started {
                trigger_id,
                job_id,
                fencing_token,
            } => Ok(Triggered::Started {
                job_type: job.to_owned(),
                node: manager.node().as_str().to_owned(),
                trigger_id,
                job_id,
                fencing_token,
            }),
            StartOutcome::Queued {
                trigger_id,
                position,
            } => Ok(Triggered::Queued {
                job_type: job.to_owned(),
                node: manager.node().as_str().to_owned(),
                trigger_id,
                position: u32::try_from(position).unwrap_or(u32::MAX),
            }),
            StartOutcome::Locked { holder, .. } => Err(locked(job, HolderView::from(&holder))),
            StartOutcome::Error { details, .. } => Err(AdminError::new(
                ErrorKind::Failed,
                format!("error: {job} not started: {details}"),
            )),
        }
    }

    /// Waits until attempt `job_id` of `job`, started in this process, has
    /// ended; its final status.
    pub(crate) async fn wait_here(&self, job: &str, job_id: JobId) -> AdminResult<JobStatus> {
        let manager = self.manager("waiting for a job here")?;
        let job_type = self.job_type(job)?;
        while manager.is_running_here(job_id) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match self.statuses.get(&job_type, job_id).await? {
            Some(StatusEntry::Status(s)) => Ok(s),
            other => Err(AdminError::new(
                ErrorKind::Failed,
                format!("{job} attempt {job_id}: final status unreadable: {other:?}"),
            )),
        }
    }

    /// This process's job manager, needed by `what`.
    fn manager(&self, what: &str) -> AdminResult<&JobManager> {
        self.manager.as_ref().ok_or_else(|| {
            AdminError::bad_input(format!(
                "{what} needs the jobs' configuration: pass --config FILE or set HAJOBS_CONFIG"
            ))
        })
    }

    fn lock_of(&self, job_type: &JobType) -> Option<LockType> {
        self.jobs.as_ref().and_then(|c| {
            c.jobs
                .iter()
                .find(|j| &j.spec.job_type == job_type)
                .map(|j| j.spec.lock_type.clone())
        })
    }

    /// Cancels the running attempt of `job`, wherever it runs: at once when
    /// it runs in this process, else through a cancel request on its lock.
    pub(crate) async fn cancel(&self, job: &str) -> AdminResult<Cancelled> {
        let job_type = self.job_type(job)?;
        let manager = self.manager("cancelling")?;
        let mut out = Cancelled {
            job_type: job_type.as_str().to_owned(),
            job_id: None,
            node: None,
        };
        match manager.cancel(job_type.as_str()).await? {
            CancelOutcome::CancelledLocally(id) => {
                out.job_id = Some(id.to_string());
                out.node = Some(manager.node().as_str().to_owned());
            }
            CancelOutcome::CancelledRemotely(h) => {
                out.job_id = Some(h.job_id.to_string());
                out.node = h.owner;
            }
            CancelOutcome::NotRunning => {}
            CancelOutcome::ForeignHolder(h) => {
                let mut e = AdminError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{job} attempt {} is held by a holder that cannot be cancelled through the lock (ha-jobs?); use its own API or `hajobs unlock {}`",
                        h.job_id, h.lock_type
                    ),
                );
                e.holder = Some(Box::new(HolderView::from(&h)));
                return Err(e);
            }
        }
        Ok(out)
    }

    /// The newest `limit` statuses of `job`, or the latest of every job type
    /// (each corrupt one followed by that type's newest valid status: a bad
    /// row must not hide the last good run).
    pub(crate) async fn status(
        &self,
        job: Option<&str>,
        limit: u32,
    ) -> AdminResult<Vec<StatusEntry>> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(AdminError::bad_input(format!(
                "limit {limit}: expected 1 to {MAX_LIMIT}"
            )));
        }
        match job {
            Some(j) => {
                let job_type = JobType::new(j).map_err(|e| AdminError::bad_input(e.to_string()))?;
                Ok(self.statuses.history(&job_type, limit).await?)
            }
            None => {
                self.with_last_good(self.statuses.latest_of_all().await?)
                    .await
            }
        }
    }

    /// The newest status of `job` (with its progress while it runs).
    pub(crate) async fn latest(&self, job: &str) -> AdminResult<StatusEntry> {
        let job_type = JobType::new(job).map_err(|e| AdminError::bad_input(e.to_string()))?;
        self.latest_with_progress(&job_type).await?.ok_or_else(|| {
            AdminError::new(ErrorKind::NotFound, format!("no attempt of {job} recorded"))
        })
    }

    /// Every status an attempt recorded, oldest first.
    pub(crate) async fn attempt(&self, job: &str, job_id: &str) -> AdminResult<Vec<StatusEntry>> {
        let job_type = JobType::new(job).map_err(|e| AdminError::bad_input(e.to_string()))?;
        let job_id: JobId = job_id
            .parse()
            .map_err(|e| AdminError::bad_input(format!("job id `{job_id}`: {e}")))?;
        let entries = self.statuses.run_history(&job_type, job_id).await?;
        if entries.is_empty() {
            return Err(AdminError::new(
                ErrorKind::NotFound,
                format!("no attempt {job_id} of {job} recorded"),
            ));
        }
        Ok(entries)
    }

    /// Figures per job type over its newest attempts: of `job`, or of every
    /// job type with a recorded attempt.
    pub(crate) async fn stats(&self, job: Option<&str>) -> AdminResult<Vec<JobStats>> {
        let job_types: Vec<JobType> = match job {
            Some(j) => vec![JobType::new(j).map_err(|e| AdminError::bad_input(e.to_string()))?],
            None => self
                .statuses
                .latest_of_all()
                .await?
                .iter()
                .filter_map(|e| match e {
                    StatusEntry::Status(s) => Some(s.job_type.clone()),
                    StatusEntry::Corrupt { job_type, .. } => {
                        job_type.clone().and_then(|t| JobType::new(t).ok())
                    }
                })
                .collect(),
        };
        let mut out = Vec::with_capacity(job_types.len());
        for job_type in job_types {
            let latest: Vec<JobStatus> = self
                .statuses
                .history(&job_type, STATS_DEPTH)
                .await?
                .into_iter()
                .filter_map(|e| e.status().cloned())
                .collect();
            out.push(JobStats::from_latest(job_type.as_str(), &latest));
        }
        Ok(out)
    }

    /// The live replicas.
    pub(crate) async fn nodes(&self) -> AdminResult<Vec<NodeRecord>> {
        Ok(self.nodes.list().await?)
    }

    /// The held locks.
    pub(crate) async fn locks(&self) -> AdminResult<Vec<Holder>> {
        Ok(self.locks.cluster_leases().list().await?)
    }

    /// Releases `lock`: by default a cancel request through the lock and a
    /// wait (at most `wait`) until its holder lets it go; with `force`, a
    /// delete (unsafe while the holder still runs).
    /// Each release is recorded in the released attempt's history: who
    /// (`requested_by`), when, how.
    pub(crate) async fn unlock(
        &self,
        lock: &str,
        wait: Duration,
        force: bool,
        requested_by: &str,
        mut on_asked: impl FnMut(&Holder),
    ) -> AdminResult<Unlocked> {
        let lock = LockType::new(lock).map_err(|e| AdminError::bad_input(e.to_string()))?;
        let leases = self.locks.leases_of(&lock);
        if force {
            return Ok(match leases.force_release(&lock).await? {
                Some(h) => {
                    self.audit_unlock(&h, requested_by, true).await;
                    Unlocked::Forced(h)
                }
                None => Unlocked::NotHeld,
            });
        }
        let Some(holder) = leases.read(&lock, true).await? else {
            return Ok(Unlocked::NotHeld);
        };
        if holder.is_foreign() {
            return Err(AdminError::new(
                ErrorKind::Conflict,
                format!(
                    "{lock} is held by job {} whose holder cannot be cancelled through the lock (ha-jobs?): stop it through its own API, or `hajobs unlock --force {lock}` once it has stopped",
                    holder.job_id
                ),
            ));
        }
        let owner = holder.owner.clone().unwrap_or_else(|| "?".into());
        let started = Instant::now();
        if leases.request_cancel(&lock, holder.job_id).await? {
            on_asked(&holder);
        }
        loop {
            match leases.read(&lock, true).await? {
                Some(h) if h.job_id == holder.job_id => {}
                now => {
                    self.audit_unlock(&holder, requested_by, false).await;
                    return Ok(Unlocked::Released {
                        holder,
                        after: started.elapsed(),
                        now_held_by: now.map(|h| h.job_id),
                    });
                }
            }
            if started.elapsed() >= wait {
                return Err(AdminError::new(
                    ErrorKind::Failed,
                    format!(
                        "{lock} is still held by job {} on {owner} after {}: its holder neither stops nor lets its lease expire (a holder that cannot be cancelled through the lock, or a stuck keeper); `hajobs unlock --force {lock}` deletes the lock anyway, which is unsafe while that job still runs",
                        holder.job_id,
                        humantime::format_duration(wait)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records in `holder`'s attempt that `by` released its lock: a status
    /// with the attempt's own newest state, its content kept under
    /// `content`. Best effort: the unlock happened whatever this write does.
    async fn audit_unlock(&self, holder: &Holder, by: &str, forced: bool) {
        // The attempt's job type: among those configured on its lock type,
        // else among every job type's latest attempt.
        let mut candidates: Vec<JobType> = self
            .jobs
            .as_ref()
            .map(|c| {
                c.jobs
                    .iter()
                    .filter(|j| j.spec.lock_type == holder.lock_type)
                    .map(|j| j.spec.job_type.clone())
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            if let Ok(latest) = self.statuses.latest_of_all().await {
                candidates = latest
                    .iter()
                    .filter_map(StatusEntry::status)
                    .filter(|s| s.job_id == holder.job_id)
                    .map(|s| s.job_type.clone())
                    .collect();
            }
        }
        for job_type in candidates {
            let Ok(Some(StatusEntry::Status(s))) =
                self.statuses.get(&job_type, holder.job_id).await
            else {
                continue;
            };
            let audit = JobStatus {
                timestamp: SystemTime::now().max(s.timestamp + Duration::from_millis(1)),
                content: Some(serde_json::json!({
                    "unlocked_by": by,
                    "unlock": if forced { "forced: the lock was deleted" } else { "safe: the holder stopped and released it" },
                    "lock_type": holder.lock_type.as_str(),
                    "content": s.content,
                })),
                ..s
            };
            if let Err(e) = self.statuses.write(&audit).await {
                tracing::warn!(job_id = %holder.job_id, error = %e, "unlock not recorded in the attempt's history");
            }
            return;
        }
    }

    /// Whether Cassandra answers and every migration is recorded.
    pub(crate) async fn ready(&self) -> Readiness {
        match schema::applied_versions(&self.session, &self.cassandra.keyspace).await {
            Err(e) => Readiness {
                cassandra: false,
                schema_current: false,
                problem: Some(format!(
                    "Cassandra does not answer: {:#}",
                    anyhow::Error::from(e)
                )),
            },
            Ok(applied) => {
                let missing: Vec<i32> = MIGRATIONS
                    .iter()
                    .map(|m| m.version)
                    .filter(|v| !applied.contains(v))
                    .collect();
                Readiness {
                    cassandra: true,
                    schema_current: missing.is_empty(),
                    problem: (!missing.is_empty()).then(|| {
                        format!(
                            "schema versions {missing:?} are missing: run `hajobs schema apply`"
                        )
                    }),
                }
            }
        }
    }

    async fn with_last_good(&self, latest: Vec<StatusEntry>) -> AdminResult<Vec<StatusEntry>> {
        /// How far back to look for a valid status behind a corrupt one.
        const LOOK_BACK: u32 = 50;
        let mut out = Vec::with_capacity(latest.len());
        for entry in latest {
            let behind = match &entry {
                StatusEntry::Corrupt {
                    job_type: Some(t), ..
                } => JobType::new(t.clone()).ok(),
                _ => None,
            };
            out.push(entry);
            if let Some(job_type) = behind {
                if let Some(good) = self
                    .statuses
                    .history(&job_type, LOOK_BACK)
                    .await?
                    .into_iter()
                    .find(|e| e.status().is_some())
                {
                    out.push(good);
                }
            }
        }
        Ok(out)
    }
}

/// Milliseconds since the epoch.
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
