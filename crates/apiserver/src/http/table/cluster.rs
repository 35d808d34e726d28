//! The printers of the cluster-level kinds: networking (Ingress, IngressClass,
//! NetworkPolicy), EndpointSlices, storage classes, priority classes, Leases and RBAC
//! bindings, after Kubernetes' own. Roles, ClusterRoles, LimitRanges and
//! CustomResourceDefinitions have no printer in Kubernetes and get the default table.

use serde_json::{json, Value};

use super::format::{age, label_selector, list_with_more, load_balancer_addresses, string, text};
use super::ColumnSpec;

type Found = Option<(&'static [ColumnSpec], fn(&Value, i64) -> Vec<Value>)>;

/// The printer of cluster-level `kind` of `group`.
pub(super) fn printer(group: &str, kind: &str) -> Found {
    Some(match (group, kind) {
        ("networking.k8s.io", "Ingress") => (INGRESS, ingress),
        ("networking.k8s.io", "IngressClass") => (INGRESS_CLASS, ingress_class),
        ("networking.k8s.io", "NetworkPolicy") => (NETWORK_POLICY, network_policy),
        ("discovery.k8s.io", "EndpointSlice") => (ENDPOINT_SLICE, endpoint_slice),
        ("storage.k8s.io", "StorageClass") => (STORAGE_CLASS, storage_class),
        ("scheduling.k8s.io", "PriorityClass") => (PRIORITY_CLASS, priority_class),
        ("coordination.k8s.io", "Lease") => (LEASE, lease),
        ("rbac.authorization.k8s.io", "RoleBinding") => (ROLE_BINDING, role_binding),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => (ROLE_BINDING, role_binding),
        _ => return None,
    })
}

fn name(object: &Value) -> Value {
    string(&object["metadata"]["name"])
}

fn created(object: &Value, now: i64) -> Value {
    json!(age(&object["metadata"]["creationTimestamp"], now))
}

const INGRESS: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Class", "string", 0),
    ("Hosts", "string", 0),
    ("Address", "string", 0),
    ("Ports", "string", 0),
    ("Age", "string", 0),
];

fn ingress(ingress: &Value, now: i64) -> Vec<Value> {
    let spec = &ingress["spec"];
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    // The first three hosts named; `+ N more...` (N counting rules, not hosts) once a rule
    // follows the third.
    let (mut hosts, mut more) = (Vec::new(), false);
    for rule in &rules {
        more |= hosts.len() == 3;
        match text(&rule["host"]) {
            host if !more && !host.is_empty() => hosts.push(host),
            _ => {}
        }
    }
    let hosts = match (hosts.is_empty(), more) {
        (true, _) => "*".to_string(),
        (false, false) => hosts.join(","),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - 3),
    };
    let ports = match spec["tls"].as_array() {
        Some(tls) if !tls.is_empty() => "80, 443",
        _ => "80",
    };
    vec![
        name(ingress),
        match &spec["ingressClassName"] {
            Value::Null => json!("<none>"),
            class => string(class),
        },
        json!(hosts),
        json!(load_balancer_addresses(&ingress["status"]["loadBalancer"])),
        json!(ports),
        created(ingress, now),
    ]
}

const INGRESS_CLASS: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Controller", "string", 0),
    ("Parameters", "string", 0),
    ("Age", "string", 0),
];

fn ingress_class(class: &Value, now: i64) -> Vec<Value> {
    let parameters = &class["spec"]["parameters"];
    let parameters = if parameters.is_object() {
        let mut kind = text(&parameters["kind"]);
        if let Some(group) = parameters["apiGroup"].as_str() {
            kind = format!("{kind}.{group}");
        }
        format!("{kind}/{}", text(&parameters["name"]))
    } else {
        "<none>".to_string()
    };
    vec![
        name(class),
        string(&class["spec"]["controller"]),
        json!(parameters),
        created(class, now),
    ]
}

const NETWORK_POLICY: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Pod-Selector", "string", 0),
    ("Age", "string", 0),
];

