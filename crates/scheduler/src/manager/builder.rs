//! [`JobManagerBuilder`]: jobs, locks and options, checked and made into
//! a [`JobManager`] with its stores.

use super::*;

/// Builds a [`JobManager`].
pub struct JobManagerBuilder {
    pub(super) config: CassandraConfig,
    pub(super) node: NodeId,
    pub(super) session: Option<Arc<Session>>,
    pub(super) jobs: Vec<(JobSpec, Arc<dyn Job>)>,
    pub(super) locks: Vec<LockSpec>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) retention: Duration,
    pub(super) cancel_grace: Duration,
    pub(super) precondition: Option<Precondition>,
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
