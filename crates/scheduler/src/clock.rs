//! [`Clock`]: where the job manager reads the wall-clock time of cron firings.

use chrono::{DateTime, Utc};

/// The wall clock of a replica. Cron firings are named by the scheduled
/// instant this clock says has come; leases never use it (their TTLs are
/// counted by Cassandra).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock a fixed offset away from the system clock: a replica whose
/// clock is off, for tests and simulations of clock skew.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock(pub chrono::TimeDelta);

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}
