//! [`WatchStore`]: what each replica asks the supervisors to watch.
//!
//! A replica writes its whole [`WatchList`] — the attempts it runs and the
//! cron firings it claimed but has not yet started — whenever it changes,
//! with the write time it chooses, so that a late write never undoes a newer
//! one. Supervisors read every row in one request and supervise only the job
//! types named there; a periodic full sweep covers anything a list missed.
//! Rows are hints: a status or a lease decides, never a row here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId, TriggerId};
use crate::status::JobType;

/// One replica's watch list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchList {
    /// The replica.
    pub node_id: String,
    /// Attempts to watch: job id → job type.
    pub attempts: BTreeMap<JobId, JobType>,
    /// Claimed cron firings not yet started or skipped: trigger id → job type.
    pub firings: BTreeMap<TriggerId, JobType>,
    /// When the replica wrote it (its clock).
    pub written_at: Option<SystemTime>,
    /// The row's write time, microseconds: [`WatchStore::remove`] takes it
    /// so as to remove this version and nothing written after it.
    pub write_time: i64,
}

/// The `watch_list` table.
pub struct WatchStore {
    session: Arc<Session>,
    write: PreparedStatement,
    remove: PreparedStatement,
    list: PreparedStatement,
}

impl std::fmt::Debug for WatchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStore").finish_non_exhaustive()
    }
}

/// A row of `watch_list`, decoded by column name.
#[derive(scylla::DeserializeRow)]
struct WatchRow {
    node_id: String,
    attempts: Option<BTreeMap<CqlTimeuuid, String>>,
    firings: Option<BTreeMap<CqlTimeuuid, String>>,
    written_at: Option<CqlTimestamp>,
    write_time: Option<i64>,
}

impl WatchStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, config: &CassandraConfig) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move {
                let mut s = cql::prepare(&session, text, config.consistency, config).await?;
                // Every write carries its own write time: safe to repeat.
                s.set_is_idempotent(true);
                Ok::<_, StoreError>(s)
            }
        };
        Ok(Self {
            write: prepare(format!(
                "INSERT INTO {ks}.watch_list (node_id, attempts, firings, written_at) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            remove: prepare(format!(
                "DELETE FROM {ks}.watch_list USING TIMESTAMP ? WHERE node_id = ?"
            ))
            .await?,
            list: prepare(format!(
                "SELECT node_id, attempts, firings, written_at, WRITETIME(written_at) AS write_time FROM {ks}.watch_list"
            ))
            .await?,
            session,
        })
    }

    /// Writes `node`'s whole list with write time `write_time`
    /// (microseconds; a replica makes it strictly increasing).
    pub async fn write(
        &self,
        node: &NodeId,
        attempts: &BTreeMap<JobId, JobType>,
        firings: &BTreeMap<TriggerId, JobType>,
        write_time: i64,
    ) -> Result<(), StoreError> {
        let attempts: BTreeMap<CqlTimeuuid, &str> = attempts
            .iter()
            .map(|(id, t)| (CqlTimeuuid::from(id.uuid()), t.as_str()))
            .collect();
        let firings: BTreeMap<CqlTimeuuid, &str> = firings
            .iter()
            .map(|(id, t)| (CqlTimeuuid::from(id.uuid()), t.as_str()))
            .collect();
        self.session
            .execute_unpaged(
                &self.write,
                (
                    node.as_str(),
                    attempts,
                    firings,
                    cql::to_timestamp(SystemTime::now()),
                    write_time,
                ),
            )
            .await
            .map_err(|e| StoreError::request(format!("writing the watch list of {node}"), e))?;
        Ok(())
    }

    /// Removes the version of `node_id`'s row written at `write_time`; a
    /// newer write stands.
    pub async fn remove(&self, node_id: &str, write_time: i64) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.remove, (write_time, node_id))
            .await
            .map_err(|e| StoreError::request(format!("removing the watch list of {node_id}"), e))?;
        Ok(())
    }

    /// Every replica's list. An entry whose job type is not a valid name is
    /// named in the log and left out.
    pub async fn list(&self) -> Result<Vec<WatchList>, StoreError> {
        let rows: Vec<WatchRow> = cql::rows(
            self.session.execute_unpaged(&self.list, ()).await,
            "reading the watch lists",
        )?;
        let mut lists = Vec::new();
        for WatchRow {
            node_id,
            attempts,
            firings,
            written_at,
            write_time,
        } in rows
        {
            let entries = |map: Option<BTreeMap<CqlTimeuuid, String>>| {
                map.unwrap_or_default()
                    .into_iter()
                    .filter_map(|(id, job_type)| match JobType::new(job_type.as_str()) {
                        Ok(t) => Some((uuid::Uuid::from(id), t)),
                        Err(e) => {
                            tracing::warn!(node_id, %job_type, error = %e, "watch list entry with an invalid job type left out");
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            };
            lists.push(WatchList {
                attempts: entries(attempts)
                    .into_iter()
                    .map(|(id, t)| (JobId::from_uuid(id), t))
                    .collect(),
                firings: entries(firings)
                    .into_iter()
                    .map(|(id, t)| (TriggerId::from_uuid(id), t))
                    .collect(),
                written_at: written_at.map(cql::from_timestamp),
                write_time: write_time.unwrap_or(0),
                node_id,
            });
        }
        lists.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(lists)
    }
}

/// A strictly increasing write time in microseconds: the clock, or one more
/// than the last one given when the clock has not moved on.
#[derive(Debug, Default)]
pub struct WriteClock(std::sync::atomic::AtomicI64);

impl WriteClock {
    /// The next write time.
    pub fn next(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_micros() as i64;
        let mut last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.0.compare_exchange_weak(
                last,
                next,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}
