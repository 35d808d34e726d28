//! The kubelet's admission of the Pods bound to its node: a Pod runs only if it fits the
//! node's allocatable resources beside the Pods already admitted, as Kubernetes' kubelet
//! checks when the scheduler was bypassed (`spec.nodeName` set by hand) or wrong.
//!
//! The main loop asks [`Admission::admit`] once per Pod, when it first gives the Pod a
//! worker, in the order the Pods arrive. A Pod that does not fit is rejected for good: its
//! worker writes phase `Failed` with reason `OutOf<resource>` and message `Pod was
//! rejected: Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity:
//! 2000` ([`write_rejection`]) and runs nothing; the rejection is also a Warning Event.
//! An admitted Pod's requests count until it reaches a terminal phase or is deleted
//! ([`Admission::release`]).
//!
//! The checks are the scheduler's `NodeResourcesFit` (`fitsRequest`), in its order: the Pod
//! count, then CPU, memory, ephemeral storage and the other resources the node
//! advertises (an extended resource the node does not list is left to whoever handles
//! it, as the kubelet does). Requests are [`pod_requests`]; a Pod requesting nothing
//! needs only a Pod slot.

use std::collections::{BTreeMap, HashMap};

use capstan_api::k8s_openapi::api::core::v1::{Pod, PodStatus};
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ResourceExt;
use capstan_api::quantity::parse_quantity;
use capstan_api::Api;
use capstan_controller::retry::retry_on_error;
use parking_lot::Mutex;

use crate::config::KubeletConfig;
use crate::error::{KubeletError, Result};
use crate::resources::{pod_requests, qos_class, ResourceAmounts};

/// Why a Pod was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdmissionError {
    /// The node lacks `resource` for the Pod: it requests `requested`, the admitted Pods
    /// `used`, and the node offers `capacity` (its allocatable amount). CPU counts in
    /// millicores, memory and storage in bytes. Final: the Pod is rejected, not retried.
    #[error("Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}")]
    InsufficientResource {
        /// `cpu`, `memory`, `pods`, `ephemeral-storage` or another resource's name.
        resource: String,
        /// What the Pod asks for.
        requested: i64,
        /// What the Pods admitted before it ask for.
        used: i64,
        /// What the node offers.
        capacity: i64,
    },
}

impl AdmissionError {
    /// The Pod's `status.reason`: `OutOfcpu`, `OutOfmemory`, `OutOfpods`, ...
    pub(crate) fn reason(&self) -> String {
        match self {
            AdmissionError::InsufficientResource { resource, .. } => format!("OutOf{resource}"),
        }
    }

    /// The Pod's `status.message`.
    pub(crate) fn status_message(&self) -> String {
        format!("Pod was rejected: {self}")
    }
}

/// The node's allocatable resources and the requests of the Pods admitted so far. One per
/// kubelet, shared by its main loop (which admits and releases) and its workers.
#[derive(Debug)]
pub(crate) struct Admission {
    allocatable: ResourceAmounts,
    allowed_pods: i64,
    memory_capacity: i64,
    /// Admitted Pods' requests by uid.
    admitted: Mutex<HashMap<String, ResourceAmounts>>,
}

fn quantities(list: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(name, amount)| (name.clone(), Quantity(amount.clone())))
        .collect()
}

fn value_of(list: &BTreeMap<String, String>, name: &str) -> Option<i64> {
    parse_quantity(list.get(name)?).ok().map(|q| q.value())
}

