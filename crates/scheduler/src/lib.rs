//! # hajobs-scheduler
//!
//! The job manager of hajobs: jobs written in Rust are registered with a job
//! type, a lock type and an optional cron schedule; the manager triggers them
//! by cron or by hand, runs each attempt under its lease, records every step
//! in Cassandra and cancels attempts cluster-wide. Empty for now.
