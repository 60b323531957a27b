//! [`Supervisor`]: passes under a singleton lease, on every replica.

use std::time::Duration;

use hajobs_core::{Acquired, Cancellation, JobId, LeaseTtl};
use hajobs_lock_keeper::{KeeperConfig, KeptLease, keep};
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
        let budget = self.budget();
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
    ///
    /// The replica that gets the supervisor's lease keeps it between its
    /// passes, renewed by a lock keeper every third of its TTL (an idle
    /// replica's one LWT every 10 s by default instead of two a pass),
    /// and a pass runs only while it holds: the keeper cancels a pass whose
    /// lease was lost, and a lost or cancelled lease is given up and taken
    /// again when free. Its TTL is never longer than the shortest lease TTL
    /// of the registered jobs, so when its replica dies it is free by the
    /// time the dead attempts' leases are, and a survivor's pass finds them
    /// within the same bound as before: their TTL + one interval. A
    /// graceful stop releases it.
    pub fn spawn(self) -> SupervisorHandle {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut kept: Option<KeptLease> = None;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let lease = match self.keep(kept.take()).await {
                    Ok(Some(lease)) => kept.insert(lease),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "supervisor lease not taken; the next pass retries");
                        continue;
                    }
                };
                let cancel = lease.cancellation().clone();
                let pass =
                    tokio::time::timeout(self.budget(), pass::run(&self.manager, &self.config));
                let outcome = tokio::select! {
                    outcome = pass => match outcome {
                        Ok(report) => report,
                        Err(_) => Err(SupervisorError::Overran(self.budget())),
                    },
                    () = cancel.cancelled() => {
                        tracing::warn!(reason = ?cancel.reason(), "supervisor pass stopped: its lease is lost");
                        continue;
                    }
                };
                match outcome {
                    Ok(report) if report != PassReport::default() => {
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
            if let Some(lease) = kept {
                if let Err(e) = lease.release().await {
                    tracing::debug!(error = %e, "supervisor lease not released; it expires by its TTL");
                }
            }
        });
        SupervisorHandle {
            stop: stop_tx,
            task,
        }
    }

    /// The supervisor's lease for the next pass: `kept` while its keeper
    /// holds it, else a new one if the lock is free (`None`: another
    /// replica's supervisor holds it).
    async fn keep(&self, kept: Option<KeptLease>) -> Result<Option<KeptLease>, SupervisorError> {
        if let Some(lease) = kept {
            if !lease.cancellation().is_cancelled() {
                return Ok(Some(lease));
            }
            // Lost, at its deadline, or a cancel asked for (`hajobs
            // unlock`): given up; another replica may take it.
            let _ = lease.release().await;
        }
        let ttl = self.kept_ttl();
        let leases = self.manager.leases();
        match leases
            .acquire(
                &self.config.lock_type,
                JobId::new(),
                self.manager.node(),
                ttl,
            )
            .await?
        {
            Acquired::Acquired(lease) => {
                let kept = keep(
                    leases.clone(),
                    lease,
                    KeeperConfig::for_ttl(ttl),
                    Cancellation::new(),
                )
                .await
                .map_err(|e| SupervisorError::Keeper(e.to_string()))?;
                Ok(Some(kept))
            }
            Acquired::Held(_) => Ok(None),
        }
    }

    /// The TTL of the kept lease: the configured one, or the shortest lease
    /// TTL of the registered jobs if shorter.
    fn kept_ttl(&self) -> LeaseTtl {
        self.manager
            .specs()
            .map(|s| s.keeper.ttl())
            .chain(std::iter::once(self.config.lease_ttl))
            .min_by_key(LeaseTtl::duration)
            .unwrap_or(self.config.lease_ttl)
    }

    /// How long one pass may take: the configured lease's guaranteed time
    /// less a second.
    fn budget(&self) -> Duration {
        self.config
            .lease_ttl
            .guaranteed()
            .saturating_sub(Duration::from_secs(1))
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
