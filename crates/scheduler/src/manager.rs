//! [`JobManager`]: registered jobs, triggered by cron or by hand, run under
//! their leases, cancelled cluster-wide, stopped gracefully.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hajobs_core::status_store::DEFAULT_RETENTION;
use hajobs_core::{
    Acquired, CancelReason, Cancellation, CassandraConfig, FencingToken, FiringOutcome,
    FiringStore, Holder, JobId, JobResult, JobState, JobStatus, JobType, LeaseStore, LockType,
    NodeId, NodeStore, QueueEntry, QueueStore, StatusEntry, StatusStore, TriggerId, WatchStore,
};
use scylla::client::session::Session;

use crate::attempt;
use crate::claim_order::{self, Peers};
use crate::clock::{Clock, SystemClock};
use crate::context::JobContext;
use crate::cron::MissedRuns;
use crate::error::ManagerError;
use crate::job::Job;
use crate::spec::{Concurrency, JobSpec, LockConsistency, LockSpec, OnLocked};
use crate::watch::Watch;

/// How long a cancelled job (by request, timeout or shutdown) may take to
/// return before its future is dropped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How often a claimed cron firing retries a held lock.
const FIRING_RETRY: Duration = Duration::from_millis(200);
/// How often a firing waiting for its lock says it is still waiting.
const FIRING_TOUCH: Duration = Duration::from_secs(5);
/// How many of a job type's newest firings are checked for lost claims.
const RECENT_FIRINGS: i32 = 10;
/// How long after a scheduled instant its claim is checked for being lost.
const LOST_WINDOW: Duration = Duration::from_secs(600);
/// How many of a job type's newest attempts are read to find the attempts
/// of one trigger (a lost claim's, a queue entry's, a retry's).
const TRIGGER_HISTORY: u32 = 64;
/// How often a replica looks at the head of a lock type's queue when
/// nothing woke it (an attempt of that lock type ending here does).
const QUEUE_POLL: Duration = Duration::from_millis(500);
/// … and how often when it was empty at the last look.
const QUEUE_IDLE_POLL: Duration = Duration::from_secs(2);
/// How long a claimed queue entry may stay before its start counts as lost.
const QUEUE_CLAIM_STALE: Duration = Duration::from_secs(60);

/// The outcome of a trigger (ha-jobs' `JobStartStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The attempt `job_id` runs on this replica.
    Started {
        /// The trigger served.
        trigger_id: TriggerId,
        /// The new attempt.
        job_id: JobId,
        /// The token of its lease.
        fencing_token: FencingToken,
    },
    /// The lock type is held by another attempt: nothing started.
    Locked {
        /// The trigger that was not started.
        trigger_id: TriggerId,
        /// Who holds the lock.
        holder: Holder,
    },
    /// The lock type was held (or others waited for it): the trigger was
    /// queued (`on_locked = "queue"`) and runs when its turn comes.
    Queued {
        /// The trigger queued.
        trigger_id: TriggerId,
        /// Its place in the queue (1: next).
        position: usize,
    },
    /// The attempt could not start (Cassandra failed, shutting down…).
    Error {
        /// The trigger that was not started.
        trigger_id: TriggerId,
        /// Why.
        details: String,
    },
}

/// The outcome of a cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The attempt ran here and its cancellation fired.
    CancelledLocally(JobId),
    /// The attempt runs on another replica: a cancel request was set on its
    /// lock, which its lock keeper sees within one renewal interval.
    CancelledRemotely(Holder),
    /// No attempt of this job type is running.
    NotRunning,
    /// The lock is held by a holder that does not speak hajobs' protocol
    /// (ha-jobs): it cannot be cancelled through the lock. Nothing was set.
    ForeignHolder(Holder),
}

/// What a look at the head of a lock type's queue found.
enum Head {
    /// Nobody waits.
    Empty,
    /// The head waits (lock held, claimed, or another replica's job).
    Waits,
    /// The head was settled (started, expired, closed): look again at once.
    Settled,
}

/// A hook that must pass before scheduling starts.
pub type Precondition = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

struct Registered {
    spec: JobSpec,
    job: Arc<dyn Job>,
}

/// An attempt running on this replica (from before its RUNNING status until
/// it has recorded its end and released its lease).
struct Running {
    job_type: JobType,
    trigger_id: TriggerId,
    cancellation: Cancellation,
}

struct Inner {
    node: NodeId,
    leases: Arc<LeaseStore>,
    statuses: Arc<StatusStore>,
    firings: FiringStore,
    /// What this replica asks the supervisors to watch.
    watch: Arc<Watch>,
    /// The node registry, and what it says of the other replicas.
    nodes: NodeStore,
    peers: Peers,
    jobs: BTreeMap<JobType, Registered>,
    /// By attempt: a job type on a lock type with capacity may run several.
    running: Mutex<HashMap<JobId, Running>>,
    clock: Arc<dyn Clock>,
    cancel_grace: Duration,
    shutting_down: AtomicBool,
    /// One timer task per scheduled job type; `true` stops them.
    timers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stop_timers: tokio::sync::watch::Sender<bool>,
    precondition: Option<Precondition>,
    /// The queues of lock types with a job that queues (schema 12), and
    /// what wakes their runner on this replica.
    queues: Option<Arc<QueueStore>>,
    queue_wake: BTreeMap<LockType, Arc<tokio::sync::Notify>>,
    /// Lock types with a capacity or a rate limit.
    locks: BTreeMap<LockType, LockSpec>,
    /// Lock types whose jobs override the cluster's consistency, with the
    /// lease store of theirs.
    lock_stores: BTreeMap<LockType, Arc<LeaseStore>>,
}

/// The job manager of one replica. Cheap to clone.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("node", &self.inner.node)
            .field("jobs", &self.inner.jobs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`JobManager`].
pub struct JobManagerBuilder {
    config: CassandraConfig,
    node: NodeId,
    session: Option<Arc<Session>>,
    jobs: Vec<(JobSpec, Arc<dyn Job>)>,
    locks: Vec<LockSpec>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    cancel_grace: Duration,
    precondition: Option<Precondition>,
}

impl JobManagerBuilder {
    /// Registers a job.
    pub fn job(mut self, spec: JobSpec, job: impl Job) -> Self {
        self.jobs.push((spec, Arc::new(job)));
        self
    }

    /// Sets a lock type's capacity and rate limit (see [`LockSpec`]).
    pub fn lock(mut self, lock: LockSpec) -> Self {
        self.locks.push(lock);
        self
    }

    /// Uses an existing session instead of opening one.
    pub fn session(mut self, session: Arc<Session>) -> Self {
        self.session = Some(session);
        self
    }

