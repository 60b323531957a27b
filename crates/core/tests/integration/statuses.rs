use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{
    FencingToken, JobId, JobState, JobStatus, JobType, NodeId, StatusEntry, StatusStore, TriggerId,
};

/// An attempt that ends in the millisecond it began has two rows with one
/// `job_status_ts`; the key orders them by state name (RUNNING before
/// SKIPPED and WARNING), so the newest is found by its write time.
#[tokio::test]
async fn an_ending_in_the_millisecond_of_running_is_the_latest_status() {
    let ks = TestKeyspace::new("samems").await;
    let store = StatusStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    let job_type = JobType::new("quick").unwrap();
    // A millisecond boundary plus 100 µs: both statuses fall in it.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ms_start = UNIX_EPOCH + Duration::from_millis(now.as_millis() as u64);
    for ending in [JobState::Skipped, JobState::Warning, JobState::Finished] {
        let job_id = JobId::new();
        let status = |state, micros| JobStatus {
            job_type: job_type.clone(),
            job_id,
            trigger_id: TriggerId::new(),
            timestamp: ms_start + Duration::from_micros(micros),
            state,
            owner: Some(NodeId::new("a").unwrap()),
            fencing_token: Some(FencingToken(1)),
            content: None,
        };
        store.write(&status(JobState::Running, 100)).await.unwrap();
        store.write(&status(ending, 200)).await.unwrap();
        let latest = match store.get(&job_type, job_id).await.unwrap() {
            Some(StatusEntry::Status(s)) => s.state,
            other => panic!("no status: {other:?}"),
        };
        assert_eq!(latest, ending, "latest of an attempt ending {ending}");
        let history: Vec<JobState> = store
            .run_history(&job_type, job_id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.status().unwrap().state)
            .collect();
        assert_eq!(history, vec![ending, JobState::Running], "newest first");
        // The per-attempt summary agrees.
        let meta = store.history(&job_type, 1).await.unwrap();
        assert_eq!(meta[0].status().unwrap().state, ending);
    }
    ks.drop().await;
}
