//! [`FiringStore`]: each cron firing of a job type claimed once, cluster-wide.
//!
//! Every replica's cron fires for the same scheduled instant. The first to
//! insert `(job_type, instant)` with `IF NOT EXISTS` runs it; the others see
//! the claim and do nothing, however late their clock makes them fire, and
//! however short the job was.
//!
//! Claims live in `cron_firing_day`, partitioned by job type and UTC day
//! (schema 10), so that no partition holds more than a day of a job's
//! firings (86,400 for a per-second cron). Claims for instants before the
//! **cutover** — one minute after schema 10 was applied, read from
//! `schema_migrations` by every replica, the same for all — stay in
//! `cron_firing` (partitioned by job type alone), so that during the switch
//! every firing is claimed in exactly one table; reads look at both. A
//! keyspace that got schemas 2 and 10 in one run never claimed in
//! `cron_firing`: its cutover is the epoch.
//!
//! The claimant then says what became of its claim: `seen_at` while it waits
//! for a held lock, `outcome` once decided ([`FiringOutcome`]). A claim that
//! stays without an outcome and unseen belongs to a replica that died between
//! claim and start; [`FiringStore::close_lost`] closes it once, so that a
//! supervisor records its trigger FAILED and re-runs it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue};

use crate::config::CassandraConfig;
use crate::cql;
use crate::error::StoreError;
use crate::ids::{NodeId, TriggerId};
use crate::lwt::{LwtOutcome, Settled, settle};
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
    /// Its lock was held: queued for it (`on_locked = "queue"`); the queue
    /// entry carries the trigger from here on.
    Queued,
}

impl FiringOutcome {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Skipped => "skipped",
            Self::Lost => "lost",
            Self::Queued => "queued",
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

/// How long after schema 10 was applied claims move to `cron_firing_day`:
/// every replica learns of it well before (they look every few seconds).
pub const CUTOVER_DELAY: Duration = Duration::from_secs(60);

/// How many days back [`FiringStore::last_claimed`] looks for a claim.
const LAST_CLAIM_DAYS: i32 = 31;

/// The statements on one of the two tables.
struct Statements {
    claim: PreparedStatement,
    touch: PreparedStatement,
    record: PreparedStatement,
    recent: PreparedStatement,
    close: PreparedStatement,
    read: PreparedStatement,
    read_serial: PreparedStatement,
}

/// Where a firing's claim lives.
enum Place<'a> {
    /// `cron_firing`: the key is (job_type, instant).
    Legacy(&'a Statements),
    /// `cron_firing_day`: the key is ((job_type, day), instant).
    Daily(&'a Statements, i32),
}

/// The day bucket of an instant: days since 1970-01-01, UTC.
pub fn day_of(instant: SystemTime) -> i32 {
    let ms = cql::to_timestamp(instant).0;
    i32::try_from(ms.div_euclid(86_400_000)).unwrap_or(i32::MAX)
}

/// Cron firing claims.
pub struct FiringStore {
    session: Arc<Session>,
    config: CassandraConfig,
    legacy: Statements,
    /// Set once schema 10 is seen applied: the daily statements and the
    /// cutover instant.
    daily: OnceLock<(Statements, SystemTime)>,
    last: PreparedStatement,
    /// TTL of a claim, in seconds (the status retention).
    retention_secs: i32,
}

impl std::fmt::Debug for FiringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiringStore").finish_non_exhaustive()
    }
}

