//! The printers of the core group's kinds (and of `events.k8s.io` Events, which Kubernetes
//! prints as core Events), after Kubernetes' own.

use serde_json::{json, Value};

use super::format::{
    access_modes, age, containers_and_images, count, int, labels, list_with_more,
    load_balancer_addresses, or, or_none, seconds, storage, string, text,
};
use super::ColumnSpec;

type Found = Option<(&'static [ColumnSpec], fn(&Value, i64) -> Vec<Value>)>;

/// The printer of core `kind` (or of an `events.k8s.io` Event).
pub(super) fn printer(group: &str, kind: &str) -> Found {
    Some(match (group, kind) {
        ("", "Pod") => (POD, pod),
        ("", "Node") => (NODE, node),
        ("", "Service") => (SERVICE, service),
        ("", "Endpoints") => (ENDPOINTS, endpoints),
        ("", "Namespace") => (NAMESPACE, namespace),
        ("" | "events.k8s.io", "Event") => (EVENT, event),
        ("", "ConfigMap") => (CONFIG_MAP, config_map),
        ("", "Secret") => (SECRET, secret),
        ("", "ServiceAccount") => (SERVICE_ACCOUNT, service_account),
        ("", "PersistentVolume") => (PERSISTENT_VOLUME, persistent_volume),
        ("", "PersistentVolumeClaim") => (PERSISTENT_VOLUME_CLAIM, persistent_volume_claim),
        ("", "ResourceQuota") => (RESOURCE_QUOTA, resource_quota),
        ("", "PodTemplate") => (POD_TEMPLATE, pod_template),
        _ => return None,
    })
}

const POD: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "string", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];

/// What a pod's row says of its containers.
#[derive(Default)]
struct PodSummary {
    ready: usize,
    total: usize,
    restarts: i64,
    last_restart: Option<i64>,
    reason: String,
}

fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// Kubernetes' pod status: the phase or reason, overridden by what init containers and
/// containers are doing (`Init:1/2`, `CrashLoopBackOff`, `Completed`, `Terminating`, ...).
fn pod_summary(pod: &Value) -> PodSummary {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let init_containers = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_sidecar = |name: &Value| {
        init_containers
            .iter()
            .any(|c| &c["name"] == name && c["restartPolicy"] == "Always")
    };
    let mut summary = PodSummary {
        total: spec["containers"].as_array().map_or(0, Vec::len)
            + init_containers
                .iter()
                .filter(|c| c["restartPolicy"] == "Always")
                .count(),
        reason: match status["reason"].as_str() {
            Some(reason) if !reason.is_empty() => reason.to_string(),
            _ => text(&status["phase"]),
        },
        ..PodSummary::default()
    };
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let condition_true = |kind: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    if conditions
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        summary.reason = "SchedulingGated".into();
    }
    let (mut sidecar_restarts, mut sidecar_last_restart) = (0, None);
    let mut initializing = false;
    let init_statuses = status["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (index, container) in init_statuses.iter().enumerate() {
        let restarts = container["restartCount"].as_i64().unwrap_or(0);
        let finished = seconds(&container["lastState"]["terminated"]["finishedAt"]);
        summary.restarts += restarts;
        summary.last_restart = later(summary.last_restart, finished);
        let sidecar = is_sidecar(&container["name"]);
        if sidecar {
            sidecar_restarts += restarts;
            sidecar_last_restart = later(sidecar_last_restart, finished);
        }
        let terminated = &container["state"]["terminated"];
        let waiting = &container["state"]["waiting"];
        if terminated.is_object() && terminated["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if sidecar && container["started"] == true {
            if container["ready"] == true {
                summary.ready += 1;
            }
            continue;
        }
        initializing = true;
        summary.reason = if terminated.is_object() {
            match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(reason) => format!("Init:{reason}"),
                None => match terminated["signal"].as_i64().filter(|s| *s != 0) {
                    Some(signal) => format!("Init:Signal:{signal}"),
                    None => format!("Init:ExitCode:{}", text(&terminated["exitCode"])),
                },
            }
        } else {
            match waiting["reason"].as_str() {
                Some(reason) if !reason.is_empty() && reason != "PodInitializing" => {
                    format!("Init:{reason}")
                }
                _ => format!("Init:{index}/{}", init_containers.len()),
            }
        };
        break;
    }
    if !initializing || condition_true("Initialized") {
        summary.restarts = sidecar_restarts;
        summary.last_restart = sidecar_last_restart;
        let mut running = false;
        let statuses = status["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for container in statuses.iter().rev() {
            summary.restarts += container["restartCount"].as_i64().unwrap_or(0);
            summary.last_restart = later(
                summary.last_restart,
                seconds(&container["lastState"]["terminated"]["finishedAt"]),
            );
            let waiting = &container["state"]["waiting"];
            let terminated = &container["state"]["terminated"];
            if let Some(reason) = waiting["reason"].as_str().filter(|r| !r.is_empty()) {
                summary.reason = reason.to_string();
            } else if let Some(reason) = terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                summary.reason = reason.to_string();
            } else if terminated.is_object() {
                summary.reason = match terminated["signal"].as_i64().filter(|s| *s != 0) {
                    Some(signal) => format!("Signal:{signal}"),
                    None => format!("ExitCode:{}", text(&terminated["exitCode"])),
                };
            } else if container["ready"] == true && container["state"]["running"].is_object() {
                running = true;
                summary.ready += 1;
            }
        }
        if summary.reason == "Completed" && running {
            summary.reason = if condition_true("Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    let terminal = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
    if deleting && status["reason"] == "NodeLost" {
        summary.reason = "Unknown".into();
    } else if deleting && !terminal {
        summary.reason = "Terminating".into();
    }
    summary
}

fn pod(pod: &Value, now: i64) -> Vec<Value> {
    let summary = pod_summary(pod);
    let status = &pod["status"];
    let restarts = match summary.last_restart {
        Some(last) if summary.restarts != 0 => format!(
            "{} ({} ago)",
            summary.restarts,
            super::format::human_duration(now - last)
        ),
        _ => summary.restarts.to_string(),
    };
    let ip = status["podIPs"][0]["ip"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| text(&status["podIP"]));
    let gates = pod["spec"]["readinessGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        let met = gates
            .iter()
            .filter(|gate| {
                conditions
                    .iter()
                    .any(|c| c["type"] == gate["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        string(&pod["metadata"]["name"]),
        json!(format!("{}/{}", summary.ready, summary.total)),
        json!(summary.reason),
        json!(restarts),
        json!(age(&pod["metadata"]["creationTimestamp"], now)),
        or_none(ip),
        or_none(text(&pod["spec"]["nodeName"])),
        or_none(text(&status["nominatedNodeName"])),
        json!(readiness_gates),
    ]
}

const NODE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
    ("Internal-IP", "string", 1),
    ("External-IP", "string", 1),
    ("OS-Image", "string", 1),
    ("Kernel-Version", "string", 1),
    ("Container-Runtime", "string", 1),
];

fn node(node: &Value, now: i64) -> Vec<Value> {
    let status = &node["status"];
    let mut state: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|c| c["type"] == "Ready")
        .into_iter()
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready".to_string(),
            _ => "NotReady".to_string(),
        })
        .collect();
    if state.is_empty() {
        state.push("Unknown".into());
    }
    if node["spec"]["unschedulable"] == true {
        state.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    for (key, value) in node["metadata"]["labels"].as_object().into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if key == "kubernetes.io/role" && !text(value).is_empty() {
            roles.push(text(value));
        }
    }
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .map(|a| text(&a["address"]))
            .unwrap_or_default()
    };
    let info = &status["nodeInfo"];
    vec![
        string(&node["metadata"]["name"]),
        json!(state.join(",")),
        or_none(roles.join(",")),
        json!(age(&node["metadata"]["creationTimestamp"], now)),
        string(&info["kubeletVersion"]),
        or_none(address("InternalIP")),
        or_none(address("ExternalIP")),
        or(text(&info["osImage"]), "<unknown>"),
        or(text(&info["kernelVersion"]), "<unknown>"),
        or(text(&info["containerRuntimeVersion"]), "<unknown>"),
    ]
}

const SERVICE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Cluster-IP", "string", 0),
    ("External-IP", "string", 0),
    ("Port(s)", "string", 0),
    ("Age", "string", 0),
    ("Selector", "string", 1),
];

fn service(service: &Value, now: i64) -> Vec<Value> {
    let spec = &service["spec"];
    let cluster_ip = spec["clusterIPs"][0]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| text(&spec["clusterIP"]));
    let external: Vec<String> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let external_ip = match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" => or_none(external.join(",")),
        "LoadBalancer" => {
            let balancers = load_balancer_addresses(&service["status"]["loadBalancer"]);
            let mut all: Vec<String> = balancers
                .split(',')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            all.extend(external);
            or(all.join(","), "<pending>")
        }
        "ExternalName" => string(&spec["externalName"]),
        _ => json!("<unknown>"),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(node_port) => format!("{}:{node_port}/{protocol}", text(&p["port"])),
                None => format!("{}/{protocol}", text(&p["port"])),
            }
        })
        .collect();
    vec![
        string(&service["metadata"]["name"]),
        json!(spec["type"].as_str().unwrap_or("ClusterIP")),
        or_none(cluster_ip),
        external_ip,
        or_none(ports.join(",")),
        json!(age(&service["metadata"]["creationTimestamp"], now)),
        json!(labels(&spec["selector"])),
    ]
}

