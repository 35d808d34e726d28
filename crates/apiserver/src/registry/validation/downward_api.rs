//! The downward API's selectors, shared by environment variables (`env[].valueFrom`) and
//! volumes (`downwardAPI`, projected `downwardAPI` sources): `fieldRef` paths a Pod may expose
//! and `resourceFieldRef` resources with their divisors, with Kubernetes' messages.

use capstan_api::{quantity::parse_quantity, FieldError};
use serde_json::{Map, Value};

use super::names::{is_dns1123_subdomain, DNS1123_SUBDOMAIN_MESSAGE};

/// The `fieldRef` paths an environment variable may read, sorted as Kubernetes lists them.
pub(crate) const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The `fieldRef` paths a downward API volume file may read.
pub(crate) const VOLUME_FIELD_PATHS: [&str; 5] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// The resources a `resourceFieldRef` may name (besides `requests.hugepages-*` and
/// `limits.hugepages-*`), sorted.
const RESOURCE_FIELD_PATHS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// The field labels `v1` Pods convert (`ConvertDownwardAPIFieldLabel`).
const POD_FIELD_LABELS: [&str; 14] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn str_at<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `metadata.labels['app']` as `("metadata.labels", "app")` (`SplitMaybeSubscriptedPath`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (head, subscript) = inner.split_once("['")?;
    (!head.is_empty()).then_some((head, subscript))
}

/// The `v1` field label `path` converts to, or why it does not.
fn convert_field_label(api_version: &str, path: &str) -> Result<String, String> {
    if api_version != "v1" {
        return Err(format!("unsupported pod version: {api_version}"));
    }
    if let Some((head, _)) = split_subscript(path) {
        return match head {
            "metadata.annotations" | "metadata.labels" => Ok(path.to_string()),
            _ => Err(format!("field label does not support subscript: {path}")),
        };
    }
    match path {
        "spec.host" => Ok("spec.nodeName".to_string()),
        _ if POD_FIELD_LABELS.contains(&path) => Ok(path.to_string()),
        _ => Err(format!("field label not supported: {path}")),
    }
}

const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
    and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
    '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Why `value` is not a qualified name (Kubernetes' `IsQualifiedName`); empty when it is one.
pub(crate) fn qualified_name_problems(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => return vec![format!("a qualified name {QUALIFIED_NAME_MESSAGE}")],
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else if !is_dns1123_subdomain(prefix) {
            if prefix.len() > 253 {
                problems.push("prefix part must be no more than 253 characters".to_string());
            } else {
                problems.push(format!("prefix part {DNS1123_SUBDOMAIN_MESSAGE}"));
            }
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_string());
    }
    let bytes = name.as_bytes();
    let valid = match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    };
    if !valid {
        problems.push(format!("name part {QUALIFIED_NAME_MESSAGE}"));
    }
    problems
}

/// Checks a `fieldRef` (`ObjectFieldSelector`) at `path` against the paths `allowed`
/// (`validateObjectFieldSelector`).
pub(crate) fn validate_field_ref(
    selector: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let api_version = str_at(selector, "apiVersion");
    if api_version.is_empty() {
        causes.push(FieldError::required(format!("{path}.apiVersion"), ""));
        return;
    }
    let field_path = str_at(selector, "fieldPath");
    let field_path_field = format!("{path}.fieldPath");
    if field_path.is_empty() {
        causes.push(FieldError::required(field_path_field, ""));
        return;
    }
    let internal = match convert_field_label(api_version, field_path) {
        Ok(internal) => internal,
        Err(error) => {
            causes.push(FieldError::invalid(
                field_path_field,
                field_path,
                format!("error converting fieldPath: {error}"),
            ));
            return;
        }
    };
    match split_subscript(&internal) {
        Some(("metadata.annotations", subscript)) => {
            let subscript = subscript.to_lowercase();
            for problem in qualified_name_problems(&subscript) {
                causes.push(FieldError::invalid(path, subscript.as_str(), problem));
            }
        }
        Some(("metadata.labels", subscript)) => {
            for problem in qualified_name_problems(subscript) {
                causes.push(FieldError::invalid(path, subscript, problem));
            }
        }
        Some((head, _)) => causes.push(FieldError::invalid(
            path,
            head,
            "does not support subscript",
        )),
        None if !allowed.contains(&internal.as_str()) => causes.push(FieldError::not_supported(
            field_path_field,
            internal.as_str(),
            allowed.iter().copied(),
        )),
        None => {}
    }
}

/// Checks a `resourceFieldRef` (`ResourceFieldSelector`) at `path`; a volume file's must name
/// its container (`validateContainerResourceFieldSelector`).
pub(crate) fn validate_resource_field_ref(
    selector: &Map<String, Value>,
    volume: bool,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let resource = str_at(selector, "resource");
    if volume && str_at(selector, "containerName").is_empty() {
        causes.push(FieldError::required(format!("{path}.containerName"), ""));
    } else if resource.is_empty() {
        causes.push(FieldError::required(format!("{path}.resource"), ""));
    } else if !RESOURCE_FIELD_PATHS.contains(&resource)
        && !resource.starts_with("limits.hugepages-")
        && !resource.starts_with("requests.hugepages-")
    {
        causes.push(FieldError::not_supported(
            format!("{path}.resource"),
            resource,
            RESOURCE_FIELD_PATHS,
        ));
    }
    validate_divisor(resource, selector.get("divisor"), path, causes);
}

/// The divisors Kubernetes accepts for memory, storage and huge pages.
const BYTE_DIVISORS: [&str; 13] = [
    "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
];

