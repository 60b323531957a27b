//! # hajobs-supervisor
//!
//! The dead-job detector of hajobs. Every replica runs a [`Supervisor`];
//! passes are a singleton through the supervisor's own lease. A pass finds
//! attempts whose status says PENDING but whose lease is gone, records them
//! DEAD, and re-runs their trigger on this (surviving) replica, at most
//! `retrigger_count` times per trigger. It looks only at the job types the
//! replicas' watch lists name (what runs, one read per pass) plus a slice of
//! a sweep over every job type (all of them once per `sweep_period`), so a
//! pass costs in proportion to what runs, not to what is configured.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`SupervisorConfig`]: interval, lease, history depth, budget, backoff, sweep period |
//! | [`supervisor`] | [`Supervisor`]: one pass under the lease, or a loop that keeps the lease between its passes ([`SupervisorHandle`]) |
//! | [`pass`] | the rules, and the [`PassReport`] of what a pass decided |
//! | [`error`] | [`SupervisorError`] |
//!
//! ## Example
//!
//! ```no_run
//! # async fn run(manager: hajobs_scheduler::JobManager) {
//! use hajobs_supervisor::{Supervisor, SupervisorConfig};
//! let handle = Supervisor::new(manager, SupervisorConfig::default()).spawn();
//! // … on shutdown:
//! handle.stop().await;
//! # }
//! ```
//!
//! ## The rules
#![doc = include_str!("../../../docs/supervisor.md")]

pub mod config;
pub mod error;
pub mod pass;
pub mod supervisor;

pub use config::SupervisorConfig;
pub use error::SupervisorError;
pub use pass::PassReport;
pub use supervisor::{Supervisor, SupervisorHandle};
