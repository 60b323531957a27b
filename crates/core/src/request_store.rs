//! [`RequestStore`]: triggers asked of the cluster, claimed by one replica.
//!
//! `hajobs trigger JOB` does not run the job where the operator typed it: it
//! records a [`TriggerRequest`]. Every replica watches the recent requests;
//! the first that has the job configured claims it with a lightweight
//! transaction, starts the attempt under the request's trigger id, and
//! records the outcome, which the CLI is polling for. A request nobody
//! claims in time is withdrawn by the CLI with the same kind of transaction,
//! so a claim and a withdrawal can never both succeed: a request either runs
//! once or is known not to.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, NodeId, TriggerId};
use crate::lease::FencingToken;
use crate::lwt::LwtOutcome;

/// What became of a claimed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The attempt runs.
    Started {
        /// The attempt.
        job_id: JobId,
        /// Its lease's token.
        fencing_token: FencingToken,
    },
    /// The lock was held by another attempt: nothing started.
    Locked {
        /// The holder.
        holder: JobId,
        /// The holder's node, when known.
        owner: Option<String>,
    },
    /// The lock was held: the trigger was queued (`on_locked = "queue"`)
    /// and runs when its turn comes.
    Queued {
        /// Its place in the queue when queued (1: next).
        position: u32,
    },
    /// The attempt could not start.
    Error(String),
}

/// One request, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    /// The trigger the attempt serves.
    pub trigger_id: TriggerId,
    /// The job type asked for (as stored; validated by whoever runs it).
    pub job_type: String,
    /// Who asked.
    pub requested_by: Option<String>,
    /// The node that claimed it.
    pub claimed_by: Option<String>,
    /// When it was claimed (the claiming node's clock).
    pub claimed_at: Option<SystemTime>,
    /// Withdrawn by its CLI: nobody may claim it any more.
    pub withdrawn: bool,
    /// What became of it, once known.
    pub outcome: Option<RequestOutcome>,
    /// The earlier trigger this request resumes (a handover): the attempt
    /// runs under it instead of the request's own id.
    pub resumes: Option<TriggerId>,
}

/// The `trigger_request` table.
pub struct RequestStore {
    session: Arc<Session>,
    insert: PreparedStatement,
    insert_resuming: PreparedStatement,
    recent: PreparedStatement,
    get: PreparedStatement,
    claim: PreparedStatement,
    withdraw: PreparedStatement,
    record: PreparedStatement,
    record_if_none: PreparedStatement,
}

impl std::fmt::Debug for RequestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStore").finish_non_exhaustive()
    }
}

/// The one partition requests live in (a time range of it is read).
const SHARD: i32 = 0;

const COLUMNS: &str = "trigger_id, job_type, requested_by, claimed_by, claimed_at, withdrawn, outcome, job_id, fencing_token, detail, resumes";

/// A row of `trigger_request` ([`COLUMNS`]), decoded by column name.
#[derive(scylla::DeserializeRow)]
struct RequestRow {
    trigger_id: CqlTimeuuid,
    job_type: Option<String>,
    requested_by: Option<String>,
    claimed_by: Option<String>,
    claimed_at: Option<CqlTimestamp>,
    withdrawn: Option<bool>,
    outcome: Option<String>,
    job_id: Option<CqlTimeuuid>,
    fencing_token: Option<i64>,
    detail: Option<String>,
    resumes: Option<CqlTimeuuid>,
}

