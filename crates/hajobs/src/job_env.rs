//! A command's environment: declared, never the daemon's whole one.
//!
//! A daemon holds secrets in its environment (the admin and read tokens, the
//! Cassandra credentials) that a job must never see: a job that prints its
//! environment would publish them in its output and status. So a command
//! starts from an empty environment and gets only:
//!
//! - [`BASE`]: `PATH`, `HOME`, `LANG`, `TZ` and every `LC_*` of the daemon;
//! - the `HAJOBS_*` variables of its attempt (job type, job id, …);
//! - its job's `env = { … }` table;
//! - the daemon's variables named in its `inherit_env = ["…"]`.
//!
//! [`SECRETS`] can be neither inherited nor set: the configuration refuses
//! them by name.

use std::ffi::OsString;

/// What every command inherits from the daemon, when the daemon has it.
pub(crate) const BASE: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// The daemon's own secrets: never in a command's environment.
pub(crate) const SECRETS: &[&str] = &[
    "HAJOBS_ADMIN_TOKEN",
    "HAJOBS_READ_TOKEN",
    "HAJOBS_CASSANDRA_USER",
    "HAJOBS_CASSANDRA_PASSWORD",
];

/// Why a variable name cannot be declared, if it cannot.
pub(crate) fn refuse(name: &str) -> Option<String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(format!(
            "`{}` is not a variable name (letters, digits and `_`, not starting with a digit)",
            name.escape_default()
        ));
    }
    SECRETS
        .contains(&name)
        .then(|| format!("`{name}` is one of the daemon's secrets: it never reaches a job"))
}

/// The daemon's variables a command gets: [`BASE`], `LC_*` and `inherit`.
pub(crate) fn inherited(inherit: &[String]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| {
            let Some(name) = name.to_str() else {
                return false;
            };
            !SECRETS.contains(&name)
                && (BASE.contains(&name)
                    || name.starts_with("LC_")
                    || inherit.iter().any(|i| i == name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_secrets_refused() {
        assert_eq!(refuse("DATABASE_URL"), None);
        assert_eq!(refuse("_x1"), None);
        for bad in ["", "1X", "A=B", "A B", "A\0"] {
            assert!(refuse(bad).is_some(), "{bad:?}");
        }
        for secret in SECRETS {
            assert!(refuse(secret).unwrap().contains("secret"), "{secret}");
        }
    }

    #[test]
    fn only_the_base_and_the_named_variables_are_inherited() {
        // The test process's own environment: PATH is always there.
        let names: Vec<String> = inherited(&["CARGO".to_owned()])
            .into_iter()
            .map(|(n, _)| n.into_string().unwrap())
            .collect();
        assert!(names.iter().any(|n| n == "PATH"), "{names:?}");
        for n in &names {
            assert!(
                BASE.contains(&n.as_str()) || n.starts_with("LC_") || n == "CARGO",
                "{n} inherited"
            );
        }
    }
}
