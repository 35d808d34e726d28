//! Pod specs, in Pods and in every pod template (PodTemplates, workloads, Jobs): containers,
//! ports, volumes and mounts, restart and DNS policies.

use std::collections::HashSet;

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{
    env::{validate_env, validate_env_from},
    fields::{check_protocol, integer, non_negative, port_in_range},
    metadata::validate_label_map,
    names::{check_dns, NameRule},
    quantities::{validate_requirements, validate_resource_list},
    security_context::{validate_container_security_context, validate_pod_security_context},
    volumes::{validate_volume_devices, validate_volume_mounts, validate_volumes, PodVolumes},
};

/// Where a pod spec sits, which decides the restart policies it may use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodContext {
    /// A Pod or a PodTemplate: any policy.
    Pod,
    /// A template of an apps/v1 workload or an RC: `Always` only.
    AlwaysRestarting,
    /// A Job template: `OnFailure` or `Never`, and required.
    Job,
}

pub(crate) fn validate_template(
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

pub(crate) fn validate_pod_spec(
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
    validate_pod_security_context(spec, path, causes);
    non_negative(spec, "terminationGracePeriodSeconds", path, causes);
    non_negative(spec, "activeDeadlineSeconds", path, causes);
    validate_resource_list(spec.get("overhead"), &format!("{path}.overhead"), causes);
    validate_requirements(spec.get("resources"), &format!("{path}.resources"), causes);
}

pub(crate) fn validate_container(
    container: &Map<String, Value>,
    path: &str,
    names: &mut HashSet<String>,
    volumes: &PodVolumes,
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
    validate_env(container, path, causes);
    validate_env_from(container, path, causes);
    validate_volume_mounts(container, volumes, path, causes);
    validate_volume_devices(container, volumes, path, causes);
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
    validate_requirements(
        container.get("resources"),
        &format!("{path}.resources"),
        causes,
    );
    validate_container_security_context(container, path, causes);
}
