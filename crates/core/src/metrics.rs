//! The metrics hajobs records, named once, through the [`metrics`] facade.
//!
//! A library user who installs no recorder pays next to nothing; the daemon
//! installs a Prometheus recorder and serves these at `GET /metrics`.
//! Every name follows Prometheus' conventions (`_seconds`, `_total`).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `hajobs_lease_acquire_seconds` | histogram | `outcome` = acquired, locked, error |
//! | `hajobs_lease_renew_seconds` | histogram | `outcome` = renewed, cancel_requested, lost, error |
//! | `hajobs_lease_release_seconds` | histogram | `outcome` = released, not_holder, error |
//! | `hajobs_lease_renewals_failed_total` | counter | |
//! | `hajobs_leases_lost_total` | counter | `reason` = renewal_rejected, expired_unconfirmed, keeper_stopped |
//! | `hajobs_attempts_started_total` | counter | `job_type` |
//! | `hajobs_attempts_ended_total` | counter | `job_type`, `state` (the final state) |
//! | `hajobs_job_duration_seconds` | histogram | `job_type` |
//! | `hajobs_supervisor_dead_total` | counter | `job_type` |
//! | `hajobs_supervisor_retriggers_total` | counter | `job_type` |
//! | `hajobs_cron_firing_lag_seconds` | histogram | `job_type` (scheduled instant → attempt running) |
//! | `hajobs_cron_claims_total` | counter | `job_type`, `outcome` = won, lost, error (one LWT each) |
//! | `hajobs_cron_claim_checks_total` | counter | `job_type`, `outcome` = claimed, free, error (one read each) |
//! | `hajobs_trigger_requests_claimed_total` | counter | `job_type` |
//! | `hajobs_trigger_requests_total` | counter | `job_type`, `outcome` (as seen by the requester) |
//! | `hajobs_work_items_total` | counter | `work_set`, `outcome` = proceed, done, failed, stale |

use std::time::Duration;

use ::metrics::{counter, histogram};

/// Every histogram's name, for a recorder that sets buckets.
pub const HISTOGRAMS: [&str; 5] = [
    "hajobs_lease_acquire_seconds",
    "hajobs_lease_renew_seconds",
    "hajobs_lease_release_seconds",
    "hajobs_job_duration_seconds",
    "hajobs_cron_firing_lag_seconds",
];

/// A lease acquisition took `took`.
pub fn lease_acquire(took: Duration, outcome: &'static str) {
    histogram!("hajobs_lease_acquire_seconds", "outcome" => outcome).record(took.as_secs_f64());
}

/// A lease renewal took `took`.
pub fn lease_renew(took: Duration, outcome: &'static str) {
    histogram!("hajobs_lease_renew_seconds", "outcome" => outcome).record(took.as_secs_f64());
}

/// A lease release took `took`.
pub fn lease_release(took: Duration, outcome: &'static str) {
    histogram!("hajobs_lease_release_seconds", "outcome" => outcome).record(took.as_secs_f64());
}

/// A renewal failed (error or timeout); the keeper retries.
pub fn renewal_failed() {
    counter!("hajobs_lease_renewals_failed_total").increment(1);
}

/// A lease was lost.
pub fn lease_lost(reason: &'static str) {
    counter!("hajobs_leases_lost_total", "reason" => reason).increment(1);
}

/// An attempt started.
pub fn attempt_started(job_type: &str) {
    counter!("hajobs_attempts_started_total", "job_type" => job_type.to_owned()).increment(1);
}

/// An attempt ended in `state` after `took`.
pub fn attempt_ended(job_type: &str, state: &'static str, took: Duration) {
    counter!("hajobs_attempts_ended_total", "job_type" => job_type.to_owned(), "state" => state)
        .increment(1);
    histogram!("hajobs_job_duration_seconds", "job_type" => job_type.to_owned())
        .record(took.as_secs_f64());
}

/// The supervisor recorded an attempt DEAD.
pub fn supervisor_dead(job_type: &str) {
    counter!("hajobs_supervisor_dead_total", "job_type" => job_type.to_owned()).increment(1);
}

/// The supervisor re-ran a dead trigger.
pub fn supervisor_retrigger(job_type: &str) {
    counter!("hajobs_supervisor_retriggers_total", "job_type" => job_type.to_owned()).increment(1);
}

/// A cron firing's attempt runs `lag` after its scheduled instant.
pub fn cron_firing_lag(job_type: &str, lag: Duration) {
    histogram!("hajobs_cron_firing_lag_seconds", "job_type" => job_type.to_owned())
        .record(lag.as_secs_f64());
}

/// This replica sent a cron firing's claim (an LWT).
pub fn cron_claim(job_type: &str, outcome: &'static str) {
    counter!("hajobs_cron_claims_total", "job_type" => job_type.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// This replica read whether a cron firing was claimed, instead of claiming.
pub fn cron_claim_check(job_type: &str, outcome: &'static str) {
    counter!("hajobs_cron_claim_checks_total", "job_type" => job_type.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// This replica claimed a trigger request.
pub fn trigger_request_claimed(job_type: &str) {
    counter!("hajobs_trigger_requests_claimed_total", "job_type" => job_type.to_owned())
        .increment(1);
}

/// A requester saw its trigger request end with `outcome`.
pub fn trigger_requested(job_type: &str, outcome: &'static str) {
    counter!("hajobs_trigger_requests_total", "job_type" => job_type.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A work item's check-in, check-out or failure (`outcome`: proceed, done,
/// failed, stale).
pub fn work_checkin(work_set: &str, outcome: &'static str) {
    counter!("hajobs_work_items_total", "work_set" => work_set.to_owned(), "outcome" => outcome)
        .increment(1);
}
