//! The table of Kubernetes built-in kinds Capstan knows by name: their versions, plurals,
//! scopes, short names, subresources and field labels.

use super::{ResourceInfo, Subresources};

/// One row of the built-in table.
pub(super) struct BuiltIn {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) kind: &'static str,
    pub(super) plural: &'static str,
    pub(super) namespaced: bool,
    pub(super) short_names: &'static [&'static str],
    pub(super) subresources: Subresources,
    pub(super) field_labels: &'static [&'static str],
    pub(super) categories: &'static [&'static str],
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
            categories: &[],
        }
    }

    /// Puts the kind in Kubernetes' `all` category (what `kubectl get all` lists).
    const fn in_all(mut self) -> Self {
        self.categories = &["all"];
        self
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

    pub(super) fn info(&self) -> ResourceInfo {
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
pub(super) static BUILT_INS: &[BuiltIn] = &[
    // core/v1
    BuiltIn::new("", "v1", "Pod", "pods", NAMESPACED)
        .short(&["po"])
        .status()
        .fields(POD_FIELDS)
        .in_all(),
    BuiltIn::new("", "v1", "Node", "nodes", CLUSTER)
        .short(&["no"])
        .status()
        .fields(&["spec.unschedulable"]),
    BuiltIn::new("", "v1", "Service", "services", NAMESPACED)
        .short(&["svc"])
        .status()
        .fields(&["spec.clusterIP", "spec.type"])
        .in_all(),
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
    .fields(&["status.replicas"])
    .in_all(),
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
        .scale()
        .in_all(),
    BuiltIn::new("apps", "v1", "ReplicaSet", "replicasets", NAMESPACED)
        .short(&["rs"])
        .status()
        .scale()
        .fields(&["status.replicas"])
        .in_all(),
    BuiltIn::new("apps", "v1", "DaemonSet", "daemonsets", NAMESPACED)
        .short(&["ds"])
        .status()
        .in_all(),
    BuiltIn::new("apps", "v1", "StatefulSet", "statefulsets", NAMESPACED)
        .short(&["sts"])
        .status()
        .scale()
        .in_all(),
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
        .fields(&["status.successful"])
        .in_all(),
    BuiltIn::new("batch", "v1", "CronJob", "cronjobs", NAMESPACED)
        .short(&["cj"])
        .status()
        .in_all(),
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
    .status()
    .in_all(),
    // autoscaling/v1: the same objects as autoscaling/v2 (stored in v2's shape under the same
    // key), converted by the kind's strategy; after v2 so that v2 is the preferred version.
    BuiltIn::new(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        NAMESPACED,
    )
    .short(&["hpa"])
    .status()
    .in_all(),
    // certificates.k8s.io/v1 (the `approval` subresource is served by the API server)
    BuiltIn::new(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        CLUSTER,
    )
    .short(&["csr"])
    .status()
    .fields(&["spec.signerName"]),
];