const ENDPOINTS: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Endpoints", "string", 0),
    ("Age", "string", 0),
];

fn endpoints(endpoints: &Value, now: i64) -> Vec<Value> {
    vec![
        string(&endpoints["metadata"]["name"]),
        json!(endpoint_list(endpoints)),
        json!(age(&endpoints["metadata"]["creationTimestamp"], now)),
    ]
}

/// An Endpoints object's ready addresses as kubectl lists them: `ip:port` for every port of
/// every subset (just `ip` when a subset has no ports), the first three, then `+ N more...`;
/// `<none>` when there are no subsets, nothing when the subsets have no addresses.
pub(super) fn endpoint_list(endpoints: &Value) -> String {
    let subsets = endpoints["subsets"].as_array().cloned().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut all = Vec::new();
    for subset in &subsets {
        let addresses: Vec<String> = subset["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|address| text(&address["ip"]))
            .collect();
        match subset["ports"].as_array().filter(|ports| !ports.is_empty()) {
            None => all.extend(addresses),
            Some(ports) => {
                for port in ports {
                    let port = text(&port["port"]);
                    all.extend(addresses.iter().map(|ip| match ip.contains(':') {
                        true => format!("[{ip}]:{port}"),
                        false => format!("{ip}:{port}"),
                    }));
                }
            }
        }
    }
    list_with_more(&all, 3, "")
}

const NAMESPACE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Age", "string", 0),
];

fn namespace(namespace: &Value, now: i64) -> Vec<Value> {
    vec![
        string(&namespace["metadata"]["name"]),
        string(&namespace["status"]["phase"]),
        json!(age(&namespace["metadata"]["creationTimestamp"], now)),
    ]
}

const EVENT: &[ColumnSpec] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Subobject", "string", 1),
    ("Source", "string", 1),
    ("Message", "string", 0),
    ("First Seen", "string", 1),
    ("Count", "string", 1),
    ("Name", "string", 1),
];

/// A core Event, or an `events.k8s.io` one read through its deprecated core fields
/// (`regarding`, `note`, `deprecatedLastTimestamp`, ...), as Kubernetes converts it.
fn event(event: &Value, now: i64) -> Vec<Value> {
    let field = |core: &str, events: &str| -> Value {
        match &event[core] {
            Value::Null => event[events].clone(),
            value => value.clone(),
        }
    };
    let event_time = &event["eventTime"];
    let first_seen = match field("firstTimestamp", "deprecatedFirstTimestamp") {
        Value::Null => age(event_time, now),
        first => age(&first, now),
    };
    let mut last_seen = match field("lastTimestamp", "deprecatedLastTimestamp") {
        Value::Null => first_seen.clone(),
        last => age(&last, now),
    };
    let mut count = field("count", "deprecatedCount").as_i64().unwrap_or(0);
    if event["series"].is_object() {
        last_seen = age(&event["series"]["lastObservedTime"], now);
        count = event["series"]["count"].as_i64().unwrap_or(count);
    } else if count == 0 {
        count = 1;
    }
    let regarding = field("involvedObject", "regarding");
    let kind = text(&regarding["kind"]).to_lowercase();
    let object = match text(&regarding["name"]) {
        name if name.is_empty() => kind,
        name => format!("{kind}/{name}"),
    };
    let source = field("source", "deprecatedSource");
    let source = match text(&source["component"]) {
        component if !component.is_empty() => match text(&source["host"]) {
            host if host.is_empty() => component,
            host => format!("{component}, {host}"),
        },
        _ => {
            let controller = text(&event["reportingController"]);
            match text(&event["reportingInstance"]) {
                instance if instance.is_empty() => controller,
                instance => format!("{controller}, {instance}"),
            }
        }
    };
    vec![
        json!(last_seen),
        string(&event["type"]),
        string(&event["reason"]),
        json!(object),
        string(&regarding["fieldPath"]),
        json!(source),
        json!(text(&field("message", "note")).trim()),
        json!(first_seen),
        json!(count),
        string(&event["metadata"]["name"]),
    ]
}

const CONFIG_MAP: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Data", "string", 0),
    ("Age", "string", 0),
];

fn config_map(map: &Value, now: i64) -> Vec<Value> {
    vec![
        string(&map["metadata"]["name"]),
        json!(count(&map["data"]) + count(&map["binaryData"])),
        json!(age(&map["metadata"]["creationTimestamp"], now)),
    ]
}

const SECRET: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Data", "string", 0),
    ("Age", "string", 0),
];

