//! Kinds: the [`Resource`] trait, [`ResourceInfo`] and the storage key layout.
//!
//! Every k8s-openapi kind (Pod, Deployment, Node, ...) is a [`Resource`], and so is any type
//! implementing [`kube_core::Resource`] with `DynamicType = ()` and a namespace or cluster
//! scope; the [`resource!`](crate::resource!) macro writes that impl for a custom kind.
//!
//! [`ResourceInfo`] is the runtime description of a kind that registries, clients and
//! selectors share. Its storage keys follow kube-apiserver's etcd layout:
//!
//! | kind                               | key                                              |
//! |------------------------------------|--------------------------------------------------|
//! | core and other built-in groups     | `/registry/pods/<namespace>/<name>`              |
//! | cluster-scoped                     | `/registry/namespaces/<name>`                    |
//! | kube-apiserver renames             | `/registry/minions/<name>`, `/registry/services/specs/...`, `/registry/services/endpoints/...`, `/registry/controllers/...`, `/registry/ingress/...` |
//! | apiextensions, apiregistration, custom groups | `/registry/<group>/<plural>/[<namespace>/]<name>` |

use std::fmt::Debug;

use kube_core::{discovery::ApiResource, GroupVersionKind};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The root every storage key lives under.
pub const REGISTRY_ROOT: &str = "/registry";

/// Whether a [`kube_core::Resource::Scope`] is namespaced, known at compile time.
///
/// Implemented for [`k8s_openapi::NamespaceResourceScope`] and
/// [`k8s_openapi::ClusterResourceScope`]; a kind with any other scope is not a [`Resource`].
pub trait ResourceScope: k8s_openapi::ResourceScope {
    /// `true` when objects live in a namespace.
    const NAMESPACED: bool;
}

impl ResourceScope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ResourceScope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A kind Capstan can store and serve: a statically known [`kube_core::Resource`] that
/// serializes to and from its Kubernetes JSON form.
///
/// Implemented for every such type; do not implement it by hand. Use
/// [`resource!`](crate::resource!) to make a custom kind one.
pub trait Resource:
    kube_core::Resource<DynamicType = (), Scope: ResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's description: the [`kube_core::Resource`] statics plus the built-in table.
    fn info() -> ResourceInfo {
        ResourceInfo::new(
            &Self::group(&()),
            &Self::version(&()),
            &Self::kind(&()),
            &Self::plural(&()),
            <Self::Scope as ResourceScope>::NAMESPACED,
        )
    }
}

impl<K> Resource for K where
    K: kube_core::Resource<DynamicType = (), Scope: ResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Implements [`kube_core::Resource`] for a struct with a `metadata: ObjectMeta` field,
/// making it a Capstan [`Resource`].
///
/// `scope` is `Namespaced` or `Cluster`.
///
/// ```
/// use capstan_api::{kube_core::ObjectMeta, Resource};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct Widget {
///     metadata: ObjectMeta,
///     spec: WidgetSpec,
/// }
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct WidgetSpec {
///     size: u32,
/// }
///
/// capstan_api::resource!(Widget, group = "example.com", version = "v1", kind = "Widget", plural = "widgets", scope = Namespaced);
///
/// assert_eq!(Widget::info().api_version(), "example.com/v1");
/// ```
#[macro_export]
macro_rules! resource {
    (@scope Namespaced) => {
        $crate::k8s_openapi::NamespaceResourceScope
    };
    (@scope Cluster) => {
        $crate::k8s_openapi::ClusterResourceScope
    };
    (
        $ty:ty,
        group = $group:literal,
        version = $version:literal,
        kind = $kind:literal,
        plural = $plural:literal,
        scope = $scope:ident $(,)?
    ) => {
        impl $crate::kube_core::Resource for $ty {
            type DynamicType = ();
            type Scope = $crate::resource!(@scope $scope);

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($kind)
            }

            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($group)
            }

            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($version)
            }

            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($plural)
            }

            fn meta(&self) -> &$crate::kube_core::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut $crate::kube_core::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// Which subresources a kind serves besides the main resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subresources {
    /// `/status`: status is written only through `update_status`.
    pub status: bool,
    /// `/scale`: the kind exposes an `autoscaling/v1` `Scale`.
    pub scale: bool,
}

