//! What kube-apiserver creates at start: the system namespaces, the `kubernetes` Service with
//! its Endpoints and EndpointSlice (the bootstrap controller), and the default RBAC roles and
//! bindings (the RBAC post-start hook, in [`rbac`]).
//!
//! Everything here is reconciled, never overwritten: an object is created when missing, and
//! an existing one is left as it is (except the `kubernetes` endpoints, which always point at
//! the running server, as kube-apiserver's endpoint reconciler keeps them). Every call is
//! idempotent and safe to run from several API servers sharing one store.

pub mod rbac;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use capstan_api::{
    kube_core::{params::PostParams, DynamicObject},
    Client, Error, ResourceInfo, Result,
};
use serde_json::{json, Value};

use super::Registry;

pub use super::kinds::namespace::{KUBERNETES_FINALIZER, SYSTEM_NAMESPACES, TERMINATING};

/// The `kubernetes` Service's name and namespace.
pub const KUBERNETES_SERVICE: (&str, &str) = ("default", "kubernetes");

/// How often kube-apiserver reconciles the `kubernetes` Service and its endpoints.
pub const KUBERNETES_SERVICE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The running [`Registry::reconcile_kubernetes_service`] loop; dropping it stops the loop.
#[derive(Debug)]
pub struct KubernetesServiceReconciler {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubernetesServiceReconciler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    /// Creates what every API server has from the start and is missing: the
    /// [system namespaces](SYSTEM_NAMESPACES) and the [bootstrap RBAC](rbac) roles and
    /// bindings. Idempotent; existing objects are never changed. Called by
    /// [`ApiServer::bind_with`](crate::http::ApiServer::bind_with); in-process users get the
    /// namespaces anyway (created on their first use), and may call it for the roles.
    ///
    /// Errors: the store's, or an object the registry refuses (a bug in the bootstrap data).
    pub async fn bootstrap(&self) -> Result<()> {
        super::kinds::namespace::ensure_system_namespaces(&**self.store()).await?;
        for (resource, namespace, object) in rbac::objects() {
            self.create_missing(&resource, namespace.as_deref(), object)
                .await?;
        }
        Ok(())
    }

    /// Creates the `kubernetes` Service in `default` (the first address of the service range,
    /// port 443 `https` to `server`'s port) when missing, and makes its Endpoints and
    /// EndpointSlice point at `server`, as kube-apiserver's bootstrap controller does. An
    /// unspecified address (`0.0.0.0`) is published as loopback.
    ///
    /// Errors: the store's, or the registry refusing the objects.
    pub async fn bootstrap_kubernetes_service(&self, server: SocketAddr) -> Result<()> {
        let (namespace, name) = KUBERNETES_SERVICE;
        let ip = match server.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            IpAddr::V6(ip) if ip.is_loopback() || ip.is_unspecified() => Ipv4Addr::LOCALHOST,
            IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST,
        };
        let port = server.port();
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.service_cidr().kubernetes_service_ip().to_string(),
                "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        });
        self.create_missing(&builtin("", "Service"), Some(namespace), service)
            .await?;
        let endpoints = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": [{"ip": ip.to_string()}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }],
        });
        self.create_or_point(
            &builtin("", "Endpoints"),
            namespace,
            endpoints,
            &["subsets"],
        )
        .await?;
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        });
        let slices = builtin("discovery.k8s.io", "EndpointSlice");
        self.create_or_point(&slices, namespace, slice, &["endpoints", "ports"])
            .await
    }

    /// Keeps the `kubernetes` Service and its endpoints pointing at `server`, as
    /// kube-apiserver's `kubernetes` Service controller does: runs
    /// [`bootstrap_kubernetes_service`](Self::bootstrap_kubernetes_service) every `interval`
    /// (Kubernetes: 10 s), so a deleted Service or overwritten endpoints come back. Errors
    /// are logged and retried on the next round. Stops when the returned value is dropped.
    pub fn reconcile_kubernetes_service(
        self: &std::sync::Arc<Self>,
        server: SocketAddr,
        interval: std::time::Duration,
    ) -> KubernetesServiceReconciler {
        let registry = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = registry.bootstrap_kubernetes_service(server).await {
                    tracing::warn!(%error, "reconciling the kubernetes Service");
                }
            }
        });
        KubernetesServiceReconciler { task }
    }

    /// Creates `object` unless an object of that name exists (looked up first, so a Service
    /// that exists is not refused for its address).
    async fn create_missing(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<()> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match self.get(resource, namespace, name).await {
            Ok(_) => return Ok(()),
            Err(Error::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        match self
            .create(
                resource,
                namespace,
                dynamic(object)?,
                &PostParams::default(),
            )
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Creates `object`, or replaces the stored one's `fields` with `object`'s when they
    /// differ.
    async fn create_or_point(
        &self,
        resource: &ResourceInfo,
        namespace: &str,
        object: Value,
        fields: &[&str],
    ) -> Result<()> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let params = PostParams::default();
        for _ in 0..8 {
            let current = match self.get(resource, Some(namespace), &name).await {
                Ok(current) => current,
                Err(Error::NotFound { .. }) => {
                    match self
                        .create(resource, Some(namespace), dynamic(object.clone())?, &params)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(Error::AlreadyExists { .. }) => continue,
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            };
            let mut current = serde_json::to_value(current)
                .map_err(|e| Error::internal(format!("encoding {name}: {e}")))?;
            if fields.iter().all(|f| current.get(f) == object.get(f)) {
                return Ok(());
            }
            for field in fields {
                current[*field] = object[*field].clone();
            }
            match self
                .update(resource, Some(namespace), dynamic(current)?, &params)
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::Conflict {
            resource: resource.qualified_resource(),
            name,
            message: "the object kept changing while the bootstrap wrote it".into(),
        })
    }
}

fn builtin(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo::builtin(group, kind).expect("a built-in kind")
}

fn dynamic(object: Value) -> Result<DynamicObject> {
    serde_json::from_value(object)
        .map_err(|e| Error::internal(format!("a bootstrap object does not decode: {e}")))
}

#[cfg(test)]
mod tests;
