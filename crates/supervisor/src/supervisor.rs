//! [`Supervisor`]: passes under a singleton lease, on every replica.

use std::time::Duration;

use hajobs_core::{Acquired, JobId};
use hajobs_scheduler::JobManager;
use tokio::task::JoinHandle;

use crate::config::SupervisorConfig;
use crate::error::SupervisorError;
use crate::pass::{self, PassReport};

/// The dead-job detector of one replica. Every replica runs one; its lease
/// (lock type `hajobs-supervisor`) lets one pass run at a time cluster-wide.
#[derive(Debug, Clone)]
pub struct Supervisor {
    manager: JobManager,
    config: SupervisorConfig,
}

impl Supervisor {
    /// A supervisor over the jobs registered with `manager`.
    pub fn new(manager: JobManager, config: SupervisorConfig) -> Self {
        Self { manager, config }
    }

    /// One pass, if this replica gets the supervisor's lease; `None` when
    /// another replica's pass holds it.
    pub async fn pass(&self) -> Result<Option<PassReport>, SupervisorError> {
        let leases = self.manager.leases();
        let lease = match leases
            .acquire(
                &self.config.lock_type,
                JobId::new(),
                self.manager.node(),
                self.config.lease_ttl,
            )
            .await?
        {
            Acquired::Acquired(lease) => lease,
            Acquired::Held(_) => return Ok(None),
        };
        // The pass must end while the lease surely holds: TTL − 1 s − margin.
        let budget = self
            .config
            .lease_ttl
            .guaranteed()
            .saturating_sub(Duration::from_secs(1));
        let outcome = tokio::time::timeout(budget, pass::run(&self.manager, &self.config)).await;
        if let Err(e) = leases.release(&lease).await {
            tracing::warn!(error = %e, "supervisor lease not released; it expires by its TTL");
        }
        match outcome {
            Ok(report) => report.map(Some),
            Err(_) => Err(SupervisorError::Overran(budget)),
        }
    }

    /// Runs a pass every interval until the returned handle is stopped.
    pub fn spawn(self) -> SupervisorHandle {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                match self.pass().await {
                    Ok(Some(report)) if report != PassReport::default() => {
                        tracing::info!(
                            dead = report.dead.len(),
                            retriggered = report.retriggered.len(),
                            exhausted = report.exhausted.len(),
                            corrupt = report.corrupt,
                            repaired = report.repaired,
                            "supervisor pass"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "supervisor pass failed; the next pass retries")
                    }
                }
            }
        });
        SupervisorHandle {
            stop: stop_tx,
            task,
        }
    }
}

/// A running supervisor; [`SupervisorHandle::stop`] ends it.
#[derive(Debug)]
pub struct SupervisorHandle {
    /// Set to `true` to end the loop.
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SupervisorHandle {
    /// Stops after the pass in progress, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
