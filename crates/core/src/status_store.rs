//! [`StatusStore`]: job status in `job_status_data` and `job_status_meta`.
//!
//! Every status is written to both tables (one unlogged batch: one request
//! for both rows) at the configured consistency (LOCAL_QUORUM by default) with a retention TTL
//! (14 days by default), retried on failure. Reads use the same consistency,
//! so a write that returned OK is seen by every replica's reads.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId, TriggerId};
use crate::lease::FencingToken;
use crate::status::{JobState, JobStatus, JobType, StatusEntry};

/// How long statuses are kept by default (ha-jobs: 14 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// Attempts of one status write before it is reported as failed.
const WRITE_ATTEMPTS: u32 = 4;
/// The first pause between attempts; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// How many statuses of one attempt `get` reads to find the newest: more
/// than one attempt can write in one millisecond (one row per state).
const SAME_MILLISECOND_ROWS: usize = 16;

/// The most statuses one read of an attempt's history returns (its newest):
/// an attempt that published progress for hours has many rows, and a read
/// of them must stay bounded.
pub const MAX_ATTEMPT_STATUSES: usize = 1000;

/// The most job types one read of every job type's latest status returns:
/// rows written by another tool under made-up job types cannot make it
/// grow without bound.
pub const MAX_JOB_TYPES: usize = 1000;

const META_COLUMNS: &str =
    "job_type, job_id, trigger_id, job_status_ts, job_state, job_result, owner, fencing_token";

/// Job statuses on Cassandra or ScyllaDB.
pub struct StatusStore {
    session: Arc<Session>,
    /// Both rows of a status: an unlogged batch of the two inserts.
    write: Batch,
    history: PreparedStatement,
    latest_all: PreparedStatement,
    run: PreparedStatement,
    run_latest: PreparedStatement,
    /// The TTL of every status row, in seconds.
    retention_secs: i32,
}

impl std::fmt::Debug for StatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusStore")
            .field("retention_secs", &self.retention_secs)
            .finish_non_exhaustive()
    }
}

