//! Decode-then-admit: every write of a built-in kind is decoded into its k8s-openapi type
//! before admission, as kube-apiserver decodes every request body into its Go type.
//!
//! A value the type cannot hold (`spec.replicas: 1099511627776` for an `int32`, an object as a
//! ConfigMap's `data` value, a Secret's `data` value that is not base64, a quantity that is an
//! object) fails the request with 400 `BadRequest`, worded like kube-apiserver's decoding
//! error and naming the field in `details.causes`, so nothing a typed reader (a controller, the
//! scheduler, the kubelet) cannot read is ever stored. Custom kinds are not decoded.
//!
//! The registry calls [`decode`] on every write path (create, update, status update and the
//! result of every patch) after the `apiVersion`/`kind` checks and before admission. Decoding
//! reads the JSON in place (no copy of the object); the typed value is dropped, since the
//! registry keeps objects as JSON. It is not repeated after mutating admission: a decode costs
//! about a tenth of a Pod create, and the built-in mutating steps only fill well-typed
//! defaults (a user's mutating step is trusted to keep the types).

use capstan_api::{k8s_openapi, Error, ResourceInfo, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::{Path, Segment};

/// Decodes one JSON object into a kind's type, reporting the path of the first field that fails.
type DecodeFn =
    fn(&Value) -> std::result::Result<(), serde_path_to_error::Error<serde_json::Error>>;

fn decode_as<K: DeserializeOwned>(
    value: &Value,
) -> std::result::Result<(), serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize::<_, K>(value).map(drop)
}

/// One row per built-in kind: group, version, kind, its k8s-openapi type.
macro_rules! typed_kinds {
    ($(($group:literal, $version:literal, $kind:literal) => $ty:ty,)*) => {
        static TYPED_KINDS: &[(&str, &str, &str, DecodeFn)] = &[
            $(($group, $version, $kind, decode_as::<$ty> as DecodeFn),)*
        ];
    };
}

typed_kinds! {
    ("", "v1", "Pod") => k8s_openapi::api::core::v1::Pod,
    ("", "v1", "Node") => k8s_openapi::api::core::v1::Node,
    ("", "v1", "Service") => k8s_openapi::api::core::v1::Service,
    ("", "v1", "Endpoints") => k8s_openapi::api::core::v1::Endpoints,
    ("", "v1", "Namespace") => k8s_openapi::api::core::v1::Namespace,
    ("", "v1", "Event") => k8s_openapi::api::core::v1::Event,
    ("", "v1", "ConfigMap") => k8s_openapi::api::core::v1::ConfigMap,
    ("", "v1", "Secret") => k8s_openapi::api::core::v1::Secret,
    ("", "v1", "ServiceAccount") => k8s_openapi::api::core::v1::ServiceAccount,
    ("", "v1", "ReplicationController") => k8s_openapi::api::core::v1::ReplicationController,
    ("", "v1", "PersistentVolume") => k8s_openapi::api::core::v1::PersistentVolume,
    ("", "v1", "PersistentVolumeClaim") => k8s_openapi::api::core::v1::PersistentVolumeClaim,
    ("", "v1", "LimitRange") => k8s_openapi::api::core::v1::LimitRange,
    ("", "v1", "ResourceQuota") => k8s_openapi::api::core::v1::ResourceQuota,
    ("", "v1", "PodTemplate") => k8s_openapi::api::core::v1::PodTemplate,
    ("apps", "v1", "Deployment") => k8s_openapi::api::apps::v1::Deployment,
    ("apps", "v1", "ReplicaSet") => k8s_openapi::api::apps::v1::ReplicaSet,
    ("apps", "v1", "DaemonSet") => k8s_openapi::api::apps::v1::DaemonSet,
    ("apps", "v1", "StatefulSet") => k8s_openapi::api::apps::v1::StatefulSet,
    ("apps", "v1", "ControllerRevision") => k8s_openapi::api::apps::v1::ControllerRevision,
    ("batch", "v1", "Job") => k8s_openapi::api::batch::v1::Job,
    ("batch", "v1", "CronJob") => k8s_openapi::api::batch::v1::CronJob,
    ("coordination.k8s.io", "v1", "Lease") => k8s_openapi::api::coordination::v1::Lease,
    ("discovery.k8s.io", "v1", "EndpointSlice") => k8s_openapi::api::discovery::v1::EndpointSlice,
    ("events.k8s.io", "v1", "Event") => k8s_openapi::api::events::v1::Event,
    ("networking.k8s.io", "v1", "Ingress") => k8s_openapi::api::networking::v1::Ingress,
    ("networking.k8s.io", "v1", "NetworkPolicy") => k8s_openapi::api::networking::v1::NetworkPolicy,
    ("networking.k8s.io", "v1", "IngressClass") => k8s_openapi::api::networking::v1::IngressClass,
    ("policy", "v1", "PodDisruptionBudget") => k8s_openapi::api::policy::v1::PodDisruptionBudget,
    ("rbac.authorization.k8s.io", "v1", "Role") => k8s_openapi::api::rbac::v1::Role,
    ("rbac.authorization.k8s.io", "v1", "RoleBinding") => k8s_openapi::api::rbac::v1::RoleBinding,
    ("rbac.authorization.k8s.io", "v1", "ClusterRole") => k8s_openapi::api::rbac::v1::ClusterRole,
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    ("scheduling.k8s.io", "v1", "PriorityClass") => k8s_openapi::api::scheduling::v1::PriorityClass,
    ("storage.k8s.io", "v1", "StorageClass") => k8s_openapi::api::storage::v1::StorageClass,
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ("autoscaling", "v2", "HorizontalPodAutoscaler") => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    ("autoscaling", "v1", "HorizontalPodAutoscaler") => k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
    ("certificates.k8s.io", "v1", "CertificateSigningRequest") => k8s_openapi::api::certificates::v1::CertificateSigningRequest,
}

