//! Kubernetes' validation for built-in kinds (`ValidateX` of `k8s.io/kubernetes/pkg/apis`), as
//! the [`Validation`] admission step.
//!
//! Every problem becomes one [`FieldError`] naming the field the way Kubernetes does
//! (`metadata.name`, `spec.replicas`, `spec.template.spec.containers[1].name`), and a request
//! with any is rejected with [`Error::Invalid`](capstan_api::Error::Invalid) carrying them all.
//!
//! What is checked:
//!
//! - **Metadata**, every kind: the name is a DNS-1123 subdomain (a DNS-1123 label for
//!   Namespaces, a DNS-1035 label for Services, anything path-safe for RBAC kinds); the
//!   namespace is a DNS-1123 label; label keys and values, annotation keys and total size,
//!   finalizer names (not both `orphan` and `foregroundDeletion`), owner references (required
//!   fields, at most one controller).
//! - **Workloads** (Deployment, ReplicaSet, DaemonSet, StatefulSet, ReplicationController,
//!   Job, CronJob): non-negative counts; a required, non-empty, valid `spec.selector` that
//!   matches the template's labels; Deployment strategies (`maxSurge` and `maxUnavailable` not
//!   both zero, percentages); an immutable selector on update for the `apps/v1` kinds.
//! - **Pod specs** (Pods and every template): at least one container, container names
//!   DNS-1123 labels and unique across init and app containers, images required, ports in
//!   range with a known protocol, known restart, DNS and pull policies (templates of apps
//!   kinds must restart `Always`, Job templates `OnFailure` or `Never`); volumes with exactly
//!   one valid source, named uniquely, mounted only by name at unique paths (`volumes`);
//!   environment variables and `envFrom` (`env`, with the downward API's selectors in
//!   `downward_api`); pod and container security contexts (`security_context`).
//! - **Services**: known type, ports in range, port names required when there are several and
//!   unique, known protocols and session affinity, target ports, an `externalName` for
//!   `ExternalName` services.
//!
//! - **Quantities**: every resource quantity of the built-in kinds (container and pod
//!   `resources`, `overhead`, emptyDir `sizeLimit`, ResourceQuota `spec.hard`, LimitRange
//!   limits, claims' requests, PersistentVolume capacity, Node `status.capacity` and
//!   `allocatable`, also on status writes) follows Kubernetes' grammar and is not negative, and
//!   a request is not above its limit.
//! - **ConfigMaps and Secrets**: keys are config keys (`[-._a-zA-Z0-9]+`, not `.` or `..`), a
//!   ConfigMap key is not in both `data` and `binaryData`, at most 1 MiB of data, nothing
//!   changes once `immutable` is set; a Secret's `type` is immutable and the common types have
//!   their keys (`tls.crt` and `tls.key`, `.dockerconfigjson`, ...).
//!
//! Custom kinds get the metadata checks only. Status writes get the status quantity checks
//! only.
//!
//! Each kind's own checks live in its strategy (`registry/kinds/`); this module runs the
//! metadata checks every kind gets, then the kind's, and holds the validators kinds share:
//!
//! - `names`: DNS-1123 and DNS-1035 names, with Kubernetes' messages;
//! - `metadata`: the metadata checks;
//! - `fields`: integers, counts, ports, protocols, percentages;
//! - `pod_spec`: pod specs and templates, with `volumes` (volume sources, mounts and devices),
//!   `env`, `downward_api` and `security_context`;
//! - `quantities`: resource quantities, by kind;
//! - `data`: ConfigMap and Secret keys, sizes and immutability;
//! - `workloads`: what the `apps/v1` workloads share (selector, template, immutability).

mod data;
mod downward_api;
mod env;
mod fields;
mod metadata;
mod names;
mod pod_spec;
mod quantities;
mod security_context;
mod volumes;
mod workloads;

use async_trait::async_trait;
use capstan_api::{FieldError, ResourceInfo, Result};
use serde_json::Value;

use super::{
    admission::{invalid_unless_empty, AdmissionPhase, AdmissionRequest, AdmissionStep, Operation},
    kinds,
};

pub use names::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};

pub(crate) use data::{
    data_size, decoded, map_at, validate_config_keys, validate_immutable_data, MAX_DATA_SIZE,
};
pub(crate) use fields::{
    amount, check_protocol, integer, is_port_name, is_zero, non_negative, port_in_range, Amount,
};
pub(crate) use metadata::validate_label_map;
pub(crate) use names::{check_dns, NameRule};
pub(crate) use pod_spec::{validate_container, validate_pod_spec, validate_template, PodContext};
pub(crate) use volumes::valid_volumes;
pub(crate) use workloads::{check_selector_immutable, validate_workload, Replicas};

/// The validating admission step enforcing Kubernetes' validation of built-in kinds (and the
/// metadata rules of every kind); see the [module docs](self). Runs on creates and updates of
/// the object itself (and checks the status quantities on status writes); rejects with [`Error::Invalid`](capstan_api::Error::Invalid) naming every
/// bad field.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validation;

#[async_trait]
impl AdmissionStep for Validation {
    fn name(&self) -> &str {
        "Validation"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Validating
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        if request.operation == Operation::Delete {
            return Ok(());
        }
        if request.subresource == Some("status") {
            let mut causes = Vec::new();
            quantities::validate_status_quantities(request.resource, object, &mut causes);
            return invalid_unless_empty(request, causes);
        }
        if request.subresource == Some("ephemeralcontainers") {
            let old = request.old_object.unwrap_or(&Value::Null);
            let causes = kinds::pod::validate_ephemeral_containers_update(object, old);
            return invalid_unless_empty(request, causes);
        }
        if request.subresource.is_some() {
            return Ok(());
        }
        let old = match request.operation {
            Operation::Update => request.old_object,
            _ => None,
        };
        invalid_unless_empty(request, validate(request.resource, object, old))
    }
}

/// Every validation problem of `object` (and, for an update, of its change from `old`), in
/// field order; empty when the object is valid.
pub fn validate(resource: &ResourceInfo, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let strategy = kinds::strategy_for(resource);
    let mut causes = Vec::new();
    metadata::validate_metadata(resource, strategy.name_rule(), object, &mut causes);
    strategy.validate(object, old, &mut causes);
    quantities::validate_kind_quantities(resource, object, &mut causes);
    causes
}

#[cfg(test)]
mod tests;