async fn statements(
    session: &Session,
    config: &CassandraConfig,
    table: &str,
    key: &str,
) -> Result<Statements, StoreError> {
    let ks = &config.keyspace;
    let prepare = |text: String, consistency: Consistency| async move {
        cql::prepare(session, text, consistency, config).await
    };
    let c = config.consistency;
    // `key` is the WHERE clause of one claim, `?` for each key column.
    Ok(Statements {
        claim: prepare(
            format!(
                "INSERT INTO {ks}.{table} ({cols}, trigger_id, owner, seen_at) VALUES ({marks}, ?, ?, ?) IF NOT EXISTS USING TTL ?",
                cols = key_columns(key),
                marks = key_marks(key),
            ),
            c,
        )
        .await?,
        touch: prepare(
            format!("UPDATE {ks}.{table} USING TTL ? SET seen_at = ? WHERE {key}"),
            c,
        )
        .await?,
        record: prepare(
            format!("UPDATE {ks}.{table} USING TTL ? SET outcome = ? WHERE {key}"),
            c,
        )
        .await?,
        recent: prepare(
            format!(
                "SELECT instant, trigger_id, owner, outcome, seen_at FROM {ks}.{table} WHERE {partition} LIMIT ?",
                partition = key.trim_end_matches(" AND instant = ?"),
            ),
            c,
        )
        .await?,
        close: prepare(
            format!(
                "UPDATE {ks}.{table} USING TTL ? SET outcome = 'lost' WHERE {key} IF outcome = null"
            ),
            c,
        )
        .await?,
        read: prepare(format!("SELECT owner FROM {ks}.{table} WHERE {key}"), c).await?,
        read_serial: prepare(
            format!("SELECT owner FROM {ks}.{table} WHERE {key}"),
            cql::serial_read(config),
        )
        .await?,
    })
}

