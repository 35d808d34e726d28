//! Role-based access control: kube-apiserver's `--authorization-mode=RBAC`, decided from the
//! `rbac.authorization.k8s.io/v1` objects themselves.
//!
//! # Contract
//!
//! - **Who calls.** [`AuthzLayer`](super::AuthzLayer) asks [`RbacAuthorizer`] about every
//!   request that is not on a public path (set it with
//!   [`ApiServerOptions::authorizer`](super::ApiServerOptions::authorizer)). Anything else
//!   holding [`Attributes`] may ask too; a decision reads only in-memory caches and never
//!   waits.
//! - **What it reads.** Four shared informers (`Role`, `ClusterRole`, `RoleBinding`,
//!   `ClusterRoleBinding`) over any `Arc<dyn Client>`: the in-process
//!   [`Registry`](crate::registry::Registry) or a [`RemoteClient`](crate::remote::RemoteClient).
//!   Changes take effect as soon as the informers see them, without a restart. Bindings are
//!   indexed by subject, so a decision only looks at the bindings naming the user, one of
//!   the user's groups, or its service account.
//! - **What deny means.** Whatever no rule grants is denied
//!   ([`Decision::Deny`], 403): the reason names the missing permission, and any binding
//!   whose role could not be resolved. Members of `system:masters` ([`SUPERUSER_GROUP`])
//!   are always allowed, as kube-apiserver's superuser authorizer allows them ahead of RBAC.
//! - **Sync.** Until all four informers have applied their first list, every request but a
//!   superuser's is denied with a reason saying the RBAC cache is not yet synced: a partial
//!   view never allows by accident. [`RbacAuthorizer::new`] starts the informers and waits
//!   for that with a timeout ([`RbacError::NotSynced`]); [`RbacAuthorizer::start`] and
//!   [`RbacAuthorizer::from_factory`] return at once.
//!
//! # Semantics (Kubernetes')
//!
//! - Subjects: `User` matches the user's name, `Group` any of the user's groups,
//!   `ServiceAccount` the user `system:serviceaccount:<namespace>:<name>`. A service
//!   account subject without a namespace takes a RoleBinding's namespace; in a
//!   ClusterRoleBinding it matches no one.
//! - A `RoleBinding` grants the rules of its `roleRef` (a `Role` in its own namespace, or a
//!   `ClusterRole`) in its own namespace only. A `ClusterRoleBinding` grants a `ClusterRole`
//!   everywhere: every namespace, lists across namespaces, cluster-scoped resources, and
//!   non-resource URLs.
//! - A rule matches when its `verbs` and `apiGroups` hold the request's verb and group (or
//!   `*`; `""` is the core group), and its `resources` hold the resource: `pods` (not its
//!   subresources), `pods/status`, `*/scale` (that subresource of anything), `pods/*` (any
//!   subresource of pods; a Capstan extension, Kubernetes itself does not expand it) or `*`
//!   (everything, subresources included). `resourceNames`, when set, restrict the rule to
//!   requests naming one of them, so such a rule never grants `list`, `watch`, `create` or
//!   `deletecollection` on a collection.
//! - `nonResourceURLs` (exact, or a prefix ending in `*`) match only non-resource requests
//!   (`/apis`, `/healthz`, ...), whose verb is the lowercase HTTP method; since those have no
//!   namespace, only ClusterRoles bound by ClusterRoleBindings grant them.
//! - A ClusterRole with an `aggregationRule` also grants the rules of every ClusterRole whose
//!   labels match one of its `clusterRoleSelectors`, transitively, read from the cache at
//!   decision time (nothing is written back, so no aggregation controller is needed).
//!
//! The module's files: this one holds the authorizer and its informers; `subjects.rs` indexes
//! bindings by subject, `visit.rs` resolves the roles a decision walks (aggregation
//! included), `rules.rs` matches a policy rule against the request.

mod rules;
mod rules_review;
mod subjects;
mod visit;

use capstan_api::ext::MetaExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use capstan_api::Client;
use capstan_watch::{InformerFactory, ReflectorOptions, SharedInformer};

