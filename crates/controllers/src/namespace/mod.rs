//! The namespace controller: kube-controller-manager's `namespace-controller`, which empties a
//! namespace being deleted and then lets the API server remove it.
//!
//! # Contracts
//!
//! - **Which namespaces.** Those with a `deletionTimestamp` whose `spec.finalizers` still hold
//!   `kubernetes`; any other is left alone.
//! - **What it deletes.** Every object of every namespaced kind the [`Discovery`] names in
//!   that namespace: the built-in kinds plus the kinds served from established
//!   `CustomResourceDefinition`s by default ([`CrdDiscovery`]). A kind whose list answers 404
//!   (no longer, or not yet, served) has nothing to delete. An object with finalizers
//!   stays (marked for deletion) until those finalizers are removed by whoever owns them; the
//!   namespace waits for it.
//! - **Progress.** Kubernetes' namespace conditions are kept in `status.conditions`:
//!   `NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionContentFailure`,
//!   `NamespaceContentRemaining` (`Some resources are remaining: configmaps. has 2 objects,
//!   pods. has 3 objects`) and `NamespaceFinalizersRemaining`, each `True` or `False`,
//!   written only when they change. While content remains the namespace is requeued with
//!   per-key exponential backoff (5 ms doubling up to 60 s).
//! - **Finishing.** Once nothing is left, it removes `kubernetes` from `spec.finalizers` (an
//!   update of the Namespace that only removes that entry, which is what the `finalize`
//!   subresource does); the API server then removes the namespace once `metadata.finalizers`
//!   is empty too. A namespace that is gone meanwhile is done.
//! - **Idempotent.** Every step reads what is there now, so a restarted controller resumes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::Deletion;
use capstan_api::k8s_openapi::api::core::v1::Namespace;
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::kube_core::DynamicObject;
use capstan_api::{Client, Error, ResourceInfo};
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ManagedController, Reconciler,
};
use capstan_watch::queue::ExponentialBackoff;
use capstan_watch::InformerFactory;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

use crate::context::{BuiltinController, ControllerContext, StopSignal};
use crate::util::custom_resources::list_served_custom_kinds;

#[cfg(test)]
mod tests;

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "namespace-controller";

/// The finalizer of `spec.finalizers` this controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// The condition types Kubernetes reports on a terminating namespace.
pub mod conditions {
    /// Listing the served kinds failed.
    pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
    /// Deleting or listing some kind's objects failed.
    pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
    /// Objects are still there (being deleted, held by finalizers or a grace period).
    pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
    /// Objects still there carry finalizers.
    pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";
}

/// The longest wait between two passes over a namespace whose content remains.
pub const MAX_REQUEUE: Duration = Duration::from_secs(60);

/// Where the controller learns which kinds are served.
///
/// Called once per pass over a terminating namespace; an error is reported as
/// `NamespaceDeletionDiscoveryFailure` and the pass is retried.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Every served kind (the controller keeps the namespaced ones).
    async fn resources(&self) -> Result<Vec<ResourceInfo>, Error>;
}

/// The served kinds through any [`Client`]: the built-in kinds, plus one kind per served
/// version of every `Established` `CustomResourceDefinition` (one that is not established yet
/// serves nothing: its endpoints answer 404), as
/// [`ServedCustomKinds`](crate::util::ServedCustomKinds) reads them.
pub struct CrdDiscovery {
    client: Arc<dyn Client>,
}

impl CrdDiscovery {
    /// Discovery through `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        CrdDiscovery { client }
    }
}

#[async_trait]
impl Discovery for CrdDiscovery {
    async fn resources(&self) -> Result<Vec<ResourceInfo>, Error> {
        let mut resources: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
        for (_, served) in list_served_custom_kinds(&*self.client).await? {
            resources.extend(served.versions);
        }
        Ok(resources)
    }
}

/// A fixed list of kinds, or a closure over one (e.g. an in-process registry's
/// `resources()`).
pub struct StaticDiscovery<F>(pub F);

#[async_trait]
impl<F> Discovery for StaticDiscovery<F>
where
    F: Fn() -> Vec<ResourceInfo> + Send + Sync + 'static,
{
    async fn resources(&self) -> Result<Vec<ResourceInfo>, Error> {
        Ok((self.0)())
    }
}

/// What one pass over a namespace's content found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContentReport {
    /// Objects still there per kind (`configmaps.`, `deployments.apps`), sorted.
    pub remaining: BTreeMap<String, usize>,
    /// Objects still there carrying each finalizer, sorted.
    pub finalizers: BTreeMap<String, usize>,
    /// The kinds whose listing or deletion failed, with the error.
    pub failures: Vec<String>,
}

impl ContentReport {
    /// Whether nothing is left and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.remaining.is_empty() && self.failures.is_empty()
    }
}

