//! The default RBAC roles and bindings, as kube-apiserver's RBAC post-start hook creates them,
//! written as data.
//!
//! - The user-facing roles use aggregation as Kubernetes does: `admin`, `edit` and `view` have
//!   an `aggregationRule` and no rules of their own; `edit` is labelled to join `admin`,
//!   `view` to join `edit`, and the `system:aggregate-to-admin`, `system:aggregate-to-edit`
//!   and `system:aggregate-to-view` ClusterRoles carry the rules (the RBAC authorizer
//!   resolves aggregation at decision time). `cluster-admin` grants everything.
//! - The discovery roles (`system:discovery`, `system:basic-user`,
//!   `system:public-info-viewer`), the component roles (`system:kube-scheduler`,
//!   `system:kube-controller-manager`, `system:node`, `system:node-proxier`) and one
//!   `system:controller:<name>` role per built-in controller Capstan runs.
//! - The `system::leader-locking-kube-scheduler` and
//!   `system::leader-locking-kube-controller-manager` Roles in `kube-system`, with their
//!   bindings.
//!
//! Every object carries the label `kubernetes.io/bootstrapping: rbac-defaults` and the
//! annotation `rbac.authorization.kubernetes.io/autoupdate: "true"`.

use capstan_api::ResourceInfo;
use serde_json::{json, Map, Value};

/// The label every bootstrap RBAC object carries.
pub const BOOTSTRAPPING_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// The annotation every bootstrap RBAC object carries.
pub const AUTOUPDATE_ANNOTATION: (&str, &str) =
    ("rbac.authorization.kubernetes.io/autoupdate", "true");

/// One policy rule: API groups, resources (with `/subresource`), verbs, and optionally
/// resource names; or non-resource URLs with verbs.
struct Rule {
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    names: &'static [&'static str],
    urls: &'static [&'static str],
}

const fn rule(
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        groups,
        resources,
        verbs,
        names: &[],
        urls: &[],
    }
}

const fn named(
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    names: &'static [&'static str],
) -> Rule {
    Rule {
        groups,
        resources,
        verbs,
        names,
        urls: &[],
    }
}

const fn urls(urls: &'static [&'static str], verbs: &'static [&'static str]) -> Rule {
    Rule {
        groups: &[],
        resources: &[],
        verbs,
        names: &[],
        urls,
    }
}

const CORE: &[&str] = &[""];
const APPS: &[&str] = &["apps"];
const BATCH: &[&str] = &["batch"];
const COORDINATION: &[&str] = &["coordination.k8s.io"];
const DISCOVERY: &[&str] = &["discovery.k8s.io"];
const EVENTS: &[&str] = &["", "events.k8s.io"];
const RBAC: &[&str] = &["rbac.authorization.k8s.io"];

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const EDIT: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const EVENT_WRITE: &[&str] = &["create", "patch", "update"];

/// Events, as every component writes them.
const RECORD_EVENTS: Rule = rule(EVENTS, &["events"], EVENT_WRITE);

/// A ClusterRole: name, labels besides the bootstrap one, aggregation selectors (label
/// keys), rules.
struct ClusterRoleSpec {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    aggregates: &'static [&'static str],
    rules: &'static [Rule],
}

const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

