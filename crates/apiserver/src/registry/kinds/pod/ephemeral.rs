//! Ephemeral containers (`spec.ephemeralContainers`): Kubernetes' validation of the
//! `pods/ephemeralcontainers` subresource, and the rule that nothing else may change them.
//!
//! - A Pod is never created with ephemeral containers (`Forbidden: cannot be set on create`),
//!   and an update of the Pod itself may not change them (the `pod updates may not change
//!   fields other than ...` refusal on `spec`).
//! - Through the subresource, containers are only added: an existing one may be neither
//!   removed nor changed (`existing ephemeral containers "debugger" may not be changed`).
//! - Each one is a container (a DNS-1123 label name, an image, known pull policy, mounts of
//!   existing volumes) whose name is unique among every container of the Pod, whose
//!   `targetContainerName` names a container or init container, and which sets none of the
//!   fields an ephemeral container may not have (`ports`, `resources`, `resizePolicy`,
//!   `restartPolicy`, `lifecycle`, the probes; a mount's `subPath`/`subPathExpr`):
//!   `Forbidden: cannot be set for an Ephemeral Container`.

use std::collections::{BTreeSet, HashSet};

use capstan_api::FieldError;
use serde_json::{Map, Value};

use crate::registry::defaults::default_container;
use crate::registry::validation::{valid_volumes, validate_container};

