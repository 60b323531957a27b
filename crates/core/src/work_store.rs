//! [`WorkStore`]: work items, each processed exactly once cluster-wide.
//!
//! A work item is one piece of work named by a [`WorkSet`] and a
//! [`WorkKey`] ("orders", "4711"). [`WorkStore::checkin`] lets exactly one
//! of any number of racing callers [`CheckIn::Proceed`]: a lightweight
//! transaction (`INSERT … IF NOT EXISTS`, or a take-over conditional on the
//! row as read) on the item's own partition. The proceeding caller holds a
//! [`Lease`] on the item — the `holder` cell, written with the lease TTL and
//! renewed by the lock keeper through [`ItemLease`] — and a fencing token of
//! the item's own sequence (1, then +1 for each later check-in). Then:
//!
//! - [`WorkStore::checkout`] stores the result: the item is done, and every
//!   later check-in answers [`CheckIn::AlreadyDone`];
//! - [`WorkStore::fail`] records the error and frees the item for a retry;
//! - a worker that dies stops renewing: once its `holder` cell expires the
//!   next check-in takes the item over with the next fencing token. Until
//!   then check-ins answer [`CheckIn::InProgress`].
//!
//! Only the holder can check out or fail (the transaction is conditional on
//! its ticket), so a worker whose lease expired and was taken over is
//! refused. Items are remembered for the retention (14 days by default),
//! then forgotten: a check-in after that processes the key anew.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlTimeuuid, CqlValue, Row};
use serde_json::Value;

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId, name_type};
use crate::lease::{FencingToken, Lease, LeaseTtl, Released, Renewed};
use crate::lease_store::LeaseRenewer;
use crate::lock_type::LockType;
use crate::lwt::{LwtOutcome, Settled, settle};

name_type!(
    /// A named set of work items ("orders", "daily-files"): the first half
    /// of a work item's name.
    WorkSet,
    "work set"
);

name_type!(
    /// The key of a work item within its [`WorkSet`] ("4711",
    /// "2026-11-23.csv").
    WorkKey,
    "work key"
);

/// How long work items are remembered by default.
pub const DEFAULT_WORK_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often a check-in retries when the row changed between its read and
/// its transaction.
const CHECKIN_RETRIES: usize = 8;
/// How many items a listing reads at once.
const LIST_CONCURRENCY: usize = 16;

/// Where a work item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkState {
    /// Checked in: a worker has it, or had it until its lease expired.
    InProgress,
    /// Checked out with a result: never processed again.
    Done,
    /// The last worker failed: the next check-in retries it.
    Failed,
}