/// The view rules: read everything in a namespace but Secrets and RBAC.
const VIEW_RULES: &[Rule] = &[
    rule(
        CORE,
        &[
            "pods",
            "pods/log",
            "pods/status",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "replicationcontrollers/status",
            "services",
            "services/status",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "configmaps",
            "serviceaccounts",
            "limitranges",
            "resourcequotas",
            "resourcequotas/status",
            "bindings",
            "events",
            "namespaces",
            "namespaces/status",
        ],
        READ,
    ),
    rule(
        APPS,
        &[
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
        READ,
    ),
    rule(
        &["autoscaling"],
        &[
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status",
        ],
        READ,
    ),
    rule(
        BATCH,
        &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        READ,
    ),
    rule(DISCOVERY, &["endpointslices"], READ),
    rule(&["events.k8s.io"], &["events"], READ),
    rule(
        &["policy"],
        &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        READ,
    ),
    rule(
        &["networking.k8s.io"],
        &["ingresses", "ingresses/status", "networkpolicies"],
        READ,
    ),
];

/// The edit rules on top of view: write the namespace's workloads, Secrets included.
const EDIT_RULES: &[Rule] = &[
    rule(
        CORE,
        &[
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "secrets",
            "services/proxy",
        ],
        READ,
    ),
    rule(CORE, &["serviceaccounts"], &["impersonate"]),
    rule(
        CORE,
        &[
            "pods",
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "pods/eviction",
        ],
        &["create", "delete", "deletecollection", "patch", "update"],
    ),
    rule(
        CORE,
        &[
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
            "endpoints",
        ],
        WRITE,
    ),
    rule(CORE, &["serviceaccounts/token"], &["create"]),
    rule(
        APPS,
        &[
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        ],
        WRITE,
    ),
    rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
    rule(BATCH, &["cronjobs", "jobs"], WRITE),
    rule(DISCOVERY, &["endpointslices"], WRITE),
    rule(&["policy"], &["poddisruptionbudgets"], WRITE),
    rule(
        &["networking.k8s.io"],
        &["ingresses", "networkpolicies"],
        WRITE,
    ),
    rule(COORDINATION, &["leases"], EDIT),
];

/// The admin rules on top of edit: the namespace's RBAC and authorization checks.
const ADMIN_RULES: &[Rule] = &[
    rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ),
    rule(RBAC, &["rolebindings", "roles"], EDIT),
];

