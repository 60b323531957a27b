//! What a trigger carries: checked against its job's declaration and
//! recorded when it is triggered, read back by each attempt of it.

use super::*;

impl JobManager {
    /// What `given` resolves to for `spec`'s job ([`ArgsSpec::resolve`]):
    /// refused, naming the parameter, before anything is recorded.
    ///
    /// [`ArgsSpec::resolve`]: crate::ArgsSpec::resolve
    pub(super) fn resolve_args(
        spec: &JobSpec,
        given: TriggerArgs,
    ) -> Result<TriggerArgs, ManagerError> {
        spec.args
            .resolve(given)
            .map_err(|problem| ManagerError::BadArgs {
                job_type: spec.job_type.to_string(),
                problem,
            })
    }

    /// Records what `trigger_id` carries, for its later attempts (retries,
    /// re-runs, handovers, a queued start elsewhere). A trigger given
    /// nothing records nothing: its attempts resolve the same defaults.
    pub(super) async fn record_args(
        &self,
        spec: &JobSpec,
        trigger_id: TriggerId,
        args: &TriggerArgs,
        given_by: &str,
    ) -> Result<(), ManagerError> {
        if args.is_empty() {
            return Ok(());
        }
        let store = self.args_store()?;
        store
            .write(trigger_id, spec.job_type.as_str(), args, given_by)
            .await?;
        Ok(())
    }

    fn args_store(&self) -> Result<&Arc<ArgsStore>, ManagerError> {
        // Prepared whenever some registered job takes arguments.
        self.inner
            .args
            .as_ref()
            .ok_or_else(|| ManagerError::Policy {
                job_type: String::new(),
                problem: "no registered job takes parameters or a payload".into(),
            })
    }

    /// What an attempt of `trigger_id` sees: `known` when the trigger was
    /// resolved here, else what was recorded for it, else — nothing
    /// recorded — its job's cron parameters for a cron firing, or the
    /// defaults. Checked again against the job's declaration as it is now.
    pub(super) async fn args_for(
        &self,
        spec: &JobSpec,
        trigger_id: TriggerId,
        known: Option<TriggerArgs>,
    ) -> Result<Arc<TriggerArgs>, String> {
        if let Some(known) = known {
            return Ok(Arc::new(known));
        }
        if !spec.args.takes_any() && !self.inner.follow_up_targets.contains(&spec.job_type) {
            return Ok(Arc::default());
        }
        let store = self.args_store().map_err(|e| e.to_string())?;
        let given = match store.read(trigger_id).await.map_err(|e| format!("{e:#}"))? {
            Some(stored) => stored.args,
            None if trigger_id.is_firing_of(spec.job_type.as_str()) => {
                TriggerArgs::from_params(spec.args.cron_params.clone())
            }
            None => TriggerArgs::none(),
        };
        spec.args
            .resolve(given)
            .map(Arc::new)
            .map_err(|problem| format!("the parameters of trigger {trigger_id}: {problem}"))
    }

    /// What a cron firing of `job_type` carries: its cron parameters and
    /// the defaults (checked when the manager was built); `None` for a job
    /// that takes nothing.
    pub(super) fn firing_args(&self, job_type: &JobType) -> Option<TriggerArgs> {
        let spec = &self.registered(job_type.as_str()).ok()?.spec;
        spec.args.takes_any().then(|| {
            spec.args
                .resolve(TriggerArgs::from_params(spec.args.cron_params.clone()))
                .unwrap_or_default()
        })
    }
}
