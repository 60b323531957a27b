//! The CQL schema: versioned migrations from the top-level `schema/` folder,
//! applied idempotently and recorded in the keyspace.
//!
//! [`apply()`] creates the keyspace (with the chosen [`Replication`]), runs
//! every migration not yet recorded in `schema_migrations`, then makes the
//! live tables match what hajobs needs ([`drift::EXPECTED`]) — adding missing
//! columns (an ha-jobs keyspace lacks hajobs' columns), re-keying an old
//! `job_status_data` — and records a migration only once the tables really
//! have what it promises. [`check()`] compares without changing anything;
//! [`print()`] renders the CQL for DBAs who apply it by hand.

pub mod drift;

use drift::{Drift, EXPECTED};

use std::fmt;

use scylla::client::session::Session;

use crate::error::StoreError;

/// One versioned migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version number.
    pub version: i32,
    /// Short name (the file name without version and extension).
    pub name: &'static str,
    /// The CQL text: statements separated by `;`, with `--` comments.
    pub cql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        cql: include_str!("../../../schema/0001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "cron_firing",
        cql: include_str!("../../../schema/0002_cron_firing.cql"),
    },
    Migration {
        version: 3,
        name: "cancel_request",
        cql: include_str!("../../../schema/0003_cancel_request.cql"),
    },
    Migration {
        version: 4,
        name: "status_data_key",
        cql: include_str!("../../../schema/0004_status_data_key.cql"),
    },
    Migration {
        version: 5,
        name: "node",
        cql: include_str!("../../../schema/0005_node.cql"),
    },
    Migration {
        version: 6,
        name: "trigger_request",
        cql: include_str!("../../../schema/0006_trigger_request.cql"),
    },
    Migration {
        version: 7,
        name: "trigger_request_resumes",
        cql: include_str!("../../../schema/0007_trigger_request_resumes.cql"),
    },
    Migration {
        version: 8,
        name: "cron_firing_outcome",
        cql: include_str!("../../../schema/0008_cron_firing_outcome.cql"),
    },
    Migration {
        version: 9,
        name: "watch_list",
        cql: include_str!("../../../schema/0009_watch_list.cql"),
    },
    Migration {
        version: 10,
        name: "cron_firing_day",
        cql: include_str!("../../../schema/0010_cron_firing_day.cql"),
    },
    Migration {
        version: 11,
        name: "work_item",
        cql: include_str!("../../../schema/0011_work_item.cql"),
    },
    Migration {
        version: 12,
        name: "lock_queue",
        cql: include_str!("../../../schema/0012_lock_queue.cql"),
    },
    Migration {
        version: 13,
        name: "trigger_args",
        cql: include_str!("../../../schema/0013_trigger_args.cql"),
    },
    Migration {
        version: 14,
        name: "scheduled_trigger",
        cql: include_str!("../../../schema/0014_scheduled_trigger.cql"),
    },
    Migration {
        version: 15,
        name: "checkpoint",
        cql: include_str!("../../../schema/0015_checkpoint.cql"),
    },
];

/// The keyspace's replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// SimpleStrategy with one replication factor: for a laptop or one DC.
    Simple {
        /// Number of replicas.
        replication_factor: u8,
    },
    /// NetworkTopologyStrategy: replicas per data centre, for production.
    NetworkTopology(Vec<(String, u8)>),
}

impl Default for Replication {
    fn default() -> Self {
        Self::Simple {
            replication_factor: 1,
        }
    }
}

impl fmt::Display for Replication {
    /// Renders the CQL map of `WITH replication = …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Simple { replication_factor } => write!(
                f,
                "{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
            ),
            Self::NetworkTopology(dcs) => {
                write!(f, "{{'class': 'NetworkTopologyStrategy'")?;
                for (dc, rf) in dcs {
                    write!(f, ", '{}': {rf}", dc.replace('\'', "''"))?;
                }
                write!(f, "}}")
            }
        }
    }
}