impl StatusStore {
    /// Prepares the statements for `config.keyspace` with `retention` as the
    /// rows' TTL (1 s to 20 years).
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let retention_secs = i32::try_from(retention.as_secs())
            .ok()
            .filter(|s| (1..=630_720_000).contains(s))
            .ok_or_else(|| {
                StoreError::Schema(format!(
                    "status retention {retention:?} is out of range (1 s to 20 years)"
                ))
            })?;
        let prepare = |text: String| {
            let session = session.clone();
            async move {
                let mut s = cql::prepare(&session, text, config.consistency, config).await?;
                s.set_is_idempotent(true);
                Ok::<_, StoreError>(s)
            }
        };
        // Two idempotent inserts in one unlogged batch: one request, each
        // row applied on its own replicas as if sent alone. (A logged batch
        // would make them atomic, but its batchlog write times out for as
        // long as the cluster has not yet noticed a dead node.)
        let write_data = prepare(format!(
            "INSERT INTO {ks}.job_status_data (job_type, job_id, job_status_ts, trigger_id, job_state, job_result, content, owner, fencing_token) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        ))
        .await?;
        let write_meta = prepare(format!(
            "INSERT INTO {ks}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result, owner, fencing_token) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        ))
        .await?;
        // The cell write time is the status's own time in microseconds; it
        // orders two statuses of one attempt written in the same millisecond,
        // which the key (job_status_ts, job_state, job_result) orders by
        // state name instead.
        let data = format!(
            "{META_COLUMNS}, content, WRITETIME(trigger_id) AS written FROM {ks}.job_status_data"
        );
        Ok(Self {
            history: prepare(format!(
                "SELECT {META_COLUMNS} FROM {ks}.job_status_meta WHERE job_type = ? LIMIT ?"
            ))
            .await?,
            latest_all: prepare(format!(
                "SELECT {META_COLUMNS} FROM {ks}.job_status_meta PER PARTITION LIMIT 1 LIMIT {MAX_JOB_TYPES}"
            ))
            .await?,
            run: prepare(format!(
                "SELECT {data} WHERE job_type = ? AND job_id = ? LIMIT {MAX_ATTEMPT_STATUSES}"
            ))
            .await?,
            run_latest: prepare(format!(
                "SELECT {data} WHERE job_type = ? AND job_id = ? LIMIT {SAME_MILLISECOND_ROWS}"
            ))
            .await?,
            write: {
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.append_statement(write_data);
                batch.append_statement(write_meta);
                batch.set_consistency(config.consistency);
                batch.set_is_idempotent(true);
                batch
            },
            session,
            retention_secs,
        })
    }

    /// Writes `status` to both tables, retrying with backoff. An error means
    /// every attempt failed; it is also logged at ERROR.
    pub async fn write(&self, status: &JobStatus) -> Result<(), StoreError> {
        let content =
            match &status.content {
                Some(v) => Some(serde_json::to_string(v).map_err(|e| {
                    StoreError::request("serialising status content", e.to_string())
                })?),
                None => None,
            };
        let ts = cql::to_timestamp(status.timestamp);
        // The cells' write time is the status's own time: in
        // `job_status_meta` the newest status wins, whatever order the
        // writes (say, a supervisor's DEAD and the attempt's own end) land in.
        let write_time = status
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let job_id = CqlTimeuuid::from(status.job_id.uuid());
        let trigger_id = CqlTimeuuid::from(status.trigger_id.uuid());
        let owner = status.owner.as_ref().map(NodeId::as_str);
        let token = status.fencing_token.map(|t| t.0);
        let (state, result) = (status.state.as_str(), status.result().as_str());
        let data = (
            status.job_type.as_str(),
            job_id,
            ts,
            trigger_id,
            state,
            result,
            content.as_deref(),
            owner,
            token,
            self.retention_secs,
            write_time,
        );
        let meta = (
            status.job_type.as_str(),
            job_id,
            trigger_id,
            ts,
            state,
            result,
            owner,
            token,
            self.retention_secs,
            write_time,
        );
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            // Both rows in one request. Each carries the status's own write
            // time, so a retry or a late row never goes back; a reader may
            // see the meta row a moment before the data row.
            match self.session.batch(&self.write, (&data, &meta)).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(job_type = %status.job_type, job_id = %status.job_id, %state, attempt, error = %e,
                        "status write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(job_type = %status.job_type, job_id = %status.job_id, %state, attempts = attempt, error = %e,
                        "STATUS WRITE LOST: every attempt failed");
                    return Err(StoreError::request(
                        format!(
                            "writing status {state} of job {} ({}) after {attempt} attempts",
                            status.job_id, status.job_type
                        ),
                        e,
                    ));
                }
            }
        }
    }

    /// The latest status of the last `limit` attempts of `job_type`, newest first.
    pub async fn history(
        &self,
        job_type: &JobType,
        limit: u32,
    ) -> Result<Vec<StatusEntry>, StoreError> {
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        self.select::<MetaRow>(
            &self.history,
            (job_type.as_str(), limit),
            "reading job history",
        )
        .await
    }

    /// The latest attempt of `job_type`, if any.
    pub async fn latest(&self, job_type: &JobType) -> Result<Option<StatusEntry>, StoreError> {
        Ok(self.history(job_type, 1).await?.into_iter().next())
    }

    /// The latest attempt of every job type (at most [`MAX_JOB_TYPES`]).
    pub async fn latest_of_all(&self) -> Result<Vec<StatusEntry>, StoreError> {
        self.select::<MetaRow>(&self.latest_all, (), "reading the latest statuses")
            .await
    }