fn decode(row: RequestRow) -> TriggerRequest {
    let RequestRow {
        trigger_id,
        job_type,
        requested_by,
        claimed_by,
        claimed_at,
        withdrawn,
        outcome,
        job_id,
        fencing_token: token,
        detail,
        resumes,
    } = row;
    let job_id = job_id.map(|u| JobId::from_uuid(u.into()));
    let outcome = match (outcome.as_deref(), job_id) {
        (Some("started"), Some(job_id)) => Some(RequestOutcome::Started {
            job_id,
            fencing_token: FencingToken(token.unwrap_or(0)),
        }),
        (Some("locked"), Some(holder)) => Some(RequestOutcome::Locked {
            holder,
            owner: detail,
        }),
        (Some("queued"), _) => Some(RequestOutcome::Queued {
            position: detail.as_deref().and_then(|d| d.parse().ok()).unwrap_or(0),
        }),
        (Some(_), _) => Some(RequestOutcome::Error(
            detail.unwrap_or_else(|| "unknown".into()),
        )),
        (None, _) => None,
    };
    TriggerRequest {
        trigger_id: TriggerId::from_uuid(trigger_id.into()),
        job_type: job_type.unwrap_or_default(),
        requested_by,
        claimed_by,
        claimed_at: claimed_at.map(cql::from_timestamp),
        withdrawn: withdrawn.unwrap_or(false),
        outcome,
        resumes: resumes.map(|u| TriggerId::from_uuid(u.into())),
    }
}

/// The most requests one read of the recent ones returns (the newest).
pub const MAX_RECENT_REQUESTS: usize = 1000;

