//! Connecting to Cassandra or ScyllaDB: a typed configuration and its session.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::{Consistency, SerialConsistency};

use crate::error::StoreError;
use crate::secret::Secret;
use crate::tls::TlsConfig;

/// The contact point used when none is given: a local node.
pub const DEFAULT_CONTACT_POINT: &str = "127.0.0.1:9042";
/// The keyspace used when none is given.
pub const DEFAULT_KEYSPACE: &str = "hajobs";
/// How long one request may take before the driver gives up on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the cluster is and how hajobs talks to it.
///
/// Build it with [`CassandraConfig::new`] and the `with_*` methods; every
/// field has a documented default. Reads and writes use LOCAL_QUORUM and
/// lightweight transactions LOCAL_SERIAL unless told otherwise.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// The keyspace holding hajobs' tables (default [`DEFAULT_KEYSPACE`]).
    pub keyspace: String,
    /// The data centre whose nodes are preferred as coordinators, and whose
    /// replicas make up the LOCAL_QUORUM. `None` lets the driver use all.
    pub local_datacenter: Option<String>,
    /// Consistency of reads and writes (default LOCAL_QUORUM).
    pub consistency: Consistency,
    /// Consistency of the Paxos phase of lightweight transactions (default
    /// LOCAL_SERIAL). SERIAL makes leases exclusive across data centres.
    pub serial_consistency: SerialConsistency,
    /// User and password for PasswordAuthenticator, if the cluster wants one.
    pub credentials: Option<Credentials>,
    /// TLS to every node, if the cluster requires client encryption.
    pub tls: Option<TlsConfig>,
    /// Per-request timeout (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Connection set-up timeout (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
}

/// A user and password for Cassandra's PasswordAuthenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The role to log in as.
    pub user: String,
    /// Its password (never shown by `Debug`).
    pub password: Secret,
}

/// The driver's words, kept whole but without its nested repeats.
#[derive(Debug)]
struct DriverSaid(String);

impl std::fmt::Display for DriverSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DriverSaid {}

impl Default for CassandraConfig {
    fn default() -> Self {
        Self::new([DEFAULT_CONTACT_POINT])
    }
}

impl CassandraConfig {
    /// A configuration for the given contact points with every default.
    pub fn new(contact_points: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            contact_points: contact_points.into_iter().map(Into::into).collect(),
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            local_datacenter: None,
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            credentials: None,
            tls: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Parses a comma-separated list such as `127.0.0.1:9042,127.0.0.2:9042`
    /// (the format of `HAJOBS_CQL_NODES`).
    pub fn from_contact_list(list: &str) -> Self {
        Self::new(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        )
    }

    /// Sets the keyspace.
    pub fn with_keyspace(mut self, keyspace: impl Into<String>) -> Self {
        self.keyspace = keyspace.into();
        self
    }

    /// Sets the local data centre.
    pub fn with_local_datacenter(mut self, dc: impl Into<String>) -> Self {
        self.local_datacenter = Some(dc.into());
        self
    }

    /// Uses QUORUM / SERIAL instead of LOCAL_QUORUM / LOCAL_SERIAL: locks
    /// become exclusive across data centres, at the cost of cross-DC latency.
    pub fn with_global_consistency(mut self) -> Self {
        self.consistency = Consistency::Quorum;
        self.serial_consistency = SerialConsistency::Serial;
        self
    }

    /// Uses LOCAL_QUORUM / LOCAL_SERIAL (the default): locks are exclusive
    /// within the local data centre only.
    pub fn with_local_consistency(mut self) -> Self {
        self.consistency = Consistency::LocalQuorum;
        self.serial_consistency = SerialConsistency::LocalSerial;
        self
    }

    /// Whether locks are exclusive across data centres (SERIAL).
    pub fn is_global(&self) -> bool {
        self.serial_consistency == SerialConsistency::Serial
    }

    /// Sets user and password.
    pub fn with_credentials(mut self, user: impl Into<String>, password: Secret) -> Self {
        self.credentials = Some(Credentials {
            user: user.into(),
            password,
        });
        self
    }

    /// Connects to every node over TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Opens a session with this configuration's consistency levels as the
    /// default execution profile. The keyspace is *not* selected: it may not
    /// exist yet (see [`crate::schema`]); statements name it explicitly.
    pub async fn connect(&self) -> Result<Arc<Session>, StoreError> {
        if self.contact_points.is_empty() {
            return Err(StoreError::Unreachable {
                contact_points: String::new(),
                hint: "no contact points given".into(),
                source: "no contact points given".into(),
            });
        }
        let mut policy = DefaultPolicy::builder();
        if let Some(dc) = &self.local_datacenter {
            policy = policy.prefer_datacenter(dc.clone());
        }
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency)
            .serial_consistency(Some(self.serial_consistency))
            .request_timeout(Some(self.request_timeout))
            .load_balancing_policy(policy.build())
            .build();
        // Only hajobs' keyspace's replication (token-aware routing needs
        // it), and no table metadata (nothing reads it): connecting costs
        // the same however many keyspaces the cluster holds.
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.contact_points)
            .keyspaces_to_fetch([self.keyspace.as_str()])
            .fetch_schema_metadata(false)
            .connection_timeout(self.connect_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if let Some(c) = &self.credentials {
            builder = builder.user(&c.user, c.password.expose());
        }
        if let Some(tls) = &self.tls {
            let context = tls.client_config().map_err(|e| StoreError::Unreachable {
                contact_points: self.contact_points.join(","),
                hint: "the TLS settings cannot be used".into(),
                source: Box::new(e),
            })?;
            builder = builder.tls_context(Some(context));
        }
        let session = builder
            .build()
            .await
            .map_err(|e| self.connect_error(&e.to_string()))?;
        Ok(Arc::new(session))
    }

