//! `/stats` and `/jobs/{type}/stats` read up to 10,000 statuses per job
//! type: answered from a copy at most [`STATS_FOR`] old, computed once for
//! every request that arrives while it is being computed, so that a page
//! left open or a flood of requests costs one computation per period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hajobs_core::JobStats;
use tokio::sync::Mutex;

use crate::admin::{Admin, AdminResult};

/// How long figures are served from the copy.
pub(crate) const STATS_FOR: Duration = Duration::from_secs(10);

/// The figures of one question and when they were computed.
type Slot = Arc<Mutex<Option<(Instant, Vec<JobStats>)>>>;

/// The figures last computed, per question (all job types, or one).
#[derive(Default)]
pub(crate) struct StatsCache {
    /// `None`: every job type; `Some(t)`: one (a configured one: bounded).
    entries: Mutex<HashMap<Option<String>, Slot>>,
}

impl StatsCache {
    /// The figures of `job` (all when `None`), from the copy when fresh.
    pub(crate) async fn get(&self, admin: &Admin, job: Option<&str>) -> AdminResult<Vec<JobStats>> {
        let slot = self
            .entries
            .lock()
            .await
            .entry(job.map(str::to_owned))
            .or_default()
            .clone();
        // Held while computing: the others wait for this one's answer.
        let mut slot = slot.lock().await;
        if let Some((at, stats)) = slot.as_ref() {
            if at.elapsed() < STATS_FOR {
                return Ok(stats.clone());
            }
        }
        let stats = admin.stats(job).await?;
        *slot = Some((Instant::now(), stats.clone()));
        Ok(stats)
    }
}