/// The namespace controller's reconciler; see the [module docs](self).
pub struct NamespaceReconciler {
    client: Arc<dyn Client>,
    discovery: Arc<dyn Discovery>,
}

impl NamespaceReconciler {
    /// A reconciler writing through `client`, discovering kinds with [`CrdDiscovery`].
    pub fn new(client: Arc<dyn Client>) -> Self {
        let discovery = Arc::new(CrdDiscovery::new(client.clone()));
        NamespaceReconciler { client, discovery }
    }

    /// Learns the served kinds from `discovery` instead.
    #[must_use]
    pub fn with_discovery(mut self, discovery: impl Discovery) -> Self {
        self.discovery = Arc::new(discovery);
        self
    }

    /// Deletes every object of `resources`' namespaced kinds in `namespace`, and reports what
    /// is left. Objects already being deleted are not deleted again.
    pub async fn delete_content(
        &self,
        namespace: &str,
        resources: &[ResourceInfo],
    ) -> ContentReport {
        let mut report = ContentReport::default();
        let mut seen = std::collections::HashSet::new();
        for resource in resources.iter().filter(|r| r.namespaced()) {
            // One version per kind is enough: every version shows the same objects.
            if !seen.insert((resource.group().to_string(), resource.plural().to_string())) {
                continue;
            }
            let label = format!("{}.{}", resource.plural(), resource.group());
            if let Err(error) = self
                .delete_kind(namespace, resource, &label, &mut report)
                .await
            {
                report.failures.push(format!("{label}: {error}"));
            }
        }
        report
    }

