//! A job's `command`, or its `[[job.step]]`s: commands run in order within
//! one attempt, under the job's one lease.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, RawJob, Source};

/// One `[[job.step]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: String,
    command: Vec<String>,
    timeout: Option<Spanned<String>>,
    retry_count: Option<u32>,
}

/// One step of a job, validated.
#[derive(Debug, Clone)]
pub(crate) struct StepConfig {
    /// Its name (`HAJOBS_STEP`, the status's `step 2 of 3: NAME`).
    pub(crate) name: String,
    /// Its program and arguments.
    pub(crate) command: Vec<String>,
    /// Ended (SIGTERM, then SIGKILL after the cancel grace) and failed after this long.
    pub(crate) timeout: Option<Duration>,
    /// How often a failed run of it is tried again within the attempt.
    pub(crate) retry_count: u32,
}

/// The most steps a job may have.
const MAX_STEPS: usize = 64;

fn command_problem(command: &[String]) -> Option<&'static str> {
    (command.is_empty() || command[0].trim().is_empty())
        .then_some("is empty: give the program and its arguments, e.g. [\"sh\", \"-c\", \"…\"]")
}

/// The job's command and steps: exactly one of `command` and
/// `[[job.step]]`; steps with unique, non-empty names and commands.
pub(super) fn command_or_steps(
    src: &Source<'_>,
    name: &str,
    job: &RawJob,
) -> Result<(Vec<String>, Vec<StepConfig>), ConfigError> {
    match (&job.command, &job.step) {
        (Some(command), None) => {
            if let Some(problem) = command_problem(command.get_ref()) {
                return Err(src.error(command, Some(name), "command", problem));
            }
            Ok((command.get_ref().clone(), Vec::new()))
        }
        (None, Some(raw)) => {
            let list = raw.get_ref();
            if list.is_empty() || list.len() > MAX_STEPS {
                return Err(src.error(
                    raw,
                    Some(name),
                    "step",
                    format!("{} steps: give 1 to {MAX_STEPS}", list.len()),
                ));
            }
            let mut steps: Vec<StepConfig> = Vec::with_capacity(list.len());
            for (i, r) in list.iter().enumerate() {
                let field = format!("step[{i}]");
                if r.name.trim().is_empty() || r.name.chars().any(char::is_control) {
                    return Err(src.error(
                        raw,
                        Some(name),
                        &format!("{field}.name"),
                        "is empty or holds a control character",
                    ));
                }
                if steps.iter().any(|s| s.name == r.name) {
                    return Err(src.error(
                        raw,
                        Some(name),
                        &format!("{field}.name"),
                        format!("step `{}` is defined twice", r.name.escape_debug()),
                    ));
                }
                if let Some(problem) = command_problem(&r.command) {
                    return Err(src.error(raw, Some(name), &format!("{field}.command"), problem));
                }
                let timeout = match &r.timeout {
                    Some(t) => Some(src.duration(t, Some(name), &format!("{field}.timeout"))?),
                    None => None,
                };
                steps.push(StepConfig {
                    name: r.name.clone(),
                    command: r.command.clone(),
                    timeout,
                    retry_count: r.retry_count.unwrap_or(0),
                });
            }
            Ok((steps[0].command.clone(), steps))
        }
        (Some(command), Some(_)) => Err(src.error(
            command,
            Some(name),
            "command",
            "given with `[[job.step]]`: a job runs either one command or its steps",
        )),
        (None, None) => Err(src.error(
            &job.name,
            Some(name),
            "command",
            "missing: give `command = [\"program\", …]` or `[[job.step]]` entries",
        )),
    }
}