impl Admission {
    /// From the configuration: `allocatable` (the capacity when empty, as the Node reports
    /// it) and the memory capacity (for OOM score adjustments).
    pub(crate) fn new(config: &KubeletConfig) -> Self {
        let allocatable = if config.allocatable.is_empty() {
            &config.capacity
        } else {
            &config.allocatable
        };
        Admission {
            allocatable: ResourceAmounts::from_list(&quantities(allocatable)),
            allowed_pods: value_of(allocatable, "pods").unwrap_or(i64::MAX),
            memory_capacity: value_of(&config.capacity, "memory")
                .or_else(|| value_of(allocatable, "memory"))
                .unwrap_or(i64::MAX),
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// The node's memory capacity in bytes.
    pub(crate) fn memory_capacity(&self) -> i64 {
        self.memory_capacity
    }

    /// Admits `pod` if it fits beside the Pods admitted so far, and then counts its
    /// requests. Idempotent: a Pod already admitted is admitted again without counting
    /// twice. A Pod already terminal (`Succeeded`, `Failed`) or being deleted is let
    /// through without counting (nothing will start for it).
    pub(crate) fn admit(&self, pod: &Pod) -> std::result::Result<(), AdmissionError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let mut admitted = self.admitted.lock();
        if admitted.contains_key(&uid) {
            return Ok(());
        }
        let requests = pod_requests(&pod.spec.clone().unwrap_or_default());
        let pods = i64::try_from(admitted.len()).unwrap_or(i64::MAX);
        let mut used = ResourceAmounts::default();
        for other in admitted.values() {
            used.add(other);
        }
        let short = |resource: &str, requested: i64, used: i64, capacity: i64| {
            Err(AdmissionError::InsufficientResource {
                resource: resource.to_string(),
                requested,
                used,
                capacity,
            })
        };
        if pods.saturating_add(1) > self.allowed_pods {
            return short("pods", 1, pods, self.allowed_pods);
        }
        if !requests.is_zero() {
            let checks = [
                (
                    "cpu",
                    requests.milli_cpu,
                    used.milli_cpu,
                    self.allocatable.milli_cpu,
                ),
                (
                    "memory",
                    requests.memory,
                    used.memory,
                    self.allocatable.memory,
                ),
                (
                    "ephemeral-storage",
                    requests.ephemeral_storage,
                    used.ephemeral_storage,
                    self.allocatable.ephemeral_storage,
                ),
            ];
            for (resource, requested, in_use, capacity) in checks {
                if requested > 0 && requested > capacity.saturating_sub(in_use) {
                    return short(resource, requested, in_use, capacity);
                }
            }
            for (resource, &requested) in &requests.scalar {
                let Some(&capacity) = self.allocatable.scalar.get(resource) else {
                    continue;
                };
                let in_use = used.scalar.get(resource).copied().unwrap_or(0);
                if requested > 0 && requested > capacity.saturating_sub(in_use) {
                    return short(resource, requested, in_use, capacity);
                }
            }
        }
        admitted.insert(uid, requests);
        Ok(())
    }

    /// Stops counting the Pod with `uid` (terminal or deleted). Idempotent.
    pub(crate) fn release(&self, uid: &str) {
        self.admitted.lock().remove(uid);
    }
}

/// Writes a rejected Pod's status: phase `Failed`, the rejection's reason and message,
/// and its QoS class, keeping conditions other components own. `Ok` also when the Pod is
/// gone or was replaced (another uid); API errors are returned for the caller to retry.
pub(crate) async fn write_rejection(
    api: &Api<Pod>,
    pod: &Pod,
    rejection: &AdmissionError,
) -> Result<()> {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = PodStatus {
        phase: Some("Failed".into()),
        reason: Some(rejection.reason()),
        message: Some(rejection.status_message()),
        qos_class: Some(qos_class(&spec).as_str().to_string()),
        ..PodStatus::default()
    };
    let name = pod.name_any();
    let uid = &pod.metadata.uid;
    let written = retry_on_error(5, KubeletError::is_conflict, |_| async {
        let mut current = match api.get_opt(&name).await {
            Ok(Some(current)) if current.metadata.uid == *uid => current,
            Ok(_) => return Ok(()),
            Err(error) => return Err(KubeletError::api("reading the pod", error)),
        };
        current.status = Some(crate::status::merge_foreign_conditions(
            status.clone(),
            current.status.as_ref(),
        ));
        match api.update_status(&PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(KubeletError::api("writing a rejected pod's status", error)),
        }
    })
    .await;
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, requests: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": requests}}]},
        }))
        .unwrap()
    }

    fn node() -> Admission {
        Admission::new(
            &KubeletConfig::new("n")
                .capacity("cpu", "2")
                .capacity("memory", "1Gi")
                .capacity("pods", "3")
                .capacity("example.com/gpu", "1"),
        )
    }

    #[test]
    fn a_pod_that_does_not_fit_beside_the_admitted_ones_is_rejected_with_kubernetes_words() {
        let admission = node();
        admission.admit(&pod("a", json!({"cpu": "500m"}))).unwrap();
        let error = admission.admit(&pod("b", json!({"cpu": "2"}))).unwrap_err();
        assert_eq!(error.reason(), "OutOfcpu");
        assert_eq!(
            error.status_message(),
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity: 2000"
        );
        // The rejected pod counts nothing: one that fits exactly is admitted.
        admission
            .admit(&pod("c", json!({"cpu": "1500m", "memory": "1Gi"})))
            .unwrap();
        let error = admission
            .admit(&pod("d", json!({"memory": "1"})))
            .unwrap_err();
        assert_eq!(
            error,
            AdmissionError::InsufficientResource {
                resource: "memory".into(),
                requested: 1,
                used: 1 << 30,
                capacity: 1 << 30
            }
        );
        // Admitting again does not count twice; releasing frees the requests.
        admission.admit(&pod("a", json!({"cpu": "500m"}))).unwrap();
        admission.release("c");
        admission.admit(&pod("e", json!({"cpu": "1500m"}))).unwrap();
    }

    #[test]
    fn pods_count_first_and_a_pod_requesting_nothing_needs_only_a_slot() {
        let admission = node();
        for uid in ["a", "b", "c"] {
            admission.admit(&pod(uid, json!({}))).unwrap();
        }
        let error = admission
            .admit(&pod("d", json!({"cpu": "100"})))
            .unwrap_err();
        assert_eq!(error.reason(), "OutOfpods");
        assert_eq!(
            error.to_string(),
            "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
        );
    }

    #[test]
    fn advertised_extended_resources_are_checked_and_unknown_ones_left_alone() {
        let admission = node();
        admission
            .admit(&pod(
                "a",
                json!({"example.com/gpu": "1", "other.io/thing": "5"}),
            ))
            .unwrap();
        let error = admission
            .admit(&pod("b", json!({"example.com/gpu": "1"})))
            .unwrap_err();
        assert_eq!(error.reason(), "OutOfexample.com/gpu");
    }

    #[test]
    fn terminal_and_deleted_pods_are_let_through_uncounted() {
        let admission = node();
        let mut done = pod("a", json!({"cpu": "2"}));
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..PodStatus::default()
        });
        admission.admit(&done).unwrap();
        admission.admit(&pod("b", json!({"cpu": "2"}))).unwrap();
        assert_eq!(node().memory_capacity(), 1 << 30);
    }
}