/// Runtime description of a kind: names, scope, subresources, field labels and storage
/// location.
///
/// Build one with [`ResourceInfo::of`] for a typed kind, [`ResourceInfo::new`] for a kind known
/// by name, or [`ResourceInfo::builtin`] to look up a Kubernetes built-in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    namespaced: bool,
    short_names: Vec<String>,
    subresources: Subresources,
    field_labels: Vec<String>,
    storage_resource: String,
}

impl ResourceInfo {
    /// Describes a kind. For a Kubernetes built-in (matched on group and kind) the singular,
    /// short names, subresources and field labels come from the built-in table; otherwise the
    /// singular is the lowercase kind, the status subresource is on, and there are no short
    /// names, scale subresource or extra field labels.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let builtin = BUILT_INS
            .iter()
            .find(|b| b.group == group && b.kind == kind);
        let to_strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: builtin
                .map(|b| to_strings(b.short_names))
                .unwrap_or_default(),
            subresources: builtin.map(|b| b.subresources).unwrap_or(Subresources {
                status: true,
                scale: false,
            }),
            field_labels: builtin
                .map(|b| to_strings(b.field_labels))
                .unwrap_or_default(),
            storage_resource: storage_resource(group, plural),
        }
    }

    /// The description of the typed kind `K`.
    pub fn of<K: Resource>() -> Self {
        K::info()
    }

    /// The Kubernetes built-in kind `kind` of `group` (`""` for core), if Capstan knows it.
    pub fn builtin(group: &str, kind: &str) -> Option<Self> {
        BUILT_INS
            .iter()
            .find(|b| b.group == group && b.kind == kind)
            .map(BuiltIn::info)
    }

    /// Every Kubernetes built-in kind Capstan knows, in table order.
    pub fn builtins() -> impl Iterator<Item = Self> {
        BUILT_INS.iter().map(BuiltIn::info)
    }

    /// Describes the kind behind a kube-core [`ApiResource`].
    pub fn from_api_resource(resource: &ApiResource, namespaced: bool) -> Self {
        Self::new(
            &resource.group,
            &resource.version,
            &resource.kind,
            &resource.plural,
            namespaced,
        )
    }

    /// Overrides the short names (`po`, `deploy`, ...).
    #[must_use]
    pub fn with_short_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.short_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Overrides the singular name.
    #[must_use]
    pub fn with_singular(mut self, singular: impl Into<String>) -> Self {
        self.singular = singular.into();
        self
    }

    /// Overrides the served subresources.
    #[must_use]
    pub fn with_subresources(mut self, subresources: Subresources) -> Self {
        self.subresources = subresources;
        self
    }

    /// Overrides the field-selector paths supported besides `metadata.name` and
    /// `metadata.namespace`.
    #[must_use]
    pub fn with_field_labels<S: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = S>,
    ) -> Self {
        self.field_labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// API group; empty for the core group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// API version within the group, e.g. `v1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Kind, e.g. `Deployment`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Plural resource name, e.g. `deployments`.
    pub fn plural(&self) -> &str {
        &self.plural
    }

    /// Singular resource name, e.g. `deployment`.
    pub fn singular(&self) -> &str {
        &self.singular
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(&self) -> bool {
        self.namespaced
    }

    /// Short names, e.g. `["deploy"]`.
    pub fn short_names(&self) -> &[String] {
        &self.short_names
    }

    /// Served subresources.
    pub fn subresources(&self) -> Subresources {
        self.subresources
    }

    /// Field-selector paths supported besides `metadata.name` and `metadata.namespace`.
    pub fn field_labels(&self) -> &[String] {
        &self.field_labels
    }

    /// Whether a field selector may use `label`: `metadata.name`, `metadata.namespace` or one
    /// of [`field_labels`](Self::field_labels).
    pub fn supports_field_label(&self, label: &str) -> bool {
        matches!(label, "metadata.name" | "metadata.namespace")
            || self.field_labels.iter().any(|l| l == label)
    }

    /// The storage path segment under `/registry`, e.g. `pods`, `minions`,
    /// `services/specs` or `example.com/widgets`.
    pub fn storage_resource(&self) -> &str {
        &self.storage_resource
    }

    /// `apiVersion`: `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Resource qualified by group as Kubernetes messages print it: `pods`,
    /// `deployments.apps`.
    pub fn qualified_resource(&self) -> String {
        qualify(&self.plural, &self.group)
    }

    /// Kind qualified by group as Kubernetes messages print it: `Pod`, `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        qualify(&self.kind, &self.group)
    }

    /// Group, version and kind.
    pub fn group_version_kind(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }

    /// The kube-core [`ApiResource`] for dynamic objects of this kind.
    pub fn to_api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// Prefix of every key of this kind, with a trailing slash: `/registry/pods/`.
    pub fn storage_prefix(&self) -> String {
        format!("{REGISTRY_ROOT}/{}/", self.storage_resource)
    }

    /// Prefix of every key in `namespace`: `/registry/pods/default/`.
    ///
    /// Fails with [`Error::BadRequest`] for a cluster-scoped kind or an invalid namespace.
    pub fn namespace_prefix(&self, namespace: &str) -> Result<String> {
        if !self.namespaced {
            return Err(self.unexpected_namespace());
        }
        validate_path_segment("metadata.namespace", namespace)?;
        Ok(format!("{}{namespace}/", self.storage_prefix()))
    }

    /// The storage key of one object: `/registry/pods/default/web`, `/registry/minions/n1`.
    ///
    /// Fails with [`Error::BadRequest`] when a namespaced kind gets no namespace, a
    /// cluster-scoped kind gets one, or the name or namespace is empty, `.`, `..`, or contains
    /// `/` or `%`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> Result<String> {
        let prefix = match (self.namespaced, namespace) {
            (true, Some(namespace)) => self.namespace_prefix(namespace)?,
            (true, None) => {
                return Err(Error::bad_field(
                    "metadata.namespace",
                    format!("a namespace is required for {}", self.qualified_resource()),
                ))
            }
            (false, None) => self.storage_prefix(),
            (false, Some(_)) => return Err(self.unexpected_namespace()),
        };
        validate_path_segment("metadata.name", name)?;
        Ok(format!("{prefix}{name}"))
    }

    /// The inverse of [`key`](Self::key): `(namespace, name)` of a key of this kind, or `None`
    /// when the key belongs elsewhere.
    pub fn parse_key(&self, key: &str) -> Option<(Option<String>, String)> {
        let rest = key.strip_prefix(&self.storage_prefix())?;
        let (namespace, name) = if self.namespaced {
            let (namespace, name) = rest.split_once('/')?;
            (Some(namespace), name)
        } else {
            (None, rest)
        };
        let valid = |s: &str| validate_path_segment("", s).is_ok();
        if !valid(name) || !namespace.is_none_or(valid) {
            return None;
        }
        Some((namespace.map(str::to_string), name.to_string()))
    }

    fn unexpected_namespace(&self) -> Error {
        Error::bad_field(
            "metadata.namespace",
            format!(
                "{} is cluster-scoped and takes no namespace",
                self.qualified_resource()
            ),
        )
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

/// Kubernetes' `ValidatePathSegmentName`: names and namespaces become key segments.
fn validate_path_segment(field: &str, segment: &str) -> Result<()> {
    let problem = if segment.is_empty() {
        "may not be empty".to_string()
    } else if segment == "." || segment == ".." {
        format!("may not be '{segment}'")
    } else if let Some(bad) = segment.chars().find(|c| matches!(c, '/' | '%')) {
        format!("may not contain '{bad}'")
    } else {
        return Ok(());
    };
    Err(Error::bad_field(
        field,
        format!("{}: {problem}", crate::error::quote(segment)),
    ))
}

/// Groups whose storage kube-apiserver itself owns: they store under `/registry/<resource>`.
const KUBE_APISERVER_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// The segment under `/registry` where kube-apiserver stores `plural` of `group`.
fn storage_resource(group: &str, plural: &str) -> String {
    if !KUBE_APISERVER_GROUPS.contains(&group) {
        return format!("{group}/{plural}");
    }
    let renamed = match (group, plural) {
        ("", "nodes") => "minions",
        ("", "services") => "services/specs",
        ("", "endpoints") => "services/endpoints",
        ("", "replicationcontrollers") => "controllers",
        ("networking.k8s.io" | "extensions", "ingresses") => "ingress",
        ("policy" | "extensions", "podsecuritypolicies") => "podsecuritypolicy",
        // events.k8s.io Events are the core Events, served in another shape.
        ("events.k8s.io", "events") => "events",
        _ => plural,
    };
    renamed.to_string()
}

/// One row of the built-in table.
struct BuiltIn {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: Subresources,
    field_labels: &'static [&'static str],
}

