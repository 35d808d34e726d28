//! The environment variables Kubernetes gives containers about Services, Docker-links
//! style: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_PORT_443_TCP`, ..., so a
//! process in a Pod finds the API server through the `kubernetes` Service and, with the Pod's
//! `enableServiceLinks` (the default), every Service of its namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::kube_core::params::ListParams;
use capstan_api::kube_core::ResourceExt;
use capstan_api::{Api, Client};
use parking_lot::Mutex;

/// How long a namespace's Services read from the API server are reused.
const CACHE_FOR: Duration = Duration::from_secs(30);

/// The Services always published to every Pod, from the `default` namespace.
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// Each namespace's Services, with when they were read.
type Cache = HashMap<String, (Instant, Arc<Vec<Service>>)>;

/// The variables of one Service with a ClusterIP, as the kubelet builds them
/// (`pkg/kubelet/envvars`): `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, one
/// `<NAME>_SERVICE_PORT_<PORTNAME>` per named port, and the link variables of every port.
/// Services without a ClusterIP (headless, ExternalName) give none.
pub(crate) fn service_variables(service: &Service) -> Vec<(String, String)> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return Vec::new();
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = env_name(&service.name_any());
    let mut vars = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for port in ports {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                port.port.to_string(),
            ));
        }
    }
    let url = |port: i32, protocol: &str| {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("{}://{host}:{port}", protocol.to_lowercase())
    };
    let protocol = |p: &capstan_api::k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    vars.push((format!("{prefix}_PORT"), url(first.port, &protocol(first))));
    for port in ports {
        let proto = protocol(port);
        let link = format!("{prefix}_PORT_{}_{}", port.port, proto.to_uppercase());
        vars.push((link.clone(), url(port.port, &proto)));
        vars.push((format!("{link}_PROTO"), proto.to_lowercase()));
        vars.push((format!("{link}_PORT"), port.port.to_string()));
        vars.push((format!("{link}_ADDR"), ip.to_string()));
    }
    vars
}

/// A Service or port name as an environment variable name: upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// The Services' variables a container gets, read from the API server and kept per namespace
/// for [`CACHE_FOR`] (30 s). Shared by every pod worker of one kubelet.
///
/// As the kubelet's `getServiceEnvVarMap`: the `kubernetes` Service of `default` always, and
/// with `enableServiceLinks` every Service with a ClusterIP of the Pod's namespace (a Service of
/// that namespace named `kubernetes` wins over the one in `default`). A cluster without the
/// Services gives none; an API error keeps the last known Services of the namespace (or none),
/// so a container is never held back for them.
pub(crate) struct MasterServiceEnv {
    client: Arc<dyn Client>,
    cached: Mutex<Cache>,
}

impl MasterServiceEnv {
    pub(crate) fn new(client: Arc<dyn Client>) -> Self {
        MasterServiceEnv {
            client,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// The variables for a Pod of `namespace`, ordered by Service name (each Service's in
    /// [`service_variables`]' order). Idempotent; reads the API server at most once per
    /// namespace every 30 s.
    pub(crate) async fn variables(
        &self,
        namespace: &str,
        enable_service_links: bool,
    ) -> Vec<(String, String)> {
        let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
        for service in self.services("default").await.iter() {
            let name = service.name_any();
            if is_ip_set(service) && MASTER_SERVICES.contains(&name.as_str()) {
                chosen.insert(name, service.clone());
            }
        }
        if enable_service_links {
            for service in self.services(namespace).await.iter() {
                if is_ip_set(service) {
                    chosen.insert(service.name_any(), service.clone());
                }
            }
        }
        chosen.values().flat_map(service_variables).collect()
    }

    /// The Services of `namespace`, from the cache while fresh.
    async fn services(&self, namespace: &str) -> Arc<Vec<Service>> {
        if let Some((at, services)) = self.cached.lock().get(namespace) {
            if at.elapsed() < CACHE_FOR {
                return services.clone();
            }
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let services = Arc::new(list.items);
                self.cached
                    .lock()
                    .insert(namespace.to_string(), (Instant::now(), services.clone()));
                services
            }
            Err(error) => {
                tracing::debug!(%error, namespace, "listing Services for environment variables");
                self.cached
                    .lock()
                    .get(namespace)
                    .map(|(_, services)| services.clone())
                    .unwrap_or_default()
            }
        }
    }
}

/// Whether the Service has a ClusterIP (not headless, not ExternalName).
fn is_ip_set(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_kubernetes_service_gives_the_variables_every_pod_sees() {
        let vars = service_variables(&service(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        })));
        let expected = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn dashes_become_underscores_and_headless_services_give_nothing() {
        let vars = service_variables(&service(serde_json::json!({
            "metadata": {"name": "my-db"},
            "spec": {"clusterIP": "fd00::10", "ports": [{"port": 5432, "protocol": "UDP"}]},
        })));
        assert!(vars.contains(&("MY_DB_SERVICE_HOST".into(), "fd00::10".into())));
        assert!(vars.contains(&("MY_DB_PORT_5432_UDP".into(), "udp://[fd00::10]:5432".into())));
        let headless = service_variables(&service(serde_json::json!({
            "metadata": {"name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        })));
        assert!(headless.is_empty());
    }
}
