//! [`SupervisorConfig`]: how often the supervisor looks, and how much it does.

use std::time::Duration;

use hajobs_core::{InvalidInput, LeaseTtl, LockType};

/// The lock type of the supervisor's own lease.
pub const DEFAULT_LOCK_TYPE: &str = "hajobs-supervisor";

/// Settings of the supervisor, with documented defaults.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Time between passes on each replica (default 2 s). Failover takes
    /// about lock TTL + this interval.
    pub interval: Duration,
    /// The lock that makes passes a singleton (default `hajobs-supervisor`).
    pub lock_type: LockType,
    /// TTL of the supervisor's lease; a pass must end well within it
    /// (default 30 s).
    pub lease_ttl: LeaseTtl,
    /// How many recent attempts per job type a pass reads (default 20).
    pub history_depth: u32,
    /// At most this many retriggers per pass (default 10).
    pub max_retriggers_per_pass: usize,
    /// Wait at least this long after a failed attempt before re-running its
    /// trigger (default 0).
    pub retrigger_backoff: Duration,
    /// A claimed cron firing without an outcome whose claimant has been
    /// silent this long is closed as lost and its trigger recorded FAILED
    /// (default 20 s; its claimant says it still waits every 5 s).
    pub lost_firing_after: Duration,
    /// Every job type is looked at once per this period, whether or not a
    /// replica's watch list names it: each pass sweeps a slice of them
    /// (default 5 min). Catches what no list names — an attempt whose
    /// replica died before its list was written, a claimed cron firing
    /// whose claimant died before starting it. A period no longer than
    /// `interval` sweeps every job type every pass.
    pub sweep_period: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            lock_type: LockType::new(DEFAULT_LOCK_TYPE).expect("valid lock type"),
            lease_ttl: LeaseTtl::from_secs(30).expect("valid TTL"),
            history_depth: 20,
            max_retriggers_per_pass: 10,
            retrigger_backoff: Duration::ZERO,
            lost_firing_after: Duration::from_secs(20),
            sweep_period: Duration::from_secs(300),
        }
    }
}

impl SupervisorConfig {
    /// Sets the interval between passes (100 ms to one hour).
    pub fn with_interval(mut self, interval: Duration) -> Result<Self, InvalidInput> {
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(InvalidInput::Duration {
                what: "supervisor interval",
                value: interval,
                rule: "it must be from 100 ms to one hour",
            });
        }
        self.interval = interval;
        Ok(self)
    }

    /// Sets the sweep period (at most one day).
    pub fn with_sweep_period(mut self, period: Duration) -> Result<Self, InvalidInput> {
        if period > Duration::from_secs(86_400) {
            return Err(InvalidInput::Duration {
                what: "supervisor sweep period",
                value: period,
                rule: "it must be at most one day",
            });
        }
        self.sweep_period = period;
        Ok(self)
    }

    /// Whether a pass at `now_ms` (epoch milliseconds) sweeps `job_type`.
    pub fn sweeps(&self, job_type: &str, now_ms: u64) -> bool {
        let (slice, slices) = self.sweep_slice(now_ms);
        sweep_hash(job_type) % slices == slice
    }

    /// How many passes one sweep is spread over, and which slice of them
    /// a pass at `now_ms` (epoch milliseconds) sweeps: the wall clock picks
    /// it, so that passes on any replica take turns.
    pub(crate) fn sweep_slice(&self, now_ms: u64) -> (u64, u64) {
        let interval_ms = (self.interval.as_millis() as u64).max(1);
        let slices = (self.sweep_period.as_millis() as u64 / interval_ms).max(1);
        ((now_ms / interval_ms) % slices, slices)
    }

    /// Sets the retrigger backoff.
    pub fn with_retrigger_backoff(mut self, backoff: Duration) -> Self {
        self.retrigger_backoff = backoff;
        self
    }
}

/// FNV-1a: a job type's place in the sweep, the same on every replica.
fn sweep_hash(job_type: &str) -> u64 {
    job_type.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