impl BuiltIn {
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
    ) -> Self {
        BuiltIn {
            group,
            version,
            kind,
            plural,
            namespaced,
            short_names: &[],
            subresources: Subresources {
                status: false,
                scale: false,
            },
            field_labels: &[],
        }
    }

    const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    const fn status(mut self) -> Self {
        self.subresources.status = true;
        self
    }

    const fn scale(mut self) -> Self {
        self.subresources.scale = true;
        self
    }

    const fn fields(mut self, labels: &'static [&'static str]) -> Self {
        self.field_labels = labels;
        self
    }

    fn info(&self) -> ResourceInfo {
        ResourceInfo::new(
            self.group,
            self.version,
            self.kind,
            self.plural,
            self.namespaced,
        )
    }
}

const NAMESPACED: bool = true;
const CLUSTER: bool = false;

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The Kubernetes built-in kinds Capstan knows by name.
static BUILT_INS: &[BuiltIn] = &[
    // core/v1
    BuiltIn::new("", "v1", "Pod", "pods", NAMESPACED)
        .short(&["po"])
        .status()
        .fields(POD_FIELDS),
    BuiltIn::new("", "v1", "Node", "nodes", CLUSTER)
        .short(&["no"])
        .status()
        .fields(&["spec.unschedulable"]),
    BuiltIn::new("", "v1", "Service", "services", NAMESPACED)
        .short(&["svc"])
        .status()
        .fields(&["spec.clusterIP", "spec.type"]),
    BuiltIn::new("", "v1", "Endpoints", "endpoints", NAMESPACED).short(&["ep"]),
    BuiltIn::new("", "v1", "Namespace", "namespaces", CLUSTER)
        .short(&["ns"])
        .status()
        .fields(&["status.phase"]),
    BuiltIn::new("", "v1", "Event", "events", NAMESPACED)
        .short(&["ev"])
        .fields(EVENT_FIELDS),
    BuiltIn::new("", "v1", "ConfigMap", "configmaps", NAMESPACED).short(&["cm"]),
    BuiltIn::new("", "v1", "Secret", "secrets", NAMESPACED).fields(&["type"]),
    BuiltIn::new("", "v1", "ServiceAccount", "serviceaccounts", NAMESPACED).short(&["sa"]),
    BuiltIn::new(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        NAMESPACED,
    )
    .short(&["rc"])
    .status()
    .scale()
    .fields(&["status.replicas"]),
    BuiltIn::new("", "v1", "PersistentVolume", "persistentvolumes", CLUSTER)
        .short(&["pv"])
        .status(),
    BuiltIn::new(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        NAMESPACED,
    )
    .short(&["pvc"])
    .status(),
    BuiltIn::new("", "v1", "LimitRange", "limitranges", NAMESPACED).short(&["limits"]),
    BuiltIn::new("", "v1", "ResourceQuota", "resourcequotas", NAMESPACED)
        .short(&["quota"])
        .status(),
    BuiltIn::new("", "v1", "PodTemplate", "podtemplates", NAMESPACED),
    // apps/v1
    BuiltIn::new("apps", "v1", "Deployment", "deployments", NAMESPACED)
        .short(&["deploy"])
        .status()
        .scale(),
    BuiltIn::new("apps", "v1", "ReplicaSet", "replicasets", NAMESPACED)
        .short(&["rs"])
        .status()
        .scale()
        .fields(&["status.replicas"]),
    BuiltIn::new("apps", "v1", "DaemonSet", "daemonsets", NAMESPACED)
        .short(&["ds"])
        .status(),
    BuiltIn::new("apps", "v1", "StatefulSet", "statefulsets", NAMESPACED)
        .short(&["sts"])
        .status()
        .scale(),
    BuiltIn::new(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        NAMESPACED,
    ),
    // batch/v1
    BuiltIn::new("batch", "v1", "Job", "jobs", NAMESPACED)
        .status()
        .fields(&["status.successful"]),
    BuiltIn::new("batch", "v1", "CronJob", "cronjobs", NAMESPACED)
        .short(&["cj"])
        .status(),
    // coordination.k8s.io/v1
    BuiltIn::new("coordination.k8s.io", "v1", "Lease", "leases", NAMESPACED),
    // discovery.k8s.io/v1
    BuiltIn::new(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        NAMESPACED,
    ),
    // events.k8s.io/v1
    BuiltIn::new("events.k8s.io", "v1", "Event", "events", NAMESPACED)
        .short(&["ev"])
        .fields(EVENT_FIELDS),
    // networking.k8s.io/v1
    BuiltIn::new(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        NAMESPACED,
    )
    .short(&["ing"])
    .status(),
    BuiltIn::new(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        NAMESPACED,
    )
    .short(&["netpol"]),
    BuiltIn::new(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        CLUSTER,
    ),
    // policy/v1
    BuiltIn::new(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        NAMESPACED,
    )
    .short(&["pdb"])
    .status(),
    // rbac.authorization.k8s.io/v1
    BuiltIn::new(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        NAMESPACED,
    ),
    BuiltIn::new(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        NAMESPACED,
    ),
    BuiltIn::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        CLUSTER,
    ),
    BuiltIn::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        CLUSTER,
    ),
    // scheduling.k8s.io/v1
    BuiltIn::new(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        CLUSTER,
    )
    .short(&["pc"]),
    // storage.k8s.io/v1
    BuiltIn::new(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        CLUSTER,
    )
    .short(&["sc"]),
    // apiextensions.k8s.io/v1
    BuiltIn::new(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        CLUSTER,
    )
    .short(&["crd", "crds"])
    .status(),
    // autoscaling/v2
    BuiltIn::new(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        NAMESPACED,
    )
    .short(&["hpa"])
    .status(),
];

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{
            apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
            autoscaling::v2::HorizontalPodAutoscaler,
            batch::v1::{CronJob, Job},
            coordination::v1::Lease,
            core::v1::{
                ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
                PersistentVolumeClaim, Pod, PodTemplate, ReplicationController, ResourceQuota,
                Secret, Service, ServiceAccount,
            },
            discovery::v1::EndpointSlice,
            events::v1::Event as EventsEvent,
            networking::v1::{Ingress, IngressClass, NetworkPolicy},
            policy::v1::PodDisruptionBudget,
            rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
            scheduling::v1::PriorityClass,
            storage::v1::StorageClass,
        },
        apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    };

    fn key_of(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
        ResourceInfo::builtin(group, kind)
            .unwrap()
            .key(namespace, name)
            .unwrap()
    }

    #[test]
    fn built_in_table_agrees_with_k8s_openapi_for_every_kind() {
        fn check<K: Resource>() {
            let info = ResourceInfo::of::<K>();
            let builtin = ResourceInfo::builtin(info.group(), info.kind())
                .unwrap_or_else(|| panic!("{} missing from the table", info.qualified_kind()));
            assert_eq!(info, builtin);
        }
        check::<Pod>();
        check::<Node>();
        check::<Service>();
        check::<Endpoints>();
        check::<Namespace>();
        check::<Event>();
        check::<ConfigMap>();
        check::<Secret>();
        check::<ServiceAccount>();
        check::<ReplicationController>();
        check::<PersistentVolume>();
        check::<PersistentVolumeClaim>();
        check::<LimitRange>();
        check::<ResourceQuota>();
        check::<PodTemplate>();
        check::<Deployment>();
        check::<ReplicaSet>();
        check::<DaemonSet>();
        check::<StatefulSet>();
        check::<ControllerRevision>();
        check::<Job>();
        check::<CronJob>();
        check::<Lease>();
        check::<EndpointSlice>();
        check::<EventsEvent>();
        check::<Ingress>();
        check::<NetworkPolicy>();
        check::<IngressClass>();
        check::<PodDisruptionBudget>();
        check::<Role>();
        check::<RoleBinding>();
        check::<ClusterRole>();
        check::<ClusterRoleBinding>();
        check::<PriorityClass>();
        check::<StorageClass>();
        check::<CustomResourceDefinition>();
        check::<HorizontalPodAutoscaler>();
        assert_eq!(ResourceInfo::builtins().count(), 37);
    }

    #[test]
    fn pod_info_comes_from_the_built_in_table() {
        let pod = Pod::info();
        assert_eq!(pod.api_version(), "v1");
        assert_eq!(pod.qualified_resource(), "pods");
        assert_eq!(pod.qualified_kind(), "Pod");
        assert_eq!(pod.singular(), "pod");
        assert_eq!(pod.short_names(), ["po"]);
        assert!(pod.namespaced());
        assert_eq!(
            pod.subresources(),
            Subresources {
                status: true,
                scale: false
            }
        );
        assert!(pod.supports_field_label("spec.nodeName"));
        assert!(pod.supports_field_label("metadata.namespace"));
        assert!(!pod.supports_field_label("spec.replicas"));
        assert_eq!(pod.storage_prefix(), "/registry/pods/");
    }

    #[test]
    fn deployment_is_qualified_by_its_group_and_scales() {
        let deployment = Deployment::info();
        assert_eq!(deployment.api_version(), "apps/v1");
        assert_eq!(deployment.qualified_resource(), "deployments.apps");
        assert_eq!(deployment.qualified_kind(), "Deployment.apps");
        assert_eq!(deployment.short_names(), ["deploy"]);
        assert!(deployment.subresources().scale);
        assert_eq!(
            deployment.to_api_resource(),
            ApiResource::erase::<Deployment>(&())
        );
        assert_eq!(
            deployment.group_version_kind(),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
    }

    #[test]
    fn scale_subresource_is_served_by_exactly_the_four_scalable_kinds() {
        let mut scalable: Vec<String> = ResourceInfo::builtins()
            .filter(|info| info.subresources().scale)
            .map(|info| info.kind().to_string())
            .collect();
        scalable.sort();
        assert_eq!(
            scalable,
            [
                "Deployment",
                "ReplicaSet",
                "ReplicationController",
                "StatefulSet"
            ]
        );
    }

    #[test]
    fn built_in_groups_store_under_the_plain_resource_name() {
        assert_eq!(
            key_of("", "Pod", Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(
            key_of("apps", "Deployment", Some("prod"), "api"),
            "/registry/deployments/prod/api"
        );
        assert_eq!(
            key_of("rbac.authorization.k8s.io", "ClusterRole", None, "admin"),
            "/registry/clusterroles/admin"
        );
        assert_eq!(
            key_of("coordination.k8s.io", "Lease", Some("kube-system"), "lock"),
            "/registry/leases/kube-system/lock"
        );
        assert_eq!(
            key_of("", "Namespace", None, "default"),
            "/registry/namespaces/default"
        );
    }

    #[test]
    fn kube_apiserver_renames_are_kept() {
        assert_eq!(key_of("", "Node", None, "n1"), "/registry/minions/n1");
        assert_eq!(
            key_of("", "Service", Some("default"), "kubernetes"),
            "/registry/services/specs/default/kubernetes"
        );
        assert_eq!(
            key_of("", "Endpoints", Some("default"), "kubernetes"),
            "/registry/services/endpoints/default/kubernetes"
        );
        assert_eq!(
            key_of("", "ReplicationController", Some("default"), "rc"),
            "/registry/controllers/default/rc"
        );
        assert_eq!(
            key_of("networking.k8s.io", "Ingress", Some("default"), "web"),
            "/registry/ingress/default/web"
        );
        assert_eq!(
            ResourceInfo::new("extensions", "v1beta1", "Ingress", "ingresses", true)
                .storage_prefix(),
            "/registry/ingress/"
        );
    }

    #[test]
    fn both_event_groups_share_the_core_event_prefix() {
        let core = ResourceInfo::builtin("", "Event").unwrap();
        let events = ResourceInfo::builtin("events.k8s.io", "Event").unwrap();
        assert_eq!(core.storage_prefix(), "/registry/events/");
        assert_eq!(events.storage_prefix(), core.storage_prefix());
        assert_eq!(events.field_labels(), core.field_labels());
    }

    #[test]
    fn aggregated_and_custom_groups_store_under_their_group() {
        assert_eq!(
            key_of(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                None,
                "widgets.example.com"
            ),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
        );
        let api_service = ResourceInfo::new(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "apiservices",
            false,
        );
        assert_eq!(
            api_service.key(None, "v1.apps").unwrap(),
            "/registry/apiregistration.k8s.io/apiservices/v1.apps"
        );
        let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        assert_eq!(
            widget.key(Some("default"), "w1").unwrap(),
            "/registry/example.com/widgets/default/w1"
        );
    }

    #[test]
    fn custom_kinds_get_defaults_that_builders_override() {
        let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        assert_eq!(widget.singular(), "widget");
        assert!(widget.short_names().is_empty());
        assert_eq!(
            widget.subresources(),
            Subresources {
                status: true,
                scale: false
            }
        );
        assert!(widget.field_labels().is_empty());

        let widget = widget
            .with_short_names(["wd"])
            .with_singular("widgetto")
            .with_subresources(Subresources {
                status: false,
                scale: true,
            })
            .with_field_labels(["spec.size"]);
        assert_eq!(widget.short_names(), ["wd"]);
        assert_eq!(widget.singular(), "widgetto");
        assert!(widget.subresources().scale && !widget.subresources().status);
        assert!(widget.supports_field_label("spec.size"));
    }

    #[test]
    fn namespaced_kind_without_namespace_is_a_bad_request() {
        let error = Pod::info().key(None, "web").unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(
            error.to_string().contains("namespace is required"),
            "{error}"
        );
    }

    #[test]
    fn cluster_scoped_kind_with_namespace_is_a_bad_request() {
        let error = Node::info().key(Some("default"), "n1").unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }));
        assert!(Node::info().namespace_prefix("default").is_err());
    }

    #[test]
    fn names_that_would_break_the_key_are_rejected() {
        let pod = Pod::info();
        for name in ["", ".", "..", "a/b", "a%2Fb"] {
            let error = pod.key(Some("default"), name).unwrap_err();
            assert!(
                matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata.name")
            );
        }
        for namespace in ["", ".", "..", "a/b"] {
            let error = pod.key(Some(namespace), "web").unwrap_err();
            assert!(
                matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata.namespace")
            );
        }
        assert_eq!(
            pod.key(Some("default"), "a/b").unwrap_err().to_string(),
            r#"metadata.name: "a/b": may not contain '/'"#
        );
    }

    #[test]
    fn parse_key_inverts_key() {
        let pod = Pod::info();
        let key = pod.key(Some("default"), "web").unwrap();
        assert_eq!(
            pod.parse_key(&key),
            Some((Some("default".into()), "web".into()))
        );
        assert_eq!(
            pod.namespace_prefix("default").unwrap(),
            "/registry/pods/default/"
        );

        let node = Node::info();
        let key = node.key(None, "n1").unwrap();
        assert_eq!(node.parse_key(&key), Some((None, "n1".into())));

        assert_eq!(pod.parse_key("/registry/pods/default"), None);
        assert_eq!(pod.parse_key("/registry/pods/default/a/b"), None);
        assert_eq!(pod.parse_key("/registry/minions/n1"), None);
        assert_eq!(node.parse_key("/registry/minions/"), None);
        assert_eq!(
            Service::info().parse_key("/registry/services/endpoints/default/kubernetes"),
            None
        );
    }
}