    /// A failed connection as the operator needs it: what to check first,
    /// from what the driver said (never a secret: the driver's text holds
    /// none, and the hint names settings, not values).
    fn connect_error(&self, said: &str) -> StoreError {
        // The driver nests its causes and repeats them: each part once.
        let mut parts: Vec<&str> = Vec::new();
        for part in said.split(": ") {
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        let first: String = parts
            .join(": ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(600)
            .collect();
        let tls = self.tls.is_some();
        let hint = if said.contains("Authentication")
            || said.contains("authentication")
            || said.contains("Bad credentials")
            || said.contains("password")
        {
            match &self.credentials {
                Some(c) => format!(
                    "the credentials of user `{}` were refused: check HAJOBS_CASSANDRA_USER and the password (HAJOBS_CASSANDRA_PASSWORD, a password file, or `password`)",
                    c.user
                ),
                None => "the cluster requires a user and password (PasswordAuthenticator): set HAJOBS_CASSANDRA_USER and HAJOBS_CASSANDRA_PASSWORD, or `user` and `password_file` in [cassandra]".into(),
            }
        } else if said.contains("UnknownIssuer") || said.contains("BadSignature") {
            "TLS: a node's certificate is not signed by the configured CA (`ca_file` / HAJOBS_CASSANDRA_TLS_CA)".into()
        } else if said.contains("NotValidForName") {
            "TLS: a node's certificate does not name its address: fix the certificate, or set `verify_hostname = false` (the chain is still checked)".into()
        } else if said.contains("invalid peer certificate") || said.contains("InvalidCertificate") {
            format!("TLS: a node's certificate was refused ({first})")
        } else if tls
            && (said.contains("Connection broken")
                || said.contains("reset")
                || said.contains("os error 104"))
        {
            if self.tls.as_ref().is_some_and(|t| t.client_cert.is_none()) {
                "TLS: the node closed the connection: does it require a client certificate? (`cert_file` and `key_file` / HAJOBS_CASSANDRA_TLS_CERT and _KEY)".into()
            } else {
                "TLS: the node closed the connection: is its client encryption on, and does it trust this client's certificate?".into()
            }
        } else if !tls
            && (said.contains("reset")
                || said.contains("os error 104")
                || said.contains("Connection broken"))
        {
            "the node closed the connection: does the cluster require TLS? (`[cassandra.tls]` / HAJOBS_CASSANDRA_TLS_CA)".into()
        } else if said.contains("refused") || said.contains("os error 111") {
            "nothing listens there: is it running? (locally: deploy/local/cassandra start)".into()
        } else {
            "is it running and reachable? (locally: deploy/local/cassandra start)".into()
        };
        StoreError::Unreachable {
            contact_points: self.contact_points.join(","),
            hint,
            source: Box::new(DriverSaid(first)),
        }
    }
}
