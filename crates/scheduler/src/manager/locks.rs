//! Taking a lock: the lock type's rows (one, or a slot per unit of
//! capacity), the gate of its `min_interval`, and the lease store of the
//! consistency its jobs ask for. Renewing and losing a lease is the lock
//! keeper's (`hajobs-lock-keeper`).

use super::*;

impl JobManager {
    /// Takes a lease on `lock_type` for `job_id`: its one lock row, or for
    /// a lock type with capacity the first free slot (tried from an offset
    /// of the attempt's own, so that racing replicas spread); then, with a
    /// `min_interval`, its gate, which is never released (it expires).
    pub(super) async fn acquire(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        ttl: hajobs_core::LeaseTtl,
    ) -> Result<Acquired, hajobs_core::StoreError> {
        let leases = self.leases_of(lock_type);
        let node = &self.inner.node;
        let Some(lock) = self.inner.locks.get(lock_type) else {
            return leases.acquire(lock_type, job_id, node, ttl).await;
        };
        let slots = lock.slots();
        let offset = (job_id.uuid().as_u128() % slots.len() as u128) as usize;
        let mut first_holder = None;
        let mut lease = None;
        for k in 0..slots.len() {
            match leases
                .acquire(&slots[(offset + k) % slots.len()], job_id, node, ttl)
                .await?
            {
                Acquired::Acquired(l) => {
                    lease = Some(l);
                    break;
                }
                Acquired::Held(h) => {
                    first_holder.get_or_insert(h);
                }
            }
        }
        let Some(lease) = lease else {
            return Ok(Acquired::Held(first_holder.expect("at least one slot")));
        };
        if let Some((gate, gate_ttl)) = lock.gate() {
            match leases.acquire(&gate, job_id, node, gate_ttl).await {
                Ok(Acquired::Acquired(_)) => {}
                Ok(Acquired::Held(h)) => {
                    let _ = leases.release(&lease).await;
                    return Ok(Acquired::Held(h));
                }
                Err(e) => {
                    let _ = leases.release(&lease).await;
                    return Err(e);
                }
            }
        }
        Ok(Acquired::Acquired(lease))
    }

    /// The lock rows an attempt of `lock_type` may hold: the lock type
    /// itself, and for a capacity of N also `LOCK_TYPE#2` … `LOCK_TYPE#N`.
    pub fn slots(&self, lock_type: &LockType) -> Vec<LockType> {
        match self.inner.locks.get(lock_type) {
            Some(l) => l.slots(),
            None => vec![lock_type.clone()],
        }
    }

    /// The lease store of `lock_type`: the cluster's, or one with the
    /// consistency its jobs ask for.
    pub fn leases_of(&self, lock_type: &LockType) -> &Arc<LeaseStore> {
        self.inner
            .lock_stores
            .get(lock_type)
            .unwrap_or(&self.inner.leases)
    }

    /// Who holds each slot of `lock_type` now (read at SERIAL).
    pub async fn holders(&self, lock_type: &LockType) -> Result<Vec<Holder>, ManagerError> {
        let mut holders = Vec::new();
        for slot in self.slots(lock_type) {
            if let Some(h) = self.leases_of(lock_type).read(&slot, true).await? {
                holders.push(h);
            }
        }
        Ok(holders)
    }
}