    /// The clock that names cron firings (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How long statuses and firing claims are kept (default 14 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a cancelled job may take to return (default 5 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// A check run by [`JobManager::start`] before scheduling begins.
    pub fn precondition<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.precondition = Some(Box::new(move || Box::pin(check())));
        self
    }

    /// Prepares the stores. Nothing is scheduled until [`JobManager::start`].
    pub async fn build(self) -> Result<JobManager, ManagerError> {
        let mut jobs = BTreeMap::new();
        for (spec, job) in self.jobs {
            let job_type = spec.job_type.clone();
            if jobs
                .insert(job_type.clone(), Registered { spec, job })
                .is_some()
            {
                return Err(ManagerError::DuplicateJobType(job_type));
            }
        }
        let mut locks = BTreeMap::new();
        for lock in self.locks {
            if locks.insert(lock.lock_type.clone(), lock.clone()).is_some() {
                return Err(ManagerError::InvalidLock {
                    lock_type: lock.lock_type.to_string(),
                    problem: "its limits are given twice".into(),
                });
            }
        }
        for r in jobs.values() {
            let capacity = locks.get(&r.spec.lock_type).map_or(1, |l| l.capacity);
            let problem = match (r.spec.concurrency, capacity) {
                (Concurrency::Allow, 1) => Some(format!(
                    "concurrency `allow` needs a lock type with capacity > 1; `{}` has 1",
                    r.spec.lock_type
                )),
                (Concurrency::Forbid | Concurrency::Replace, c) if c > 1 => Some(format!(
                    "lock type `{}` has capacity {c}: its job types run up to {c} attempts at once, so they need concurrency `allow`",
                    r.spec.lock_type
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(ManagerError::Policy {
                    job_type: r.spec.job_type.to_string(),
                    problem,
                });
            }
        }
        let session = match self.session {
            Some(s) => s,
            None => self.config.connect().await?,
        };
        let leases = Arc::new(LeaseStore::new(session.clone(), &self.config).await?);
        // Per lock type, the consistency its jobs ask for; they must agree.
        let mut wanted: BTreeMap<LockType, (JobType, Option<LockConsistency>)> = BTreeMap::new();
        for r in jobs.values() {
            let spec = &r.spec;
            match wanted.get(&spec.lock_type) {
                Some((other, c)) if *c != spec.consistency => {
                    return Err(ManagerError::Policy {
                        job_type: spec.job_type.to_string(),
                        problem: format!(
                            "its consistency differs from that of `{other}`, which shares lock type `{}`",
                            spec.lock_type
                        ),
                    });
                }
                _ => {
                    wanted.insert(
                        spec.lock_type.clone(),
                        (spec.job_type.clone(), spec.consistency),
                    );
                }
            }
        }
        let mut lock_stores = BTreeMap::new();
        let mut other_store: Option<Arc<LeaseStore>> = None;
        for (lock_type, (_, consistency)) in wanted {
            let global = match consistency {
                Some(LockConsistency::Global) => true,
                Some(LockConsistency::Local) => false,
                None => continue,
            };
            if global == self.config.is_global() {
                continue;
            }
            let store = match &other_store {
                Some(s) => s.clone(),
                None => {
                    let config = if global {
                        self.config.clone().with_global_consistency()
                    } else {
                        self.config.clone().with_local_consistency()
                    };
                    let s = Arc::new(LeaseStore::new(session.clone(), &config).await?);
                    other_store = Some(s.clone());
                    s
                }
            };
            lock_stores.insert(lock_type, store);
        }
        let statuses =
            Arc::new(StatusStore::new(session.clone(), &self.config, self.retention).await?);
        let firings = FiringStore::new(session.clone(), &self.config, self.retention).await?;
        let watches = Arc::new(WatchStore::new(session.clone(), &self.config).await?);
        let queue_wake: BTreeMap<LockType, Arc<tokio::sync::Notify>> = jobs
            .values()
            .filter(|r| r.spec.on_locked == OnLocked::Queue)
            .map(|r| (r.spec.lock_type.clone(), Arc::default()))
            .collect();
        let queues = if queue_wake.is_empty() {
            None
        } else {
            Some(Arc::new(
                QueueStore::new(session.clone(), &self.config).await?,
            ))
        };
        let nodes = NodeStore::new(session, &self.config).await?;
        Ok(JobManager {
            inner: Arc::new(Inner {
                watch: Watch::new(self.node.clone(), watches),
                nodes,
                peers: Peers::default(),
                node: self.node,
                leases,
                statuses,
                firings,
                jobs,
                running: Mutex::new(HashMap::new()),
                clock: self.clock,
                cancel_grace: self.cancel_grace,
                shutting_down: AtomicBool::new(false),
                timers: Mutex::new(Vec::new()),
                stop_timers: tokio::sync::watch::channel(false).0,
                precondition: self.precondition,
                queues,
                queue_wake,
                locks,
                lock_stores,
            }),
        })
    }
}

impl JobManager {
    /// Starts building a manager for replica `node` on the cluster of `config`.
    pub fn builder(config: CassandraConfig, node: NodeId) -> JobManagerBuilder {
        JobManagerBuilder {
            config,
            node,
            session: None,
            jobs: Vec::new(),
            locks: Vec::new(),
            clock: Arc::new(SystemClock),
            retention: DEFAULT_RETENTION,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            precondition: None,
        }
    }

    /// This replica.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// The registered job specs, by job type.
    pub fn specs(&self) -> impl Iterator<Item = &JobSpec> {
        self.inner.jobs.values().map(|r| &r.spec)
    }

    /// The spec of `job_type`.
    pub fn spec(&self, job_type: &str) -> Result<&JobSpec, ManagerError> {
        self.registered(job_type).map(|r| &r.spec)
    }

    /// The status store (for reading history).
    pub fn statuses(&self) -> &Arc<StatusStore> {
        &self.inner.statuses
    }

    /// Every replica's watch list (what a supervisor pass looks at).
    pub fn watches(&self) -> &Arc<WatchStore> {
        self.inner.watch.store()
    }

    /// The lease store (for reading locks).
    pub fn leases(&self) -> &Arc<LeaseStore> {
        &self.inner.leases
    }

    fn registered(&self, job_type: &str) -> Result<&Registered, ManagerError> {
        self.inner
            .jobs
            .iter()
            .find(|(t, _)| t.as_str() == job_type)
            .map(|(_, r)| r)
            .ok_or_else(|| ManagerError::UnknownJobType {
                name: job_type.to_owned(),
                known: self
                    .inner
                    .jobs
                    .keys()
                    .map(JobType::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Runs the precondition, starts missed runs, then the cron schedules.
    pub async fn start(&self) -> Result<(), ManagerError> {
        if let Some(check) = &self.inner.precondition {
            check().await.map_err(ManagerError::Precondition)?;
        }
        let scheduled = self.inner.jobs.values().any(|r| r.spec.schedule.is_some());
        if scheduled {
            self.refresh_peers().await;
        }
        self.catch_up_missed_runs().await;
        let mut timers = self.inner.timers.lock().expect("timers poisoned");
        if scheduled {
            let manager = self.clone();
            let mut stop = self.inner.stop_timers.subscribe();
            timers.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(claim_order::PEERS_REFRESH) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    manager.refresh_peers().await;
                }
            }));
        }
        for registered in self.inner.jobs.values() {
            if registered.spec.schedule.is_some() {
                let manager = self.clone();
                let job_type = registered.spec.job_type.clone();
                // Subscribed before the task runs: a shutdown right after
                // start is seen, however late the task is first polled.
                let stop = self.inner.stop_timers.subscribe();
                timers.push(tokio::spawn(
                    async move { manager.timer(job_type, stop).await },
                ));
            }
        }
        for (lock_type, wake) in &self.inner.queue_wake {
            let manager = self.clone();
            let (lock_type, wake) = (lock_type.clone(), wake.clone());
            let stop = self.inner.stop_timers.subscribe();
            timers.push(tokio::spawn(async move {
                manager.run_queue(lock_type, wake, stop).await
            }));
        }
        drop(timers);
        tracing::info!(node = %self.inner.node, jobs = self.inner.jobs.len(), "job manager started");
        Ok(())
    }

    /// Reads which other replicas configure which job types (the order of
    /// cron claims) and whether cron claims have moved to their day-bucketed
    /// table (schema 10); on failure, keeps what it knew.
    async fn refresh_peers(&self) {
        if let Err(e) = self.inner.firings.refresh().await {
            tracing::warn!(error = %e, "schema version of the cron claims not read; looked again later");
        }
        match self.inner.nodes.list().await {
            Ok(records) => self.inner.peers.set(&records, &self.inner.node),
            Err(e) => {
                tracing::warn!(error = %e, "node registry not read; cron claims keep the order they had")
            }
        }
    }

    /// The cron of one job type: sleeps until its next scheduled instant
    /// on tokio's timer (millisecond resolution), then fires that instant
    /// in a task of its own, so that a firing waiting for a held lock never
    /// delays the next. The instant is read on this replica's clock; the
    /// firing's claim makes it run once cluster-wide whatever the clocks say.
    async fn timer(&self, job_type: JobType, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Ok(registered) = self.registered(job_type.as_str()) else {
            return;
        };
        let Some(schedule) = registered.spec.schedule.clone() else {
            return;
        };
        let mut after = self.inner.clock.now();
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(next) = schedule.next_after(after) else {
                tracing::info!(%job_type, "the schedule has no further firings");
                return;
            };
            // Sleep to the instant; the wall clock may be slewed meanwhile,
            // so sleep again until it agrees (never fire early).
            loop {
                let left = (next - self.inner.clock.now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    _ = stop.changed() => return,
                }
            }
            if *stop.borrow() {
                return;
            }
            let manager = self.clone();
            let job = job_type.clone();
            tokio::spawn(async move {
                manager.fire(&job, next).await;
            });
            after = next.max(self.inner.clock.now());
        }
    }

    /// Claims the firing of `job_type` at `instant` and, if this replica won
    /// the claim, starts it under the trigger id derived from both.
    pub async fn fire(&self, job_type: &JobType, instant: DateTime<Utc>) -> Option<StartOutcome> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        let at = SystemTime::from(instant);
        let trigger_id = TriggerId::for_firing(job_type.as_str(), at);
        // The preferred replica claims at once; the others look a little
        // later whether it did, and claim only if not (see `claim_order`).
        let rank = self
            .inner
            .peers
            .rank(&self.inner.node, job_type, instant.timestamp_millis());
        if rank > 0 {
            tokio::time::sleep(claim_order::CLAIM_STEP * rank).await;
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return None;
            }
            match self.inner.firings.claimed_by(job_type, at).await {
                Ok(Some(owner)) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "claimed");
                    tracing::debug!(%job_type, %instant, owner, "cron firing claimed by another replica");
                    return None;
                }
                Ok(None) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "free");
                    tracing::info!(%job_type, %instant, rank, "cron firing not claimed by the replicas before this one: claiming it");
                }
                Err(e) => {
                    hajobs_core::metrics::cron_claim_check(job_type.as_str(), "error");
                    tracing::warn!(%job_type, %instant, error = %e, "cron claim not read; claiming");
                }
            }
        }
        match self
            .inner
            .firings
            .claim(job_type, at, trigger_id, &self.inner.node)
            .await
        {
            Ok(true) => hajobs_core::metrics::cron_claim(job_type.as_str(), "won"),
            Ok(false) => {
                hajobs_core::metrics::cron_claim(job_type.as_str(), "lost");
                tracing::debug!(%job_type, %instant, "cron firing claimed by another replica");
                return None;
            }
            Err(e) => {
                hajobs_core::metrics::cron_claim(job_type.as_str(), "error");
                tracing::error!(%job_type, %instant, error = %e, "cron firing not claimed: Cassandra failed; another replica may run it");
                return None;
            }
        }
        let queues = self
            .registered(job_type.as_str())
            .is_ok_and(|r| r.spec.on_locked == OnLocked::Queue);
        let starting_deadline = self
            .registered(job_type.as_str())
            .ok()
            .and_then(|r| r.spec.starting_deadline);
        let late = |now: DateTime<Utc>| {
            starting_deadline.and_then(|d| {
                let age = (now - instant).to_std().unwrap_or_default();
                (age > d).then_some(d)
            })
        };
        if let Some(deadline) = late(self.inner.clock.now()) {
            self.skip_past_deadline(job_type, trigger_id, instant, deadline)
                .await;
            if let Err(e) = self
                .inner
                .firings
                .record(job_type, at, FiringOutcome::Skipped)
                .await
            {
                tracing::warn!(%job_type, %instant, error = %e, "outcome of a cron firing not recorded");
            }
            return None;
        }
        let mut listed = false;
        let outcome = if queues {
            // A firing of a job that queues joins its lock type's queue
            // when the lock is held, like any trigger of it.
            // What is left of the starting deadline bounds its wait.
            let left = starting_deadline.map(|d| {
                d.saturating_sub(
                    (self.inner.clock.now() - instant)
                        .to_std()
                        .unwrap_or_default(),
                )
            });
            self.start_or_queue(job_type, trigger_id, self.inner.node.as_str(), left)
                .await
        } else {
            // A claimed firing that finds its lock held (the previous firing, or
            // another job type sharing the lock, still runs) waits for it until
            // one period of the schedule has passed, then is skipped.
            let period = self
                .registered(job_type.as_str())
                .ok()
                .and_then(|r| r.spec.schedule.as_ref()?.next_after(instant))
                .and_then(|next| (next - instant).to_std().ok())
                .unwrap_or_default();
            // … or until its starting deadline, if that comes first.
            let to_deadline = starting_deadline
                .map(|d| {
                    d.saturating_sub(
                        (self.inner.clock.now() - instant)
                            .to_std()
                            .unwrap_or_default(),
                    )
                })
                .unwrap_or(period);
            let give_up = tokio::time::Instant::now() + period.min(to_deadline);
            let mut touched = tokio::time::Instant::now();
            loop {
                let outcome = self.start_attempt(job_type, trigger_id, None).await;
                let retry = matches!(outcome, Ok(StartOutcome::Locked { .. }))
                    && tokio::time::Instant::now() + FIRING_RETRY < give_up
                    && !self.inner.shutting_down.load(Ordering::SeqCst);
                if !retry {
                    break outcome;
                }
                if !listed {
                    // Waiting: listed, so that a supervisor closes the claim
                    // should this replica die before starting it.
                    listed = true;
                    self.inner.watch.firing_waits(job_type, trigger_id).await;
                }
                // Still ours: said now and then, so that no supervisor closes
                // the claim as lost while this replica waits for the lock.
                if touched.elapsed() >= FIRING_TOUCH {
                    touched = tokio::time::Instant::now();
                    if let Err(e) = self.inner.firings.touch(job_type, at).await {
                        tracing::warn!(%job_type, %instant, error = %e, "cron firing not marked as waiting");
                    }
                }
                tokio::time::sleep(FIRING_RETRY).await;
            }
        };
        // What became of the claim. An attempt that could not start leaves it
        // open: a supervisor closes it as lost and re-runs its trigger.
        let decided = match &outcome {
            Ok(StartOutcome::Started { .. }) => Some(FiringOutcome::Started),
            Ok(StartOutcome::Locked { .. }) => Some(FiringOutcome::Skipped),
            Ok(StartOutcome::Queued { .. }) => Some(FiringOutcome::Queued),
            _ => None,
        };
        if let Some(decided) = decided {
            if let Err(e) = self.inner.firings.record(job_type, at, decided).await {
                tracing::warn!(%job_type, %instant, error = %e, "outcome of a cron firing not recorded");
            }
        }
        if listed {
            self.inner.watch.firing_decided(trigger_id).await;
        }
        match &outcome {
            Ok(StartOutcome::Started { job_id, .. }) => {
                let lag = (self.inner.clock.now() - instant)
                    .to_std()
                    .unwrap_or_default();
                hajobs_core::metrics::cron_firing_lag(job_type.as_str(), lag);
                tracing::info!(%job_type, %instant, %job_id, %trigger_id, ?lag, "cron firing started")
            }
            Ok(StartOutcome::Locked { holder, .. }) => {
                match late(
                    self.inner.clock.now()
                        + chrono::TimeDelta::milliseconds(FIRING_RETRY.as_millis() as i64),
                ) {
                    Some(deadline) => {
                        self.skip_past_deadline(job_type, trigger_id, instant, deadline)
                            .await
                    }
                    None => {
                        tracing::warn!(%job_type, %instant, holder = %holder.job_id, "cron firing skipped: lock held for a whole period")
                    }
                }
            }
            Ok(StartOutcome::Queued { position, .. }) => {
                tracing::info!(%job_type, %instant, %trigger_id, position, "cron firing queued: its lock is held")
            }
            Ok(StartOutcome::Error { details, .. }) => {
                tracing::error!(%job_type, %instant, details, "cron firing failed to start")
            }
            Err(e) => tracing::error!(%job_type, error = %e, "cron firing failed"),
        }
        outcome.ok()
    }

    async fn catch_up_missed_runs(&self) {
        let now = self.inner.clock.now();
        for registered in self.inner.jobs.values() {
            if let (Some(_), MissedRuns::All { cap }) =
                (&registered.spec.schedule, registered.spec.missed_runs)
            {
                // In a task of its own: the firings run one after another.
                let manager = self.clone();
                let job_type = registered.spec.job_type.clone();
                tokio::spawn(async move { manager.catch_up_all(&job_type, cap, now).await });
                continue;
            }
            let (Some(schedule), MissedRuns::RunOnce { threshold }) =
                (&registered.spec.schedule, registered.spec.missed_runs)
            else {
                continue;
            };
            let job_type = &registered.spec.job_type;
            let (Some(missed), Some(next)) = (schedule.latest_at(now), schedule.next_after(now))
            else {
                continue;
            };
            if (next - now).to_std().unwrap_or_default() <= threshold {
                continue; // the next firing comes soon enough
            }
            match self.missed(job_type, schedule, missed).await {
                Ok(true) => {
                    tracing::info!(%job_type, %missed, %next, "running a firing missed during downtime");
                    self.fire(job_type, missed).await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%job_type, error = %e, "cannot check for missed runs"),
            }
        }
    }

    /// `missed_runs = "all"`: the firings since the last one claimed (at
    /// most the `cap` newest), oldest first, each claimed once. When no
    /// claim is found within `cap` + 16 instants back, the job type must
    /// have run before at all (a status, a claim of the last month).
    async fn catch_up_all(&self, job_type: &JobType, cap: u32, now: DateTime<Utc>) {
        let Ok(registered) = self.registered(job_type.as_str()) else {
            return;
        };
        let Some(schedule) = &registered.spec.schedule else {
            return;
        };
        // Newest first, back to the newest claimed instant (looking at no
        // more than `cap` + 16 instants).
        let firings = &self.inner.firings;
        let mut missed = Vec::new();
        let mut found_claim = false;
        let mut t = now;
        for _ in 0..cap as usize + 16 {
            let Some(instant) = schedule.latest_at(t) else {
                break;
            };
            match firings
                .claimed_by(job_type, SystemTime::from(instant))
                .await
            {
                Ok(Some(_)) => {
                    found_claim = true;
                    break;
                }
                Ok(None) => missed.push(instant),
                Err(e) => {
                    tracing::warn!(%job_type, error = %e, "cannot check for missed runs");
                    return;
                }
            }
            t = instant - chrono::TimeDelta::milliseconds(1);
        }
        if !found_claim {
            let ran_before = matches!(self.inner.statuses.latest(job_type).await, Ok(Some(_)))
                || matches!(firings.last_claimed(job_type).await, Ok(Some(_)));
            if !ran_before {
                return; // a job type that never ran missed nothing
            }
        }
        missed.truncate(cap as usize);
        missed.reverse(); // oldest first
        if !missed.is_empty() {
            tracing::info!(%job_type, count = missed.len(), "running the firings missed during downtime");
        }
        for instant in missed {
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            self.fire(job_type, instant).await;
        }
    }

    /// Records SKIPPED for the cron firing `trigger_id` at `instant`, whose
    /// starting deadline passed before it could start.
    async fn skip_past_deadline(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        instant: DateTime<Utc>,
        deadline: Duration,
    ) {
        let status = JobStatus {
            job_type: job_type.clone(),
            job_id: JobId::new(),
            trigger_id,
            timestamp: SystemTime::now(),
            state: JobState::Skipped,
            owner: Some(self.inner.node.clone()),
            fencing_token: None,
            content: Some(serde_json::json!({
                "reason": format!("starting_deadline: the firing at {instant} could not start within {} s of its instant", deadline.as_secs()),
                "timeout": "starting_deadline",
                "instant": instant.to_rfc3339(),
            })),
        };
        tracing::warn!(%job_type, %instant, %trigger_id, ?deadline, "cron firing past its starting deadline: recorded SKIPPED");
        if let Err(e) = self.inner.statuses.write(&status).await {
            tracing::error!(%job_type, %trigger_id, error = %e, "SKIPPED status of a late firing not recorded");
        }
    }

    /// Whether the firing at `missed` was missed: nobody claimed it, and the
    /// job type ran before (a claim of the firing before it, any status, or
    /// any claim of the last month); a job type that never ran missed
    /// nothing.
    async fn missed(
        &self,
        job_type: &JobType,
        schedule: &crate::cron::CronSchedule,
        missed: DateTime<Utc>,
    ) -> Result<bool, ManagerError> {
        let firings = &self.inner.firings;
        if firings
            .claimed_by(job_type, SystemTime::from(missed))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let previous = schedule.latest_at(missed - chrono::TimeDelta::milliseconds(1));
        if let Some(previous) = previous {
            if firings
                .claimed_by(job_type, SystemTime::from(previous))
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        if self.inner.statuses.latest(job_type).await?.is_some() {
            return Ok(true);
        }
        Ok(firings.last_claimed(job_type).await?.is_some())
    }

    /// Closes the claimed cron firings of `job_type` that no replica started:
    /// claims among its newest that have no outcome, whose claimant has not
    /// said it still waits for `after`, and of whose trigger no attempt was
    /// recorded. Each is closed once (an LWT) and its trigger recorded
    /// FAILED, so that the supervisor's retrigger rule re-runs it. Returns
    /// the triggers closed here.
    pub async fn close_lost_firings(
        &self,
        job_type: &JobType,
        after: Duration,
    ) -> Result<Vec<TriggerId>, ManagerError> {
        let Some(schedule) = &self.registered(job_type.as_str())?.spec.schedule else {
            return Ok(Vec::new());
        };
        // Only a job type with a firing in the last LOST_WINDOW (before
        // `after`) is read for lost claims: a daily job costs nothing
        // between its firings.
        let horizon = self.inner.clock.now()
            - chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::zero());
        let recent_firing = schedule
            .latest_at(horizon)
            .and_then(|t| (horizon - t).to_std().ok())
            .is_some_and(|age| age <= LOST_WINDOW);
        if !recent_firing {
            return Ok(Vec::new());
        }
        let now = SystemTime::now();
        let since = SystemTime::from(horizon) - LOST_WINDOW;
        let firings = self
            .inner
            .firings
            .recent(job_type, since, RECENT_FIRINGS)
            .await?;
        let mut closed = Vec::new();
        for f in firings {
            // Claims from before schema 8 carry neither; decided ones are done.
            let (None, Some(seen)) = (&f.outcome, f.seen_at) else {
                continue;
            };
            let quiet = now
                .duration_since(seen.max(f.instant))
                .is_ok_and(|age| age >= after);
            if !quiet {
                continue;
            }
            if self.attempts_of(job_type, f.trigger_id).await? > 0 {
                // It started; only its outcome went unrecorded.
                self.inner
                    .firings
                    .record(job_type, f.instant, FiringOutcome::Started)
                    .await?;
                continue;
            }
            if !self.inner.firings.close_lost(job_type, f.instant).await? {
                continue;
            }
            let instant = DateTime::<Utc>::from(f.instant);
            let owner = f.owner.as_deref().unwrap_or("?");
            let message = format!(
                "the cron firing at {instant} was claimed by {owner} but never started (that replica died or stalled before starting it)"
            );
            tracing::warn!(%job_type, %instant, trigger_id = %f.trigger_id, owner, "claimed cron firing never started: recorded FAILED");
            let job_id = JobId::new();
            self.inner
                .statuses
                .write(&JobStatus {
                    job_type: job_type.clone(),
                    job_id,
                    trigger_id: f.trigger_id,
                    timestamp: now,
                    state: JobState::Failed,
                    owner: Some(self.inner.node.clone()),
                    fencing_token: None,
                    content: Some(serde_json::json!({ "error": message, "lost_firing": instant.to_rfc3339() })),
                })
                .await?;
            // Listed, so that the next passes apply the retrigger rule.
            self.inner.watch.ended_elsewhere(job_type, job_id).await;
            closed.push(f.trigger_id);
        }
        Ok(closed)
    }

    /// Triggers `job_type` by hand: a new trigger id, then an attempt (or,
    /// for a job that queues, a place in its lock type's queue).
    pub async fn trigger(&self, job_type: &str) -> Result<StartOutcome, ManagerError> {
        let job_type = self.registered(job_type)?.spec.job_type.clone();
        self.start_or_queue(&job_type, TriggerId::new(), self.inner.node.as_str(), None)
            .await
    }

    /// Serves a trigger asked of the cluster (`hajobs trigger`) under
    /// `trigger_id`: started here, or queued for a job that queues, with
    /// `requested_by` named in the queue.
    pub async fn trigger_request(
        &self,
        job_type: &str,
        trigger_id: TriggerId,
        requested_by: Option<&str>,
    ) -> Result<StartOutcome, ManagerError> {
        let job_type = self.registered(job_type)?.spec.job_type.clone();
        let by = match requested_by {
            Some(user) => format!("{user} via {}", self.inner.node),
            None => self.inner.node.to_string(),
        };
        self.start_or_queue(&job_type, trigger_id, &by, None).await
    }

    /// Starts `trigger_id` of `job_type`; for a job that queues, queues it
    /// instead when its lock is held or others already wait for it; for a
    /// job with concurrency `replace`, stops its running attempt first. A
    /// queued cron firing waits at most what is left of its starting
    /// deadline (`deadline`), if that is shorter than the lock wait timeout.
    async fn start_or_queue(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        queued_by: &str,
        deadline: Option<Duration>,
    ) -> Result<StartOutcome, ManagerError> {
        let spec = &self.registered(job_type.as_str())?.spec;
        let queues = self
            .inner
            .queues
            .as_ref()
            .filter(|_| spec.on_locked == OnLocked::Queue);
        // Never ahead of the triggers already waiting.
        let waiting = match queues {
            Some(q) => q.head(&spec.lock_type).await?.is_some(),
            None => false,
        };
        if !waiting {
            let mut outcome = self.start_attempt(job_type, trigger_id, None).await?;
            if let (StartOutcome::Locked { holder, .. }, Concurrency::Replace) =
                (&outcome, spec.concurrency)
            {
                if self.stop_to_replace(spec, holder).await? {
                    outcome = self.start_when_free(spec, trigger_id).await?;
                }
            }
            match (outcome, queues) {
                (StartOutcome::Locked { .. }, Some(_)) => {}
                (other, _) => return Ok(other),
            }
        }
        let queues = queues.expect("only a job that queues gets here");
        let (wait, expiry) = match deadline {
            Some(d) if d < spec.lock_wait_timeout => (d, "starting_deadline"),
            _ => (spec.lock_wait_timeout, "lock_wait_timeout"),
        };
        let entry = queues
            .enqueue(
                &spec.lock_type,
                job_type.as_str(),
                trigger_id,
                queued_by,
                wait,
                expiry,
            )
            .await?;
        let position = queues
            .list(&spec.lock_type)
            .await?
            .iter()
            .position(|e| e.entry_id == entry.entry_id)
            .map_or(1, |p| p + 1);
        tracing::info!(%job_type, %trigger_id, lock_type = %spec.lock_type, position, "lock held: trigger queued");
        if let Some(wake) = self.inner.queue_wake.get(&spec.lock_type) {
            wake.notify_one();
        }
        Ok(StartOutcome::Queued {
            trigger_id,
            position,
        })
    }

    /// For concurrency `replace`: if `holder` is a running attempt of the
    /// same job type, asks it to stop (here, or through the lock on its
    /// replica) and says so; another job type's attempt is left alone.
    async fn stop_to_replace(&self, spec: &JobSpec, holder: &Holder) -> Result<bool, ManagerError> {
        let local = {
            let running = self.inner.running.lock().expect("running map poisoned");
            running
                .get(&holder.job_id)
                .filter(|r| r.job_type == spec.job_type)
                .map(|r| r.cancellation.clone())
        };
        if let Some(cancellation) = local {
            tracing::info!(job_type = %spec.job_type, job_id = %holder.job_id, "replaced by a new trigger: cancelling the running attempt here");
            cancellation.cancel(CancelReason::Requested);
            return Ok(true);
        }
        Ok(matches!(
            self.cancel_holder(spec, &holder.lock_type).await?,
            Some(CancelOutcome::CancelledRemotely(_))
        ))
    }

    /// Tries to start `trigger_id` until the replaced attempt has ended and
    /// released the lock: at most its cancel grace, stop wait and a lease
    /// TTL (should its replica have died meanwhile) and a little more.
    async fn start_when_free(
        &self,
        spec: &JobSpec,
        trigger_id: TriggerId,
    ) -> Result<StartOutcome, ManagerError> {
        let wait = self.inner.cancel_grace
            + Duration::from_secs(5)
            + spec.keeper.ttl().duration()
            + spec.keeper.renew_interval();
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let outcome = self.start_attempt(&spec.job_type, trigger_id, None).await?;
            if !matches!(outcome, StartOutcome::Locked { .. })
                || tokio::time::Instant::now() >= give_up
                || self.inner.shutting_down.load(Ordering::SeqCst)
            {
                return Ok(outcome);
            }
            tokio::time::sleep(FIRING_RETRY).await;
        }
    }

    /// The queue runner of one lock type on this replica: whenever woken
    /// (an attempt of the lock type ended here, a trigger was queued here)
    /// or every [`QUEUE_POLL`], starts the oldest queued trigger if its job
    /// type is registered here and the lock is free. Expired entries are
    /// recorded SKIPPED; claimed entries whose start was lost, FAILED.
    async fn run_queue(
        &self,
        lock_type: LockType,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(queues) = self.inner.queues.clone() else {
            return;
        };
        // An empty queue is looked at less often: what is queued here, and
        // every end of an attempt here, wakes the runner at once.
        let mut poll = QUEUE_POLL;
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            // Several entries may be settled in a row (expired, lost).
            for _ in 0..16 {
                match self.serve_queue_head(&queues, &lock_type).await {
                    Ok(Head::Settled) => continue,
                    Ok(head) => {
                        poll = match head {
                            Head::Empty => QUEUE_IDLE_POLL,
                            _ => QUEUE_POLL,
                        };
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%lock_type, error = %e, "queue not served; trying again");
                        break;
                    }
                }
            }
        }
    }

    /// Looks at the head of `lock_type`'s queue once.
    async fn serve_queue_head(
        &self,
        queues: &QueueStore,
        lock_type: &LockType,
    ) -> Result<Head, ManagerError> {
        let Some(entry) = queues.head(lock_type).await? else {
            return Ok(Head::Empty);
        };
        let now = SystemTime::now();
        let job_type = JobType::new(entry.job_type.clone()).ok();
        if let Some(claimed_at) = entry.claimed_at {
            // Claimed: its attempt starts now, or its claimant died between
            // the claim and RUNNING.
            if now.duration_since(claimed_at).unwrap_or_default() < QUEUE_CLAIM_STALE {
                return Ok(Head::Waits);
            }
            let started = match &job_type {
                Some(t) => self.attempts_of(t, entry.trigger_id).await? > 0,
                None => false,
            };
            if !started {
                if let Some(job_type) = &job_type {
                    let job_id = JobId::new();
                    self.inner
                        .statuses
                        .write(&JobStatus {
                            job_type: job_type.clone(),
                            job_id,
                            trigger_id: entry.trigger_id,
                            timestamp: now,
                            state: JobState::Failed,
                            owner: Some(self.inner.node.clone()),
                            fencing_token: None,
                            content: Some(serde_json::json!({
                                "error": "the queued trigger was claimed but never started (its replica died or stalled before starting it)",
                                "lock_type": lock_type.as_str(),
                            })),
                        })
                        .await?;
                    self.inner.watch.ended_elsewhere(job_type, job_id).await;
                }
            }
            queues.remove(&entry).await?;
            return Ok(Head::Settled);
        }
        if entry.expired(now) {
            if queues.remove_unclaimed(&entry).await? {
                let waited = entry
                    .queued_at()
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                let timeout = entry.expiry.as_deref().unwrap_or("lock_wait_timeout");
                tracing::warn!(%lock_type, job_type = entry.job_type, trigger_id = %entry.trigger_id, ?waited, timeout, "queued trigger gave up waiting for its lock");
                if let Some(job_type) = &job_type {
                    self.inner
                        .statuses
                        .write(&JobStatus {
                            job_type: job_type.clone(),
                            job_id: JobId::new(),
                            trigger_id: entry.trigger_id,
                            timestamp: now,
                            state: JobState::Skipped,
                            owner: Some(self.inner.node.clone()),
                            fencing_token: None,
                            content: Some(serde_json::json!({
                                "reason": format!("{timeout}: waited {} s in the queue of lock type `{lock_type}` without getting it", waited.as_secs()),
                                "timeout": timeout,
                                "queued_by": entry.queued_by,
                            })),
                        })
                        .await?;
                }
            }
            return Ok(Head::Settled);
        }
        let Some(job_type) = job_type.filter(|t| self.inner.jobs.contains_key(t)) else {
            // Another replica's job: it runs it.
            return Ok(Head::Waits);
        };
        match self
            .start_attempt(&job_type, entry.trigger_id, Some(&entry))
            .await?
        {
            StartOutcome::Started { job_id, .. } => {
                tracing::info!(%lock_type, %job_type, trigger_id = %entry.trigger_id, %job_id, "queued trigger started");
                Ok(Head::Waits)
            }
            // Claimed by another replica first: look at the next.
            StartOutcome::Error { .. } => Ok(Head::Waits),
            _ => Ok(Head::Waits),
        }
    }

    /// Re-runs `trigger_id` of `job_type` with a new attempt (the supervisor's retrigger).
    pub async fn retrigger(
        &self,
        job_type: &str,
        trigger_id: TriggerId,
    ) -> Result<StartOutcome, ManagerError> {
        let job_type = self.registered(job_type)?.spec.job_type.clone();
        self.start_attempt(&job_type, trigger_id, None).await
    }

    /// Starts an attempt of `job_type` for `trigger_id` under its lease;
    /// with `queued`, only if this attempt claims that queue entry once it
    /// holds the lock (and the entry is removed once it runs).
    async fn start_attempt(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
        queued: Option<&QueueEntry>,
    ) -> Result<StartOutcome, ManagerError> {
        let registered = self.registered(job_type.as_str())?;
        let spec = &registered.spec;
        let error = |details: String| {
            Ok(StartOutcome::Error {
                trigger_id,
                details,
            })
        };
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return error("the replica is shutting down".into());
        }
        let job_id = JobId::new();
        let ttl = spec.keeper.ttl();
        // Which attempt of its trigger this is, for a job that retries.
        let retry = if spec.retry.count > 0 {
            let earlier = self.attempts_of(job_type, trigger_id).await? as u32;
            let attempt = earlier + 1;
            let unit = {
                use std::hash::BuildHasher;
                let h = std::collections::hash_map::RandomState::new().hash_one(job_id);
                (h % 1_000_000) as f64 / 1_000_000.0
            };
            Some(attempt::RetryNote {
                attempt,
                of: spec.retry.count + 1,
                backoff: spec.retry.jittered(attempt, unit),
            })
        } else {
            None
        };
        let lease = match self.acquire(&spec.lock_type, job_id, ttl).await {
            Ok(Acquired::Acquired(lease)) => lease,
            Ok(Acquired::Held(holder)) => return Ok(StartOutcome::Locked { trigger_id, holder }),
            Err(e) => return error(format!("{e:#}")),
        };
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            // Holding the lock, the entry is claimed once: a replica that
            // read the same head and gets the lock later finds it claimed.
            let claimed = queues.claim(entry, job_id).await;
            if !matches!(claimed, Ok(true)) {
                let _ = self.leases_of(&spec.lock_type).release(&lease).await;
                return error(match claimed {
                    Err(e) => format!("queued trigger not claimed: {e:#}"),
                    _ => "the queued trigger was claimed by another replica".into(),
                });
            }
        }
        let fencing_token = lease.fencing_token;
        let cancellation = Cancellation::new();
        let kept = match hajobs_lock_keeper::keep(
            self.leases_of(&spec.lock_type).clone(),
            lease.clone(),
            spec.keeper,
            cancellation.clone(),
        )
        .await
        {
            Ok(kept) => kept,
            Err(e) => {
                let _ = self.leases_of(&spec.lock_type).release(&lease).await;
                return error(format!("{e:#}"));
            }
        };
        let ctx = JobContext {
            job_type: job_type.clone(),
            job_id,
            trigger_id,
            fencing_token,
            node: self.inner.node.clone(),
            cancellation: cancellation.clone(),
            stop_now: Cancellation::new(),
            statuses: self.inner.statuses.clone(),
            lease: kept.subscribe(),
        };
        // Registered before anything runs, under the same lock as the
        // shutdown flag: an attempt either starts before a shutdown (which
        // then cancels and awaits it) or not at all. A job ending at once
        // still finds its entry to remove.
        {
            let mut running = self.inner.running.lock().expect("running map poisoned");
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                drop(running);
                let _ = kept.release().await;
                return error("the replica is shutting down".into());
            }
            running.insert(
                job_id,
                Running {
                    job_type: job_type.clone(),
                    trigger_id,
                    cancellation,
                },
            );
        }
        // Listed for the supervisors before RUNNING can be seen, so that
        // a pass that reads the lists finds every attempt that can die.
        self.inner.watch.attempt_starts(job_type, job_id).await;
        if let Err(e) = self
            .inner
            .statuses
            .write(&ctx.status(hajobs_core::JobState::Running, None))
            .await
        {
            // Not recorded, so not run: a job nobody can see must not run.
            self.finished(job_type, job_id);
            let _ = kept.release().await;
            self.inner.watch.attempt_not_started(job_id).await;
            return error(format!(
                "RUNNING status not recorded, attempt not started: {e:#}"
            ));
        }
        if let (Some(entry), Some(queues)) = (queued, &self.inner.queues) {
            if let Err(e) = queues.remove(entry).await {
                tracing::warn!(trigger_id = %entry.trigger_id, error = %e, "started queue entry not removed; the next look at the queue removes it");
            }
        }
        tokio::spawn({
            let manager = self.clone();
            let job = registered.job.clone();
            let (timeout, grace, statuses) = (
                spec.timeout,
                self.inner.cancel_grace,
                self.inner.statuses.clone(),
            );
            let job_type = job_type.clone();
            let lock_type = spec.lock_type.clone();
            async move {
                let state = attempt::run(job, ctx, kept, timeout, grace, statuses, retry).await;
                manager.finished(&job_type, job_id);
                if let Some(note) = retry.filter(|n| state == JobState::Failed && n.retried()) {
                    manager.retry_later(job_type.clone(), trigger_id, note);
                }
                if let Some(wake) = manager.inner.queue_wake.get(&lock_type) {
                    wake.notify_one();
                }
                let success = state.result() == JobResult::Success;
                manager.inner.watch.attempt_ended(job_id, success).await;
                state
            }
        });
        Ok(StartOutcome::Started {
            trigger_id,
            job_id,
            fencing_token,
        })
    }

    /// Runs `trigger_id` again after the backoff of `note` (a failed
    /// attempt with retries left). Should this replica stop or die first,
    /// the FAILED status says when the retry was due, and a supervisor
    /// re-runs the trigger once that has passed.
    fn retry_later(&self, job_type: JobType, trigger_id: TriggerId, note: attempt::RetryNote) {
        let manager = self.clone();
        let mut stop = self.inner.stop_timers.subscribe();
        tokio::spawn(async move {
            tracing::info!(%job_type, %trigger_id, attempt = note.attempt, of = note.of, backoff = ?note.backoff, "attempt failed; retrying after the backoff");
            tokio::select! {
                () = tokio::time::sleep(note.backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // A lock held by another attempt is waited for up to one more
            // backoff; then the supervisor's rule takes over.
            let give_up = tokio::time::Instant::now() + note.backoff.max(FIRING_RETRY);
            loop {
                let outcome = manager
                    .start_or_queue(&job_type, trigger_id, manager.inner.node.as_str(), None)
                    .await;
                match outcome {
                    Ok(StartOutcome::Locked { .. })
                        if tokio::time::Instant::now() < give_up
                            && !manager.inner.shutting_down.load(Ordering::SeqCst) =>
                    {
                        tokio::time::sleep(FIRING_RETRY).await
                    }
                    other => {
                        tracing::info!(%job_type, %trigger_id, outcome = ?other, "retry of a failed attempt");
                        return;
                    }
                }
            }
        });
    }

    /// Takes a lease on `lock_type` for `job_id`: its one lock row, or for
    /// a lock type with capacity the first free slot (tried from an offset
    /// of the attempt's own, so that racing replicas spread); then, with a
    /// `min_interval`, its gate, which is never released (it expires).
    async fn acquire(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        ttl: hajobs_core::LeaseTtl,
    ) -> Result<Acquired, hajobs_core::StoreError> {
        let leases = self.leases_of(lock_type);
        let node = &self.inner.node;
        let Some(lock) = self.inner.locks.get(lock_type) else {
            return leases.acquire(lock_type, job_id, node, ttl).await;
        };
        let slots = lock.slots();
        let offset = (job_id.uuid().as_u128() % slots.len() as u128) as usize;
        let mut first_holder = None;
        let mut lease = None;
        for k in 0..slots.len() {
            match leases
                .acquire(&slots[(offset + k) % slots.len()], job_id, node, ttl)
                .await?
            {
                Acquired::Acquired(l) => {
                    lease = Some(l);
                    break;
                }
                Acquired::Held(h) => {
                    first_holder.get_or_insert(h);
                }
            }
        }
        let Some(lease) = lease else {
            return Ok(Acquired::Held(first_holder.expect("at least one slot")));
        };
        if let Some((gate, gate_ttl)) = lock.gate() {
            match leases.acquire(&gate, job_id, node, gate_ttl).await {
                Ok(Acquired::Acquired(_)) => {}
                Ok(Acquired::Held(h)) => {
                    let _ = leases.release(&lease).await;
                    return Ok(Acquired::Held(h));
                }
                Err(e) => {
                    let _ = leases.release(&lease).await;
                    return Err(e);
                }
            }
        }
        Ok(Acquired::Acquired(lease))
    }

    /// How many attempts of `trigger_id` the newest statuses of `job_type`
    /// hold (its newest [`TRIGGER_HISTORY`] attempts are looked at).
    async fn attempts_of(
        &self,
        job_type: &JobType,
        trigger_id: TriggerId,
    ) -> Result<usize, ManagerError> {
        Ok(self
            .inner
            .statuses
            .history(job_type, TRIGGER_HISTORY)
            .await?
            .iter()
            .filter_map(StatusEntry::status)
            .filter(|s| s.trigger_id == trigger_id)
            .count())
    }

    fn finished(&self, job_type: &JobType, job_id: JobId) {
        let mut running = self.inner.running.lock().expect("running map poisoned");
        if running
            .get(&job_id)
            .is_some_and(|r| &r.job_type == job_type)
        {
            running.remove(&job_id);
        }
    }

    /// Lists, for the supervisors, a FAILED ending this replica recorded
    /// for an attempt that never ran (a claim nobody followed up).
    pub(crate) async fn watch_ending(&self, job_type: &JobType, job_id: JobId) {
        self.inner.watch.ended_elsewhere(job_type, job_id).await;
    }

    /// Every attempt running on this replica now.
    pub fn running(&self) -> Vec<(JobType, JobId)> {
        let running = self.inner.running.lock().expect("running map poisoned");
        let mut all: Vec<(JobType, JobId)> = running
            .iter()
            .map(|(id, r)| (r.job_type.clone(), *id))
            .collect();
        all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        all
    }

    /// Every attempt running on this replica now, with the trigger it serves.
    pub fn running_triggers(&self) -> Vec<(JobType, JobId, TriggerId)> {
        let running = self.inner.running.lock().expect("running map poisoned");
        running
            .iter()
            .map(|(id, r)| (r.job_type.clone(), *id, r.trigger_id))
            .collect()
    }

    /// The attempt of `job_type` running on this replica, if any.
    pub fn running_here(&self, job_type: &str) -> Option<JobId> {
        let running = self.inner.running.lock().expect("running map poisoned");
        running
            .iter()
            .filter(|(_, r)| r.job_type.as_str() == job_type)
            .map(|(id, _)| *id)
            .min()
    }

    /// Cancels the running attempts of `job_type`, wherever they run (one,
    /// or several on a lock type with capacity); says what became of the
    /// first.
    pub async fn cancel(&self, job_type: &str) -> Result<CancelOutcome, ManagerError> {
        let spec = &self.registered(job_type)?.spec;
        let local: Vec<(JobId, Cancellation)> = {
            let running = self.inner.running.lock().expect("running map poisoned");
            running
                .iter()
                .filter(|(_, r)| r.job_type == spec.job_type)
                .map(|(id, r)| (*id, r.cancellation.clone()))
                .collect()
        };
        let mut outcome = None;
        for (job_id, cancellation) in local {
            cancellation.cancel(CancelReason::Requested);
            tracing::info!(job_type, %job_id, "cancel requested; the attempt runs here");
            outcome.get_or_insert(CancelOutcome::CancelledLocally(job_id));
        }
        // Elsewhere: is a slot of the lock held by an attempt of this job type?
        for slot in self.slots(&spec.lock_type) {
            if let Some(o) = self.cancel_holder(spec, &slot).await? {
                outcome.get_or_insert(o);
            }
        }
        Ok(outcome.unwrap_or(CancelOutcome::NotRunning))
    }

    async fn cancel_holder(
        &self,
        spec: &JobSpec,
        slot: &LockType,
    ) -> Result<Option<CancelOutcome>, ManagerError> {
        let Some(holder) = self.leases_of(&spec.lock_type).read(slot, true).await? else {
            return Ok(None);
        };
        if self.running_here_id(holder.job_id) {
            return Ok(None);
        }
        let attempt = self
            .inner
            .statuses
            .get(&spec.job_type, holder.job_id)
            .await?;
        let ours =
            matches!(&attempt, Some(StatusEntry::Status(s)) if s.result() == JobResult::Pending);
        if !ours {
            return Ok(None);
        }
        if holder.is_foreign() {
            // It would never see the request: say so rather than pretend.
            return Ok(Some(CancelOutcome::ForeignHolder(holder)));
        }
        // The holder sees the request at its next renewal, stops the job,
        // records CANCELED and releases the lease itself: the lock is never
        // free while the attempt still runs.
        if self
            .leases_of(&spec.lock_type)
            .request_cancel(slot, holder.job_id)
            .await?
        {
            tracing::info!(job_type = %spec.job_type, job_id = %holder.job_id, owner = ?holder.owner, "cancel requested through the lock");
            Ok(Some(CancelOutcome::CancelledRemotely(holder)))
        } else {
            Ok(None)
        }
    }

    fn running_here_id(&self, job_id: JobId) -> bool {
        self.inner
            .running
            .lock()
            .expect("running map poisoned")
            .contains_key(&job_id)
    }

    /// The lock rows an attempt of `lock_type` may hold: the lock type
    /// itself, and for a capacity of N also `LOCK_TYPE#2` … `LOCK_TYPE#N`.
    pub fn slots(&self, lock_type: &LockType) -> Vec<LockType> {
        match self.inner.locks.get(lock_type) {
            Some(l) => l.slots(),
            None => vec![lock_type.clone()],
        }
    }

    /// The lease store of `lock_type`: the cluster's, or one with the
    /// consistency its jobs ask for.
    pub fn leases_of(&self, lock_type: &LockType) -> &Arc<LeaseStore> {
        self.inner
            .lock_stores
            .get(lock_type)
            .unwrap_or(&self.inner.leases)
    }

    /// Who holds each slot of `lock_type` now (read at SERIAL).
    pub async fn holders(&self, lock_type: &LockType) -> Result<Vec<Holder>, ManagerError> {
        let mut holders = Vec::new();
        for slot in self.slots(lock_type) {
            if let Some(h) = self.leases_of(lock_type).read(&slot, true).await? {
                holders.push(h);
            }
        }
        Ok(holders)
    }

    /// Graceful shutdown: stops the cron schedules, cancels every running
    /// attempt, waits up to `grace` for them to record CANCELED and release
    /// their leases.
    pub async fn shutdown(&self, grace: Duration) {
        {
            // Under the running map's lock: no attempt starts after this.
            let running = self.inner.running.lock().expect("running map poisoned");
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            for r in running.values() {
                r.cancellation.cancel(CancelReason::Shutdown);
            }
        }
        self.inner.stop_timers.send_replace(true);
        let timers = std::mem::take(&mut *self.inner.timers.lock().expect("timers poisoned"));
        for timer in timers {
            let _ = timer.await;
        }
        // Each attempt leaves the map once it has recorded its end and
        // released its lease.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left: Vec<(JobType, JobId)> = {
                let running = self.inner.running.lock().expect("running map poisoned");
                running
                    .iter()
                    .map(|(id, r)| (r.job_type.clone(), *id))
                    .collect()
            };
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for (job_type, job_id) in left {
                    tracing::error!(%job_type, %job_id, "attempt did not end within the shutdown grace; its lease expires by TTL");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.watch.close();
        tracing::info!(node = %self.inner.node, "job manager stopped");
    }
}
