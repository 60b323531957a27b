//! What this replica asks the supervisors to watch: its row of
//! `watch_list` ([`hajobs_core::WatchStore`]).
//!
//! An attempt is listed before its RUNNING status is written and stays
//! listed until it ends; an ending the retrigger rule may act on (anything
//! but a success) stays [`ENDED_HOLD`] longer, so that a supervisor pass
//! sees it. A claimed cron firing that waits for its lock is listed until
//! it starts or is skipped. The row is written whole on every change, with
//! a strictly increasing write time; concurrent changes share a write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hajobs_core::{JobId, JobType, NodeId, TriggerId, WatchStore, WriteClock};

/// How long an attempt that did not succeed stays listed after its end.
pub const ENDED_HOLD: Duration = Duration::from_secs(300);

/// How soon the end of a successful attempt is written.
const LAZY_WRITE: Duration = Duration::from_millis(500);

/// How long after a failed write of the row it is written again.
const REWRITE_AFTER: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// Listed attempts: job type, and when the attempt ended (if it has).
    attempts: BTreeMap<JobId, (JobType, Option<Instant>)>,
    firings: BTreeMap<TriggerId, JobType>,
    /// Bumped by every change.
    version: u64,
    /// The newest version known written.
    written: u64,
}

pub(crate) struct Watch {
    node: NodeId,
    store: Arc<WatchStore>,
    state: Mutex<State>,
    writer: tokio::sync::Mutex<()>,
    clock: WriteClock,
    /// A background task is writing the row again.
    rewriting: AtomicBool,
    /// A lazy write is due.
    lazy: AtomicBool,
    /// The manager stopped.
    closed: AtomicBool,
}

impl Watch {
    pub(crate) fn new(node: NodeId, store: Arc<WatchStore>) -> Arc<Self> {
        Arc::new(Self {
            node,
            store,
            state: Mutex::new(State::default()),
            writer: tokio::sync::Mutex::new(()),
            clock: WriteClock::default(),
            rewriting: AtomicBool::new(false),
            lazy: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn store(&self) -> &Arc<WatchStore> {
        &self.store
    }

    fn change(&self, f: impl FnOnce(&mut State)) -> u64 {
        let mut s = self.state.lock().expect("watch state poisoned");
        f(&mut s);
        s.version += 1;
        s.version
    }

    /// Carries over what this node's previous run listed (a replica
    /// restarted under the same node id, perhaps within its attempts'
    /// lease TTL): its attempts stay listed for [`ENDED_HOLD`], so that a
    /// supervisor still finds an attempt that died with it — the first
    /// write of this run would otherwise replace the row and hide them
    /// until a sweep.
    pub(crate) async fn adopt_previous(self: &Arc<Self>) {
        let lists = match self.store.list().await {
            Ok(lists) => lists,
            Err(e) => {
                tracing::warn!(error = %e, "this node's previous watch list not read; a supervisor's sweep covers it");
                return;
            }
        };
        let Some(previous) = lists.into_iter().find(|l| l.node_id == self.node.as_str()) else {
            return;
        };
        if previous.attempts.is_empty() {
            return;
        }
        tracing::info!(
            attempts = previous.attempts.len(),
            "attempts listed by this node's previous run kept on its watch list"
        );
        let v = self.change(|s| {
            for (job_id, job_type) in previous.attempts {
                s.attempts
                    .entry(job_id)
                    .or_insert((job_type, Some(Instant::now())));
            }
        });
        self.write(v).await;
        self.forget_later();
    }

    /// An attempt is about to record RUNNING.
    pub(crate) async fn attempt_starts(self: &Arc<Self>, job_type: &JobType, job_id: JobId) {
        let v = self.change(|s| {
            s.attempts.insert(job_id, (job_type.clone(), None));
        });
        self.write(v).await;
    }

    /// An attempt did not record RUNNING after all: unlisted within
    /// [`LAZY_WRITE`] (listed meanwhile, it has no RUNNING status for a
    /// supervisor to act on).
    pub(crate) fn attempt_not_started(self: &Arc<Self>, job_id: JobId) {
        self.change(|s| {
            s.attempts.remove(&job_id);
        });
        self.write_soon();
    }

    /// An attempt ended (its final status written, its lease released). A
    /// success leaves the list — written within [`LAZY_WRITE`], together
    /// with the other changes of that time (a listed attempt that has ended
    /// costs a supervisor one read and decides nothing); anything else stays
    /// for [`ENDED_HOLD`] and is written at once.
    pub(crate) async fn attempt_ended(self: &Arc<Self>, job_id: JobId, success: bool) {
        let v = self.change(|s| {
            if success {
                s.attempts.remove(&job_id);
            } else if let Some(entry) = s.attempts.get_mut(&job_id) {
                entry.1 = Some(Instant::now());
            }
        });
        if success {
            self.write_soon();
        } else {
            self.write(v).await;
            self.forget_later();
        }
    }

    /// Writes the newest version within [`LAZY_WRITE`] (one write for all
    /// the changes made meanwhile).
    fn write_soon(self: &Arc<Self>) {
        if self.lazy.swap(true, Ordering::SeqCst) {
            return; // a write is already due
        }
        let watch = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LAZY_WRITE).await;
            watch.lazy.store(false, Ordering::SeqCst);
            let newest = watch.state.lock().expect("watch state poisoned").version;
            watch.write(newest).await;
        });
    }