impl Replication {
    /// Parses `simple:RF` or `dc1:RF,dc2:RF` (NetworkTopologyStrategy).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rf = |s: &str| {
            s.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("replication factor `{s}` is not a number from 1 to 255"))
        };
        if let Some(n) = text.strip_prefix("simple:") {
            return Ok(Self::Simple {
                replication_factor: rf(n)?,
            });
        }
        let mut dcs = Vec::new();
        for part in text.split(',') {
            let (dc, n) = part.split_once(':').ok_or_else(|| {
                format!("replication `{text}`: expected `simple:RF` or `DC:RF[,DC:RF…]`")
            })?;
            if dc.trim().is_empty() {
                return Err(format!("replication `{text}`: empty data centre name"));
            }
            dcs.push((dc.trim().to_owned(), rf(n)?));
        }
        Ok(Self::NetworkTopology(dcs))
    }
}

/// Checks that `name` is a keyspace name Cassandra accepts unquoted.
pub fn validate_keyspace(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "keyspace name `{name}` is invalid: use 1 to 48 letters, digits or underscores"
        )))
    }
}

/// The statements of one migration's CQL text, comments removed.
pub fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn create_keyspace(keyspace: &str, replication: &Replication) -> String {
    format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}")
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\n    version int PRIMARY KEY,\n    name text,\n    applied_at timestamp\n)";

/// The whole schema as one CQL script, for applying by hand.
pub fn print(keyspace: &str, replication: &Replication) -> Result<String, StoreError> {
    validate_keyspace(keyspace)?;
    let mut out = format!(
        "-- hajobs schema for keyspace {keyspace}\n{};\nUSE {keyspace};\n{MIGRATIONS_TABLE};\n",
        create_keyspace(keyspace, replication)
    );
    for m in MIGRATIONS {
        out.push_str(&format!("\n-- migration {} ({})\n", m.version, m.name));
        for s in statements(m.cql) {
            out.push_str(&s);
            out.push_str(";\n");
        }
        out.push_str(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, '{}', toTimestamp(now()));\n",
            m.version, m.name
        ));
    }
    Ok(out)
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// Versions that were already recorded.
    pub already_applied: Vec<i32>,
    /// What the live tables lacked and this call repaired (an adopted
    /// ha-jobs keyspace, an earlier hajobs layout, a half-applied migration).
    pub repaired: Vec<String>,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Migrations not recorded in the keyspace.
    pub unrecorded: Vec<i32>,
    /// How the live tables differ from what hajobs needs.
    pub drifts: Vec<Drift>,
    /// Whether the keyspace looks made by ha-jobs (its tables without any
    /// of hajobs' columns).
    pub ha_jobs_keyspace: bool,
}

impl CheckReport {
    /// Nothing to do.
    pub fn is_clean(&self) -> bool {
        self.unrecorded.is_empty() && self.drifts.is_empty()
    }
}

/// Compares the live keyspace with what hajobs needs, changing nothing.
pub async fn check(session: &Session, keyspace: &str) -> Result<CheckReport, StoreError> {
    validate_keyspace(keyspace)?;
    let live = drift::live_tables(session, keyspace).await?;
    let recorded = if live.contains_key("schema_migrations") {
        applied_versions(session, keyspace).await?
    } else {
        Vec::new()
    };
    let drifts = drift::compare(&live);
    let ha_jobs_keyspace = live.get("lock").is_some_and(|t| {
        t.columns.contains_key("job_lock") && !t.columns.contains_key("fencing_token")
    });
    Ok(CheckReport {
        unrecorded: MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !recorded.contains(v))
            .collect(),
        drifts,
        ha_jobs_keyspace,
    })
}

