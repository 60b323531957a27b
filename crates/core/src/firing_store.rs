//! [`FiringStore`]: each cron firing of a job type claimed once, cluster-wide.
//!
//! Every replica's cron fires for the same scheduled instant. The first to
//! insert `(job_type, instant)` with `IF NOT EXISTS` runs it; the others see
//! the claim and do nothing, however late their clock makes them fire, and
//! however short the job was.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimeuuid, CqlValue};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{NodeId, TriggerId};
use crate::lwt::LwtOutcome;
use crate::status::JobType;

/// Cron firing claims.
pub struct FiringStore {
    session: Arc<Session>,
    claim: PreparedStatement,
    read_serial: PreparedStatement,
    last: PreparedStatement,
    /// TTL of a claim, in seconds (the status retention).
    retention_secs: i32,
}

impl std::fmt::Debug for FiringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiringStore").finish_non_exhaustive()
    }
}

impl FiringStore {
    /// Prepares the statements; claims live for `retention`.
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String, consistency: Consistency| {
            let session = session.clone();
            async move { cql::prepare(&session, text, consistency, config).await }
        };
        let serial = cql::serial_read(config);
        Ok(Self {
            claim: prepare(
                format!(
                    "INSERT INTO {ks}.cron_firing (job_type, instant, trigger_id, owner) VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                ),
                config.consistency,
            )
            .await?,
            read_serial: prepare(
                format!("SELECT owner FROM {ks}.cron_firing WHERE job_type = ? AND instant = ?"),
                serial,
            )
            .await?,
            last: prepare(
                format!("SELECT instant FROM {ks}.cron_firing WHERE job_type = ? LIMIT 1"),
                config.consistency,
            )
            .await?,
            session,
            retention_secs: i32::try_from(retention.as_secs().clamp(1, 630_720_000))
                .unwrap_or(i32::MAX),
        })
    }

    /// Claims the firing of `job_type` at `instant` for `owner`. `true`: this
    /// replica runs it; `false`: another replica claimed it. An unknown
    /// outcome is settled by a SERIAL read.
    pub async fn claim(
        &self,
        job_type: &JobType,
        instant: SystemTime,
        trigger_id: TriggerId,
        owner: &NodeId,
    ) -> Result<bool, StoreError> {
        let ts = cql::to_timestamp(instant);
        let values = (
            job_type.as_str(),
            ts,
            CqlTimeuuid::from(trigger_id.uuid()),
            owner.as_str(),
            self.retention_secs,
        );
        let what = || format!("claiming the cron firing of `{job_type}` at {ts:?}");
        match self.session.execute_unpaged(&self.claim, values).await {
            Ok(result) => Ok(LwtOutcome::from_result(result, &what())?.applied),
            Err(error) => {
                let read = self
                    .session
                    .execute_unpaged(&self.read_serial, (job_type.as_str(), ts))
                    .await
                    .map_err(|_| StoreError::request(what(), error))?;
                let owner_read = read
                    .into_rows_result()
                    .map_err(|e| StoreError::request(what(), e))?
                    .maybe_first_row::<(Option<String>,)>()
                    .map_err(|e| StoreError::request(what(), e))?
                    .and_then(|(o,)| o);
                Ok(owner_read.as_deref() == Some(owner.as_str()))
            }
        }
    }

    /// The latest instant claimed for `job_type`, if any.
    pub async fn last_claimed(&self, job_type: &JobType) -> Result<Option<SystemTime>, StoreError> {
        let what = || format!("reading the last cron firing of `{job_type}`");
        let row = self
            .session
            .execute_unpaged(&self.last, (job_type.as_str(),))
            .await
            .map_err(|e| StoreError::request(what(), e))?
            .into_rows_result()
            .map_err(|e| StoreError::request(what(), e))?
            .maybe_first_row::<(Option<CqlValue>,)>()
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(match row {
            Some((Some(CqlValue::Timestamp(t)),)) => Some(cql::from_timestamp(t)),
            _ => None,
        })
    }
}
