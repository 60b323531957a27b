//! [`LeaseStore`]: leases in the `lock` table through lightweight transactions.
//!
//! Every decision is a Paxos round in Cassandra (LOCAL_SERIAL by default,
//! SERIAL when configured); TTLs are counted by the server; statements are
//! prepared once. See `docs/leases.md` for the protocol and its argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId};
use crate::lease::{Acquired, FencingToken, Holder, Lease, LeaseTtl, Released, Renewed};
use crate::lock_type::LockType;
use crate::lwt::{LwtOutcome, Settled, settle};

/// How often an acquisition retries when only its cached fencing token was
/// stale (another replica acquired and released meanwhile).
const STALE_TOKEN_RETRIES: usize = 5;

/// What keeps a held lease alive: the lock keeper renews and releases
/// through it. [`LeaseStore`] is the one for locks; a work item's check-in
/// ([`WorkStore`](crate::work_store::WorkStore)) is another, so that both
/// are kept by the same keeper, with the same self-fencing deadline.
pub trait LeaseRenewer: Send + Sync + 'static {
    /// Extends `lease` by its TTL if it is still held; see [`LeaseStore::renew`].
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Renewed, StoreError>>;
    /// Extends `lease` while its job stops after a cancel request.
    fn renew_while_stopping<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<Renewed, StoreError>> {
        self.renew(lease)
    }
    /// Gives `lease` up.
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Released, StoreError>>;
}

impl LeaseRenewer for LeaseStore {
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Renewed, StoreError>> {
        Box::pin(LeaseStore::renew(self, lease))
    }
    fn renew_while_stopping<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<Renewed, StoreError>> {
        Box::pin(LeaseStore::renew_while_stopping(self, lease))
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Released, StoreError>> {
        Box::pin(LeaseStore::release(self, lease))
    }
}

/// Leases on Cassandra or ScyllaDB. Cheap to share behind an `Arc`.
pub struct LeaseStore {
    session: Arc<Session>,
    acquire: Batch,
    /// Renews unless a cancel was requested.
    renew: PreparedStatement,
    /// Renews whatever was requested: while a cancelled job winds down.
    renew_stopping: PreparedStatement,
    request_cancel: PreparedStatement,
    release: PreparedStatement,
    /// The SERIAL read that settles an LWT whose outcome is unknown.
    read_serial: PreparedStatement,
    read_quorum: PreparedStatement,
    list: PreparedStatement,
    expires_in: PreparedStatement,
    /// The last fencing token seen per lock type. Only a guess that saves a
    /// round trip: the acquiring LWT checks it, and a wrong guess costs one
    /// retry with the value Cassandra sent back.
    tokens: Mutex<HashMap<LockType, Option<i64>>>,
}

impl LeaseStore {
    /// Prepares the statements on `session` for `config.keyspace`, with the
    /// consistency levels of `config`.
    pub async fn new(session: Arc<Session>, config: &CassandraConfig) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move { cql::prepare(&session, text, config.consistency, config).await }
        };
        // Acquire: one conditional batch on the lock's partition. The lease
        // cells carry the TTL; the token cell has none and so never expires.
        let mut acquire = Batch::new(BatchType::Logged);
        acquire.append_statement(BatchStatement::Query(
            scylla::statement::unprepared::Statement::new(format!(
                "UPDATE {ks}.lock USING TTL ? SET job_lock = ?, owner = ?, acquired_at = ?, cancel_requested = null \
             WHERE lock_type = ? IF job_lock = null AND fencing_token = ?"
            )),
        ));
        acquire.append_statement(BatchStatement::Query(
            scylla::statement::unprepared::Statement::new(format!(
                "UPDATE {ks}.lock SET fencing_token = ? WHERE lock_type = ?"
            )),
        ));
        let mut acquire = session
            .prepare_batch(&acquire)
            .await
            .map_err(|e| StoreError::request("preparing the acquire batch", e))?;
        acquire.set_consistency(config.consistency);
        acquire.set_serial_consistency(Some(config.serial_consistency));