/// The decoder of `resource`'s kind; `None` for kinds without a k8s-openapi type (custom kinds).
fn decoder_of(resource: &ResourceInfo) -> Option<DecodeFn> {
    TYPED_KINDS
        .iter()
        .find(|(group, version, kind, _)| {
            *kind == resource.kind() && *group == resource.group() && *version == resource.version()
        })
        .map(|row| row.3)
}

/// Decodes `object` (with its `apiVersion` and `kind` already checked) into the k8s-openapi
/// type of `resource`'s kind and drops the result. A no-op for kinds without one.
///
/// Errors: [`Error::BadRequest`] naming the first field the type cannot hold, in
/// kube-apiserver's words: `Deployment in version "v1" cannot be handled as a Deployment:
/// json: cannot unmarshal number 1099511627776 into Go struct field Deployment.spec.replicas
/// of type int32`.
pub(crate) fn decode(resource: &ResourceInfo, object: &Value) -> Result<()> {
    match decoder_of(resource) {
        Some(decode) => decode(object).map_err(|e| decoding_error(resource, object, &e)),
        None => Ok(()),
    }
}

/// Kube-apiserver's decoding error for `error`, found in `object`.
fn decoding_error(
    resource: &ResourceInfo,
    object: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> Error {
    let kind = resource.kind();
    let field = field_path(error.path());
    let inner = error.inner().to_string();
    let detail = match type_mismatch(&inner) {
        Some(expected) => {
            let found = describe(value_at(object, error.path()));
            format!("json: cannot unmarshal {found} into Go struct field {kind}.{field} of type {expected}")
        }
        None if field.is_empty() => inner,
        None => format!("{field}: {inner}"),
    };
    Error::BadRequest {
        message: format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {detail}",
            resource.version()
        ),
        field: (!field.is_empty()).then_some(field),
    }
}

/// For serde's `invalid type: ..., expected X` and `invalid value: ..., expected X`, the Go
/// name of `X`; `None` for other errors (bad base64, a bad timestamp, ...).
fn type_mismatch(message: &str) -> Option<String> {
    if !(message.starts_with("invalid type: ") || message.starts_with("invalid value: ")) {
        return None;
    }
    let expected = message.rsplit_once(", expected ")?.1;
    Some(
        match expected {
            "i32" => "int32",
            "i64" => "int64",
            "u32" => "uint32",
            "u64" => "uint64",
            "f32" => "float32",
            "f64" => "float64",
            "a string" => "string",
            "a boolean" => "bool",
            "a map" => "map",
            "a sequence" => "array",
            other => other,
        }
        .to_string(),
    )
}

/// Go's words for a JSON value: `number 12`, `string`, `object`, `array`, `bool`.
fn describe(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => format!("number {n}"),
        Some(Value::String(_)) => "string".into(),
        Some(Value::Object(_)) => "object".into(),
        Some(Value::Array(_)) => "array".into(),
        Some(Value::Bool(_)) => "bool".into(),
        Some(Value::Null) | None => "null".into(),
    }
}

/// The value `path` leads to in `object`.
fn value_at<'a>(object: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |value, segment| match segment {
            Segment::Seq { index } => value.get(index),
            Segment::Map { key } => value.get(key),
            Segment::Enum { .. } | Segment::Unknown => Some(value),
        })
}

