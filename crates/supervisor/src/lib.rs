//! # hajobs-supervisor
//!
//! The dead-job detector of hajobs. A singleton job, scheduled on every
//! replica, that finds job attempts whose status says PENDING but whose lease
//! is gone, records them DEAD, and re-runs their trigger on a surviving
//! replica a bounded number of times. Empty for now.
