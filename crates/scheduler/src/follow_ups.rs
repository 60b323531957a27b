//! Jobs that follow jobs (`on_success`, `on_failure`): the one rule that
//! checks a set of jobs' follow-ups — every one names a registered job, and
//! no chain leads back to where it began.

use std::collections::{BTreeMap, BTreeSet};

use hajobs_core::JobType;

use crate::spec::JobSpec;

/// What is wrong with the follow-ups of `specs`, if anything: the job and
/// the problem (an unknown job named, or a cycle, spelled out).
pub fn follow_up_problem<'a>(
    specs: impl IntoIterator<Item = &'a JobSpec>,
) -> Option<(JobType, String)> {
    let specs: BTreeMap<&JobType, &JobSpec> = specs.into_iter().map(|s| (&s.job_type, s)).collect();
    for spec in specs.values() {
        for (field, next) in [
            ("on_success", &spec.on_success),
            ("on_failure", &spec.on_failure),
        ] {
            if let Some(unknown) = next.iter().find(|n| !specs.contains_key(n)) {
                return Some((
                    spec.job_type.clone(),
                    format!("{field} names `{unknown}`, which is not a configured job"),
                ));
            }
        }
    }
    // A cycle: a walk from a job that comes back to a job on its path.
    fn walk<'a>(
        at: &'a JobType,
        specs: &BTreeMap<&'a JobType, &'a JobSpec>,
        path: &mut Vec<&'a JobType>,
        done: &mut BTreeSet<&'a JobType>,
    ) -> Option<Vec<&'a JobType>> {
        if let Some(i) = path.iter().position(|p| *p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        let spec = specs.get(at)?;
        for next in spec.on_success.iter().chain(&spec.on_failure) {
            if let Some(c) = walk(next, specs, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in specs.keys() {
        if let Some(cycle) = walk(start, &specs, &mut Vec::new(), &mut done) {
            let shown: Vec<&str> = cycle.iter().map(|j| j.as_str()).collect();
            return Some((
                cycle[0].clone(),
                format!("its follow-ups lead back to it: {}", shown.join(" → ")),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, success: &[&str], failure: &[&str]) -> JobSpec {
        JobSpec::new(name, name)
            .unwrap()
            .on_success(success)
            .unwrap()
            .on_failure(failure)
            .unwrap()
    }

    #[test]
    fn unknown_jobs_and_cycles_are_named() {
        let ok = [
            job("extract", &["load"], &["notify"]),
            job("load", &[], &["notify"]),
            job("notify", &[], &[]),
        ];
        assert_eq!(follow_up_problem(&ok), None);
        let unknown = [job("extract", &["lod"], &[])];
        let (at, problem) = follow_up_problem(&unknown).unwrap();
        assert_eq!(at.as_str(), "extract");
        assert!(problem.contains("on_success names `lod`"), "{problem}");
        let cycle = [
            job("a", &["b"], &[]),
            job("b", &[], &["c"]),
            job("c", &["a"], &[]),
        ];
        let (_, problem) = follow_up_problem(&cycle).unwrap();
        assert!(problem.contains("a → b → c → a"), "{problem}");
        let own = [job("a", &["a"], &[])];
        assert!(follow_up_problem(&own).unwrap().1.contains("a → a"));
    }
}
