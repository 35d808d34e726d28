//! Stale `DisruptionTarget` conditions: Kubernetes' `syncStalePodDisruption`. The eviction
//! subresource marks a Pod before deleting it; when the deletion never came (a failed
//! precondition, a finalizer), the mark is taken back after a while.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::MetaExt;
use capstan_api::k8s_openapi::api::core::v1::{Pod, PodCondition};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::jiff::{SignedDuration, Timestamp};
use capstan_api::kube_core::params::PostParams;
use capstan_api::{Api, Client};
use capstan_controller::runtime::ShutdownHandle;
use capstan_watch::Cache;

use super::{now, SharedClock};

/// How long a `DisruptionTarget` condition may stay `True` on a Pod that is not being
/// deleted before it is considered stale (Kubernetes' `stalePodDisruptionTimeout`).
pub const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// How often the Pod cache is scanned for stale conditions.
pub const STALE_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// The condition type the eviction subresource sets.
const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// The reason of the conditions the kubelet sets, never stale.
const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";

/// The companion task resetting stale conditions.
pub(super) struct StaleConditions {
    pub(super) client: Arc<dyn Client>,
    pub(super) pods: Cache<Pod>,
    pub(super) clock: SharedClock,
}

/// Kubernetes' `nonTerminatingPodHasStaleDisruptionCondition`: whether `pod`'s condition
/// is stale at `now`.
pub(super) fn is_stale(pod: &Pod, now: Timestamp) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_TARGET)
    else {
        return false;
    };
    if condition.status != "True" || condition.reason.as_deref() == Some(TERMINATION_BY_KUBELET) {
        return false;
    }
    let since = condition
        .last_transition_time
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let timeout = SignedDuration::from_secs(STALE_POD_DISRUPTION_TIMEOUT.as_secs() as i64);
    since
        .checked_add(timeout)
        .is_ok_and(|stale_at| stale_at <= now)
}

impl StaleConditions {
    /// Scans every [`STALE_CHECK_PERIOD`] until the controller shuts down; a failed write is
    /// tried again at the next scan.
    pub(super) async fn run(self, handle: ShutdownHandle) {
        loop {
            tokio::select! {
                _ = handle.wait() => return,
                _ = tokio::time::sleep(STALE_CHECK_PERIOD) => {}
            }
            let now = now(&self.clock);
            for pod in self.pods.list().iter().filter(|p| is_stale(p, now)) {
                if let Err(error) = self.reset(pod, now).await {
                    tracing::debug!(pod = %pod.name_str(), %error, "disruption: resetting a stale DisruptionTarget condition failed");
                }
            }
        }
    }

    /// Sets the condition `False` (Kubernetes' `UpdatePodCondition` with no reason), with the
    /// Pod's `resourceVersion`, so a Pod that changed meanwhile is looked at again.
    async fn reset(&self, pod: &Pod, now: Timestamp) -> Result<(), capstan_api::Error> {
        let mut updated = pod.clone();
        let conditions = updated
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new);
        if let Some(condition) = conditions.iter_mut().find(|c| c.type_ == DISRUPTION_TARGET) {
            *condition = PodCondition {
                type_: DISRUPTION_TARGET.into(),
                status: "False".into(),
                last_transition_time: Some(Time(now)),
                ..PodCondition::default()
            };
        }
        Api::<Pod>::namespaced(self.client.clone(), pod.namespace_str())
            .update_status(&PostParams::default(), &updated)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use capstan_api::k8s_openapi::api::core::v1::PodStatus;

    use super::*;

    fn marked(reason: &str, at: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: DISRUPTION_TARGET.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn an_eviction_mark_goes_stale_after_two_minutes_unless_the_pod_is_going() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let pod = marked("EvictionByEvictionAPI", 1_700_000_000);
        assert!(!is_stale(&pod, at(119)));
        assert!(is_stale(&pod, at(120)));
        let mut deleting = pod.clone();
        deleting.metadata.deletion_timestamp = Some(Time(at(10)));
        assert!(!is_stale(&deleting, at(500)));
        let mut finished = pod.clone();
        finished.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(!is_stale(&finished, at(500)));
        assert!(!is_stale(
            &marked(TERMINATION_BY_KUBELET, 1_700_000_000),
            at(500)
        ));
    }
}