/// `path` the way Kubernetes names fields: `spec.template.spec.containers[0].name`, and map
/// entries in brackets (`data[a]`, `resources.limits[cpu]`).
fn field_path(path: &Path) -> String {
    let mut rendered = String::new();
    let mut previous: Option<&str> = None;
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => rendered.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if previous.is_some_and(is_map_field) || !is_field_name(key) {
                    rendered.push_str(&format!("[{key}]"));
                } else {
                    if !rendered.is_empty() {
                        rendered.push('.');
                    }
                    rendered.push_str(key);
                }
                previous = Some(key);
                continue;
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
        previous = None;
    }
    rendered
}

/// Fields of the built-in kinds that are maps keyed by data (not struct fields).
fn is_map_field(field: &str) -> bool {
    matches!(
        field,
        "data"
            | "binaryData"
            | "stringData"
            | "labels"
            | "annotations"
            | "matchLabels"
            | "nodeSelector"
            | "requests"
            | "limits"
            | "overhead"
            | "capacity"
            | "allocatable"
            | "hard"
            | "used"
            | "max"
            | "min"
            | "default"
            | "defaultRequest"
            | "maxLimitRequestRatio"
            | "parameters"
    )
}

/// A struct field's JSON name: a letter, then letters and digits.
fn is_field_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn builtin(group: &str, kind: &str) -> ResourceInfo {
        ResourceInfo::builtin(group, kind).unwrap()
    }

    fn bad_request(error: Error) -> (String, Option<String>) {
        match error {
            Error::BadRequest { message, field } => (message, field),
            other => panic!("expected a BadRequest, got {other:?}"),
        }
    }

    #[test]
    fn every_builtin_kind_has_a_decoder() {
        for resource in ResourceInfo::builtins() {
            assert!(
                decoder_of(&resource).is_some(),
                "{} has no typed decoder",
                resource.qualified_kind()
            );
        }
    }

    #[test]
    fn every_builtin_kind_decodes_a_minimal_object() {
        for resource in ResourceInfo::builtins() {
            let object = json!({
                "apiVersion": resource.api_version(),
                "kind": resource.kind(),
                "metadata": {"name": "x"},
            });
            decode(&resource, &object)
                .unwrap_or_else(|e| panic!("{}: {e}", resource.qualified_kind()));
        }
    }

    #[test]
    fn an_int32_out_of_range_is_refused_in_kube_apiserver_words() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1_099_511_627_776_i64},
        });
        let (message, field) =
            bad_request(decode(&builtin("apps", "Deployment"), &deployment).unwrap_err());
        assert_eq!(
            message,
            "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot \
             unmarshal number 1099511627776 into Go struct field Deployment.spec.replicas of \
             type int32"
        );
        assert_eq!(field.as_deref(), Some("spec.replicas"));
    }

    #[test]
    fn a_config_map_value_that_is_not_a_string_is_refused() {
        let config = json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": {"b": 1}},
        });
        let (message, field) = bad_request(decode(&builtin("", "ConfigMap"), &config).unwrap_err());
        assert!(
            message.ends_with(
                "cannot unmarshal object into Go struct field ConfigMap.data[a] of type string"
            ),
            "{message}"
        );
        assert_eq!(field.as_deref(), Some("data[a]"));
    }

    #[test]
    fn nested_fields_are_named_with_indices() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": "80"}]}]},
        });
        let (message, field) = bad_request(decode(&builtin("", "Pod"), &pod).unwrap_err());
        assert_eq!(
            field.as_deref(),
            Some("spec.containers[0].ports[0].containerPort")
        );
        assert!(
            message.contains("cannot unmarshal string into Go struct field"),
            "{message}"
        );
        assert!(message.ends_with("of type int32"), "{message}");
    }

    #[test]
    fn secret_data_must_be_base64() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"key": "not base64!"},
        });
        let (message, field) = bad_request(decode(&builtin("", "Secret"), &secret).unwrap_err());
        assert_eq!(field.as_deref(), Some("data[key]"));
        assert!(
            message
                .starts_with("Secret in version \"v1\" cannot be handled as a Secret: data[key]: "),
            "{message}"
        );
    }

    #[test]
    fn custom_kinds_are_not_decoded() {
        let widgets = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        let widget =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"replicas": "many"}});
        assert!(decode(&widgets, &widget).is_ok());
    }

    #[test]
    fn null_and_missing_optional_fields_decode() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": null},
            "spec": {"replicas": null, "template": {"spec": {"containers": null}}},
        });
        assert!(decode(&builtin("apps", "Deployment"), &deployment).is_ok());
    }
}
