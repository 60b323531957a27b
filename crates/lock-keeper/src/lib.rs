//! # hajobs-lock-keeper
//!
//! The heartbeat of a held lease. For every lease a replica holds, one
//! [`ractor`] actor renews it every `TTL/3` and fires the job's
//! [`Cancellation`](hajobs_core::Cancellation):
//!
//! - at once when a renewal is **rejected** (the lock is lost: expired,
//!   released by force, taken by another job);
//! - at the **deadline** `sent + TTL − 1 s − margin` when no renewal was
//!   confirmed in time, where `sent` is the instant the last *confirmed*
//!   renewal (or the acquisition) was **sent**. The lease cannot have expired
//!   before then, so the job stops before anyone else can take over
//!   (self-fencing). A watchdog task, independent of the actor's mailbox,
//!   enforces it even when a renewal hangs;
//! - with [`CancelReason::Requested`](hajobs_core::CancelReason) when a
//!   renewal finds a cancel request on the lock (`hajobs cancel` from any
//!   replica); it then keeps renewing, ignoring the request, until the job
//!   has stopped and released the lease, so the lock is never free while the
//!   cancelled job still runs.
//!
//! Correctness never rests on the actor stopping cleanly: if the replica
//! dies, Cassandra's TTL frees the lock.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`KeeperConfig`]: renewal interval, retry interval, safety margin |
//! | [`kept`] | [`keep`] starts a keeper ([`keep_with`] for any [`LeaseRenewer`](hajobs_core::lease_store::LeaseRenewer), such as a work item's check-in); [`KeptLease`] is the handle the job's runner holds |
//! | [`state`] | [`LeaseState`]: last confirmed renewal, deadline, counts, phase |
//! | `actor` | the ractor actor and the deadline watchdog |
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use hajobs_core::{Acquired, CassandraConfig, Cancellation, JobId, LeaseStore, LeaseTtl, LockType, NodeId};
//! use hajobs_lock_keeper::{KeeperConfig, keep};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = CassandraConfig::default();
//! let store = Arc::new(LeaseStore::new(config.connect().await?, &config).await?);
//! let ttl = LeaseTtl::from_secs(30)?;
//! let lock = LockType::new("nightly-import")?;
//! if let Acquired::Acquired(lease) = store.acquire(&lock, JobId::new(), &NodeId::new("host-1")?, ttl).await? {
//!     let token = lease.fencing_token; // hand it to downstream systems
//!     let kept = keep(store.clone(), lease, KeeperConfig::for_ttl(ttl), Cancellation::new()).await?;
//!     let cancel = kept.cancellation().clone();
//!     // … run the job, checking `cancel.is_cancelled()` between steps …
//!     # let _ = (token, cancel);
//!     kept.release().await?;
//! }
//! # Ok(()) }
//! ```

mod actor;
pub mod config;
pub mod kept;
pub mod state;

pub use config::KeeperConfig;
pub use kept::{KeeperError, KeptLease, keep, keep_with};
pub use state::{LeasePhase, LeaseState};
