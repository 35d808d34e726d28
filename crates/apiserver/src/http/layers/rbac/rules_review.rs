//! The rules RBAC grants one user in one namespace, as a `SelfSubjectRulesReview` lists them
//! (Kubernetes' `RulesFor`): the rules of every ClusterRole bound to the user cluster-wide,
//! and of every Role or ClusterRole bound to it in the namespace, aggregation included.

use std::collections::HashSet;

use capstan_api::ext::MetaExt;
use capstan_api::k8s_openapi::api::authorization::v1::{
    NonResourceRule, ResourceRule, SubjectRulesReviewStatus,
};
use capstan_api::k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use capstan_api::kube_core::Selector;
use capstan_api::selector::{label_selector_from, matches as labels_match};
use capstan_watch::ObjectKey;

use super::subjects::bindings_for;
use super::RbacAuthorizer;
use crate::http::layers::UserInfo;

impl RbacAuthorizer {
    /// The rules granting `user` anything in `namespace` (`""`: cluster-wide bindings only).
    /// Members of `system:masters` get what their bindings grant (`cluster-admin`, by the
    /// bootstrap policy). Roles that cannot be resolved are named in `evaluationError`, and
    /// an unsynced cache answers `incomplete: true`.
    pub(super) fn rules_review(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> SubjectRulesReviewStatus {
        let pending = self.pending();
        if !pending.is_empty() {
            return SubjectRulesReviewStatus {
                incomplete: true,
                evaluation_error: Some(format!(
                    "the RBAC cache is not yet synced (waiting for {})",
                    pending.join(", ")
                )),
                ..Default::default()
            };
        }
        let mut rules: Vec<PolicyRule> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for binding in bindings_for(self.cluster_role_bindings.cache(), user, None) {
            if binding.role_ref.kind == "ClusterRole" {
                self.cluster_role_rules(&binding.role_ref.name, &mut rules, &mut errors);
            }
        }
        if !namespace.is_empty() {
            for binding in bindings_for(self.role_bindings.cache(), user, Some(namespace)) {
                let name = &binding.role_ref.name;
                match binding.role_ref.kind.as_str() {
                    "ClusterRole" => self.cluster_role_rules(name, &mut rules, &mut errors),
                    "Role" => match self
                        .roles
                        .cache()
                        .get(&ObjectKey::namespaced(namespace, name))
                    {
                        Some(role) => rules.extend(role.rules.iter().flatten().cloned()),
                        None => errors
                            .push(format!("role.rbac.authorization.k8s.io {name:?} not found")),
                    },
                    _ => {}
                }
            }
        }
        let mut status = review_of(&rules);
        if !errors.is_empty() {
            status.evaluation_error = Some(errors.join(", "));
        }
        status
    }

    /// Adds the rules of the ClusterRole `name` and of every ClusterRole it aggregates.
    fn cluster_role_rules(
        &self,
        name: &str,
        rules: &mut Vec<PolicyRule>,
        errors: &mut Vec<String>,
    ) {
        let cache = self.cluster_roles.cache();
        let Some(role) = cache.get(&ObjectKey::cluster(name)) else {
            errors.push(format!(
                "clusterrole.rbac.authorization.k8s.io {name:?} not found"
            ));
            return;
        };
        rules.extend(role.rules.iter().flatten().cloned());
        if role.aggregation_rule.is_none() {
            return;
        }
        let all = cache.list();
        let mut visited: HashSet<String> = HashSet::from([name.to_string()]);
        let mut aggregating = vec![role];
        while let Some(current) = aggregating.pop() {
            let selectors = aggregation_selectors(&current);
            for candidate in &all {
                let candidate_name = candidate.name_str();
                if visited.contains(candidate_name)
                    || !selectors
                        .iter()
                        .any(|s| labels_match(s, candidate.metadata.labels.as_ref()))
                {
                    continue;
                }
                visited.insert(candidate_name.to_string());
                rules.extend(candidate.rules.iter().flatten().cloned());
                if candidate.aggregation_rule.is_some() {
                    aggregating.push(candidate.clone());
                }
            }
        }
    }
}

/// The label selectors of a ClusterRole's `aggregationRule` (none when it has none).
fn aggregation_selectors(role: &ClusterRole) -> Vec<Selector> {
    role.aggregation_rule
        .iter()
        .flat_map(|rule| rule.cluster_role_selectors.iter().flatten())
        .filter_map(|selector| label_selector_from(selector).ok())
        .collect()
}

/// `rules` split into resource rules and non-resource rules, as the review reports them.
fn review_of(rules: &[PolicyRule]) -> SubjectRulesReviewStatus {
    let mut status = SubjectRulesReviewStatus::default();
    for rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        if !resources.is_empty() {
            status.resource_rules.push(ResourceRule {
                verbs: rule.verbs.clone(),
                api_groups: rule.api_groups.clone(),
                resources: Some(resources),
                resource_names: rule.resource_names.clone().filter(|n| !n.is_empty()),
            });
        }
        let urls = rule.non_resource_urls.clone().unwrap_or_default();
        if !urls.is_empty() {
            status.non_resource_rules.push(NonResourceRule {
                verbs: rule.verbs.clone(),
                non_resource_urls: Some(urls),
            });
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules_split_into_resource_and_non_resource_rules() {
        let rules = vec![
            PolicyRule {
                verbs: vec!["get".into()],
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            },
            PolicyRule {
                verbs: vec!["get".into()],
                non_resource_urls: Some(vec!["/healthz".into()]),
                ..Default::default()
            },
        ];
        let status = review_of(&rules);
        assert_eq!(status.resource_rules.len(), 1);
        assert_eq!(
            status.resource_rules[0].resources.as_deref(),
            Some(&["pods".to_string()][..])
        );
        assert_eq!(status.non_resource_rules.len(), 1);
        assert!(!status.incomplete);
    }
}
