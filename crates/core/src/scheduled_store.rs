//! [`ScheduledStore`]: one-time triggers due at a given time
//! (`scheduled_trigger`, partitioned by the hour they are due, and
//! `scheduled_bucket`, the hours that hold any), each claimed once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::TriggerId;
use crate::lwt::{LwtOutcome, Settled, settle};

/// The most rows one read of a time window returns: a window holding more
/// is read in its first [`MAX_WINDOW_ROWS`] (the rest once those have
/// fired and the window moved on), so that no flood of scheduled triggers
/// makes a replica's memory or a read grow without bound.
pub const MAX_WINDOW_ROWS: usize = 200_000;

/// The farthest ahead a trigger may be scheduled.
pub const MAX_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

/// One scheduled trigger, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledTrigger {
    /// The trigger it starts.
    pub trigger_id: TriggerId,
    /// The job type (as stored; validated by whoever fires it).
    pub job_type: String,
    /// When it is due.
    pub due_at: SystemTime,
    /// Who scheduled it.
    pub scheduled_by: Option<String>,
    /// The replica that fires it, once claimed.
    pub claimed_by: Option<String>,
    /// When it was claimed (the claimant's clock).
    pub claimed_at: Option<SystemTime>,
    /// What became of it: `started`, `queued`, `skipped`, `error`.
    pub outcome: Option<String>,
    /// The attempt it started, or why it did not.
    pub detail: Option<String>,
    /// Who removed it before it fired.
    pub removed_by: Option<String>,
}

impl ScheduledTrigger {
    /// Neither claimed nor removed: it still fires.
    pub fn is_pending(&self) -> bool {
        self.claimed_by.is_none() && self.removed_by.is_none()
    }
}

/// The hour `t` falls in (epoch hours): a trigger's partition.
pub fn bucket_of(t: SystemTime) -> i64 {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(secs / 3600).unwrap_or(i64::MAX)
}

const COLUMNS: &str = "trigger_id, job_type, due_at, scheduled_by, claimed_by, claimed_at, outcome, detail, removed_by";

#[derive(scylla::DeserializeRow)]
struct Row {
    trigger_id: CqlTimeuuid,
    job_type: Option<String>,
    due_at: CqlTimestamp,
    scheduled_by: Option<String>,
    claimed_by: Option<String>,
    claimed_at: Option<CqlTimestamp>,
    outcome: Option<String>,
    detail: Option<String>,
    removed_by: Option<String>,
}

impl From<Row> for ScheduledTrigger {
    fn from(r: Row) -> Self {
        Self {
            trigger_id: TriggerId::from_uuid(r.trigger_id.into()),
            job_type: r.job_type.unwrap_or_default(),
            due_at: cql::from_timestamp(r.due_at),
            scheduled_by: r.scheduled_by,
            claimed_by: r.claimed_by,
            claimed_at: r.claimed_at.map(cql::from_timestamp),
            outcome: r.outcome,
            detail: r.detail,
            removed_by: r.removed_by,
        }
    }
}

/// The `scheduled_trigger` and `scheduled_bucket` tables.
pub struct ScheduledStore {
    session: Arc<Session>,
    insert: PreparedStatement,
    insert_bucket: PreparedStatement,
    window: PreparedStatement,
    buckets: PreparedStatement,
    claim: PreparedStatement,
    take_over: PreparedStatement,
    read: PreparedStatement,
    read_serial: PreparedStatement,
    record: PreparedStatement,
    remove: PreparedStatement,
    retention: Duration,
}

impl std::fmt::Debug for ScheduledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledStore").finish_non_exhaustive()
    }
}

