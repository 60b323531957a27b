//! [`KeptLease`]: a lease with its keeper running, and [`keep`] to start one.

use std::sync::Arc;
use std::time::Duration;

use hajobs_core::lease_store::LeaseRenewer;
use hajobs_core::{CancelReason, Cancellation, InvalidInput, Lease, LeaseStore, Released};
use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::actor::{KeeperArgs, KeeperMsg, LeaseKeeper, watchdog};
use crate::config::KeeperConfig;
use crate::state::{LeasePhase, LeaseState};

/// How long [`KeptLease::release`] waits for the keeper.
const RELEASE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong starting or stopping a keeper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The configuration does not fit the lease.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The actor could not be spawned.
    #[error("could not start the lock keeper: {0}")]
    Spawn(String),
    /// The release did not complete; the lease will expire by its TTL.
    #[error("release failed, the lease will expire by its TTL: {0}")]
    Release(String),
}

/// A lease whose keeper is running. Hand [`KeptLease::cancellation`] to the
/// job; call [`KeptLease::release`] when it is done. Dropping it without
/// releasing asks the keeper to release in the background.
#[derive(Debug)]
pub struct KeptLease {
    actor: ActorRef<KeeperMsg>,
    state: watch::Receiver<LeaseState>,
    cancellation: Cancellation,
    released: bool,
}

/// Starts keeping `lease`: renewals every `config.renew_interval()`, the
/// job's `cancellation` fired when the lease is lost or at its deadline.
pub async fn keep(
    store: Arc<LeaseStore>,
    lease: Lease,
    config: KeeperConfig,
    cancellation: Cancellation,
) -> Result<KeptLease, KeeperError> {
    keep_with(store, lease, config, cancellation).await
}

/// [`keep`] for a lease kept by any [`LeaseRenewer`] (a work item's
/// check-in, say): the same renewals, deadline and cancellation.
pub async fn keep_with(
    store: Arc<dyn LeaseRenewer>,
    lease: Lease,
    config: KeeperConfig,
    cancellation: Cancellation,
) -> Result<KeptLease, KeeperError> {
    if config.ttl() != lease.ttl {
        return Err(InvalidInput::Duration {
            what: "keeper TTL",
            value: config.ttl().duration(),
            rule: "it must equal the lease's TTL",
        }
        .into());
    }
    let initial = LeaseState {
        lock_type: lease.lock_type.clone(),
        job_id: lease.job_id,
        fencing_token: lease.fencing_token,
        last_confirmed_sent: lease.sent_at,
        deadline: lease.sent_at + config.usable(),
        renewals: 0,
        failures: 0,
        consecutive_failures: 0,
        cancel_requested: false,
        phase: LeasePhase::Held,
    };
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(watchdog(rx.clone(), cancellation.clone()));
    let args = KeeperArgs {
        store,
        lease,
        config,
        cancellation: cancellation.clone(),
        state: tx,
    };
    let (actor, _join) = Actor::spawn(None, LeaseKeeper, args).await.map_err(|e| {
        cancellation.cancel(CancelReason::KeeperStopped);
        KeeperError::Spawn(e.to_string())
    })?;
    Ok(KeptLease {
        actor,
        state: rx,
        cancellation,
        released: false,
    })
}

impl KeptLease {
    /// The job's cancellation handle (fired on lease loss or deadline).
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancellation
    }

    /// A snapshot of the lease's state.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the lease's state.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops the keeper and releases the lease. `NotHolder` when it was
    /// already lost; an error when the release failed (the TTL frees it).
    pub async fn release(mut self) -> Result<Released, KeeperError> {
        self.released = true;
        let reply = self
            .actor
            .call(
                |port| KeeperMsg::Release(Some(port)),
                Some(RELEASE_CALL_TIMEOUT),
            )
            .await
            .map_err(|e| KeeperError::Release(e.to_string()))?;
        match reply {
            ractor::rpc::CallResult::Success(outcome) => outcome.map_err(KeeperError::Release),
            ractor::rpc::CallResult::Timeout => Err(KeeperError::Release(
                "the keeper did not answer in time".into(),
            )),
            ractor::rpc::CallResult::SenderError => {
                Err(KeeperError::Release("the keeper stopped".into()))
            }
        }
    }
}

impl KeptLease {
    /// Stops the keeper without releasing: for a lease that its holder ends
    /// by a transaction of its own (a work item's check-out), which must not
    /// race a renewal. The lease counts as released from here on.
    pub async fn stop(mut self) -> Result<(), KeeperError> {
        self.released = true;
        match self
            .actor
            .call(KeeperMsg::Stop, Some(RELEASE_CALL_TIMEOUT))
            .await
            .map_err(|e| KeeperError::Release(e.to_string()))?
        {
            ractor::rpc::CallResult::Success(()) => Ok(()),
            ractor::rpc::CallResult::Timeout => Err(KeeperError::Release(
                "the keeper did not answer in time".into(),
            )),
            ractor::rpc::CallResult::SenderError => {
                Err(KeeperError::Release("the keeper stopped".into()))
            }
        }
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.actor.cast(KeeperMsg::Release(None));
        }
    }
}
