//! Work items on a real Cassandra: replicas (each its own session and node
//! id) racing for the same keys; verdicts from the workers' own records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hajobs_core::testing::{TestKeyspace, connect};
use hajobs_core::{CheckIn, LeaseTtl, NodeId, WorkKey, WorkSet, WorkState};
use hajobs_scheduler::{Processed, WorkItems, WorkOptions};
use serde_json::json;

use crate::eventually;

async fn worker(ks: &TestKeyspace, node: &str, lease_ttl: u64) -> WorkItems {
    WorkItems::new(
        connect().await,
        &ks.config(),
        NodeId::new(node).unwrap(),
        WorkOptions {
            lease_ttl: LeaseTtl::from_secs(lease_ttl).unwrap(),
            ..WorkOptions::default()
        },
    )
    .await
    .expect("preparing work items")
}

fn key(i: usize) -> WorkKey {
    WorkKey::new(format!("order-{i:05}")).unwrap()
}

/// How many keys the race uses: `HAJOBS_WORK_KEYS`, 1,000 unless set.
fn race_keys() -> usize {
    std::env::var("HAJOBS_WORK_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test]
async fn three_replicas_racing_over_the_same_keys_process_each_exactly_once() {
    let ks = TestKeyspace::new("work_race").await;
    let set = WorkSet::new("orders").unwrap();
    let n = race_keys();
    // The workers' own records: (key, fencing token, node), appended by
    // the work itself, never by hajobs.
    let records: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let mut replicas = Vec::new();
    for (r, node) in ["r1", "r2", "r3"].into_iter().enumerate() {
        let items = worker(&ks, node, 10).await;
        // Each replica walks every key, in an order of its own.
        let order: Vec<usize> = match r {
            0 => (0..n).collect(),
            1 => (0..n).rev().collect(),
            _ => (0..n).map(|i| (i * 7919) % n).collect(),
        };
        let (records, set) = (records.clone(), set.clone());
        replicas.push(tokio::spawn(async move {
            let mut outcomes = BTreeMap::<&'static str, usize>::new();
            let results: Vec<_> = futures::stream::iter(order)
                .map(|i| {
                    let (items, records, set) = (items.clone(), records.clone(), set.clone());
                    async move {
                        items
                            .process(&set, &key(i), None, |grant| async move {
                                records.lock().unwrap().push((
                                    grant.key.to_string(),
                                    grant.fencing_token.0,
                                    node.to_owned(),
                                ));
                                Ok(json!({ "by": node }))
                            })
                            .await
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            for r in results {
                let name = match r.expect("process failed") {
                    Processed::Done(_) => "done",
                    Processed::AlreadyDone(_) => "already_done",
                    Processed::InProgress { .. } => "in_progress",
                    other => panic!("unexpected outcome {other:?}"),
                };
                *outcomes.entry(name).or_default() += 1;
            }
            (node, outcomes)
        }));
    }
    let mut done_here = 0;
    for r in replicas {
        let (node, outcomes) = r.await.unwrap();
        eprintln!("{node}: {outcomes:?}");
        assert_eq!(outcomes.values().sum::<usize>(), n, "{node} saw every key");
        done_here += outcomes.get("done").copied().unwrap_or(0);
    }
    let records = records.lock().unwrap().clone();
    let mut per_key = BTreeMap::<String, Vec<(i64, String)>>::new();
    for (k, token, node) in &records {
        per_key
            .entry(k.clone())
            .or_default()
            .push((*token, node.clone()));
    }
    assert_eq!(per_key.len(), n, "every key processed");
    let twice: Vec<_> = per_key.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(twice.is_empty(), "keys processed more than once: {twice:?}");
    assert_eq!(done_here, n, "one check-out per key");
    // Every record's token is the item's first, and the stored item agrees
    // with the worker's record.
    let reader = worker(&ks, "reader", 10).await;
    for i in (0..n).step_by((n / 50).max(1)) {
        let item = reader.check(&set, &key(i)).await.unwrap().expect("stored");
        let (token, node) = &per_key[key(i).as_str()][0];
        assert_eq!(item.state, WorkState::Done);
        assert_eq!(item.fencing_token.0, *token);
        assert_eq!(item.result, Some(json!({ "by": node })));
        assert_eq!(item.attempts, 1);
    }
    let listed = reader.store().list(&set, usize::MAX).await.unwrap();
    assert_eq!(listed.len(), n, "`list` names every item once");
    ks.drop().await;
}

#[tokio::test]
async fn a_dead_worker_keeps_the_item_until_its_lease_expires_then_one_takes_it_over() {
    let ks = TestKeyspace::new("work_takeover").await;
    let set = WorkSet::new("files").unwrap();
    let file = WorkKey::new("2026-11-23.csv").unwrap();
    let dead = worker(&ks, "dead", 2).await;
    // A check-in whose worker dies at once: no keeper renews it, nothing
    // releases it (what a killed process leaves).
    let CheckIn::Proceed(claim) = dead
        .store()
        .checkin(
            &set,
            &file,
            &NodeId::new("dead").unwrap(),
            LeaseTtl::from_secs(2).unwrap(),
        )
        .await
        .unwrap()
    else {
        panic!("the first check-in proceeds");
    };
    assert_eq!(claim.lease.fencing_token.0, 1);
    // The survivors' own leases: 4 s, so that a renewal has 2.75 s to be
    // confirmed on a busy machine (a 2 s lease leaves 0.75 s).
    let (b, c) = (worker(&ks, "b", 4).await, worker(&ks, "c", 4).await);
    match b.checkin(&set, &file).await.unwrap() {
        CheckIn::InProgress { node, .. } => assert_eq!(node.as_deref(), Some("dead")),
        other => panic!("in progress while the lease runs, not {other:?}"),
    }
    // Both survivors keep trying; exactly one takes it over once the TTL
    // has passed, with the next fencing token.
    let started = std::time::Instant::now();
    let tickets: Arc<Mutex<Vec<(String, i64, u32)>>> = Arc::default();
    let mut racers = Vec::new();
    for (name, items) in [("b", b.clone()), ("c", c.clone())] {
        let (set, file, tickets) = (set.clone(), file.clone(), tickets.clone());
        racers.push(tokio::spawn(async move {
            loop {
                match items.checkin(&set, &file).await.unwrap() {
                    CheckIn::Proceed(ticket) => {
                        let g = ticket.grant().clone();
                        tickets
                            .lock()
                            .unwrap()
                            .push((name.into(), g.fencing_token.0, g.attempt));
                        // Longer than its TTL: the keeper renews it meanwhile.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        assert!(g.lease_valid(), "renewed while the work runs");
                        items.checkout(ticket, json!({ "by": name })).await.unwrap();
                        return;
                    }
                    CheckIn::InProgress { .. } => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    CheckIn::AlreadyDone(item) => {
                        assert_eq!(item.attempts, 2);
                        return;
                    }
                }
            }
        }));
    }
    for r in racers {
        r.await.unwrap();
    }
    let took = started.elapsed();
    let tickets = tickets.lock().unwrap().clone();
    assert_eq!(tickets.len(), 1, "taken over once: {tickets:?}");
    assert_eq!(
        (tickets[0].1, tickets[0].2),
        (2, 2),
        "next token, attempt 2"
    );
    assert!(
        took >= Duration::from_millis(500),
        "not before the dead worker's lease ran out ({took:?})"
    );
    // The dead worker's late check-out is refused.
    assert!(!dead.store().checkout(&claim, &json!("late")).await.unwrap());
    let item = c.check(&set, &file).await.unwrap().unwrap();
    assert_eq!(item.state, WorkState::Done);
    assert_eq!(item.result, Some(json!({ "by": tickets[0].0 })));
    ks.drop().await;
}

#[tokio::test]
async fn a_failure_frees_the_item_for_a_retry_and_a_timeout_names_itself() {
    let ks = TestKeyspace::new("work_fail").await;
    let set = WorkSet::new("imports").unwrap();
    let items = worker(&ks, "w", 4).await;
    let k = WorkKey::new("a").unwrap();
    let failed = items
        .process(&set, &k, None, |_| async {
            Err("upstream said 503".to_owned())
        })
        .await
        .unwrap();
    assert!(matches!(failed, Processed::Failed(ref e) if e == "upstream said 503"));
    let item = items.check(&set, &k).await.unwrap().unwrap();
    assert_eq!(item.state, WorkState::Failed);
    assert_eq!(item.error.as_deref(), Some("upstream said 503"));
    assert!(item.holder.is_none());
    // A stale ticket cannot check out: the retry holds the item.
    let CheckIn::Proceed(retry) = items.checkin(&set, &k).await.unwrap() else {
        panic!("a failed item is retried");
    };
    assert_eq!(
        (retry.grant().attempt, retry.grant().fencing_token.0),
        (2, 2)
    );
    items.checkout(retry, json!(42)).await.unwrap();
    match items.checkin(&set, &k).await.unwrap() {
        CheckIn::AlreadyDone(item) => assert_eq!(item.result, Some(json!(42))),
        other => panic!("done means done, not {other:?}"),
    }

    // The check-in timeout stops the work and records which timeout fired.
    let slow = WorkKey::new("slow").unwrap();
    let outcome = items
        .process(&set, &slow, Some(Duration::from_millis(300)), |_| {
            std::future::pending()
        })
        .await
        .unwrap();
    assert!(matches!(outcome, Processed::TimedOut(_)), "{outcome:?}");
    let item = items.check(&set, &slow).await.unwrap().unwrap();
    assert_eq!(item.state, WorkState::Failed);
    assert!(
        item.error
            .as_deref()
            .unwrap_or("")
            .contains("checkin_timeout"),
        "{item:?}"
    );

    // A dropped ticket releases the item at once.
    let dropped = WorkKey::new("dropped").unwrap();
    let CheckIn::Proceed(ticket) = items.checkin(&set, &dropped).await.unwrap() else {
        panic!("first check-in");
    };
    drop(ticket);
    eventually(Duration::from_secs(5), "released on drop", || async {
        matches!(items.checkin(&set, &dropped).await, Ok(CheckIn::Proceed(_)))
    })
    .await;

    // Purge forgets what ended, keeps what is in progress.
    let busy = WorkKey::new("busy").unwrap();
    let CheckIn::Proceed(busy_ticket) = items.checkin(&set, &busy).await.unwrap() else {
        panic!("first check-in");
    };
    let before = items.store().list(&set, 100).await.unwrap();
    let names: Vec<_> = before.iter().map(|i| i.key.to_string()).collect();
    assert_eq!(before.len(), 4, "{names:?}");
    let removed = items.store().purge(&set, Duration::ZERO).await.unwrap();
    assert_eq!(removed, 2, "the done and the timed-out items");
    let after: Vec<_> = items
        .store()
        .list(&set, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.key.to_string(), i.state))
        .collect();
    assert_eq!(
        after,
        vec![
            ("busy".to_owned(), WorkState::InProgress),
            ("dropped".to_owned(), WorkState::InProgress)
        ]
    );
    items.fail(busy_ticket, "x").await.unwrap();
    let CheckIn::Proceed(again) = items.checkin(&set, &busy).await.unwrap() else {
        panic!("a failed item is retried");
    };
    assert_eq!(again.grant().attempt, 2);
    items.checkout(again, json!(1)).await.unwrap();
    ks.drop().await;
}