/// `job_type = ? AND day = ? AND instant = ?` → `job_type, day, instant`.
fn key_columns(key: &str) -> String {
    key.split(" AND ")
        .map(|c| c.trim_end_matches(" = ?"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `job_type = ? AND day = ? AND instant = ?` → `?, ?, ?`.
fn key_marks(key: &str) -> String {
    vec!["?"; key.split(" AND ").count()].join(", ")
}

const LEGACY_KEY: &str = "job_type = ? AND instant = ?";
const DAILY_KEY: &str = "job_type = ? AND day = ? AND instant = ?";

/// A row of `cron_firing` (or the legacy table), decoded by column name.
#[derive(scylla::DeserializeRow)]
struct FiringRow {
    instant: CqlTimestamp,
    trigger_id: Option<CqlTimeuuid>,
    owner: Option<String>,
    outcome: Option<String>,
    seen_at: Option<CqlTimestamp>,
}

impl FiringStore {
    /// Prepares the statements; claims live for `retention`. Looks whether
    /// schema 10 is applied (see [`FiringStore::refresh`]).
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        crate::schema::validate_keyspace(ks)?;
        let store = Self {
            legacy: statements(&session, config, "cron_firing", LEGACY_KEY).await?,
            daily: OnceLock::new(),
            last: cql::prepare(
                &session,
                format!("SELECT instant FROM {ks}.cron_firing WHERE job_type = ? LIMIT 1"),
                config.consistency,
                config,
            )
            .await?,
            session,
            config: config.clone(),
            retention_secs: i32::try_from(retention.as_secs().clamp(1, 630_720_000))
                .unwrap_or(i32::MAX),
        };
        store.refresh().await?;
        Ok(store)
    }

    /// Looks again whether schema 10 is applied, if not yet seen; once it
    /// is, claims for instants from its cutover on go to `cron_firing_day`.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        if self.daily.get().is_some() {
            return Ok(());
        }
        let ks = &self.config.keyspace;
        let what = "reading when schema 10 was applied";
        let rows = self
            .session
            .query_unpaged(
                format!(
                    "SELECT version, applied_at FROM {ks}.schema_migrations WHERE version IN (2, 10)"
                ),
                (),
            )
            .await;
        let (mut claims_table_at, mut applied_at) = (None, None);
        // A keyspace without `schema_migrations` is not yet applied.
        if let Ok(rows) = rows {
            for row in rows
                .into_rows_result()
                .map_err(|e| StoreError::request(what, e))?
                .rows::<(i32, Option<CqlTimestamp>)>()
                .map_err(|e| StoreError::request(what, e))?
            {
                match row.map_err(|e| StoreError::request(what, e))? {
                    (2, at) => claims_table_at = at.map(cql::from_timestamp),
                    (_, at) => applied_at = at.map(cql::from_timestamp),
                }
            }
        }
        if let Some(applied_at) = applied_at {
            let daily =
                statements(&self.session, &self.config, "cron_firing_day", DAILY_KEY).await?;
            // Applied in the same run as `cron_firing` itself (a new
            // keyspace): no claim was ever made there; day buckets at once.
            let fresh = claims_table_at.is_some_and(|t| {
                applied_at
                    .duration_since(t)
                    .is_ok_and(|d| d < CUTOVER_DELAY)
            });
            let cutover = if fresh {
                SystemTime::UNIX_EPOCH
            } else {
                applied_at + CUTOVER_DELAY
            };
            let _ = self.daily.set((daily, cutover));
        }
        Ok(())
    }

    /// From which scheduled instant on claims live in `cron_firing_day`.
    pub fn cutover(&self) -> Option<SystemTime> {
        self.daily.get().map(|(_, c)| *c)
    }

    fn place(&self, instant: SystemTime) -> Place<'_> {
        match self.daily.get() {
            Some((daily, cutover)) if instant >= *cutover => Place::Daily(daily, day_of(instant)),
            _ => Place::Legacy(&self.legacy),
        }
    }

    /// Runs `pick(statements)` with the key of (`job_type`, `instant`)
    /// followed by `extra` values … in the order the statement wants.
    async fn execute_keyed(
        &self,
        job_type: &JobType,
        instant: SystemTime,
        pick: impl Fn(&Statements) -> &PreparedStatement,
        before: Option<(i32, Option<CqlValue>)>,
        after: Vec<Option<CqlValue>>,
    ) -> Result<scylla::response::query_result::QueryResult, scylla::errors::ExecutionError> {
        let ts = cql::to_timestamp(instant);
        let mut values: Vec<Option<CqlValue>> = Vec::new();
        if let Some((ttl, v)) = before {
            values.push(Some(CqlValue::Int(ttl)));
            if let Some(v) = v {
                values.push(Some(v));
            }
        }
        let statement = match self.place(instant) {
            Place::Legacy(s) => {
                values.push(Some(CqlValue::Text(job_type.as_str().to_owned())));
                values.push(Some(CqlValue::Timestamp(ts)));
                pick(s)
            }
            Place::Daily(s, day) => {
                values.push(Some(CqlValue::Text(job_type.as_str().to_owned())));
                values.push(Some(CqlValue::Int(day)));
                values.push(Some(CqlValue::Timestamp(ts)));
                pick(s)
            }
        };
        values.extend(after);
        self.session.execute_unpaged(statement, values).await
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
        let what = || format!("claiming the cron firing of `{job_type}` at {ts:?}");
        let rest = vec![
            Some(CqlValue::Timeuuid(CqlTimeuuid::from(trigger_id.uuid()))),
            Some(CqlValue::Text(owner.as_str().to_owned())),
            Some(CqlValue::Timestamp(cql::to_timestamp(SystemTime::now()))),
            Some(CqlValue::Int(self.retention_secs)),
        ];
        match self
            .execute_keyed(job_type, instant, |s| &s.claim, None, rest)
            .await
        {
            Ok(result) => Ok(LwtOutcome::from_result(result, &what())?.applied),
            Err(error) => {
                // Ours only if the SERIAL read names us.
                let read = self.owner(job_type, instant, |s| &s.read_serial);
                settle(what, error, read, |claimant| {
                    Ok(Settled::Known(claimant.as_deref() == Some(owner.as_str())))
                })
                .await
            }
        }
    }

    async fn owner(
        &self,
        job_type: &JobType,
        instant: SystemTime,
        pick: impl Fn(&Statements) -> &PreparedStatement,
    ) -> Result<Option<String>, StoreError> {
        let ts = cql::to_timestamp(instant);
        let what = || format!("reading the claim of the cron firing of `{job_type}` at {ts:?}");
        let rows: Vec<(Option<String>,)> = cql::rows(
            self.execute_keyed(job_type, instant, pick, None, Vec::new())
                .await,
            &what(),
        )?;
        Ok(rows
            .into_iter()
            .next()
            .map(|(owner,)| owner.unwrap_or_default()))
    }

    /// Who claimed the firing of `job_type` at `instant`, read at the
    /// configured consistency (one read, no Paxos round): a claim whose LWT
    /// has completed is seen; one still in flight may not be.
    pub async fn claimed_by(
        &self,
        job_type: &JobType,
        instant: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        self.owner(job_type, instant, |s| &s.read).await
    }

    /// The latest instant claimed for `job_type`, if any: today's day
    /// bucket first, then back one day at a time (at most a month), then
    /// the claims from before the cutover.
    pub async fn last_claimed(&self, job_type: &JobType) -> Result<Option<SystemTime>, StoreError> {
        if let Some((daily, cutover)) = self.daily.get() {
            let today = day_of(SystemTime::now());
            let first = day_of(*cutover);
            for day in (first.max(today - LAST_CLAIM_DAYS)..=today).rev() {
                if let Some(f) = self
                    .read_recent(&daily.recent, job_type, Some(day), 1)
                    .await?
                    .into_iter()
                    .next()
                {
                    return Ok(Some(f.instant));
                }
            }
        }
        let rows: Vec<(Option<CqlValue>,)> = cql::rows(
            self.session
                .execute_unpaged(&self.last, (job_type.as_str(),))
                .await,
            &format!("reading the last cron firing of `{job_type}`"),
        )?;
        Ok(match rows.into_iter().next() {
            Some((Some(CqlValue::Timestamp(t)),)) => Some(cql::from_timestamp(t)),
            _ => None,
        })
    }

    /// The claimant still works on the firing (it waits for a held lock).
    pub async fn touch(&self, job_type: &JobType, instant: SystemTime) -> Result<(), StoreError> {
        let now = CqlValue::Timestamp(cql::to_timestamp(SystemTime::now()));
        self.execute_keyed(
            job_type,
            instant,
            |s| &s.touch,
            Some((self.retention_secs, Some(now))),
            Vec::new(),
        )
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
        let outcome = CqlValue::Text(outcome.as_str().to_owned());
        self.execute_keyed(
            job_type,
            instant,
            |s| &s.record,
            Some((self.retention_secs, Some(outcome))),
            Vec::new(),
        )
        .await
        .map_err(|e| {
            StoreError::request(format!("recording the cron firing of `{job_type}`"), e)
        })?;
        Ok(())
    }

    /// The newest `limit` claimed firings of `job_type` scheduled since
    /// `since` (and perhaps a few older), newest first: the day buckets
    /// from today back to `since`'s (at most three), and the claims from
    /// before the cutover if `since` is before it.
    pub async fn recent(
        &self,
        job_type: &JobType,
        since: SystemTime,
        limit: i32,
    ) -> Result<Vec<Firing>, StoreError> {
        let mut out = Vec::new();
        let mut legacy = true;
        if let Some((daily, cutover)) = self.daily.get() {
            let today = day_of(SystemTime::now());
            let from = day_of(since.max(*cutover)).max(today - 2);
            for day in (from..=today).rev() {
                out.extend(
                    self.read_recent(&daily.recent, job_type, Some(day), limit)
                        .await?,
                );
            }
            legacy = since < *cutover;
        }
        if legacy {
            out.extend(
                self.read_recent(&self.legacy.recent, job_type, None, limit)
                    .await?,
            );
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.instant));
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    async fn read_recent(
        &self,
        statement: &PreparedStatement,
        job_type: &JobType,
        day: Option<i32>,
        limit: i32,
    ) -> Result<Vec<Firing>, StoreError> {
        let result = match day {
            Some(day) => {
                self.session
                    .execute_unpaged(statement, (job_type.as_str(), day, limit))
                    .await
            }
            None => {
                self.session
                    .execute_unpaged(statement, (job_type.as_str(), limit))
                    .await
            }
        };
        let rows: Vec<FiringRow> = cql::rows(
            result,
            &format!("reading the recent cron firings of `{job_type}`"),
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let instant = cql::from_timestamp(r.instant);
                Firing {
                    instant,
                    trigger_id: r.trigger_id.map_or_else(
                        || TriggerId::for_firing(job_type.as_str(), instant),
                        |t| TriggerId::from_uuid(t.into()),
                    ),
                    owner: r.owner,
                    outcome: r.outcome,
                    seen_at: r.seen_at.map(cql::from_timestamp),
                }
            })
            .collect())
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
            .execute_keyed(
                job_type,
                instant,
                |s| &s.close,
                Some((self.retention_secs, None)),
                Vec::new(),
            )
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        Ok(LwtOutcome::from_result(result, &what())?.applied)
    }
}
