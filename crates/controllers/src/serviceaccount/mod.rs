//! Kubernetes' service account controllers:
//!
//! - [`ServiceAccountsController`] (`serviceaccount-controller`, alias `serviceaccount`):
//!   every active namespace has a ServiceAccount `default`; one deleted is created again.
//!   Terminating namespaces are left alone (their content is being deleted).
//! - [`RootCaPublisher`] (`root-ca-certificate-publisher-controller`, alias
//!   `root-ca-cert-publisher`): every active namespace has the ConfigMap
//!   `kube-root-ca.crt` whose `ca.crt` is the cluster's CA bundle (the API server's serving
//!   CA), so Pods can verify the API server through the projected `kube-api-access-*`
//!   volume. The bundle comes from [`ControllerOptions::root_ca`](crate::context::ControllerOptions);
//!   without one (a plain HTTP API server) the ConfigMap is published with an empty
//!   `ca.crt`, so that the Pods' projected volumes, which reference it, still mount. A
//!   ConfigMap whose data or description annotation was changed is put back.
//!
//! Both follow Namespaces and the objects they keep (mapped back to their namespace), so a
//! deletion is repaired at once; both are level-based and idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::DynamicObject;
use capstan_api::{Client, Error, ResourceInfo};
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ManagedController, Reconciler,
};
use capstan_watch::cache::ObjectKey;
use capstan_watch::InformerFactory;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

use crate::context::{BuiltinController, ControllerContext, StopSignal};

#[cfg(test)]
mod tests;

/// Kubernetes' name for the service account controller: what `--controllers` lists.
pub const NAME: &str = "serviceaccount-controller";
/// Kubernetes' name for the root CA publisher.
pub const ROOT_CA_PUBLISHER_NAME: &str = "root-ca-certificate-publisher-controller";
/// The service account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap holding the CA bundle in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle in [`ROOT_CA_CONFIG_MAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The annotation describing [`ROOT_CA_CONFIG_MAP`].
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// The description Kubernetes gives [`ROOT_CA_CONFIG_MAP`].
pub const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the \
     kube-apiserver when using internal endpoints such as the internal service IP or \
     kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes \
     clusters.";

fn is_active(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_none()
        && namespace.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

fn namespace_key(namespace: Option<&String>) -> Option<ObjectKey> {
    namespace.map(|ns| ObjectKey::cluster(ns.clone()))
}

fn builtin(kind: &str) -> ResourceInfo {
    ResourceInfo::builtin("", kind).expect("a built-in core kind")
}

fn dynamic(value: Value) -> Result<DynamicObject, Error> {
    serde_json::from_value(value).map_err(|e| Error::internal(e.to_string()))
}

/// Whether an error only means the namespace went away or started terminating meanwhile:
/// nothing to do then.
fn namespace_gone(error: &Error) -> bool {
    match error {
        Error::NotFound { resource, .. } => resource == "namespaces",
        Error::Forbidden { message } => message.contains("because it is being terminated"),
        _ => false,
    }
}

/// The service account controller's reconciler; see the [module docs](self).
pub struct ServiceAccountsReconciler {
    client: Arc<dyn Client>,
}

impl ServiceAccountsReconciler {
    /// A reconciler writing through `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        ServiceAccountsReconciler { client }
    }

    /// Creates the `default` ServiceAccount of `namespace` when missing. Idempotent.
    ///
    /// Errors: the API's, except a namespace gone or terminating meanwhile.
    pub async fn ensure_default(&self, namespace: &str) -> Result<(), Error> {
        let accounts = builtin("ServiceAccount");
        match self
            .client
            .get(&accounts, Some(namespace), DEFAULT_SERVICE_ACCOUNT)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        let account = dynamic(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace},
        }))?;
        match self
            .client
            .create(&accounts, Some(namespace), account, &PostParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.is_already_exists() || namespace_gone(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Reconciler<Namespace> for ServiceAccountsReconciler {
    type Error = Error;

    async fn reconcile(&self, namespace: Arc<Namespace>, _ctx: &Context) -> Result<Action, Error> {
        if is_active(&namespace) {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            self.ensure_default(&name).await?;
        }
        Ok(Action::await_change())
    }
}

/// The service account controller: a [`Controller`] for Namespaces, also following
/// ServiceAccounts named `default`. Build it with [`controller`].
pub type ServiceAccountsController = ManagedController<Namespace, ServiceAccountsReconciler>;

/// The service account controller over `factory`'s informers, writing through `client`.
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    factory: Arc<InformerFactory>,
    client: Arc<dyn Client>,
) -> ServiceAccountsController {
    let controller =
        Controller::<Namespace>::new(factory)
            .named(NAME)
            .watches(|account: &ServiceAccount| {
                if account.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) {
                    namespace_key(account.metadata.namespace.as_ref())
                } else {
                    None
                }
            });
    ManagedController::new(controller, ServiceAccountsReconciler::new(client))
}

