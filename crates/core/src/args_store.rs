//! [`ArgsStore`]: the `trigger_args` table, what each trigger given
//! parameters or a payload carries, read back by every attempt of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, TriggerId};
use crate::trigger_args::{Parent, TriggerArgs};

/// The `trigger_args` table.
pub struct ArgsStore {
    session: Arc<Session>,
    insert: PreparedStatement,
    get: PreparedStatement,
    retention: Duration,
}

impl std::fmt::Debug for ArgsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgsStore").finish_non_exhaustive()
    }
}

/// What a trigger carries, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArgs {
    /// The job type it was recorded for.
    pub job_type: String,
    /// The parameters and payload.
    pub args: TriggerArgs,
    /// Who triggered.
    pub given_by: Option<String>,
}

#[derive(scylla::DeserializeRow)]
struct ArgsRow {
    job_type: Option<String>,
    params: Option<BTreeMap<String, String>>,
    payload: Option<String>,
    given_by: Option<String>,
    parent_job_type: Option<String>,
    parent_job_id: Option<CqlTimeuuid>,
    chain_id: Option<CqlTimeuuid>,
}

impl ArgsStore {
    /// Prepares the statements; rows are written with a TTL of `retention`
    /// (the statuses' retention).
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
        let (insert, get) = futures::try_join!(
            prepare(format!(
                "INSERT INTO {ks}.trigger_args (trigger_id, job_type, params, payload, given_by, \
                 parent_job_type, parent_job_id, chain_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            )),
            prepare(format!(
                "SELECT job_type, params, payload, given_by, parent_job_type, parent_job_id, chain_id \
                 FROM {ks}.trigger_args WHERE trigger_id = ?"
            )),
        )?;
        Ok(Self {
            session,
            insert,
            get,
            retention,
        })
    }

    /// Records what `trigger_id` of `job_type` carries. Refuses arguments
    /// of a shape no trigger may have ([`TriggerArgs::shape_problem`]).
    pub async fn write(
        &self,
        trigger_id: TriggerId,
        job_type: &str,
        args: &TriggerArgs,
        given_by: &str,
    ) -> Result<(), StoreError> {
        if let Some(problem) = args.shape_problem() {
            return Err(StoreError::CorruptRow {
                table: "trigger_args",
                key: trigger_id.to_string(),
                problem: format!("not written: {problem}"),
            });
        }
        let ttl = i32::try_from(self.retention.as_secs()).unwrap_or(i32::MAX);
        self.session
            .execute_unpaged(
                &self.insert,
                (
                    CqlTimeuuid::from(trigger_id.uuid()),
                    job_type,
                    &args.params,
                    args.payload_text(),
                    given_by,
                    args.parent.as_ref().map(|p| p.job_type.as_str()),
                    args.parent
                        .as_ref()
                        .map(|p| CqlTimeuuid::from(p.job_id.uuid())),
                    args.parent
                        .as_ref()
                        .map(|p| CqlTimeuuid::from(p.chain_id.uuid())),
                    ttl,
                ),
            )
            .await
            .map_err(|e| {
                StoreError::request(
                    format!("recording the parameters of trigger {trigger_id}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// What `trigger_id` carries, if it was recorded (and not expired). A
    /// row of a shape hajobs never writes — too large, a malformed payload,
    /// written by another tool — is an error naming the trigger, not
    /// handed to a job.
    pub async fn read(&self, trigger_id: TriggerId) -> Result<Option<StoredArgs>, StoreError> {
        let what = format!("reading the parameters of trigger {trigger_id}");
        let rows: Vec<ArgsRow> = cql::rows(
            self.session
                .execute_unpaged(&self.get, (CqlTimeuuid::from(trigger_id.uuid()),))
                .await,
            &what,
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let corrupt = |problem: String| StoreError::CorruptRow {
            table: "trigger_args",
            key: trigger_id.to_string(),
            problem,
        };
        let payload = match row.payload {
            Some(text) if text.len() > crate::trigger_args::MAX_PAYLOAD_BYTES => {
                return Err(corrupt(format!("payload of {} bytes", text.len())));
            }
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?,
            ),
            None => None,
        };
        let parent = match (row.parent_job_type, row.parent_job_id, row.chain_id) {
            (Some(job_type), Some(job_id), Some(chain_id)) => Some(Parent {
                job_type,
                job_id: JobId::from_uuid(job_id.into()),
                chain_id: TriggerId::from_uuid(chain_id.into()),
            }),
            _ => None,
        };
        let args = TriggerArgs {
            params: row.params.unwrap_or_default(),
            payload,
            parent,
        };
        if let Some(problem) = args.shape_problem() {
            return Err(corrupt(problem));
        }
        Ok(Some(StoredArgs {
            job_type: row.job_type.unwrap_or_default(),
            args,
            given_by: row.given_by,
        }))
    }
}
