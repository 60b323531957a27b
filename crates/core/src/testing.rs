//! Helpers for tests against a real Cassandra (feature `test-util`): contact
//! points from `HAJOBS_CQL_NODES`, a unique keyspace per test, tracing to the
//! test writer. A test that cannot reach Cassandra fails, naming the way to
//! start it; it never skips.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{CassandraConfig, LeaseStore, schema};
use scylla::client::session::Session;

/// The contact points of the test cluster.
pub fn contact_list() -> String {
    std::env::var("HAJOBS_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
}

/// Sends tracing output to the test writer (`RUST_LOG` filters, default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Connects to the test cluster, or fails the test naming the way to start it.
pub async fn connect() -> Arc<Session> {
    init_tracing();
    let nodes = contact_list();
    match CassandraConfig::from_contact_list(&nodes).connect().await {
        Ok(s) => s,
        Err(e) => panic!(
            "this test needs a real Cassandra at HAJOBS_CQL_NODES={nodes} and cannot reach it: {e} ({})\n\
             start one with `deploy/local/cassandra start`",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    }
}

/// A keyspace name no other test (or test run) uses.
pub fn unique_keyspace(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t_{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// A keyspace with hajobs' schema applied, dropped when the test ends.
#[derive(Debug)]
pub struct TestKeyspace {
    /// A session on the test cluster.
    pub session: Arc<Session>,
    /// The keyspace's name.
    pub name: String,
}

impl TestKeyspace {
    /// Creates a fresh keyspace and applies the schema.
    pub async fn new(prefix: &str) -> Self {
        let session = connect().await;
        let name = unique_keyspace(prefix);
        schema::apply(&session, &name, &schema::Replication::default())
            .await
            .expect("applying the schema");
        Self { session, name }
    }

    /// The configuration of this keyspace.
    pub fn config(&self) -> CassandraConfig {
        CassandraConfig::from_contact_list(&contact_list()).with_keyspace(self.name.clone())
    }

    /// A lease store on this keyspace.
    pub async fn lease_store(&self) -> LeaseStore {
        LeaseStore::new(self.session.clone(), &self.config())
            .await
            .expect("preparing the lease store")
    }

    /// Drops the keyspace: cleanup, after the test's assertions. A node
    /// busy with other tests' schema changes may time the drop out; that is
    /// reported, not failed (the keyspace's name is unique to this test,
    /// and a local cluster is thrown away after the run).
    pub async fn drop(self) {
        if let Err(e) = self
            .session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.name), ())
            .await
        {
            eprintln!(
                "test keyspace {} not dropped (left to the cluster's cleanup): {e}",
                self.name
            );
        }
    }
}
