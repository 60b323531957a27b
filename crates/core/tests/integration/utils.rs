//! Test helpers: contact points from `HAJOBS_CQL_NODES`, a unique keyspace per test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hajobs_core::{CassandraConfig, schema};
use scylla::client::session::Session;

/// The contact points of the test cluster.
pub(crate) fn contact_list() -> String {
    std::env::var("HAJOBS_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Connects to the test cluster, or fails the test naming the way to start it.
pub(crate) async fn connect() -> Arc<Session> {
    init_tracing();
    let nodes = contact_list();
    match CassandraConfig::from_contact_list(&nodes).connect().await {
        Ok(s) => s,
        Err(e) => panic!(
            "this test needs a real Cassandra at HAJOBS_CQL_NODES={nodes} and cannot reach it: {e:#?}\n\
             start one with `deploy/local/cassandra start`"
        ),
    }
}

/// A keyspace name no other test (or test run) uses.
pub(crate) fn unique_keyspace(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t_{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// A keyspace with hajobs' schema applied, dropped when the test ends.
pub(crate) struct TestKeyspace {
    pub(crate) session: Arc<Session>,
    pub(crate) name: String,
}

impl TestKeyspace {
    pub(crate) async fn new(prefix: &str) -> Self {
        let session = connect().await;
        let name = unique_keyspace(prefix);
        schema::apply(&session, &name, &schema::Replication::default())
            .await
            .expect("applying the schema");
        Self { session, name }
    }

    pub(crate) async fn drop(self) {
        self.session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.name), ())
            .await
            .expect("dropping the test keyspace");
    }
}
