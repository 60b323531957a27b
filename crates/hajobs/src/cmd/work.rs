//! `hajobs work run | check | list | purge`: work items.

use std::time::Duration;

use super::*;
use crate::cli::WorkCommand;

/// One JSON object per line.
pub(crate) async fn run(settings: &Settings, command: WorkCommand) -> Result<(), CliError> {
    if let WorkCommand::Run {
        work_set,
        key,
        timeout,
        lease_ttl,
        command,
    } = command
    {
        return work_run(settings, &work_set, &key, timeout, lease_ttl, &command).await;
    }
    let admin = settings.admin().await?;
    match command {
        WorkCommand::Run { .. } => unreachable!("handled above"),
        WorkCommand::Check {
            work_set,
            key,
            json,
        } => {
            let item = admin.work_check(&work_set, &key).await?;
            if json {
                return print_json_lines(&[item]);
            }
            let time = |ms: Option<i64>| {
                ms.map(|ms| {
                    rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
                })
                .unwrap_or_else(|| "-".into())
            };
            println!("work item     {} / {}", item.work_set, item.key);
            println!("state         {}", item.state);
            println!("node          {}", item.node.as_deref().unwrap_or("-"));
            println!("holder        {}", item.holder.as_deref().unwrap_or("-"));
            println!("fencing token {}", item.fencing_token);
            println!("attempts      {}", item.attempts);
            println!("first         {}", time(item.created_at_ms));
            println!("since         {}", time(item.since_ms));
            println!("lease until   {}", time(item.lease_until_ms));
            println!("ended         {}", time(item.ended_at_ms));
            if let Some(r) = &item.result {
                println!("result        {r}");
            }
            if let Some(e) = &item.error {
                println!("error         {e}");
            }
        }
        WorkCommand::List {
            work_set,
            limit,
            retention,
            json,
        } => {
            let items = admin.work_list(&work_set, limit, Some(retention)).await?;
            if json {
                return print_json_lines(&items);
            }
            println!(
                "{:<32} {:<12} {:<20} {:>5} {:>8} ERROR",
                "KEY", "STATE", "NODE", "TOKEN", "ATTEMPTS"
            );
            for i in &items {
                println!(
                    "{:<32} {:<12} {:<20} {:>5} {:>8} {}",
                    i.key,
                    i.state,
                    i.node.as_deref().unwrap_or("-"),
                    i.fencing_token,
                    i.attempts,
                    i.error.as_deref().unwrap_or("")
                );
            }
        }
        WorkCommand::Purge {
            work_set,
            older_than,
            retention,
        } => {
            let removed = admin
                .work_purge(&work_set, older_than, Some(retention))
                .await?;
            println!(
                "purged {removed} work item(s) of {work_set} that ended more than {} ago",
                humantime::format_duration(older_than)
            );
        }
    }
    Ok(())
}

async fn work_run(
    settings: &Settings,
    work_set: &str,
    key: &str,
    timeout: Option<Duration>,
    lease_ttl: Duration,
    command: &[String],
) -> Result<(), CliError> {
    use hajobs_scheduler::{Processed, WorkItems, WorkOptions};
    let set = hajobs_core::WorkSet::new(work_set).map_err(CliError::input)?;
    let item = hajobs_core::WorkKey::new(key).map_err(CliError::input)?;
    let ttl = hajobs_core::LeaseTtl::new(lease_ttl)
        .map_err(|e| CliError::input(anyhow::anyhow!("--lease-ttl: {e}")))?;
    let items = WorkItems::new(
        settings.session().await?,
        &settings.cassandra,
        settings.node.clone(),
        WorkOptions {
            lease_ttl: ttl,
            ..WorkOptions::default()
        },
    )
    .await?;
    // The check-in timeout is the guarded run's: it stops the tree and
    // waits until it is gone before the item is recorded failed.
    let command = command.to_vec();
    let outcome = items
        .process(&set, &item, None, |grant| {
            crate::work_run::run(grant, command, timeout)
        })
        .await?;
    match outcome {
        Processed::Done(_) => {
            eprintln!("work item {key} of {work_set}: processed here, checked out DONE");
            Ok(())
        }
        Processed::AlreadyDone(done) => {
            eprintln!(
                "work item {key} of {work_set}: already done (by {}, fencing token {}); not run again",
                done.node.as_deref().unwrap_or("?"),
                done.fencing_token
            );
            Ok(())
        }
        Processed::InProgress { node } => Err(CliError::locked(anyhow::anyhow!(
            "work item {key} of {work_set} is in progress on {}; not run",
            node.as_deref().unwrap_or("?")
        ))),
        Processed::Failed(e) if e.starts_with(crate::work_run::CHECKIN_TIMEOUT) => {
            Err(anyhow::anyhow!("work item {key} of {work_set}: {e}; recorded FAILED").into())
        }
        Processed::Failed(e) => Err(anyhow::anyhow!(
            "work item {key} of {work_set} failed: {e}; recorded FAILED, the next check-in retries it"
        )
        .into()),
        Processed::TimedOut(t) => Err(anyhow::anyhow!(
            "work item {key} of {work_set}: the check-in timeout of {} fired; the command was killed and the item recorded FAILED",
            humantime::format_duration(t)
        )
        .into()),
        Processed::LeaseLost => Err(anyhow::anyhow!(
            "work item {key} of {work_set}: the lease was lost; the command was killed, nothing recorded"
        )
        .into()),
    }
}
