//! `cargo bench -p hajobs-scheduler --bench scale`: how hajobs' scheduling
//! scales and how precisely it fires, on the cluster of `HAJOBS_CQL_NODES`.
//! Each measurement prints one `scale-bench …` line (see
//! `docs/performance.md`). `HAJOBS_BENCH_SECS` sets how long the timed
//! measurements run (default 30).
//!
//! - `fire_lag`: two job managers (two replicas) on a per-second cron of a
//!   Rust job; lag = the job's first poll − the scheduled instant (read back
//!   from the firing's trigger id, which encodes it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hajobs_core::NodeId;
use hajobs_core::testing::TestKeyspace;
use hajobs_scheduler::{Done, JobContext, JobManager, JobSpec};

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return f64::NAN;
    }
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// The scheduled instant a firing's trigger id encodes, ns since the epoch.
fn instant_of(ctx: &JobContext) -> Option<i128> {
    let (secs, nanos) = ctx.trigger_id.uuid().get_timestamp()?.to_unix();
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

async fn fire_lag(secs: u64) {
    let ks = TestKeyspace::new("bench_lag").await;
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut managers = Vec::new();
    for n in 0..2 {
        let lags = lags.clone();
        let manager = JobManager::builder(ks.config(), NodeId::new(format!("r{n}")).unwrap())
            .session(ks.session.clone())
            .job(
                JobSpec::new("tick", "tick")
                    .unwrap()
                    .cron("* * * * * *", "UTC")
                    .unwrap(),
                move |ctx: JobContext| {
                    // The first poll: measured before anything else.
                    let lag = instant_of(&ctx).map(|at| (now_ns() - at) as f64 / 1e6);
                    let lags = lags.clone();
                    async move {
                        if let Some(lag) = lag {
                            lags.lock().unwrap().push(lag);
                        }
                        Ok(Done::finished())
                    }
                },
            )
            .build()
            .await
            .unwrap();
        manager.start().await.unwrap();
        managers.push(manager);
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for m in &managers {
        m.shutdown(Duration::from_secs(5)).await;
    }
    let mut lags = lags.lock().unwrap().clone();
    let firings = lags.len();
    println!(
        "scale-bench fire_lag replicas=2 firings={firings} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        percentile(&mut lags, 1.0)
    );
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("HAJOBS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    fire_lag(secs).await;
}
