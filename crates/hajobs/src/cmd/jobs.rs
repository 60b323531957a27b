//! `hajobs jobs | status | history | stats`: what the jobs are and did.

use super::*;

/// The configured jobs and their next firing.
pub(crate) async fn jobs(settings: &Settings, json: bool) -> Result<(), CliError> {
    let jobs = settings.admin().await?.jobs().await?;
    if json {
        return print_json_lines(&jobs);
    }
    println!(
        "{:<24} {:<24} {:<28} {:<26} {:<20} LATEST",
        "JOB TYPE", "LOCK TYPE", "CRON", "NEXT FIRING (UTC)", "HOLDER"
    );
    for j in &jobs {
        let cron = match (&j.cron, &j.time_zone) {
            (Some(c), Some(tz)) => format!("{c} {tz}"),
            _ if j.keep_running => "(always on)".into(),
            _ => "(manual)".into(),
        };
        let latest = match &j.latest {
            Some(StatusEntry::Status(s)) => {
                format!("{} {}", s.state.as_str(), rfc3339(s.timestamp))
            }
            Some(StatusEntry::Corrupt { .. }) => "(corrupt row)".into(),
            None => "-".into(),
        };
        println!(
            "{:<24} {:<24} {:<28} {:<26} {:<20} {}",
            j.job_type,
            j.lock_type,
            cron,
            j.next_firing.as_deref().unwrap_or("-"),
            j.holder
                .as_ref()
                .map(|h| h.owner.clone().unwrap_or_else(|| "(ha-jobs?)".into()))
                .unwrap_or_else(|| "-".into()),
            latest
        );
        if !j.params.is_empty() || j.payload != "forbidden" {
            let params: Vec<String> = j
                .params
                .iter()
                .map(|(name, p)| match (&p.default, p.required) {
                    (_, true) => format!("{name} (required)"),
                    (Some(d), false) => format!("{name}={d}"),
                    (None, false) => name.clone(),
                })
                .collect();
            println!(
                "{:<24} params: {}; payload {}",
                "",
                if params.is_empty() {
                    "none".to_owned()
                } else {
                    params.join(", ")
                },
                j.payload
            );
        }
    }
    Ok(())
}

/// The latest attempt of every job type, or the last attempts of one.
pub(crate) async fn status(
    settings: &Settings,
    job: Option<String>,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    let entries = settings
        .admin()
        .await?
        .status(job.as_deref(), limit)
        .await?;
    print_entries(&entries, json)?;
    Ok(())
}

/// Every status of one attempt.
pub(crate) async fn history(
    settings: &Settings,
    job: String,
    job_id: String,
) -> Result<(), CliError> {
    let entries = settings.admin().await?.attempt(&job, &job_id).await?;
    print_entries(&entries, true)?;
    Ok(())
}

/// Figures per job type.
pub(crate) async fn stats(
    settings: &Settings,
    job: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let stats = settings.admin().await?.stats(job.as_deref()).await?;
    if json {
        return print_json_lines(&stats);
    }
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}  {:<24} LAST FAILURE",
        "JOB TYPE",
        "ATTEMPTS",
        "FINISHED",
        "FAILED",
        "DEAD",
        "CANCELED",
        "SUCCESS",
        "P50",
        "P95",
        "MAX",
        "LAST SUCCESS"
    );
    for s in &stats {
        let ms =
            |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{:.1}s", v as f64 / 1000.0));
        let at = |v: Option<i64>| rfc3339_ms(v, chrono::SecondsFormat::Secs);
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}  {:<24} {}",
            s.job_type,
            s.attempts,
            s.finished,
            s.failed,
            s.dead,
            s.canceled,
            s.success_rate
                .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.max_ms),
            at(s.last_success_ms),
            at(s.last_failure_ms)
        );
    }
    Ok(())
}
