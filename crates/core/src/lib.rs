//! # hajobs-core
//!
//! The ground every other hajobs crate stands on: the domain's words as
//! types, the storage of leases and job status in Cassandra or ScyllaDB, and
//! the configuration that connects to it.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`cancel`] | [`Cancellation`] and [`CancelReason`]: how a running job is told to stop, and why |
//! | [`config`] | [`CassandraConfig`]: contact points, keyspace, consistency, [`Credentials`], TLS; opens a session |
//! | [`tls`] | [`TlsConfig`]: the CA, an optional client certificate, hostname verification, made into the driver's context |
//! | [`secret`] | [`Secret`]: a password or token whose `Debug` and `Display` never show it |
//! | [`schema`] | the versioned CQL migrations of `schema/`, [`schema::apply()`] (checked against the live tables: adopts an ha-jobs keyspace), [`schema::check()`] and [`schema::print()`] |
//! | [`ids`] | [`JobId`], [`TriggerId`] (time-based UUIDs) and [`NodeId`] |
//! | [`lock_type`] | [`LockType`], a lock's validated name |
//! | [`lease`] | [`Lease`], [`LeaseTtl`], [`FencingToken`], [`Holder`] and the outcomes of lease operations |
//! | [`lease_store`] | [`LeaseStore`]: acquire, renew, release, read, list and force-release leases with LWTs |
//! | [`status`] | [`JobType`], [`JobState`], [`JobResult`], [`JobStatus`] and [`StatusEntry`] |
//! | [`stats`] | [`JobStats`]: attempts, endings, success rate, durations per job type |
//! | [`status_store`] | [`StatusStore`]: statuses written at quorum with retention, read newest first |
//! | [`firing_store`] | [`FiringStore`]: each cron firing claimed once cluster-wide |
//! | [`trigger_args`] | [`TriggerArgs`]: a trigger's parameters and JSON payload, and the limits on them |
//! | [`args_store`] | [`ArgsStore`]: what each trigger given parameters or a payload carries, read back by every attempt of it |
//! | [`scheduled_store`] | [`ScheduledStore`]: one-time triggers due at a given time, in hourly partitions, each claimed once |
//! | [`checkpoint_store`] | [`CheckpointStore`]: a trigger's progress, fenced by the newest attempt's token, read by the next attempt |
//! | [`request_store`] | [`RequestStore`]: triggers asked of the cluster, claimed once by a replica that runs the job |
//! | [`queue_store`] | [`QueueStore`]: triggers queued for a busy lock type, first in, first out, each claimed once |
//! | [`node_store`] | [`NodeStore`]: the registry of live replicas, rows with a TTL |
//! | [`watch_store`] | [`WatchStore`]: per replica, the attempts and claimed firings supervisors watch (a pass reads it, not every job type) |
//! | [`work_store`] | [`WorkStore`]: work items ([`WorkSet`], [`WorkKey`]) each processed exactly once: check-in, check-out, fail, check, list, purge |
//! | [`metrics`] | the metrics hajobs records (leases, attempts, supervisor, cron lag, triggers), named once |
//! | [`error`] | [`StoreError`], what went wrong talking to the cluster |
//!
//! ## Example
//!
//! ```no_run
//! use hajobs_core::{CassandraConfig, schema};
//!
//! # async fn run() -> Result<(), hajobs_core::StoreError> {
//! let config = CassandraConfig::from_contact_list("127.0.0.1:9042").with_keyspace("hajobs");
//! let session = config.connect().await?;
//! schema::apply(&session, &config.keyspace, &schema::Replication::default()).await?;
//! # Ok(()) }
//! ```

pub mod args_store;
pub mod cancel;
pub mod checkpoint_store;
pub mod config;
mod cql;
pub mod error;
pub mod firing_store;
pub mod ids;
pub mod lease;
pub mod lease_store;
pub mod lock_type;
pub mod lwt;
pub mod metrics;
pub mod node_store;
pub mod queue_store;
pub mod request_store;
pub mod scheduled_store;
pub mod schema;
pub mod secret;
pub mod stats;
pub mod status;
pub mod status_store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;
pub mod trigger_args;
pub mod watch_store;
pub mod work_store;

pub use args_store::{ArgsStore, StoredArgs};
pub use cancel::{CancelReason, Cancellation};
pub use checkpoint_store::{Checkpoint, CheckpointStore, Fenced};
pub use config::{CassandraConfig, Credentials};
pub use error::{InvalidInput, StoreError};
pub use firing_store::{Firing, FiringOutcome, FiringStore};
pub use ids::{JobId, NodeId, TriggerId};
pub use lease::{Acquired, FencingToken, Holder, Lease, LeaseTtl, Released, Renewed};
pub use lease_store::LeaseStore;
pub use lock_type::LockType;
pub use node_store::{NodeRecord, NodeStore};
pub use queue_store::{QueueEntry, QueueStore};
pub use request_store::{RequestOutcome, RequestStore, TriggerRequest};
pub use scheduled_store::{ScheduledStore, ScheduledTrigger};
pub use secret::Secret;
pub use stats::JobStats;
pub use status::{JobResult, JobState, JobStatus, JobType, StatusEntry};
pub use status_store::{MAX_ATTEMPT_STATUSES, StatusStore};
pub use tls::{ClientCert, TlsConfig, TlsSetupError};
pub use trigger_args::{Parent, TriggerArgs};
pub use watch_store::{WatchList, WatchStore, WriteClock};
pub use work_store::{CheckIn, ItemClaim, WorkItem, WorkKey, WorkSet, WorkState, WorkStore};
