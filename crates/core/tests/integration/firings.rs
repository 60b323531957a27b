use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hajobs_core::firing_store::{CUTOVER_DELAY, day_of};
use hajobs_core::testing::TestKeyspace;
use hajobs_core::{FiringStore, JobType, NodeId, TriggerId};

async fn rows(ks: &TestKeyspace, table: &str) -> usize {
    ks.session
        .query_unpaged(format!("SELECT instant FROM {}.{table}", ks.name), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num()
}

/// Claims move from `cron_firing` to the day-bucketed table at the cutover
/// (schema 10's `applied_at` + one minute), each firing claimed in exactly
/// one of them, and every read sees both.
#[tokio::test]
async fn claims_move_to_day_buckets_at_the_cutover_and_reads_see_both() {
    let ks = TestKeyspace::new("firing_day").await;
    // Schema 10 applied yesterday at 23:58:30 UTC: the cutover is 23:59:30,
    // so that firings around midnight land on both sides and in two days.
    let today = day_of(SystemTime::now());
    let midnight = UNIX_EPOCH + Duration::from_secs(today as u64 * 86_400);
    let applied = midnight - Duration::from_secs(90);
    ks.session
        .query_unpaged(
            format!(
                "UPDATE {}.schema_migrations SET applied_at = ? WHERE version = 10",
                ks.name
            ),
            (scylla::value::CqlTimestamp(
                applied.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64,
            ),),
        )
        .await
        .unwrap();
    let store = FiringStore::new(
        ks.session.clone(),
        &ks.config(),
        Duration::from_secs(86_400 * 3),
    )
    .await
    .unwrap();
    assert_eq!(store.cutover(), Some(applied + CUTOVER_DELAY));
    let job_type = JobType::new("tick").unwrap();
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    // Before the cutover, at it, after it (still yesterday), after midnight.
    let cutover = applied + CUTOVER_DELAY;
    let secs = Duration::from_secs;
    let instants = [
        cutover - secs(60),
        cutover,
        cutover + secs(20),
        cutover + secs(31),
        cutover + secs(45),
    ];
    for at in &instants {
        let trigger = TriggerId::for_firing("tick", *at);
        assert!(
            store.claim(&job_type, *at, trigger, &a).await.unwrap(),
            "first claim of {at:?}"
        );
        assert!(
            !store.claim(&job_type, *at, trigger, &b).await.unwrap(),
            "second claim of {at:?}"
        );
        assert_eq!(
            store.claimed_by(&job_type, *at).await.unwrap().as_deref(),
            Some("a")
        );
    }
    assert_eq!(
        rows(&ks, "cron_firing").await,
        1,
        "the one before the cutover"
    );
    assert_eq!(rows(&ks, "cron_firing_day").await, 4);
    assert_ne!(day_of(instants[1]), day_of(instants[4]), "two day buckets");
    // Reads see both tables, newest first.
    let recent = store.recent(&job_type, UNIX_EPOCH, 10).await.unwrap();
    let seen: Vec<SystemTime> = recent.iter().map(|f| f.instant).collect();
    let mut expected = instants.to_vec();
    expected.sort();
    expected.reverse();
    let millis = |t: &SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(
        seen.iter().map(millis).collect::<Vec<_>>(),
        expected.iter().map(millis).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .last_claimed(&job_type)
            .await
            .unwrap()
            .as_ref()
            .map(millis),
        Some(millis(&instants[4]))
    );
    // Outcomes and closing land in the claim's own table.
    store
        .record(&job_type, instants[0], hajobs_core::FiringOutcome::Started)
        .await
        .unwrap();
    assert!(store.close_lost(&job_type, instants[4]).await.unwrap());
    assert!(!store.close_lost(&job_type, instants[0]).await.unwrap());
    let recent = store.recent(&job_type, UNIX_EPOCH, 10).await.unwrap();
    assert_eq!(recent[0].outcome.as_deref(), Some("lost"));
    assert_eq!(recent[4].outcome.as_deref(), Some("started"));
    ks.drop().await;
}

#[tokio::test]
async fn a_new_keyspace_claims_in_day_buckets_from_the_start() {
    let ks = TestKeyspace::new("firing_new").await;
    let store = FiringStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        store.cutover(),
        Some(UNIX_EPOCH),
        "no claim ever went to cron_firing"
    );
    let job_type = JobType::new("tick").unwrap();
    let at = SystemTime::now();
    let trigger = TriggerId::for_firing("tick", at);
    let node = NodeId::new("a").unwrap();
    assert!(store.claim(&job_type, at, trigger, &node).await.unwrap());
    assert_eq!(
        (
            rows(&ks, "cron_firing").await,
            rows(&ks, "cron_firing_day").await
        ),
        (0, 1)
    );
    ks.drop().await;
}
