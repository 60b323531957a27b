//! [`QueueStore`]: triggers queued for a busy lock type, first in, first out.
//!
//! A job with `on_locked = "queue"` whose trigger finds its lock held
//! appends a [`QueueEntry`] to its lock type's queue (one partition per lock
//! type, ordered by the entry's time-based id). The replica that next holds
//! the lock for the oldest entry claims it with a lightweight transaction
//! ([`QueueStore::claim`]), so that it starts once, then removes it.
//! Entries carry their expiry (the job's lock wait timeout); the row's TTL
//! is only a backstop.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, TriggerId};
use crate::lock_type::LockType;
use crate::lwt::LwtOutcome;

/// How long after its expiry a queue row is kept (the TTL's margin).
const TTL_MARGIN: Duration = Duration::from_secs(3600);

/// One queued trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The lock type it waits for.
    pub lock_type: LockType,
    /// Its place in the queue (time-based: the order of queueing).
    pub entry_id: JobId,
    /// The job type to run.
    pub job_type: String,
    /// The trigger the attempt serves.
    pub trigger_id: TriggerId,
    /// Who queued it (node, and user for a trigger by hand).
    pub queued_by: Option<String>,
    /// When it gives up waiting.
    pub expires_at: Option<SystemTime>,
    /// Which timeout sets `expires_at`: `lock_wait_timeout` or
    /// `starting_deadline`.
    pub expiry: Option<String>,
    /// The attempt that claimed it, once claimed.
    pub job_id: Option<JobId>,
    /// When it was claimed.
    pub claimed_at: Option<SystemTime>,
}

