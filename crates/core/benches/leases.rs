//! `cargo bench -p hajobs-core --bench leases`: acquire, renew and release
//! through [`LeaseStore`] against raw LWTs of the same shape sent through the
//! driver, interleaved in one run on the cluster of `HAJOBS_CQL_NODES`.
//! Rounds: `HAJOBS_BENCH_ROUNDS` (default 1000).

use std::time::{Duration, Instant};

use hajobs_core::testing::TestKeyspace;
use hajobs_core::{Acquired, JobId, LeaseTtl, LockType, NodeId, Released, Renewed};
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlTimestamp, CqlTimeuuid};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn now() -> CqlTimestamp {
    CqlTimestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("HAJOBS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let ks = TestKeyspace::new("bench").await;
    let store = ks.lease_store().await;
    let session = ks.session.clone();
    let k = &ks.name;
    let config = ks.config();

    // The raw statements: the same CQL the store sends, prepared the same way.
    let mut raw_acquire = Batch::new(BatchType::Logged);
    raw_acquire.append_statement(BatchStatement::Query(Statement::new(format!(
        "UPDATE {k}.lock USING TTL ? SET job_lock = ?, owner = ?, acquired_at = ? WHERE lock_type = ? IF job_lock = null AND fencing_token = ?"
    ))));
    raw_acquire.append_statement(BatchStatement::Query(Statement::new(format!(
        "UPDATE {k}.lock SET fencing_token = ? WHERE lock_type = ?"
    ))));
    let mut raw_acquire = session.prepare_batch(&raw_acquire).await.unwrap();
    raw_acquire.set_consistency(config.consistency);
    raw_acquire.set_serial_consistency(Some(config.serial_consistency));
    let mut raw_renew = session
        .prepare(format!("UPDATE {k}.lock USING TTL ? SET job_lock = ?, owner = ?, acquired_at = ? WHERE lock_type = ? IF job_lock = ?"))
        .await
        .unwrap();
    let mut raw_release = session
        .prepare(format!(
            "DELETE job_lock, owner, acquired_at FROM {k}.lock WHERE lock_type = ? IF job_lock = ?"
        ))
        .await
        .unwrap();
    for s in [&mut raw_renew, &mut raw_release] {
        s.set_consistency(config.consistency);
        s.set_serial_consistency(Some(config.serial_consistency));
    }

    let ttl = LeaseTtl::from_secs(30).unwrap();
    let owner = NodeId::new("bench").unwrap();
    let lock = LockType::new("bench-layer").unwrap();
    let raw_lock = "bench-raw";
    let mut raw_token: Option<i64> = None;
    let (mut la, mut lr, mut ll, mut ra, mut rr, mut rl) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let timed = |v: &mut Vec<Duration>, t: Instant| v.push(t.elapsed());

    for round in 0..rounds + 50 {
        let warm = round < 50;
        // Raw LWTs.
        let job = CqlTimeuuid::from(JobId::new().uuid());
        let next = raw_token.unwrap_or(0) + 1;
        let t = Instant::now();
        let r = session
            .batch(
                &raw_acquire,
                (
                    (ttl.cql_secs(), job, "bench", now(), raw_lock, raw_token),
                    (next, raw_lock),
                ),
            )
            .await
            .unwrap();
        if !warm {
            timed(&mut ra, t);
        }
        assert!(
            r.into_rows_result()
                .unwrap()
                .first_row::<(bool,)>()
                .unwrap()
                .0,
            "raw acquire not applied"
        );
        raw_token = Some(next);
        let t = Instant::now();
        session
            .execute_unpaged(
                &raw_renew,
                (ttl.cql_secs(), job, "bench", now(), raw_lock, job),
            )
            .await
            .unwrap();
        if !warm {
            timed(&mut rr, t);
        }
        let t = Instant::now();
        session
            .execute_unpaged(&raw_release, (raw_lock, job))
            .await
            .unwrap();
        if !warm {
            timed(&mut rl, t);
        }

        // The same through the lease store.
        let t = Instant::now();
        let lease = match store
            .acquire(&lock, JobId::new(), &owner, ttl)
            .await
            .unwrap()
        {
            Acquired::Acquired(l) => l,
            Acquired::Held(h) => panic!("held by {h:?}"),
        };
        if !warm {
            timed(&mut la, t);
        }
        let t = Instant::now();
        assert!(matches!(
            store.renew(&lease).await.unwrap(),
            Renewed::Renewed { .. }
        ));
        if !warm {
            timed(&mut lr, t);
        }
        let t = Instant::now();
        assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
        if !warm {
            timed(&mut ll, t);
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut ratios = Vec::new();
    for (name, layer, raw) in [
        ("acquire", &mut la, &mut ra),
        ("renew", &mut lr, &mut rr),
        ("release", &mut ll, &mut rl),
    ] {
        let (l50, r50) = (percentile(layer, 0.5), percentile(raw, 0.5));
        let (l99, r99) = (percentile(layer, 0.99), percentile(raw, 0.99));
        println!(
            "{name:8} lease p50 {:.3} ms p99 {:.3} ms | raw LWT p50 {:.3} ms p99 {:.3} ms ({rounds} rounds)",
            ms(l50),
            ms(l99),
            ms(r50),
            ms(r99)
        );
        ratios.push((name, ms(l50) / ms(r50), ms(l99) / ms(r99)));
    }
    let mut line = String::from("lease-bench");
    for (name, p50, _) in &ratios {
        line.push_str(&format!(" {name}_p50_ratio={p50:.3}"));
    }
    for (name, _, p99) in &ratios {
        line.push_str(&format!(" {name}_p99_ratio={p99:.3}"));
    }
    println!("{line}");
    ks.drop().await;
}
