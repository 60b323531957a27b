//! Who claims a cron firing first: one LWT per firing, not one per replica.
//!
//! Every replica's timer fires at the scheduled instant. Rather than all of
//! them sending the claim's LWT (N contending Paxos rounds on one
//! partition), the replicas that configure the job type — known from the
//! node registry, refreshed every [`PEERS_REFRESH`] — are ranked by a hash
//! of (node id, job type, instant), the same on every replica and different
//! for every firing. Rank 0 claims at once. Rank k waits k × [`CLAIM_STEP`],
//! reads the claim (one read, no Paxos) and claims only if nobody has: so a
//! dead or slow preferred replica costs the firing k × 250 ms, never the
//! firing itself. The LWT still decides: replicas that disagree on the ranks
//! (a registry not yet refreshed) send two LWTs, and one wins.
//!
//! Without registry rows (a library user without the daemon's registry),
//! every replica is rank 0 and claims at once, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hajobs_core::{JobType, NodeId, NodeRecord};

/// How long each rank waits after the one before it.
pub(crate) const CLAIM_STEP: Duration = Duration::from_millis(250);

/// How often the replicas configuring each job type are read.
pub(crate) const PEERS_REFRESH: Duration = Duration::from_secs(5);

/// The other live replicas configuring each job type.
#[derive(Default)]
pub(crate) struct Peers {
    by_job_type: Mutex<HashMap<JobType, Vec<String>>>,
    /// This replica has a row of its own in the registry: the others rank
    /// it as it ranks itself.
    listed: std::sync::atomic::AtomicBool,
    /// Every live replica of the registry, with when its current run
    /// started (epoch ms).
    live: Mutex<HashMap<String, i64>>,
}

impl Peers {
    /// Replaces what is known with the registry's `records` (the live
    /// replicas), leaving out `me`.
    pub(crate) fn set(&self, records: &[NodeRecord], me: &NodeId) {
        self.listed.store(
            records.iter().any(|r| r.node_id == me.as_str()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut by_job_type: HashMap<JobType, Vec<String>> = HashMap::new();
        for record in records.iter().filter(|r| r.node_id != me.as_str()) {
            for job_type in &record.job_types {
                if let Ok(job_type) = JobType::new(job_type.as_str()) {
                    by_job_type
                        .entry(job_type)
                        .or_default()
                        .push(record.node_id.clone());
                }
            }
        }
        *self.by_job_type.lock().expect("peers poisoned") = by_job_type;
        *self.live.lock().expect("peers poisoned") = records
            .iter()
            .map(|r| (r.node_id.clone(), r.started_at_ms))
            .collect();
    }

    /// Whether the run of `node` that was live at the last read of the
    /// registry had started by `since_ms` (epoch ms): a node restarted
    /// since is another run, and what its previous run began is not its.
    pub(crate) fn live_since(&self, node: &str, since_ms: i64) -> bool {
        self.live
            .lock()
            .expect("peers poisoned")
            .get(node)
            .is_some_and(|started| *started <= since_ms)
    }

    /// Whether the ranks are shared: this replica is in the registry, so a
    /// rank 0 here is rank 0 nowhere else (without registry rows every
    /// replica ranks itself first).
    pub(crate) fn coordinated(&self) -> bool {
        self.listed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This replica's rank for the firing of `job_type` at `instant_ms`
    /// (epoch milliseconds): how many of the other replicas configuring it
    /// come before it.
    pub(crate) fn rank(&self, me: &NodeId, job_type: &JobType, instant_ms: i64) -> u32 {
        let by_job_type = self.by_job_type.lock().expect("peers poisoned");
        let Some(others) = by_job_type.get(job_type) else {
            return 0;
        };
        let mine = score(me.as_str(), job_type.as_str(), instant_ms);
        let before = others
            .iter()
            .filter(|o| {
                let theirs = score(o, job_type.as_str(), instant_ms);
                (theirs, o.as_str()) < (mine, me.as_str())
            })
            .count();
        u32::try_from(before).unwrap_or(u32::MAX)
    }
}

/// FNV-1a over (node, job type, instant): a replica's place for one firing.
fn score(node: &str, job_type: &str, instant_ms: i64) -> u64 {
    node.bytes()
        .chain([0])
        .chain(job_type.bytes())
        .chain([0])
        .chain(instant_ms.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, job_types: &[&str]) -> NodeRecord {
        NodeRecord {
            node_id: node.into(),
            host: String::new(),
            pid: 0,
            version: String::new(),
            http: None,
            started_at_ms: 0,
            seen_at_ms: 0,
            job_types: job_types.iter().map(|s| (*s).to_owned()).collect(),
            running: Vec::new(),
        }
    }

    #[test]
    fn the_replicas_agree_on_one_order_per_firing_and_it_changes_between_firings() {
        let names: Vec<String> = (0..10).map(|i| format!("replica-{i}")).collect();
        let records: Vec<NodeRecord> = names.iter().map(|n| record(n, &["report"])).collect();
        let job_type = JobType::new("report").unwrap();
        let mut first = std::collections::HashSet::new();
        for instant in 0..200i64 {
            let mut ranks: Vec<u32> = names
                .iter()
                .map(|n| {
                    let me = NodeId::new(n.as_str()).unwrap();
                    let peers = Peers::default();
                    peers.set(&records, &me);
                    peers.rank(&me, &job_type, instant * 1000)
                })
                .collect();
            let preferred = ranks.iter().position(|r| *r == 0).unwrap();
            first.insert(preferred);
            ranks.sort_unstable();
            assert_eq!(ranks, (0..10).collect::<Vec<u32>>(), "one rank each");
        }
        assert_eq!(
            first.len(),
            10,
            "every replica is preferred for some firings"
        );
    }

    #[test]
    fn without_peers_configuring_the_job_type_a_replica_claims_at_once() {
        let me = NodeId::new("a").unwrap();
        let peers = Peers::default();
        assert_eq!(peers.rank(&me, &JobType::new("x").unwrap(), 0), 0);
        assert!(!peers.coordinated());
        peers.set(&[record("b", &["other"]), record("a", &["x"])], &me);
        assert_eq!(peers.rank(&me, &JobType::new("x").unwrap(), 0), 0);
        assert!(peers.coordinated(), "listed in the registry");
    }
}