impl ScheduledStore {
    /// Prepares the statements; a trigger's rows expire `retention` after
    /// it was due.
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
        let key = "bucket = ? AND due_at = ? AND trigger_id = ?";
        let (insert, insert_bucket, window, buckets, claim) = futures::try_join!(
            prepare(
                format!(
                    "INSERT INTO {ks}.scheduled_trigger (bucket, due_at, trigger_id, job_type, scheduled_by) \
                     VALUES (?, ?, ?, ?, ?) USING TTL ?"
                ),
                c
            ),
            prepare(
                format!(
                    "INSERT INTO {ks}.scheduled_bucket (shard, bucket) VALUES (0, ?) USING TTL ?"
                ),
                c
            ),
            prepare(
                format!(
                    "SELECT {COLUMNS} FROM {ks}.scheduled_trigger WHERE bucket = ? AND due_at >= ? AND due_at < ?"
                ),
                c
            ),
            prepare(
                format!(
                    "SELECT bucket FROM {ks}.scheduled_bucket WHERE shard = 0 AND bucket >= ? AND bucket <= ?"
                ),
                c
            ),
            prepare(
                format!(
                    "UPDATE {ks}.scheduled_trigger USING TTL ? SET claimed_by = ?, claimed_at = ? WHERE {key} \
                     IF claimed_by = null AND removed_by = null"
                ),
                c
            ),
        )?;
        let (take_over, read, read_serial, record, remove) = futures::try_join!(
            prepare(
                format!(
                    "UPDATE {ks}.scheduled_trigger USING TTL ? SET claimed_by = ?, claimed_at = ? WHERE {key} \
                     IF claimed_by = ? AND outcome = null"
                ),
                c
            ),
            prepare(
                format!("SELECT {COLUMNS} FROM {ks}.scheduled_trigger WHERE {key}"),
                c
            ),
            prepare(
                format!("SELECT {COLUMNS} FROM {ks}.scheduled_trigger WHERE {key}"),
                cql::serial_read(config)
            ),
            prepare(
                format!(
                    "UPDATE {ks}.scheduled_trigger USING TTL ? SET outcome = ?, detail = ? WHERE {key}"
                ),
                c
            ),
            prepare(
                format!(
                    "UPDATE {ks}.scheduled_trigger USING TTL ? SET removed_by = ? WHERE {key} \
                     IF claimed_by = null AND removed_by = null"
                ),
                c
            ),
        )?;
        Ok(Self {
            session,
            insert,
            insert_bucket,
            window,
            buckets,
            claim,
            take_over,
            read,
            read_serial,
            record,
            remove,
            retention,
        })
    }

    /// The TTL of a row of a trigger due at `due_at`: until a retention
    /// after it was due.
    fn ttl(&self, due_at: SystemTime) -> i32 {
        let ahead = due_at.duration_since(SystemTime::now()).unwrap_or_default();
        i32::try_from((ahead + self.retention).as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    fn key(t: &ScheduledTrigger) -> (i64, CqlTimestamp, CqlTimeuuid) {
        (
            bucket_of(t.due_at),
            cql::to_timestamp(t.due_at),
            CqlTimeuuid::from(t.trigger_id.uuid()),
        )
    }

    /// Records trigger `trigger_id` of `job_type`, due at `due_at`, asked
    /// by `by`. Refuses a time more than [`MAX_AHEAD`] away.
    pub async fn schedule(
        &self,
        trigger_id: TriggerId,
        job_type: &str,
        due_at: SystemTime,
        by: &str,
    ) -> Result<ScheduledTrigger, StoreError> {
        if due_at > SystemTime::now() + MAX_AHEAD {
            return Err(StoreError::CorruptRow {
                table: "scheduled_trigger",
                key: trigger_id.to_string(),
                problem: format!(
                    "not written: due more than {} days ahead",
                    MAX_AHEAD.as_secs() / 86_400
                ),
            });
        }
        let what = || format!("scheduling trigger {trigger_id} of {job_type}");
        let ttl = self.ttl(due_at);
        let bucket = bucket_of(due_at);
        // The hour first: a listed hour without its trigger is harmless,
        // a trigger in an hour nobody lists is not.
        self.session
            .execute_unpaged(&self.insert_bucket, (bucket, ttl))
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        self.session
            .execute_unpaged(
                &self.insert,
                (
                    bucket,
                    cql::to_timestamp(due_at),
                    CqlTimeuuid::from(trigger_id.uuid()),
                    job_type,
                    by,
                    ttl,
                ),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(ScheduledTrigger {
            trigger_id,
            job_type: job_type.to_owned(),
            due_at,
            scheduled_by: Some(by.to_owned()),
            claimed_by: None,
            claimed_at: None,
            outcome: None,
            detail: None,
            removed_by: None,
        })
    }

    /// The triggers due in `[from, to)`, soonest first, at most
    /// [`MAX_WINDOW_ROWS`]: the hours the window spans, each read as one
    /// slice of its partition.
    pub async fn due_between(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<ScheduledTrigger>, StoreError> {
        let mut out = Vec::new();
        for bucket in bucket_of(from)..=bucket_of(to) {
            self.read_slice(bucket, from, to, &mut out).await?;
            if out.len() >= MAX_WINDOW_ROWS {
                break;
            }
        }
        Ok(out)
    }

    async fn read_slice(
        &self,
        bucket: i64,
        from: SystemTime,
        to: SystemTime,
        out: &mut Vec<ScheduledTrigger>,
    ) -> Result<(), StoreError> {
        let what = "reading scheduled triggers";
        let mut rows = self
            .session
            .execute_iter(
                self.window.clone(),
                (bucket, cql::to_timestamp(from), cql::to_timestamp(to)),
            )
            .await
            .map_err(|e| StoreError::request(what, e))?
            .rows_stream::<Row>()
            .map_err(|e| StoreError::request(what, e))?;
        while let Some(row) = rows.next().await {
            out.push(row.map_err(|e| StoreError::request(what, e))?.into());
            if out.len() >= MAX_WINDOW_ROWS {
                break;
            }
        }
        Ok(())
    }

    /// The hours from `from` to `to` that hold scheduled triggers.
    pub async fn hours(&self, from: SystemTime, to: SystemTime) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = cql::rows(
            self.session
                .execute_unpaged(&self.buckets, (bucket_of(from), bucket_of(to)))
                .await,
            "reading the hours of scheduled triggers",
        )?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    /// Every trigger due in `[from, to)` of the hours that hold any (for
    /// listing, and for a replica catching up at start), at most
    /// [`MAX_WINDOW_ROWS`].
    pub async fn list(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<ScheduledTrigger>, StoreError> {
        let mut out = Vec::new();
        for bucket in self.hours(from, to).await? {
            self.read_slice(bucket, from, to, &mut out).await?;
            if out.len() >= MAX_WINDOW_ROWS {
                break;
            }
        }
        Ok(out)
    }

    async fn read_serial(
        &self,
        t: &ScheduledTrigger,
    ) -> Result<Option<ScheduledTrigger>, StoreError> {
        self.read_with(&self.read_serial, t).await
    }

    /// `t` as stored now, read at the configured consistency (one read, no
    /// Paxos round: a claim whose LWT completed is seen).
    pub async fn get(&self, t: &ScheduledTrigger) -> Result<Option<ScheduledTrigger>, StoreError> {
        self.read_with(&self.read, t).await
    }

    async fn read_with(
        &self,
        statement: &PreparedStatement,
        t: &ScheduledTrigger,
    ) -> Result<Option<ScheduledTrigger>, StoreError> {
        let rows: Vec<Row> = cql::rows(
            self.session.execute_unpaged(statement, Self::key(t)).await,
            &format!("reading scheduled trigger {}", t.trigger_id),
        )?;
        Ok(rows.into_iter().next().map(Into::into))
    }

    /// Claims `t` for `node`: `true` when this replica fires it. Once
    /// claimed (or removed) it is never claimed again; an unknown outcome
    /// is settled by a SERIAL read.
    pub async fn claim(&self, t: &ScheduledTrigger, node: &str) -> Result<bool, StoreError> {
        let (bucket, due, id) = Self::key(t);
        let now = cql::to_timestamp(SystemTime::now());
        let result = self
            .session
            .execute_unpaged(
                &self.claim,
                (self.ttl(t.due_at), node, now, bucket, due, id),
            )
            .await;
        self.settled(t, node, result, "claiming").await
    }

    /// Takes over `t` from `from`, a claimant that never said what became
    /// of it (it died between its claim and the start): `true` when this
    /// replica fires it now.
    pub async fn take_over(
        &self,
        t: &ScheduledTrigger,
        from: &str,
        node: &str,
    ) -> Result<bool, StoreError> {
        let (bucket, due, id) = Self::key(t);
        let now = cql::to_timestamp(SystemTime::now());
        let result = self
            .session
            .execute_unpaged(
                &self.take_over,
                (self.ttl(t.due_at), node, now, bucket, due, id, from),
            )
            .await;
        self.settled(t, node, result, "taking over").await
    }

    async fn settled(
        &self,
        t: &ScheduledTrigger,
        node: &str,
        result: Result<scylla::response::query_result::QueryResult, scylla::errors::ExecutionError>,
        doing: &str,
    ) -> Result<bool, StoreError> {
        let what = || format!("{doing} scheduled trigger {}", t.trigger_id);
        match result {
            Ok(r) => Ok(LwtOutcome::from_result(r, &what())?.applied),
            Err(error) => {
                settle(what, error, self.read_serial(t), |row| {
                    Ok(Settled::Known(row.is_some_and(|r| {
                        r.claimed_by.as_deref() == Some(node) && r.outcome.is_none()
                    })))
                })
                .await
            }
        }
    }

    /// Records what became of `t`: `outcome` (`started`, `queued`,
    /// `skipped`, `error`) and its detail.
    pub async fn record(
        &self,
        t: &ScheduledTrigger,
        outcome: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (bucket, due, id) = Self::key(t);
        self.session
            .execute_unpaged(
                &self.record,
                (self.ttl(t.due_at), outcome, detail, bucket, due, id),
            )
            .await
            .map_err(|e| {
                StoreError::request(format!("recording scheduled trigger {}", t.trigger_id), e)
            })?;
        Ok(())
    }

    /// Removes `t` before it fires, naming `by`: `false` when it was
    /// claimed (it fires, or fired) or removed meanwhile.
    pub async fn remove(&self, t: &ScheduledTrigger, by: &str) -> Result<bool, StoreError> {
        let (bucket, due, id) = Self::key(t);
        let result = self
            .session
            .execute_unpaged(&self.remove, (self.ttl(t.due_at), by, bucket, due, id))
            .await;
        let what = || format!("removing scheduled trigger {}", t.trigger_id);
        match result {
            Ok(r) => Ok(LwtOutcome::from_result(r, &what())?.applied),
            Err(error) => {
                settle(what, error, self.read_serial(t), |row| {
                    Ok(Settled::Known(
                        row.is_some_and(|r| r.removed_by.as_deref() == Some(by)),
                    ))
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_lives_in_the_hour_it_is_due() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(3 * 3600 + 59 * 60);
        assert_eq!(bucket_of(at), 3);
        assert_eq!(bucket_of(at + Duration::from_secs(60)), 4);
    }
}
