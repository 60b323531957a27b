#![doc = include_str!("../../../docs/leases.md")]

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::error::InvalidInput;
use crate::ids::{JobId, NodeId};
use crate::lock_type::LockType;

/// Cassandra expires TTL cells in whole seconds of the server's clock: a
/// cell written at 10.9 s with TTL 5 is gone at 15.0 s, 4.1 s later. A lease
/// may therefore live up to this much less than its TTL.
pub const TTL_GRANULARITY: Duration = Duration::from_secs(1);

/// How long a lease lives without renewal: whole seconds, 2 s to one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseTtl(Duration);

impl LeaseTtl {
    /// The shortest TTL accepted: below it nothing is left after [`TTL_GRANULARITY`].
    pub const MIN: Duration = Duration::from_secs(2);
    /// The longest TTL accepted.
    pub const MAX: Duration = Duration::from_secs(24 * 3600);

    /// Validates a TTL.
    pub fn new(ttl: Duration) -> Result<Self, InvalidInput> {
        if ttl.subsec_nanos() != 0 || ttl < Self::MIN || ttl > Self::MAX {
            return Err(InvalidInput::LeaseTtl { ttl });
        }
        Ok(Self(ttl))
    }

    /// A TTL of `secs` seconds.
    pub fn from_secs(secs: u64) -> Result<Self, InvalidInput> {
        Self::new(Duration::from_secs(secs))
    }

    /// The TTL.
    pub fn duration(&self) -> Duration {
        self.0
    }

    /// The TTL in seconds as CQL's `USING TTL ?` binds it.
    pub fn cql_secs(&self) -> i32 {
        // At most 86 400: always fits.
        self.0.as_secs() as i32
    }

    /// The lease time a holder may count on after sending a request that was
    /// confirmed: the TTL less [`TTL_GRANULARITY`].
    pub fn guaranteed(&self) -> Duration {
        self.0 - TTL_GRANULARITY
    }
}

/// A number handed out with every acquisition of a lock type, strictly
/// greater than every earlier one for that lock type. A job passes it to the
/// systems it writes to, which reject writes carrying a smaller token than
/// one they have seen: a stale holder (paused, partitioned) is fenced off.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A held lock: proof that `job_id` on `owner` holds `lock_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lock held.
    pub lock_type: LockType,
    /// The job attempt holding it (the `job_lock` column).
    pub job_id: JobId,
    /// The replica holding it.
    pub owner: NodeId,
    /// Its TTL; each renewal restarts it.
    pub ttl: LeaseTtl,
    /// The token of this acquisition.
    pub fencing_token: FencingToken,
    /// When the acquiring request was *sent* (monotonic clock): the lease is
    /// safe until `sent_at + ttl.guaranteed()`, and not a moment longer.
    pub sent_at: Instant,
}

/// Who holds a lock, as read from the `lock` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The lock type.
    pub lock_type: LockType,
    /// The job attempt holding it.
    pub job_id: JobId,
    /// The replica holding it, when recorded (ha-jobs does not record it).
    pub owner: Option<String>,
    /// When it was acquired (the acquiring replica's clock; informational).
    pub since: Option<SystemTime>,
    /// The token of the acquisition, when recorded.
    pub fencing_token: Option<FencingToken>,
}

impl Holder {
    /// Whether the holder does not speak hajobs' lease protocol: every
    /// hajobs acquisition writes `owner`, ha-jobs writes `job_lock` alone.
    /// Such a holder never sees a cancel request on the lock, and its
    /// acquisitions do not advance the fencing token.
    pub fn is_foreign(&self) -> bool {
        self.owner.is_none()
    }
}

/// The outcome of an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours.
    Acquired(Lease),
    /// Someone else holds the lock.
    Held(Holder),
}

/// The outcome of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed: safe until `sent_at + ttl.guaranteed()`.
    Renewed {
        /// When the confirmed renewal was sent.
        sent_at: Instant,
    },
    /// The lease is gone (expired, released by force, taken by another job).
    Lost,
    /// Still held, but a cancel was requested (`hajobs cancel`): not renewed.
    CancelRequested,
}

/// The outcome of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Released: the lock is free.
    Released,
    /// The lease was not held by this job any more.
    NotHolder,
}
