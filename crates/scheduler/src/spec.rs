//! [`JobSpec`]: how a job type is run — its lock, schedule, timeout, retries.

use std::time::Duration;

use hajobs_core::{JobType, LeaseTtl, LockType};
use hajobs_lock_keeper::KeeperConfig;

use crate::cron::{CronSchedule, MissedRuns};
use crate::error::ManagerError;

/// The default lease TTL of a job.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// The default number of re-runs of a dead attempt (ha-jobs: 1).
pub const DEFAULT_RETRIGGER_COUNT: u32 = 1;

/// The default time a queued trigger waits for its lock before it is
/// recorded SKIPPED.
pub const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a trigger does when it finds its lock type held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnLocked {
    /// Nothing starts ([`StartOutcome::Locked`](crate::StartOutcome)); a
    /// cron firing keeps trying for one period of its schedule, then is
    /// skipped. ha-jobs' behaviour, the default.
    #[default]
    Skip,
    /// The trigger joins the lock type's queue in Cassandra and runs when
    /// its turn comes, first in first out, on whichever replica gets the
    /// lock for it ([`StartOutcome::Queued`](crate::StartOutcome)). A
    /// trigger also queues while others wait, so that none jumps the queue.
    Queue,
}

/// The registration of one job type. Build with [`JobSpec::new`]; every
/// setter validates and names the job in its error.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job type.
    pub job_type: JobType,
    /// The lock it runs under; job types sharing one never run together.
    pub lock_type: LockType,
    /// When cron triggers it, if ever.
    pub schedule: Option<CronSchedule>,
    /// What to do about a firing missed during downtime.
    pub missed_runs: MissedRuns,
    /// Cancel and record FAILED after this long.
    pub timeout: Option<Duration>,
    /// How often the supervisor re-runs a dead attempt of one trigger.
    pub retrigger_count: u32,
    /// Lease TTL and renewal timing.
    pub keeper: KeeperConfig,
    /// What a trigger does when the lock is held.
    pub on_locked: OnLocked,
    /// How long a queued trigger waits for the lock before it is recorded
    /// SKIPPED, naming this timeout.
    pub lock_wait_timeout: Duration,
}

impl JobSpec {
    /// A job type running under `lock_type`, no schedule, 30 s lease TTL.
    pub fn new(job_type: &str, lock_type: &str) -> Result<Self, ManagerError> {
        let invalid = |source| ManagerError::InvalidSpec {
            job_type: job_type.to_owned(),
            source,
        };
        Ok(Self {
            job_type: JobType::new(job_type).map_err(invalid)?,
            lock_type: LockType::new(lock_type).map_err(invalid)?,
            schedule: None,
            missed_runs: MissedRuns::default(),
            timeout: None,
            retrigger_count: DEFAULT_RETRIGGER_COUNT,
            keeper: KeeperConfig::for_ttl(
                LeaseTtl::new(DEFAULT_LEASE_TTL).expect("the default TTL is valid"),
            ),
            on_locked: OnLocked::default(),
            lock_wait_timeout: DEFAULT_LOCK_WAIT_TIMEOUT,
        })
    }

    fn invalid(&self, source: hajobs_core::InvalidInput) -> ManagerError {
        ManagerError::InvalidSpec {
            job_type: self.job_type.to_string(),
            source,
        }
    }

    /// Triggers the job by `expression` (with seconds) in `time_zone`.
    pub fn cron(mut self, expression: &str, time_zone: &str) -> Result<Self, ManagerError> {
        self.schedule = Some(
            CronSchedule::parse(expression, time_zone).map_err(|problem| {
                ManagerError::InvalidCron {
                    job_type: self.job_type.to_string(),
                    problem,
                }
            })?,
        );
        Ok(self)
    }

    /// Sets the missed-run policy.
    pub fn missed_runs(mut self, policy: MissedRuns) -> Self {
        self.missed_runs = policy;
        self
    }

    /// Cancels an attempt running longer than `timeout`; it is recorded FAILED.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ManagerError> {
        if timeout.is_zero() {
            return Err(self.invalid(hajobs_core::InvalidInput::Duration {
                what: "timeout",
                value: timeout,
                rule: "it must be above zero",
            }));
        }
        self.timeout = Some(timeout);
        Ok(self)
    }

    /// Sets how often a dead attempt is re-run per trigger.
    pub fn retrigger_count(mut self, count: u32) -> Self {
        self.retrigger_count = count;
        self
    }

    /// Sets what a trigger does when the lock is held.
    pub fn on_locked(mut self, policy: OnLocked) -> Self {
        self.on_locked = policy;
        self
    }

    /// Sets how long a queued trigger waits for the lock (at least 1 s).
    pub fn lock_wait_timeout(mut self, timeout: Duration) -> Result<Self, ManagerError> {
        if timeout < Duration::from_secs(1) {
            return Err(self.invalid(hajobs_core::InvalidInput::Duration {
                what: "lock wait timeout",
                value: timeout,
                rule: "it must be at least one second",
            }));
        }
        self.lock_wait_timeout = timeout;
        Ok(self)
    }

    /// Sets the lease TTL (whole seconds, 2 s to a day), with default timing.
    pub fn lease_ttl(mut self, ttl: Duration) -> Result<Self, ManagerError> {
        let ttl = LeaseTtl::new(ttl).map_err(|e| self.invalid(e))?;
        self.keeper = KeeperConfig::for_ttl(ttl);
        Ok(self)
    }

    /// Sets the renewal interval (below the usable lease time).
    pub fn renew_interval(mut self, interval: Duration) -> Result<Self, ManagerError> {
        self.keeper = self
            .keeper
            .with_renew_interval(interval)
            .map_err(|e| self.invalid(e))?;
        Ok(self)
    }
}