    async fn delete_kind(
        &self,
        namespace: &str,
        resource: &ResourceInfo,
        label: &str,
        report: &mut ContentReport,
    ) -> Result<(), Error> {
        let list = match self
            .client
            .list(resource, Some(namespace), &ListParams::default())
            .await
        {
            Ok(list) => list,
            // Not served (any more, or not yet: a CRD not established answers 404), or not
            // listable: nothing of it to delete.
            Err(error) if error.is_not_found() => return Ok(()),
            Err(Error::MethodNotAllowed { .. }) => return Ok(()),
            Err(error) => return Err(error),
        };
        for object in list.items {
            let left = match object.metadata.deletion_timestamp {
                Some(_) => Some(object),
                None => {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    let params = DeleteParams::background();
                    match self
                        .client
                        .delete(resource, Some(namespace), &name, &params)
                        .await
                    {
                        Ok(Deletion::Pending(left)) => Some(left),
                        Ok(Deletion::Deleted(_)) | Err(Error::NotFound { .. }) => None,
                        Err(error) => return Err(error),
                    }
                }
            };
            if let Some(left) = left {
                *report.remaining.entry(label.to_string()).or_default() += 1;
                for finalizer in left.metadata.finalizers.unwrap_or_default() {
                    *report.finalizers.entry(finalizer).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// One pass over the namespace `name`: what [`Reconciler::reconcile`] does.
    ///
    /// Errors: the API's, for reads and writes of the Namespace itself.
    pub async fn sync(&self, name: &str) -> Result<Action, Error> {
        let namespaces = namespaces();
        let namespace = match self.client.get(&namespaces, None, name).await {
            Ok(namespace) => namespace,
            Err(Error::NotFound { .. }) => return Ok(Action::await_change()),
            Err(error) => return Err(error),
        };
        if namespace.metadata.deletion_timestamp.is_none()
            || !spec_finalizers(&namespace)
                .iter()
                .any(|f| f == KUBERNETES_FINALIZER)
        {
            return Ok(Action::await_change());
        }
        let (discovery_error, report) = match self.discovery.resources().await {
            Ok(resources) => (None, self.delete_content(name, &resources).await),
            Err(error) => (Some(error.to_string()), ContentReport::default()),
        };
        let wanted = desired_conditions(discovery_error.as_deref(), &report);
        let namespace = match self.write_conditions(namespace, &wanted).await {
            Ok(namespace) => namespace,
            Err(Error::NotFound { .. }) => return Ok(Action::await_change()),
            Err(error) => return Err(error),
        };
        if discovery_error.is_some() || !report.is_empty() {
            return Ok(Action::backoff());
        }
        match self.finalize(namespace).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(Action::await_change()),
            Err(error) => Err(error),
        }
    }

    /// Writes `wanted` into `status.conditions` when any differs (type, status, reason,
    /// message); a condition keeps its `lastTransitionTime` while its status stays.
    async fn write_conditions(
        &self,
        mut namespace: DynamicObject,
        wanted: &[Value],
    ) -> Result<DynamicObject, Error> {
        let current: Vec<Value> = namespace.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let now = now();
        let mut merged: Vec<Value> = current
            .iter()
            .filter(|c| !wanted.iter().any(|w| w["type"] == c["type"]))
            .cloned()
            .collect();
        let mut changed = false;
        for condition in wanted {
            let old = current.iter().find(|c| c["type"] == condition["type"]);
            let same = |field: &str| old.is_some_and(|o| o[field] == condition[field]);
            let mut condition = condition.clone();
            condition["lastTransitionTime"] = match old {
                Some(old) if same("status") => old["lastTransitionTime"].clone(),
                _ => Value::String(now.clone()),
            };
            changed |= !(same("status") && same("reason") && same("message"));
            merged.push(condition);
        }
        if !changed {
            return Ok(namespace);
        }
        if !namespace.data["status"].is_object() {
            namespace.data["status"] = json!({});
        }
        namespace.data["status"]["conditions"] = Value::Array(merged);
        self.client
            .update_status(&namespaces(), None, namespace, &PostParams::default())
            .await
    }

    /// Removes `kubernetes` from `spec.finalizers`, carrying the resourceVersion read.
    async fn finalize(&self, mut namespace: DynamicObject) -> Result<(), Error> {
        let kept: Vec<Value> = spec_finalizers(&namespace)
            .into_iter()
            .filter(|f| f != KUBERNETES_FINALIZER)
            .map(Value::String)
            .collect();
        namespace.data["spec"]["finalizers"] = Value::Array(kept);
        self.client
            .update(&namespaces(), None, namespace, &PostParams::default())
            .await
            .map(drop)
    }
}

#[async_trait]
impl Reconciler<Namespace> for NamespaceReconciler {
    type Error = Error;

    async fn reconcile(&self, namespace: Arc<Namespace>, _ctx: &Context) -> Result<Action, Error> {
        if namespace.metadata.deletion_timestamp.is_none() {
            return Ok(Action::await_change());
        }
        let name = namespace.metadata.name.clone().unwrap_or_default();
        self.sync(&name).await
    }
}

/// Kubernetes' conditions for a pass that found `report` (or failed discovery with
/// `discovery_error`), in Kubernetes' order, without timestamps.
pub fn desired_conditions(discovery_error: Option<&str>, report: &ContentReport) -> Vec<Value> {
    let condition = |type_: &str, holds: bool, reason: &str, message: String| {
        json!({
            "type": type_,
            "status": if holds { "True" } else { "False" },
            "reason": reason,
            "message": message,
        })
    };
    let discovery = match discovery_error {
        Some(error) => condition(
            conditions::DISCOVERY_FAILURE,
            true,
            "DiscoveryFailed",
            format!("Discovery failed for some groups: {error}"),
        ),
        None => condition(
            conditions::DISCOVERY_FAILURE,
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
    };
    let content = if report.failures.is_empty() {
        condition(
            conditions::CONTENT_FAILURE,
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        condition(
            conditions::CONTENT_FAILURE,
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                report.failures.len(),
                report.failures.join(", ")
            ),
        )
    };
    let remaining = if report.remaining.is_empty() {
        condition(
            conditions::CONTENT_REMAINING,
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = report
            .remaining
            .iter()
            .map(|(kind, count)| format!("{kind} has {count} objects"))
            .collect();
        condition(
            conditions::CONTENT_REMAINING,
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if report.finalizers.is_empty() {
        condition(
            conditions::FINALIZERS_REMAINING,
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = report
            .finalizers
            .iter()
            .map(|(finalizer, count)| format!("{finalizer} in {count} resource instances"))
            .collect();
        condition(
            conditions::FINALIZERS_REMAINING,
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    vec![discovery, content, remaining, finalizers]
}

fn namespaces() -> ResourceInfo {
    ResourceInfo::builtin("", "Namespace").expect("Namespace is a built-in kind")
}

fn spec_finalizers(namespace: &DynamicObject) -> Vec<String> {
    namespace.data["spec"]["finalizers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn now() -> String {
    capstan_api::k8s_openapi::jiff::Timestamp::now()
        .round(capstan_api::k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The namespace controller: a [`Controller`] for Namespaces run with a
/// [`NamespaceReconciler`]. Build it with [`controller`].
pub type NamespaceController = ManagedController<Namespace, NamespaceReconciler>;

/// A controller writing through `client`, following the Namespace informer of `factory`,
/// with `reconciler` (usually [`NamespaceReconciler::new`] of the same client).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    factory: Arc<InformerFactory>,
    reconciler: NamespaceReconciler,
) -> NamespaceController {
    let controller = Controller::<Namespace>::new(factory)
        .named(NAME)
        .rate_limiter(ExponentialBackoff::new(
            Duration::from_millis(5),
            MAX_REQUEUE,
        ));
    ManagedController::new(controller, reconciler)
}

impl BuiltinController for NamespaceController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["namespace"];

    fn from_context(ctx: &ControllerContext) -> Self {
        controller(
            ctx.factory.clone(),
            NamespaceReconciler::new(ctx.client.clone()),
        )
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
