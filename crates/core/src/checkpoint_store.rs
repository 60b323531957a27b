//! [`CheckpointStore`]: the `checkpoint` table — a trigger's progress,
//! written only by the newest attempt of it, read by the next.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{JobId, TriggerId};
use crate::lease::FencingToken;
use crate::lwt::{LwtOutcome, Settled, settle};

/// The largest checkpoint, as compact JSON.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;

/// A trigger's last checkpoint, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The value the job recorded.
    pub value: serde_json::Value,
    /// The attempt that recorded it.
    pub job_id: Option<JobId>,
    /// When.
    pub written_at: Option<SystemTime>,
}

/// What fencing a trigger's checkpoint gave an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Fenced {
    /// The attempt is the newest: it reads `last` and may write.
    Newest {
        /// The last checkpoint, if any.
        last: Option<Checkpoint>,
    },
    /// An attempt with this newer (or equal) token fenced it first: this
    /// one is stale and must not run.
    Stale(FencingToken),
}

#[derive(scylla::DeserializeRow)]
struct Row {
    fencing_token: Option<i64>,
    job_id: Option<CqlTimeuuid>,
    value: Option<String>,
    written_at: Option<scylla::value::CqlTimestamp>,
}

/// The `checkpoint` table.
pub struct CheckpointStore {
    session: Arc<Session>,
    insert: PreparedStatement,
    fence: PreparedStatement,
    read_serial: PreparedStatement,
    write: PreparedStatement,
    ttl: i32,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore").finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Prepares the statements; rows expire `retention` after their last
    /// write.
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let prepare = |text: String, consistency| {
            let session = session.clone();
            async move { cql::prepare(&session, text, consistency, config).await }
        };
        let c = config.consistency;
        let (insert, fence, read_serial, write) = futures::try_join!(
            prepare(
                format!(
                    "INSERT INTO {ks}.checkpoint (trigger_id, job_type, fencing_token) VALUES (?, ?, ?) \
                     IF NOT EXISTS USING TTL ?"
                ),
                c
            ),
            prepare(
                format!(
                    "UPDATE {ks}.checkpoint USING TTL ? SET fencing_token = ? WHERE trigger_id = ? \
                     IF fencing_token < ?"
                ),
                c
            ),
            prepare(
                format!(
                    "SELECT fencing_token, job_id, value, written_at FROM {ks}.checkpoint WHERE trigger_id = ?"
                ),
                cql::serial_read(config)
            ),
            prepare(
                format!(
                    "UPDATE {ks}.checkpoint USING TTL ? SET value = ?, job_id = ?, written_at = ? \
                     WHERE trigger_id = ? IF fencing_token = ?"
                ),
                c
            ),
        )?;
        Ok(Self {
            session,
            insert,
            fence,
            read_serial,
            write,
            ttl: i32::try_from(retention.as_secs())
                .unwrap_or(i32::MAX)
                .max(1),
        })
    }

    async fn read(&self, trigger_id: TriggerId) -> Result<Option<Row>, StoreError> {
        let rows: Vec<Row> = cql::rows(
            self.session
                .execute_unpaged(&self.read_serial, (CqlTimeuuid::from(trigger_id.uuid()),))
                .await,
            &format!("reading the checkpoint of trigger {trigger_id}"),
        )?;
        Ok(rows.into_iter().next())
    }

    /// Fences the checkpoint of `trigger_id` with `token`, the lease of a
    /// starting attempt, then reads it (at SERIAL: after the fence no older
    /// attempt can write, so what is read is the last). Two LWTs and a read
    /// for a trigger that has a row, one LWT for a new one.
    pub async fn fence(
        &self,
        trigger_id: TriggerId,
        job_type: &str,
        token: FencingToken,
    ) -> Result<Fenced, StoreError> {
        let id = CqlTimeuuid::from(trigger_id.uuid());
        let what = || format!("fencing the checkpoint of trigger {trigger_id}");
        let inserted = match self
            .session
            .execute_unpaged(&self.insert, (id, job_type, token.0, self.ttl))
            .await
        {
            Ok(r) => LwtOutcome::from_result(r, &what())?.applied,
            Err(error) => {
                settle(what, error, self.read(trigger_id), |row| {
                    Ok(match row {
                        Some(r) if r.fencing_token == Some(token.0) && r.value.is_none() => {
                            Settled::Known(true)
                        }
                        Some(_) => Settled::Known(false),
                        None => Settled::Unknown,
                    })
                })
                .await?
            }
        };
        if inserted {
            return Ok(Fenced::Newest { last: None });
        }
        let fenced = match self
            .session
            .execute_unpaged(&self.fence, (self.ttl, token.0, id, token.0))
            .await
        {
            Ok(r) => LwtOutcome::from_result(r, &what())?.applied,
            Err(error) => {
                settle(what, error, self.read(trigger_id), |row| {
                    Ok(Settled::Known(
                        row.is_some_and(|r| r.fencing_token == Some(token.0)),
                    ))
                })
                .await?
            }
        };
        let row = self.read(trigger_id).await?;
        if !fenced {
            let theirs = row.and_then(|r| r.fencing_token).unwrap_or(i64::MAX);
            return Ok(Fenced::Stale(FencingToken(theirs)));
        }
        let last = match row {
            Some(Row {
                fencing_token: Some(t),
                ..
            }) if t != token.0 => {
                // Fenced again since, by a newer attempt.
                return Ok(Fenced::Stale(FencingToken(t)));
            }
            Some(Row {
                job_id,
                value: Some(text),
                written_at,
                ..
            }) => Some(Checkpoint {
                value: serde_json::from_str(&text).map_err(|e| StoreError::CorruptRow {
                    table: "checkpoint",
                    key: trigger_id.to_string(),
                    problem: format!("value is not JSON: {e}"),
                })?,
                job_id: job_id.map(|u| JobId::from_uuid(u.into())),
                written_at: written_at.map(cql::from_timestamp),
            }),
            _ => None,
        };
        Ok(Fenced::Newest { last })
    }

    /// Writes `value` as the checkpoint of `trigger_id` by attempt `job_id`
    /// holding `token`: `false` when a newer attempt has fenced it (this
    /// one is stale; nothing written). Refuses a value larger than
    /// [`MAX_CHECKPOINT_BYTES`].
    pub async fn write(
        &self,
        trigger_id: TriggerId,
        job_id: JobId,
        token: FencingToken,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let text = value.to_string();
        if text.len() > MAX_CHECKPOINT_BYTES {
            return Err(StoreError::CorruptRow {
                table: "checkpoint",
                key: trigger_id.to_string(),
                problem: format!(
                    "not written: {} bytes; at most {MAX_CHECKPOINT_BYTES}",
                    text.len()
                ),
            });
        }
        let what = || format!("writing the checkpoint of trigger {trigger_id}");
        let job = CqlTimeuuid::from(job_id.uuid());
        match self
            .session
            .execute_unpaged(
                &self.write,
                (
                    self.ttl,
                    &text,
                    job,
                    cql::to_timestamp(SystemTime::now()),
                    CqlTimeuuid::from(trigger_id.uuid()),
                    token.0,
                ),
            )
            .await
        {
            Ok(r) => Ok(LwtOutcome::from_result(r, &what())?.applied),
            Err(error) => {
                settle(what, error, self.read(trigger_id), |row| {
                    Ok(match row {
                        Some(r) if r.fencing_token != Some(token.0) => Settled::Known(false),
                        Some(r) if r.value.as_deref() == Some(text.as_str()) => {
                            Settled::Known(true)
                        }
                        _ => Settled::Unknown,
                    })
                })
                .await
            }
        }
    }
}
