//! [`Cancellation`]: how a running job learns that it must stop, and why.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why a job was cancelled. The first reason given wins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// A renewal was rejected: the lease is gone (expired, taken, forced).
    LeaseLost,
    /// No renewal was confirmed in time: the lease may expire any moment, so
    /// the job stops before anyone else can take over (self-fencing).
    LeaseExpiredUnconfirmed,
    /// The lock keeper stopped unexpectedly; nobody renews the lease.
    KeeperStopped,
    /// An operator or a program asked (e.g. `hajobs cancel`).
    Requested,
    /// The replica is shutting down.
    Shutdown,
    /// The job ran longer than its timeout.
    TimedOut(Duration),
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeaseLost => f.write_str("lock lost"),
            Self::LeaseExpiredUnconfirmed => f.write_str("lease expired unconfirmed"),
            Self::KeeperStopped => f.write_str("lock keeper stopped"),
            Self::Requested => f.write_str("cancel requested"),
            Self::Shutdown => f.write_str("replica shutting down"),
            Self::TimedOut(d) => write!(f, "timed out after {d:?}"),
        }
    }
}

/// A cancellation handle shared by a job and whoever may stop it: cloning
/// shares it. Jobs check [`Cancellation::is_cancelled`] or await
/// [`Cancellation::cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl Cancellation {
    /// A handle not cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels with `reason`, unless already cancelled (the first reason stays).
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it was cancelled, once it is.
    pub fn reason(&self) -> Option<CancelReason> {
        self.reason.get().cloned()
    }

    /// Completes when cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_waiters_wake() {
        let c = Cancellation::new();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.cancelled().await;
                c.reason()
            }
        });
        assert!(!c.is_cancelled());
        c.cancel(CancelReason::LeaseLost);
        c.cancel(CancelReason::Requested);
        assert_eq!(waiter.await.unwrap(), Some(CancelReason::LeaseLost));
        assert_eq!(c.reason().unwrap().to_string(), "lock lost");
    }
}
