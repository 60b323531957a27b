//! [`WorkItems`]: work processed exactly once, by whichever replica checks
//! it in first.
//!
//! "The nightly import" is a job; "order 4711" or "the file 2026-11-23.csv"
//! is a work item: every replica may see it, exactly one processes it,
//! nobody processes it again. [`WorkItems::checkin`] answers
//! [`CheckIn::Proceed`] with a [`WorkTicket`] to exactly one of any number
//! of racing callers. The ticket's lease is kept by the same lock keeper as
//! a job's (renewed every TTL/3, the ticket's cancellation fired when it is
//! lost or at its self-fencing deadline); its fencing token is the item's
//! own sequence. [`WorkItems::checkout`] stores the result;
//! [`WorkItems::fail`] frees the item for a retry; a worker that dies leaves
//! it in progress until its lease expires, then the next check-in takes it
//! over with the next token. [`WorkItems::process`] does all of it around
//! one async function, with an optional check-in timeout.
//!
//! ```no_run
//! use hajobs_core::{CassandraConfig, NodeId, WorkKey, WorkSet};
//! use hajobs_scheduler::work::{Processed, WorkItems, WorkOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = CassandraConfig::default();
//! let items = WorkItems::new(config.connect().await?, &config, NodeId::new("host-1")?, WorkOptions::default()).await?;
//! let orders = WorkSet::new("orders")?;
//! let outcome = items
//!     .process(&orders, &WorkKey::new("4711")?, None, |ticket| async move {
//!         // … ship order 4711, writing with ticket.fencing_token …
//!         Ok(serde_json::json!({ "shipped": true, "token": ticket.fencing_token.0 }))
//!     })
//!     .await?;
//! if let Processed::AlreadyDone(item) = outcome {
//!     println!("done before by {:?}", item.node);
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hajobs_core::work_store::{DEFAULT_WORK_RETENTION, ItemLease};
use hajobs_core::{
    Cancellation, CassandraConfig, CheckIn, FencingToken, ItemClaim, JobId, LeaseTtl, NodeId,
    StoreError, WorkItem, WorkKey, WorkSet, WorkStore,
};
use hajobs_lock_keeper::{KeeperConfig, KeptLease, keep_with};
use scylla::client::session::Session;
use serde_json::Value;

use crate::context::LeaseCheck;
use crate::error::ManagerError;
use crate::spec::DEFAULT_LEASE_TTL;

/// How work items are checked in.
#[derive(Debug, Clone, Copy)]
pub struct WorkOptions {
    /// The lease of a check-in: how long a dead worker keeps an item in
    /// progress (default 30 s).
    pub lease_ttl: LeaseTtl,
    /// How long items are remembered (default 14 days).
    pub retention: Duration,
}

impl Default for WorkOptions {
    fn default() -> Self {
        Self {
            lease_ttl: LeaseTtl::new(DEFAULT_LEASE_TTL).expect("the default TTL is valid"),
            retention: DEFAULT_WORK_RETENTION,
        }
    }
}

/// What a worker knows of the item it processes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkGrant {
    /// The work set.
    pub work_set: WorkSet,
    /// The item's key.
    pub key: WorkKey,
    /// This check-in's ticket.
    pub ticket: JobId,
    /// The item's fencing token: pass it to the systems the work writes to.
    pub fencing_token: FencingToken,
    /// Which check-in this is (1 for the first, more after failures and
    /// take-overs).
    pub attempt: u32,
    /// Fired when the lease is lost or reaches its self-fencing deadline.
    pub cancellation: Cancellation,
    lease_check: LeaseCheck,
}

impl WorkGrant {
    /// Whether the lease certainly still holds (not cancelled, before the
    /// keeper's deadline): check it before each externally visible step.
    pub fn lease_valid(&self) -> bool {
        self.lease_check.is_valid()
    }

    /// The lease as its keeper sees it, on every change: its deadline moves
    /// with each confirmed renewal (for a process that must stop at it).
    pub fn lease_updates(&self) -> tokio::sync::watch::Receiver<hajobs_lock_keeper::LeaseState> {
        self.lease_check.updates()
    }
}

/// A proceeding check-in: the item is this worker's until it checks out,
/// fails, or its lease is lost. Dropping it releases the item (the next
/// check-in takes it over).
#[derive(Debug)]
pub struct WorkTicket {
    grant: WorkGrant,
    claim: ItemClaim,
    kept: KeptLease,
}

impl WorkTicket {
    /// What the worker knows.
    pub fn grant(&self) -> &WorkGrant {
        &self.grant
    }
}

/// How [`WorkItems::process`] ended.
#[derive(Debug)]
pub enum Processed {
    /// Processed here and checked out with this result.
    Done(Value),
    /// Processed here and failed (recorded; the next check-in retries).
    Failed(String),
    /// The check-in timeout fired: the work was stopped and the item
    /// recorded failed with an error naming that timeout.
    TimedOut(Duration),
    /// The lease was lost while the work ran: stopped, nothing recorded
    /// (the item is someone else's now, or will be).
    LeaseLost,
    /// Processed before.
    AlreadyDone(WorkItem),
    /// Another worker has it.
    InProgress {
        /// The replica working on it.
        node: Option<String>,
    },
}

/// Work items of one replica.
#[derive(Debug, Clone)]
pub struct WorkItems {
    store: Arc<WorkStore>,
    node: NodeId,
    options: WorkOptions,
}