use super::{Attributes, Authorizer, Decision};
use subjects::{bindings_for, subject_keys};
use visit::Visit;

/// The group whose members may do anything (kube-apiserver's superuser group).
pub const SUPERUSER_GROUP: &str = "system:masters";

/// The prefix of a service account's user name: `system:serviceaccount:<namespace>:<name>`.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The index of binding caches by subject. Values are `user:<name>` and `group:<name>` for
/// ClusterRoleBindings, prefixed with `<namespace>/` for RoleBindings; a service account is
/// indexed under its user name.
const SUBJECT_INDEX: &str = "rbac.authorization.k8s.io/subject";

/// At most this many unresolved role references are listed in a denial's reason.
const MAX_REPORTED_ERRORS: usize = 3;

/// Why an [`RbacAuthorizer`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// Some informers had not applied their first list within the timeout (the source is
    /// unreachable, or refuses to list these kinds). Retryable: the informers keep trying,
    /// and [`RbacAuthorizer::wait_for_sync`] may be called again.
    #[error("the RBAC cache did not sync within {timeout:?}: {} not yet listed", pending.join(", "))]
    NotSynced {
        /// How long it waited.
        timeout: Duration,
        /// The resources not yet listed, e.g. `clusterroles`.
        pending: Vec<&'static str>,
    },
}

/// Authorizes requests from the cluster's Roles, ClusterRoles, RoleBindings and
/// ClusterRoleBindings, kept current by shared informers. See the [module docs](self) for
/// the contract and the rules it follows.
///
/// Cheap to clone: clones share the informers. The informers stop when the last clone (and
/// the last other holder of the informers, such as an [`InformerFactory`]) is dropped.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use capstan_apiserver::http::layers::{ApiServerOptions, RbacAuthorizer, StaticTokens};
/// use capstan_apiserver::http::ApiServer;
/// use capstan_apiserver::registry::Registry;
/// use capstan_store::memory::MemoryStore;
///
/// # async fn run(tokens: StaticTokens) -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
/// let rbac = RbacAuthorizer::new(registry.clone(), Duration::from_secs(10)).await?;
/// let options = ApiServerOptions::default()
///     .authenticator(tokens)
///     .authorizer(rbac)
///     .anonymous(false);
/// let server = ApiServer::bind_with(registry, "127.0.0.1:6443".parse()?, options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RbacAuthorizer {
    roles: Arc<SharedInformer<Role>>,
    cluster_roles: Arc<SharedInformer<ClusterRole>>,
    role_bindings: Arc<SharedInformer<RoleBinding>>,
    cluster_role_bindings: Arc<SharedInformer<ClusterRoleBinding>>,
}

impl RbacAuthorizer {
    /// Starts the informers over `client` and waits up to `timeout` for their first lists.
    ///
    /// Errors: [`RbacError::NotSynced`] when they have not all synced in time (the
    /// informers are stopped then).
    pub async fn new(client: Arc<dyn Client>, timeout: Duration) -> Result<Self, RbacError> {
        let authorizer = Self::start(client);
        authorizer.wait_for_sync(timeout).await?;
        Ok(authorizer)
    }

    /// Starts the informers over `client` (on the current tokio runtime) and returns at once;
    /// requests are denied until [`is_synced`](Self::is_synced).
    pub fn start(client: Arc<dyn Client>) -> Self {
        Self::from_factory(&InformerFactory::new(client, ReflectorOptions::default()))
    }

    /// Uses `factory`'s informers for the four RBAC kinds (starting any not yet started), so
    /// the authorizer shares one watch per kind with the process's other components. Returns
    /// at once; requests are denied until [`is_synced`](Self::is_synced).
    pub fn from_factory(factory: &InformerFactory) -> Self {
        let authorizer = RbacAuthorizer {
            roles: factory.informer(),
            cluster_roles: factory.informer(),
            role_bindings: factory.informer(),
            cluster_role_bindings: factory.informer(),
        };
        authorizer
            .role_bindings
            .cache()
            .add_index(SUBJECT_INDEX, |binding: &RoleBinding| {
                let namespace = binding.namespace_str();
                subject_keys(binding.subjects.as_deref(), Some(namespace))
            });
        authorizer
            .cluster_role_bindings
            .cache()
            .add_index(SUBJECT_INDEX, |binding: &ClusterRoleBinding| {
                subject_keys(binding.subjects.as_deref(), None)
            });
        authorizer
    }

