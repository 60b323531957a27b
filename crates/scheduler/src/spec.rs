//! [`JobSpec`]: how a job type is run — its lock, schedule, timeout, retries.

use std::time::Duration;

use hajobs_core::{JobType, LeaseTtl, LockType};
use hajobs_lock_keeper::KeeperConfig;

use crate::args::ArgsSpec;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// Whether attempts of one job type may overlap (Kubernetes CronJob's
/// `concurrencyPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Never two attempts at once: the lock decides (today's behaviour).
    #[default]
    Forbid,
    /// A new trigger that finds an attempt of the same job type holding the
    /// lock asks it to stop (cluster-wide, through the lock) and starts once
    /// it has ended and released the lock.
    Replace,
    /// Several attempts at once, up to the capacity of the lock type: only
    /// on a lock type with `capacity` > 1 (see [`LockSpec`]).
    Allow,
}

/// How far a job's lock is exclusive, overriding the cluster's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockConsistency {
    /// LOCAL_SERIAL: exclusive within a data centre; replicas in two data
    /// centres may each run it (fast: no cross-DC round trip).
    Local,
    /// SERIAL: exclusive across data centres, at the cost of cross-DC
    /// latency on every lock operation.
    Global,
}

/// Retries of a failed attempt, by the replica that ran it: the same
/// trigger runs again after an exponential backoff with jitter. Distinct
/// from the supervisor's re-run of dead attempts (`retrigger_count`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many times a FAILED attempt is retried (default 0).
    pub count: u32,
    /// The backoff before the first retry (default 10 s).
    pub backoff: Duration,
    /// The backoff grows by this factor per retry (default 2).
    pub factor: f64,
    /// The backoff never exceeds this (default 10 min).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            count: 0,
            backoff: Duration::from_secs(10),
            factor: 2.0,
            max_backoff: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry `k` (1 for the first), before jitter:
    /// `backoff × factor^(k−1)`, at most `max_backoff`.
    pub fn nominal(&self, k: u32) -> Duration {
        let exp = self.factor.powi(k.saturating_sub(1).min(64) as i32);
        let secs = (self.backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The backoff before retry `k` with "equal jitter": half of the
    /// nominal backoff, plus a random part of the other half (`unit` in
    /// [0, 1)), so that replicas retrying together spread out.
    pub fn jittered(&self, k: u32, unit: f64) -> Duration {
        let d = self.nominal(k);
        d / 2 + d.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A lock type's limits, shared by every job type running under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSpec {
    /// The lock type.
    pub lock_type: LockType,
    /// How many attempts may hold it at once (default 1). Each of the N
    /// slots is a lock row of its own — the lock type itself, then
    /// `LOCK_TYPE#2` … `LOCK_TYPE#N` — with its own lease and fencing
    /// token sequence, so never N + 1 run. Every replica must agree on it.
    pub capacity: u32,
    /// No two starts under this lock type closer than this, cluster-wide
    /// (whole seconds): each start takes the gate row `LOCK_TYPE#gate`,
    /// which Cassandra expires after it.
    pub min_interval: Option<Duration>,
}

impl LockSpec {
    /// The largest capacity accepted.
    pub const MAX_CAPACITY: u32 = 64;

    /// A lock type with capacity 1 and no rate limit.
    pub fn new(lock_type: &str) -> Result<Self, ManagerError> {
        let invalid = |source| ManagerError::InvalidLock {
            lock_type: lock_type.to_owned(),
            problem: format!("{source}"),
        };
        Ok(Self {
            lock_type: LockType::new(lock_type).map_err(invalid)?,
            capacity: 1,
            min_interval: None,
        })
    }

    fn invalid(&self, problem: impl Into<String>) -> ManagerError {
        ManagerError::InvalidLock {
            lock_type: self.lock_type.to_string(),
            problem: problem.into(),
        }
    }

    /// Lets up to `capacity` attempts hold the lock type at once (1 to 64).
    pub fn capacity(mut self, capacity: u32) -> Result<Self, ManagerError> {
        if capacity == 0 || capacity > Self::MAX_CAPACITY {
            return Err(self.invalid(format!(
                "capacity {capacity} is out of range: 1 to {}",
                Self::MAX_CAPACITY
            )));
        }
        // Every slot's name must be a valid lock type.
        self.lock_type
            .slot(capacity)
            .map_err(|e| self.invalid(format!("slot names: {e}")))?;
        self.capacity = capacity;
        Ok(self)
    }

    /// No two starts closer than `interval` (whole seconds, 1 s to a day).
    pub fn min_interval(mut self, interval: Duration) -> Result<Self, ManagerError> {
        if interval.subsec_nanos() != 0
            || interval < Duration::from_secs(1)
            || interval > Duration::from_secs(86_400)
        {
            return Err(self.invalid(format!(
                "min_interval {interval:?} is invalid: whole seconds, 1 s to one day"
            )));
        }
        self.lock_type
            .gate()
            .map_err(|e| self.invalid(format!("gate name: {e}")))?;
        self.min_interval = Some(interval);
        Ok(self)
    }

    /// The lock rows of its slots, slot 1 (the lock type itself) first.
    pub fn slots(&self) -> Vec<LockType> {
        (1..=self.capacity)
            .map(|k| {
                self.lock_type
                    .slot(k)
                    .expect("checked by LockSpec::capacity")
            })
            .collect()
    }

    /// The gate row of `min_interval`, with the TTL that keeps it at least
    /// that long (Cassandra expires TTLs in whole seconds of its clock).
    pub fn gate(&self) -> Option<(LockType, LeaseTtl)> {
        let interval = self.min_interval?;
        let name = self
            .lock_type
            .gate()
            .expect("checked by LockSpec::min_interval");
        let ttl = LeaseTtl::new(interval + hajobs_core::lease::TTL_GRANULARITY)
            .or_else(|_| LeaseTtl::new(LeaseTtl::MIN))
            .expect("within the TTL range");
        Some((name, ttl))
    }
}

/// An always-on job: exactly one replica runs it at all times, and an
/// attempt that ends is started again (on this or another replica) after
/// a backoff (see [`JobSpec::keep_running`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepRunning {
    /// The pause before a restart after a run that did not fail (it
    /// finished, or was cancelled: by an operator, a shutdown, a lost
    /// lease) or ran long.
    pub restart_backoff: Duration,
    /// What the pause grows to, doubling, over runs that failed (FAILED:
    /// the job's own error, a non-zero exit, a timeout) early; a run that
    /// lasted at least this long resets it.
    pub restart_max_backoff: Duration,
}

impl Default for KeepRunning {
    fn default() -> Self {
        Self {
            restart_backoff: Duration::from_secs(1),
            restart_max_backoff: Duration::from_secs(60),
        }
    }
}

impl KeepRunning {
    /// The pause before the next run, after `streak` consecutive runs that
    /// failed early (0: the last run ended well or ran long).
    pub fn backoff(&self, streak: u32) -> Duration {
        let doubled = self
            .restart_backoff
            .saturating_mul(1u32 << streak.saturating_sub(1).min(20));
        doubled.min(self.restart_max_backoff)
    }

    /// The streak after a run of `ran` that ended `failed` or not, the
    /// streak before it being `before`.
    pub fn streak_after(&self, before: u32, ran: Duration, failed: bool) -> u32 {
        if !failed || ran >= self.restart_max_backoff {
            0
        } else {
            before.saturating_add(1)
        }
    }
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
    /// Whether its attempts may overlap.
    pub concurrency: Concurrency,
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
    /// A cron firing that cannot start within this long after its
    /// scheduled instant (its lock stays held, or it was missed) is
    /// recorded SKIPPED naming this deadline (Kubernetes'
    /// `startingDeadlineSeconds`).
    pub starting_deadline: Option<Duration>,
    /// Overrides the cluster's consistency for its lock (`None`: the
    /// cluster's). Job types sharing a lock type must agree.
    pub consistency: Option<LockConsistency>,
    /// Always on: run at all times on exactly one replica.
    pub keep_running: Option<KeepRunning>,
    /// What its triggers may carry: parameters, a payload.
    pub args: ArgsSpec,
    /// Its attempts record checkpoints: each attempt fences its trigger's
    /// checkpoint with its fencing token and reads the last one.
    pub checkpoints: bool,
    /// The jobs triggered once after each attempt that ends with a
    /// success (FINISHED, WARNING, SKIPPED, NO_ACTION_NEEDED).
    pub on_success: Vec<JobType>,
    /// The jobs triggered once after each attempt that ends FAILED.
    pub on_failure: Vec<JobType>,
}

impl JobSpec {
    /// What is wrong with this job's concurrency under a lock type of
    /// `capacity` (1 without limits), if anything: `allow` needs a capacity
    /// above 1, and a capacity above 1 needs `allow` (its job types run up
    /// to that many attempts at once). The one rule, for the builder and for
    /// the daemon's configuration alike.
    pub fn concurrency_problem(&self, capacity: u32) -> Option<String> {
        match (self.concurrency, capacity) {
            (Concurrency::Allow, 1) => Some(format!(
                "`allow` needs a lock type with capacity > 1; lock type `{}` has 1",
                self.lock_type
            )),
            (Concurrency::Forbid | Concurrency::Replace, c) if c > 1 => Some(format!(
                "lock type `{}` has capacity {c}: its job types run up to {c} attempts at once, so they need concurrency `allow`",
                self.lock_type
            )),
            _ => None,
        }
    }

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
            concurrency: Concurrency::default(),
            retry: RetryPolicy::default(),
            starting_deadline: None,
            consistency: None,
            keep_running: None,
            args: ArgsSpec::default(),
            checkpoints: false,
            on_success: Vec::new(),
            on_failure: Vec::new(),
        })
    }

    /// The jobs triggered after each successful attempt, once per attempt,
    /// with its parameters (those each declares) — also when this replica
    /// dies right after the attempt ended. Checked with the other jobs when
    /// the manager is built ([`crate::follow_ups::follow_up_problem`]).
    pub fn on_success(mut self, jobs: &[&str]) -> Result<Self, ManagerError> {
        self.on_success = self.job_types(jobs)?;
        Ok(self)
    }

    /// The jobs triggered after each FAILED attempt, as [`JobSpec::on_success`].
    pub fn on_failure(mut self, jobs: &[&str]) -> Result<Self, ManagerError> {
        self.on_failure = self.job_types(jobs)?;
        Ok(self)
    }

    fn job_types(&self, jobs: &[&str]) -> Result<Vec<JobType>, ManagerError> {
        jobs.iter()
            .map(|j| {
                JobType::new(*j).map_err(|source| ManagerError::InvalidSpec {
                    job_type: self.job_type.to_string(),
                    source,
                })
            })
            .collect()
    }

    /// Lets the job's attempts record checkpoints
    /// ([`JobContext::checkpoint`](crate::JobContext::checkpoint)): the next
    /// attempt of the same trigger — a retry, a re-run, a handover, an
    /// always-on restart — starts from the last one
    /// ([`JobContext::last_checkpoint`](crate::JobContext::last_checkpoint)).
    /// Each attempt first fences its trigger's checkpoint with its fencing
    /// token (an LWT or two and a read), so a stale holder's write is
    /// refused. Not with a lock type of capacity > 1 (its slots' tokens are
    /// not one sequence; see [`JobSpec::checkpoints_problem`]).
    pub fn checkpoints(mut self, on: bool) -> Self {
        self.checkpoints = on;
        self
    }

    /// What is wrong with checkpoints under a lock type of `capacity`, if
    /// anything.
    pub fn checkpoints_problem(&self, capacity: u32) -> Option<String> {
        (self.checkpoints && capacity > 1).then(|| {
            format!(
                "checkpoints need a lock type of capacity 1 (`{}` has {capacity}): the tokens of its slots are not one sequence, so a stale attempt could not be told from a newer one",
                self.lock_type
            )
        })
    }

    /// Declares what the job's triggers may carry: parameters (checked,
    /// defaults added, by [`ArgsSpec::resolve`]), a payload, the static
    /// parameters of its cron firings. Checked when the manager is built
    /// ([`ArgsSpec::problem`]).
    pub fn args(mut self, args: ArgsSpec) -> Self {
        self.args = args;
        self
    }

    /// Makes the job always on: every replica that has it starts it when no
    /// attempt holds its lock, and an attempt that ends is started again
    /// after `policy`'s backoff, without limit. Not with a cron schedule, a
    /// queue, retries or concurrency `replace` (see
    /// [`JobSpec::keep_running_problem`]).
    pub fn keep_running(mut self, policy: KeepRunning) -> Result<Self, ManagerError> {
        if policy.restart_backoff.is_zero() || policy.restart_max_backoff < policy.restart_backoff {
            return Err(ManagerError::Policy {
                job_type: self.job_type.to_string(),
                problem: format!(
                    "restart backoff {:?} up to {:?}: the backoff must be above zero and the maximum at least the backoff",
                    policy.restart_backoff, policy.restart_max_backoff
                ),
            });
        }
        self.keep_running = Some(policy);
        Ok(self)
    }

    /// What is wrong with this always-on job under a lock type of
    /// `capacity` (1 without limits), if anything: it is started by being
    /// always on, so not by cron, not queued, not retried (it restarts
    /// anyway) and never replacing itself, and it runs once at a time. The
    /// one rule, for the builder and the daemon's configuration alike.
    pub fn keep_running_problem(&self, capacity: u32) -> Option<String> {
        self.keep_running?;
        let clash = if self.schedule.is_some() {
            "a cron schedule"
        } else if self.on_locked == OnLocked::Queue {
            "on_locked = \"queue\""
        } else if self.retry.count > 0 {
            "retries (it is restarted after its restart backoff)"
        } else if self.concurrency != Concurrency::Forbid {
            "a concurrency other than `forbid`"
        } else if capacity > 1 {
            "a lock type with capacity above 1"
        } else {
            return None;
        };
        Some(format!(
            "an always-on job (keep_running) cannot have {clash}"
        ))
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

    /// Retries a FAILED attempt `policy.count` times, after a backoff
    /// growing by `factor` (at least 1) up to `max_backoff`, with jitter.
    pub fn retries(mut self, policy: RetryPolicy) -> Result<Self, ManagerError> {
        if !(policy.factor >= 1.0 && policy.factor <= 100.0) || policy.backoff.is_zero() {
            return Err(ManagerError::Policy {
                job_type: self.job_type.to_string(),
                problem: format!(
                    "retry backoff {:?} with factor {}: the backoff must be above zero and the factor from 1 to 100",
                    policy.backoff, policy.factor
                ),
            });
        }
        self.retry = policy;
        Ok(self)
    }

    /// Sets the starting deadline of its cron firings (at least 1 s).
    pub fn starting_deadline(mut self, deadline: Duration) -> Result<Self, ManagerError> {
        if deadline < Duration::from_secs(1) {
            return Err(self.invalid(hajobs_core::InvalidInput::Duration {
                what: "starting deadline",
                value: deadline,
                rule: "it must be at least one second",
            }));
        }
        self.starting_deadline = Some(deadline);
        Ok(self)
    }

    /// Makes its lock exclusive within the data centre or across them,
    /// whatever the cluster's default.
    pub fn consistency(mut self, consistency: LockConsistency) -> Self {
        self.consistency = Some(consistency);
        self
    }

    /// Sets whether its attempts may overlap.
    pub fn concurrency(mut self, policy: Concurrency) -> Self {
        self.concurrency = policy;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_grows_by_its_factor_up_to_its_cap_with_equal_jitter() {
        let p = RetryPolicy {
            count: 5,
            backoff: Duration::from_secs(10),
            factor: 3.0,
            max_backoff: Duration::from_secs(60),
        };
        assert_eq!(p.nominal(1), Duration::from_secs(10));
        assert_eq!(p.nominal(2), Duration::from_secs(30));
        assert_eq!(p.nominal(3), Duration::from_secs(60));
        assert_eq!(p.nominal(40), Duration::from_secs(60));
        assert_eq!(p.jittered(2, 0.0), Duration::from_secs(15));
        assert_eq!(p.jittered(2, 0.5), Duration::from_millis(22_500));
        assert!(p.jittered(2, 0.999) < Duration::from_secs(30));
    }
}