static CLUSTER_ROLES: &[ClusterRoleSpec] = &[
    ClusterRoleSpec {
        name: "cluster-admin",
        labels: &[],
        aggregates: &[],
        rules: &[rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
    },
    ClusterRoleSpec {
        name: "admin",
        labels: &[],
        aggregates: &[TO_ADMIN.0],
        rules: &[],
    },
    ClusterRoleSpec {
        name: "edit",
        labels: &[TO_ADMIN],
        aggregates: &[TO_EDIT.0],
        rules: &[],
    },
    ClusterRoleSpec {
        name: "view",
        labels: &[TO_EDIT],
        aggregates: &[TO_VIEW.0],
        rules: &[],
    },
    ClusterRoleSpec {
        name: "system:aggregate-to-admin",
        labels: &[TO_ADMIN],
        aggregates: &[],
        rules: ADMIN_RULES,
    },
    ClusterRoleSpec {
        name: "system:aggregate-to-edit",
        labels: &[TO_EDIT],
        aggregates: &[],
        rules: EDIT_RULES,
    },
    ClusterRoleSpec {
        name: "system:aggregate-to-view",
        labels: &[TO_VIEW],
        aggregates: &[],
        rules: VIEW_RULES,
    },
    // `kubectl top` for whoever may view: metrics-server installs this role, Capstan serves
    // `metrics.k8s.io` itself.
    ClusterRoleSpec {
        name: "system:aggregated-metrics-reader",
        labels: &[TO_VIEW, TO_EDIT, TO_ADMIN],
        aggregates: &[],
        rules: &[rule(&["metrics.k8s.io"], &["pods", "nodes"], READ)],
    },
    // Full access to the kubelet's API (bound to nobody by default; the API server calls
    // kubelets as a member of `system:masters`).
    ClusterRoleSpec {
        name: "system:kubelet-api-admin",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(CORE, &["nodes"], &["get", "list", "watch", "proxy"]),
            rule(
                CORE,
                &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                &["*"],
            ),
        ],
    },
    ClusterRoleSpec {
        name: "system:discovery",
        labels: &[],
        aggregates: &[],
        rules: &[urls(
            &[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ],
            &["get"],
        )],
    },
    ClusterRoleSpec {
        name: "system:basic-user",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                &["create"],
            ),
            rule(
                &["authentication.k8s.io"],
                &["selfsubjectreviews"],
                &["create"],
            ),
        ],
    },
    ClusterRoleSpec {
        name: "system:public-info-viewer",
        labels: &[],
        aggregates: &[],
        rules: &[urls(
            &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            &["get"],
        )],
    },
    ClusterRoleSpec {
        name: "system:kube-scheduler",
        labels: &[],
        aggregates: &[],
        rules: &[
            RECORD_EVENTS,
            rule(COORDINATION, &["leases"], &["create"]),
            named(
                COORDINATION,
                &["leases"],
                &["get", "update"],
                &["kube-scheduler"],
            ),
            rule(CORE, &["endpoints"], &["create"]),
            named(
                CORE,
                &["endpoints"],
                &["get", "update"],
                &["kube-scheduler"],
            ),
            rule(CORE, &["nodes"], READ),
            rule(CORE, &["pods"], &["delete", "get", "list", "watch"]),
            rule(CORE, &["bindings", "pods/binding"], &["create"]),
            rule(CORE, &["pods/status"], &["patch", "update"]),
            rule(
                CORE,
                &[
                    "replicationcontrollers",
                    "services",
                    "namespaces",
                    "persistentvolumeclaims",
                    "persistentvolumes",
                    "configmaps",
                ],
                READ,
            ),
            rule(APPS, &["replicasets", "statefulsets"], READ),
            rule(&["policy"], &["poddisruptionbudgets"], READ),
            rule(
                &["storage.k8s.io"],
                &[
                    "storageclasses",
                    "csinodes",
                    "csidrivers",
                    "csistoragecapacities",
                ],
                READ,
            ),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
        ],
    },
    ClusterRoleSpec {
        name: "system:kube-controller-manager",
        labels: &[],
        aggregates: &[],
        rules: &[
            RECORD_EVENTS,
            rule(COORDINATION, &["leases"], &["create"]),
            named(
                COORDINATION,
                &["leases"],
                &["get", "update"],
                &["kube-controller-manager"],
            ),
            rule(CORE, &["endpoints"], &["create"]),
            named(
                CORE,
                &["endpoints"],
                &["get", "update"],
                &["kube-controller-manager"],
            ),
            rule(CORE, &["secrets", "serviceaccounts"], &["create"]),
            rule(CORE, &["secrets"], &["delete"]),
            rule(
                CORE,
                &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                &["get"],
            ),
            rule(CORE, &["secrets", "serviceaccounts"], &["update"]),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
            // Every shared informer.
            rule(&["*"], &["*"], &["list", "watch"]),
            rule(CORE, &["serviceaccounts/token"], &["create"]),
        ],
    },
    ClusterRoleSpec {
        name: "system:node",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["localsubjectaccessreviews", "subjectaccessreviews"],
                &["create"],
            ),
            rule(CORE, &["services"], READ),
            rule(CORE, &["nodes"], &["create", "get", "list", "watch"]),
            rule(CORE, &["nodes/status"], &["patch", "update"]),
            rule(CORE, &["nodes"], &["delete", "patch", "update"]),
            RECORD_EVENTS,
            rule(CORE, &["pods"], READ),
            rule(CORE, &["pods"], &["create", "delete"]),
            rule(CORE, &["pods/status"], &["patch", "update"]),
            rule(CORE, &["pods/eviction"], &["create"]),
            // Projected service account tokens, bound to the node's Pods.
            rule(CORE, &["serviceaccounts/token"], &["create"]),
            rule(CORE, &["configmaps", "secrets"], &["get", "list", "watch"]),
            rule(
                CORE,
                &["persistentvolumeclaims", "persistentvolumes"],
                &["get"],
            ),
            rule(CORE, &["endpoints"], &["get"]),
            rule(
                CORE,
                &["persistentvolumeclaims/status"],
                &["get", "patch", "update"],
            ),
            rule(
                COORDINATION,
                &["leases"],
                &["create", "delete", "get", "patch", "update"],
            ),
            rule(&["node.k8s.io"], &["runtimeclasses"], READ),
            rule(
                &["storage.k8s.io"],
                &["csidrivers", "volumeattachments"],
                &["get", "list", "watch"],
            ),
            rule(
                &["storage.k8s.io"],
                &["csinodes"],
                &["create", "delete", "get", "patch", "update"],
            ),
        ],
    },
    ClusterRoleSpec {
        name: "system:node-proxier",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(CORE, &["endpoints", "services"], &["list", "watch"]),
            rule(CORE, &["nodes"], READ),
            RECORD_EVENTS,
            rule(DISCOVERY, &["endpointslices"], &["list", "watch"]),
        ],
    },
    // One role per built-in controller Capstan runs (kube-controller-manager's names).
    ClusterRoleSpec {
        name: "system:controller:replicaset-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(APPS, &["replicasets"], &["get", "list", "update", "watch"]),
            rule(APPS, &["replicasets/status"], &["update"]),
            rule(APPS, &["replicasets/finalizers"], &["update"]),
            rule(
                CORE,
                &["pods"],
                &["create", "delete", "list", "patch", "watch"],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:deployment-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(APPS, &["deployments"], &["get", "list", "update", "watch"]),
            rule(APPS, &["deployments/status"], &["update"]),
            rule(APPS, &["deployments/finalizers"], &["update"]),
            rule(
                APPS,
                &["replicasets"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ],
            ),
            rule(CORE, &["pods"], &["get", "list", "update", "watch"]),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:endpoint-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(CORE, &["pods", "services"], &["get", "list", "watch"]),
            rule(
                CORE,
                &["endpoints"],
                &["create", "delete", "get", "list", "update", "watch"],
            ),
            rule(CORE, &["endpoints/restricted"], &["create"]),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:endpointslice-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                CORE,
                &["nodes", "pods", "services"],
                &["get", "list", "watch"],
            ),
            rule(CORE, &["services/finalizers"], &["update"]),
            rule(
                DISCOVERY,
                &["endpointslices"],
                &["create", "delete", "get", "list", "update", "watch"],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:node-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                CORE,
                &["nodes"],
                &["delete", "get", "list", "patch", "update", "watch"],
            ),
            rule(CORE, &["nodes/status"], &["patch", "update"]),
            rule(CORE, &["pods/status"], &["patch", "update"]),
            rule(CORE, &["pods"], &["delete", "list", "get", "watch"]),
            rule(COORDINATION, &["leases"], READ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:daemon-set-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(APPS, &["daemonsets"], &["get", "list", "watch"]),
            rule(APPS, &["daemonsets/status"], &["update"]),
            rule(APPS, &["daemonsets/finalizers"], &["update"]),
            rule(CORE, &["nodes"], &["get", "list", "watch"]),
            rule(
                CORE,
                &["pods"],
                &["create", "delete", "list", "patch", "watch"],
            ),
            rule(CORE, &["pods/binding"], &["create"]),
            rule(
                APPS,
                &["controllerrevisions"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:disruption-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(&["extensions", "apps"], &["deployments"], READ),
            rule(&["apps", "extensions"], &["replicasets"], READ),
            rule(CORE, &["replicationcontrollers"], READ),
            rule(&["policy"], &["poddisruptionbudgets"], READ),
            rule(APPS, &["statefulsets"], READ),
            rule(&["policy"], &["poddisruptionbudgets/status"], &["update"]),
            rule(&["*"], &["*/scale"], &["get"]),
            rule(CORE, &["pods"], READ),
            rule(CORE, &["pods/status"], &["update"]),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:service-account-controller",
        labels: &[],
        aggregates: &[],
        rules: &[rule(CORE, &["serviceaccounts"], &["create"]), RECORD_EVENTS],
    },
    ClusterRoleSpec {
        name: "system:controller:root-ca-cert-publisher",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(CORE, &["configmaps"], &["create", "update"]),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:generic-garbage-collector",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                &["*"],
                &["*"],
                &["delete", "get", "list", "patch", "update", "watch"],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:job-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                BATCH,
                &["jobs"],
                &["get", "list", "patch", "update", "watch"],
            ),
            rule(BATCH, &["jobs/status"], &["update"]),
            rule(BATCH, &["jobs/finalizers"], &["patch", "update"]),
            rule(
                CORE,
                &["pods"],
                &["create", "delete", "list", "patch", "watch"],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:namespace-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(CORE, &["namespaces"], &["delete", "get", "list", "watch"]),
            rule(
                CORE,
                &["namespaces/finalize", "namespaces/status"],
                &["update"],
            ),
            // Capstan's `Client` has no subresource verb: the controller finalizes through an
            // update of the Namespace that only removes its `kubernetes` finalizer.
            rule(CORE, &["namespaces"], &["update"]),
            rule(
                &["*"],
                &["*"],
                &["delete", "deletecollection", "get", "list"],
            ),
            RECORD_EVENTS,
        ],
    },
    ClusterRoleSpec {
        name: "system:controller:node-ipam-controller",
        labels: &[],
        aggregates: &[],
        rules: &[
            rule(
                CORE,
                &["nodes"],
                &["get", "list", "patch", "update", "watch"],
            ),
            rule(CORE, &["nodes/status"], &["patch", "update"]),
            RECORD_EVENTS,
        ],
    },
];

/// A ClusterRoleBinding: name (also the role's), users, groups.
struct BindingSpec {
    name: &'static str,
    role: &'static str,
    users: &'static [&'static str],
    groups: &'static [&'static str],
}

