//! Server-side printing: `as=Table` responses, so `kubectl get` shows Kubernetes' columns.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io`. The server answers a
//! `meta.k8s.io/v1` `Table`: column definitions (priority 0 always shown, 1 with `-o wide`)
//! and one row per object, each carrying the object's metadata as `PartialObjectMetadata`.
//! The columns follow kube-apiserver's printers for the common kinds; other kinds get NAME and
//! AGE.

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

/// Whether the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("as=Table") && accept.contains("g=meta.k8s.io"))
}

/// One column: name, type, and priority (0: always shown; 1: with `-o wide`).
type Column = (&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Node" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
        ],
        "Service" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Event" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Secret" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Lease" => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        "Endpoints" => &[
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

/// The column definitions of `kind`.
pub fn column_definitions(kind: &str) -> Value {
    Value::Array(
        columns(kind)
            .iter()
            .map(|(name, kind, priority)| {
                json!({
                    "name": name,
                    "type": kind,
                    "format": if *name == "Name" { "name" } else { "" },
                    "description": "",
                    "priority": priority,
                })
            })
            .collect(),
    )
}

/// What each row carries of its object: the `includeObject` query parameter (Kubernetes'
/// `IncludeObjectPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object (`None`).
    None,
    /// The object's metadata, as a `PartialObjectMetadata` (`Metadata`, the default).
    #[default]
    Metadata,
    /// The whole object (`Object`): kubectl asks for it to sort rows (`--sort-by`).
    Object,
}

impl IncludeObject {
    /// The policy a query value names; `None` for a value Kubernetes does not define.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// One row for `object` of `kind`, as of `now` (seconds since the epoch), carrying what
/// `include` asks of the object.
pub fn row(kind: &str, object: &Value, include: IncludeObject, now: i64) -> Value {
    let cells: Vec<Value> = columns(kind)
        .iter()
        .map(|(name, _, _)| cell(kind, name, object, now))
        .collect();
    let mut row = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_default(),
            });
        }
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A whole table for `objects` of `kind`; `list_metadata` is copied (resourceVersion,
/// continue); `with_columns` false leaves the definitions out (later watch events).
pub fn table(
    kind: &str,
    objects: &[Value],
    list_metadata: Value,
    with_columns: bool,
    include: IncludeObject,
    now: i64,
) -> Value {
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "rows": objects
            .iter()
            .map(|object| row(kind, object, include, now))
            .collect::<Vec<_>>(),
    });
    table["columnDefinitions"] = if with_columns {
        column_definitions(kind)
    } else {
        Value::Array(Vec::new())
    };
    table
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(value: String) -> Value {
    Value::String(if value.is_empty() {
        "<none>".into()
    } else {
        value
    })
}

fn int(value: &Value) -> Value {
    json!(value.as_i64().unwrap_or(0))
}

