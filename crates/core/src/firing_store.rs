//! [`FiringStore`]: each cron firing of a job type claimed once, cluster-wide.
//!
//! Every replica's cron fires for the same scheduled instant. The first to
//! insert `(job_type, instant)` with `IF NOT EXISTS` runs it; the others see
//! the claim and do nothing, however late their clock makes them fire, and
//! however short the job was.
//!
//! The claimant then says what became of its claim: `seen_at` while it waits
//! for a held lock, `outcome` once decided ([`FiringOutcome`]). A claim that
//! stays without an outcome and unseen belongs to a replica that died between
//! claim and start; [`FiringStore::close_lost`] closes it once, so that a
//! supervisor records its trigger FAILED and re-runs it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{NodeId, TriggerId};
use crate::lwt::LwtOutcome;
use crate::status::JobType;

/// What became of a claimed firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiringOutcome {
    /// Its attempt started.
    Started,
    /// Its lock stayed held for a whole period: skipped, by design.
    Skipped,
    /// Its claimant died or stalled before starting it; closed by another.
    Lost,
}

impl FiringOutcome {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Skipped => "skipped",
            Self::Lost => "lost",
        }
    }
}

/// One claimed firing, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The scheduled instant.
    pub instant: SystemTime,
    /// Its trigger id.
    pub trigger_id: TriggerId,
    /// The replica that claimed it.
    pub owner: Option<String>,
    /// What became of it, if recorded (`None` also for claims made before
    /// schema 8).
    pub outcome: Option<String>,
    /// When its claimant last said it still works on it (claims made before
    /// schema 8 have none).
    pub seen_at: Option<SystemTime>,
}

/// Cron firing claims.
pub struct FiringStore {
    session: Arc<Session>,
    claim: PreparedStatement,
    touch: PreparedStatement,
    record: PreparedStatement,
    recent: PreparedStatement,
    close: PreparedStatement,
    read: PreparedStatement,
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
                    "INSERT INTO {ks}.cron_firing (job_type, instant, trigger_id, owner, seen_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                ),
                config.consistency,
            )
            .await?,
            touch: prepare(
                format!(
                    "UPDATE {ks}.cron_firing USING TTL ? SET seen_at = ? WHERE job_type = ? AND instant = ?"
                ),
                config.consistency,
            )
            .await?,
            record: prepare(
                format!(
                    "UPDATE {ks}.cron_firing USING TTL ? SET outcome = ? WHERE job_type = ? AND instant = ?"
                ),
                config.consistency,
            )
            .await?,
            recent: prepare(
                format!(
                    "SELECT instant, trigger_id, owner, outcome, seen_at FROM {ks}.cron_firing WHERE job_type = ? LIMIT ?"
                ),
                config.consistency,
            )
            .await?,
            close: prepare(
                format!(
                    "UPDATE {ks}.cron_firing USING TTL ? SET outcome = 'lost' WHERE job_type = ? AND instant = ? IF outcome = null"
                ),
                config.consistency,
            )
            .await?,
            read: prepare(
                format!("SELECT owner FROM {ks}.cron_firing WHERE job_type = ? AND instant = ?"),
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
            cql::to_timestamp(SystemTime::now()),
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

    /// Who claimed the firing of `job_type` at `instant`, read at the
    /// configured consistency (one read, no Paxos round): a claim whose LWT
    /// has completed is seen; one still in flight may not be.
    pub async fn claimed_by(
        &self,
        job_type: &JobType,
        instant: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        let ts = cql::to_timestamp(instant);
        let what = || format!("reading the claim of the cron firing of `{job_type}` at {ts:?}");
        Ok(self
            .session
            .execute_unpaged(&self.read, (job_type.as_str(), ts))
            .await
            .map_err(|e| StoreError::request(what(), e))?
            .into_rows_result()
            .map_err(|e| StoreError::request(what(), e))?
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| StoreError::request(what(), e))?
            .map(|(owner,)| owner.unwrap_or_default()))
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

    /// The claimant still works on the firing (it waits for a held lock).
    pub async fn touch(&self, job_type: &JobType, instant: SystemTime) -> Result<(), StoreError> {
        let values = (
            self.retention_secs,
            cql::to_timestamp(SystemTime::now()),
            job_type.as_str(),
            cql::to_timestamp(instant),
        );
        self.session
            .execute_unpaged(&self.touch, values)
            .await
            .map_err(|e| {
                StoreError::request(format!("marking the cron firing of `{job_type}` seen"), e)
            })?;
        Ok(())
    }

    /// Records what became of the firing.
    pub async fn record(
        &self,
        job_type: &JobType,
        instant: SystemTime,
        outcome: FiringOutcome,
    ) -> Result<(), StoreError> {
        let values = (
            self.retention_secs,
            outcome.as_str(),
            job_type.as_str(),
            cql::to_timestamp(instant),
        );
        self.session
            .execute_unpaged(&self.record, values)
            .await
            .map_err(|e| {
                StoreError::request(format!("recording the cron firing of `{job_type}`"), e)
            })?;
        Ok(())
    }

    /// The newest `limit` claimed firings of `job_type`, newest first.
    pub async fn recent(&self, job_type: &JobType, limit: i32) -> Result<Vec<Firing>, StoreError> {
        let what = || format!("reading the recent cron firings of `{job_type}`");
        type Row = (
            CqlTimestamp,
            Option<CqlTimeuuid>,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
        );
        let rows = self
            .session
            .execute_unpaged(&self.recent, (job_type.as_str(), limit))
            .await
            .map_err(|e| StoreError::request(what(), e))?
            .into_rows_result()
            .map_err(|e| StoreError::request(what(), e))?;
        let mut out = Vec::new();
        for row in rows
            .rows::<Row>()
            .map_err(|e| StoreError::request(what(), e))?
        {
            let (instant, trigger_id, owner, outcome, seen_at) =
                row.map_err(|e| StoreError::request(what(), e))?;
            let instant = cql::from_timestamp(instant);
            out.push(Firing {
                instant,
                trigger_id: trigger_id.map_or_else(
                    || TriggerId::for_firing(job_type.as_str(), instant),
                    |t| TriggerId::from_uuid(t.into()),
                ),
                owner,
                outcome,
                seen_at: seen_at.map(cql::from_timestamp),
            });
        }
        Ok(out)
    }

    /// Closes a firing nobody started: `true` for exactly one caller, and
    /// never once its claimant recorded an outcome.
    pub async fn close_lost(
        &self,
        job_type: &JobType,
        instant: SystemTime,
    ) -> Result<bool, StoreError> {
        let what = || format!("closing a lost cron firing of `{job_type}`");
        let result = self
            .session
            .execute_unpaged(
                &self.close,
                (
                    self.retention_secs,
                    job_type.as_str(),
                    cql::to_timestamp(instant),
                ),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }
}
