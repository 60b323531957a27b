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
        for r in jobs.values() {
            let capacity = self
                .locks
                .iter()
                .find(|l| l.lock_type == r.spec.lock_type)
                .map_or(1, |l| l.capacity);
            let problem = r
                .spec
                .concurrency_problem(capacity)
                .or_else(|| r.spec.keep_running_problem(capacity))
                .or_else(|| r.spec.args.problem(r.spec.schedule.is_some()))
                .or_else(|| r.spec.checkpoints_problem(capacity));
            if let Some(problem) = problem {
                return Err(ManagerError::Policy {
                    job_type: r.spec.job_type.to_string(),
                    problem,
                });
            }
        }
        if let Some((job_type, problem)) =
            crate::follow_ups::follow_up_problem(jobs.values().map(|r| &r.spec))
        {
            return Err(ManagerError::Policy {
                job_type: job_type.to_string(),
                problem,
            });
        }
        let session = match self.session {
            Some(s) => s,
            None => self.config.connect().await?,
        };
        let locks = Arc::new(
            Locks::new(
                session.clone(),
                &self.config,
                &self.locks,
                jobs.values().map(|r| &r.spec),
            )
            .await?,
        );
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
        let follow_up_targets: std::collections::HashSet<JobType> = jobs
            .values()
            .flat_map(|r| r.spec.on_success.iter().chain(&r.spec.on_failure))
            .cloned()
            .collect();
        let args =
            if jobs.values().any(|r| r.spec.args.takes_any()) || !follow_up_targets.is_empty() {
                Some(Arc::new(
                    ArgsStore::new(session.clone(), &self.config, self.retention).await?,
                ))
            } else {
                None
            };
        let scheduled =
            Arc::new(ScheduledStore::new(session.clone(), &self.config, self.retention).await?);
        let checkpoints = if jobs.values().any(|r| r.spec.checkpoints) {
            Some(Arc::new(
                CheckpointStore::new(session.clone(), &self.config, self.retention).await?,
            ))
        } else {
            None
        };
        let nodes = NodeStore::new(session, &self.config).await?;
        Ok(JobManager {
            inner: Arc::new(Inner {
                watch: Watch::new(self.node.clone(), watches),
                nodes,
                peers: Peers::default(),
                node: self.node,
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
                restart_streaks: Mutex::new(HashMap::new()),
                args,
                scheduled,
                checkpoints,
                follow_up_targets,
                scheduled_wake: tokio::sync::Notify::new(),
            }),
        })
    }
}
