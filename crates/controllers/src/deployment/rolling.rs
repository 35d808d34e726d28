//! The RollingUpdate strategy: scaling the new ReplicaSet up and the old ones down within
//! `maxSurge` and `maxUnavailable`.

use super::*;

impl DeploymentReconciler {
    // -----------------------------------------------------------------------------------
    // Rollouts
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `rolloutRolling`.
    pub(super) async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut split = self.split_and_sync_revision(d, rs_list, true).await?;
        if self.reconcile_new_replica_set(d, &mut split).await? {
            return self.sync_rollout_status(d, &split).await;
        }
        if self.reconcile_old_replica_sets(d, &mut split).await? {
            return self.sync_rollout_status(d, &split).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &split.old).await?;
        }
        self.sync_rollout_status(d, &split).await
    }

    /// Kubernetes' `reconcileNewReplicaSet`.
    pub(super) async fn reconcile_new_replica_set(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<bool, Error> {
        let Some(new_rs) = split.new_rs.clone() else {
            return Ok(false);
        };
        let desired = replicas(d);
        let current = rs_replicas(&new_rs);
        let target = if current == desired {
            return Ok(false);
        } else if current > desired {
            desired
        } else {
            new_rs_new_replicas(d, &split.all(), &new_rs)
        };
        let (scaled, updated) = self.scale_and_record(d, &new_rs, target).await?;
        split.new_rs = Some(updated);
        Ok(scaled)
    }

    /// Kubernetes' `reconcileOldReplicaSets`.
    pub(super) async fn reconcile_old_replica_sets(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<bool, Error> {
        let Some(new_rs) = split.new_rs.clone() else {
            return Ok(false);
        };
        let old_pods = util::replica_count(split.old.iter().filter(|rs| is_active(rs)));
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = util::replica_count(split.all());
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable =
            rs_replicas(&new_rs) - rs_available(&new_rs).min(rs_replicas(&new_rs));
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self
            .cleanup_unhealthy_replicas(d, split, max_scaled_down)
            .await?;
        let scaled = self.scale_down_old_for_rolling_update(d, split).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Kubernetes' `cleanupUnhealthyReplicas`: first drops old replicas that are not
    /// available, oldest ReplicaSet first, up to `max_cleanup`.
    pub(super) async fn cleanup_unhealthy_replicas(
        &self,
        d: &Deployment,
        split: &mut Split,
        max_cleanup: i32,
    ) -> Result<i32, Error> {
        let mut old: Vec<ReplicaSet> = split
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        old.sort_by(by_creation);
        let mut total = 0;
        for rs in old {
            if total >= max_cleanup {
                break;
            }
            let size = rs_replicas(&rs);
            // A ReplicaSet reporting as many available as asked (or more: a resize not yet
            // acted on) has nothing unhealthy to drop.
            if size == 0 || size <= rs_available(&rs) {
                continue;
            }
            let count = (max_cleanup - total).min(size - rs_available(&rs));
            let (_, updated) = self.scale_and_record(d, &rs, size - count).await?;
            replace(split, updated);
            total += count;
        }
        Ok(total)
    }

    /// Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`: scales old ReplicaSets down,
    /// oldest first, as far as the available Pods above `replicas - maxUnavailable` allow.
    pub(super) async fn scale_down_old_for_rolling_update(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<i32, Error> {
        let min_available = replicas(d) - max_unavailable(d);
        let available: i32 = split
            .all()
            .into_iter()
            .map(|rs| rs_available(rs).min(rs_replicas(rs)))
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let mut old: Vec<ReplicaSet> = split
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        old.sort_by(by_creation);
        let wanted = available - min_available;
        let mut total = 0;
        for rs in old {
            if total >= wanted {
                break;
            }
            let size = rs_replicas(&rs);
            if size == 0 {
                continue;
            }
            let count = size.min(wanted - total);
            let (_, updated) = self.scale_and_record(d, &rs, size - count).await?;
            replace(split, updated);
            total += count;
        }
        Ok(total)
    }
}