    /// The latest status of one attempt, with its content.
    pub async fn get(
        &self,
        job_type: &JobType,
        job_id: JobId,
    ) -> Result<Option<StatusEntry>, StoreError> {
        let values = (job_type.as_str(), CqlTimeuuid::from(job_id.uuid()));
        Ok(self
            .select::<DataRow>(&self.run_latest, values, "reading a job attempt")
            .await?
            .into_iter()
            .next())
    }

    /// Every status one attempt went through, newest first, with content:
    /// at most the newest [`MAX_ATTEMPT_STATUSES`].
    pub async fn run_history(
        &self,
        job_type: &JobType,
        job_id: JobId,
    ) -> Result<Vec<StatusEntry>, StoreError> {
        let values = (job_type.as_str(), CqlTimeuuid::from(job_id.uuid()));
        self.select::<DataRow>(&self.run, values, "reading an attempt's history")
            .await
    }

    /// The rows of `statement` in table `T`, decoded; corrupt rows named.
    async fn select<T: StatusTable>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        what: &'static str,
    ) -> Result<Vec<StatusEntry>, StoreError> {
        let mut pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| StoreError::request(what, e))?
            .rows_stream::<T>()
            .map_err(|e| StoreError::request(what, e))?;
        let mut entries = Vec::new();
        use futures::TryStreamExt;
        while let Some(row) = pager
            .try_next()
            .await
            .map_err(|e| StoreError::request(what, e))?
        {
            let row = row.into_row();
            let order = newest_first_key(&row);
            entries.push((order, decode(row, T::TABLE)));
        }
        if T::TABLE == "job_status_data" {
            // One attempt's statuses come newest millisecond first; within
            // one millisecond the write time puts them in writing order.
            entries.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        }
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }
}

/// A row of `job_status_meta`, decoded by column name; every cell optional,
/// so that a row another tool wrote is named corrupt by [`decode`] instead
/// of failing the whole read.
#[derive(scylla::DeserializeRow)]
struct MetaRow {
    job_type: Option<String>,
    job_id: Option<CqlTimeuuid>,
    trigger_id: Option<CqlTimeuuid>,
    job_status_ts: Option<CqlTimestamp>,
    job_state: Option<String>,
    job_result: Option<String>,
    owner: Option<String>,
    fencing_token: Option<i64>,
}

/// A row of `job_status_data`: the columns of a [`MetaRow`], the content,
/// and the write time, which orders two statuses of one attempt written in
/// the same millisecond. What [`decode`] reads, whichever table a row
/// comes from.
#[derive(Debug, Clone, Default, scylla::DeserializeRow)]
struct DataRow {
    job_type: Option<String>,
    job_id: Option<CqlTimeuuid>,
    trigger_id: Option<CqlTimeuuid>,
    job_status_ts: Option<CqlTimestamp>,
    job_state: Option<String>,
    job_result: Option<String>,
    owner: Option<String>,
    fencing_token: Option<i64>,
    content: Option<String>,
    written: Option<i64>,
}

/// One of the two status tables, by the row it is read into.
trait StatusTable: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> {
    /// The table's name (for errors and corrupt rows).
    const TABLE: &'static str;
    /// The row as [`decode`] reads it.
    fn into_row(self) -> DataRow;
}

impl StatusTable for MetaRow {
    const TABLE: &'static str = "job_status_meta";
    fn into_row(self) -> DataRow {
        let MetaRow {
            job_type,
            job_id,
            trigger_id,
            job_status_ts,
            job_state,
            job_result,
            owner,
            fencing_token,
        } = self;
        DataRow {
            job_type,
            job_id,
            trigger_id,
            job_status_ts,
            job_state,
            job_result,
            owner,
            fencing_token,
            content: None,
            written: None,
        }
    }
}

impl StatusTable for DataRow {
    const TABLE: &'static str = "job_status_data";
    fn into_row(self) -> DataRow {
        self
    }
}

/// A row's (job_status_ts, write time); sorting by it descending puts the
/// newest status first.
fn newest_first_key(row: &DataRow) -> (Option<i64>, Option<i64>) {
    (row.job_status_ts.map(|t| t.0), row.written)
}