impl WorkState {
    /// The name stored in the `state` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "IN_PROGRESS" => Some(Self::InProgress),
            "DONE" => Some(Self::Done),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for WorkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A work item as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkItem {
    /// Its work set.
    pub work_set: WorkSet,
    /// Its key.
    pub key: WorkKey,
    /// Where it stands.
    pub state: WorkState,
    /// The ticket of the worker holding it now (`None` once its lease
    /// expired or it was checked out or failed).
    pub holder: Option<JobId>,
    /// The replica that checked it in last.
    pub node: Option<String>,
    /// The fencing token of the last check-in.
    pub fencing_token: FencingToken,
    /// Check-ins so far.
    pub attempts: u32,
    /// The first check-in.
    pub created_at: Option<SystemTime>,
    /// The last check-in.
    pub since: Option<SystemTime>,
    /// Until when the holder's lease runs, as it last said (its clock).
    pub lease_until: Option<SystemTime>,
    /// When it was checked out or failed.
    pub ended_at: Option<SystemTime>,
    /// The result given at check-out.
    pub result: Option<Value>,
    /// The last failure (and which timeout fired, if one did).
    pub error: Option<String>,
}

/// The answer of a check-in.
#[derive(Debug)]
pub enum CheckIn<T> {
    /// This caller processes the item.
    Proceed(T),
    /// The item was processed already.
    AlreadyDone(WorkItem),
    /// Another worker has it.
    InProgress {
        /// The replica working on it.
        node: Option<String>,
        /// Since when.
        since: Option<SystemTime>,
        /// Until when its lease runs unless renewed (its clock).
        until: Option<SystemTime>,
    },
}

/// What a proceeding check-in holds: the item's lease (its `job_id` is the
/// ticket, its lock type names the work set) and which attempt this is.
#[derive(Debug, Clone)]
pub struct ItemClaim {
    /// The work set.
    pub work_set: WorkSet,
    /// The key.
    pub key: WorkKey,
    /// The lease on the item.
    pub lease: Lease,
    /// Which check-in this is (1 for the first).
    pub attempt: u32,
}

/// Work items in the `work_item` table (schema 11).
pub struct WorkStore {
    session: Arc<Session>,
    retention: Duration,
    first: Batch,
    take_over: Batch,
    renew: PreparedStatement,
    release: PreparedStatement,
    end: PreparedStatement,
    read_serial: PreparedStatement,
    read_quorum: PreparedStatement,
    index: PreparedStatement,
    list_day: PreparedStatement,
    unindex: PreparedStatement,
    purge: PreparedStatement,
}

impl std::fmt::Debug for WorkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkStore")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// The columns every read of an item selects, in this order.
const COLUMNS: &str = "state, holder, node, fencing_token, attempts, created_at, since, lease_until, ended_at, result, error";

impl WorkStore {
    /// Prepares the statements; items are remembered for `retention`
    /// (whole seconds, at least one).
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move { cql::prepare(&session, text, config.consistency, config).await }
        };
        let batch = |conditional: String, lease: String| {
            let session = session.clone();
            async move {
                let mut b = Batch::new(BatchType::Logged);
                b.append_statement(BatchStatement::Query(Statement::new(conditional)));
                b.append_statement(BatchStatement::Query(Statement::new(lease)));
                let mut b = session
                    .prepare_batch(&b)
                    .await
                    .map_err(|e| StoreError::request("preparing a work item batch", e))?;
                b.set_consistency(config.consistency);
                b.set_serial_consistency(Some(config.serial_consistency));
                Ok::<_, StoreError>(b)
            }
        };
        let key = "WHERE work_set = ? AND item_key = ?";
        // The lease half of a check-in: the holder cell lives for the TTL.
        let lease_cells =
            format!("UPDATE {ks}.work_item USING TTL ? SET holder = ?, lease_until = ? {key}");
        let first = batch(
            format!(
                "INSERT INTO {ks}.work_item (work_set, item_key, state, node, fencing_token, attempts, created_at, since) \
                 VALUES (?, ?, 'IN_PROGRESS', ?, 1, 1, ?, ?) IF NOT EXISTS USING TTL ?"
            ),
            lease_cells.clone(),
        )
        .await?;
        let take_over = batch(
            format!(
                "UPDATE {ks}.work_item USING TTL ? SET state = 'IN_PROGRESS', node = ?, fencing_token = ?, attempts = ?, \
                 created_at = ?, since = ?, ended_at = null {key} IF holder = null AND state = ? AND fencing_token = ?"
            ),
            lease_cells,
        )
        .await?;
        let mut read_serial =
            prepare(format!("SELECT {COLUMNS} FROM {ks}.work_item {key}")).await?;
        read_serial.set_consistency(cql::serial_read(config));
        Ok(Self {
            renew: prepare(format!(
                "UPDATE {ks}.work_item USING TTL ? SET holder = ?, lease_until = ? {key} IF holder = ?"
            ))
            .await?,
            release: prepare(format!(
                "UPDATE {ks}.work_item USING TTL ? SET holder = null, lease_until = null, error = ? {key} IF holder = ?"
            ))
            .await?,
            end: prepare(format!(
                "UPDATE {ks}.work_item USING TTL ? SET state = ?, result = ?, error = ?, ended_at = ?, holder = null, lease_until = null \
                 {key} IF holder = ?"
            ))
            .await?,
            read_serial,
            read_quorum: prepare(format!("SELECT {COLUMNS} FROM {ks}.work_item {key}")).await?,
            index: prepare(format!(
                "INSERT INTO {ks}.work_item_day (work_set, day, item_key) VALUES (?, ?, ?) USING TTL ?"
            ))
            .await?,
            list_day: prepare(format!(
                "SELECT item_key FROM {ks}.work_item_day WHERE work_set = ? AND day = ?"
            ))
            .await?,
            unindex: prepare(format!(
                "DELETE FROM {ks}.work_item_day WHERE work_set = ? AND day = ? AND item_key = ?"
            ))
            .await?,
            purge: prepare(format!(
                "DELETE FROM {ks}.work_item {key} IF state = ? AND holder = null"
            ))
            .await?,
            session,
            retention: retention.max(Duration::from_secs(1)),
            first,
            take_over,
        })
    }

    /// How long items are remembered.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn retention_secs(&self) -> i32 {
        self.retention.as_secs().min(i32::MAX as u64) as i32
    }

    /// Checks `key` of `work_set` in for `owner`, with a lease of `ttl`.
    /// Among any number of racing callers exactly one gets
    /// [`CheckIn::Proceed`]; the others learn that it is done or in
    /// progress. An item whose holder's lease expired, or whose last worker
    /// failed, is taken over with the next fencing token.
    pub async fn checkin(
        &self,
        work_set: &WorkSet,
        key: &WorkKey,
        owner: &NodeId,
        ttl: LeaseTtl,
    ) -> Result<CheckIn<ItemClaim>, StoreError> {
        let what = || format!("checking in work item `{key}` of `{work_set}`");
        let mut known: Option<WorkItem> = None;
        for _ in 0..CHECKIN_RETRIES {
            let ticket = JobId::new();
            let now = SystemTime::now();
            let until = cql::to_timestamp(now + ttl.duration());
            let lease_values = (
                ttl.cql_secs(),
                CqlTimeuuid::from(ticket.uuid()),
                until,
                work_set.as_str(),
                key.as_str(),
            );
            let sent_at = Instant::now();
            let (next_token, attempt, created_at, result) = match &known {
                None => {
                    let values = (
                        (
                            work_set.as_str(),
                            key.as_str(),
                            owner.as_str(),
                            cql::to_timestamp(now),
                            cql::to_timestamp(now),
                            self.retention_secs(),
                        ),
                        lease_values,
                    );
                    (1, 1, now, self.session.batch(&self.first, values).await)
                }
                Some(item) => {
                    match item.state {
                        WorkState::Done => return Ok(CheckIn::AlreadyDone(item.clone())),
                        _ if item.holder.is_some() => {
                            return Ok(CheckIn::InProgress {
                                node: item.node.clone(),
                                since: item.since,
                                until: item.lease_until,
                            });
                        }
                        WorkState::InProgress | WorkState::Failed => {}
                    }
                    let next = item.fencing_token.0 + 1;
                    let attempt = item.attempts + 1;
                    let created_at = item.created_at.unwrap_or(now);
                    let values = (
                        (
                            self.retention_secs(),
                            owner.as_str(),
                            next,
                            attempt as i32,
                            cql::to_timestamp(created_at),
                            cql::to_timestamp(now),
                            work_set.as_str(),
                            key.as_str(),
                            item.state.as_str(),
                            item.fencing_token.0,
                        ),
                        lease_values,
                    );
                    (
                        next,
                        attempt,
                        created_at,
                        self.session.batch(&self.take_over, values).await,
                    )
                }
            };
            match result {
                Ok(result) => {
                    let outcome = LwtOutcome::from_result(result, &what())?;
                    if !outcome.applied {
                        known = if outcome.has("state") {
                            item_from_columns(work_set, key, &outcome.columns)?
                        } else {
                            self.read(work_set, key, true).await?
                        };
                        continue;
                    }
                }
                Err(error) => {
                    // Ours only if the SERIAL read shows our ticket; else
                    // the row read is where the next try starts.
                    let row = settle(what, error, self.read(work_set, key, true), |row| {
                        Ok(Settled::Known(row))
                    })
                    .await?;
                    if row.as_ref().and_then(|r| r.holder) != Some(ticket) {
                        known = row;
                        continue;
                    }
                }
            }
            crate::metrics::work_checkin(work_set.as_str(), "proceed");
            self.index(work_set, key, created_at).await;
            return Ok(CheckIn::Proceed(ItemClaim {
                work_set: work_set.clone(),
                key: key.clone(),
                lease: Lease {
                    lock_type: LockType::new(work_set.as_str())
                        .expect("a work set is a valid lock type name"),
                    job_id: ticket,
                    owner: owner.clone(),
                    ttl,
                    fencing_token: FencingToken(next_token),
                    sent_at,
                },
                attempt,
            }));
        }
        Err(StoreError::request(
            what(),
            "the item kept changing under the check-in",
        ))
    }

    /// Names the item in its work set's listing (by the day of its first
    /// check-in). A failure only leaves it out of `list` and `purge`.
    async fn index(&self, work_set: &WorkSet, key: &WorkKey, created_at: SystemTime) {
        let values = (
            work_set.as_str(),
            day_of(created_at),
            key.as_str(),
            self.retention_secs(),
        );
        if let Err(e) = self.session.execute_unpaged(&self.index, values).await {
            tracing::warn!(%work_set, %key, error = %e, "work item not indexed: `list` and `purge` miss it");
        }
    }

    /// Renews the lease of a proceeding check-in (see [`ItemLease`]).
    pub async fn renew(&self, claim: &ItemClaim) -> Result<Renewed, StoreError> {
        let lease = &claim.lease;
        let sent_at = Instant::now();
        let ticket = CqlTimeuuid::from(lease.job_id.uuid());
        let values = (
            lease.ttl.cql_secs(),
            ticket,
            cql::to_timestamp(SystemTime::now() + lease.ttl.duration()),
            claim.work_set.as_str(),
            claim.key.as_str(),
            ticket,
        );
        match self.session.execute_unpaged(&self.renew, values).await {
            Ok(result) => Ok(
                if LwtOutcome::from_result(result, "renewing a work item's lease")?.applied {
                    Renewed::Renewed { sent_at }
                } else {
                    Renewed::Lost
                },
            ),
            Err(error) => {
                // As a lease's renewal: only a row without our ticket is
                // definite (a loss).
                let what = || format!("renewing work item `{}` of `{}`", claim.key, claim.work_set);
                let read = self.read(&claim.work_set, &claim.key, true);
                settle(what, error, read, |item| {
                    Ok(match item {
                        Some(item) if item.holder == Some(lease.job_id) => Settled::Unknown,
                        _ => Settled::Known(Renewed::Lost),
                    })
                })
                .await
            }
        }
    }

    /// Gives a check-in up without an ending (its worker was cancelled or
    /// dropped its ticket): the item stays IN_PROGRESS without a holder,
    /// and the next check-in takes it over at once.
    pub async fn release(&self, claim: &ItemClaim) -> Result<Released, StoreError> {
        let ticket = CqlTimeuuid::from(claim.lease.job_id.uuid());
        let values = (
            self.retention_secs(),
            "released without a check-out (the worker was cancelled or gave its ticket up)",
            claim.work_set.as_str(),
            claim.key.as_str(),
            ticket,
        );
        let what = format!(
            "releasing work item `{}` of `{}`",
            claim.key, claim.work_set
        );
        let result = self
            .session
            .execute_unpaged(&self.release, values)
            .await
            .map_err(|e| StoreError::request(what.clone(), e))?;
        Ok(if LwtOutcome::from_result(result, &what)?.applied {
            Released::Released
        } else {
            Released::NotHolder
        })
    }

    /// Stores `result` and marks the item DONE, if `claim` still holds it:
    /// `false` when it does not (its lease expired and the item was taken
    /// over, or it ended already) and nothing was written.
    pub async fn checkout(&self, claim: &ItemClaim, result: &Value) -> Result<bool, StoreError> {
        self.end(claim, WorkState::Done, Some(result.to_string()), None)
            .await
    }

    /// Records `error` and frees the item for a retry (the next check-in
    /// takes it over), if `claim` still holds it; `false` otherwise.
    pub async fn fail(&self, claim: &ItemClaim, error: &str) -> Result<bool, StoreError> {
        self.end(claim, WorkState::Failed, None, Some(error)).await
    }

    async fn end(
        &self,
        claim: &ItemClaim,
        state: WorkState,
        result: Option<String>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let what = || {
            format!(
                "recording work item `{}` of `{}` {state}",
                claim.key, claim.work_set
            )
        };
        let ticket = CqlTimeuuid::from(claim.lease.job_id.uuid());
        let values = (
            self.retention_secs(),
            state.as_str(),
            result,
            error,
            cql::to_timestamp(SystemTime::now()),
            claim.work_set.as_str(),
            claim.key.as_str(),
            ticket,
        );
        let outcome = match self.session.execute_unpaged(&self.end, values).await {
            Ok(r) => LwtOutcome::from_result(r, &what())?.applied,
            Err(error) => {
                // Ended by us if the row shows our fencing token with the
                // state we wrote and no holder; still ours proves nothing.
                let read = self.read(&claim.work_set, &claim.key, true);
                settle(what, error, read, |item| {
                    Ok(match item {
                        Some(i) if i.holder == Some(claim.lease.job_id) => Settled::Unknown,
                        Some(i) => Settled::Known(
                            i.fencing_token == claim.lease.fencing_token
                                && i.state == state
                                && i.holder.is_none(),
                        ),
                        None => Settled::Known(false),
                    })
                })
                .await?
            }
        };
        crate::metrics::work_checkin(
            claim.work_set.as_str(),
            match (outcome, state) {
                (false, _) => "stale",
                (true, WorkState::Done) => "done",
                (true, _) => "failed",
            },
        );
        Ok(outcome)
    }

    /// The item `key` of `work_set`, without taking it: read at SERIAL
    /// (`serial = true`, which also completes a check-in in flight) or at
    /// the configured consistency.
    pub async fn read(
        &self,
        work_set: &WorkSet,
        key: &WorkKey,
        serial: bool,
    ) -> Result<Option<WorkItem>, StoreError> {
        let statement = if serial {
            &self.read_serial
        } else {
            &self.read_quorum
        };
        let what = || format!("reading work item `{key}` of `{work_set}`");
        let rows = self
            .session
            .execute_unpaged(statement, (work_set.as_str(), key.as_str()))
            .await
            .map_err(|e| StoreError::request(what(), e))?
            .into_rows_result()
            .map_err(|e| StoreError::request(what(), e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let row: Option<Row> = rows
            .maybe_first_row()
            .map_err(|e| StoreError::request(what(), e))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let columns: Vec<(String, Option<CqlValue>)> =
                    names.into_iter().zip(row.columns).collect();
                item_from_columns(work_set, key, &columns)
            }
        }
    }

    /// The keys of `work_set` first checked in on each day from today back
    /// over the retention, newest day first; at most `limit`.
    async fn keys(
        &self,
        work_set: &WorkSet,
        limit: usize,
    ) -> Result<Vec<(i32, String)>, StoreError> {
        let today = day_of(SystemTime::now());
        let days = (self.retention.as_secs() / 86_400) as i32 + 1;
        let mut keys = Vec::new();
        for day in (today - days..=today + 1).rev() {
            let what = || format!("listing work set `{work_set}` (day {day})");
            let mut rows = self
                .session
                .execute_iter(self.list_day.clone(), (work_set.as_str(), day))
                .await
                .map_err(|e| StoreError::request(what(), e))?
                .rows_stream::<(String,)>()
                .map_err(|e| StoreError::request(what(), e))?;
            while let Some(row) = rows.next().await {
                let (key,) = row.map_err(|e| StoreError::request(what(), e))?;
                keys.push((day, key));
                if keys.len() >= limit {
                    return Ok(keys);
                }
            }
        }
        Ok(keys)
    }

    /// The items of `work_set` (at most `limit`), newest first check-in day
    /// first, then by key.
    pub async fn list(
        &self,
        work_set: &WorkSet,
        limit: usize,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let keys = self.keys(work_set, limit).await?;
        let items: Vec<Option<WorkItem>> = futures::stream::iter(keys)
            .map(|(_, key)| async move {
                match WorkKey::new(key) {
                    Ok(key) => self.read(work_set, &key, false).await,
                    Err(_) => Ok(None),
                }
            })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(items.into_iter().flatten().collect())
    }

    /// Forgets the items of `work_set` that ended (DONE or FAILED) more than
    /// `older_than` ago; items in progress are kept. A forgotten key is
    /// processed anew by its next check-in (fencing tokens start again at
    /// 1). Returns how many items were removed.
    pub async fn purge(
        &self,
        work_set: &WorkSet,
        older_than: Duration,
    ) -> Result<usize, StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        for (day, key) in self.keys(work_set, usize::MAX).await? {
            let Ok(key) = WorkKey::new(key) else { continue };
            let Some(item) = self.read(work_set, &key, false).await? else {
                // Expired: only the listing is left.
                let _ = self
                    .session
                    .execute_unpaged(&self.unindex, (work_set.as_str(), day, key.as_str()))
                    .await;
                continue;
            };
            let ended_before = item.ended_at.is_some_and(|t| t < cutoff);
            if item.state == WorkState::InProgress || !ended_before {
                continue;
            }
            let what = || format!("purging work item `{key}` of `{work_set}`");
            let result = self
                .session
                .execute_unpaged(
                    &self.purge,
                    (work_set.as_str(), key.as_str(), item.state.as_str()),
                )
                .await
                .map_err(|e| StoreError::request(what(), e))?;
            if LwtOutcome::from_result(result, &what())?.applied {
                removed += 1;
                self.session
                    .execute_unpaged(&self.unindex, (work_set.as_str(), day, key.as_str()))
                    .await
                    .map_err(|e| StoreError::request(what(), e))?;
            }
        }
        Ok(removed)
    }
}

