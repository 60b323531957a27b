//! `hajobs trigger | cancel | watch`: running a job now, stopping it,
//! following it.

use std::time::Duration;

use hajobs_core::{JobId, JobType};
use hajobs_scheduler::StartOutcome;

use super::*;
use crate::admin::{Admin, AdminError};
use crate::exit::final_status;

/// Runs a job now on one live replica (through the cluster).
pub(crate) async fn through_cluster(
    settings: &Settings,
    job: String,
    wait: bool,
) -> Result<(), CliError> {
    let admin = settings.admin(false).await?;
    let t = admin.trigger(&job, &requested_by()).await?;
    match (&t.job_id, t.fencing_token, t.queue_position) {
        (Some(job_id), Some(token), _) => {
            println!(
                "started {} on {} as {job_id} (trigger {}, fencing token {token})",
                t.job_type, t.node, t.trigger_id
            );
            if wait {
                let job_type = admin.job_type(&job)?;
                let job_id: JobId = job_id.parse()?;
                follow(&admin, &job_type, job_id).await?;
            }
        }
        (_, _, position) => println!(
            "queued {} as trigger {} at position {} of its lock type's queue (by {}): it runs when its turn comes; `hajobs queue` shows it",
            t.job_type,
            t.trigger_id,
            position.unwrap_or(0),
            t.node
        ),
    }
    Ok(())
}

pub(crate) async fn here(settings: &Settings, job: &str) -> Result<(), CliError> {
    let manager = settings.manager("trigger").await?;
    match manager.trigger(job).await.map_err(AdminError::from)? {
        StartOutcome::Started {
            job_id, trigger_id, ..
        } => {
            eprintln!("started {job} attempt {job_id} (trigger {trigger_id}) here");
            while manager.running_here(job) == Some(job_id) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let job_type = JobType::new(job).map_err(CliError::input)?;
            match manager.statuses().get(&job_type, job_id).await? {
                Some(StatusEntry::Status(s)) => final_status(&s)?,
                other => {
                    return Err(anyhow::anyhow!(
                        "{job} attempt {job_id}: final status unreadable: {other:?}"
                    )
                    .into());
                }
            }
            Ok(())
        }
        StartOutcome::Locked { holder, .. } => Err(CliError::locked(anyhow::anyhow!(
            "{job} not started: lock `{}` is held by job {} on {}",
            holder.lock_type,
            holder.job_id,
            holder.owner.as_deref().unwrap_or("?")
        ))),
        StartOutcome::Queued {
            trigger_id,
            position,
        } => {
            println!(
                "{job} queued as trigger {trigger_id} at position {position}: its lock is held; a replica runs it when its turn comes"
            );
            Ok(())
        }
        StartOutcome::Error { details, .. } => {
            Err(anyhow::anyhow!("{job} not started: {details}").into())
        }
    }
}

/// Cancels the running attempt, wherever it runs.
pub(crate) async fn cancel(settings: &Settings, job: String) -> Result<(), CliError> {
    let c = settings.admin(true).await?.cancel(&job).await?;
    match (&c.job_id, &c.node) {
        (Some(id), node) => println!(
            "cancelled {job} attempt {id} on {}: its replica stops it within one renewal interval",
            node.as_deref().unwrap_or("?")
        ),
        (None, _) => println!("{job} is not running"),
    }
    Ok(())
}

/// `hajobs watch JOB`: the running attempt's progress, live, to its end.
pub(crate) async fn watch(settings: &Settings, job: &str, wait: Duration) -> Result<(), CliError> {
    let job_type = JobType::new(job).map_err(CliError::input)?;
    let admin = settings.admin(false).await?;
    let store = admin.statuses();
    let started = std::time::Instant::now();
    let attempt = loop {
        let running = store
            .history(&job_type, 5)
            .await?
            .into_iter()
            .find_map(|e| match e {
                StatusEntry::Status(s) if s.result() == hajobs_core::JobResult::Pending => Some(s),
                _ => None,
            });
        if let Some(s) = running {
            break s;
        }
        if started.elapsed() >= wait {
            return Err(anyhow::anyhow!(
                "{job} has no running attempt (waited {})",
                humantime::format_duration(wait)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "watching {job} attempt {} on {} (trigger {})",
        attempt.job_id,
        attempt.owner.as_ref().map_or("?", |o| o.as_str()),
        attempt.trigger_id
    );
    let mut shown = None;
    loop {
        // The attempt's newest status, content included.
        if let Some(StatusEntry::Status(s)) = store.get(&job_type, attempt.job_id).await? {
            if s.result() != hajobs_core::JobResult::Pending {
                return final_status(&s);
            }
            let progress = (s.timestamp, s.content.clone());
            if s.content.is_some() && shown.as_ref() != Some(&progress) {
                println!(
                    "{} {}",
                    rfc3339(s.timestamp),
                    s.content
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
                shown = Some(progress);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `--wait`: the attempt's statuses until its end.
async fn follow(admin: &Admin, job_type: &JobType, job_id: JobId) -> Result<(), CliError> {
    let store = admin.statuses();
    loop {
        if let Some(StatusEntry::Status(s)) = store.get(job_type, job_id).await? {
            if s.result() != hajobs_core::JobResult::Pending {
                return final_status(&s);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
