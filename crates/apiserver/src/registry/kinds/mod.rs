//! Per-kind API strategies: the rules of one kind, behind one trait, as kube-apiserver keeps a
//! create, update and delete strategy next to each resource.
//!
//! The generic registry (create, update, delete) and the built-in admission steps
//! ([`Defaulting`](super::defaults::Defaulting), [`Validation`](super::validation::Validation))
//! do what every kind shares, and ask the kind's [`KindStrategy`] for the rest:
//!
//! - **create and update**: the rule its names follow, Kubernetes' defaults, the validation of
//!   its own fields (metadata is checked for every kind);
//! - **status**: what an update of the object and an update of its `status` subresource keep
//!   from the stored object;
//! - **allocations**: a Service's cluster IP, settled before validation and stored with it;
//! - **delete**: graceful deletion (a Pod's termination grace period).
//!
//! Every method has a default that applies no rule of its own, so a kind without rules (and
//! every custom kind) needs nothing. [`strategy_for`] looks a kind up in one table; adding a
//! kind's rules is one file here plus one line in that table.
//!
//! Helpers shared by several kinds stay outside: the pod template defaults in
//! [`defaults`](super::defaults), the name, label, number and pod spec validators in
//! [`validation`](super::validation).

mod certificatesigningrequest;
mod configmap;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod event;
mod horizontalpodautoscaler;
mod job;
pub(super) mod namespace;
mod persistentvolumeclaim;
pub(super) mod pod;
mod podtemplate;
mod rbac;
mod replicaset;
mod replicationcontroller;
mod secret;
mod service;
mod statefulset;

use std::borrow::Cow;
use std::sync::LazyLock;

use capstan_api::{kube_core::params::DeleteParams, FieldError, ResourceInfo, Result};
use serde_json::{Map, Value};

use super::service_ips::{IpPlan, ServiceIpAllocator};
use super::validation::NameRule;

/// The rules of one kind. Every method has a default that applies no rule of its own.
///
/// Methods take the object in its JSON form; they must not fail on a malformed one (a missing
/// or mistyped field is for [`validate`](Self::validate) to report).
pub(crate) trait KindStrategy: Sync {
    // Create and update --------------------------------------------------------------------

    /// The rule `metadata.name` follows. Default: a DNS-1123 subdomain.
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }

    /// Fills Kubernetes' defaults into `object` (a JSON object), on creates and updates of the
    /// object itself. Only what is missing (absent or `null`) is filled; idempotent.
    fn apply_defaults(&self, _object: &mut Value) {}

    /// Pushes every problem of the kind's own fields to `causes`, in field order, naming each
    /// field the way Kubernetes does. `old` is the stored object on an update, `None` on a
    /// create. Runs after the metadata checks every kind gets.
    fn validate(&self, _object: &Value, _old: Option<&Value>, _causes: &mut Vec<FieldError>) {}

    // Status -------------------------------------------------------------------------------

    /// An update of the `status` subresource changes `status` only: `updated` becomes
    /// `current` with `updated`'s `status` (none if it has none).
    fn prepare_status_update(&self, current: &Value, updated: &mut Value) {
        let status = updated
            .as_object_mut()
            .and_then(|root| root.remove("status"));
        let mut merged = current.clone();
        if let Some(root) = merged.as_object_mut() {
            match status {
                Some(status) => root.insert("status".into(), status),
                None => root.remove("status"),
            };
        }
        *updated = merged;
    }

    /// An update of the `approval` subresource (CertificateSigningRequests): what it keeps
    /// from `current`. Default: as an update of `status`.
    fn prepare_approval_update(&self, current: &Value, updated: &mut Value) {
        self.prepare_status_update(current, updated);
    }

    /// An update of a Pod's `ephemeralcontainers` subresource: `updated` becomes `current`
    /// with `updated`'s `spec.ephemeralContainers` (none if it has none). Default: as an
    /// update of `status` (kinds other than Pods serve no such subresource).
    fn prepare_ephemeral_containers_update(&self, current: &Value, updated: &mut Value) {
        self.prepare_status_update(current, updated);
    }

    /// An update of the object itself: when the kind has a status subresource, `updated`
    /// keeps `current`'s `status` (none if it has none); otherwise it may change it.
    fn prepare_main_update(&self, info: &ResourceInfo, current: &Value, updated: &mut Value) {
        if info.subresources().status {
            if let Some(root) = updated.as_object_mut() {
                match current.get("status") {
                    Some(status) => root.insert("status".into(), status.clone()),
                    None => root.remove("status"),
                };
            }
        }
    }

    // Allocations --------------------------------------------------------------------------

    /// Whether objects of the kind hold a cluster IP from the registry's allocator. When
    /// true, the registry loads the allocator before a write, calls
    /// [`plan_cluster_ip`](Self::plan_cluster_ip) on every write of the object itself, and
    /// frees the address in `spec.clusterIP` with the object.
    fn holds_cluster_ip(&self) -> bool {
        false
    }

    /// Settles `object`'s cluster IP before validation (`old`: the stored object on an
    /// update), reserving from `allocator` what the write will record. The returned plan
    /// gives back what it reserved unless committed.
    ///
    /// Errors: [`Error::Invalid`](capstan_api::Error::Invalid) for an address that cannot be
    /// had, an internal error when the range is full.
    fn plan_cluster_ip<'a>(
        &self,
        _allocator: &'a ServiceIpAllocator,
        _info: &ResourceInfo,
        _object: &mut Value,
        _old: Option<&Value>,
        _name: &str,
    ) -> Result<IpPlan<'a>> {
        Ok(IpPlan::none())
    }

    // Delete -------------------------------------------------------------------------------

    /// How many seconds `object` gets before a delete removes it: with more than 0, the delete
    /// only sets `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds`, and a
    /// later delete finishes it. Default: 0, deleted at once (once finalizers are gone).
    fn graceful_deletion_seconds(&self, _object: &Value, _params: &DeleteParams) -> i64 {
        0
    }

    /// Whether something of the kind's own (beyond `metadata.finalizers` and a grace period)
    /// still holds `object`'s deletion, such as a Namespace's `spec.finalizers`: while true, a
    /// delete or update only marks it as being deleted. Default: nothing.
    fn holds_deletion(&self, _object: &Value) -> bool {
        false
    }

    /// Marks `object` as being deleted, once, when a delete first sets its
    /// `deletionTimestamp` (a Namespace's `status.phase: Terminating`). Default: nothing.
    fn prepare_deletion(&self, _object: &mut Value) {}

    // Conversion ---------------------------------------------------------------------------

    /// Converts `object`, read from storage, to the shape this group version serves (as
    /// kube-apiserver converts from a resource's storage version), in place; idempotent. The
    /// registry and the watch cache call it on every object they read. Default: served as
    /// stored.
    fn to_served(&self, _object: &mut Value) {}

    /// `object`, written in the shape this group version serves, in the shape it is stored
    /// in; the registry calls it on every object it writes. Default: stored as served.
    fn to_stored<'a>(&self, object: &'a Value) -> Cow<'a, Value> {
        Cow::Borrowed(object)
    }
}

