//! The manager's side of [`Locks`](crate::Locks), where a lease is
//! taken: each call is the room's, on this replica's lock types.

use super::*;

impl JobManager {
    /// Takes a lease on `lock_type` for `job_id` (see [`Locks::acquire`]).
    pub(super) async fn acquire(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        ttl: hajobs_core::LeaseTtl,
    ) -> Result<Acquired, hajobs_core::StoreError> {
        self.inner
            .locks
            .acquire(lock_type, job_id, &self.inner.node, ttl)
            .await
    }

    /// The lock rows an attempt of `lock_type` may hold (see [`Locks::slots`]).
    pub fn slots(&self, lock_type: &LockType) -> Vec<LockType> {
        self.inner.locks.slots(lock_type)
    }

    /// The lease store of `lock_type` (see [`Locks::leases_of`]).
    pub fn leases_of(&self, lock_type: &LockType) -> &Arc<LeaseStore> {
        self.inner.locks.leases_of(lock_type)
    }

    /// Who holds each slot of `lock_type` now (read at SERIAL).
    pub async fn holders(&self, lock_type: &LockType) -> Result<Vec<Holder>, ManagerError> {
        Ok(self.inner.locks.holders(lock_type).await?)
    }
}