/// The message of an update of the Pod itself that changes what it may not (Kubernetes'
/// `ValidatePodUpdate`).
pub(crate) const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than \
`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
(allow it to be set to 1 if it was previously negative)";

/// The fields of a container an ephemeral container may not set, by JSON name.
const FORBIDDEN_FIELDS: [&str; 8] = [
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

const FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

fn ephemeral_of(pod: &Value) -> &[Value] {
    pod.pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether a field holds something (Go's non-zero value).
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

/// On a create: a Pod may not start with ephemeral containers. On an update of the Pod
/// itself (`old` set): they may not change.
pub(crate) fn validate_main_write(pod: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
    match old {
        None if !ephemeral_of(pod).is_empty() => causes.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        )),
        Some(old) if ephemeral_of(pod) != ephemeral_of(old) => {
            causes.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN))
        }
        _ => {}
    }
}

/// Every problem of a write of the `ephemeralcontainers` subresource turning `old` into
/// `pod`, in Kubernetes' order: the ephemeral containers themselves, then the changes to
/// the existing ones.
pub(crate) fn validate_ephemeral_containers_update(pod: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    if old
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        causes.push(FieldError::forbidden(
            "",
            "static pods do not support ephemeral containers",
        ));
        return causes;
    }
    let empty = Map::new();
    let spec = pod.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    validate_ephemeral_containers(spec, &mut causes);
    let path = "spec.ephemeralContainers";
    let new = ephemeral_of(pod);
    for existing in ephemeral_of(old) {
        let name = existing
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match new
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        {
            None => causes.push(FieldError::forbidden(
                path,
                format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(changed) if changed != existing => causes.push(FieldError::forbidden(
                path,
                format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
    causes
}

/// Kubernetes' `validateEphemeralContainers` for `spec`.
fn validate_ephemeral_containers(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    let Some(list) = spec.get("ephemeralContainers").and_then(Value::as_array) else {
        return;
    };
    let named = |key: &str| -> Vec<String> {
        spec.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let others: BTreeSet<String> = named("containers")
        .into_iter()
        .chain(named("initContainers"))
        .collect();
    let volumes = valid_volumes(spec);
    // Names already taken by the Pod's other containers count as duplicates.
    let mut names: HashSet<String> = others.iter().cloned().collect();
    for (i, container) in list.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let Some(container) = container.as_object() else {
            causes.push(FieldError::type_invalid(
                path,
                container.clone(),
                "must be an object",
            ));
            continue;
        };
        validate_container(container, &path, &mut names, &volumes, causes);
        if let Some(target) = container.get("targetContainerName").and_then(Value::as_str) {
            if !target.is_empty() && !others.contains(target) {
                causes.push(FieldError::not_found(
                    format!("{path}.targetContainerName"),
                    target,
                ));
            }
        }
        for field in FORBIDDEN_FIELDS {
            if container.get(field).is_some_and(is_set) {
                causes.push(FieldError::forbidden(
                    format!("{path}.{field}"),
                    FOR_EPHEMERAL,
                ));
            }
        }
        let mounts = container.get("volumeMounts").and_then(Value::as_array);
        for (j, mount) in mounts.into_iter().flatten().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if mount.get(field).is_some_and(is_set) {
                    causes.push(FieldError::forbidden(
                        format!("{path}.volumeMounts[{j}].{field}"),
                        FOR_EPHEMERAL,
                    ));
                }
            }
        }
    }
}

/// The `ephemeralcontainers` subresource writes `spec.ephemeralContainers` only: `updated`
/// becomes `current` with `updated`'s list (none if it has none).
pub(crate) fn keep_all_but_ephemeral(current: &Value, updated: &mut Value) {
    let list = updated
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("ephemeralContainers"));
    let mut merged = current.clone();
    if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
        match list {
            Some(mut list) if !list.is_null() => {
                // Kubernetes defaults every write's body; the subresource's skips the
                // defaulting step, so its containers get theirs here.
                for container in list.as_array_mut().into_iter().flatten() {
                    if let Some(container) = container.as_object_mut() {
                        default_container(container);
                    }
                }
                spec.insert("ephemeralContainers".into(), list)
            }
            _ => spec.remove("ephemeralContainers"),
        };
    }
    *updated = merged;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({
            "metadata": { "name": "p", "namespace": "default" },
            "spec": {
                "containers": [{ "name": "app", "image": "nginx" }],
                "ephemeralContainers": ephemeral,
            }
        })
    }

    fn messages(causes: &[FieldError]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.body()))
            .collect()
    }

    #[test]
    fn a_debugger_targeting_the_app_container_is_valid() {
        let old = pod(json!([]));
        let new = pod(json!([{ "name": "debugger", "image": "busybox",
            "targetContainerName": "app", "stdin": true, "tty": true }]));
        assert!(validate_ephemeral_containers_update(&new, &old).is_empty());
    }

    #[test]
    fn names_must_be_unique_among_every_container_and_targets_must_exist() {
        let old = pod(json!([]));
        let new = pod(json!([
            { "name": "app", "image": "busybox" },
            { "name": "debugger", "image": "busybox", "targetContainerName": "nope" },
        ]));
        let found = messages(&validate_ephemeral_containers_update(&new, &old));
        assert!(
            found.contains(&"spec.ephemeralContainers[0].name: Duplicate value: \"app\"".into()),
            "{found:?}"
        );
        assert!(
            found.contains(
                &"spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"".into()
            ),
            "{found:?}"
        );
    }

    #[test]
    fn ports_probes_resources_and_lifecycle_are_forbidden() {
        let old = pod(json!([]));
        let new = pod(json!([{ "name": "debugger", "image": "busybox",
            "ports": [{ "containerPort": 80 }],
            "readinessProbe": { "tcpSocket": { "port": 80 } },
            "resources": { "limits": { "cpu": "1" } },
            "lifecycle": { "preStop": { "exec": { "command": ["true"] } } } }]));
        let found = messages(&validate_ephemeral_containers_update(&new, &old));
        for field in ["ports", "readinessProbe", "resources", "lifecycle"] {
            let expected = format!(
                "spec.ephemeralContainers[0].{field}: Forbidden: cannot be set for an Ephemeral Container"
            );
            assert!(found.contains(&expected), "{expected} not in {found:?}");
        }
    }

    #[test]
    fn existing_ephemeral_containers_may_be_neither_changed_nor_removed() {
        let old = pod(json!([
            { "name": "debugger", "image": "busybox" },
            { "name": "other", "image": "busybox" },
        ]));
        let new = pod(json!([{ "name": "debugger", "image": "alpine" }]));
        let found = messages(&validate_ephemeral_containers_update(&new, &old));
        assert_eq!(
            found,
            vec![
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger\" may not be changed".to_string(),
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"other\" may not be removed".to_string(),
            ]
        );
    }

    #[test]
    fn the_pod_itself_may_neither_start_with_nor_change_ephemeral_containers() {
        let with = pod(json!([{ "name": "debugger", "image": "busybox" }]));
        let without = pod(json!([]));
        let mut causes = Vec::new();
        validate_main_write(&with, None, &mut causes);
        assert_eq!(
            messages(&causes),
            vec!["spec.ephemeralContainers: Forbidden: cannot be set on create".to_string()]
        );
        let mut causes = Vec::new();
        validate_main_write(&with, Some(&without), &mut causes);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].body().starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        ));
        let mut causes = Vec::new();
        validate_main_write(&with, Some(&with), &mut causes);
        assert!(causes.is_empty());
    }

    #[test]
    fn the_subresource_keeps_everything_but_the_ephemeral_containers() {
        let current = pod(json!([]));
        let mut updated = pod(json!([{ "name": "debugger", "image": "busybox" }]));
        updated["spec"]["containers"][0]["image"] = json!("changed");
        updated["metadata"]["labels"] = json!({ "a": "b" });
        keep_all_but_ephemeral(&current, &mut updated);
        assert_eq!(updated["spec"]["containers"][0]["image"], "nginx");
        assert!(updated["metadata"].get("labels").is_none());
        assert_eq!(
            updated["spec"]["ephemeralContainers"][0]["name"],
            "debugger"
        );
    }
}
