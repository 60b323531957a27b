use hajobs_core::schema::{self, MIGRATIONS, Replication};

use hajobs_core::testing::{TestKeyspace, connect, unique_keyspace};

#[tokio::test]
async fn schema_applies_twice_and_records_versions() {
    let session = connect().await;
    let ks = unique_keyspace("schema");
    let first = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first.applied, all);
    assert!(first.already_applied.is_empty());

    let second = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    assert!(
        second.applied.is_empty(),
        "second apply ran {:?}",
        second.applied
    );
    assert_eq!(second.already_applied, all);
    assert_eq!(schema::applied_versions(&session, &ks).await.unwrap(), all);

    // The tables exist with ha-jobs' column names.
    for (table, column) in [
        ("lock", "job_lock"),
        ("job_status_meta", "job_result"),
        ("job_status_data", "content"),
    ] {
        session
            .query_unpaged(format!("SELECT {column} FROM {ks}.{table} LIMIT 1"), ())
            .await
            .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
    }
    TestKeyspace { session, name: ks }.drop().await;
}

#[tokio::test]
async fn printed_schema_names_keyspace_and_every_table() {
    let cql = schema::print("my_ks", &Replication::parse("dc1:3").unwrap()).unwrap();
    assert!(cql.contains("CREATE KEYSPACE IF NOT EXISTS my_ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}"));
    assert!(cql.contains("USE my_ks;"));
    for table in [
        "lock",
        "job_status_meta",
        "job_status_data",
        "schema_migrations",
    ] {
        assert!(
            cql.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
            "{table}"
        );
    }
}

#[tokio::test]
async fn printed_schema_applies_as_is() {
    // The printed script is what a DBA runs by hand: run it statement by statement.
    let session = connect().await;
    let ks = unique_keyspace("printed");
    let cql = schema::print(&ks, &Replication::default()).unwrap();
    for statement in schema::statements(&cql) {
        session
            .query_unpaged(statement.clone(), ())
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        session.await_schema_agreement().await.unwrap();
    }
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    // hajobs sees the hand-applied versions and applies nothing more.
    assert_eq!(schema::applied_versions(&session, &ks).await.unwrap(), all);
    let report = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    assert!(report.applied.is_empty());
    TestKeyspace { session, name: ks }.drop().await;
}
