//! The Recreate strategy (old ReplicaSets to zero, then the new one up) and the cleanup of
//! old ReplicaSets beyond `revisionHistoryLimit`.

use super::*;
use capstan_api::ext::MetaExt;

impl DeploymentReconciler {
    /// Kubernetes' `rolloutRecreate`.
    pub(super) async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        pod_map: &HashMap<String, Vec<Arc<Pod>>>,
    ) -> Result<Action, Error> {
        // No new ReplicaSet yet: never scale up before the old ones are down.
        let mut split = self.split_and_sync_revision(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in split.old.clone().iter().filter(|rs| is_active(rs)) {
            let (scaled, updated) = self.scale_and_record(d, rs, 0).await?;
            scaled_down |= scaled;
            replace(&mut split, updated);
        }
        if scaled_down || old_pods_running(split.new_rs.as_ref(), &split.old, pod_map) {
            return self.sync_rollout_status(d, &split).await;
        }
        if split.new_rs.is_none() {
            split = self.split_and_sync_revision(d, rs_list, true).await?;
        }
        if let Some(new_rs) = split.new_rs.clone() {
            let (_, updated) = self.scale_and_record(d, &new_rs, replicas(d)).await?;
            split.new_rs = Some(updated);
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &split.old).await?;
        }
        self.sync_rollout_status(d, &split).await
    }

    /// Kubernetes' `cleanupDeployment`: deletes the oldest ReplicaSets beyond
    /// `revisionHistoryLimit`, if they are down to 0 replicas and settled.
    pub(super) async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.opt().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable.into_iter().take(diff as usize) {
            let settled = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                >= rs.metadata.generation.unwrap_or(0);
            if rs_actual(rs) != 0 || rs_replicas(rs) != 0 || !settled {
                continue;
            }
            tracing::debug!(replicaset = %name_of(&rs.metadata), "cleaning up an old replica set");
            let params = DeleteParams {
                preconditions: rs.metadata.uid.clone().map(|uid| {
                    capstan_api::kube_core::params::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }
                }),
                ..DeleteParams::default()
            };
            match self
                .rs_api(rs.namespace_str())
                .delete(name_of(&rs.metadata), &params)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
