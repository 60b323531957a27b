//! What the tables must look like, what they look like in a live keyspace,
//! and how they differ ([`Drift`]): the check behind `hajobs schema check`
//! and the reconciliation `schema apply` runs before it records a migration.

use std::collections::BTreeMap;
use std::fmt;

use scylla::client::session::Session;

use crate::error::StoreError;

/// The order of a clustering column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// A table as hajobs needs it.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// The table's name.
    pub name: &'static str,
    /// Every column hajobs reads or writes, with its CQL type.
    pub columns: &'static [(&'static str, &'static str)],
    /// The partition key.
    pub partition_key: &'static [&'static str],
    /// The clustering columns, in order.
    pub clustering: &'static [(&'static str, Order)],
}

/// Every table of hajobs, as the migrations leave it. The first three keep
/// ha-jobs' names, columns and keys; hajobs adds columns only.
pub const EXPECTED: &[TableSpec] = &[
    TableSpec {
        name: "lock",
        columns: &[
            ("lock_type", "text"),
            ("job_lock", "timeuuid"),
            ("owner", "text"),
            ("acquired_at", "timestamp"),
            ("fencing_token", "bigint"),
            ("cancel_requested", "boolean"),
        ],
        partition_key: &["lock_type"],
        clustering: &[],
    },
    TableSpec {
        name: "job_status_meta",
        columns: &[
            ("job_type", "text"),
            ("job_id", "timeuuid"),
            ("trigger_id", "timeuuid"),
            ("job_status_ts", "timestamp"),
            ("job_state", "text"),
            ("job_result", "text"),
            ("owner", "text"),
            ("fencing_token", "bigint"),
        ],
        partition_key: &["job_type"],
        clustering: &[("job_id", Order::Desc)],
    },
    TableSpec {
        name: "job_status_data",
        columns: &[
            ("job_type", "text"),
            ("job_id", "timeuuid"),
            ("job_status_ts", "timestamp"),
            ("job_state", "text"),
            ("job_result", "text"),
            ("trigger_id", "timeuuid"),
            ("content", "text"),
            ("owner", "text"),
            ("fencing_token", "bigint"),
        ],
        partition_key: &["job_type", "job_id"],
        clustering: &[
            ("job_status_ts", Order::Desc),
            ("job_state", Order::Asc),
            ("job_result", Order::Asc),
        ],
    },
    TableSpec {
        name: "cron_firing",
        columns: &[
            ("job_type", "text"),
            ("instant", "timestamp"),
            ("trigger_id", "timeuuid"),
            ("owner", "text"),
            ("outcome", "text"),
            ("seen_at", "timestamp"),
        ],
        partition_key: &["job_type"],
        clustering: &[("instant", Order::Desc)],
    },
    TableSpec {
        name: "cron_firing_day",
        columns: &[
            ("job_type", "text"),
            ("day", "int"),
            ("instant", "timestamp"),
            ("trigger_id", "timeuuid"),
            ("owner", "text"),
            ("outcome", "text"),
            ("seen_at", "timestamp"),
        ],
        partition_key: &["job_type", "day"],
        clustering: &[("instant", Order::Desc)],
    },
    TableSpec {
        name: "node",
        columns: &[
            ("node_id", "text"),
            ("host", "text"),
            ("pid", "int"),
            ("version", "text"),
            ("http", "text"),
            ("started_at", "timestamp"),
            ("seen_at", "timestamp"),
            ("job_types", "list<text>"),
            ("running", "list<text>"),
        ],
        partition_key: &["node_id"],
        clustering: &[],
    },
    TableSpec {
        name: "watch_list",
        columns: &[
            ("node_id", "text"),
            ("attempts", "frozen<map<timeuuid, text>>"),
            ("firings", "frozen<map<timeuuid, text>>"),
            ("written_at", "timestamp"),
        ],
        partition_key: &["node_id"],
        clustering: &[],
    },
    TableSpec {
        name: "trigger_request",
        columns: &[
            ("shard", "int"),
            ("trigger_id", "timeuuid"),
            ("job_type", "text"),
            ("requested_by", "text"),
            ("claimed_by", "text"),
            ("claimed_at", "timestamp"),
            ("withdrawn", "boolean"),
            ("outcome", "text"),
            ("job_id", "timeuuid"),
            ("fencing_token", "bigint"),
            ("detail", "text"),
            ("resumes", "timeuuid"),
        ],
        partition_key: &["shard"],
        clustering: &[("trigger_id", Order::Desc)],
    },
];

