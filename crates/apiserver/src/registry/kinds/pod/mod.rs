//! Pods: Kubernetes' pod defaults and pod spec validation, graceful deletion, and the
//! `ephemeralcontainers` subresource's rules ([`ephemeral`]).

mod ephemeral;

pub(crate) use ephemeral::validate_ephemeral_containers_update;

use capstan_api::{kube_core::params::DeleteParams, FieldError};
use serde_json::Value;

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_pod_spec, set_default, RestartPolicy},
    object,
    validation::{validate_pod_spec, PodContext},
};

/// The rules of `v1` Pods.
pub(crate) struct PodStrategy;

impl KindStrategy for PodStrategy {
    fn apply_defaults(&self, pod: &mut Value) {
        default_pod(pod);
    }

    fn validate(&self, pod: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_pod_spec(spec_of(pod), "spec", PodContext::Pod, causes);
        ephemeral::validate_main_write(pod, old, causes);
    }

    fn prepare_ephemeral_containers_update(&self, current: &Value, updated: &mut Value) {
        ephemeral::keep_all_but_ephemeral(current, updated);
    }

    /// How long a Pod gets to terminate before it is deleted, as kube-apiserver's pod strategy
    /// decides: the request's `gracePeriodSeconds`, else the Pod's
    /// `spec.terminationGracePeriodSeconds` (30 by default); 0 for a Pod no node runs
    /// (unscheduled, or already Succeeded or Failed). The kubelet deletes again with 0 once the
    /// containers are stopped.
    fn graceful_deletion_seconds(&self, pod: &Value, params: &DeleteParams) -> i64 {
        let scheduled = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|node| !node.is_empty());
        let finished = matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if !scheduled || finished {
            return 0;
        }
        match params.grace_period_seconds {
            Some(seconds) => i64::from(seconds),
            None => pod
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
                .max(0),
        }
    }
}

/// The pod spec defaults, `enableServiceLinks: true` and `status.phase: Pending`.
fn default_pod(pod: &mut Value) {
    let spec = object::at_mut(pod, "spec");
    default_pod_spec(spec, RestartPolicy::Always);
    set_default(spec, "enableServiceLinks", true);
    set_default(object::at_mut(pod, "status"), "phase", "Pending");
}
