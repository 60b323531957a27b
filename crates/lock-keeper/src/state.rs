//! [`LeaseState`]: what a keeper knows about its lease, for status pages and metrics.

use std::time::Instant;

use hajobs_core::{FencingToken, JobId, LockType};

/// A snapshot of a kept lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The lock held.
    pub lock_type: LockType,
    /// The job attempt holding it.
    pub job_id: JobId,
    /// The token of the acquisition.
    pub fencing_token: FencingToken,
    /// When the last confirmed renewal (or the acquisition) was sent.
    pub last_confirmed_sent: Instant,
    /// When the job is cancelled unless a renewal is confirmed before.
    pub deadline: Instant,
    /// Confirmed renewals so far.
    pub renewals: u64,
    /// Failed renewal attempts so far (errors, not losses).
    pub failures: u64,
    /// Failed attempts since the last confirmed renewal.
    pub consecutive_failures: u32,
    /// A cancel was requested through the lock (`hajobs cancel`): the job
    /// was cancelled, and the lease is kept until the job has stopped.
    pub cancel_requested: bool,
    /// What became of the lease.
    pub phase: LeasePhase,
}

/// The life of a kept lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePhase {
    /// Held and being renewed.
    Held,
    /// A renewal was rejected: someone else may hold the lock now.
    Lost,
    /// The deadline passed without a confirmed renewal; the job was cancelled.
    /// The keeper still tries to renew, to keep others out while the job
    /// winds down.
    ExpiredUnconfirmed,
    /// Released by its job.
    Released,
}