fn containers_and_images(object: &Value) -> (String, String) {
    let containers = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<String> = containers.iter().map(|c| text(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn selector(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(expressions) = selector["matchExpressions"].as_array() {
        for expression in expressions {
            let values: Vec<String> = expression["values"]
                .as_array()
                .map(|v| v.iter().map(text).collect())
                .unwrap_or_default();
            terms.push(format!(
                "{} {} ({})",
                text(&expression["key"]),
                text(&expression["operator"]).to_lowercase(),
                values.join(",")
            ));
        }
    }
    terms.join(",")
}

fn cell(kind: &str, column: &str, object: &Value, now: i64) -> Value {
    let metadata = &object["metadata"];
    let spec = &object["spec"];
    let status = &object["status"];
    match (kind, column) {
        (_, "Name") => Value::String(text(&metadata["name"])),
        (_, "Age") => Value::String(age(&metadata["creationTimestamp"], now)),
        ("Pod", "Ready") => {
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            Value::String(format!("{ready}/{total}"))
        }
        ("Pod", "Status") => {
            let waiting = status["containerStatuses"].as_array().and_then(|statuses| {
                statuses
                    .iter()
                    .find_map(|s| s["state"]["waiting"]["reason"].as_str().map(String::from))
            });
            let phase = text(&status["phase"]);
            Value::String(if !metadata["deletionTimestamp"].is_null() {
                "Terminating".into()
            } else if let Some(reason) = waiting {
                reason
            } else if let Some(reason) = status["reason"].as_str() {
                reason.into()
            } else if phase.is_empty() {
                "Pending".into()
            } else {
                phase
            })
        }
        ("Pod", "Restarts") => {
            let restarts: i64 = status["containerStatuses"]
                .as_array()
                .map(|statuses| {
                    statuses
                        .iter()
                        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            Value::String(restarts.to_string())
        }
        ("Pod", "IP") => or_none(text(&status["podIP"])),
        ("Pod", "Node") => or_none(text(&spec["nodeName"])),
        ("Pod", "Nominated Node") => or_none(text(&status["nominatedNodeName"])),
        ("Pod", "Readiness Gates") => or_none(String::new()),
        ("Deployment", "Ready") => Value::String(format!(
            "{}/{}",
            status["readyReplicas"].as_i64().unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(0)
        )),
        ("Deployment", "Up-to-date") => int(&status["updatedReplicas"]),
        ("Deployment", "Available") => int(&status["availableReplicas"]),
        ("ReplicaSet", "Desired") => int(&spec["replicas"]),
        ("ReplicaSet", "Current") => int(&status["replicas"]),
        ("ReplicaSet", "Ready") => int(&status["readyReplicas"]),
        ("Deployment" | "ReplicaSet", "Containers") => {
            Value::String(containers_and_images(object).0)
        }
        ("Deployment" | "ReplicaSet", "Images") => Value::String(containers_and_images(object).1),
        ("Deployment" | "ReplicaSet", "Selector") => Value::String(selector(&spec["selector"])),
        ("Node", "Status") => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
                .map(|c| match c["status"].as_str() {
                    Some("True") => "Ready",
                    Some("False") => "NotReady",
                    _ => "Unknown",
                })
                .unwrap_or("Unknown");
            let mut value = ready.to_string();
            if spec["unschedulable"] == true {
                value.push_str(",SchedulingDisabled");
            }
            Value::String(value)
        }
        ("Node", "Roles") => {
            let mut roles: Vec<String> = metadata["labels"]
                .as_object()
                .map(|labels| {
                    labels
                        .keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            or_none(roles.join(","))
        }
        ("Node", "Version") => Value::String(text(&status["nodeInfo"]["kubeletVersion"])),
        ("Node", "Internal-IP" | "External-IP") => {
            let wanted = if column == "Internal-IP" {
                "InternalIP"
            } else {
                "ExternalIP"
            };
            or_none(
                status["addresses"]
                    .as_array()
                    .and_then(|addresses| addresses.iter().find(|a| a["type"] == wanted))
                    .map(|a| text(&a["address"]))
                    .unwrap_or_default(),
            )
        }
        ("Service", "Type") => Value::String(text(&spec["type"])),
        ("Service", "Cluster-IP") => or_none(text(&spec["clusterIP"])),
        ("Service", "External-IP") => or_none(
            spec["externalIPs"]
                .as_array()
                .map(|ips| ips.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        ),
        ("Service", "Port(s)") => or_none(
            spec["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let protocol = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(node_port) => {
                                    format!("{}:{node_port}/{protocol}", text(&p["port"]))
                                }
                                None => format!("{}/{protocol}", text(&p["port"])),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
        ("Service", "Selector") => or_none(
            spec["selector"]
                .as_object()
                .map(|s| {
                    s.iter()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
        ("Event", "Last Seen") => {
            let last = [
                &object["lastTimestamp"],
                &object["deprecatedLastTimestamp"],
                &object["eventTime"],
                &metadata["creationTimestamp"],
            ]
            .into_iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or_default();
            Value::String(age(&last, now))
        }
        ("Event", "Type") => Value::String(text(&object["type"])),
        ("Event", "Reason") => Value::String(text(&object["reason"])),
        // events.k8s.io/v1 Events name the object `regarding` and carry their text in `note`.
        ("Event", "Object") => {
            let regarding = [&object["involvedObject"], &object["regarding"]]
                .into_iter()
                .find(|v| !v.is_null())
                .unwrap_or(&Value::Null);
            Value::String(format!(
                "{}/{}",
                text(&regarding["kind"]).to_lowercase(),
                text(&regarding["name"])
            ))
        }
        ("Event", "Message") => match &object["message"] {
            Value::Null => Value::String(text(&object["note"])),
            message => Value::String(text(message)),
        },
        ("Namespace", "Status") => Value::String(text(&status["phase"])),
        ("ConfigMap", "Data") => json!(
            object["data"].as_object().map_or(0, |d| d.len())
                + object["binaryData"].as_object().map_or(0, |d| d.len())
        ),
        ("Secret", "Type") => Value::String(text(&object["type"])),
        ("Secret", "Data") => json!(object["data"].as_object().map_or(0, |d| d.len())),
        ("Lease", "Holder") => Value::String(text(&spec["holderIdentity"])),
        ("Endpoints", "Endpoints") => Value::String(endpoint_list(object)),
        _ => Value::String(String::new()),
    }
}

/// An Endpoints object's ready addresses as kubectl lists them: `ip:port` for every port of
/// every subset (just `ip` when a subset has no ports), the first three, then `+ N more...`;
/// `<none>` when there are none.
fn endpoint_list(endpoints: &Value) -> String {
    const SHOWN: usize = 3;
    let mut all = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
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
    match all.len() {
        0 => "<none>".to_string(),
        n if n <= SHOWN => all.join(","),
        n => format!("{} + {} more...", all[..SHOWN].join(","), n - SHOWN),
    }
}

/// How long ago `timestamp` (RFC 3339) was, the way kubectl prints ages.
fn age(timestamp: &Value, now: i64) -> String {
    let Some(then) = timestamp
        .as_str()
        .and_then(|t| t.parse::<capstan_api::k8s_openapi::jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    human_duration(now - then.as_second())
}

/// apimachinery's `HumanDuration`: `45s`, `5m3s`, `3h10m`, `2d4h`, `1y30d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (seconds, shown) in [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (303, "5m3s"),
            (600, "10m"),
            (11_400, "3h10m"),
            (100_000, "27h"),
            (187_200, "2d4h"),
            (3_000_000, "34d"),
            (65_664_000, "2y30d"),
        ] {
            assert_eq!(human_duration(seconds), shown, "{seconds}");
        }
    }

    #[test]
    fn a_pod_row_shows_readiness_status_restarts_and_placement() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node01", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
                {"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}
            ]},
        });
        let now = 1_767_225_600 + 45; // 45 s after creation
        let row = row("Pod", &pod, IncludeObject::Metadata, now);
        assert_eq!(
            row["cells"],
            json!([
                "web-1",
                "1/2",
                "Running",
                "3",
                "45s",
                "10.244.1.5",
                "node01",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn a_deployment_row_shows_ready_over_desired() {
        let deployment = json!({
            "metadata": {"name": "newkubia", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "newkubia"}},
                     "template": {"spec": {"containers": [{"name": "newkubia", "image": "luksa/kubia:v2"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        let row = row(
            "Deployment",
            &deployment,
            IncludeObject::Metadata,
            1_767_225_600 + 60,
        );
        assert_eq!(
            row["cells"],
            json!([
                "newkubia",
                "2/3",
                3,
                2,
                "60s",
                "newkubia",
                "luksa/kubia:v2",
                "app=newkubia"
            ])
        );
    }

    #[test]
    fn events_read_like_kubectl_get_events() {
        let event = json!({
            "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "type": "Normal", "reason": "ScalingReplicaSet",
            "involvedObject": {"kind": "Deployment", "name": "nginx"},
            "message": "Scaled up replica set nginx-879cf7b8c to 1",
        });
        let row = row("Event", &event, IncludeObject::Metadata, 1_767_225_600);
        assert_eq!(
            row["cells"],
            json!([
                "0s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/nginx",
                "Scaled up replica set nginx-879cf7b8c to 1"
            ])
        );
    }

    #[test]
    fn events_k8s_io_events_read_their_regarding_object_and_note() {
        let event = json!({
            "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "type": "Warning", "reason": "BackOff",
            "regarding": {"kind": "Pod", "name": "web-0"},
            "note": "Back-off restarting failed container",
            "deprecatedLastTimestamp": "2026-01-01T00:00:00Z",
        });
        let row = row("Event", &event, IncludeObject::Metadata, 1_767_225_660);
        assert_eq!(
            row["cells"],
            json!([
                "60s",
                "Warning",
                "BackOff",
                "pod/web-0",
                "Back-off restarting failed container"
            ])
        );
    }

    #[test]
    fn an_endpoints_row_lists_three_addresses_then_how_many_more() {
        let endpoints = json!({
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"port": 8080}, {"port": 9090}],
            }],
        });
        assert_eq!(
            cell("Endpoints", "Endpoints", &endpoints, 0),
            "10.0.0.1:8080,10.0.0.2:8080,10.0.0.1:9090 + 1 more..."
        );
        let one =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cell("Endpoints", "Endpoints", &one, 0), "10.0.0.1:80");
        assert_eq!(cell("Endpoints", "Endpoints", &json!({}), 0), "<none>");
    }

    #[test]
    fn rows_carry_the_whole_object_its_metadata_or_nothing_as_asked() {
        let map = json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "m", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "data": {"a": "b"},
        });
        let whole = row("ConfigMap", &map, IncludeObject::Object, 1_767_225_600);
        assert_eq!(whole["object"], map);
        let metadata = row("ConfigMap", &map, IncludeObject::Metadata, 1_767_225_600);
        assert_eq!(metadata["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(metadata["object"]["metadata"]["name"], "m");
        assert!(metadata["object"].get("data").is_none());
        let bare = row("ConfigMap", &map, IncludeObject::None, 1_767_225_600);
        assert!(bare.get("object").is_none(), "{bare}");
        assert_eq!(bare["cells"], whole["cells"]);
    }

    #[test]
    fn include_object_reads_kubernetes_policy_names_and_defaults_to_metadata() {
        assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse("Metadata"),
            Some(IncludeObject::Metadata)
        );
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("object"), None);
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    }

    #[test]
    fn kubectl_s_accept_header_asks_for_a_table() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(wants_table(&headers));
        assert!(!wants_table(&HeaderMap::new()));
    }
}