        let renew_cql = format!(
            "UPDATE {ks}.lock USING TTL ? SET job_lock = ?, owner = ?, acquired_at = ? \
             WHERE lock_type = ? IF job_lock = ?"
        );
        let renew = prepare(format!("{renew_cql} AND cancel_requested = null")).await?;
        let renew_stopping = prepare(renew_cql).await?;
        let release = prepare(format!(
            "DELETE job_lock, owner, acquired_at, cancel_requested FROM {ks}.lock WHERE lock_type = ? IF job_lock = ?"
        ))
        .await?;
        let request_cancel = prepare(format!(
            "UPDATE {ks}.lock SET cancel_requested = true WHERE lock_type = ? IF job_lock = ?"
        ))
        .await?;
        let select =
            format!("SELECT lock_type, job_lock, owner, acquired_at, fencing_token FROM {ks}.lock");
        let mut read_serial = prepare(format!("{select} WHERE lock_type = ?")).await?;
        read_serial.set_consistency(cql::serial_read(config));
        let read_quorum = prepare(format!("{select} WHERE lock_type = ?")).await?;
        let list = prepare(select).await?;
        let expires_in = prepare(format!(
            "SELECT TTL(job_lock) AS left_secs FROM {ks}.lock WHERE lock_type = ?"
        ))
        .await?;
        Ok(Self {
            expires_in,
            session,
            acquire,
            renew,
            renew_stopping,
            release,
            request_cancel,
            read_serial,
            read_quorum,
            list,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn cached_token(&self, lock_type: &LockType) -> Option<i64> {
        self.tokens
            .lock()
            .expect("token cache poisoned")
            .get(lock_type)
            .copied()
            .flatten()
    }

    fn remember_token(&self, lock_type: &LockType, token: Option<i64>) {
        self.tokens
            .lock()
            .expect("token cache poisoned")
            .insert(lock_type.clone(), token);
    }

    /// Tries to take `lock_type` for `job_id` on `owner` for `ttl`.
    ///
    /// Returns the [`Lease`] with a fresh fencing token, or who holds the
    /// lock. An LWT whose outcome is unknown (a timeout) is settled with a
    /// SERIAL read: the lease is ours only if that read shows it.
    pub async fn acquire(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        owner: &NodeId,
        ttl: LeaseTtl,
    ) -> Result<Acquired, StoreError> {
        let started = Instant::now();
        let result = self.acquire_once(lock_type, job_id, owner, ttl).await;
        crate::metrics::lease_acquire(
            started.elapsed(),
            match &result {
                Ok(Acquired::Acquired(_)) => "acquired",
                Ok(Acquired::Held(_)) => "locked",
                Err(_) => "error",
            },
        );
        result
    }

    async fn acquire_once(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        owner: &NodeId,
        ttl: LeaseTtl,
    ) -> Result<Acquired, StoreError> {
        let what = || format!("acquiring lock type `{lock_type}` for job {job_id}");
        let mut expected = self.cached_token(lock_type);
        for _ in 0..STALE_TOKEN_RETRIES {
            let next = expected.unwrap_or(0) + 1;
            let sent_at = Instant::now();
            let values = (
                (
                    ttl.cql_secs(),
                    CqlTimeuuid::from(job_id.uuid()),
                    owner.as_str(),
                    cql::to_timestamp(SystemTime::now()),
                    lock_type.as_str(),
                    expected,
                ),
                (next, lock_type.as_str()),
            );
            let outcome = match self.session.batch(&self.acquire, values).await {
                Ok(result) => LwtOutcome::from_result(result, &what())?,
                Err(error) => {
                    // Ours only if the SERIAL read shows our job id.
                    return settle(what, error, self.read(lock_type, true), |holder| {
                        Ok(match holder {
                            Some(h) if h.job_id == job_id => {
                                let token = h.fencing_token.ok_or_else(|| {
                                    corrupt(lock_type, "held lock without fencing_token")
                                })?;
                                self.remember_token(lock_type, Some(token.0));
                                Settled::Known(Acquired::Acquired(Lease {
                                    lock_type: lock_type.clone(),
                                    job_id,
                                    owner: owner.clone(),
                                    ttl,
                                    fencing_token: token,
                                    sent_at,
                                }))
                            }
                            Some(h) => Settled::Known(Acquired::Held(h)),
                            // Free: it did not apply, or applied and expired.
                            None => Settled::Unknown,
                        })
                    })
                    .await;
                }
            };
            if outcome.applied {
                self.remember_token(lock_type, Some(next));
                return Ok(Acquired::Acquired(Lease {
                    lock_type: lock_type.clone(),
                    job_id,
                    owner: owner.clone(),
                    ttl,
                    fencing_token: FencingToken(next),
                    sent_at,
                }));
            }
            // Not applied: Cassandra sent back the current job_lock and token.
            let current_token = match outcome.get("fencing_token") {
                None => None,
                Some(CqlValue::BigInt(t)) => Some(*t),
                Some(other) => {
                    return Err(corrupt(lock_type, &format!("fencing_token is {other:?}")));
                }
            };
            self.remember_token(lock_type, current_token);
            match outcome.get("job_lock") {
                None => {
                    // Free, but our token guess was stale: retry with the real one.
                    expected = current_token;
                    continue;
                }
                Some(CqlValue::Timeuuid(holder)) => {
                    let holder_job = JobId::from_uuid((*holder).into());
                    return Ok(Acquired::Held(
                        self.describe_holder(lock_type, holder_job, current_token, &outcome)
                            .await,
                    ));
                }
                Some(other) => return Err(corrupt(lock_type, &format!("job_lock is {other:?}"))),
            }
        }
        Err(StoreError::request(
            what(),
            format!(
                "the fencing token kept changing under {STALE_TOKEN_RETRIES} attempts (heavy contention)"
            ),
        ))
    }

    /// Fills in owner and since of a holder seen in a rejected LWT: ScyllaDB
    /// returns the whole row, Cassandra only the conditioned columns, in which
    /// case one LOCAL_QUORUM read adds them (informational only).
    async fn describe_holder(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        token: Option<i64>,
        outcome: &LwtOutcome,
    ) -> Holder {
        let mut holder = Holder {
            lock_type: lock_type.clone(),
            job_id,
            owner: None,
            since: None,
            fencing_token: token.map(FencingToken),
        };
        if outcome.has("owner") {
            holder.owner = match outcome.get("owner") {
                Some(CqlValue::Text(o)) => Some(o.clone()),
                _ => None,
            };
            holder.since = match outcome.get("acquired_at") {
                Some(CqlValue::Timestamp(t)) => Some(cql::from_timestamp(*t)),
                _ => None,
            };
            return holder;
        }
        if let Ok(Some(read)) = self.read(lock_type, false).await {
            if read.job_id == job_id {
                holder.owner = read.owner;
                holder.since = read.since;
            }
        }
        holder
    }

    /// Extends `lease` by its TTL, if it is still held by its job and no
    /// cancel was requested ([`Renewed::CancelRequested`] then; the holder
    /// stops its job and keeps the lease with
    /// [`LeaseStore::renew_while_stopping`] until it has released it).
    ///
    /// An error means the outcome is unknown *and* could not be settled; the
    /// caller must treat the lease as at risk (the lock keeper counts its
    /// deadline from the last confirmed renewal).
    pub async fn renew(&self, lease: &Lease) -> Result<Renewed, StoreError> {
        self.renew_measured(&self.renew, lease).await
    }

    /// Extends `lease` by its TTL if it is still held by its job, whether or
    /// not a cancel was requested.
    pub async fn renew_while_stopping(&self, lease: &Lease) -> Result<Renewed, StoreError> {
        self.renew_measured(&self.renew_stopping, lease).await
    }

    async fn renew_measured(
        &self,
        statement: &PreparedStatement,
        lease: &Lease,
    ) -> Result<Renewed, StoreError> {
        let started = Instant::now();
        let result = self.renew_with(statement, lease).await;
        crate::metrics::lease_renew(
            started.elapsed(),
            match &result {
                Ok(Renewed::Renewed { .. }) => "renewed",
                Ok(Renewed::CancelRequested) => "cancel_requested",
                Ok(Renewed::Lost) => "lost",
                Err(_) => "error",
            },
        );
        result
    }

    async fn renew_with(
        &self,
        statement: &PreparedStatement,
        lease: &Lease,
    ) -> Result<Renewed, StoreError> {
        let sent_at = Instant::now();
        let values = (
            lease.ttl.cql_secs(),
            CqlTimeuuid::from(lease.job_id.uuid()),
            lease.owner.as_str(),
            cql::to_timestamp(SystemTime::now()),
            lease.lock_type.as_str(),
            CqlTimeuuid::from(lease.job_id.uuid()),
        );
        match self.session.execute_unpaged(statement, values).await {
            Ok(result) => {
                let outcome = LwtOutcome::from_result(result, "renewing a lease")?;
                let ours = matches!(outcome.get("job_lock"), Some(CqlValue::Timeuuid(u)) if uuid::Uuid::from(*u) == lease.job_id.uuid());
                Ok(if outcome.applied {
                    Renewed::Renewed { sent_at }
                } else if ours && outcome.get("cancel_requested") == Some(&CqlValue::Boolean(true))
                {
                    Renewed::CancelRequested
                } else {
                    Renewed::Lost
                })
            }
            Err(error) => {
                // Even if the SERIAL read shows our job id, we cannot tell
                // whether our renewal or an earlier one wrote it, so the
                // renewal is not confirmed: the error, and the keeper counts
                // from the last confirmed one. Only a read that shows the
                // lease gone turns this into a definite loss.
                let what = || format!("renewing lease on `{}`", lease.lock_type);
                settle(what, error, self.read(&lease.lock_type, true), |h| {
                    Ok(match h {
                        Some(h) if h.job_id == lease.job_id => Settled::Unknown,
                        _ => Settled::Known(Renewed::Lost),
                    })
                })
                .await
            }
        }
    }

    /// Asks the holder `job_id` of `lock_type` to stop: its next renewal is
    /// refused with [`Renewed::CancelRequested`]. `false` when `job_id` does
    /// not hold the lock (any more).
    pub async fn request_cancel(
        &self,
        lock_type: &LockType,
        job_id: JobId,
    ) -> Result<bool, StoreError> {
        let what = || format!("requesting the cancel of job {job_id} holding `{lock_type}`");
        let result = self
            .session
            .execute_unpaged(
                &self.request_cancel,
                (lock_type.as_str(), CqlTimeuuid::from(job_id.uuid())),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }

    /// Gives the lease up. A lease already gone is [`Released::NotHolder`].
    pub async fn release(&self, lease: &Lease) -> Result<Released, StoreError> {
        let started = Instant::now();
        let result = self.release_holder(&lease.lock_type, lease.job_id).await;
        crate::metrics::lease_release(
            started.elapsed(),
            match &result {
                Ok(Released::Released) => "released",
                Ok(Released::NotHolder) => "not_holder",
                Err(_) => "error",
            },
        );
        result
    }

    /// Releases `lock_type` if `job_id` still holds it: the conditional half
    /// of a forced release, for a caller that already knows the holder.
    pub async fn release_holder(
        &self,
        lock_type: &LockType,
        job_id: JobId,
    ) -> Result<Released, StoreError> {
        let what = || format!("releasing lock type `{lock_type}` held by job {job_id}");
        let result = self
            .session
            .execute_unpaged(
                &self.release,
                (lock_type.as_str(), CqlTimeuuid::from(job_id.uuid())),
            )
            .await;
        match result {
            Ok(result) => Ok(if LwtOutcome::from_result(result, &what())?.applied {
                Released::Released
            } else {
                Released::NotHolder
            }),
            Err(error) => {
                settle(what, error, self.read(lock_type, true), |h| {
                    Ok(match h {
                        Some(h) if h.job_id == job_id => Settled::Unknown,
                        _ => Settled::Known(Released::Released),
                    })
                })
                .await
            }
        }
    }

    /// An operator's forced release: frees the lock whoever holds it, and
    /// returns who did. The holder's lock keeper sees its next renewal
    /// rejected and cancels its job. `None` when the lock was free.
    pub async fn force_release(&self, lock_type: &LockType) -> Result<Option<Holder>, StoreError> {
        // Conditional on the holder we read, so that a lease taken in between
        // by someone else is not broken by a stale decision.
        for _ in 0..STALE_TOKEN_RETRIES {
            let Some(holder) = self.read(lock_type, true).await? else {
                return Ok(None);
            };
            if self.release_holder(lock_type, holder.job_id).await? == Released::Released {
                tracing::warn!(%lock_type, job_id = %holder.job_id, owner = ?holder.owner, "lock released by force");
                return Ok(Some(holder));
            }
        }
        Err(StoreError::request(
            format!("force-releasing lock type `{lock_type}`"),
            "the holder kept changing",
        ))
    }

    /// Who holds `lock_type` now, read at SERIAL (`serial = true`, which also
    /// completes any Paxos round in flight) or LOCAL_QUORUM.
    pub async fn read(
        &self,
        lock_type: &LockType,
        serial: bool,
    ) -> Result<Option<Holder>, StoreError> {
        let statement = if serial {
            &self.read_serial
        } else {
            &self.read_quorum
        };
        let rows: Vec<LockRow> = cql::rows(
            self.session
                .execute_unpaged(statement, (lock_type.as_str(),))
                .await,
            &format!("reading lock type `{lock_type}`"),
        )?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some(row) => row.holder(),
        }
    }

    /// How long the lease on `lock_type` has left unless renewed (whole
    /// seconds, as the node keeps its TTL), or `None` when it is free: a
    /// plain read, for a replica that waits for a lock to become free.
    pub async fn expires_in(&self, lock_type: &LockType) -> Result<Option<Duration>, StoreError> {
        #[derive(scylla::DeserializeRow)]
        struct Left {
            left_secs: Option<i32>,
        }
        let rows: Vec<Left> = cql::rows(
            self.session
                .execute_unpaged(&self.expires_in, (lock_type.as_str(),))
                .await,
            &format!("reading when lock type `{lock_type}` expires"),
        )?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.left_secs)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
    }

    /// Every lock currently held.
    pub async fn list(&self) -> Result<Vec<Holder>, StoreError> {
        let rows: Vec<LockRow> = cql::rows(
            self.session.execute_unpaged(&self.list, ()).await,
            "listing locks",
        )?;
        let mut holders = Vec::new();
        for row in rows {
            if let Some(h) = row.holder()? {
                holders.push(h);
            }
        }
        holders.sort_by(|a, b| a.lock_type.cmp(&b.lock_type));
        Ok(holders)
    }
}

impl std::fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore").finish_non_exhaustive()
    }
}

