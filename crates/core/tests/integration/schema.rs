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
    // The CQL files and the expected tables agree.
    let check = schema::check(&session, &ks).await.unwrap();
    assert!(check.is_clean() && !check.ha_jobs_keyspace, "{check:?}");
    assert!(first.repaired.is_empty(), "{:?}", first.repaired);

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

/// ha-jobs' own tables, as its migrations create them.
const HA_JOBS_SCHEMA: &[&str] = &[
    "CREATE TABLE {ks}.lock (lock_type text PRIMARY KEY, job_lock timeuuid)",
    "CREATE TABLE {ks}.job_status_meta (job_type text, job_id timeuuid, trigger_id timeuuid, job_status_ts timestamp, job_state text, job_result text, PRIMARY KEY (job_type, job_id)) WITH CLUSTERING ORDER BY (job_id DESC)",
    "CREATE TABLE {ks}.job_status_data (job_type text, job_id timeuuid, trigger_id timeuuid, job_status_ts timestamp, job_state text, job_result text, content text, PRIMARY KEY ((job_type, job_id), job_status_ts, job_state, job_result)) WITH CLUSTERING ORDER BY (job_status_ts DESC)",
];

async fn create(session: &scylla::client::session::Session, ks: &str, statements: &[&str]) {
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"),
            (),
        )
        .await
        .unwrap();
    for s in statements {
        session
            .query_unpaged(s.replace("{ks}", ks), ())
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    session.await_schema_agreement().await.unwrap();
}