impl QueueEntry {
    /// When it was queued (from its time-based id).
    pub fn queued_at(&self) -> Option<SystemTime> {
        let (secs, nanos) = self.entry_id.uuid().get_timestamp()?.to_unix();
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    /// Whether it waited past its expiry at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The `lock_queue` table (schema 12).
pub struct QueueStore {
    session: Arc<Session>,
    enqueue: PreparedStatement,
    head: PreparedStatement,
    list: PreparedStatement,
    list_all: PreparedStatement,
    claim: PreparedStatement,
    remove: PreparedStatement,
    remove_unclaimed: PreparedStatement,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore").finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "lock_type, entry_id, job_type, trigger_id, queued_by, expires_at, expiry, job_id, claimed_at";

type EntryRow = (
    String,
    CqlTimeuuid,
    String,
    CqlTimeuuid,
    Option<String>,
    Option<CqlTimestamp>,
    Option<String>,
    Option<CqlTimeuuid>,
    Option<CqlTimestamp>,
);

impl QueueStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, config: &CassandraConfig) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move { cql::prepare(&session, text, config.consistency, config).await }
        };
        let key = "WHERE lock_type = ? AND entry_id = ?";
        Ok(Self {
            enqueue: prepare(format!(
                "INSERT INTO {ks}.lock_queue (lock_type, entry_id, job_type, trigger_id, queued_by, expires_at, expiry) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            head: prepare(format!(
                "SELECT {COLUMNS} FROM {ks}.lock_queue WHERE lock_type = ? LIMIT 1"
            ))
            .await?,
            list: prepare(format!(
                "SELECT {COLUMNS} FROM {ks}.lock_queue WHERE lock_type = ?"
            ))
            .await?,
            list_all: prepare(format!("SELECT {COLUMNS} FROM {ks}.lock_queue")).await?,
            claim: prepare(format!(
                "UPDATE {ks}.lock_queue SET job_id = ?, claimed_at = ? {key} IF job_type = ? AND job_id = null"
            ))
            .await?,
            remove: prepare(format!("DELETE FROM {ks}.lock_queue {key}")).await?,
            remove_unclaimed: prepare(format!(
                "DELETE FROM {ks}.lock_queue {key} IF job_type = ? AND job_id = null"
            ))
            .await?,
            session,
        })
    }

    /// Appends `trigger_id` of `job_type` to the queue of `lock_type`; it
    /// gives up waiting after `wait`, set by the timeout named `expiry`.
    /// Returns the entry.
    pub async fn enqueue(
        &self,
        lock_type: &LockType,
        job_type: &str,
        trigger_id: TriggerId,
        queued_by: &str,
        wait: Duration,
        expiry: &str,
    ) -> Result<QueueEntry, StoreError> {
        let entry_id = JobId::new();
        let expires_at = SystemTime::now() + wait;
        let ttl = (wait + TTL_MARGIN).as_secs().min(i32::MAX as u64) as i32;
        self.session
            .execute_unpaged(
                &self.enqueue,
                (
                    lock_type.as_str(),
                    CqlTimeuuid::from(entry_id.uuid()),
                    job_type,
                    CqlTimeuuid::from(trigger_id.uuid()),
                    queued_by,
                    cql::to_timestamp(expires_at),
                    expiry,
                    ttl,
                ),
            )
            .await
            .map_err(|e| {
                StoreError::request(
                    format!(
                        "queueing trigger {trigger_id} of `{job_type}` for lock type `{lock_type}`"
                    ),
                    e,
                )
            })?;
        Ok(QueueEntry {
            lock_type: lock_type.clone(),
            entry_id,
            job_type: job_type.to_owned(),
            trigger_id,
            queued_by: Some(queued_by.to_owned()),
            expires_at: Some(expires_at),
            expiry: Some(expiry.to_owned()),
            job_id: None,
            claimed_at: None,
        })
    }

    /// The oldest entry of `lock_type`'s queue.
    pub async fn head(&self, lock_type: &LockType) -> Result<Option<QueueEntry>, StoreError> {
        Ok(self
            .read(
                &self.head,
                (lock_type.as_str(),),
                &format!("reading the queue of `{lock_type}`"),
            )
            .await?
            .into_iter()
            .next())
    }

    /// The queue of `lock_type`, oldest first.
    pub async fn list(&self, lock_type: &LockType) -> Result<Vec<QueueEntry>, StoreError> {
        self.read(
            &self.list,
            (lock_type.as_str(),),
            &format!("reading the queue of `{lock_type}`"),
        )
        .await
    }

    /// Every queue (a scan of the table: for operators), each oldest first.
    pub async fn list_all(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let mut all = self.read(&self.list_all, (), "reading every queue").await?;
        all.sort_by(|a, b| {
            (a.lock_type.as_str(), a.queued_at()).cmp(&(b.lock_type.as_str(), b.queued_at()))
        });
        Ok(all)
    }

    async fn read(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        what: &str,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let mut rows = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| StoreError::request(what, e))?
            .rows_stream::<EntryRow>()
            .map_err(|e| StoreError::request(what, e))?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().await {
            let (
                lock_type,
                entry_id,
                job_type,
                trigger_id,
                queued_by,
                expires_at,
                expiry,
                job_id,
                claimed_at,
            ) = row.map_err(|e| StoreError::request(what, e))?;
            let Ok(lock_type) = LockType::new(lock_type) else {
                continue;
            };
            entries.push(QueueEntry {
                lock_type,
                entry_id: JobId::from_uuid(entry_id.into()),
                job_type,
                trigger_id: TriggerId::from_uuid(trigger_id.into()),
                queued_by,
                expires_at: expires_at.map(cql::from_timestamp),
                expiry,
                job_id: job_id.map(|u| JobId::from_uuid(u.into())),
                claimed_at: claimed_at.map(cql::from_timestamp),
            });
        }
        Ok(entries)
    }

    /// Claims `entry` for the attempt `job_id`: `true` for exactly one
    /// claimant, never for an entry claimed or removed before.
    pub async fn claim(&self, entry: &QueueEntry, job_id: JobId) -> Result<bool, StoreError> {
        let what = || {
            format!(
                "claiming queued trigger {} of `{}`",
                entry.trigger_id, entry.job_type
            )
        };
        let result = self
            .session
            .execute_unpaged(
                &self.claim,
                (
                    CqlTimeuuid::from(job_id.uuid()),
                    cql::to_timestamp(SystemTime::now()),
                    entry.lock_type.as_str(),
                    CqlTimeuuid::from(entry.entry_id.uuid()),
                    entry.job_type.as_str(),
                ),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }

    /// Removes a claimed entry (its attempt started).
    pub async fn remove(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.remove,
                (
                    entry.lock_type.as_str(),
                    CqlTimeuuid::from(entry.entry_id.uuid()),
                ),
            )
            .await
            .map_err(|e| {
                StoreError::request(format!("removing queued trigger {}", entry.trigger_id), e)
            })?;
        Ok(())
    }

    /// Removes `entry` unless it was claimed: `true` when this call removed
    /// it (an operator's `queue rm`, an expiry).
    pub async fn remove_unclaimed(&self, entry: &QueueEntry) -> Result<bool, StoreError> {
        let what = || format!("removing queued trigger {}", entry.trigger_id);
        let result = self
            .session
            .execute_unpaged(
                &self.remove_unclaimed,
                (
                    entry.lock_type.as_str(),
                    CqlTimeuuid::from(entry.entry_id.uuid()),
                    entry.job_type.as_str(),
                ),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }
}
