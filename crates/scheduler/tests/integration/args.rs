//! Parameters and payloads of triggers, on a real Cassandra: checked before
//! anything is recorded, seen by every attempt of the trigger (retries, a
//! re-run on another replica, cron firings' static parameters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{JobType, TriggerArgs, TriggerId};
use hajobs_scheduler::{
    ArgsSpec, Done, JobContext, JobError, JobSpec, ManagerError, ParamSpec, Pattern, PayloadPolicy,
    RetryPolicy, StartOutcome,
};
use serde_json::{Value, json};

use crate::{eventually, final_status, replica};

/// What each run saw, as the job records it.
type Seen = Arc<Mutex<Vec<(TriggerId, BTreeMap<String, String>, Option<Value>)>>>;

fn declared() -> ArgsSpec {
    ArgsSpec {
        params: BTreeMap::from([
            (
                "date".to_owned(),
                ParamSpec {
                    required: true,
                    pattern: Some(Pattern::new("[0-9]{4}-[0-9]{2}-[0-9]{2}").unwrap()),
                    ..ParamSpec::default()
                },
            ),
            (
                "region".to_owned(),
                ParamSpec {
                    default: Some("eu".into()),
                    ..ParamSpec::default()
                },
            ),
        ]),
        payload: PayloadPolicy::Optional,
        cron_params: BTreeMap::new(),
    }
}

fn given(pairs: &[(&str, &str)], payload: Option<Value>) -> TriggerArgs {
    TriggerArgs {
        payload,
        ..TriggerArgs::from_params(pairs.iter().copied())
    }
}

/// A job that records what it saw and fails its first `fail` runs.
fn recording(seen: &Seen, fail: usize) -> impl hajobs_scheduler::Job + use<> {
    let seen = seen.clone();
    move |ctx: JobContext| {
        let seen = seen.clone();
        async move {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((ctx.trigger_id, ctx.params().clone(), ctx.payload().cloned()));
                seen.len()
            };
            if n <= fail {
                Err(JobError::new(format!("run {n} fails")))
            } else {
                Ok(Done::finished())
            }
        }
    }
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_them_before_anything_is_recorded() {
    let ks = TestKeyspace::new("args_refused").await;
    let seen: Seen = Arc::default();
    let spec = JobSpec::new("import", "import").unwrap().args(declared());
    let plain = JobSpec::new("plain", "plain").unwrap();
    let m = replica(&ks, "r1")
        .await
        .job(spec, recording(&seen, 0))
        .job(plain, recording(&seen, 0))
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    let cases = [
        (given(&[], None), "missing required parameter `date`"),
        (
            given(&[("date", "2026-11-28"), ("colour", "red")], None),
            "unknown parameter `colour`",
        ),
        (
            given(&[("date", "28.11.2026")], None),
            "parameter `date`: the value does not match",
        ),
        (
            given(&[("date", "2026-11-28"), ("region", "eu\nX=1")], None),
            "parameter `region`: the value holds a control character",
        ),
    ];
    for (args, expected) in cases {
        match m.trigger_with("import", args).await {
            Err(ManagerError::BadArgs { job_type, problem }) => {
                assert_eq!(job_type, "import");
                assert!(problem.contains(expected), "{problem} ∌ {expected}");
            }
            other => panic!("{expected}: refused expected, got {other:?}"),
        }
    }
    // A job that declares nothing takes nothing.
    let refused = m
        .trigger_with("plain", given(&[("date", "2026-11-28")], None))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("declares no parameters"),
        "{refused}"
    );
    let refused = m
        .trigger_with("plain", given(&[], Some(json!({"a": 1}))))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("takes none"), "{refused}");
    // Nothing ran, nothing was recorded.
    assert!(seen.lock().unwrap().is_empty());
    for job in ["import", "plain"] {
        let history = m
            .statuses()
            .history(&JobType::new(job).unwrap(), 10)
            .await
            .unwrap();
        assert!(history.is_empty(), "{job}: {history:?}");
    }
    m.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn every_attempt_of_a_trigger_sees_its_parameters_and_payload_on_any_replica() {
    let ks = TestKeyspace::new("args_attempts").await;
    let seen: Seen = Arc::default();
    let spec = || {
        JobSpec::new("import", "import")
            .unwrap()
            .args(declared())
            .retries(RetryPolicy {
                count: 1,
                backoff: Duration::from_millis(100),
                factor: 1.0,
                max_backoff: Duration::from_millis(100),
            })
            .unwrap()
    };
    // r1's runs fail twice (the first attempt and its retry); r2's succeed.
    let seen2: Seen = Arc::default();
    let r1 = replica(&ks, "r1")
        .await
        .job(spec(), recording(&seen, 2))
        .build()
        .await
        .unwrap();
    let r2 = replica(&ks, "r2")
        .await
        .job(spec(), recording(&seen2, 0))
        .build()
        .await
        .unwrap();
    r1.start().await.unwrap();
    r2.start().await.unwrap();
    let payload = json!({"files": ["a.csv", "b.csv"], "dry_run": false});
    let outcome = r1
        .trigger_with(
            "import",
            given(&[("date", "2026-11-28")], Some(payload.clone())),
        )
        .await
        .unwrap();
    let StartOutcome::Started {
        trigger_id, job_id, ..
    } = outcome
    else {
        panic!("started: {outcome:?}");
    };
    eventually(
        Duration::from_secs(20),
        "the first attempt and its retry",
        || async { seen.lock().unwrap().len() >= 2 },
    )
    .await;
    let expected = BTreeMap::from([
        ("date".to_owned(), "2026-11-28".to_owned()),
        ("region".to_owned(), "eu".to_owned()),
    ]);
    for (trigger, params, p) in seen.lock().unwrap().iter() {
        assert_eq!(*trigger, trigger_id);
        assert_eq!(params, &expected, "the default is added, the given kept");
        assert_eq!(p.as_ref(), Some(&payload));
    }
    // The statuses say what the trigger carried (not the payload itself).
    let first = final_status(&r1, "import", job_id).await;
    let content = first.content.expect("content");
    assert_eq!(content["params"], json!(expected), "{content}");
    assert_eq!(
        content["payload_bytes"],
        json!(payload.to_string().len()),
        "{content}"
    );
    // The supervisor's re-run, on the other replica, reads them back.
    assert!(seen2.lock().unwrap().is_empty());
    let rerun = r2.retrigger("import", trigger_id).await.unwrap();
    let StartOutcome::Started { job_id: rerun, .. } = rerun else {
        panic!("re-run started: {rerun:?}");
    };
    final_status(&r2, "import", rerun).await;
    let runs = seen2.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, trigger_id);
    assert_eq!(runs[0].1, expected);
    assert_eq!(runs[0].2.as_ref(), Some(&payload));
    r1.shutdown(Duration::from_secs(5)).await;
    r2.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}