const BYTE_DIVISORS_TEXT: &str = "1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei";

/// Checks a `resourceFieldRef`'s `divisor` against its resource (`validateContainerResourceDivisor`).
fn validate_divisor(
    resource: &str,
    divisor: Option<&Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let text = match divisor {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return,
    };
    let Ok(divisor) = parse_quantity(&text) else {
        return;
    };
    if divisor.is_zero() {
        return;
    }
    let one_of = |allowed: &[&str]| {
        allowed
            .iter()
            .any(|a| parse_quantity(a).is_ok_and(|a| a.cmp(&divisor) == std::cmp::Ordering::Equal))
    };
    let field = format!("{path}.divisor");
    let message = match resource {
        "limits.cpu" | "requests.cpu" if !one_of(&["1m", "1"]) => {
            Some("only divisor's values 1m and 1 are supported with the cpu resource".to_string())
        }
        "limits.memory" | "requests.memory" if !one_of(&BYTE_DIVISORS) => Some(format!(
            "only divisor's values {BYTE_DIVISORS_TEXT} are supported with the memory resource"
        )),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" if !one_of(&BYTE_DIVISORS) => {
            Some(format!(
                "only divisor's values {BYTE_DIVISORS_TEXT} are supported with the local \
                 ephemeral storage resource"
            ))
        }
        _ => None,
    };
    if let Some(message) = message {
        causes.push(FieldError::invalid(&field, resource, message));
    }
    let huge_pages =
        resource.starts_with("requests.hugepages-") || resource.starts_with("limits.hugepages-");
    if huge_pages && !one_of(&BYTE_DIVISORS) {
        causes.push(FieldError::invalid(
            field,
            resource,
            format!(
                "only divisor's values {BYTE_DIVISORS_TEXT} are supported with the hugepages \
                 resource"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_ref(selector: Value, allowed: &[&str]) -> Vec<String> {
        let mut causes = Vec::new();
        validate_field_ref(selector.as_object().unwrap(), allowed, "f", &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn env_field_refs_name_a_supported_path() {
        let ok = json!({"apiVersion": "v1", "fieldPath": "status.podIP"});
        assert!(field_ref(ok, &ENV_FIELD_PATHS).is_empty());
        let phase = json!({"apiVersion": "v1", "fieldPath": "status.phase"});
        assert_eq!(
            field_ref(phase, &ENV_FIELD_PATHS),
            [
                r#"f.fieldPath: Unsupported value: "status.phase": supported values: "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs""#
            ]
        );
    }

    #[test]
    fn unknown_field_labels_and_versions_fail_conversion() {
        let unknown = json!({"apiVersion": "v1", "fieldPath": "spec.nope"});
        assert_eq!(
            field_ref(unknown, &ENV_FIELD_PATHS),
            [
                r#"f.fieldPath: Invalid value: "spec.nope": error converting fieldPath: field label not supported: spec.nope"#
            ]
        );
        let version = json!({"apiVersion": "v2", "fieldPath": "metadata.name"});
        assert_eq!(
            field_ref(version, &ENV_FIELD_PATHS),
            [
                r#"f.fieldPath: Invalid value: "metadata.name": error converting fieldPath: unsupported pod version: v2"#
            ]
        );
        let missing = json!({"fieldPath": "metadata.name"});
        assert_eq!(
            field_ref(missing, &ENV_FIELD_PATHS),
            ["f.apiVersion: Required value"]
        );
    }

    #[test]
    fn subscripted_label_paths_need_a_qualified_key() {
        let ok = json!({"apiVersion": "v1", "fieldPath": "metadata.labels['app']"});
        assert!(field_ref(ok, &VOLUME_FIELD_PATHS).is_empty());
        let bad = json!({"apiVersion": "v1", "fieldPath": "metadata.labels['-x']"});
        assert_eq!(field_ref(bad, &VOLUME_FIELD_PATHS).len(), 1);
        let name = json!({"apiVersion": "v1", "fieldPath": "metadata.name['x']"});
        assert_eq!(
            field_ref(name, &VOLUME_FIELD_PATHS),
            [
                r#"f.fieldPath: Invalid value: "metadata.name['x']": error converting fieldPath: field label does not support subscript: metadata.name['x']"#
            ]
        );
    }

    #[test]
    fn resource_field_refs_check_resource_and_divisor() {
        let check = |selector: Value, volume: bool| {
            let mut causes = Vec::new();
            validate_resource_field_ref(selector.as_object().unwrap(), volume, "r", &mut causes);
            causes.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(check(json!({"resource": "limits.cpu", "divisor": "1m"}), false).is_empty());
        assert_eq!(
            check(json!({"resource": "limits.cpu", "divisor": "2"}), false),
            [
                r#"r.divisor: Invalid value: "limits.cpu": only divisor's values 1m and 1 are supported with the cpu resource"#
            ]
        );
        assert_eq!(
            check(json!({"resource": "limits.cpu"}), true),
            ["r.containerName: Required value"]
        );
        assert_eq!(
            check(json!({"resource": "limits.gpu"}), false),
            [
                r#"r.resource: Unsupported value: "limits.gpu": supported values: "limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu", "requests.ephemeral-storage", "requests.memory""#
            ]
        );
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        assert!(qualified_name_problems("example.com/my-key").is_empty());
        assert_eq!(
            qualified_name_problems("a/b/c"),
            [format!("a qualified name {QUALIFIED_NAME_MESSAGE}")]
        );
        assert_eq!(
            qualified_name_problems("/x"),
            ["prefix part must be non-empty"]
        );
    }
}
