//! A job's `params`, `payload` and `cron_params`: what its triggers may
//! carry, made into the scheduler's [`ArgsSpec`] and checked at load.

use std::collections::BTreeMap;

use hajobs_scheduler::{ArgsSpec, ParamSpec, Pattern};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// One entry of `params = { NAME = { … } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    required: Option<bool>,
    pattern: Option<String>,
    default: Option<String>,
    description: Option<String>,
}

/// The three fields of a job that say what its triggers carry.
pub(super) struct RawArgs<'a> {
    pub(super) params: Option<&'a Spanned<BTreeMap<String, RawParam>>>,
    pub(super) payload: Option<&'a Spanned<String>>,
    pub(super) cron_params: Option<&'a Spanned<BTreeMap<String, String>>>,
}

/// The declaration of job `job`, checked as a whole (`cron`: whether it
/// has a schedule, whose firings must then give every required parameter).
pub(super) fn args_spec(
    src: &Source<'_>,
    job: &str,
    raw: RawArgs<'_>,
    cron: bool,
) -> Result<ArgsSpec, ConfigError> {
    let mut spec = ArgsSpec::default();
    if let Some(params) = raw.params {
        for (name, p) in params.get_ref() {
            let field = format!("params.{name}");
            if p.required == Some(true) && p.default.is_some() {
                return Err(src.error(
                    params,
                    Some(job),
                    &field,
                    "`required = true` with a `default`: a required parameter is always given, so its default would never apply",
                ));
            }
            let pattern =
                match &p.pattern {
                    Some(text) => Some(Pattern::new(text).map_err(|e| {
                        src.error(params, Some(job), &format!("{field}.pattern"), e)
                    })?),
                    None => None,
                };
            spec.params.insert(
                name.clone(),
                ParamSpec {
                    required: p.required.unwrap_or(false),
                    pattern,
                    default: p.default.clone(),
                    description: p.description.clone(),
                },
            );
        }
    }
    if let Some(p) = raw.payload {
        spec.payload = src.choice(p, Some(job), "payload")?;
    }
    if let Some(c) = raw.cron_params {
        if !cron {
            return Err(src.error(c, Some(job), "cron_params", "given without `cron`"));
        }
        spec.cron_params = c.get_ref().clone();
    }
    if let Some(problem) = spec.problem(cron) {
        let (at, field) = match (raw.cron_params, raw.params) {
            (Some(c), _) if problem.starts_with("cron_params") => (c.span(), "cron_params"),
            (_, Some(p)) => (p.span(), "params"),
            (Some(c), None) => (c.span(), "cron_params"),
            (None, None) => return Ok(spec),
        };
        let problem = problem
            .strip_prefix("cron_params: ")
            .unwrap_or(&problem)
            .to_owned();
        return Err(src.error(&Spanned::new(at, ()), Some(job), field, problem));
    }
    Ok(spec)
}
