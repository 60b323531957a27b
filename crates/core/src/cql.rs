//! Small helpers shared by the stores: preparing statements with the
//! configured consistency, reading rows, and converting timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::ExecutionError;
use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlTimestamp;

use crate::config::CassandraConfig;
use crate::error::StoreError;

/// Prepares `cql` with `consistency` and the configured serial consistency.
pub(crate) async fn prepare(
    session: &Session,
    cql: String,
    consistency: Consistency,
    config: &CassandraConfig,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql.clone())
        .await
        .map_err(|e| StoreError::request(format!("preparing `{cql}`"), e))?;
    statement.set_consistency(consistency);
    statement.set_serial_consistency(Some(config.serial_consistency));
    Ok(statement)
}

/// The rows a query returned, each decoded as `R` — a struct deriving
/// `DeserializeRow`, its fields matched to the columns by name — every
/// failure said of `what`. The one way the stores read rows.
pub(crate) fn rows<R>(
    result: Result<QueryResult, ExecutionError>,
    what: &str,
) -> Result<Vec<R>, StoreError>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let rows = result
        .map_err(|e| StoreError::request(what, e))?
        .into_rows_result()
        .map_err(|e| StoreError::request(what, e))?;
    rows.rows::<R>()
        .map_err(|e| StoreError::request(what, e))?
        .map(|r| r.map_err(|e| StoreError::request(what, e)))
        .collect()
}

/// The consistency of a SERIAL read matching the configured serial consistency.
pub(crate) fn serial_read(config: &CassandraConfig) -> Consistency {
    match config.serial_consistency {
        SerialConsistency::Serial => Consistency::Serial,
        SerialConsistency::LocalSerial => Consistency::LocalSerial,
    }
}

/// A wall-clock time as CQL's `timestamp` (milliseconds since the epoch).
pub(crate) fn to_timestamp(t: SystemTime) -> CqlTimestamp {
    CqlTimestamp(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}

/// CQL's `timestamp` as a wall-clock time (dates before 1970 become 1970).
pub(crate) fn from_timestamp(t: CqlTimestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t.0.max(0) as u64)
}
