//! `hajobs trigger | cancel | watch`: running a job now, stopping it,
//! following it.

use std::time::Duration;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use hajobs_core::trigger_args::MAX_PAYLOAD_BYTES;
use hajobs_core::{JobId, JobType, TriggerArgs};

use super::*;
use crate::admin::{Admin, Triggered};
use crate::exit::final_status;

/// What `-p NAME=VALUE`, `--payload` and `--payload-file` give a trigger,
/// each problem named (exit 2); checked against the job's declaration by
/// the admin layer.
pub(crate) fn given(
    params: &[String],
    payload: Option<String>,
    payload_file: Option<&Path>,
) -> Result<TriggerArgs, CliError> {
    let mut given = BTreeMap::new();
    for p in params {
        let Some((name, value)) = p.split_once('=') else {
            return Err(CliError::input(anyhow::anyhow!(
                "-p `{}`: expected NAME=VALUE",
                p.escape_debug()
            )));
        };
        if given.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(CliError::input(anyhow::anyhow!(
                "-p: parameter `{}` given twice",
                name.escape_debug()
            )));
        }
    }
    let (text, from) = match (payload, payload_file) {
        (Some(text), _) => (Some(text), "--payload".to_owned()),
        (None, Some(file)) => (
            Some(read_bounded(file)?),
            format!("--payload-file {}", file.display()),
        ),
        (None, None) => (None, String::new()),
    };
    let payload = match text {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| CliError::input(anyhow::anyhow!("{from}: not JSON: {e}")))?,
        ),
        None => None,
    };
    Ok(TriggerArgs {
        params: given,
        payload,
        parent: None,
    })
}

/// A payload file (`-`: standard input), refused past the payload limit
/// without reading further.
fn read_bounded(file: &Path) -> Result<String, CliError> {
    let source: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| {
            CliError::input(anyhow::anyhow!("--payload-file {}: {e}", file.display()))
        })?)
    };
    let mut text = String::new();
    source
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::input(anyhow::anyhow!("--payload-file {}: {e}", file.display())))?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(CliError::input(anyhow::anyhow!(
            "--payload-file {}: larger than the payload limit of {MAX_PAYLOAD_BYTES} bytes",
            file.display()
        )));
    }
    Ok(text)
}

/// Schedules a one-time trigger of `job` at `at` or in `r#in`.
pub(crate) async fn schedule(
    settings: &Settings,
    job: &str,
    given: TriggerArgs,
    at: Option<String>,
    r#in: Option<String>,
) -> Result<(), CliError> {
    let due = crate::admin::due_at(at.as_deref(), r#in.as_deref())?;
    let admin = settings.admin().await?;
    let s = admin.schedule(job, &requested_by(), given, due).await?;
    println!(
        "scheduled {} as trigger {} at {}: one replica that has it runs it then; `hajobs scheduled` lists it, `hajobs scheduled rm {}` removes it",
        s.job_type, s.trigger_id, s.due_at, s.trigger_id
    );
    Ok(())
}

/// The scheduled one-time triggers.
pub(crate) async fn scheduled(
    settings: &Settings,
    job: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let all = settings.admin().await?.scheduled(job.as_deref()).await?;
    if json {
        return print_json_lines(&all);
    }
    println!(
        "{:<26} {:<20} {:<36} {:<9} {:<20} DETAIL",
        "DUE (UTC)", "JOB TYPE", "TRIGGER ID", "STATE", "BY"
    );
    for s in &all {
        let by = match (&s.state[..], &s.removed_by, &s.claimed_by) {
            ("removed", Some(r), _) => r.clone(),
            ("pending", ..) => s.scheduled_by.clone().unwrap_or_default(),
            (_, _, Some(c)) => c.clone(),
            _ => "-".into(),
        };
        println!(
            "{:<26} {:<20} {:<36} {:<9} {:<20} {}",
            s.due_at,
            s.job_type,
            s.trigger_id,
            s.state,
            by,
            s.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Removes a scheduled trigger before it fires.
pub(crate) async fn scheduled_remove(
    settings: &Settings,
    trigger_id: String,
) -> Result<(), CliError> {
    let s = settings
        .admin()
        .await?
        .scheduled_remove(&trigger_id, &requested_by())
        .await?;
    println!(
        "removed trigger {} of {} due at {}; recorded as SKIPPED",
        s.trigger_id, s.job_type, s.due_at
    );
    Ok(())
}

/// Runs a job now on one live replica (through the cluster).
pub(crate) async fn through_cluster(
    settings: &Settings,
    job: String,
    wait: bool,
    given: TriggerArgs,
) -> Result<(), CliError> {
    let admin = settings.admin().await?;
    match admin.trigger(&job, &requested_by(), given).await? {
        Triggered::Started {
            job_type,
            node,
            trigger_id,
            job_id,
            fencing_token,
        } => {
            println!(
                "started {job_type} on {node} as {job_id} (trigger {trigger_id}, fencing token {fencing_token})"
            );
            if wait {
                let job_type = admin.job_type(&job)?;
                follow(&admin, &job_type, job_id).await?;
            }
        }
        Triggered::Queued {
            job_type,
            node,
            trigger_id,
            position,
        } => println!(
            "queued {job_type} as trigger {trigger_id} at position {position} of its lock type's queue (by {node}): it runs when its turn comes; `hajobs queue` shows it"
        ),
    }
    Ok(())
}

/// Runs a job now in this process, under its lease, to its end: the exit
/// code says how it ended.
pub(crate) async fn here(
    settings: &Settings,
    job: &str,
    given: TriggerArgs,
) -> Result<(), CliError> {
    let admin = settings.admin_with_manager("trigger").await?;
    match admin.trigger_here(job, given).await? {
        Triggered::Started {
            job_id, trigger_id, ..
        } => {
            eprintln!("started {job} attempt {job_id} (trigger {trigger_id}) here");
            final_status(&admin.wait_here(job, job_id).await?)
        }
        Triggered::Queued {
            trigger_id,
            position,
            ..
        } => {
            println!(
                "{job} queued as trigger {trigger_id} at position {position}: its lock is held; a replica runs it when its turn comes"
            );
            Ok(())
        }
    }
}

/// Cancels the running attempt, wherever it runs.
pub(crate) async fn cancel(settings: &Settings, job: String) -> Result<(), CliError> {
    let c = settings
        .admin_with_manager("cancel")
        .await?
        .cancel(&job)
        .await?;
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
    let admin = settings.admin().await?;
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
