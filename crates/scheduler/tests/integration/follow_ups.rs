//! Jobs that follow jobs, on a real Cassandra with two replicas, judged
//! from the jobs' own records: `on_success` after a success, `on_failure`
//! after a failure, once per parent attempt, with the parent's parameters,
//! its attempt and the chain.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{JobId, TriggerArgs, TriggerId};
use hajobs_scheduler::{
    ArgsSpec, Done, JobContext, JobError, JobManager, JobSpec, ManagerError, ParamSpec,
    StartOutcome,
};

use crate::{eventually, replica};

/// (job type, trigger, parent attempt, chain, the `date` parameter).
type Runs = Arc<
    Mutex<
        Vec<(
            String,
            TriggerId,
            Option<JobId>,
            Option<TriggerId>,
            Option<String>,
        )>,
    >,
>;

fn with_date() -> ArgsSpec {
    ArgsSpec {
        params: BTreeMap::from([("date".to_owned(), ParamSpec::default())]),
        ..ArgsSpec::default()
    }
}

async fn node(ks: &TestKeyspace, name: &str, runs: &Runs) -> JobManager {
    let specs = [
        JobSpec::new("extract", "extract")
            .unwrap()
            .args(with_date())
            .on_success(&["load"])
            .unwrap()
            .on_failure(&["notify"])
            .unwrap(),
        JobSpec::new("load", "load").unwrap().args(with_date()),
        JobSpec::new("notify", "notify").unwrap(),
    ];
    let mut b = replica(ks, name).await;
    for spec in specs {
        let runs = runs.clone();
        b = b.job(spec, move |ctx: JobContext| {
            let runs = runs.clone();
            async move {
                runs.lock().unwrap().push((
                    ctx.job_type.to_string(),
                    ctx.trigger_id,
                    ctx.parent().map(|p| p.job_id),
                    ctx.parent().map(|p| p.chain_id),
                    ctx.param("date").map(str::to_owned),
                ));
                // An extract of 1999 fails.
                if ctx.param("date") == Some("1999-01-01") && ctx.job_type.as_str() == "extract" {
                    return Err(JobError::new("no data for 1999"));
                }
                Ok(Done::finished())
            }
        });
    }
    let m = b.build().await.unwrap();
    m.start().await.unwrap();
    m
}

#[tokio::test]
async fn follow_ups_fire_once_per_parent_attempt_with_its_parameters_and_chain() {
    let ks = TestKeyspace::new("follow_ups").await;
    let runs: Runs = Arc::default();
    let r1 = node(&ks, "r1", &runs).await;
    let r2 = node(&ks, "r2", &runs).await;
    let mut parents = Vec::new();
    for date in ["2026-11-28", "1999-01-01"] {
        crate::lock_free(&r1, "extract").await;
        let outcome = r1
            .trigger_with("extract", TriggerArgs::from_params([("date", date)]))
            .await
            .unwrap();
        let StartOutcome::Started {
            trigger_id, job_id, ..
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        parents.push((trigger_id, job_id, date));
    }
    eventually(Duration::from_secs(20), "both follow-ups ran", || async {
        runs.lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 != "extract")
            .count()
            >= 2
    })
    .await;
    // Every follow-up recorded has fired (none pending), and none twice.
    let store = r1.scheduled_store().clone();
    let now = SystemTime::now();
    eventually(
        Duration::from_secs(10),
        "follow-ups' outcomes recorded",
        || async {
            store
                .due_between(now - Duration::from_secs(60), now + Duration::from_secs(10))
                .await
                .unwrap()
                .iter()
                .all(|t| t.outcome.is_some())
        },
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    let children: Vec<_> = runs.iter().filter(|r| r.0 != "extract").collect();
    assert_eq!(children.len(), 2, "{runs:?}");
    let (ok_trigger, ok_job, _) = parents[0];
    let (failed_trigger, failed_job, _) = parents[1];
    let load = children.iter().find(|r| r.0 == "load").expect("load ran");
    assert_eq!(load.2, Some(ok_job), "load follows the successful attempt");
    assert_eq!(
        load.3,
        Some(ok_trigger),
        "its chain is the parent's trigger"
    );
    assert_eq!(
        load.4.as_deref(),
        Some("2026-11-28"),
        "the parent's parameter"
    );
    let notify = children
        .iter()
        .find(|r| r.0 == "notify")
        .expect("notify ran");
    assert_eq!(notify.2, Some(failed_job));
    assert_eq!(notify.3, Some(failed_trigger));
    assert_eq!(notify.4, None, "notify declares no parameters");
    r1.shutdown(Duration::from_secs(5)).await;
    r2.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn unknown_follow_ups_and_cycles_are_refused() {
    let ks = TestKeyspace::new("follow_ups_bad").await;
    let refused = replica(&ks, "r1")
        .await
        .job(
            JobSpec::new("a", "a").unwrap().on_success(&["b"]).unwrap(),
            |_ctx: JobContext| async { Ok(Done::finished()) },
        )
        .job(
            JobSpec::new("b", "b").unwrap().on_failure(&["a"]).unwrap(),
            |_ctx: JobContext| async { Ok(Done::finished()) },
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ManagerError::Policy { problem, .. } if problem.contains("a → b → a")),
        "{refused}"
    );
    ks.drop().await;
}
