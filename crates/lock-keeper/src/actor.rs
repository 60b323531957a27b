//! The keeper actor: one per held lease, renewing it on a self-re-arming timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hajobs_core::lease_store::LeaseRenewer;
use hajobs_core::{CancelReason, Cancellation, Lease, Released, Renewed};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::KeeperConfig;
use crate::state::{LeasePhase, LeaseState};

/// How long a release may take before it is left to the TTL.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages of the keeper actor.
pub(crate) enum KeeperMsg {
    /// Time to renew (sent by the actor's own timer).
    Renew,
    /// The job is done: release the lease and stop. The reply, when asked
    /// for, tells whether the lease was still held.
    Release(Option<RpcReplyPort<Result<Released, String>>>),
    /// The lease was given up by other means (a work item checked out):
    /// stop renewing without releasing.
    Stop(RpcReplyPort<()>),
}

/// The actor itself; all its data lives in [`KeeperState`].
pub(crate) struct LeaseKeeper;

pub(crate) struct KeeperArgs {
    pub(crate) store: Arc<dyn LeaseRenewer>,
    pub(crate) lease: Lease,
    pub(crate) config: KeeperConfig,
    pub(crate) cancellation: Cancellation,
    pub(crate) state: watch::Sender<LeaseState>,
}

pub(crate) struct KeeperState {
    args: KeeperArgs,
    /// The pending `Renew` timer, aborted on release.
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<KeeperMsg>>>>,
}

impl KeeperState {
    fn arm(&mut self, myself: &ActorRef<KeeperMsg>, after: Duration) {
        if let Some(old) = self.timer.take() {
            old.abort();
        }
        self.timer = Some(myself.send_after(after, || KeeperMsg::Renew));
    }

    fn phase(&self) -> LeasePhase {
        self.args.state.borrow().phase
    }
}

impl Actor for LeaseKeeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = KeeperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let first = (args.lease.sent_at + args.config.renew_interval())
            .saturating_duration_since(Instant::now());
        let mut state = KeeperState { args, timer: None };
        state.arm(&myself, first);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeeperMsg::Renew => renew(&myself, state).await,
            KeeperMsg::Release(reply) => {
                if let Some(timer) = state.timer.take() {
                    timer.abort();
                }
                let outcome = release(state).await;
                state
                    .args
                    .state
                    .send_modify(|s| s.phase = LeasePhase::Released);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
                myself.stop(None);
            }
            KeeperMsg::Stop(reply) => {
                if let Some(timer) = state.timer.take() {
                    timer.abort();
                }
                state
                    .args
                    .state
                    .send_modify(|s| s.phase = LeasePhase::Released);
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }
}

async fn renew(myself: &ActorRef<KeeperMsg>, state: &mut KeeperState) {
    match state.phase() {
        LeasePhase::Lost | LeasePhase::Released => return,
        LeasePhase::Held | LeasePhase::ExpiredUnconfirmed => {}
    }
    if state.args.cancellation.reason() == Some(CancelReason::LeaseExpiredUnconfirmed) {
        state
            .args
            .state
            .send_modify(|s| s.phase = LeasePhase::ExpiredUnconfirmed);
    }
    let KeeperArgs {
        store,
        lease,
        config,
        cancellation,
        state: tx,
    } = &state.args;
    // One attempt may not hold up the next: bound it by the renewal interval.
    let stopping = tx.borrow().cancel_requested;
    let renewal = async {
        if stopping {
            store.renew_while_stopping(lease).await
        } else {
            store.renew(lease).await
        }
    };
    let attempt = tokio::time::timeout(config.renew_interval(), renewal).await;
    match attempt {
        Ok(Ok(Renewed::Renewed { sent_at })) => {
            let deadline = sent_at + config.usable();
            tx.send_modify(|s| {
                s.last_confirmed_sent = sent_at;
                s.deadline = deadline;
                s.renewals += 1;
                s.consecutive_failures = 0;
            });
            let next =
                (sent_at + config.renew_interval()).saturating_duration_since(Instant::now());
            state.arm(myself, next);
        }
        Ok(Ok(Renewed::CancelRequested)) => {
            tracing::info!(lock_type = %lease.lock_type, job_id = %lease.job_id, "cancel requested through the lock; cancelling the job");
            cancellation.cancel(CancelReason::Requested);
            tx.send_modify(|s| s.cancel_requested = true);
            // Not a renewal: renew again at once, now while stopping.
            state.arm(myself, Duration::ZERO);
        }
        Ok(Ok(Renewed::Lost)) => {
            tracing::warn!(lock_type = %lease.lock_type, job_id = %lease.job_id, "lock lost: renewal rejected; cancelling the job");
            hajobs_core::metrics::lease_lost("renewal_rejected");
            cancellation.cancel(CancelReason::LeaseLost);
            tx.send_modify(|s| s.phase = LeasePhase::Lost);
        }
        Ok(Err(error)) => {
            failed(state, myself, &error.to_string());
        }
        Err(_elapsed) => {
            failed(state, myself, "renewal timed out");
        }
    }
}

