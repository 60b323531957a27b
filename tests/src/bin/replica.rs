//! A replica for the multi-process tests: a job manager and a supervisor on
//! the test cluster, driven by lines on stdin.
//!
//! `replica NODE KEYSPACE TRACE_DIR` registers
//! - `work-0` … `work-19`: 100 ms steps for `HAJOBS_WORK_SECS` (default 20)
//!   seconds, each step appending `JOB TOKEN EPOCH_MS` to
//!   `TRACE_DIR/NODE.trace` while the lease is valid; one lock type each;
//! - `crash`: aborts the whole process (retrigger count 2);
//! - `short`: 20 ms of nothing.
//!
//! stdin: `trigger JOB` → stdout `started JOB JOB_ID TRIGGER_ID`,
//! `locked JOB HOLDER` or `error JOB DETAILS`. `ready` is printed once the
//! manager and supervisor run; EOF on stdin shuts down gracefully.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hajobs_core::{CassandraConfig, NodeId};
use hajobs_scheduler::{Done, JobContext, JobError, JobManager, JobSpec, StartOutcome};
use hajobs_supervisor::{Supervisor, SupervisorConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The lease TTL of every job (short, so failover is quick).
const TTL: Duration = Duration::from_secs(4);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAJOBS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let [_, node, keyspace, trace_dir] = &args[..] else {
        anyhow::bail!("usage: replica NODE KEYSPACE TRACE_DIR");
    };
    let work_secs: u64 = std::env::var("HAJOBS_WORK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let trace = std::path::PathBuf::from(trace_dir).join(format!("{node}.trace"));
    let config = CassandraConfig::from_contact_list(&hajobs_tests::contact_list())
        .with_keyspace(keyspace.clone());
    let mut builder = JobManager::builder(config, NodeId::new(node.clone())?);
    for i in 0..20 {
        let trace = trace.clone();
        let spec = JobSpec::new(&format!("work-{i}"), &format!("work-lock-{i}"))?
            .lease_ttl(TTL)?
            .retrigger_count(1);
        builder = builder.job(spec, move |ctx: JobContext| {
            work(ctx, trace.clone(), work_secs)
        });
    }
    builder = builder
        .job(
            JobSpec::new("crash", "crash-lock")?
                .lease_ttl(TTL)?
                .retrigger_count(2),
            |_ctx: JobContext| async {
                std::process::abort();
                #[allow(unreachable_code)]
                Ok(Done::finished())
            },
        )
        .job(
            JobSpec::new("short", "short-lock")?.lease_ttl(TTL)?,
            |_ctx: JobContext| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Done::finished())
            },
        );
    let manager = builder.build().await?;
    manager.start().await?;
    let mut supervisor_config =
        SupervisorConfig::default().with_interval(Duration::from_secs(1))?;
    supervisor_config.lease_ttl = hajobs_core::LeaseTtl::from_secs(5)?;
    let supervisor = Supervisor::new(manager.clone(), supervisor_config).spawn();
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(job) = line.strip_prefix("trigger ") else {
            println!("error - unknown command `{line}`");
            continue;
        };
        let reply = match manager.trigger(job).await {
            Ok(StartOutcome::Started {
                job_id, trigger_id, ..
            }) => {
                format!("started {job} {job_id} {trigger_id}")
            }
            Ok(StartOutcome::Locked { holder, .. }) => format!("locked {job} {}", holder.job_id),
            Ok(StartOutcome::Queued {
                trigger_id,
                position,
            }) => format!("queued {job} {trigger_id} {position}"),
            Ok(StartOutcome::Error { details, .. }) => format!("error {job} {details}"),
            Err(e) => format!("error {job} {e}"),
        };
        println!("{reply}");
        std::io::stdout().flush()?;
    }
    supervisor.stop().await;
    manager.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

/// Steps of 100 ms, each leaving a trace line while the lease is valid.
async fn work(ctx: JobContext, trace: std::path::PathBuf, secs: u64) -> Result<Done, JobError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&trace)?;
    for _ in 0..secs * 10 {
        // Checked right before the visible step: nothing is written past the deadline.
        if !ctx.lease_valid() {
            return Err(JobError::new("lease no longer valid"));
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        // One write per line: a reader never sees half a line.
        let line = format!("{} {} {ms}\n", ctx.job_type, ctx.fencing_token);
        file.write_all(line.as_bytes())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Done::finished())
}
