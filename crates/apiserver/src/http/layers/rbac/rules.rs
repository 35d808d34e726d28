//! Matching a policy rule against a request: verbs, API groups, resources and subresources,
//! resource names, non-resource URLs (Kubernetes' `RuleAllows`).

use capstan_api::k8s_openapi::api::rbac::v1::PolicyRule;

use crate::http::layers::Attributes;

/// Whether any of `rules` grants the request.
pub(super) fn rules_allow(rules: Option<&[PolicyRule]>, attributes: &Attributes) -> bool {
    rules
        .unwrap_or_default()
        .iter()
        .any(|rule| rule_allows(rule, attributes))
}

/// Whether `rule` grants the request (Kubernetes' `RuleAllows`).
pub(super) fn rule_allows(rule: &PolicyRule, attributes: &Attributes) -> bool {
    if !has(&rule.verbs, &attributes.verb) {
        return false;
    }
    match &attributes.resource {
        Some(r) => {
            has(rule.api_groups.as_deref().unwrap_or_default(), &r.group)
                && rule
                    .resources
                    .iter()
                    .flatten()
                    .any(|pattern| resource_matches(pattern, &r.resource, r.subresource.as_deref()))
                && match rule.resource_names.as_deref() {
                    None | Some([]) => true,
                    Some(names) => r.name.as_ref().is_some_and(|name| names.contains(name)),
                }
        }
        None => {
            rule.non_resource_urls
                .iter()
                .flatten()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => attributes.path.starts_with(prefix),
                    None => attributes.path == *pattern,
                })
        }
    }
}

/// Whether `list` holds `value` or `*`.
pub(super) fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

/// Whether a rule's resource `pattern` covers `resource[/subresource]`: `*`, the exact
/// `resource` or `resource/subresource`, `*/subresource`, or `resource/*`.
pub(super) fn resource_matches(pattern: &str, resource: &str, subresource: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    match (pattern.split_once('/'), subresource) {
        (None, None) => pattern == resource,
        (Some((r, s)), Some(sub)) => (r == "*" || r == resource) && (s == "*" || s == sub),
        _ => false,
    }
}
