//! Facts about the real Cassandra that hajobs relies on.

use std::time::{Duration, Instant};

use hajobs_core::lwt::LwtOutcome;
use scylla::value::CqlValue;

use hajobs_core::testing::TestKeyspace;

#[tokio::test]
async fn insert_if_not_exists_applies_once_and_returns_the_row_otherwise() {
    let ks = TestKeyspace::new("lwt").await;
    let insert = ks
        .session
        .prepare(format!(
            "INSERT INTO {}.lock (lock_type, owner) VALUES (?, ?) IF NOT EXISTS",
            ks.name
        ))
        .await
        .unwrap();

    let first = ks
        .session
        .execute_unpaged(&insert, ("import", "node-a"))
        .await
        .unwrap();
    let first = LwtOutcome::from_result(first, "first insert").unwrap();
    assert!(first.applied);
    // Cassandra sends `[applied]` alone when the write applied.
    assert!(
        !first.has("owner"),
        "unexpected columns: {:?}",
        first.columns
    );

    let second = ks
        .session
        .execute_unpaged(&insert, ("import", "node-b"))
        .await
        .unwrap();
    let second = LwtOutcome::from_result(second, "second insert").unwrap();
    assert!(!second.applied);
    // …and the current row when it did not.
    assert_eq!(
        second.get("lock_type"),
        Some(&CqlValue::Text("import".into()))
    );
    assert_eq!(second.get("owner"), Some(&CqlValue::Text("node-a".into())));
    ks.drop().await;
}

#[tokio::test]
async fn a_cell_written_with_ttl_is_gone_after_expiry() {
    let ks = TestKeyspace::new("ttl").await;
    ks.session
        .query_unpaged(
            format!(
                "INSERT INTO {}.lock (lock_type, owner) VALUES ('t', 'x') USING TTL 2",
                ks.name
            ),
            (),
        )
        .await
        .unwrap();
    let written = Instant::now();
    let select = format!("SELECT owner FROM {}.lock WHERE lock_type = 't'", ks.name);
    let read = || async {
        ks.session
            .query_unpaged(select.clone(), ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .maybe_first_row::<(Option<String>,)>()
            .unwrap()
            .and_then(|(o,)| o)
    };
    assert_eq!(
        read().await.as_deref(),
        Some("x"),
        "the cell is there before expiry"
    );
    let deadline = written + Duration::from_secs(6);
    while read().await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the TTL 2 cell still exists after 6 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = written.elapsed();
    // Cassandra's TTLs have one-second granularity: gone after at least 1 s.
    assert!(
        gone_after >= Duration::from_secs(1),
        "gone after only {gone_after:?}"
    );
    ks.drop().await;
}
