//! Rollout status and progress: the status written after each sync, the `Progressing`
//! condition and its deadline, and when to look at a stuck rollout again.

use super::*;

impl DeploymentReconciler {
    // -----------------------------------------------------------------------------------
    // Status
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `syncRolloutStatus`: the status with the `Progressing` estimate and the
    /// ReplicaSets' failures; written if it changed, else the Deployment is looked at again
    /// when its progress deadline would pass.
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        split: &Split,
    ) -> Result<Action, Error> {
        let now = self.now();
        let all = split.all();
        let new_rs = split.new_rs.as_ref();
        let mut status = calculate_status(&all, new_rs, d, now);
        let deadline = progress_deadline(d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let old_status = d.status.clone().unwrap_or_default();
        let current = get_condition(&old_status, "Progressing").cloned();
        let complete_already = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref())
                == Some(reasons::NEW_RS_AVAILABLE);
        if deadline.is_some() && !complete_already {
            let subject = |what: &str| match new_rs {
                Some(rs) => format!("ReplicaSet \"{}\" {what}", name_of(&rs.metadata)),
                None => format!("Deployment \"{}\" {what}", name_of(&d.metadata)),
            };
            if deployment_complete(d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reasons::NEW_RS_AVAILABLE,
                        subject("has successfully progressed."),
                        now,
                    ),
                );
            } else if deployment_progressing(d, &status) {
                let mut condition = new_condition(
                    "Progressing",
                    "True",
                    reasons::RS_UPDATED,
                    subject("is progressing."),
                    now,
                );
                if let Some(current) = &current {
                    if compat::is_true(&current.status) {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, condition);
            } else if deployment_timed_out(d, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        reasons::TIMED_OUT,
                        subject("has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        match replica_failure(&all, new_rs) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&status) {
            return Ok(self.requeue_stuck(d, &status, now));
        }
        d.status = Some(status);
        self.persist(d, false).await?;
        Ok(Action::await_change())
    }

    /// Kubernetes' `requeueStuckDeployment`: when to look again at a rollout that made no
    /// progress, so the deadline is noticed.
    pub(super) fn requeue_stuck(
        &self,
        d: &Deployment,
        status: &DeploymentStatus,
        now: Timestamp,
    ) -> Action {
        let (Some(deadline), Some(current)) = (
            progress_deadline(d),
            d.status
                .as_ref()
                .and_then(|s| get_condition(s, "Progressing")),
        ) else {
            return Action::await_change();
        };
        if deployment_complete(d, status) || current.reason.as_deref() == Some(reasons::TIMED_OUT) {
            return Action::await_change();
        }
        let Some(updated) = current.last_update_time.as_ref() else {
            return Action::await_change();
        };
        let due_ms =
            (updated.0.as_millisecond() + i64::from(deadline) * 1000) - now.as_millisecond();
        if due_ms < 1000 {
            // Almost due: look again shortly (Kubernetes requeues rate-limited).
            return Action::requeue(Duration::from_millis(due_ms.clamp(100, 1000) as u64));
        }
        Action::requeue(Duration::from_millis(due_ms as u64))
    }
}
