//! [`ArgsSpec`]: what a job's triggers may carry — its declared
//! parameters ([`ParamSpec`]), whether a payload is taken
//! ([`PayloadPolicy`]), the static parameters of its cron firings — and
//! the one rule that turns what a trigger was given into what its attempts
//! see ([`ArgsSpec::resolve`]).

use std::collections::BTreeMap;

use hajobs_core::TriggerArgs;
use hajobs_core::trigger_args::{MAX_PARAMS, name_problem};

/// The longest pattern a parameter may declare.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// A compiled pattern a parameter's value must match in full.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`; a value must match all of it (as if it were
    /// written `^(?:source)$`). Linear-time matching: no pattern can make a
    /// check slow.
    pub fn new(source: &str) -> Result<Self, String> {
        if source.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "pattern of {} bytes; at most {MAX_PATTERN_BYTES}",
                source.len()
            ));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("pattern `{source}` is not a valid regular expression: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The pattern as declared.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches it in full.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// One declared parameter.
#[derive(Debug, Clone, Default)]
pub struct ParamSpec {
    /// A trigger must give it (a default is then pointless).
    pub required: bool,
    /// What its value must match in full.
    pub pattern: Option<Pattern>,
    /// Its value when a trigger does not give it.
    pub default: Option<String>,
    /// What it means, for `hajobs jobs` and the API.
    pub description: Option<String>,
}

/// Whether a job's triggers carry a JSON payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadPolicy {
    /// Never (the default): a trigger with a payload is refused.
    #[default]
    Forbidden,
    /// A trigger may carry one.
    Optional,
    /// Every trigger must carry one.
    Required,
}

impl PayloadPolicy {
    /// The word used in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// What a job's triggers may carry. The default takes nothing.
#[derive(Debug, Clone, Default)]
pub struct ArgsSpec {
    /// The declared parameters, by name.
    pub params: BTreeMap<String, ParamSpec>,
    /// Whether a payload is taken.
    pub payload: PayloadPolicy,
    /// The parameters every cron firing gives.
    pub cron_params: BTreeMap<String, String>,
}

impl ArgsSpec {
    /// Whether a trigger of the job can carry anything at all: if not, no
    /// attempt of it ever reads what its trigger carries.
    pub fn takes_any(&self) -> bool {
        !self.params.is_empty() || self.payload != PayloadPolicy::Forbidden
    }

    /// What is wrong with the declaration itself, if anything: a name that
    /// cannot be a parameter, too many, a default that fails its own
    /// pattern, cron parameters that are not declared or do not validate.
    /// `cron`: whether the job has a schedule (its firings must then
    /// satisfy every required parameter).
    pub fn problem(&self, cron: bool) -> Option<String> {
        if self.params.len() > MAX_PARAMS {
            return Some(format!(
                "{} parameters declared; at most {MAX_PARAMS}",
                self.params.len()
            ));
        }
        for (name, spec) in &self.params {
            if let Some(problem) = name_problem(name) {
                return Some(problem);
            }
            if let Some(default) = &spec.default {
                let one = TriggerArgs::from_params([(name.clone(), default.clone())]);
                if let Some(problem) = one
                    .shape_problem()
                    .or_else(|| self.value_problem(name, spec, default))
                {
                    return Some(format!("the default of {problem}"));
                }
            }
        }
        if !self.cron_params.is_empty() || cron {
            let firing = TriggerArgs::from_params(self.cron_params.clone());
            let checked = self.resolve(firing);
            if let Err(problem) = checked {
                return Some(format!("cron_params: {problem}"));
            }
        }
        None
    }