impl BuiltinController for ServiceAccountsController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["serviceaccount"];

    fn from_context(ctx: &ControllerContext) -> Self {
        controller(ctx.factory.clone(), ctx.client.clone())
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}

/// The root CA publisher's reconciler; see the [module docs](self).
pub struct RootCaReconciler {
    client: Arc<dyn Client>,
    bundle: String,
}

impl RootCaReconciler {
    /// A reconciler writing through `client`, publishing `bundle` (PEM; empty when the API
    /// server has no CA).
    pub fn new(client: Arc<dyn Client>, bundle: impl Into<String>) -> Self {
        RootCaReconciler {
            client,
            bundle: bundle.into(),
        }
    }

    /// Creates or corrects `kube-root-ca.crt` in `namespace`. Idempotent: a ConfigMap that
    /// already says the right thing is not written.
    ///
    /// Errors: the API's (a conflict is retried by the controller), except a namespace gone
    /// or terminating meanwhile.
    pub async fn publish(&self, namespace: &str) -> Result<(), Error> {
        let config_maps = builtin("ConfigMap");
        let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), self.bundle.clone())]);
        let existing = match self
            .client
            .get(&config_maps, Some(namespace), ROOT_CA_CONFIG_MAP)
            .await
        {
            Ok(existing) => Some(existing),
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(error),
        };
        let Some(existing) = existing else {
            let config_map = dynamic(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": ROOT_CA_CONFIG_MAP,
                    "namespace": namespace,
                    "annotations": {DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION},
                },
                "data": data,
            }))?;
            return match self
                .client
                .create(
                    &config_maps,
                    Some(namespace),
                    config_map,
                    &PostParams::default(),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(error) if error.is_already_exists() || namespace_gone(&error) => Ok(()),
                Err(error) => Err(error),
            };
        };
        let mut current =
            serde_json::to_value(&existing).map_err(|e| Error::internal(e.to_string()))?;
        let data_matches = current.get("data") == Some(&json!(data));
        let described = current
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .and_then(Value::as_str)
            == Some(ROOT_CA_DESCRIPTION);
        if data_matches && described {
            return Ok(());
        }
        current["data"] = json!(data);
        let metadata = current
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| Error::internal("a ConfigMap without metadata"))?;
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        annotations[DESCRIPTION_ANNOTATION] = json!(ROOT_CA_DESCRIPTION);
        // The resourceVersion read is kept: a concurrent change is a conflict, retried.
        self.client
            .update(
                &config_maps,
                Some(namespace),
                dynamic(current)?,
                &PostParams::default(),
            )
            .await
            .map(drop)
    }
}

#[async_trait]
impl Reconciler<Namespace> for RootCaReconciler {
    type Error = Error;

    async fn reconcile(&self, namespace: Arc<Namespace>, _ctx: &Context) -> Result<Action, Error> {
        if is_active(&namespace) {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            self.publish(&name).await?;
        }
        Ok(Action::await_change())
    }
}

/// The root CA publisher: a [`Controller`] for Namespaces, also following the ConfigMaps
/// named `kube-root-ca.crt`. Build it with [`root_ca_publisher`].
pub type RootCaPublisher = ManagedController<Namespace, RootCaReconciler>;

/// The root CA publisher over `factory`'s informers, writing `bundle` through `client`.
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn root_ca_publisher(
    factory: Arc<InformerFactory>,
    client: Arc<dyn Client>,
    bundle: impl Into<String>,
) -> RootCaPublisher {
    let controller = Controller::<Namespace>::new(factory)
        .named(ROOT_CA_PUBLISHER_NAME)
        .watches(|config_map: &ConfigMap| {
            if config_map.metadata.name.as_deref() == Some(ROOT_CA_CONFIG_MAP) {
                namespace_key(config_map.metadata.namespace.as_ref())
            } else {
                None
            }
        });
    ManagedController::new(controller, RootCaReconciler::new(client, bundle))
}

impl BuiltinController for RootCaPublisher {
    const NAME: &'static str = ROOT_CA_PUBLISHER_NAME;
    const ALIASES: &'static [&'static str] = &["root-ca-cert-publisher"];

    fn from_context(ctx: &ControllerContext) -> Self {
        let bundle = ctx
            .options
            .root_ca
            .as_deref()
            .map(|pem| String::from_utf8_lossy(pem).into_owned())
            .unwrap_or_default();
        root_ca_publisher(ctx.factory.clone(), ctx.client.clone(), bundle)
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
