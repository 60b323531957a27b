//! [`SupervisorError`].

use hajobs_core::StoreError;
use hajobs_scheduler::ManagerError;

/// What can stop a supervisor pass (the next pass tries again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// Cassandra failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job manager refused.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The keeper of the supervisor's lease could not start.
    #[error("supervisor lease keeper: {0}")]
    Keeper(String),
    /// The pass ran out of its lease's time.
    #[error("supervisor pass took longer than its lease allows ({0:?})")]
    Overran(std::time::Duration),
}
