//! How Kubernetes' printers write values in cells: ages, label selectors, label sets,
//! container lists, and `<none>` for what is missing.

use serde_json::{json, Value};

/// The text of a scalar: a string as is, a number or boolean as JSON writes it, nothing for
/// null.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A string cell of `value`'s text.
pub(super) fn string(value: &Value) -> Value {
    Value::String(text(value))
}

/// A string cell: `value`, or `<none>` when it is empty.
pub(super) fn or_none(value: String) -> Value {
    or(value, "<none>")
}

/// A string cell: `value`, or `placeholder` when it is empty.
pub(super) fn or(value: String, placeholder: &str) -> Value {
    Value::String(if value.is_empty() {
        placeholder.to_string()
    } else {
        value
    })
}

/// An integer cell; 0 when absent.
pub(super) fn int(value: &Value) -> Value {
    json!(value.as_i64().unwrap_or(0))
}

/// The number of entries of a map or list; 0 when absent.
pub(super) fn count(value: &Value) -> i64 {
    match value {
        Value::Object(map) => map.len() as i64,
        Value::Array(items) => items.len() as i64,
        _ => 0,
    }
}

/// `True` or `False`, as Kubernetes prints booleans given as text; `<unset>` when absent.
pub(super) fn bool_text(value: &Value) -> Value {
    Value::String(
        match value.as_bool() {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        }
        .to_string(),
    )
}

/// Seconds since the epoch of an RFC 3339 timestamp.
pub(super) fn seconds(timestamp: &Value) -> Option<i64> {
    timestamp
        .as_str()
        .and_then(|t| t.parse::<capstan_api::k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

/// How long ago `timestamp` (RFC 3339) was, the way kubectl prints ages; `<unknown>` when
/// there is none.
pub(super) fn age(timestamp: &Value, now: i64) -> String {
    match seconds(timestamp) {
        Some(then) => human_duration(now - then),
        None => "<unknown>".into(),
    }
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

/// A label set as `labels.FormatLabels` writes it: `k=v` sorted by key, joined by commas;
/// `<none>` when empty.
pub(super) fn labels(set: &Value) -> String {
    let mut pairs: Vec<String> = set
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", text(value)))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A `LabelSelector` as `metav1.FormatLabelSelector` writes it: its requirements sorted by
/// key (`k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`), joined by commas; `<none>` when it
/// selects everything or is absent, `<error>` when it is not a valid selector.
pub(super) fn label_selector(selector: &Value) -> String {
    match selector_string(selector) {
        None => "<error>".into(),
        Some(text) if text.is_empty() => "<none>".into(),
        Some(text) => text,
    }
}

/// A `LabelSelector` as the selector it converts to prints itself (`selector.String()`): the
/// requirements of [`label_selector`], empty when it selects everything or is absent; `None`
/// when an expression is not valid (an unknown operator, `In` or `NotIn` without values,
/// `Exists` or `DoesNotExist` with some).
pub(super) fn selector_string(selector: &Value) -> Option<String> {
    let mut requirements: Vec<(String, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), format!("{key}={}", text(value))))
        .collect();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = text(&expression["key"]);
        let mut values: Vec<String> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        values.sort();
        let requirement = match expression["operator"].as_str().unwrap_or_default() {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.clone(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    let text: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Some(text.join(","))
}

/// The names and images of a pod spec's containers, each joined by commas.
pub(super) fn containers_and_images(pod_spec: &Value) -> (Value, Value) {
    let containers = pod_spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<String> = containers.iter().map(|c| text(&c["image"])).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// The first `max` of `items` joined by commas, then ` + N more...` for the rest; `empty`
/// when there are none.
pub(super) fn list_with_more(items: &[String], max: usize, empty: &str) -> String {
    match items.len() {
        0 => empty.to_string(),
        n if n <= max => items.join(","),
        n => format!("{} + {} more...", items[..max].join(","), n - max),
    }
}

/// The `storage` entry of a resource list (`capacity`), `0` when it has none, as Kubernetes
/// prints a missing quantity.
pub(super) fn storage(resources: &Value) -> String {
    match text(&resources["storage"]) {
        quantity if quantity.is_empty() => "0".into(),
        quantity => quantity,
    }
}

/// Access modes abbreviated as Kubernetes prints them, in its order: `RWO,ROX,RWX,RWOP`.
pub(super) fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .into_iter()
    .filter(|(mode, _)| modes.contains(mode))
    .map(|(_, short)| short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The addresses of a load balancer status (`ingress[].ip`, else `.hostname`), sorted and
/// without repeats, joined by commas.
pub(super) fn load_balancer_addresses(status: &Value) -> String {
    let mut addresses: Vec<String> = status["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ingress| {
            [&ingress["ip"], &ingress["hostname"]]
                .into_iter()
                .filter_map(Value::as_str)
                .find(|address| !address.is_empty())
                .map(String::from)
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses.join(",")
}
