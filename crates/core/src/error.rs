//! The errors of hajobs' storage layer.

use std::error::Error as StdError;

/// A boxed driver error kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong talking to Cassandra.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No node of the cluster could be reached.
    #[error("cannot reach Cassandra at {contact_points:?}: {hint}")]
    Unreachable {
        /// The contact points tried.
        contact_points: String,
        /// What to check, from what the driver said: the address, TLS, the
        /// client certificate, the credentials.
        hint: String,
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

/// A value given to hajobs that it cannot accept, caught at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A name (lock type, job type, node id) is empty.
    #[error("{what} is empty")]
    EmptyName {
        /// Which kind of name.
        what: &'static str,
    },
    /// A name is longer than Cassandra keys should be.
    #[error("{what} `{name}…` is {len} bytes long; the limit is {max}")]
    NameTooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its first characters.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name is not valid UTF-8.
    #[error("{what} is not valid UTF-8 (bytes {bytes:?})")]
    NotUtf8 {
        /// Which kind of name.
        what: &'static str,
        /// The first bytes.
        bytes: Vec<u8>,
    },
    /// A name holds control characters.
    #[error("{what} {name:?} contains a control character")]
    ControlCharacter {
        /// Which kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A lease TTL outside 2 s ..= 1 day, or not whole seconds.
    #[error(
        "lease TTL {ttl:?} is invalid: it must be whole seconds (Cassandra's TTL unit), from 2 s to one day"
    )]
    LeaseTtl {
        /// The value given.
        ttl: std::time::Duration,
    },
    /// A renewal interval that would not renew before the lease's deadline.
    #[error(
        "renewal interval {interval:?} is too long for lease TTL {ttl:?}: it must be below the usable lease time {usable:?} (TTL − 1 s TTL granularity − safety margin)"
    )]
    RenewInterval {
        /// The interval given.
        interval: std::time::Duration,
        /// The lease TTL.
        ttl: std::time::Duration,
        /// TTL minus the granularity and margin.
        usable: std::time::Duration,
    },
    /// Any other out-of-range duration.
    #[error("{what} {value:?} is invalid: {rule}")]
    Duration {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: std::time::Duration,
        /// The rule it breaks.
        rule: &'static str,
    },
}