const fn bind(
    name: &'static str,
    users: &'static [&'static str],
    groups: &'static [&'static str],
) -> BindingSpec {
    BindingSpec {
        name,
        role: name,
        users,
        groups,
    }
}

const AUTHENTICATED: &str = "system:authenticated";
const KUBE_CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// The prefix of the built-in controllers' roles; each is bound to the controller's service
/// account in `kube-system` (Kubernetes' `--use-service-account-credentials`) and, because
/// Capstan's controller manager runs every controller under its own credentials, to the
/// user `system:kube-controller-manager` too.
pub const CONTROLLER_PREFIX: &str = "system:controller:";

static CLUSTER_ROLE_BINDINGS: &[BindingSpec] = &[
    bind("cluster-admin", &[], &["system:masters"]),
    bind("system:discovery", &[], &[AUTHENTICATED]),
    bind("system:basic-user", &[], &[AUTHENTICATED]),
    bind(
        "system:public-info-viewer",
        &[],
        &[AUTHENTICATED, "system:unauthenticated"],
    ),
    bind("system:kube-scheduler", &["system:kube-scheduler"], &[]),
    bind(
        "system:kube-controller-manager",
        &[KUBE_CONTROLLER_MANAGER],
        &[],
    ),
    // Kubernetes binds system:node through the Node authorizer; Capstan's nodes are users
    // in the `system:nodes` group, so the role is bound to the group.
    bind("system:node", &[], &["system:nodes"]),
    bind("system:node-proxier", &["system:kube-proxy"], &[]),
];

