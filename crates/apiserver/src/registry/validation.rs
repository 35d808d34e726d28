//! Kubernetes' validation for built-in kinds (`ValidateX` of `k8s.io/kubernetes/pkg/apis`), as
//! the [`Validation`] admission step.
//!
//! Every problem becomes one [`FieldError`] naming the field the way Kubernetes does
//! (`metadata.name`, `spec.replicas`, `spec.template.spec.containers[1].name`), and a request
//! with any is rejected with [`Error::Invalid`](capstan_api::Error::Invalid) carrying them all.
//!
//! What is checked:
//!
//! - **Metadata**, every kind: the name is a DNS-1123 subdomain (a DNS-1123 label for
//!   Namespaces, a DNS-1035 label for Services, anything path-safe for RBAC kinds); the
//!   namespace is a DNS-1123 label; label keys and values, annotation keys and total size,
//!   finalizer names (not both `orphan` and `foregroundDeletion`), owner references (required
//!   fields, at most one controller).
//! - **Workloads** (Deployment, ReplicaSet, DaemonSet, StatefulSet, ReplicationController,
//!   Job, CronJob): non-negative counts; a required, non-empty, valid `spec.selector` that
//!   matches the template's labels; Deployment strategies (`maxSurge` and `maxUnavailable` not
//!   both zero, percentages); an immutable selector on update for the `apps/v1` kinds.
//! - **Pod specs** (Pods and every template): at least one container, container names
//!   DNS-1123 labels and unique across init and app containers, images required, ports in
//!   range with a known protocol, known restart, DNS and pull policies (templates of apps
//!   kinds must restart `Always`, Job templates `OnFailure` or `Never`), volumes named uniquely
//!   and mounted only by name.
//! - **Services**: known type, ports in range, port names required when there are several and
//!   unique, known protocols and session affinity, target ports, an `externalName` for
//!   `ExternalName` services.
//!
//! Custom kinds get the metadata checks only.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use capstan_api::{
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    kube_core::Selector,
    label_selector_from,
    selector::{self, validate_key, validate_value},
    FieldError, ResourceInfo, Result,
};
use serde_json::{Map, Value};

use super::{
    admission::{invalid_unless_empty, AdmissionPhase, AdmissionRequest, AdmissionStep, Operation},
    object,
};

/// The validating admission step enforcing Kubernetes' validation of built-in kinds (and the
/// metadata rules of every kind); see the [module docs](self). Runs on creates and updates of
/// the object itself; rejects with [`Error::Invalid`](capstan_api::Error::Invalid) naming every
/// bad field.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validation;

#[async_trait]
impl AdmissionStep for Validation {
    fn name(&self) -> &str {
        "Validation"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Validating
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        if request.operation == Operation::Delete || request.subresource.is_some() {
            return Ok(());
        }
        let old = match request.operation {
            Operation::Update => request.old_object,
            _ => None,
        };
        invalid_unless_empty(request, validate(request.resource, object, old))
    }
}

/// Every validation problem of `object` (and, for an update, of its change from `old`), in
/// field order; empty when the object is valid.
pub fn validate(resource: &ResourceInfo, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut causes = Vec::new();
    validate_metadata(resource, object, &mut causes);
    let spec = object.get("spec").and_then(Value::as_object);
    let empty = Map::new();
    let spec_or_empty = spec.unwrap_or(&empty);
    let old_spec = old.and_then(|old| old.get("spec"));
    match (resource.group(), resource.kind()) {
        ("", "Pod") => validate_pod_spec(spec_or_empty, "spec", PodContext::Pod, &mut causes),
        ("", "PodTemplate") => {
            if let Some(template) = object.get("template").and_then(Value::as_object) {
                validate_template(template, "template", PodContext::Pod, &mut causes);
            }
        }
        ("", "ReplicationController") => {
            validate_replication_controller(spec_or_empty, &mut causes)
        }
        ("", "Service") => validate_service(spec_or_empty, &mut causes),
        ("apps", kind @ ("Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet")) => {
            validate_workload(kind, spec_or_empty, &mut causes);
            if let Some(old_selector) = old_spec.and_then(|s| s.get("selector")) {
                if spec_or_empty.get("selector") != Some(old_selector) {
                    let value = spec_or_empty
                        .get("selector")
                        .cloned()
                        .unwrap_or(Value::Null);
                    causes.push(FieldError::invalid(
                        "spec.selector",
                        value,
                        "field is immutable",
                    ));
                }
            }
        }
        ("batch", "Job") => validate_job(spec_or_empty, "spec", &mut causes),
        ("batch", "CronJob") => validate_cron_job(spec_or_empty, &mut causes),
        _ => {}
    }
    causes
}