fn network_policy(policy: &Value, now: i64) -> Vec<Value> {
    vec![
        name(policy),
        json!(label_selector(&policy["spec"]["podSelector"])),
        created(policy, now),
    ]
}

const ENDPOINT_SLICE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("AddressType", "string", 0),
    ("Ports", "string", 0),
    ("Endpoints", "string", 0),
    ("Age", "string", 0),
];

fn endpoint_slice(slice: &Value, now: i64) -> Vec<Value> {
    let ports: Vec<String> = slice["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| match (&port["port"], &port["name"]) {
            (Value::Number(number), _) => number.to_string(),
            (_, Value::String(name)) => name.clone(),
            _ => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|endpoint| {
            endpoint["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|address| text(&address))
        })
        .collect();
    vec![
        name(slice),
        string(&slice["addressType"]),
        json!(list_with_more(&ports, 3, "<unset>")),
        json!(list_with_more(&addresses, 3, "<unset>")),
        created(slice, now),
    ]
}

const STORAGE_CLASS: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Provisioner", "string", 0),
    ("ReclaimPolicy", "string", 0),
    ("VolumeBindingMode", "string", 0),
    ("AllowVolumeExpansion", "string", 0),
    ("Age", "string", 0),
];

/// Whether an annotation marks the class as the cluster's default.
fn is_default_class(class: &Value) -> bool {
    let annotations = &class["metadata"]["annotations"];
    annotations["storageclass.kubernetes.io/is-default-class"] == "true"
        || annotations["storageclass.beta.kubernetes.io/is-default-class"] == "true"
}

fn storage_class(class: &Value, now: i64) -> Vec<Value> {
    let mut shown = text(&class["metadata"]["name"]);
    if is_default_class(class) {
        shown.push_str(" (default)");
    }
    let or_default = |value: &Value, default: &str| match text(value) {
        v if v.is_empty() => default.to_string(),
        v => v,
    };
    vec![
        json!(shown),
        string(&class["provisioner"]),
        json!(or_default(&class["reclaimPolicy"], "Delete")),
        json!(or_default(&class["volumeBindingMode"], "Immediate")),
        json!(class["allowVolumeExpansion"].as_bool().unwrap_or(false)),
        created(class, now),
    ]
}

const PRIORITY_CLASS: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Value", "integer", 0),
    ("Global-Default", "boolean", 0),
    ("Age", "string", 0),
    ("PreemptionPolicy", "string", 0),
];

fn priority_class(class: &Value, now: i64) -> Vec<Value> {
    vec![
        name(class),
        json!(class["value"].as_i64().unwrap_or(0)),
        json!(class["globalDefault"].as_bool().unwrap_or(false)),
        created(class, now),
        string(&class["preemptionPolicy"]),
    ]
}

const LEASE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Holder", "string", 0),
    ("Age", "string", 0),
];

fn lease(lease: &Value, now: i64) -> Vec<Value> {
    vec![
        name(lease),
        string(&lease["spec"]["holderIdentity"]),
        created(lease, now),
    ]
}

const ROLE_BINDING: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Role", "string", 0),
    ("Age", "string", 0),
    ("Users", "string", 1),
    ("Groups", "string", 1),
    ("ServiceAccounts", "string", 1),
];

/// A RoleBinding or ClusterRoleBinding: the role it grants, and its subjects by kind
/// (service accounts as `namespace/name`).
fn role_binding(binding: &Value, now: i64) -> Vec<Value> {
    let (mut users, mut groups, mut accounts) = (Vec::new(), Vec::new(), Vec::new());
    for subject in binding["subjects"].as_array().into_iter().flatten() {
        let subject_name = text(&subject["name"]);
        match subject["kind"].as_str() {
            Some("User") => users.push(subject_name),
            Some("Group") => groups.push(subject_name),
            Some("ServiceAccount") => {
                accounts.push(format!("{}/{subject_name}", text(&subject["namespace"])))
            }
            _ => {}
        }
    }
    vec![
        name(binding),
        json!(format!(
            "{}/{}",
            text(&binding["roleRef"]["kind"]),
            text(&binding["roleRef"]["name"])
        )),
        created(binding, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(accounts.join(", ")),
    ]
}