/// Creates the keyspace if needed and applies every migration not yet
/// recorded. Safe to run again: it then applies nothing.
pub async fn apply(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
) -> Result<ApplyReport, StoreError> {
    validate_keyspace(keyspace)?;
    ddl(session, &create_keyspace(keyspace, replication)).await?;
    ddl(
        session,
        &MIGRATIONS_TABLE.replace(
            "schema_migrations",
            &format!("{keyspace}.schema_migrations"),
        ),
    )
    .await?;
    let recorded = applied_versions(session, keyspace).await?;
    let mut report = ApplyReport {
        applied: Vec::new(),
        already_applied: Vec::new(),
        repaired: Vec::new(),
    };
    let mut to_record = Vec::new();
    for m in MIGRATIONS {
        if recorded.contains(&m.version) {
            report.already_applied.push(m.version);
            continue;
        }
        for s in statements(m.cql) {
            ddl(session, &qualify(&s, keyspace)).await?;
        }
        to_record.push(m);
    }
    // Reality, not the record, decides: `CREATE TABLE IF NOT EXISTS` does
    // nothing to a table ha-jobs made, and an earlier adoption may have
    // recorded versions whose columns are missing.
    report.repaired = reconcile(session, keyspace).await?;
    for m in to_record {
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"
                ),
                (m.version, m.name),
            )
            .await
            .map_err(|e| StoreError::request(format!("recording migration {}", m.version), e))?;
        tracing::info!(
            keyspace,
            version = m.version,
            name = m.name,
            "schema migration applied"
        );
        report.applied.push(m.version);
    }
    Ok(report)
}

/// Repairs what [`drift::compare`] finds repairable; fails, naming every
/// difference, when something is not.
async fn reconcile(session: &Session, keyspace: &str) -> Result<Vec<String>, StoreError> {
    let mut repaired = Vec::new();
    for d in drift::compare(&drift::live_tables(session, keyspace).await?) {
        match &d {
            Drift::OldStatusDataKey => {
                let copied = relayout_status_data(session, keyspace).await?;
                repaired.push(format!("{d} — copied {copied} rows into the new key"));
            }
            other => {
                if let Some(fix) = other.fix(keyspace) {
                    ddl(session, fix.trim_end_matches(';')).await?;
                    tracing::info!(keyspace, drift = %other, statement = %fix, "schema repaired");
                    repaired.push(format!("{other}: {fix}"));
                }
            }
        }
    }
    let left: Vec<String> = drift::compare(&drift::live_tables(session, keyspace).await?)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !left.is_empty() {
        return Err(StoreError::Schema(format!(
            "keyspace `{keyspace}` cannot be used by hajobs as it is; nothing was recorded:\n  - {}",
            left.join("\n  - ")
        )));
    }
    Ok(repaired)
}

/// The side table of [`relayout_status_data`].
const RELAYOUT: &str = "job_status_data_relayout";

/// Gives `job_status_data` ha-jobs' key. Cassandra cannot alter a primary
/// key, so the rows go to a side table with the new key, the table is
/// dropped and created again, and the rows come back, with their TTLs.
/// Every step is idempotent; run again after an interruption, it finishes
/// the job. Returns the number of rows copied back.
async fn relayout_status_data(session: &Session, keyspace: &str) -> Result<u64, StoreError> {
    let spec = EXPECTED
        .iter()
        .find(|t| t.name == "job_status_data")
        .expect("job_status_data is expected");
    let side = drift::TableSpec {
        name: RELAYOUT,
        ..*spec
    };
    let live = drift::live_tables(session, keyspace).await?;
    let old_key = live
        .get("job_status_data")
        .is_some_and(|t| t.clustering.len() == drift::OLD_STATUS_DATA_CLUSTERING.len());
    if old_key {
        ddl(
            session,
            drift::create_table(keyspace, &side).trim_end_matches(';'),
        )
        .await?;
        copy_statuses(session, keyspace, "job_status_data", RELAYOUT).await?;
        ddl(
            session,
            &format!("DROP TABLE IF EXISTS {keyspace}.job_status_data"),
        )
        .await?;
    }
    ddl(
        session,
        drift::create_table(keyspace, spec).trim_end_matches(';'),
    )
    .await?;
    let live = drift::live_tables(session, keyspace).await?;
    let mut copied = 0;
    if live.contains_key(RELAYOUT) {
        copied = copy_statuses(session, keyspace, RELAYOUT, "job_status_data").await?;
        ddl(
            session,
            &format!("DROP TABLE IF EXISTS {keyspace}.{RELAYOUT}"),
        )
        .await?;
    }
    tracing::info!(
        keyspace,
        copied,
        "job_status_data re-keyed as ha-jobs keys it"
    );
    Ok(copied)
}