    /// Whether all four informers have applied their first list.
    pub fn is_synced(&self) -> bool {
        self.pending().is_empty()
    }

    /// Waits up to `timeout` for all four informers' first lists.
    ///
    /// Errors: [`RbacError::NotSynced`], naming the kinds still pending.
    pub async fn wait_for_sync(&self, timeout: Duration) -> Result<(), RbacError> {
        let all = async {
            futures::join!(
                self.roles.wait_for_sync(),
                self.cluster_roles.wait_for_sync(),
                self.role_bindings.wait_for_sync(),
                self.cluster_role_bindings.wait_for_sync(),
            )
        };
        tokio::time::timeout(timeout, all)
            .await
            .map(|_| ())
            .map_err(|_| RbacError::NotSynced {
                timeout,
                pending: self.pending(),
            })
    }

    /// The resources whose informers have not synced yet.
    fn pending(&self) -> Vec<&'static str> {
        [
            ("roles", self.roles.cache().is_synced()),
            ("clusterroles", self.cluster_roles.cache().is_synced()),
            ("rolebindings", self.role_bindings.cache().is_synced()),
            (
                "clusterrolebindings",
                self.cluster_role_bindings.cache().is_synced(),
            ),
        ]
        .into_iter()
        .filter_map(|(resource, synced)| (!synced).then_some(resource))
        .collect()
    }

    /// The decision on `attributes`, from the caches as they are now.
    fn decide(&self, attributes: &Attributes) -> Decision {
        let user = &attributes.user;
        if user.groups.iter().any(|group| group == SUPERUSER_GROUP) {
            return Decision::Allow;
        }
        let pending = self.pending();
        if !pending.is_empty() {
            return Decision::Deny(format!(
                "RBAC: the RBAC cache is not yet synced (waiting for {})",
                pending.join(", ")
            ));
        }
        let mut visit = Visit {
            attributes,
            cluster_roles: self.cluster_roles.cache(),
            all_cluster_roles: None,
            errors: Vec::new(),
        };

        for binding in bindings_for(self.cluster_role_bindings.cache(), user, None) {
            let role_ref = &binding.role_ref;
            if role_ref.kind == "ClusterRole" {
                if visit.cluster_role_allows(&role_ref.name) {
                    return Decision::Allow;
                }
            } else {
                visit.unsupported(role_ref, "clusterrolebinding", &binding.metadata.name);
            }
        }

        // Only a request inside a namespace can be granted by that namespace's RoleBindings;
        // non-resource requests and cluster-wide ones have none.
        let namespace = attributes
            .resource
            .as_ref()
            .and_then(|r| r.namespace.as_deref());
        if let Some(namespace) = namespace {
            for binding in bindings_for(self.role_bindings.cache(), user, Some(namespace)) {
                let role_ref = &binding.role_ref;
                let allowed = match role_ref.kind.as_str() {
                    "ClusterRole" => visit.cluster_role_allows(&role_ref.name),
                    "Role" => visit.role_allows(self.roles.cache(), namespace, &role_ref.name),
                    _ => {
                        visit.unsupported(role_ref, "rolebinding", &binding.metadata.name);
                        false
                    }
                };
                if allowed {
                    return Decision::Allow;
                }
            }
        }

        Decision::Deny(visit.denial())
    }
}

#[async_trait]
impl Authorizer for RbacAuthorizer {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        self.decide(attributes)
    }

    async fn rules_for(
        &self,
        user: &super::UserInfo,
        namespace: &str,
    ) -> capstan_api::k8s_openapi::api::authorization::v1::SubjectRulesReviewStatus {
        self.rules_review(user, namespace)
    }
}

#[cfg(test)]
mod tests;
