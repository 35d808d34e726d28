//! The subject index of bindings: who a RoleBinding or ClusterRoleBinding names, and the
//! bindings naming a user, its groups or its service account.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::rbac::v1::Subject;
use capstan_watch::Cache;

use super::{SERVICE_ACCOUNT_PREFIX, SUBJECT_INDEX};
use crate::http::layers::UserInfo;

/// The subject index's values for a binding's subjects: `<prefix>user:<name>` or
/// `<prefix>group:<name>`, where the prefix is `<namespace>/` for a RoleBinding.
pub(super) fn subject_keys(subjects: Option<&[Subject]>, namespace: Option<&str>) -> Vec<String> {
    let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
    let mut keys: Vec<String> = subjects
        .unwrap_or_default()
        .iter()
        .filter_map(|subject| match subject.kind.as_str() {
            "User" => Some(format!("{prefix}user:{}", subject.name)),
            "Group" => Some(format!("{prefix}group:{}", subject.name)),
            "ServiceAccount" => {
                let sa_namespace = subject
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .or(namespace)
                    .filter(|ns| !ns.is_empty())?;
                Some(format!(
                    "{prefix}user:{SERVICE_ACCOUNT_PREFIX}{sa_namespace}:{}",
                    subject.name
                ))
            }
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The bindings in `cache` naming `user`, one of its groups, or (through its user name) its
/// service account: RoleBindings of `namespace`, or ClusterRoleBindings when it is `None`.
/// Each binding once.
pub(super) fn bindings_for<B: capstan_api::Resource>(
    cache: &Cache<B>,
    user: &UserInfo,
    namespace: Option<&str>,
) -> Vec<Arc<B>> {
    let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
    let mut bindings = cache.by_index(SUBJECT_INDEX, &format!("{prefix}user:{}", user.name));
    for group in &user.groups {
        for binding in cache.by_index(SUBJECT_INDEX, &format!("{prefix}group:{group}")) {
            if !bindings.iter().any(|seen| Arc::ptr_eq(seen, &binding)) {
                bindings.push(binding);
            }
        }
    }
    bindings
}
