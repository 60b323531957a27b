//! The errors of hajobs' storage layer.

use std::error::Error as StdError;

/// A boxed driver error kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong talking to Cassandra.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No node of the cluster could be reached.
    #[error(
        "cannot reach Cassandra at {contact_points:?}: is it running? (locally: deploy/local/cassandra start)"
    )]
    Unreachable {
        /// The contact points tried.
        contact_points: String,
        /// The driver's reason.
        #[source]
        source: BoxError,
    },
    /// A statement failed; `what` says which operation it served.
    #[error("Cassandra request failed while {what}")]
    Request {
        /// The operation, e.g. "acquiring lock type `import`".
        what: String,
        /// The driver's reason.
        #[source]
        source: BoxError,
    },
    /// A row read back does not have the shape hajobs wrote.
    #[error("corrupt row in table `{table}` ({key}): {problem}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's key, printable.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The schema is not what this version expects.
    #[error("schema problem: {0}")]
    Schema(String),
}

impl StoreError {
    /// Wraps a driver error with the operation it served.
    pub fn request(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Request {
            what: what.into(),
            source: source.into(),
        }
    }
}