    /// What a trigger given `given` carries to its attempts: the given
    /// parameters checked against the declaration (unknown ones, a value
    /// that fails its pattern, a required one missing — each named) with
    /// the defaults of the others added; the payload checked against the
    /// payload policy. Every way of triggering goes through this one rule.
    pub fn resolve(&self, given: TriggerArgs) -> Result<TriggerArgs, String> {
        if let Some(problem) = given.shape_problem() {
            return Err(problem);
        }
        let TriggerArgs {
            mut params,
            payload,
            parent,
        } = given;
        for (name, value) in &params {
            let Some(spec) = self.params.get(name) else {
                return Err(match self.params.len() {
                    0 => format!("unknown parameter `{name}`: the job declares no parameters"),
                    _ => format!(
                        "unknown parameter `{name}` (declared: {})",
                        self.params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            };
            if let Some(problem) = self.value_problem(name, spec, value) {
                return Err(problem);
            }
        }
        for (name, spec) in &self.params {
            if params.contains_key(name) {
                continue;
            }
            match (&spec.default, spec.required) {
                (_, true) => return Err(format!("missing required parameter `{name}`")),
                (Some(default), false) => {
                    params.insert(name.clone(), default.clone());
                }
                (None, false) => {}
            }
        }
        match (self.payload, &payload) {
            (PayloadPolicy::Forbidden, Some(_)) => {
                return Err(
                    "a payload was given, but the job takes none (payload = \"forbidden\")".into(),
                );
            }
            (PayloadPolicy::Required, None) => {
                return Err(
                    "the job requires a payload (payload = \"required\"), none was given".into(),
                );
            }
            _ => {}
        }
        Ok(TriggerArgs {
            params,
            payload,
            parent,
        })
    }

    fn value_problem(&self, name: &str, spec: &ParamSpec, value: &str) -> Option<String> {
        let pattern = spec.pattern.as_ref()?;
        (!pattern.matches(value)).then(|| {
            format!(
                "parameter `{name}`: the value does not match its pattern `{}`",
                pattern.as_str()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ArgsSpec {
        ArgsSpec {
            params: BTreeMap::from([
                (
                    "date".to_owned(),
                    ParamSpec {
                        required: true,
                        pattern: Some(Pattern::new("[0-9]{4}-[0-9]{2}-[0-9]{2}").unwrap()),
                        ..ParamSpec::default()
                    },
                ),
                (
                    "region".to_owned(),
                    ParamSpec {
                        default: Some("eu".into()),
                        ..ParamSpec::default()
                    },
                ),
                ("note".to_owned(), ParamSpec::default()),
            ]),
            payload: PayloadPolicy::Optional,
            cron_params: BTreeMap::new(),
        }
    }

    fn given(pairs: &[(&str, &str)]) -> TriggerArgs {
        TriggerArgs::from_params(pairs.iter().copied())
    }

    #[test]
    fn defaults_are_added_and_given_values_kept() {
        let out = spec().resolve(given(&[("date", "2026-11-28")])).unwrap();
        assert_eq!(
            out.params,
            BTreeMap::from([
                ("date".to_owned(), "2026-11-28".to_owned()),
                ("region".to_owned(), "eu".to_owned()),
            ])
        );
        let out = spec()
            .resolve(given(&[("date", "2026-11-28"), ("region", "us")]))
            .unwrap();
        assert_eq!(out.params["region"], "us");
    }

    #[test]
    fn each_refusal_names_the_parameter() {
        let s = spec();
        let missing = s.resolve(given(&[])).unwrap_err();
        assert!(
            missing.contains("missing required parameter `date`"),
            "{missing}"
        );
        let unknown = s
            .resolve(given(&[("date", "2026-11-28"), ("colour", "red")]))
            .unwrap_err();
        assert!(unknown.contains("unknown parameter `colour`"), "{unknown}");
        assert!(unknown.contains("date, note, region"), "{unknown}");
        // The pattern must match in full, not somewhere in the value.
        let partial = s.resolve(given(&[("date", "x2026-11-28x")])).unwrap_err();
        assert!(
            partial.contains("`date`") && !partial.contains("x2026"),
            "{partial}"
        );
    }

    #[test]
    fn the_payload_follows_its_policy() {
        let mut s = spec();
        let with = |p| TriggerArgs {
            payload: p,
            ..given(&[("date", "2026-11-28")])
        };
        assert!(s.resolve(with(Some(json!({"a": 1})))).is_ok());
        s.payload = PayloadPolicy::Forbidden;
        assert!(
            s.resolve(with(Some(json!(1))))
                .unwrap_err()
                .contains("takes none")
        );
        s.payload = PayloadPolicy::Required;
        assert!(
            s.resolve(with(None))
                .unwrap_err()
                .contains("requires a payload")
        );
    }

    #[test]
    fn a_declaration_is_checked_once_at_load() {
        let mut s = spec();
        assert!(s.problem(false).is_none());
        // A scheduled job's firings must give every required parameter.
        assert!(s.problem(true).unwrap().contains("`date`"));
        s.cron_params = BTreeMap::from([("date".to_owned(), "2026-01-01".to_owned())]);
        assert!(s.problem(true).is_none());
        s.cron_params.insert("zone".into(), "x".into());
        assert!(
            s.problem(true)
                .unwrap()
                .contains("unknown parameter `zone`")
        );
        s.cron_params.remove("zone");
        s.params.get_mut("region").unwrap().pattern = Some(Pattern::new("[a-z]{3}").unwrap());
        assert!(
            s.problem(false)
                .unwrap()
                .contains("default of parameter `region`")
        );
        assert!(Pattern::new("(").is_err());
    }
}