/// A row of `lock`, decoded by column name.
#[derive(scylla::DeserializeRow)]
struct LockRow {
    lock_type: String,
    job_lock: Option<CqlTimeuuid>,
    owner: Option<String>,
    acquired_at: Option<CqlTimestamp>,
    fencing_token: Option<i64>,
}

impl LockRow {
    /// Who holds the lock; a row with no `job_lock` is a free lock (`None`).
    fn holder(self) -> Result<Option<Holder>, StoreError> {
        let Some(job_lock) = self.job_lock else {
            return Ok(None);
        };
        let lock_type =
            LockType::new(self.lock_type.clone()).map_err(|e| StoreError::CorruptRow {
                table: "lock",
                key: format!("lock_type={:?}", self.lock_type),
                problem: e.to_string(),
            })?;
        Ok(Some(Holder {
            lock_type,
            job_id: JobId::from_uuid(job_lock.into()),
            owner: self.owner,
            since: self.acquired_at.map(cql::from_timestamp),
            fencing_token: self.fencing_token.map(FencingToken),
        }))
    }
}

fn corrupt(lock_type: &LockType, problem: &str) -> StoreError {
    StoreError::CorruptRow {
        table: "lock",
        key: format!("lock_type={:?}", lock_type.as_str()),
        problem: problem.to_owned(),
    }
}
