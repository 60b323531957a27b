//! The daemon's entry in the node registry (`hajobs nodes`): written at
//! start, refreshed every [`REFRESH`] with a TTL of [`TTL`] — so a replica
//! that vanishes drops out within `TTL` — and removed at a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use hajobs_core::node_store::now_millis;
use hajobs_core::{NodeRecord, NodeStore};
use hajobs_scheduler::JobManager;
use tokio::task::JoinHandle;

use crate::config::DaemonConfig;

/// How often the entry is written.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);
/// How long an entry outlives its last refresh.
pub(crate) const TTL: Duration = Duration::from_secs(15);

/// The running refresher.
pub(crate) struct Registry {
    task: JoinHandle<Arc<NodeStore>>,
    stop: tokio::sync::watch::Sender<bool>,
    node: hajobs_core::NodeId,
}

impl Registry {
    /// Registers this replica (with the address of its HTTP API, if it
    /// serves one) and keeps its entry fresh.
    pub(crate) fn spawn(
        nodes: Arc<NodeStore>,
        manager: JobManager,
        daemon: &DaemonConfig,
        http: Option<String>,
    ) -> Self {
        let mut record = NodeRecord {
            node_id: daemon.node.as_str().to_owned(),
            host: crate::wake::host_name(),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            http,
            started_at_ms: now_millis(),
            seen_at_ms: 0,
            job_types: daemon
                .jobs
                .iter()
                .map(|j| j.spec.job_type.as_str().to_owned())
                .collect(),
            running: Vec::new(),
        };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                record.running = manager
                    .running()
                    .into_iter()
                    .map(|(t, id)| format!("{t}/{id}"))
                    .collect();
                match nodes.refresh(&record, TTL).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "node registry entry not refreshed; retrying");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(REFRESH) => {}
                    _ = stopped.changed() => return nodes,
                }
            }
        });
        Self {
            task,
            stop,
            node: daemon.node.clone(),
        }
    }

    /// Stops refreshing and removes the entry.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(nodes) = self.task.await {
            if let Err(e) = nodes.remove(&self.node).await {
                tracing::warn!(error = %e, "node registry entry not removed; it expires by its TTL");
            }
        }
    }
}
