//! [`TriggerArgs`]: what one trigger carries to its job — named parameters
//! and a JSON payload — with the limits every carrier enforces.
//!
//! Whether a job takes them, and which, is the job's declaration (the
//! scheduler's `ArgsSpec`); the shapes and sizes below hold for every
//! trigger, so that no trigger, and no row written by another tool, makes
//! an attempt's memory or environment grow without bound.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ids::{JobId, TriggerId};

/// The most parameters one trigger carries.
pub const MAX_PARAMS: usize = 32;
/// The longest parameter name.
pub const MAX_PARAM_NAME_BYTES: usize = 64;
/// The longest parameter value, in bytes of UTF-8.
pub const MAX_PARAM_VALUE_BYTES: usize = 1024;
/// The largest payload, as compact JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The parameters and payload of one trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerArgs {
    /// Parameter name → value.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The payload, any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// For a follow-up (`on_success`, `on_failure`): the attempt it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
}

/// The attempt a follow-up's trigger follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parent {
    /// Its job type.
    pub job_type: String,
    /// The attempt.
    pub job_id: JobId,
    /// The trigger that began the chain (the first parent's).
    pub chain_id: TriggerId,
}

impl TriggerArgs {
    /// Nothing at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parameters from `(name, value)` pairs, no payload.
    pub fn from_params<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            params: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            payload: None,
            parent: None,
        }
    }

    /// The same, carrying `payload`.
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Whether it carries neither parameters nor a payload.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty() && self.payload.is_none() && self.parent.is_none()
    }

    /// The payload as compact JSON text (what a command reads on its
    /// standard input).
    pub fn payload_text(&self) -> Option<String> {
        self.payload.as_ref().map(Value::to_string)
    }

    /// The problem with its shape, if any, naming the parameter: too many
    /// parameters, a name that is not `[a-z][a-z0-9_]*` (at most
    /// [`MAX_PARAM_NAME_BYTES`]), a value longer than
    /// [`MAX_PARAM_VALUE_BYTES`] or holding a control character, a payload
    /// larger than [`MAX_PAYLOAD_BYTES`]. Values never appear in it.
    pub fn shape_problem(&self) -> Option<String> {
        if self.params.len() > MAX_PARAMS {
            return Some(format!(
                "{} parameters given; at most {MAX_PARAMS}",
                self.params.len()
            ));
        }
        for (name, value) in &self.params {
            if let Some(problem) = name_problem(name) {
                return Some(problem);
            }
            if value.len() > MAX_PARAM_VALUE_BYTES {
                return Some(format!(
                    "parameter `{name}`: value of {} bytes; at most {MAX_PARAM_VALUE_BYTES}",
                    value.len()
                ));
            }
            if value.chars().any(char::is_control) {
                return Some(format!(
                    "parameter `{name}`: the value holds a control character (a newline, a tab, NUL, …)"
                ));
            }
        }
        let size = self.payload_text().map_or(0, |t| t.len());
        if size > MAX_PAYLOAD_BYTES {
            return Some(format!(
                "payload of {size} bytes (as compact JSON); at most {MAX_PAYLOAD_BYTES}"
            ));
        }
        None
    }
}

/// The problem with a parameter name, if any: it must be
/// `[a-z][a-z0-9_]*`, at most [`MAX_PARAM_NAME_BYTES`] (so that
/// `HAJOBS_PARAM_<NAME>` is a plain environment variable).
pub fn name_problem(name: &str) -> Option<String> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_PARAM_NAME_BYTES
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (!valid).then(|| {
        format!(
            "parameter name `{}` is not valid: a lowercase letter, then lowercase letters, digits or `_`, at most {MAX_PARAM_NAME_BYTES} bytes",
            name.escape_debug()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> TriggerArgs {
        TriggerArgs::from_params(pairs.iter().copied())
    }

    #[test]
    fn shapes_are_checked_and_named() {
        assert_eq!(params(&[("date", "2026-11-28")]).shape_problem(), None);
        let bad_name = params(&[("Date", "x")]).shape_problem().unwrap();
        assert!(bad_name.contains("`Date`"), "{bad_name}");
        assert!(params(&[("1a", "x")]).shape_problem().is_some());
        assert!(params(&[("a-b", "x")]).shape_problem().is_some());
        let newline = params(&[("region", "eu\nHAJOBS_X=1")])
            .shape_problem()
            .unwrap();
        assert!(
            newline.contains("`region`") && !newline.contains("eu"),
            "{newline}"
        );
        let long = "x".repeat(MAX_PARAM_VALUE_BYTES + 1);
        assert!(
            params(&[("a", &long)])
                .shape_problem()
                .unwrap()
                .contains("`a`")
        );
        let many: Vec<(String, String)> = (0..=MAX_PARAMS)
            .map(|i| (format!("p{i}"), "v".to_owned()))
            .collect();
        let many = TriggerArgs::from_params(many);
        assert!(many.shape_problem().is_some());
        let big = TriggerArgs::none().with_payload(Value::String("y".repeat(MAX_PAYLOAD_BYTES)));
        assert!(big.shape_problem().unwrap().contains("payload"));
    }
}