impl WorkItems {
    /// Prepares the statements on `session` for `config`'s keyspace.
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        node: NodeId,
        options: WorkOptions,
    ) -> Result<Self, ManagerError> {
        let store = Arc::new(WorkStore::new(session, config, options.retention).await?);
        Ok(Self {
            store,
            node,
            options,
        })
    }

    /// The store underneath (check, list, purge).
    pub fn store(&self) -> &Arc<WorkStore> {
        &self.store
    }

    /// Checks `key` of `work_set` in. Exactly one of any number of racing
    /// callers proceeds; its ticket's lease is kept from here on.
    pub async fn checkin(
        &self,
        work_set: &WorkSet,
        key: &WorkKey,
    ) -> Result<CheckIn<WorkTicket>, ManagerError> {
        let ttl = self.options.lease_ttl;
        Ok(
            match self.store.checkin(work_set, key, &self.node, ttl).await? {
                CheckIn::Proceed(claim) => {
                    let cancellation = Cancellation::new();
                    let renewer = Arc::new(ItemLease::new(self.store.clone(), claim.clone()));
                    let kept = match keep_with(
                        renewer,
                        claim.lease.clone(),
                        KeeperConfig::for_ttl(ttl),
                        cancellation.clone(),
                    )
                    .await
                    {
                        Ok(kept) => kept,
                        Err(e) => {
                            let _ = self.store.release(&claim).await;
                            return Err(StoreError::request(
                                format!("keeping the check-in of `{key}` of `{work_set}`"),
                                e,
                            )
                            .into());
                        }
                    };
                    let grant = WorkGrant {
                        work_set: claim.work_set.clone(),
                        key: claim.key.clone(),
                        ticket: claim.lease.job_id,
                        fencing_token: claim.lease.fencing_token,
                        attempt: claim.attempt,
                        lease_check: LeaseCheck::new(cancellation.clone(), kept.subscribe()),
                        cancellation,
                    };
                    CheckIn::Proceed(WorkTicket { grant, claim, kept })
                }
                CheckIn::AlreadyDone(item) => CheckIn::AlreadyDone(item),
                CheckIn::InProgress { node, since, until } => {
                    CheckIn::InProgress { node, since, until }
                }
            },
        )
    }

    /// Stores `result`: the item is done for good. Refused with
    /// [`ManagerError::StaleTicket`] when the ticket no longer holds the
    /// item (its lease expired and another worker took it over).
    pub async fn checkout(&self, ticket: WorkTicket, result: Value) -> Result<(), ManagerError> {
        let WorkTicket { claim, kept, .. } = ticket;
        // Renewals stop first, so that none races the check-out.
        let _ = kept.stop().await;
        if self.store.checkout(&claim, &result).await? {
            Ok(())
        } else {
            Err(stale(&claim))
        }
    }

    /// Records `error` and frees the item: the next check-in retries it
    /// (attempt + 1, next fencing token). Refused like
    /// [`WorkItems::checkout`] for a stale ticket.
    pub async fn fail(&self, ticket: WorkTicket, error: &str) -> Result<(), ManagerError> {
        let WorkTicket { claim, kept, .. } = ticket;
        let _ = kept.stop().await;
        if self.store.fail(&claim, error).await? {
            Ok(())
        } else {
            Err(stale(&claim))
        }
    }

    /// The item, without taking it (read at SERIAL).
    pub async fn check(
        &self,
        work_set: &WorkSet,
        key: &WorkKey,
    ) -> Result<Option<WorkItem>, ManagerError> {
        Ok(self.store.read(work_set, key, true).await?)
    }

    /// Checks the item in and, if this replica proceeds, runs `work` with
    /// its grant: `Ok(result)` checks it out, `Err(error)` fails it. With
    /// `timeout`, work running longer is stopped and the item failed with
    /// an error naming the check-in timeout. Work whose lease is lost is
    /// stopped (its future dropped) and nothing is recorded.
    pub async fn process<F, Fut>(
        &self,
        work_set: &WorkSet,
        key: &WorkKey,
        timeout: Option<Duration>,
        work: F,
    ) -> Result<Processed, ManagerError>
    where
        F: FnOnce(WorkGrant) -> Fut,
        Fut: Future<Output = Result<Value, String>>,
    {
        let ticket = match self.checkin(work_set, key).await? {
            CheckIn::Proceed(ticket) => ticket,
            CheckIn::AlreadyDone(item) => return Ok(Processed::AlreadyDone(item)),
            CheckIn::InProgress { node, .. } => return Ok(Processed::InProgress { node }),
        };
        let grant = ticket.grant.clone();
        let timed_out = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = grant.cancellation.cancelled() => {
                tracing::warn!(%work_set, %key, ticket = %grant.ticket, "work item lease lost; work stopped");
                Ok(Processed::LeaseLost)
            }
            () = timed_out => {
                let t = timeout.unwrap_or_default();
                let error = format!("checkin_timeout: the check-in timeout of {t:?} fired; the work was stopped");
                self.fail(ticket, &error).await?;
                Ok(Processed::TimedOut(t))
            }
            outcome = work(grant.clone()) => match outcome {
                Ok(result) => {
                    self.checkout(ticket, result.clone()).await?;
                    Ok(Processed::Done(result))
                }
                Err(error) => {
                    self.fail(ticket, &error).await?;
                    Ok(Processed::Failed(error))
                }
            },
        }
    }
}

fn stale(claim: &ItemClaim) -> ManagerError {
    ManagerError::StaleTicket {
        work_set: claim.work_set.to_string(),
        key: claim.key.to_string(),
        ticket: claim.lease.job_id,
    }
}