/// The `kube-system` Roles for leader election, and who they are bound to.
static LEADER_LOCKING: &[(&str, &str, &str)] = &[
    // (role, lease and endpoints name, user)
    (
        "system::leader-locking-kube-scheduler",
        "kube-scheduler",
        "system:kube-scheduler",
    ),
    (
        "system::leader-locking-kube-controller-manager",
        "kube-controller-manager",
        "system:kube-controller-manager",
    ),
];

/// The names of every bootstrap ClusterRole, in creation order.
pub fn cluster_role_names() -> impl Iterator<Item = &'static str> {
    CLUSTER_ROLES.iter().map(|role| role.name)
}

/// The names of every bootstrap ClusterRoleBinding, in creation order: the fixed ones, then
/// one per built-in controller role.
pub fn cluster_role_binding_names() -> impl Iterator<Item = &'static str> {
    let controllers = cluster_role_names().filter(|name| name.starts_with(CONTROLLER_PREFIX));
    CLUSTER_ROLE_BINDINGS
        .iter()
        .map(|binding| binding.name)
        .chain(controllers)
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut metadata = json!({
        "name": name,
        "labels": {BOOTSTRAPPING_LABEL.0: BOOTSTRAPPING_LABEL.1},
        "annotations": {AUTOUPDATE_ANNOTATION.0: AUTOUPDATE_ANNOTATION.1},
    });
    if let Some(namespace) = namespace {
        metadata["namespace"] = namespace.into();
    }
    metadata
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