/// Decodes a status row, or names what is wrong with it (its content, if
/// the row has one, must be JSON).
fn decode(row: DataRow, table: &str) -> StatusEntry {
    let key = format!(
        "{table} job_type={:?} job_id={}",
        row.job_type.clone().unwrap_or_default(),
        row.job_id
            .map(|u| uuid::Uuid::from(u).to_string())
            .unwrap_or_else(|| "?".into())
    );
    let corrupt = |problem: String| StatusEntry::Corrupt {
        row: key.clone(),
        job_type: row.job_type.clone(),
        problem,
    };
    let job_type = match row.job_type.clone().map(JobType::new) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return corrupt(format!("bad job_type: {e}")),
        None => return corrupt("job_type is null".into()),
    };
    let Some(job_id) = row.job_id else {
        return corrupt("job_id is null".into());
    };
    let Some(trigger_id) = row.trigger_id else {
        return corrupt("trigger_id is null".into());
    };
    let Some(timestamp) = row.job_status_ts.map(cql::from_timestamp) else {
        return corrupt("job_status_ts is null".into());
    };
    let state = match row.job_state.as_deref().map(str::parse::<JobState>) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return corrupt(e),
        None => return corrupt("job_state is null".into()),
    };
    if let Some(result) = &row.job_result {
        if result != state.result().as_str() {
            return corrupt(format!(
                "job_result `{result}` does not match job_state {state}"
            ));
        }
    }
    let owner = match row.owner.clone().map(NodeId::new) {
        Some(Ok(o)) => Some(o),
        Some(Err(e)) => return corrupt(format!("bad owner: {e}")),
        None => None,
    };
    let content = match row.content.as_deref().map(serde_json::from_str) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return corrupt(format!("content is not valid JSON: {e}")),
        None => None,
    };
    StatusEntry::Status(JobStatus {
        job_type,
        job_id: JobId::from_uuid(job_id.into()),
        trigger_id: TriggerId::from_uuid(trigger_id.into()),
        timestamp,
        state,
        owner,
        fencing_token: row.fencing_token.map(FencingToken),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any text another tool could write in a text column.
    fn text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            any::<String>().prop_map(Some),
            prop_oneof![
                Just("RUNNING"),
                Just("FINISHED"),
                Just("PENDING"),
                Just("FAILED"),
                Just("{\"a\":1}"),
                Just("{not json"),
                Just("job"),
            ]
            .prop_map(|s| Some(s.to_owned())),
        ]
    }

    fn timeuuid() -> impl Strategy<Value = Option<CqlTimeuuid>> {
        proptest::option::of(
            any::<u128>().prop_map(|u| CqlTimeuuid::from(uuid::Uuid::from_u128(u))),
        )
    }

    prop_compose! {
        /// Any row of the status tables, whatever another tool wrote.
        fn row()(
            (job_type, job_state, job_result, owner, content) in (text(), text(), text(), text(), text()),
            (job_id, trigger_id) in (timeuuid(), timeuuid()),
            job_status_ts in proptest::option::of(any::<i64>().prop_map(CqlTimestamp)),
            (fencing_token, written) in (proptest::option::of(any::<i64>()), proptest::option::of(any::<i64>())),
        ) -> DataRow {
            DataRow { job_type, job_id, trigger_id, job_status_ts, job_state, job_result, owner, fencing_token, content, written }
        }
    }

    proptest! {
        /// Whatever another tool wrote, decoding never panics: a row is a
        /// status or a named corrupt row.
        #[test]
        fn decoding_any_row_never_panics(row in row()) {
            match decode(row, "job_status_data") {
                StatusEntry::Status(s) => prop_assert!(!s.job_type.as_str().is_empty()),
                StatusEntry::Corrupt { row, problem, .. } => {
                    prop_assert!(row.starts_with("job_status_data"));
                    prop_assert!(!problem.is_empty());
                }
            }
        }
    }
}