/// The strategy of kinds without rules of their own: every default.
struct NoRules;

impl KindStrategy for NoRules {}

/// Stands for every kind of an API group in [`STRATEGIES`].
const ANY_KIND: &str = "*";

/// Every kind with rules of its own: API group, kind (or [`ANY_KIND`]), strategy. The first
/// match wins.
static STRATEGIES: &[(&str, &str, &dyn KindStrategy)] = &[
    ("", "Pod", &pod::PodStrategy),
    ("", "PodTemplate", &podtemplate::PodTemplateStrategy),
    (
        "",
        "ReplicationController",
        &replicationcontroller::ReplicationControllerStrategy,
    ),
    ("", "Service", &service::ServiceStrategy),
    ("", "Namespace", &namespace::NamespaceStrategy),
    ("", "Secret", &secret::SecretStrategy),
    ("", "ConfigMap", &configmap::ConfigMapStrategy),
    (
        "",
        "PersistentVolumeClaim",
        &persistentvolumeclaim::PersistentVolumeClaimStrategy,
    ),
    ("", "Endpoints", &endpoints::EndpointsStrategy),
    ("events.k8s.io", "Event", &event::EventsV1Strategy),
    ("apps", "Deployment", &deployment::DeploymentStrategy),
    ("apps", "ReplicaSet", &replicaset::ReplicaSetStrategy),
    ("apps", "DaemonSet", &daemonset::DaemonSetStrategy),
    ("apps", "StatefulSet", &statefulset::StatefulSetStrategy),
    ("batch", "Job", &job::JobStrategy),
    ("batch", "CronJob", &cronjob::CronJobStrategy),
    ("rbac.authorization.k8s.io", ANY_KIND, &rbac::RbacStrategy),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        &crate::apiextensions::CustomResourceDefinitionStrategy,
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        &horizontalpodautoscaler::HorizontalPodAutoscalerStrategy,
    ),
    (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        &certificatesigningrequest::CertificateSigningRequestStrategy,
    ),
];

/// Strategies of one version of a kind whose versions share a storage and differ in shape:
/// API group, version, kind, strategy. Looked up before [`STRATEGIES`].
static VERSIONED: &[(&str, &str, &str, &dyn KindStrategy)] = &[(
    "autoscaling",
    "v1",
    "HorizontalPodAutoscaler",
    &horizontalpodautoscaler::HorizontalPodAutoscalerV1Strategy,
)];

/// The strategy of `resource`'s kind, matched on group and kind (so a built-in kind
/// registered again keeps its rules); kinds without rules of their own get the defaults.
pub(crate) fn strategy_for(resource: &ResourceInfo) -> &'static dyn KindStrategy {
    if let Some((_, _, _, strategy)) = VERSIONED.iter().find(|(group, version, kind, _)| {
        *group == resource.group() && *version == resource.version() && *kind == resource.kind()
    }) {
        return *strategy;
    }
    STRATEGIES
        .iter()
        .find(|(group, kind, _)| {
            *group == resource.group() && (*kind == ANY_KIND || *kind == resource.kind())
        })
        .map_or(&NoRules, |(_, _, strategy)| *strategy)
}

/// `object.spec` as a map; an empty one when it is missing or not an object.
fn spec_of(object: &Value) -> &Map<String, Value> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    object
        .get("spec")
        .and_then(Value::as_object)
        .unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_names_a_builtin_kind() {
        for (group, kind, _) in STRATEGIES {
            if *kind != ANY_KIND {
                assert!(
                    ResourceInfo::builtin(group, kind).is_some(),
                    "{group}/{kind} is not a built-in kind"
                );
            }
        }
    }

    #[test]
    fn kinds_without_rules_get_the_defaults() {
        let leases = ResourceInfo::builtin("coordination.k8s.io", "Lease").unwrap();
        let widgets = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        for resource in [leases, widgets] {
            let strategy = strategy_for(&resource);
            assert_eq!(strategy.name_rule(), NameRule::Dns1123Subdomain);
            assert!(!strategy.holds_cluster_ip());
        }
        let roles = ResourceInfo::builtin("rbac.authorization.k8s.io", "Role").unwrap();
        assert_eq!(strategy_for(&roles).name_rule(), NameRule::PathSegment);
    }
}
