//! The RBAC kinds (Role, ClusterRole, RoleBinding, ClusterRoleBinding): names may be anything
//! path-safe (`system:controller:x`), as Kubernetes allows.

use super::KindStrategy;
use crate::registry::validation::NameRule;

/// The rules of every `rbac.authorization.k8s.io/v1` kind.
pub(crate) struct RbacStrategy;

impl KindStrategy for RbacStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
}