/// The lease of one proceeding check-in, for the lock keeper
/// ([`LeaseRenewer`]): renews the item's `holder` cell, releases it.
pub struct ItemLease {
    store: Arc<WorkStore>,
    claim: ItemClaim,
}

impl ItemLease {
    /// The renewer of `claim`'s lease.
    pub fn new(store: Arc<WorkStore>, claim: ItemClaim) -> Self {
        Self { store, claim }
    }
}

impl LeaseRenewer for ItemLease {
    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<Renewed, StoreError>> {
        Box::pin(self.store.renew(&self.claim))
    }
    fn release<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<Released, StoreError>> {
        Box::pin(self.store.release(&self.claim))
    }
}

/// Days since 1970-01-01 (UTC) of `t`.
fn day_of(t: SystemTime) -> i32 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i32
}

fn item_from_columns(
    work_set: &WorkSet,
    key: &WorkKey,
    columns: &[(String, Option<CqlValue>)],
) -> Result<Option<WorkItem>, StoreError> {
    let get = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    };
    let corrupt = |problem: String| {
        StoreError::request(
            format!("reading work item `{key}` of `{work_set}`"),
            problem,
        )
    };
    let text = |name: &str| match get(name) {
        Some(CqlValue::Text(s) | CqlValue::Ascii(s)) => Some(s.clone()),
        _ => None,
    };
    let time = |name: &str| match get(name) {
        Some(CqlValue::Timestamp(t)) => Some(cql::from_timestamp(*t)),
        _ => None,
    };
    let Some(state) = text("state") else {
        // A row without state: its cells expired (or a check-in is half
        // visible); treated as absent.
        return Ok(None);
    };
    let state =
        WorkState::parse(&state).ok_or_else(|| corrupt(format!("unknown state `{state}`")))?;
    let result = match text("result") {
        Some(json) => Some(
            serde_json::from_str(&json).map_err(|e| corrupt(format!("result is not JSON: {e}")))?,
        ),
        None => None,
    };
    Ok(Some(WorkItem {
        work_set: work_set.clone(),
        key: key.clone(),
        state,
        holder: match get("holder") {
            Some(CqlValue::Timeuuid(u)) => Some(JobId::from_uuid((*u).into())),
            _ => None,
        },
        node: text("node"),
        fencing_token: FencingToken(match get("fencing_token") {
            Some(CqlValue::BigInt(t)) => *t,
            _ => 0,
        }),
        attempts: match get("attempts") {
            Some(CqlValue::Int(a)) => (*a).max(0) as u32,
            _ => 0,
        },
        created_at: time("created_at"),
        since: time("since"),
        lease_until: time("lease_until"),
        ended_at: time("ended_at"),
        result,
        error: text("error"),
    }))
}