#[tokio::test]
async fn an_ha_jobs_keyspace_is_adopted_by_adding_what_it_lacks() {
    let session = connect().await;
    let ks = unique_keyspace("adopt");
    create(&session, &ks, HA_JOBS_SCHEMA).await;
    session
        .query_unpaged(
            format!("INSERT INTO {ks}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result) VALUES ('import', now(), now(), toTimestamp(now()), 'FINISHED', 'SUCCESS')"),
            (),
        )
        .await
        .unwrap();
    let before = schema::check(&session, &ks).await.unwrap();
    assert!(before.ha_jobs_keyspace);
    assert_eq!(
        before.unrecorded,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    let missing: Vec<String> = before.drifts.iter().map(ToString::to_string).collect();
    assert_eq!(missing.len(), 13, "{missing:#?}");
    assert!(missing.contains(&"table `lock` lacks column `fencing_token` (bigint)".to_owned()));
    assert!(missing.contains(&"table `cron_firing` is missing".to_owned()));
    assert!(before.drifts.iter().all(|d| d.repairable()));

    let report = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    assert_eq!(
        report.applied,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    assert!(
        report.repaired.iter().any(|r| r.contains("ALTER TABLE")),
        "{:?}",
        report.repaired
    );
    let after = schema::check(&session, &ks).await.unwrap();
    assert!(after.is_clean(), "{after:?}");
    // ha-jobs' row is still there and readable.
    let store = hajobs_core::StatusStore::new(
        session.clone(),
        &hajobs_core::CassandraConfig::default().with_keyspace(ks.clone()),
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let rows = store
        .history(&hajobs_core::JobType::new("import").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].status().is_some(), "{rows:?}");
    TestKeyspace { session, name: ks }.drop().await;
}

#[tokio::test]
async fn recorded_migrations_do_not_hide_missing_columns() {
    // An earlier adoption recorded versions 1–3 on ha-jobs' tables without
    // adding anything; apply now repairs it, and check says so before.
    let session = connect().await;
    let ks = unique_keyspace("recorded");
    create(&session, &ks, HA_JOBS_SCHEMA).await;
    session
        .query_unpaged(
            format!("CREATE TABLE {ks}.schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)"),
            (),
        )
        .await
        .unwrap();
    for v in [1, 2, 3] {
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (version, name) VALUES ({v}, 'x')"),
                (),
            )
            .await
            .unwrap();
    }
    let before = schema::check(&session, &ks).await.unwrap();
    assert_eq!(
        before.unrecorded,
        vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    assert!(!before.drifts.is_empty());
    let report = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    assert_eq!(
        report.applied,
        vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    assert!(schema::check(&session, &ks).await.unwrap().is_clean());
    TestKeyspace { session, name: ks }.drop().await;
}

#[tokio::test]
async fn a_key_no_statement_can_change_is_refused_and_nothing_is_recorded() {
    let session = connect().await;
    let ks = unique_keyspace("badkey");
    create(
        &session,
        &ks,
        &[
            HA_JOBS_SCHEMA[0],
            "CREATE TABLE {ks}.job_status_meta (job_type text, job_id timeuuid, trigger_id timeuuid, job_status_ts timestamp, job_state text, job_result text, PRIMARY KEY (job_id))",
            HA_JOBS_SCHEMA[2],
        ],
    )
    .await;
    let err = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table `job_status_meta` has primary key ((job_id)), hajobs needs ((job_type), job_id DESC)"),
        "{err}"
    );
    assert!(err.contains("nothing was recorded"), "{err}");
    assert!(
        schema::applied_versions(&session, &ks)
            .await
            .unwrap()
            .is_empty()
    );
    TestKeyspace { session, name: ks }.drop().await;
}

#[tokio::test]
async fn an_earlier_hajobs_status_layout_is_copied_into_ha_jobs_key_with_its_ttls() {
    let session = connect().await;
    let ks = unique_keyspace("relayout");
    // What hajobs' versions 1–3 created.
    create(
        &session,
        &ks,
        &[
            "CREATE TABLE {ks}.lock (lock_type text PRIMARY KEY, job_lock timeuuid, owner text, acquired_at timestamp, fencing_token bigint, cancel_requested boolean)",
            "CREATE TABLE {ks}.job_status_meta (job_type text, job_id timeuuid, trigger_id timeuuid, job_status_ts timestamp, job_state text, job_result text, owner text, fencing_token bigint, PRIMARY KEY (job_type, job_id)) WITH CLUSTERING ORDER BY (job_id DESC)",
            "CREATE TABLE {ks}.job_status_data (job_type text, job_id timeuuid, job_status_ts timestamp, trigger_id timeuuid, job_state text, job_result text, content text, owner text, fencing_token bigint, PRIMARY KEY ((job_type, job_id), job_status_ts)) WITH CLUSTERING ORDER BY (job_status_ts DESC)",
            "CREATE TABLE {ks}.cron_firing (job_type text, instant timestamp, trigger_id timeuuid, owner text, PRIMARY KEY (job_type, instant)) WITH CLUSTERING ORDER BY (instant DESC)",
            "CREATE TABLE {ks}.schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)",
        ],
    )
    .await;
    for v in [1, 2, 3] {
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (version, name) VALUES ({v}, 'x')"),
                (),
            )
            .await
            .unwrap();
    }
    let job_id = hajobs_core::JobId::new();
    for (ms, state, result) in [(1000, "RUNNING", "PENDING"), (2000, "FINISHED", "SUCCESS")] {
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.job_status_data (job_type, job_id, job_status_ts, trigger_id, job_state, job_result, content, owner, fencing_token) VALUES ('import', {}, {ms}, now(), '{state}', '{result}', '{{}}', 'n1', 7) USING TTL 3600", job_id.uuid()),
                (),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        schema::check(&session, &ks).await.unwrap().drifts,
        vec![
            schema::drift::Drift::OldStatusDataKey,
            schema::drift::Drift::MissingColumn {
                table: "cron_firing",
                column: "outcome",
                cql_type: "text"
            },
            schema::drift::Drift::MissingColumn {
                table: "cron_firing",
                column: "seen_at",
                cql_type: "timestamp"
            },
            schema::drift::Drift::MissingTable {
                table: "cron_firing_day"
            },
            schema::drift::Drift::MissingTable { table: "node" },
            schema::drift::Drift::MissingTable {
                table: "watch_list"
            },
            schema::drift::Drift::MissingTable {
                table: "trigger_request"
            }
        ]
    );
    let report = schema::apply(&session, &ks, &Replication::default())
        .await
        .unwrap();
    assert_eq!(
        report.applied,
        vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    assert!(
        report.repaired.iter().any(|r| r.contains("copied 2 rows")),
        "{:?}",
        report.repaired
    );
    assert!(schema::check(&session, &ks).await.unwrap().is_clean());
    // The rows came back, with their TTLs.
    let rows = session
        .query_unpaged(
            format!("SELECT job_state, TTL(trigger_id) FROM {ks}.job_status_data WHERE job_type = 'import' AND job_id = {}", job_id.uuid()),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String, Option<i32>)>()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "FINISHED");
    assert!(
        rows.iter()
            .all(|(_, ttl)| ttl.is_some_and(|t| t > 3000 && t <= 3600)),
        "{rows:?}"
    );
    // Two statuses in one millisecond no longer overwrite each other.
    for state in ["RUNNING", "FAILED"] {
        let result = if state == "RUNNING" {
            "PENDING"
        } else {
            "FAILED"
        };
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.job_status_data (job_type, job_id, job_status_ts, trigger_id, job_state, job_result) VALUES ('import', {}, 5000, now(), '{state}', '{result}')", job_id.uuid()),
                (),
            )
            .await
            .unwrap();
    }
    let count = session
        .query_unpaged(
            format!("SELECT COUNT(*) FROM {ks}.job_status_data WHERE job_type = 'import' AND job_id = {}", job_id.uuid()),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap()
        .0;
    assert_eq!(count, 4);
    TestKeyspace { session, name: ks }.drop().await;
}
