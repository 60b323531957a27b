//! `hajobs nodes | locks | unlock | queue`: the replicas, the locks and
//! the queues of the cluster.

use std::time::Duration;

use super::*;
use crate::admin::{HolderView, Unlocked};

/// The live replicas.
pub(crate) async fn nodes(settings: &Settings, json: bool) -> Result<(), CliError> {
    let nodes = settings.admin().await?.nodes().await?;
    if json {
        return print_json_lines(&nodes);
    }
    let now = hajobs_core::node_store::now_millis();
    println!(
        "{:<20} {:<16} {:>8} {:<8} {:<24} {:>9}  {:<22} JOB TYPES / RUNNING",
        "NODE", "HOST", "PID", "VERSION", "STARTED (UTC)", "SEEN", "HTTP"
    );
    for n in &nodes {
        let started = rfc3339_ms(Some(n.started_at_ms), chrono::SecondsFormat::Secs);
        println!(
            "{:<20} {:<16} {:>8} {:<8} {:<24} {:>7.1}s  {:<22} {} / {}",
            n.node_id,
            n.host,
            n.pid,
            n.version,
            started,
            (now - n.seen_at_ms).max(0) as f64 / 1000.0,
            n.http.as_deref().unwrap_or("-"),
            n.job_types.join(","),
            if n.running.is_empty() {
                "-".to_owned()
            } else {
                n.running.join(",")
            }
        );
    }
    Ok(())
}

/// The held locks.
pub(crate) async fn locks(settings: &Settings, json: bool) -> Result<(), CliError> {
    let holders = settings.admin().await?.locks().await?;
    if json {
        let views: Vec<HolderView> = holders.iter().map(HolderView::from).collect();
        return print_json_lines(&views);
    }
    println!(
        "{:<28} {:<38} {:<20} {:>8}  SINCE",
        "LOCK TYPE", "JOB ID", "OWNER", "TOKEN"
    );
    for h in &holders {
        let v = HolderView::from(h);
        println!(
            "{:<28} {:<38} {:<20} {:>8}  {}",
            v.lock_type,
            v.job_id,
            v.owner.as_deref().unwrap_or("(ha-jobs?)"),
            v.fencing_token
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            h.since.map(rfc3339).unwrap_or_default()
        );
    }
    Ok(())
}

/// Frees a lock safely (or by force).
pub(crate) async fn unlock(
    settings: &Settings,
    lock_type: String,
    wait: Duration,
    force: bool,
) -> Result<(), CliError> {
    let admin = settings.admin().await?;
    let unlocked = admin
        .unlock(&lock_type, wait, force, &requested_by(), |h| {
            eprintln!(
                "asked job {} on {} to stop; waiting for it to release {lock_type} (at most {})",
                h.job_id,
                h.owner.as_deref().unwrap_or("?"),
                humantime::format_duration(wait)
            )
        })
        .await?;
    match unlocked {
        Unlocked::NotHeld => println!("{lock_type} was not held"),
        Unlocked::Forced(h) => println!(
            "released {lock_type} by force, held by job {} on {} (if it still runs, it runs unfenced until its next renewal)",
            h.job_id,
            h.owner.as_deref().unwrap_or("?")
        ),
        Unlocked::Released {
            holder,
            after,
            now_held_by,
        } => println!(
            "unlocked {lock_type}: job {} on {} stopped and let it go after {:.1} s{}",
            holder.job_id,
            holder.owner.as_deref().unwrap_or("?"),
            after.as_secs_f64(),
            now_held_by
                .map(|id| format!("; now held by job {id}"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// Removes a queued trigger.
pub(crate) async fn queue_remove(settings: &Settings, trigger_id: String) -> Result<(), CliError> {
    let admin = settings.admin().await?;
    let q = admin.queue_remove(&trigger_id, &requested_by()).await?;
    println!(
        "removed trigger {} of {} from the queue of {} (it was at position {}); recorded as SKIPPED",
        q.trigger_id, q.job_type, q.lock_type, q.position
    );
    Ok(())
}

/// The queued triggers.
pub(crate) async fn queue(
    settings: &Settings,
    lock_type: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let queued = settings.admin().await?.queue(lock_type.as_deref()).await?;
    if json {
        return print_json_lines(&queued);
    }
    println!(
        "{:<20} {:>3} {:<20} {:<36} {:<26} BY",
        "LOCK TYPE", "POS", "JOB TYPE", "TRIGGER ID", "QUEUED AT (UTC)"
    );
    for q in &queued {
        println!(
            "{:<20} {:>3} {:<20} {:<36} {:<26} {}",
            q.lock_type,
            q.position,
            q.job_type,
            q.trigger_id,
            rfc3339_ms(q.queued_at_ms, chrono::SecondsFormat::Millis),
            q.queued_by.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
