//! Checkpoints on a real Cassandra, judged from the job's own records: the
//! next attempt of a trigger resumes from the last checkpoint, and a stale
//! attempt's checkpoint is refused (fenced by the newer attempt's token).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{CheckpointStore, FencingToken, JobId, TriggerId};
use hajobs_scheduler::{
    CheckpointError, Done, JobContext, JobError, JobSpec, LockSpec, ManagerError, RetryPolicy,
    StartOutcome,
};
use serde_json::json;

use crate::{eventually, replica};

/// The steps each attempt executed, as the job records them, and the
/// attempts' contexts.
#[derive(Default)]
struct Record {
    steps: Vec<(JobId, u64)>,
    attempts: Vec<JobContext>,
}

#[tokio::test]
async fn a_retry_resumes_from_the_last_checkpoint_and_a_stale_attempt_is_refused() {
    let ks = TestKeyspace::new("checkpoints").await;
    let record: Arc<Mutex<Record>> = Arc::default();
    let spec = JobSpec::new("import", "import")
        .unwrap()
        .checkpoints(true)
        .retries(RetryPolicy {
            count: 1,
            backoff: Duration::from_millis(100),
            factor: 1.0,
            max_backoff: Duration::from_millis(100),
        })
        .unwrap();
    let m = {
        let record = record.clone();
        replica(&ks, "r1")
            .await
            .job(spec, move |ctx: JobContext| {
                let record = record.clone();
                async move {
                    let first = record.lock().unwrap().attempts.is_empty();
                    record.lock().unwrap().attempts.push(ctx.clone());
                    let next = ctx
                        .last_checkpoint()
                        .and_then(|c| c["next"].as_u64())
                        .unwrap_or(0);
                    for step in next..10 {
                        record.lock().unwrap().steps.push((ctx.job_id, step));
                        ctx.checkpoint(json!({ "next": step + 1 }))
                            .await
                            .map_err(|e| JobError::new(e.to_string()))?;
                        // The first attempt dies after step 4.
                        if first && step == 4 {
                            return Err(JobError::new("crashed after step 4"));
                        }
                    }
                    Ok(Done::finished())
                }
            })
            .build()
            .await
            .unwrap()
    };
    m.start().await.unwrap();
    let outcome = m.trigger("import").await.unwrap();
    let StartOutcome::Started { trigger_id, .. } = outcome else {
        panic!("{outcome:?}");
    };
    eventually(
        Duration::from_secs(20),
        "the retry finished the steps",
        || async { record.lock().unwrap().steps.len() >= 10 },
    )
    .await;
    let (steps, attempts) = {
        let r = record.lock().unwrap();
        (r.steps.clone(), r.attempts.clone())
    };
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].last_checkpoint(),
        None,
        "a new trigger has none"
    );
    assert_eq!(attempts[1].last_checkpoint(), Some(&json!({ "next": 5 })));
    let done: Vec<u64> = steps.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        done,
        (0..10).collect::<Vec<_>>(),
        "every step once, in order"
    );
    assert!(attempts[1].fencing_token > attempts[0].fencing_token);
    // The first attempt is stale now: its checkpoint is refused, through
    // its context and straight at the store with its token alike.
    let stale = attempts[0].checkpoint(json!({ "next": 99 })).await;
    assert!(
        matches!(
            stale,
            Err(CheckpointError::Stale | CheckpointError::LeaseLost)
        ),
        "{stale:?}"
    );
    let store = CheckpointStore::new(ks.session.clone(), &ks.config(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        !store
            .write(
                trigger_id,
                attempts[0].job_id,
                attempts[0].fencing_token,
                &json!({ "next": 99 })
            )
            .await
            .unwrap(),
        "a stale token's write is refused"
    );
    // A stale attempt cannot fence it back either.
    assert!(matches!(
        store
            .fence(trigger_id, "import", attempts[0].fencing_token)
            .await
            .unwrap(),
        hajobs_core::Fenced::Stale(FencingToken(t)) if t == attempts[1].fencing_token.0
    ));
    // A trigger never seen has no checkpoint.
    assert!(matches!(
        store
            .fence(TriggerId::new(), "import", FencingToken(1))
            .await
            .unwrap(),
        hajobs_core::Fenced::Newest { last: None }
    ));
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn checkpoints_are_refused_on_a_lock_type_with_capacity() {
    let ks = TestKeyspace::new("checkpoints_cap").await;
    let refused = replica(&ks, "r1")
        .await
        .lock(LockSpec::new("wide").unwrap().capacity(2).unwrap())
        .job(
            JobSpec::new("import", "wide")
                .unwrap()
                .concurrency(hajobs_scheduler::Concurrency::Allow)
                .checkpoints(true),
            |_ctx: JobContext| async { Ok(Done::finished()) },
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ManagerError::Policy { problem, .. } if problem.contains("capacity 1")),
        "{refused}"
    );
    ks.drop().await;
}