/// Copies every status row from `from` to `to` (same columns), keeping each
/// row's remaining TTL. Rows without a state or result (which the new key
/// cannot hold) are skipped and counted in the log.
async fn copy_statuses(
    session: &Session,
    keyspace: &str,
    from: &str,
    to: &str,
) -> Result<u64, StoreError> {
    use futures::TryStreamExt;
    use scylla::value::{CqlValue, Row};
    const COLUMNS: &str = "job_type, job_id, job_status_ts, job_state, job_result, trigger_id, content, owner, fencing_token";
    let what = || format!("copying statuses from {keyspace}.{from} to {keyspace}.{to}");
    let insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.{to} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        ))
        .await
        .map_err(|e| StoreError::request(what(), e))?;
    let mut rows = session
        .query_iter(
            format!("SELECT {COLUMNS}, TTL(trigger_id) FROM {keyspace}.{from}"),
            (),
        )
        .await
        .map_err(|e| StoreError::request(what(), e))?
        .rows_stream::<Row>()
        .map_err(|e| StoreError::request(what(), e))?;
    let (mut copied, mut skipped) = (0u64, 0u64);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| StoreError::request(what(), e))?
    {
        let mut values = row.columns;
        let ttl = match values.pop().flatten() {
            Some(CqlValue::Int(t)) => t,
            _ => 0,
        };
        if values.get(3).is_none_or(Option::is_none) || values.get(4).is_none_or(Option::is_none) {
            skipped += 1;
            continue;
        }
        values.push(Some(CqlValue::Int(ttl)));
        session
            .execute_unpaged(&insert, values)
            .await
            .map_err(|e| StoreError::request(what(), e))?;
        copied += 1;
    }
    if skipped > 0 {
        tracing::warn!(
            keyspace,
            from,
            skipped,
            "status rows without state or result not copied"
        );
    }
    Ok(copied)
}

/// The migration versions recorded in the keyspace.
pub async fn applied_versions(session: &Session, keyspace: &str) -> Result<Vec<i32>, StoreError> {
    let rows: Vec<(i32,)> = crate::cql::rows(
        session
            .query_unpaged(
                format!("SELECT version FROM {keyspace}.schema_migrations"),
                (),
            )
            .await,
        &format!("reading {keyspace}.schema_migrations"),
    )?;
    let mut versions: Vec<i32> = rows.into_iter().map(|(v,)| v).collect();
    versions.sort_unstable();
    Ok(versions)
}

fn is_add_column(statement: &str) -> bool {
    statement.starts_with("ALTER TABLE ") && statement.contains(" ADD ")
}

/// Prefixes the table of a `CREATE TABLE IF NOT EXISTS t` / `ALTER TABLE t`
/// statement with the keyspace.
fn qualify(statement: &str, keyspace: &str) -> String {
    for prefix in ["CREATE TABLE IF NOT EXISTS ", "ALTER TABLE "] {
        if let Some(rest) = statement.strip_prefix(prefix) {
            return format!("{prefix}{keyspace}.{rest}");
        }
    }
    statement.to_owned()
}

/// How often a schema change is tried while the cluster's schema settles.
const DDL_TRIES: u32 = 5;

/// Whether a failed schema change met a cluster whose schema had not
/// settled (a node just restarted, another change in flight): Cassandra
/// answers such a change with an internal error naming a table it does not
/// know yet, or the nodes do not agree within the driver's wait after it.
/// The change (idempotent: `IF NOT EXISTS`) is tried again once the nodes
/// agree.
fn schema_unsettled(error: &str) -> bool {
    error.contains("Unknown CF")
        || error.contains("schema version mismatch")
        || error.contains("Schema agreement exceeded")
        || error.contains("SchemaAgreement")
}

