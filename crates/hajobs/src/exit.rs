//! [`CliError`]: an error and the exit code it gives, the one place the
//! exit codes are decided (0 success, 1 a runtime failure, 2 bad input,
//! 3 a lock held), and the rule for an attempt's final status.

use hajobs_core::{JobResult, JobStatus};

use crate::admin::{AdminError, ErrorKind};

/// An error of the CLI with its exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        self.code
    }

    /// Bad input: exit code 2.
    pub(crate) fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }

    /// A lock held by another attempt: exit code 3.
    pub(crate) fn locked(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 3,
            error: error.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        let error = error.into();
        // An admin operation's failure says its own kind.
        let code = match error.downcast_ref::<AdminError>().map(|e| e.kind) {
            Some(ErrorKind::BadInput | ErrorKind::UnknownJob) => 2,
            Some(ErrorKind::Locked) => 3,
            _ => 1,
        };
        Self { code, error }
    }
}

/// An attempt's final status as the CLI reports it: printed as JSON, and
/// exit 0 only for a successful end (FINISHED, SKIPPED, NO_ACTION_NEEDED, WARNING).
pub(crate) fn final_status(s: &JobStatus) -> Result<(), CliError> {
    println!("{}", serde_json::to_string(s)?);
    if s.result() != JobResult::Success {
        return Err(
            anyhow::anyhow!("{} attempt {} ended {}", s.job_type, s.job_id, s.state).into(),
        );
    }
    Ok(())
}