// ---------------------------------------------------------------------------------------------
// Names

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character \
    (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower \
    case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
    character (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric \
    characters or '-', start with an alphabetic character, and end with an alphanumeric \
    character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
    '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length limit.
fn is_label_body(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `s` is a DNS-1123 label: at most 63 lowercase alphanumerics or `-`, starting and
/// ending with an alphanumeric (Namespace names, container names).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX && is_label_body(s)
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123
/// label bodies (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_label_body)
}

/// Whether `s` is a DNS-1035 label: a DNS-1123 label starting with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Which rule an object name follows.
#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    /// Only what keeps the storage key sound, checked when the key is built.
    PathSegment,
}

fn name_rule(resource: &ResourceInfo) -> NameRule {
    match (resource.group(), resource.kind()) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Checks `value` at `field` against a DNS rule, pushing at most one error.
fn check_dns(field: &str, value: &str, rule: NameRule, causes: &mut Vec<FieldError>) {
    let (valid, max, message) = match rule {
        NameRule::Dns1123Subdomain => (
            value.split('.').all(is_label_body),
            DNS1123_SUBDOMAIN_MAX,
            DNS1123_SUBDOMAIN_MESSAGE,
        ),
        NameRule::Dns1123Label => (
            is_label_body(value),
            DNS1123_LABEL_MAX,
            DNS1123_LABEL_MESSAGE,
        ),
        NameRule::Dns1035Label => (
            is_label_body(value) && value.as_bytes()[0].is_ascii_lowercase(),
            DNS1123_LABEL_MAX,
            DNS1035_LABEL_MESSAGE,
        ),
        NameRule::PathSegment => return,
    };
    if value.len() > max {
        causes.push(FieldError::invalid(
            field,
            value,
            format!("must be no more than {max} bytes"),
        ));
    } else if !valid {
        causes.push(FieldError::invalid(field, value, message));
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata

const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn validate_metadata(resource: &ResourceInfo, object: &Value, causes: &mut Vec<FieldError>) {
    let Some(metadata) = object::metadata(object) else {
        causes.push(FieldError::required("metadata", ""));
        return;
    };
    match metadata.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => {
            check_dns("metadata.name", name, name_rule(resource), causes)
        }
        _ => causes.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    if resource.namespaced() {
        if let Some(namespace) = metadata.get("namespace").and_then(Value::as_str) {
            check_dns(
                "metadata.namespace",
                namespace,
                NameRule::Dns1123Label,
                causes,
            );
        }
    }
    validate_label_map(metadata.get("labels"), "metadata.labels", causes);
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            if let Err(error) = validate_key(key) {
                causes.push(FieldError::invalid(
                    "metadata.annotations",
                    key.as_str(),
                    error.to_string(),
                ));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX_BYTES {
            causes.push(FieldError::too_long(
                "metadata.annotations",
                ANNOTATIONS_MAX_BYTES,
            ));
        }
    }
    let finalizers = object::finalizers(object);
    for (i, finalizer) in finalizers.iter().enumerate() {
        if let Err(error) = validate_key(finalizer) {
            causes.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                finalizer.as_str(),
                error.to_string(),
            ));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        causes.push(FieldError::invalid(
            "metadata.finalizers",
            Value::from(finalizers.clone()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    validate_owner_references(metadata.get("ownerReferences"), causes);
}

/// Label keys and values of a `map[string]string` field (`metadata.labels`, a selector's
/// `matchLabels`, a Service's `selector`).
fn validate_label_map(labels: Option<&Value>, field: &str, causes: &mut Vec<FieldError>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        if let Err(error) = validate_key(key) {
            causes.push(FieldError::invalid(field, key.as_str(), error.to_string()));
        }
        match value.as_str() {
            Some(value) => {
                if let Err(error) = validate_value(value) {
                    causes.push(FieldError::invalid(field, value, error.to_string()));
                }
            }
            None => causes.push(FieldError::type_invalid(
                field,
                value.clone(),
                "label values must be strings",
            )),
        }
    }
}

fn validate_owner_references(references: Option<&Value>, causes: &mut Vec<FieldError>) {
    let Some(references) = references.and_then(Value::as_array) else {
        return;
    };
    let mut controllers = 0;
    for (i, reference) in references.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if reference
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(FieldError::required(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    "",
                ));
            }
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        causes.push(FieldError::invalid(
            "metadata.ownerReferences",
            references.clone(),
            "Only one reference can have Controller set to true",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// The integer at `key`, if present: `Ok(None)` when missing or null, `Err` (pushed) when not
/// an integer.
fn integer(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    causes: &mut Vec<FieldError>,
) -> Option<i64> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(n) => Some(n),
            None => {
                causes.push(FieldError::type_invalid(
                    field,
                    value.clone(),
                    "must be an integer",
                ));
                None
            }
        },
    }
}

fn non_negative(map: &Map<String, Value>, key: &str, path: &str, causes: &mut Vec<FieldError>) {
    let field = format!("{path}.{key}");
    if let Some(n) = integer(map, key, &field, causes) {
        if n < 0 {
            causes.push(FieldError::invalid(
                field,
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn port_in_range(value: i64, field: String, causes: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&value) {
        causes.push(FieldError::invalid(
            field,
            value,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// An `IntOrString` that is a count or a percentage (`maxSurge`, `maxUnavailable`).
enum Amount {
    Count(i64),
    Percent(i64),
}

fn amount(value: &Value, field: &str, causes: &mut Vec<FieldError>) -> Option<Amount> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(n) if n >= 0 => Some(Amount::Count(n)),
            _ => {
                causes.push(FieldError::invalid(
                    field,
                    value.clone(),
                    "must be greater than or equal to 0",
                ));
                None
            }
        },
        Value::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(percent) if percent >= 0 && s.len() > 1 && !s.starts_with('+') => {
                Some(Amount::Percent(percent))
            }
            _ => {
                causes.push(FieldError::invalid(
                    field,
                    s.as_str(),
                    "a valid percent string must be a numeric string followed by an ending '%' \
                     (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
        other => {
            causes.push(FieldError::type_invalid(
                field,
                other.clone(),
                "must be an integer or a percentage",
            ));
            None
        }
    }
}

fn is_zero(amount: &Option<Amount>) -> bool {
    matches!(amount, Some(Amount::Count(0) | Amount::Percent(0)))
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// Where a pod spec sits, which decides the restart policies it may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PodContext {
    /// A Pod or a PodTemplate: any policy.
    Pod,
    /// A template of an apps/v1 workload or an RC: `Always` only.
    AlwaysRestarting,
    /// A Job template: `OnFailure` or `Never`, and required.
    Job,
}

fn validate_workload(kind: &str, spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if kind != "DaemonSet" {
        non_negative(spec, "replicas", "spec", causes);
    }
    non_negative(spec, "minReadySeconds", "spec", causes);
    non_negative(spec, "revisionHistoryLimit", "spec", causes);
    let selector = validate_selector(kind, spec, causes);
    match spec.get("template").and_then(Value::as_object) {
        Some(template) => {
            if let Some(selector) = selector {
                check_selector_matches_template(&selector, template, causes);
            }
            validate_template(
                template,
                "spec.template",
                PodContext::AlwaysRestarting,
                causes,
            );
        }
        None => causes.push(FieldError::required("spec.template", "")),
    }
    match kind {
        "Deployment" => validate_deployment_strategy(spec, causes),
        "DaemonSet" => {
            let strategy = spec
                .get("updateStrategy")
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str);
            if let Some(strategy) = strategy {
                if !["RollingUpdate", "OnDelete"].contains(&strategy) {
                    causes.push(FieldError::not_supported(
                        "spec.updateStrategy.type",
                        strategy,
                        ["OnDelete", "RollingUpdate"],
                    ));
                }
            }
        }
        "StatefulSet" => {
            if let Some(policy) = spec.get("podManagementPolicy").and_then(Value::as_str) {
                if !["OrderedReady", "Parallel"].contains(&policy) {
                    causes.push(FieldError::not_supported(
                        "spec.podManagementPolicy",
                        policy,
                        ["OrderedReady", "Parallel"],
                    ));
                }
            }
        }
        _ => {}
    }
}

/// Checks `spec.selector` (required, non-empty, well-formed) and returns it when usable.
fn validate_selector(
    kind: &str,
    spec: &Map<String, Value>,
    causes: &mut Vec<FieldError>,
) -> Option<Selector> {
    let Some(raw) = spec.get("selector").filter(|s| !s.is_null()) else {
        causes.push(FieldError::required("spec.selector", ""));
        return None;
    };
    let parsed: LabelSelector = match serde_json::from_value(raw.clone()) {
        Ok(parsed) => parsed,
        Err(error) => {
            causes.push(FieldError::invalid(
                "spec.selector",
                raw.clone(),
                error.to_string(),
            ));
            return None;
        }
    };
    let empty = parsed.match_labels.as_ref().is_none_or(|l| l.is_empty())
        && parsed
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if empty {
        causes.push(FieldError::invalid(
            "spec.selector",
            raw.clone(),
            format!(
                "empty selector is invalid for {}",
                kind.to_ascii_lowercase()
            ),
        ));
        return None;
    }
    validate_label_map(raw.get("matchLabels"), "spec.selector.matchLabels", causes);
    match label_selector_from(&parsed) {
        Ok(selector) => Some(selector),
        Err(error) => {
            causes.push(FieldError::invalid(
                "spec.selector",
                raw.clone(),
                error.to_string(),
            ));
            None
        }
    }
}

fn check_selector_matches_template(
    selector: &Selector,
    template: &Map<String, Value>,
    causes: &mut Vec<FieldError>,
) {
    let labels_value = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .cloned()
        .unwrap_or(Value::Null);
    let labels = object::labels(&serde_json::json!({ "metadata": { "labels": labels_value } }));
    if !selector::matches(selector, Some(&labels)) {
        causes.push(FieldError::invalid(
            "spec.template.metadata.labels",
            labels_value,
            "`selector` does not match template `labels`",
        ));
    }
}

fn validate_deployment_strategy(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if let (Some(deadline), Some(min_ready)) = (
        spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
        spec.get("minReadySeconds").and_then(Value::as_i64),
    ) {
        if deadline <= min_ready {
            causes.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    let Some(strategy) = spec.get("strategy").and_then(Value::as_object) else {
        return;
    };
    let strategy_type = strategy.get("type").and_then(Value::as_str);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy_type {
        Some("Recreate") => {
            if rolling.is_some() {
                causes.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") | None => {
            let Some(rolling) = rolling.and_then(Value::as_object) else {
                return;
            };
            let surge_field = "spec.strategy.rollingUpdate.maxSurge";
            let unavailable_field = "spec.strategy.rollingUpdate.maxUnavailable";
            let surge = rolling
                .get("maxSurge")
                .filter(|v| !v.is_null())
                .and_then(|v| amount(v, surge_field, causes));
            let unavailable = rolling
                .get("maxUnavailable")
                .filter(|v| !v.is_null())
                .and_then(|v| amount(v, unavailable_field, causes));
            if let Some(Amount::Percent(percent)) = unavailable {
                if percent > 100 {
                    causes.push(FieldError::invalid(
                        unavailable_field,
                        format!("{percent}%"),
                        "must not be greater than 100%",
                    ));
                }
            }
            if is_zero(&surge) && is_zero(&unavailable) {
                causes.push(FieldError::invalid(
                    unavailable_field,
                    rolling
                        .get("maxUnavailable")
                        .cloned()
                        .unwrap_or(Value::Null),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        Some(other) => causes.push(FieldError::not_supported(
            "spec.strategy.type",
            other,
            ["Recreate", "RollingUpdate"],
        )),
    }
}

fn validate_replication_controller(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    non_negative(spec, "replicas", "spec", causes);
    non_negative(spec, "minReadySeconds", "spec", causes);
    validate_label_map(spec.get("selector"), "spec.selector", causes);
    if let Some(template) = spec.get("template").and_then(Value::as_object) {
        if let Some(selector) = spec.get("selector").and_then(Value::as_object) {
            let labels = template
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object);
            let matches = selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if selector.is_empty() || !matches {
                causes.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    labels.cloned().map(Value::Object).unwrap_or(Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        validate_template(
            template,
            "spec.template",
            PodContext::AlwaysRestarting,
            causes,
        );
    }
}

fn validate_job(spec: &Map<String, Value>, path: &str, causes: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        non_negative(spec, key, path, causes);
    }
    match spec.get("template").and_then(Value::as_object) {
        Some(template) => validate_template(
            template,
            &format!("{path}.template"),
            PodContext::Job,
            causes,
        ),
        None => causes.push(FieldError::required(format!("{path}.template"), "")),
    }
}

fn validate_cron_job(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if spec
        .get("schedule")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(FieldError::required("spec.schedule", ""));
    }
    if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
        if !["Allow", "Forbid", "Replace"].contains(&policy) {
            causes.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                policy,
                ["Allow", "Forbid", "Replace"],
            ));
        }
    }
    match spec
        .get("jobTemplate")
        .and_then(|t| t.get("spec"))
        .and_then(Value::as_object)
    {
        Some(job) => validate_job(job, "spec.jobTemplate.spec", causes),
        None => causes.push(FieldError::required("spec.jobTemplate.spec", "")),
    }
}

fn validate_template(
    template: &Map<String, Value>,
    path: &str,
    context: PodContext,
    causes: &mut Vec<FieldError>,
) {
    if let Some(metadata) = template.get("metadata") {
        validate_label_map(
            metadata.get("labels"),
            &format!("{path}.metadata.labels"),
            causes,
        );
    }
    let empty = Map::new();
    let spec = template
        .get("spec")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    validate_pod_spec(spec, &format!("{path}.spec"), context, causes);
}

// ---------------------------------------------------------------------------------------------
// Pod specs

const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

fn validate_pod_spec(
    spec: &Map<String, Value>,
    path: &str,
    context: PodContext,
    causes: &mut Vec<FieldError>,
) {
    let volumes = validate_volumes(spec, path, causes);
    let mut names = HashSet::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        causes.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for key in ["initContainers", "containers"] {
        let Some(list) = spec.get(key).and_then(Value::as_array) else {
            continue;
        };
        for (i, container) in list.iter().enumerate() {
            let field = format!("{path}.{key}[{i}]");
            match container.as_object() {
                Some(container) => {
                    validate_container(container, &field, &mut names, &volumes, causes)
                }
                None => causes.push(FieldError::type_invalid(
                    field,
                    container.clone(),
                    "must be an object",
                )),
            }
        }
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str);
    let restart_field = format!("{path}.restartPolicy");
    match (context, restart) {
        (PodContext::Job, None) => causes.push(FieldError::required(
            restart_field,
            r#"valid values: "OnFailure", "Never""#,
        )),
        (PodContext::Job, Some(policy)) if !["OnFailure", "Never"].contains(&policy) => causes
            .push(FieldError::not_supported(
                restart_field,
                policy,
                ["OnFailure", "Never"],
            )),
        (PodContext::AlwaysRestarting, Some(policy)) if policy != "Always" => {
            causes.push(FieldError::not_supported(restart_field, policy, ["Always"]))
        }
        (PodContext::Pod, Some(policy)) if !["Always", "OnFailure", "Never"].contains(&policy) => {
            causes.push(FieldError::not_supported(
                restart_field,
                policy,
                ["Always", "OnFailure", "Never"],
            ))
        }
        _ => {}
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str) {
        const DNS: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !DNS.contains(&policy) {
            causes.push(FieldError::not_supported(
                format!("{path}.dnsPolicy"),
                policy,
                DNS,
            ));
        }
    }
    non_negative(spec, "terminationGracePeriodSeconds", path, causes);
    non_negative(spec, "activeDeadlineSeconds", path, causes);
}

/// Checks `volumes` and returns their names.
fn validate_volumes(
    spec: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(volumes) = spec.get("volumes").and_then(Value::as_array) else {
        return names;
    };
    for (i, volume) in volumes.iter().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        match volume.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldError::required(field, "")),
            Some(name) => {
                check_dns(&field, name, NameRule::Dns1123Label, causes);
                if !names.insert(name.to_string()) {
                    causes.push(FieldError::duplicate(field, name));
                }
            }
        }
    }
    names
}

fn validate_container(
    container: &Map<String, Value>,
    path: &str,
    names: &mut HashSet<String>,
    volumes: &BTreeSet<String>,
    causes: &mut Vec<FieldError>,
) {
    let name_field = format!("{path}.name");
    match container.get("name").and_then(Value::as_str) {
        None | Some("") => causes.push(FieldError::required(name_field, "")),
        Some(name) => {
            check_dns(&name_field, name, NameRule::Dns1123Label, causes);
            if !names.insert(name.to_string()) {
                causes.push(FieldError::duplicate(name_field, name));
            }
        }
    }
    if container
        .get("image")
        .and_then(Value::as_str)
        .is_none_or(|image| image.trim().is_empty())
    {
        causes.push(FieldError::required(format!("{path}.image"), ""));
    }
    if let Some(policy) = container.get("imagePullPolicy").and_then(Value::as_str) {
        const PULL: [&str; 3] = ["Always", "IfNotPresent", "Never"];
        if !PULL.contains(&policy) {
            causes.push(FieldError::not_supported(
                format!("{path}.imagePullPolicy"),
                policy,
                PULL,
            ));
        }
    }
    for (j, port) in container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(port) = port.as_object() else {
            continue;
        };
        let field = format!("{path}.ports[{j}]");
        match integer(
            port,
            "containerPort",
            &format!("{field}.containerPort"),
            causes,
        ) {
            Some(number) => port_in_range(number, format!("{field}.containerPort"), causes),
            None if port.get("containerPort").is_none_or(Value::is_null) => {
                causes.push(FieldError::required(format!("{field}.containerPort"), ""))
            }
            None => {}
        }
        if let Some(host_port) = integer(port, "hostPort", &format!("{field}.hostPort"), causes) {
            if host_port != 0 {
                port_in_range(host_port, format!("{field}.hostPort"), causes);
            }
        }
        check_protocol(port, &field, causes);
    }
    for (j, mount) in container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("{path}.volumeMounts[{j}]");
        match mount.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldError::required(format!("{field}.name"), "")),
            Some(name) if !volumes.contains(name) => {
                causes.push(FieldError::not_found(format!("{field}.name"), name))
            }
            Some(_) => {}
        }
        if mount
            .get("mountPath")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(FieldError::required(format!("{field}.mountPath"), ""));
        }
    }
}

fn check_protocol(port: &Map<String, Value>, field: &str, causes: &mut Vec<FieldError>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !PROTOCOLS.contains(&protocol) {
            causes.push(FieldError::not_supported(
                format!("{field}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Services

fn validate_service(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !TYPES.contains(&service_type) {
        causes.push(FieldError::not_supported("spec.type", service_type, TYPES));
    }
    if service_type == "ExternalName" {
        match spec.get("externalName").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldError::required("spec.externalName", "")),
            Some(name) => check_dns(
                "spec.externalName",
                name.trim_end_matches('.'),
                NameRule::Dns1123Subdomain,
                causes,
            ),
        }
    }
    if let Some(affinity) = spec.get("sessionAffinity").and_then(Value::as_str) {
        if !["ClientIP", "None"].contains(&affinity) {
            causes.push(FieldError::not_supported(
                "spec.sessionAffinity",
                affinity,
                ["ClientIP", "None"],
            ));
        }
    }
    validate_label_map(spec.get("selector"), "spec.selector", causes);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        causes.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut endpoints = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(port) = port.as_object() else {
            causes.push(FieldError::type_invalid(
                format!("spec.ports[{i}]"),
                port.clone(),
                "must be an object",
            ));
            continue;
        };
        let field = format!("spec.ports[{i}]");
        match port.get("name").and_then(Value::as_str).unwrap_or("") {
            "" if ports.len() > 1 => causes.push(FieldError::required(format!("{field}.name"), "")),
            "" => {}
            name => {
                check_dns(
                    &format!("{field}.name"),
                    name,
                    NameRule::Dns1123Label,
                    causes,
                );
                if !names.insert(name.to_string()) {
                    causes.push(FieldError::duplicate(format!("{field}.name"), name));
                }
            }
        }
        let number = integer(port, "port", &format!("{field}.port"), causes);
        match number {
            Some(number) => port_in_range(number, format!("{field}.port"), causes),
            None if port.get("port").is_none_or(Value::is_null) => {
                causes.push(FieldError::required(format!("{field}.port"), ""))
            }
            None => {}
        }
        check_protocol(port, &field, causes);
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        if let Some(number) = number {
            if !endpoints.insert((number, protocol.to_string())) {
                causes.push(FieldError::duplicate(
                    field.clone(),
                    serde_json::json!({"port": number, "protocol": protocol}),
                ));
            }
        }
        match port.get("targetPort") {
            Some(Value::Number(target)) => match target.as_i64() {
                Some(target) => port_in_range(target, format!("{field}.targetPort"), causes),
                None => causes.push(FieldError::invalid(
                    format!("{field}.targetPort"),
                    Value::Number(target.clone()),
                    "must be an integer",
                )),
            },
            Some(Value::String(target)) if !is_port_name(target) => {
                causes.push(FieldError::invalid(
                    format!("{field}.targetPort"),
                    target.as_str(),
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), \
                     contain at least one letter, and be at most 15 characters",
                ))
            }
            _ => {}
        }
        if let Some(node_port) = integer(port, "nodePort", &format!("{field}.nodePort"), causes) {
            if node_port != 0 {
                port_in_range(node_port, format!("{field}.nodePort"), causes);
            }
        }
    }
}

/// IANA service names, as a named target port: at most 15 lowercase alphanumerics or `-`, with
/// a letter, no leading, trailing or double hyphen.
fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(group: &str, kind: &str, object: Value) -> Vec<String> {
        let resource = ResourceInfo::builtin(group, kind).unwrap();
        validate(&resource, &object, None)
            .into_iter()
            .map(|cause| cause.field)
            .collect()
    }

    fn deployment(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn template(labels: Value, containers: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": containers}})
    }

    #[test]
    fn name_rules_follow_kubernetes() {
        assert!(is_dns1123_subdomain("web.example-1"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("web..x"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("123-abc"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1035_label("my-service"));
        assert!(!is_dns1035_label("1service"));
    }

    #[test]
    fn a_valid_deployment_has_no_errors() {
        let object = deployment(json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}), json!([{"name": "app", "image": "nginx"}])),
        }));
        assert_eq!(fields("apps", "Deployment", object), Vec::<String>::new());
    }

    #[test]
    fn rbac_names_may_hold_colons() {
        let role = json!({"metadata": {"name": "system:controller:x"}});
        assert!(fields("rbac.authorization.k8s.io", "ClusterRole", role).is_empty());
        let pod = json!({"metadata": {"name": "system:x", "namespace": "default"},
                         "spec": {"containers": [{"name": "a", "image": "b"}]}});
        assert_eq!(fields("", "Pod", pod), ["metadata.name"]);
    }

    #[test]
    fn port_names_are_iana_service_names() {
        assert!(is_port_name("http"));
        assert!(is_port_name("h2c-1"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("a--b"));
        assert!(!is_port_name("averyveryverylongname"));
    }

    #[test]
    fn both_gc_finalizers_together_are_invalid() {
        let object = json!({"metadata": {"name": "c", "namespace": "d",
                                         "finalizers": ["orphan", "foregroundDeletion"]}});
        assert_eq!(fields("", "ConfigMap", object), ["metadata.finalizers"]);
    }

    #[test]
    fn an_unknown_strategy_type_is_not_supported() {
        let object = deployment(json!({
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "Sometimes"},
            "template": template(json!({"app": "web"}), json!([{"name": "app", "image": "nginx"}])),
        }));
        assert_eq!(fields("apps", "Deployment", object), ["spec.strategy.type"]);
    }

    #[test]
    fn volume_mounts_must_name_a_volume() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "a", "image": "b",
                            "volumeMounts": [{"name": "cache", "mountPath": "/c"}]}],
        }});
        assert_eq!(
            fields("", "Pod", pod),
            ["spec.containers[0].volumeMounts[0].name"]
        );
    }
}
