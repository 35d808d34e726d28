//! One decision's walk over roles: Roles, ClusterRoles and their aggregation, with what
//! could not be resolved reported in the denial.

use capstan_api::ext::MetaExt;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleRef};
use capstan_api::kube_core::Selector;
use capstan_api::selector::{label_selector_from, matches as labels_match};
use capstan_watch::{Cache, ObjectKey};

use super::rules::rules_allow;
use super::MAX_REPORTED_ERRORS;
use crate::http::layers::Attributes;

/// One decision's walk over roles: the request, the cluster roles (listed once, if an
/// aggregated role needs them), and what could not be resolved.
pub(super) struct Visit<'a> {
    pub(super) attributes: &'a Attributes,
    pub(super) cluster_roles: &'a Cache<ClusterRole>,
    pub(super) all_cluster_roles: Option<Vec<Arc<ClusterRole>>>,
    pub(super) errors: Vec<String>,
}

impl Visit<'_> {
    /// Whether the Role `namespace/name` grants the request.
    pub(super) fn role_allows(&mut self, roles: &Cache<Role>, namespace: &str, name: &str) -> bool {
        match roles.get(&ObjectKey::namespaced(namespace, name)) {
            Some(role) => rules_allow(role.rules.as_deref(), self.attributes),
            None => {
                self.errors.push(format!(
                    "role.rbac.authorization.k8s.io {name:?} not found in the namespace {namespace:?}"
                ));
                false
            }
        }
    }

    /// Whether the ClusterRole `name`, with the roles it aggregates, grants the request.
    pub(super) fn cluster_role_allows(&mut self, name: &str) -> bool {
        let Some(role) = self.cluster_roles.get(&ObjectKey::cluster(name)) else {
            self.errors.push(format!(
                "clusterrole.rbac.authorization.k8s.io {name:?} not found"
            ));
            return false;
        };
        if rules_allow(role.rules.as_deref(), self.attributes) {
            return true;
        }
        if role.aggregation_rule.is_none() {
            return false;
        }
        let all = self
            .all_cluster_roles
            .get_or_insert_with(|| self.cluster_roles.list());
        let mut visited: HashSet<&str> = HashSet::from([name]);
        let mut aggregating = vec![role];
        while let Some(current) = aggregating.pop() {
            let selectors: Vec<Selector> = current
                .aggregation_rule
                .iter()
                .flat_map(|rule| rule.cluster_role_selectors.iter().flatten())
                .filter_map(|selector| label_selector_from(selector).ok())
                .collect();
            if selectors.is_empty() {
                continue;
            }
            for candidate in all.iter() {
                let candidate_name = candidate.name_str();
                if visited.contains(candidate_name)
                    || !selectors
                        .iter()
                        .any(|s| labels_match(s, candidate.metadata.labels.as_ref()))
                {
                    continue;
                }
                visited.insert(candidate_name);
                if rules_allow(candidate.rules.as_deref(), self.attributes) {
                    return true;
                }
                if candidate.aggregation_rule.is_some() {
                    aggregating.push(candidate.clone());
                }
            }
        }
        false
    }

    /// Records a binding whose `roleRef` names a kind it cannot bind.
    pub(super) fn unsupported(
        &mut self,
        role_ref: &RoleRef,
        binding_kind: &str,
        name: &Option<String>,
    ) {
        self.errors.push(format!(
            "{binding_kind}.rbac.authorization.k8s.io {:?} references unsupported role kind {:?}",
            name.as_deref().unwrap_or_default(),
            role_ref.kind
        ));
    }

    /// The reason of a denial: the missing permission, then what could not be resolved.
    pub(super) fn denial(&self) -> String {
        let a = self.attributes;
        let mut reason = format!("RBAC: no role bound to the user grants {:?} on ", a.verb);
        match &a.resource {
            None => {
                let _ = write!(reason, "the path {:?}", a.path);
            }
            Some(r) => {
                let mut resource = r.resource.clone();
                if let Some(sub) = &r.subresource {
                    resource = format!("{resource}/{sub}");
                }
                if !r.group.is_empty() {
                    resource = format!("{resource}.{}", r.group);
                }
                let _ = write!(reason, "{resource:?}");
                if let Some(name) = &r.name {
                    let _ = write!(reason, " named {name:?}");
                }
                match &r.namespace {
                    Some(ns) => {
                        let _ = write!(reason, " in the namespace {ns:?}");
                    }
                    None => reason.push_str(" at the cluster scope"),
                }
            }
        }
        if !self.errors.is_empty() {
            let shown = self.errors.len().min(MAX_REPORTED_ERRORS);
            let _ = write!(reason, "; {}", self.errors[..shown].join("; "));
            if self.errors.len() > shown {
                let _ = write!(reason, "; and {} more", self.errors.len() - shown);
            }
        }
        reason
    }
}
