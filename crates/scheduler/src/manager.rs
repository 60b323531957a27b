//! [`JobManager`]: registered jobs, triggered by cron or by hand, run under
//! their leases, cancelled cluster-wide, stopped gracefully.
//!
//! This file holds the manager's state, its start and its accessors; each
//! concept has a room of its own:
//!
//! | room | what it holds |
//! |---|---|
//! | `builder` | [`JobManagerBuilder`]: jobs, locks, options, checked and made into a manager |
//! | `cron` | each job type's timer; a firing claimed once and started; missed runs caught up; firings whose start was lost closed |
//! | `args` | what a trigger carries: checked and recorded when triggered, read back by each attempt |
//! | `triggers` | a trigger by hand, through the cluster or by the supervisor: started, queued, or replacing the running attempt |
//! | `scheduled` | one-time triggers due at a given time: read ahead, claimed once at their time, missed ones by policy |
//! | `queue` | the queue runners: the oldest queued trigger started once its lock is free |
//! | `attempts` | one attempt from its lease to its end, and planned retries |
//! | `always` | always-on jobs: started wherever their lock is free, restarted after a backoff |
//! | `follow_ups` | jobs that follow jobs: recorded as one-time triggers due now before the parent's final status |
//! | `locks` | the manager's side of [`Locks`], the room where a lease is taken |
//! | `cancel` | cancel, here or through the lock, and the graceful shutdown |

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hajobs_core::status_store::DEFAULT_RETENTION;
use hajobs_core::{
    Acquired, ArgsStore, CancelReason, Cancellation, CassandraConfig, CheckpointStore,
    FencingToken, FiringOutcome, FiringStore, Holder, JobId, JobResult, JobState, JobStatus,
    JobType, LeaseStore, LockType, NodeId, NodeStore, QueueEntry, QueueStore, ScheduledStore,
    StatusEntry, StatusStore, TriggerArgs, TriggerId, WatchStore,
};
use scylla::client::session::Session;

use crate::attempt;
use crate::claim_order::{self, Peers};
use crate::clock::{Clock, SystemClock};
use crate::context::JobContext;
use crate::cron::MissedRuns;
use crate::error::ManagerError;
use crate::job::Job;
use crate::locks::Locks;
use crate::spec::{Concurrency, JobSpec, LockSpec, OnLocked};
use crate::steps;
use crate::watch::Watch;

mod always;
mod args;
mod attempts;
mod builder;
mod cancel;
mod cron;
mod follow_ups;
mod locks;
mod queue;
mod scheduled;
pub use scheduled::SCHEDULED_POLL;
mod triggers;

use attempts::{LeaseFirst, Taken};
pub use builder::JobManagerBuilder;

/// How long a cancelled job (by request, timeout or shutdown) may take to
/// return before its future is dropped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How long before a scheduled firing the job's [`Job::warm_up`] is called.
pub const WARM_UP: Duration = Duration::from_millis(30);

/// How often a claimed cron firing retries a held lock …
const FIRING_RETRY: Duration = Duration::from_millis(200);
/// … after a first retry this soon.
const FIRST_FIRING_RETRY: Duration = Duration::from_millis(20);
/// How often a firing waiting for its lock says it is still waiting.
const FIRING_TOUCH: Duration = Duration::from_secs(5);
/// How many of a job type's newest firings are checked for lost claims.
const RECENT_FIRINGS: i32 = 10;
/// How long after a scheduled instant its claim is checked for being lost.
const LOST_WINDOW: Duration = Duration::from_secs(600);
/// How many of a job type's newest attempts are read to find the attempts
/// of one trigger (a lost claim's, a queue entry's, a retry's, a handover's).
pub const TRIGGER_HISTORY: u32 = 100;
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
    /// Dropped with the entry: what [`JobManager::wait_ended`] waits for.
    ended: tokio::sync::watch::Sender<()>,
}

struct Inner {
    node: NodeId,
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
    /// Where leases are taken (see [`Locks`]).
    locks: Arc<Locks>,
    /// Always-on job types: early failures in a row before their next
    /// attempt here (read from the newest attempt's status).
    restart_streaks: Mutex<HashMap<JobType, u32>>,
    /// What triggers carry (schema 13): prepared when some job takes
    /// parameters or a payload.
    args: Option<Arc<ArgsStore>>,
    /// One-time triggers due at a given time (schema 14), and what wakes
    /// this replica's loop of them.
    scheduled: Arc<ScheduledStore>,
    scheduled_wake: tokio::sync::Notify,
    /// Checkpoints (schema 15): prepared when some job declares them.
    checkpoints: Option<Arc<CheckpointStore>>,
    /// The job types some job names in `on_success` / `on_failure`: their
    /// attempts read what their trigger carries (the parent).
    follow_up_targets: std::collections::HashSet<JobType>,
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

    /// The lease store of the cluster's consistency (for reading locks).
    pub fn leases(&self) -> &Arc<LeaseStore> {
        self.inner.locks.cluster_leases()
    }

    /// Where this replica's leases are taken: its lock types' rows and
    /// lease stores.
    pub fn locks(&self) -> &Arc<Locks> {
        &self.inner.locks
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
        self.inner.watch.adopt_previous().await;
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
        for registered in self.inner.jobs.values() {
            if let Some(policy) = registered.spec.keep_running {
                let manager = self.clone();
                let job_type = registered.spec.job_type.clone();
                let stop = self.inner.stop_timers.subscribe();
                timers.push(tokio::spawn(async move {
                    manager.keep_running(job_type, policy, stop).await
                }));
            }
        }
        {
            let manager = self.clone();
            let stop = self.inner.stop_timers.subscribe();
            timers.push(tokio::spawn(
                async move { manager.run_scheduled(stop).await },
            ));
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

    /// Waits until attempt `job_id` no longer runs on this replica: its
    /// end recorded and its lease released (returns at once for an attempt
    /// that does not run here).
    pub async fn wait_ended(&self, job_id: JobId) {
        let ended = {
            let running = self.inner.running.lock().expect("running map poisoned");
            running.get(&job_id).map(|r| r.ended.subscribe())
        };
        if let Some(mut ended) = ended {
            while ended.changed().await.is_ok() {}
        }
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
}