/// The key `job_status_data` had in keyspaces made by hajobs before
/// migration 4: one status per attempt and millisecond.
pub(crate) const OLD_STATUS_DATA_CLUSTERING: &[(&str, Order)] = &[("job_status_ts", Order::Desc)];

/// A table as it is in a live keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    /// Column name → CQL type.
    pub columns: BTreeMap<String, String>,
    /// The partition key, in order.
    pub partition_key: Vec<String>,
    /// The clustering columns, in order.
    pub clustering: Vec<(String, Order)>,
}

/// One way a live keyspace differs from what hajobs needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// The table does not exist.
    MissingTable {
        /// Its name.
        table: &'static str,
    },
    /// A column is missing: `ALTER TABLE … ADD` fixes it.
    MissingColumn {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// Its CQL type.
        cql_type: &'static str,
    },
    /// A column has another type; nothing automatic fixes it.
    WrongType {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What hajobs needs.
        expected: &'static str,
        /// What the keyspace has.
        actual: String,
    },
    /// `job_status_data` has the key of hajobs before migration 4: `schema
    /// apply` copies it into ha-jobs' layout.
    OldStatusDataKey,
    /// The primary key differs; Cassandra cannot alter a primary key.
    WrongKey {
        /// The table.
        table: &'static str,
        /// What hajobs needs.
        expected: String,
        /// What the keyspace has.
        actual: String,
    },
}

impl Drift {
    /// The CQL that fixes it, when a statement can.
    pub fn fix(&self, keyspace: &str) -> Option<String> {
        match self {
            Self::MissingColumn {
                table,
                column,
                cql_type,
            } => Some(format!(
                "ALTER TABLE {keyspace}.{table} ADD {column} {cql_type};"
            )),
            Self::MissingTable { table } => EXPECTED
                .iter()
                .find(|t| t.name == *table)
                .map(|t| create_table(keyspace, t)),
            _ => None,
        }
    }

    /// Whether `schema apply` repairs it.
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Self::MissingTable { .. } | Self::MissingColumn { .. } | Self::OldStatusDataKey
        )
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTable { table } => write!(f, "table `{table}` is missing"),
            Self::MissingColumn {
                table,
                column,
                cql_type,
            } => write!(f, "table `{table}` lacks column `{column}` ({cql_type})"),
            Self::WrongType {
                table,
                column,
                expected,
                actual,
            } => write!(
                f,
                "column `{table}.{column}` is {actual}, hajobs needs {expected}: \
                 no statement converts it; see docs/migrating-from-ha-jobs.md"
            ),
            Self::OldStatusDataKey => write!(
                f,
                "table `job_status_data` has the key of hajobs before schema version 4 \
                 (job_status_ts only): two statuses of an attempt in one millisecond overwrite \
                 each other; `hajobs schema apply` copies it into ha-jobs' key (stop the daemons first)"
            ),
            Self::WrongKey {
                table,
                expected,
                actual,
            } => write!(
                f,
                "table `{table}` has primary key {actual}, hajobs needs {expected}: Cassandra cannot \
                 alter a primary key; see docs/migrating-from-ha-jobs.md (copy into a new keyspace)"
            ),
        }
    }
}

