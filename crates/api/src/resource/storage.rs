//! The storage key layout's rules: which path segments are valid, and the segment under
//! `/registry` where kube-apiserver stores each resource.

use crate::error::{Error, Result};

/// Kubernetes' `ValidatePathSegmentName`: names and namespaces become key segments.
pub(super) fn validate_path_segment(field: &str, segment: &str) -> Result<()> {
    let problem = if segment.is_empty() {
        "may not be empty".to_string()
    } else if segment == "." || segment == ".." {
        format!("may not be '{segment}'")
    } else if let Some(bad) = segment.chars().find(|c| matches!(c, '/' | '%')) {
        format!("may not contain '{bad}'")
    } else {
        return Ok(());
    };
    Err(Error::bad_field(
        field,
        format!("{}: {problem}", crate::error::quote(segment)),
    ))
}

/// Groups whose storage kube-apiserver itself owns: they store under `/registry/<resource>`.
const KUBE_APISERVER_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// The segment under `/registry` where kube-apiserver stores `plural` of `group`.
pub(super) fn storage_resource(group: &str, plural: &str) -> String {
    if !KUBE_APISERVER_GROUPS.contains(&group) {
        return format!("{group}/{plural}");
    }
    let renamed = match (group, plural) {
        ("", "nodes") => "minions",
        ("", "services") => "services/specs",
        ("", "endpoints") => "services/endpoints",
        ("", "replicationcontrollers") => "controllers",
        ("networking.k8s.io" | "extensions", "ingresses") => "ingress",
        ("policy" | "extensions", "podsecuritypolicies") => "podsecuritypolicy",
        // events.k8s.io Events are the core Events, served in another shape.
        ("events.k8s.io", "events") => "events",
        _ => plural,
    };
    renamed.to_string()
}