fn secret(secret: &Value, now: i64) -> Vec<Value> {
    vec![
        string(&secret["metadata"]["name"]),
        string(&secret["type"]),
        json!(count(&secret["data"])),
        json!(age(&secret["metadata"]["creationTimestamp"], now)),
    ]
}

const SERVICE_ACCOUNT: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Secrets", "string", 0),
    ("Age", "string", 0),
];

fn service_account(account: &Value, now: i64) -> Vec<Value> {
    vec![
        string(&account["metadata"]["name"]),
        json!(count(&account["secrets"])),
        json!(age(&account["metadata"]["creationTimestamp"], now)),
    ]
}

const PERSISTENT_VOLUME: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("Reclaim Policy", "string", 0),
    ("Status", "string", 0),
    ("Claim", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Reason", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];

/// The storage class of a volume or claim: the beta annotation when it is there (even
/// empty), else `storageClassName`.
fn storage_class(object: &Value) -> String {
    match &object["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] {
        Value::Null => text(&object["spec"]["storageClassName"]),
        annotation => text(annotation),
    }
}

/// A class name that may be unset: `<unset>` when absent, the name (even empty) otherwise.
fn unset_or(value: &Value) -> Value {
    match value {
        Value::Null => json!("<unset>"),
        value => string(value),
    }
}

fn persistent_volume(volume: &Value, now: i64) -> Vec<Value> {
    let spec = &volume["spec"];
    let claim = match &spec["claimRef"] {
        Value::Null => String::new(),
        claim => format!("{}/{}", text(&claim["namespace"]), text(&claim["name"])),
    };
    let phase = if volume["metadata"]["deletionTimestamp"].is_null() {
        text(&volume["status"]["phase"])
    } else {
        "Terminating".into()
    };
    vec![
        string(&volume["metadata"]["name"]),
        json!(storage(&spec["capacity"])),
        json!(access_modes(&spec["accessModes"])),
        string(&spec["persistentVolumeReclaimPolicy"]),
        json!(phase),
        json!(claim),
        json!(storage_class(volume)),
        unset_or(&spec["volumeAttributesClassName"]),
        string(&volume["status"]["reason"]),
        json!(age(&volume["metadata"]["creationTimestamp"], now)),
        unset_or(&spec["volumeMode"]),
    ]
}

const PERSISTENT_VOLUME_CLAIM: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Volume", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];

fn persistent_volume_claim(claim: &Value, now: i64) -> Vec<Value> {
    let status = &claim["status"];
    let phase = if claim["metadata"]["deletionTimestamp"].is_null() {
        text(&status["phase"])
    } else {
        "Terminating".into()
    };
    let bound = !text(&claim["spec"]["volumeName"]).is_empty();
    let (capacity, modes) = if bound {
        (
            storage(&status["capacity"]),
            access_modes(&status["accessModes"]),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        string(&claim["metadata"]["name"]),
        json!(phase),
        string(&claim["spec"]["volumeName"]),
        json!(capacity),
        json!(modes),
        json!(storage_class(claim)),
        unset_or(&claim["spec"]["volumeAttributesClassName"]),
        json!(age(&claim["metadata"]["creationTimestamp"], now)),
        unset_or(&claim["spec"]["volumeMode"]),
    ]
}

const RESOURCE_QUOTA: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Request", "string", 0),
    ("Limit", "string", 0),
    ("Age", "string", 0),
];

/// A quota's use of each resource its status says it limits (`pods: 1/10`), requests and
/// limits apart, sorted by resource name; nothing before the quota has a status.
fn resource_quota(quota: &Value, now: i64) -> Vec<Value> {
    let hard = quota["status"]["hard"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for name in names {
        let used = match text(&quota["status"]["used"][name.as_str()]) {
            used if used.is_empty() => "0".to_string(),
            used => used,
        };
        let entry = format!("{name}: {used}/{}", text(&hard[name.as_str()]));
        if name.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        string(&quota["metadata"]["name"]),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        json!(age(&quota["metadata"]["creationTimestamp"], now)),
    ]
}

const POD_TEMPLATE: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Containers", "string", 0),
    ("Images", "string", 0),
    ("Pod Labels", "string", 0),
];

fn pod_template(template: &Value, _now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(&template["template"]["spec"]);
    vec![
        string(&template["metadata"]["name"]),
        containers,
        images,
        json!(labels(&template["template"]["metadata"]["labels"])),
    ]
}

/// The desired, current and ready replicas of a ReplicaSet or ReplicationController.
pub(super) fn desired_current_ready(object: &Value) -> [Value; 3] {
    [
        int(&object["spec"]["replicas"]),
        int(&object["status"]["replicas"]),
        int(&object["status"]["readyReplicas"]),
    ]
}