#[tokio::test]
async fn cron_firings_carry_their_static_parameters() {
    let ks = TestKeyspace::new("args_cron").await;
    let seen: Seen = Arc::default();
    let mut args = declared();
    args.cron_params = BTreeMap::from([("date".to_owned(), "2026-01-01".to_owned())]);
    let spec = JobSpec::new("import", "import")
        .unwrap()
        .cron("* * * * * *", "UTC")
        .unwrap()
        .args(args.clone());
    let m = replica(&ks, "r1")
        .await
        .job(spec, recording(&seen, 0))
        .build()
        .await
        .unwrap();
    m.start().await.unwrap();
    eventually(Duration::from_secs(10), "a firing ran", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let (trigger, params, payload) = seen.lock().unwrap()[0].clone();
    assert!(trigger.is_firing_of("import"));
    assert_eq!(params["date"], "2026-01-01");
    assert_eq!(params["region"], "eu");
    assert_eq!(payload, None);
    // A re-run of a firing resolves them the same way (nothing recorded).
    let rerun = m.retrigger("import", trigger).await.unwrap();
    assert!(
        matches!(
            rerun,
            StartOutcome::Started { .. } | StartOutcome::Locked { .. }
        ),
        "{rerun:?}"
    );
    m.shutdown(Duration::from_secs(5)).await;
    for (t, p, _) in seen.lock().unwrap().iter() {
        assert_eq!(p["date"], "2026-01-01", "trigger {t}");
    }
    // A scheduled job whose firings lack a required parameter is refused.
    let mut bad = declared();
    bad.cron_params.clear();
    let refused = replica(&ks, "r2")
        .await
        .job(
            JobSpec::new("import", "import")
                .unwrap()
                .cron("* * * * * *", "UTC")
                .unwrap()
                .args(bad),
            recording(&seen, 0),
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("cron_params: missing required parameter `date`"),
        "{refused}"
    );
    ks.drop().await;
}

#[tokio::test]
async fn a_queued_trigger_reads_its_parameters_back_when_its_turn_comes() {
    use hajobs_scheduler::OnLocked;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ks = TestKeyspace::new("args_queue").await;
    let seen: Seen = Arc::default();
    let release = Arc::new(AtomicBool::new(false));
    // A run of region `hold` waits until released; others end at once.
    let job = |seen: Seen, release: Arc<AtomicBool>| {
        move |ctx: JobContext| {
            let (seen, release) = (seen.clone(), release.clone());
            async move {
                seen.lock().unwrap().push((
                    ctx.trigger_id,
                    ctx.params().clone(),
                    ctx.payload().cloned(),
                ));
                while ctx.param("region") == Some("hold") && !release.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<_, JobError>(Done::finished())
            }
        }
    };
    let spec = || {
        JobSpec::new("import", "import")
            .unwrap()
            .args(declared())
            .on_locked(OnLocked::Queue)
    };
    let r1 = replica(&ks, "r1")
        .await
        .job(spec(), job(seen.clone(), release.clone()))
        .build()
        .await
        .unwrap();
    let r2 = replica(&ks, "r2")
        .await
        .job(spec(), job(seen.clone(), release.clone()))
        .build()
        .await
        .unwrap();
    r1.start().await.unwrap();
    r2.start().await.unwrap();
    let first = r1
        .trigger_with(
            "import",
            given(&[("date", "2026-11-27"), ("region", "hold")], None),
        )
        .await
        .unwrap();
    assert!(matches!(first, StartOutcome::Started { .. }), "{first:?}");
    let queued = r2
        .trigger_with(
            "import",
            given(
                &[("date", "2026-11-28"), ("region", "us")],
                Some(json!([1])),
            ),
        )
        .await
        .unwrap();
    let StartOutcome::Queued { trigger_id, .. } = queued else {
        panic!("queued: {queued:?}");
    };
    release.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(20),
        "the queued trigger ran",
        || async { seen.lock().unwrap().iter().any(|r| r.0 == trigger_id) },
    )
    .await;
    let runs = seen.lock().unwrap().clone();
    let run = runs.iter().find(|r| r.0 == trigger_id).unwrap();
    assert_eq!(run.1["date"], "2026-11-28");
    assert_eq!(run.1["region"], "us");
    assert_eq!(run.2, Some(json!([1])));
    r1.shutdown(Duration::from_secs(5)).await;
    r2.shutdown(Duration::from_secs(5)).await;
    ks.drop().await;
}
