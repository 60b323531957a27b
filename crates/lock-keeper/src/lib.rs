//! # hajobs-lock-keeper
//!
//! The heartbeat actor of hajobs. For every lease a replica holds, one
//! [`ractor`] actor renews it at a fraction of its TTL and fires the job's
//! cancellation the moment the lease is lost — and, through self-fencing, no
//! later than the instant the lease could expire counted from when the last
//! *confirmed* renewal was sent. Built in the leases issue; empty for now.
