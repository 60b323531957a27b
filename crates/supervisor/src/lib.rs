//! # hajobs-supervisor
//!
//! The dead-job detector of hajobs. Every replica runs a [`Supervisor`];
//! passes are a singleton through the supervisor's own lease. A pass finds
//! attempts whose status says PENDING but whose lease is gone, records them
//! DEAD, and re-runs their trigger on this (surviving) replica, at most
//! `retrigger_count` times per trigger.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`SupervisorConfig`]: interval, lease, history depth, budget, backoff |
//! | [`supervisor`] | [`Supervisor`]: one pass under the lease, or a loop ([`SupervisorHandle`]) |
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
