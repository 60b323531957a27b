//! Decoding the result of a lightweight transaction, and settling one whose
//! outcome is unknown.
//!
//! Cassandra answers an applied LWT with the `[applied]` column alone, and a
//! rejected one with `[applied]` plus the current values of the columns named
//! in its conditions; ScyllaDB always adds the old row. A fixed tuple cannot
//! decode all three, so [`LwtOutcome`] reads the columns by name.

use std::future::Future;

use scylla::errors::ExecutionError;
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

use crate::error::StoreError;

/// The outcome of one LWT: whether it applied, and the columns sent back.
#[derive(Debug, Clone, PartialEq)]
pub struct LwtOutcome {
    /// The `[applied]` column.
    pub applied: bool,
    /// Every other column returned, by name (a null is `None`). Only the
    /// first row is kept: a conditional batch on one partition returns one
    /// row per distinct clustering row, and hajobs' batches touch one.
    pub columns: Vec<(String, Option<CqlValue>)>,
}

impl LwtOutcome {
    /// Decodes a driver result; `what` names the operation for errors.
    pub fn from_result(result: QueryResult, what: &str) -> Result<Self, StoreError> {
        let rows = result
            .into_rows_result()
            .map_err(|e| StoreError::request(format!("{what}: LWT returned no rows"), e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let row: Row = rows
            .first_row()
            .map_err(|e| StoreError::request(format!("{what}: decoding the LWT result"), e))?;
        let mut applied = None;
        let mut columns = Vec::with_capacity(names.len());
        for (name, value) in names.into_iter().zip(row.columns) {
            if name == "[applied]" {
                applied = match value {
                    Some(CqlValue::Boolean(b)) => Some(b),
                    other => {
                        return Err(StoreError::request(
                            what,
                            format!("`[applied]` is not a boolean: {other:?}"),
                        ));
                    }
                };
            } else {
                columns.push((name, value));
            }
        }
        let applied = applied.ok_or_else(|| {
            StoreError::request(what, "the result has no `[applied]` column: not an LWT?")
        })?;
        Ok(Self { applied, columns })
    }

    /// The value of column `name`, if it was returned and is not null.
    pub fn get(&self, name: &str) -> Option<&CqlValue> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// Whether column `name` was returned at all (null or not).
    pub fn has(&self, name: &str) -> bool {
        self.columns.iter().any(|(n, _)| n == name)
    }
}

/// What a SERIAL read tells of an LWT whose outcome was unknown.
pub(crate) enum Settled<T> {
    /// The row decides it.
    Known(T),
    /// The row cannot tell (it shows what it showed before, or something
    /// that proves nothing): the outcome stays unknown.
    Unknown,
}

/// Settles an LWT whose outcome is unknown (`error`: a timeout, a lost
/// connection — it may or may not have applied) with a SERIAL read of its
/// row: `read` reads it, `decide` says what the row shows. When the read
/// fails too, or the row cannot tell, the outcome stays unknown: `error`,
/// said of `what`. The one rule of every store's conditional writes.
pub(crate) async fn settle<R, T>(
    what: impl Fn() -> String,
    error: ExecutionError,
    read: impl Future<Output = Result<R, StoreError>>,
    decide: impl FnOnce(R) -> Result<Settled<T>, StoreError>,
) -> Result<T, StoreError> {
    tracing::warn!(what = %what(), %error, "LWT outcome unknown; settling it with a SERIAL read");
    match read.await.map(decide) {
        Ok(Ok(Settled::Known(t))) => Ok(t),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Settled::Unknown)) | Err(_) => Err(StoreError::request(what(), error)),
    }
}