fn key_text(partition: &[impl AsRef<str>], clustering: &[(impl AsRef<str>, Order)]) -> String {
    let p: Vec<&str> = partition.iter().map(AsRef::as_ref).collect();
    let c: Vec<String> = clustering
        .iter()
        .map(|(n, o)| {
            format!(
                "{} {}",
                n.as_ref(),
                if *o == Order::Desc { "DESC" } else { "ASC" }
            )
        })
        .collect();
    if c.is_empty() {
        format!("(({}))", p.join(", "))
    } else {
        format!("(({}), {})", p.join(", "), c.join(", "))
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `table` in `keyspace`.
pub fn create_table(keyspace: &str, table: &TableSpec) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    let clustering: Vec<&str> = table.clustering.iter().map(|(n, _)| *n).collect();
    let key = if clustering.is_empty() {
        format!("({})", table.partition_key.join(", "))
    } else {
        format!(
            "({}), {}",
            table.partition_key.join(", "),
            clustering.join(", ")
        )
    };
    let order: Vec<String> = table
        .clustering
        .iter()
        .map(|(n, o)| format!("{n} {}", if *o == Order::Desc { "DESC" } else { "ASC" }))
        .collect();
    let with = if order.is_empty() {
        String::new()
    } else {
        format!(" WITH CLUSTERING ORDER BY ({})", order.join(", "))
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.{} ({}, PRIMARY KEY ({key})){with};",
        table.name,
        columns.join(", ")
    )
}

/// Reads the tables of `keyspace` from `system_schema`.
pub async fn live_tables(
    session: &Session,
    keyspace: &str,
) -> Result<BTreeMap<String, LiveTable>, StoreError> {
    let what = || format!("reading the tables of keyspace `{keyspace}`");
    let rows = session
        .query_unpaged(
            "SELECT table_name, column_name, type, kind, position, clustering_order \
             FROM system_schema.columns WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(|e| StoreError::request(what(), e))?
        .into_rows_result()
        .map_err(|e| StoreError::request(what(), e))?;
    type Col = (String, String, String, String, i32, String);
    let mut cols: Vec<Col> = rows
        .rows::<Col>()
        .map_err(|e| StoreError::request(what(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::request(what(), e))?;
    cols.sort_by_key(|c| c.4);
    let mut tables: BTreeMap<String, LiveTable> = BTreeMap::new();
    for (table, column, cql_type, kind, _, order) in cols {
        let t = tables.entry(table).or_default();
        t.columns.insert(column.clone(), cql_type);
        match kind.as_str() {
            "partition_key" => t.partition_key.push(column),
            "clustering" => t.clustering.push((
                column,
                if order == "desc" {
                    Order::Desc
                } else {
                    Order::Asc
                },
            )),
            _ => {}
        }
    }
    Ok(tables)
}

/// How `live` differs from [`EXPECTED`]: missing tables and columns, other
/// types, other keys. Extra tables and columns are fine.
pub fn compare(live: &BTreeMap<String, LiveTable>) -> Vec<Drift> {
    let mut drifts = Vec::new();
    for spec in EXPECTED {
        let Some(t) = live.get(spec.name) else {
            drifts.push(Drift::MissingTable { table: spec.name });
            continue;
        };
        let pk_ok = t
            .partition_key
            .iter()
            .map(String::as_str)
            .eq(spec.partition_key.iter().copied());
        let ck_ok = t
            .clustering
            .iter()
            .map(|(n, o)| (n.as_str(), *o))
            .eq(spec.clustering.iter().copied());
        if !(pk_ok && ck_ok) {
            let old_status_key = spec.name == "job_status_data"
                && pk_ok
                && t.clustering
                    .iter()
                    .map(|(n, o)| (n.as_str(), *o))
                    .eq(OLD_STATUS_DATA_CLUSTERING.iter().copied());
            drifts.push(if old_status_key {
                Drift::OldStatusDataKey
            } else {
                Drift::WrongKey {
                    table: spec.name,
                    expected: key_text(spec.partition_key, spec.clustering),
                    actual: key_text(&t.partition_key, &t.clustering),
                }
            });
        }
        for (column, cql_type) in spec.columns {
            match t.columns.get(*column) {
                None => drifts.push(Drift::MissingColumn {
                    table: spec.name,
                    column,
                    cql_type,
                }),
                Some(actual) if actual != cql_type => drifts.push(Drift::WrongType {
                    table: spec.name,
                    column,
                    expected: cql_type,
                    actual: actual.clone(),
                }),
                Some(_) => {}
            }
        }
    }
    drifts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(spec: &TableSpec) -> LiveTable {
        LiveTable {
            columns: spec
                .columns
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            partition_key: spec.partition_key.iter().map(|s| (*s).to_owned()).collect(),
            clustering: spec
                .clustering
                .iter()
                .map(|(n, o)| ((*n).to_owned(), *o))
                .collect(),
        }
    }

    fn all() -> BTreeMap<String, LiveTable> {
        EXPECTED
            .iter()
            .map(|t| (t.name.to_owned(), live(t)))
            .collect()
    }

    #[test]
    fn the_expected_schema_has_no_drift() {
        assert!(compare(&all()).is_empty());
    }

    #[test]
    fn an_ha_jobs_keyspace_lacks_columns_and_cron_firing_only() {
        let mut tables = all();
        tables.remove("cron_firing");
        for (table, cols) in [
            (
                "lock",
                &["owner", "acquired_at", "fencing_token", "cancel_requested"][..],
            ),
            ("job_status_meta", &["owner", "fencing_token"][..]),
            ("job_status_data", &["owner", "fencing_token"][..]),
        ] {
            for c in cols {
                tables.get_mut(table).unwrap().columns.remove(*c);
            }
        }
        let drifts = compare(&tables);
        assert_eq!(drifts.len(), 9, "{drifts:?}");
        assert!(drifts.iter().all(Drift::repairable));
        assert_eq!(
            Drift::MissingColumn {
                table: "lock",
                column: "owner",
                cql_type: "text"
            }
            .fix("ks")
            .unwrap(),
            "ALTER TABLE ks.lock ADD owner text;"
        );
    }

    #[test]
    fn keys_and_types_that_differ_are_named() {
        let mut tables = all();
        tables.get_mut("job_status_data").unwrap().clustering =
            vec![("job_status_ts".into(), Order::Desc)];
        tables.get_mut("job_status_meta").unwrap().clustering = vec![("job_id".into(), Order::Asc)];
        tables
            .get_mut("lock")
            .unwrap()
            .columns
            .insert("fencing_token".into(), "int".into());
        let drifts = compare(&tables);
        assert!(drifts.contains(&Drift::OldStatusDataKey));
        assert!(drifts.iter().any(|d| matches!(d, Drift::WrongKey { table: "job_status_meta", actual, .. } if actual == "((job_type), job_id ASC)")));
        assert!(drifts.iter().any(|d| matches!(
            d,
            Drift::WrongType {
                table: "lock",
                column: "fencing_token",
                ..
            }
        )));
        assert_eq!(drifts.iter().filter(|d| !d.repairable()).count(), 2);
    }

    #[test]
    fn create_statements_are_valid_looking_cql() {
        let cql = create_table("ks", &EXPECTED[2]);
        assert_eq!(
            cql,
            "CREATE TABLE IF NOT EXISTS ks.job_status_data (job_type text, job_id timeuuid, job_status_ts timestamp, job_state text, job_result text, trigger_id timeuuid, content text, owner text, fencing_token bigint, PRIMARY KEY ((job_type, job_id), job_status_ts, job_state, job_result)) WITH CLUSTERING ORDER BY (job_status_ts DESC, job_state ASC, job_result ASC);"
        );
    }
}
