//! Services: names are DNS-1035 labels; Kubernetes' Service defaults and validation; and the
//! cluster IP, settled before validation (kept, requested, allocated, or freed for
//! `ExternalName`) and recorded with the Service in the same transaction.

use std::collections::HashSet;

use capstan_api::{Error, FieldError, ResourceInfo, Result};
use serde_json::{json, Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{each_object, set_default},
    object,
    service_ips::{IpPlan, ServiceIpAllocator, Unavailable},
    validation::{
        check_dns, check_protocol, integer, is_port_name, port_in_range, validate_label_map,
        NameRule,
    },
};

/// The rules of `v1` Services.
pub(crate) struct ServiceStrategy;

impl KindStrategy for ServiceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035Label
    }

    fn apply_defaults(&self, service: &mut Value) {
        default_service(service);
    }

    fn validate(&self, service: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_service(spec_of(service), causes);
    }

    fn holds_cluster_ip(&self) -> bool {
        true
    }

    fn plan_cluster_ip<'a>(
        &self,
        allocator: &'a ServiceIpAllocator,
        info: &ResourceInfo,
        service: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<IpPlan<'a>> {
        plan_cluster_ip(allocator, info, service, old, name)
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults

fn default_service(service: &mut Value) {
    let spec = object::at_mut(service, "spec");
    set_default(spec, "type", "ClusterIP");
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    set_default(spec, "sessionAffinity", "None");
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        set_default(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    if service_type != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", "Cluster");
    }
    if service_type == "NodePort" || service_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", "Cluster");
    }
    for port in each_object(spec, "ports") {
        set_default(port, "protocol", "TCP");
        let unset_target = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset_target {
            if let Some(number) = port.get("port").cloned() {
                port.insert("targetPort".into(), number);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

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

// ---------------------------------------------------------------------------------------------
// Cluster IPs

/// Settles a Service's `spec.clusterIP` before validation: keeps the one it holds,
/// reserves a requested or the next free address, or frees it when the Service becomes
/// `ExternalName`. Dropping the returned plan without [`IpPlan::commit`] gives back what it
/// reserved.
fn plan_cluster_ip<'a>(
    allocator: &'a ServiceIpAllocator,
    info: &ResourceInfo,
    service: &mut Value,
    old: Option<&Value>,
    name: &str,
) -> Result<IpPlan<'a>> {
    let invalid = |cause: FieldError| Error::Invalid {
        kind: info.qualified_kind(),
        name: name.to_string(),
        causes: vec![cause],
    };
    let old_ip = old
        .and_then(|old| object::at(old, "spec.clusterIP"))
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let spec = object::at_mut(service, "spec");
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let first_of_list = spec
        .get("clusterIPs")
        .and_then(|ips| ips.get(0))
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    if let (Some(single), Some(first)) = (&cluster_ip, &first_of_list) {
        if single != first {
            return Err(invalid(FieldError::invalid(
                "spec.clusterIPs[0]",
                first.as_str(),
                "must match `clusterIP`",
            )));
        }
    }
    let requested = cluster_ip.or(first_of_list);

    if service_type == "ExternalName" {
        if requested.is_some() && requested != old_ip {
            return Err(invalid(FieldError::forbidden(
                "spec.clusterIP",
                "may not be set when `type` is 'ExternalName'",
            )));
        }
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(field);
        }
        return Ok(IpPlan::released(
            allocator,
            old_ip.and_then(|ip| ip.parse().ok()),
        ));
    }
    if let Some(old_ip) = old_ip {
        if requested.as_ref().is_some_and(|ip| *ip != old_ip) {
            return Err(invalid(FieldError::invalid(
                "spec.clusterIP",
                requested.unwrap_or_default(),
                "field is immutable",
            )));
        }
        set_cluster_ip(spec, &old_ip);
        return Ok(IpPlan::none());
    }
    let (address, plan) = match requested.as_deref() {
        Some("None") => ("None".to_string(), IpPlan::none()),
        None => match allocator.reserve_next() {
            Ok(ip) => (ip.to_string(), IpPlan::reserved(allocator, ip)),
            Err(_) => {
                return Err(Error::internal(format!(
                    "failed to allocate a serviceIP: range {} is full",
                    allocator.cidr()
                )))
            }
        },
        Some(wanted) => match allocator.reserve(wanted) {
            Ok(ip) => (ip.to_string(), IpPlan::requested(ip)),
            Err(why) => {
                let detail = match why {
                    Unavailable::Malformed => {
                        "must be a valid IP address, (e.g. 10.9.8.7)".to_string()
                    }
                    Unavailable::Taken => {
                        format!("failed to allocate IP {wanted}: provided IP is already allocated")
                    }
                    Unavailable::OutOfRange | Unavailable::Exhausted => format!(
                        "failed to allocate IP {wanted}: provided IP ({wanted}) is not in \
                         the valid range. The range of valid IPs is {}",
                        allocator.cidr()
                    ),
                };
                return Err(invalid(FieldError::invalid(
                    "spec.clusterIP",
                    wanted,
                    detail,
                )));
            }
        },
    };
    set_cluster_ip(spec, &address);
    Ok(plan)
}

fn set_cluster_ip(spec: &mut serde_json::Map<String, Value>, address: &str) {
    spec.insert("clusterIP".into(), Value::String(address.to_string()));
    spec.insert(
        "clusterIPs".into(),
        Value::Array(vec![Value::String(address.to_string())]),
    );
    spec.entry("ipFamilies")
        .or_insert_with(|| serde_json::json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| Value::String("SingleStack".into()));
}
