//! [`NodeStore`]: the registry of live replicas.
//!
//! Every replica writes its [`NodeRecord`] — who it is, where, since when,
//! which job types it runs and which attempts run on it now — with a TTL, and
//! refreshes it well within that TTL. A replica that vanishes (kill -9, a
//! machine lost) drops out when its row expires; one that stops gracefully
//! removes it. The registry informs operators (`hajobs nodes`); no lease or
//! decision depends on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::NodeId;

/// One replica as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    /// Its node id (the owner in locks and statuses).
    pub node_id: String,
    /// The machine's host name.
    pub host: String,
    /// The daemon's process id.
    pub pid: i32,
    /// The hajobs version it runs.
    pub version: String,
    /// Its HTTP address, when it serves one.
    pub http: Option<String>,
    /// When it started (its clock), epoch milliseconds.
    pub started_at_ms: i64,
    /// When it last wrote this record (its clock), epoch milliseconds.
    pub seen_at_ms: i64,
    /// The job types it has configured.
    pub job_types: Vec<String>,
    /// The attempts running on it now, as `JOB_TYPE/JOB_ID`.
    pub running: Vec<String>,
}

/// The `node` table.
pub struct NodeStore {
    session: Arc<Session>,
    write: PreparedStatement,
    remove: PreparedStatement,
    list: PreparedStatement,
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStore").finish_non_exhaustive()
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl NodeStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, config: &CassandraConfig) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move { cql::prepare(&session, text, config.consistency, config).await }
        };
        Ok(Self {
            write: prepare(format!(
                "INSERT INTO {ks}.node (node_id, host, pid, version, http, started_at, seen_at, job_types, running) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            remove: prepare(format!("DELETE FROM {ks}.node WHERE node_id = ?")).await?,
            list: prepare(format!(
                "SELECT node_id, host, pid, version, http, started_at, seen_at, job_types, running FROM {ks}.node"
            ))
            .await?,
            session,
        })
    }

    /// Writes `record` (its `seen_at_ms` set to now), alive for `ttl`.
    pub async fn refresh(&self, record: &NodeRecord, ttl: Duration) -> Result<(), StoreError> {
        let ttl_secs = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        self.session
            .execute_unpaged(
                &self.write,
                (
                    record.node_id.as_str(),
                    record.host.as_str(),
                    record.pid,
                    record.version.as_str(),
                    record.http.as_deref(),
                    CqlTimestamp(record.started_at_ms),
                    CqlTimestamp(millis(SystemTime::now())),
                    &record.job_types,
                    &record.running,
                    ttl_secs,
                ),
            )
            .await
            .map_err(|e| StoreError::request(format!("registering node {}", record.node_id), e))?;
        Ok(())
    }

    /// Removes `node` from the registry (a graceful stop).
    pub async fn remove(&self, node: &NodeId) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.remove, (node.as_str(),))
            .await
            .map_err(|e| StoreError::request(format!("unregistering node {node}"), e))?;
        Ok(())
    }

    /// Every live replica, by node id.
    pub async fn list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows: Vec<NodeRow> = cql::rows(
            self.session.execute_unpaged(&self.list, ()).await,
            "listing the nodes",
        )?;
        let mut nodes: Vec<NodeRecord> = rows
            .into_iter()
            .map(|r| NodeRecord {
                node_id: r.node_id,
                host: r.host.unwrap_or_default(),
                pid: r.pid.unwrap_or(0),
                version: r.version.unwrap_or_default(),
                http: r.http,
                started_at_ms: r.started_at.map_or(0, |t| t.0),
                seen_at_ms: r.seen_at.map_or(0, |t| t.0),
                job_types: r.job_types.unwrap_or_default(),
                running: r.running.unwrap_or_default(),
            })
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }
}

/// A row of `node`, decoded by column name.
#[derive(scylla::DeserializeRow)]
struct NodeRow {
    node_id: String,
    host: Option<String>,
    pid: Option<i32>,
    version: Option<String>,
    http: Option<String>,
    started_at: Option<CqlTimestamp>,
    seen_at: Option<CqlTimestamp>,
    job_types: Option<Vec<String>>,
    running: Option<Vec<String>>,
}

/// Now, in epoch milliseconds (for [`NodeRecord::started_at_ms`]).
pub fn now_millis() -> i64 {
    millis(SystemTime::now())
}
