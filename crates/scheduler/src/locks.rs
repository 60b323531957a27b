//! [`Locks`]: where a lease is **taken**. The lock types a replica knows —
//! the rows of each (one, or a slot per unit of capacity, and the gate of a
//! `min_interval`) and the lease store of the consistency its jobs ask for
//! — and [`Locks::acquire`], the one way an attempt gets its lease.
//! Renewing and losing a lease is the lock keeper's
//! (`hajobs-lock-keeper`); the protocol is in `docs/leases.md`.
//!
//! The job manager takes its attempts' leases here; the admin layer reads,
//! cancels and releases through the same stores, so that an operator's
//! `unlock` of a lock type on `consistency = "global"` speaks SERIAL as its
//! jobs do.

use std::collections::BTreeMap;
use std::sync::Arc;

use hajobs_core::{
    Acquired, CassandraConfig, Holder, JobId, LeaseStore, LeaseTtl, LockType, NodeId, StoreError,
};
use scylla::client::session::Session;

use crate::error::ManagerError;
use crate::spec::{JobSpec, LockConsistency, LockSpec};

/// The lock types of one replica and the lease stores that take them.
/// Cheap to share behind an `Arc`.
pub struct Locks {
    /// The cluster's consistency.
    leases: Arc<LeaseStore>,
    /// Lock types with a capacity or a rate limit.
    limits: BTreeMap<LockType, LockSpec>,
    /// Lock types whose jobs override the cluster's consistency, with the
    /// lease store of theirs.
    stores: BTreeMap<LockType, Arc<LeaseStore>>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("limits", &self.limits)
            .field("own_consistency", &self.stores.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Locks {
    /// Prepares the lease stores for `limits` and the lock types of `jobs`
    /// on `session`. The limits of a lock type are given once; the job
    /// types sharing a lock type agree on its consistency.
    pub async fn new<'a>(
        session: Arc<Session>,
        config: &CassandraConfig,
        limits: impl IntoIterator<Item = &'a LockSpec>,
        jobs: impl IntoIterator<Item = &'a JobSpec>,
    ) -> Result<Self, ManagerError> {
        let mut by_type = BTreeMap::new();
        for lock in limits {
            if by_type
                .insert(lock.lock_type.clone(), lock.clone())
                .is_some()
            {
                return Err(ManagerError::InvalidLock {
                    lock_type: lock.lock_type.to_string(),
                    problem: "its limits are given twice".into(),
                });
            }
        }
        // Per lock type, the consistency its jobs ask for; they must agree.
        let mut wanted: BTreeMap<&LockType, (&JobSpec, Option<LockConsistency>)> = BTreeMap::new();
        for spec in jobs {
            match wanted.get(&spec.lock_type) {
                Some((other, c)) if *c != spec.consistency => {
                    return Err(ManagerError::Policy {
                        job_type: spec.job_type.to_string(),
                        problem: format!(
                            "its consistency differs from that of `{}`, which shares lock type `{}`",
                            other.job_type, spec.lock_type
                        ),
                    });
                }
                _ => {
                    wanted.insert(&spec.lock_type, (spec, spec.consistency));
                }
            }
        }
        let leases = Arc::new(LeaseStore::new(session.clone(), config).await?);
        let mut stores = BTreeMap::new();
        let mut other: Option<Arc<LeaseStore>> = None;
        for (lock_type, (_, consistency)) in wanted {
            let global = match consistency {
                Some(LockConsistency::Global) => true,
                Some(LockConsistency::Local) => false,
                None => continue,
            };
            if global == config.is_global() {
                continue;
            }
            let store = match &other {
                Some(s) => s.clone(),
                None => {
                    let config = if global {
                        config.clone().with_global_consistency()
                    } else {
                        config.clone().with_local_consistency()
                    };
                    let s = Arc::new(LeaseStore::new(session.clone(), &config).await?);
                    other = Some(s.clone());
                    s
                }
            };
            stores.insert(lock_type.clone(), store);
        }
        Ok(Self {
            leases,
            limits: by_type,
            stores,
        })
    }

    /// The lease store of the cluster's consistency.
    pub fn cluster_leases(&self) -> &Arc<LeaseStore> {
        &self.leases
    }

    /// The lease store of `row` — a lock type, one of its slots or its gate:
    /// the cluster's, or one with the consistency its jobs ask for.
    pub fn leases_of(&self, row: &LockType) -> &Arc<LeaseStore> {
        self.stores
            .get(row)
            .or_else(|| self.stores.get(&row.owner()))
            .unwrap_or(&self.leases)
    }

    /// The limits of `lock_type`, if it has any.
    pub fn limits(&self, lock_type: &LockType) -> Option<&LockSpec> {
        self.limits.get(lock_type)
    }

    /// The capacity of `lock_type` (1 without limits).
    pub fn capacity(&self, lock_type: &LockType) -> u32 {
        self.limits(lock_type).map_or(1, |l| l.capacity)
    }

    /// The lock rows an attempt of `lock_type` may hold: the lock type
    /// itself, and for a capacity of N also `LOCK_TYPE#2` … `LOCK_TYPE#N`.
    pub fn slots(&self, lock_type: &LockType) -> Vec<LockType> {
        match self.limits(lock_type) {
            Some(l) => l.slots(),
            None => vec![lock_type.clone()],
        }
    }

    /// Takes a lease on `lock_type` for `job_id` on replica `owner`: its one lock row, or for
    /// a lock type with capacity the first free slot (tried from an offset
    /// of the attempt's own, so that racing replicas spread); then, with a
    /// `min_interval`, its gate, which is never released (it expires).
    pub async fn acquire(
        &self,
        lock_type: &LockType,
        job_id: JobId,
        owner: &NodeId,
        ttl: LeaseTtl,
    ) -> Result<Acquired, StoreError> {
        let leases = self.leases_of(lock_type);
        let node = owner;
        let Some(lock) = self.limits(lock_type) else {
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

    /// Who holds each slot of `lock_type` now (read at SERIAL).
    pub async fn holders(&self, lock_type: &LockType) -> Result<Vec<Holder>, StoreError> {
        let mut holders = Vec::new();
        for slot in self.slots(lock_type) {
            if let Some(h) = self.leases_of(lock_type).read(&slot, true).await? {
                holders.push(h);
            }
        }
        Ok(holders)
    }
}