    /// An ending this replica recorded for an attempt that never ran (a
    /// lost cron firing or an unfollowed trigger request recorded FAILED):
    /// listed for [`ENDED_HOLD`].
    pub(crate) async fn ended_elsewhere(self: &Arc<Self>, job_type: &JobType, job_id: JobId) {
        let v = self.change(|s| {
            s.attempts
                .insert(job_id, (job_type.clone(), Some(Instant::now())));
        });
        self.write(v).await;
        self.forget_later();
    }

    /// A claimed cron firing waits for its lock.
    pub(crate) async fn firing_waits(self: &Arc<Self>, job_type: &JobType, trigger_id: TriggerId) {
        let v = self.change(|s| {
            s.firings.insert(trigger_id, job_type.clone());
        });
        self.write(v).await;
    }

    /// A claimed cron firing started or was skipped.
    pub(crate) async fn firing_decided(self: &Arc<Self>, trigger_id: TriggerId) {
        let v = self.change(|s| {
            s.firings.remove(&trigger_id);
        });
        self.write(v).await;
    }

    /// Drops the endings older than [`ENDED_HOLD`] once it has passed.
    fn forget_later(self: &Arc<Self>) {
        let watch = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ENDED_HOLD).await;
            let v = watch.change(|s| {
                s.attempts
                    .retain(|_, (_, ended)| ended.is_none_or(|t| t.elapsed() < ENDED_HOLD));
            });
            watch.write(v).await;
        });
    }

    /// Writes the row as of version `v` or later, unless a write already
    /// did. After a failed write, one background task writes the newest
    /// version every [`REWRITE_AFTER`] until a write succeeds or the
    /// manager stops.
    async fn write(self: &Arc<Self>, v: u64) {
        if self.try_write(v).await || self.rewriting.swap(true, Ordering::SeqCst) {
            return;
        }
        let watch = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REWRITE_AFTER).await;
                if watch.closed.load(Ordering::SeqCst) {
                    break;
                }
                let newest = watch.state.lock().expect("watch state poisoned").version;
                if watch.try_write(newest).await {
                    break;
                }
            }
            watch.rewriting.store(false, Ordering::SeqCst);
        });
    }

    /// The manager stopped: no more rewrites in the background.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// One write as of version `v` or later; whether the row now holds it.
    async fn try_write(&self, v: u64) -> bool {
        let _writing = self.writer.lock().await;
        let (attempts, firings, version) = {
            let s = self.state.lock().expect("watch state poisoned");
            if s.written >= v {
                return true;
            }
            let attempts: BTreeMap<JobId, JobType> = s
                .attempts
                .iter()
                .filter(|(_, (_, ended))| ended.is_none_or(|t| t.elapsed() < ENDED_HOLD))
                .map(|(id, (t, _))| (*id, t.clone()))
                .collect();
            (attempts, s.firings.clone(), s.version)
        };
        match self
            .store
            .write(&self.node, &attempts, &firings, self.clock.next())
            .await
        {
            Ok(()) => {
                let mut s = self.state.lock().expect("watch state poisoned");
                s.written = s.written.max(version);
                true
            }
            Err(e) => {
                if !self.rewriting.load(Ordering::SeqCst) {
                    tracing::warn!(error = %e, "watch list not written; written again every {REWRITE_AFTER:?} until it is (a supervisor's sweep covers it meanwhile)");
                }
                false
            }
        }
    }
}
