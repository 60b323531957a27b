//! What each command does: one module per command group; each parses what
//! is left of its flags, asks the admin layer ([`crate::admin`]) and
//! renders the answer. The rules every command shares live here: one JSON
//! object per line, times in RFC 3339, who asks (`USER@HOST`), and the exit
//! code of an attempt's final status.

use std::time::SystemTime;

use hajobs_core::StatusEntry;

use crate::exit::CliError;
use crate::settings::Settings;

pub(crate) mod cluster;
pub(crate) mod jobs;
pub(crate) mod schema;
pub(crate) mod trigger;
pub(crate) mod work;

/// Who asks, for the records: `USER@HOST`.
pub(crate) fn requested_by() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    )
}

pub(crate) fn print_json_lines<T: serde::Serialize>(items: &[T]) -> Result<(), CliError> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

/// A time as the CLI prints it: RFC 3339, UTC, milliseconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Epoch milliseconds (as rows and views hold them) as the CLI prints a
/// time, at `precision`; `-` for none or one out of range.
pub(crate) fn rfc3339_ms(ms: Option<i64>, precision: chrono::SecondsFormat) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(precision, true))
}

pub(crate) fn print_entries(entries: &[StatusEntry], json: bool) -> Result<(), CliError> {
    if json {
        for e in entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<38} {:<17} {:<8} {:<20} TIME",
        "JOB TYPE", "JOB ID", "STATE", "RESULT", "OWNER"
    );
    for e in entries {
        match e {
            StatusEntry::Status(s) => println!(
                "{:<24} {:<38} {:<17} {:<8} {:<20} {}",
                s.job_type.as_str(),
                s.job_id,
                s.state.as_str(),
                s.result().as_str(),
                s.owner.as_ref().map(|o| o.as_str()).unwrap_or("-"),
                rfc3339(s.timestamp)
            ),
            StatusEntry::Corrupt { row, problem, .. } => {
                println!("CORRUPT ROW {row}: {problem}")
            }
        }
    }
    Ok(())
}