impl RequestStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, config: &CassandraConfig) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String| {
            let session = session.clone();
            async move { cql::prepare(&session, text, config.consistency, config).await }
        };
        Ok(Self {
            insert: prepare(format!(
                "INSERT INTO {ks}.trigger_request (shard, trigger_id, job_type, requested_by) VALUES ({SHARD}, ?, ?, ?)"
            ))
            .await?,
            insert_resuming: prepare(format!(
                "INSERT INTO {ks}.trigger_request (shard, trigger_id, job_type, requested_by, resumes) VALUES ({SHARD}, ?, ?, ?, ?)"
            ))
            .await?,
            recent: prepare(format!(
                "SELECT {COLUMNS} FROM {ks}.trigger_request WHERE shard = {SHARD} AND trigger_id > minTimeuuid(?) \
                 LIMIT {MAX_RECENT_REQUESTS}"
            ))
            .await?,
            get: prepare(format!(
                "SELECT {COLUMNS} FROM {ks}.trigger_request WHERE shard = {SHARD} AND trigger_id = ?"
            ))
            .await?,
            claim: prepare(format!(
                "UPDATE {ks}.trigger_request SET claimed_by = ?, claimed_at = ? WHERE shard = {SHARD} AND trigger_id = ? \
                 IF claimed_by = null AND withdrawn = null"
            ))
            .await?,
            withdraw: prepare(format!(
                "UPDATE {ks}.trigger_request SET withdrawn = true WHERE shard = {SHARD} AND trigger_id = ? IF claimed_by = null"
            ))
            .await?,
            record: prepare(format!(
                "UPDATE {ks}.trigger_request SET outcome = ?, job_id = ?, fencing_token = ?, detail = ? \
                 WHERE shard = {SHARD} AND trigger_id = ?"
            ))
            .await?,
            record_if_none: prepare(format!(
                "UPDATE {ks}.trigger_request SET outcome = ?, job_id = ?, fencing_token = ?, detail = ? \
                 WHERE shard = {SHARD} AND trigger_id = ? IF outcome = null"
            ))
            .await?,
            session,
        })
    }

    /// Records a request to run `job_type` under `trigger_id`.
    pub async fn request(
        &self,
        job_type: &str,
        trigger_id: TriggerId,
        requested_by: &str,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.insert,
                (CqlTimeuuid::from(trigger_id.uuid()), job_type, requested_by),
            )
            .await
            .map_err(|e| StoreError::request(format!("requesting a trigger of {job_type}"), e))?;
        Ok(())
    }

    /// Records a request, `request_id`, to run `job_type` again under the
    /// earlier trigger `resumes` (a handover at shutdown).
    pub async fn request_resuming(
        &self,
        job_type: &str,
        request_id: TriggerId,
        resumes: TriggerId,
        requested_by: &str,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.insert_resuming,
                (
                    CqlTimeuuid::from(request_id.uuid()),
                    job_type,
                    requested_by,
                    CqlTimeuuid::from(resumes.uuid()),
                ),
            )
            .await
            .map_err(|e| StoreError::request(format!("handing over a trigger of {job_type}"), e))?;
        Ok(())
    }

    /// The requests of the last `window`, newest first: at most
    /// [`MAX_RECENT_REQUESTS`], so that a flood of requests cannot make a
    /// watcher's read grow without bound. A request beyond them is not
    /// claimed and is withdrawn by its requester: it never starts late.
    pub async fn recent(&self, window: Duration) -> Result<Vec<TriggerRequest>, StoreError> {
        let since = cql::to_timestamp(SystemTime::now() - window);
        self.select(&self.recent, (since,), "reading recent trigger requests")
            .await
    }

    /// One request, if it exists.
    pub async fn get(&self, trigger_id: TriggerId) -> Result<Option<TriggerRequest>, StoreError> {
        Ok(self
            .select(
                &self.get,
                (CqlTimeuuid::from(trigger_id.uuid()),),
                "reading a trigger request",
            )
            .await?
            .into_iter()
            .next())
    }

    async fn select(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        what: &'static str,
    ) -> Result<Vec<TriggerRequest>, StoreError> {
        let rows: Vec<RequestRow> =
            cql::rows(self.session.execute_unpaged(statement, values).await, what)?;
        Ok(rows.into_iter().map(decode).collect())
    }

    /// Claims `trigger_id` for `node`: true for exactly one claimant, and
    /// never once it was withdrawn.
    pub async fn claim(&self, trigger_id: TriggerId, node: &NodeId) -> Result<bool, StoreError> {
        let what = || format!("claiming trigger request {trigger_id}");
        let result = self
            .session
            .execute_unpaged(
                &self.claim,
                (
                    node.as_str(),
                    cql::to_timestamp(SystemTime::now()),
                    CqlTimeuuid::from(trigger_id.uuid()),
                ),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }

    /// Withdraws an unclaimed request: true when it was still unclaimed (it
    /// will never run), false when a replica claimed it first.
    pub async fn withdraw(&self, trigger_id: TriggerId) -> Result<bool, StoreError> {
        let what = || format!("withdrawing trigger request {trigger_id}");
        let result = self
            .session
            .execute_unpaged(&self.withdraw, (CqlTimeuuid::from(trigger_id.uuid()),))
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }

    fn outcome_values(
        outcome: &RequestOutcome,
    ) -> (
        &'static str,
        Option<CqlTimeuuid>,
        Option<i64>,
        Option<String>,
    ) {
        match outcome {
            RequestOutcome::Started {
                job_id,
                fencing_token,
            } => (
                "started",
                Some(CqlTimeuuid::from(job_id.uuid())),
                Some(fencing_token.0),
                None,
            ),
            RequestOutcome::Locked { holder, owner } => (
                "locked",
                Some(CqlTimeuuid::from(holder.uuid())),
                None,
                owner.clone(),
            ),
            RequestOutcome::Queued { position } => {
                ("queued", None, None, Some(position.to_string()))
            }
            RequestOutcome::Error(e) => ("error", None, None, Some(e.clone())),
        }
    }

    /// Records what became of a claimed request (by its claimant).
    pub async fn record(
        &self,
        trigger_id: TriggerId,
        outcome: &RequestOutcome,
    ) -> Result<(), StoreError> {
        let (o, job, token, detail) = Self::outcome_values(outcome);
        self.session
            .execute_unpaged(
                &self.record,
                (o, job, token, detail, CqlTimeuuid::from(trigger_id.uuid())),
            )
            .await
            .map_err(|e| {
                StoreError::request(format!("recording the outcome of request {trigger_id}"), e)
            })?;
        Ok(())
    }

    /// Records an outcome only if none is recorded yet (a replica closing a
    /// request whose claimant never reported): true when it did.
    pub async fn record_if_none(
        &self,
        trigger_id: TriggerId,
        outcome: &RequestOutcome,
    ) -> Result<bool, StoreError> {
        let what = || format!("closing trigger request {trigger_id}");
        let (o, job, token, detail) = Self::outcome_values(outcome);
        let result = self
            .session
            .execute_unpaged(
                &self.record_if_none,
                (o, job, token, detail, CqlTimeuuid::from(trigger_id.uuid())),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }
}