fn failed(state: &mut KeeperState, myself: &ActorRef<KeeperMsg>, error: &str) {
    hajobs_core::metrics::renewal_failed();
    let args = &state.args;
    args.state.send_modify(|s| {
        s.failures += 1;
        s.consecutive_failures += 1;
    });
    let left = args
        .state
        .borrow()
        .deadline
        .saturating_duration_since(Instant::now());
    tracing::warn!(
        lock_type = %args.lease.lock_type, job_id = %args.lease.job_id, error,
        deadline_in = ?left, "lease renewal failed; retrying"
    );
    let retry = args.config.retry_interval();
    state.arm(myself, retry);
}

async fn release(state: &KeeperState) -> Result<Released, String> {
    let KeeperArgs { store, lease, .. } = &state.args;
    if state.phase() == LeasePhase::Lost {
        return Ok(Released::NotHolder);
    }
    match tokio::time::timeout(RELEASE_TIMEOUT, store.release(lease)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => {
            tracing::warn!(lock_type = %lease.lock_type, job_id = %lease.job_id, error = %e, "release failed; the lease will expire by its TTL");
            Err(format!("{e:#}"))
        }
        Err(_) => {
            tracing::warn!(lock_type = %lease.lock_type, job_id = %lease.job_id, "release timed out; the lease will expire by its TTL");
            Err(format!("release timed out after {RELEASE_TIMEOUT:?}"))
        }
    }
}

/// Self-fencing, independent of the actor's mailbox: fires the job's
/// cancellation at the deadline unless a confirmed renewal moved it, and at
/// once if the keeper dies without releasing.
pub(crate) async fn watchdog(mut rx: watch::Receiver<LeaseState>, cancellation: Cancellation) {
    loop {
        let (deadline, phase) = {
            let s = rx.borrow_and_update();
            (s.deadline, s.phase)
        };
        match phase {
            LeasePhase::Released | LeasePhase::Lost => return,
            LeasePhase::Held | LeasePhase::ExpiredUnconfirmed => {}
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                if rx.borrow().deadline <= Instant::now() && rx.borrow().phase == LeasePhase::Held {
                    let s = rx.borrow().clone();
                    tracing::warn!(lock_type = %s.lock_type, job_id = %s.job_id, failures = s.consecutive_failures,
                        "lease expired unconfirmed: no renewal confirmed in time; cancelling the job");
                    hajobs_core::metrics::lease_lost("expired_unconfirmed");
                    cancellation.cancel(CancelReason::LeaseExpiredUnconfirmed);
                    return;
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    // The keeper is gone. Unless it released, nobody renews.
                    if rx.borrow().phase == LeasePhase::Held {
                        hajobs_core::metrics::lease_lost("keeper_stopped");
                        cancellation.cancel(CancelReason::KeeperStopped);
                    }
                    return;
                }
            }
        }
    }
}