fn rule_json(rule: &Rule) -> Value {
    let mut out = Map::new();
    out.insert("verbs".into(), strings(rule.verbs));
    if rule.urls.is_empty() {
        out.insert("apiGroups".into(), strings(rule.groups));
        out.insert("resources".into(), strings(rule.resources));
        if !rule.names.is_empty() {
            out.insert("resourceNames".into(), strings(rule.names));
        }
    } else {
        out.insert("nonResourceURLs".into(), strings(rule.urls));
    }
    Value::Object(out)
}

fn subjects(users: &[&str], groups: &[&str]) -> Value {
    let users = users.iter().map(|user| ("User", user));
    let groups = groups.iter().map(|group| ("Group", group));
    Value::Array(
        users
            .chain(groups)
            .map(|(kind, name)| {
                json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name})
            })
            .collect(),
    )
}

fn rbac(kind: &str) -> ResourceInfo {
    ResourceInfo::builtin("rbac.authorization.k8s.io", kind).expect("RBAC kinds are built in")
}

/// Every bootstrap RBAC object as (kind, namespace, object), roles before their bindings.
pub(crate) fn objects() -> Vec<(ResourceInfo, Option<String>, Value)> {
    let api_version = "rbac.authorization.k8s.io/v1";
    let mut objects = Vec::new();
    for role in CLUSTER_ROLES {
        let mut meta = metadata(role.name, None);
        for (key, value) in role.labels {
            meta["labels"][*key] = (*value).into();
        }
        let mut object = json!({
            "apiVersion": api_version,
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": role.rules.iter().map(rule_json).collect::<Vec<_>>(),
        });
        if !role.aggregates.is_empty() {
            object["aggregationRule"] = json!({
                "clusterRoleSelectors": role
                    .aggregates
                    .iter()
                    .map(|key| json!({"matchLabels": {*key: "true"}}))
                    .collect::<Vec<_>>(),
            });
        }
        objects.push((rbac("ClusterRole"), None, object));
    }
    for binding in CLUSTER_ROLE_BINDINGS {
        let object = json!({
            "apiVersion": api_version,
            "kind": "ClusterRoleBinding",
            "metadata": metadata(binding.name, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": binding.role},
            "subjects": subjects(binding.users, binding.groups),
        });
        objects.push((rbac("ClusterRoleBinding"), None, object));
    }
    for role in CLUSTER_ROLES {
        let Some(account) = role.name.strip_prefix(CONTROLLER_PREFIX) else {
            continue;
        };
        let mut subjects = subjects(&[KUBE_CONTROLLER_MANAGER], &[]);
        if let Some(list) = subjects.as_array_mut() {
            list.insert(
                0,
                json!({"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}),
            );
        }
        let object = json!({
            "apiVersion": api_version,
            "kind": "ClusterRoleBinding",
            "metadata": metadata(role.name, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role.name},
            "subjects": subjects,
        });
        objects.push((rbac("ClusterRoleBinding"), None, object));
    }
    let system = Some("kube-system".to_string());
    for (role, lock, user) in LEADER_LOCKING {
        let lock = strings(&[lock]);
        let rules = json!([
            {"apiGroups": [""], "resources": ["configmaps", "endpoints"], "verbs": ["watch"]},
            {"apiGroups": [""], "resources": ["configmaps", "endpoints"],
             "verbs": ["get", "update"], "resourceNames": lock},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "update"], "resourceNames": lock},
        ]);
        objects.push((
            rbac("Role"),
            system.clone(),
            json!({
                "apiVersion": api_version,
                "kind": "Role",
                "metadata": metadata(role, Some("kube-system")),
                "rules": rules,
            }),
        ));
        objects.push((
            rbac("RoleBinding"),
            system.clone(),
            json!({
                "apiVersion": api_version,
                "kind": "RoleBinding",
                "metadata": metadata(role, Some("kube-system")),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": subjects(&[user], &[]),
            }),
        ));
    }
    objects
}