/// `error` with every cause, as shown (`Display`) and as built (`Debug`):
/// what [`schema_unsettled`] looks in.
fn error_text(error: &StoreError) -> String {
    let mut text = format!("{error:?}");
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(c) = cause {
        text.push_str(&format!(" | {c}"));
        cause = c.source();
    }
    text
}

async fn ddl(session: &Session, statement: &str) -> Result<(), StoreError> {
    let mut tries = 1;
    loop {
        match ddl_once(session, statement).await {
            Err(e) if tries < DDL_TRIES && schema_unsettled(&error_text(&e)) => {
                tracing::warn!(error = %e, tries, "the cluster's schema has not settled; waiting for agreement, then trying again");
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(tries))).await;
                let _ = session.await_schema_agreement().await;
                tries += 1;
            }
            other => return other,
        }
    }
}

async fn ddl_once(session: &Session, statement: &str) -> Result<(), StoreError> {
    let head: String = statement.chars().take(60).collect();
    if let Err(e) = session.query_unpaged(statement, ()).await {
        // `ALTER TABLE … ADD` has no IF NOT EXISTS: a column already there
        // (a migration interrupted after it ran) is what we wanted.
        let exists = e.to_string().to_lowercase().contains("already exist")
            || e.to_string().contains("conflicts with an existing column");
        // Nor a table that is missing altogether (a keyspace whose record
        // says more than its tables): the reconciliation that follows every
        // apply creates it with all its columns, or names what it cannot.
        let table_missing =
            e.to_string().contains("doesn't exist") || e.to_string().contains("unconfigured table");
        if !(is_add_column(statement) && (exists || table_missing)) {
            return Err(StoreError::request(format!("running `{head}…`"), e));
        }
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StoreError::request("waiting for schema agreement", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_meeting_an_unsettled_schema_is_tried_again() {
        // As Cassandra 5.0 answers a CREATE KEYSPACE right after a node restart.
        assert!(schema_unsettled(
            "Internal server error. This indicates a server-side bug, Error message: java.lang.IllegalArgumentException: Unknown CF dd88c730-ec30-11f1-a3b8-5fe2ecbb259f"
        ));
        // As the driver answers one whose cluster took longer than its wait
        // to agree (seen right after a node of three was restarted).
        assert!(schema_unsettled(
            "Failed to await schema agreement: Schema agreement exceeded 60000ms"
        ));
        assert!(!schema_unsettled(
            "SyntaxException: line 1:7 no viable alternative"
        ));
    }

    #[test]
    fn replication_parses_and_renders() {
        assert_eq!(
            Replication::parse("simple:3").unwrap().to_string(),
            "{'class': 'SimpleStrategy', 'replication_factor': 3}"
        );
        assert_eq!(
            Replication::parse("dc1:3,dc2:2").unwrap().to_string(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        assert!(Replication::parse("simple:0").unwrap_err().contains("`0`"));
        assert!(
            Replication::parse("three")
                .unwrap_err()
                .contains("expected")
        );
    }

    #[test]
    fn statements_strip_comments_and_split() {
        let s = statements("-- a\nCREATE TABLE IF NOT EXISTS x (a int PRIMARY KEY); -- b\n;");
        assert_eq!(s, vec!["CREATE TABLE IF NOT EXISTS x (a int PRIMARY KEY)"]);
        assert_eq!(
            qualify(&s[0], "ks"),
            "CREATE TABLE IF NOT EXISTS ks.x (a int PRIMARY KEY)"
        );
    }

    #[test]
    fn every_migration_statement_is_idempotent() {
        for m in MIGRATIONS {
            for s in statements(m.cql) {
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS ") || is_add_column(&s),
                    "migration {} has a statement that is not idempotent: {s}",
                    m.version
                );
            }
        }
    }

    #[test]
    fn bad_keyspace_names_are_rejected() {
        assert!(validate_keyspace("ok_name1").is_ok());
        let err = validate_keyspace("bad-name").unwrap_err().to_string();
        assert!(err.contains("bad-name"), "{err}");
        assert!(validate_keyspace("").is_err());
    }
}
