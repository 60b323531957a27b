//! Jobs that follow jobs: once an attempt's ending is known, and before its
//! final status is written, each job its `on_success` / `on_failure` names
//! is recorded as a one-time trigger due now (`manager/scheduled`: claimed
//! once, by whichever replica), carrying the parent's parameters (those
//! the follow-up declares) and naming the parent attempt and the chain. So
//! a follow-up fires once per parent attempt, also when the parent's replica
//! dies right after the attempt ended.

use super::*;
use hajobs_core::Parent;

use crate::attempt::BeforeFinal;

impl JobManager {
    /// What an attempt of `spec` does before its final status: records its
    /// follow-ups (none for a job without them).
    pub(super) fn follow_up_hook(&self, spec: &JobSpec, ctx: &JobContext) -> Option<BeforeFinal> {
        if spec.on_success.is_empty() && spec.on_failure.is_empty() {
            return None;
        }
        let manager = self.clone();
        let (on_success, on_failure) = (spec.on_success.clone(), spec.on_failure.clone());
        let parent = Parent {
            job_type: ctx.job_type.to_string(),
            job_id: ctx.job_id,
            chain_id: ctx
                .args()
                .parent
                .as_ref()
                .map_or(ctx.trigger_id, |p| p.chain_id),
        };
        let params = ctx.params().clone();
        Some(Box::new(move |state: JobState| {
            Box::pin(async move {
                let next = match state {
                    JobState::Failed => on_failure,
                    s if s.result() == JobResult::Success => on_success,
                    _ => return,
                };
                for child in next {
                    manager.follow(&child, &parent, &params).await;
                }
            })
        }))
    }

    /// Records `child` as a one-time trigger due now, following `parent`.
    async fn follow(&self, child: &JobType, parent: &Parent, params: &BTreeMap<String, String>) {
        let Ok(spec) = self.spec(child.as_str()) else {
            return;
        };
        let given = TriggerArgs {
            params: params
                .iter()
                .filter(|(name, _)| spec.args.params.contains_key(*name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            payload: None,
            parent: Some(parent.clone()),
        };
        let trigger_id = TriggerId::new();
        let by = format!("follow-up of {} {}", parent.job_type, parent.job_id);
        let recorded = async {
            let args = Self::resolve_args(spec, given)?;
            self.record_args(spec, trigger_id, &args, &by).await?;
            self.inner
                .scheduled
                .schedule(trigger_id, child.as_str(), SystemTime::now(), &by)
                .await?;
            Ok::<_, ManagerError>(())
        }
        .await;
        match recorded {
            Ok(()) => {
                tracing::info!(job_type = %child, %trigger_id, parent = %parent.job_id, chain = %parent.chain_id, "follow-up recorded");
                self.wake_scheduled();
            }
            Err(e) => {
                // Never dropped silently: the follow-up's history says why.
                tracing::error!(job_type = %child, parent = %parent.job_id, error = %e, "follow-up not recorded");
                let status = JobStatus::never_ran(
                    child.clone(),
                    trigger_id,
                    JobState::Failed,
                    Some(self.inner.node.clone()),
                    serde_json::json!({
                        hajobs_core::status::content_keys::REASON: format!("{by}: not triggered: {e}"),
                        "parent_job_id": parent.job_id.to_string(),
                        "chain_id": parent.chain_id.to_string(),
                    }),
                );
                let _ = self.inner.statuses.write(&status).await;
            }
        }
    }
}
