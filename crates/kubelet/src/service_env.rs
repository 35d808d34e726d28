//! The environment variables Kubernetes gives every container about Services, Docker-links
//! style: `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, `KUBERNETES_PORT_443_TCP`,
//! ..., so a process in a Pod finds the API server through the `kubernetes` Service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::kube_core::ResourceExt;
use capstan_api::{Api, Client};
use parking_lot::Mutex;

/// Environment variables, in order.
type Variables = Vec<(String, String)>;

/// How long the `kubernetes` Service read from the API server is reused.
const CACHE_FOR: Duration = Duration::from_secs(30);

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

/// The `kubernetes` Service's variables, read from the API server and kept for a while.
/// Every container gets them, whatever its namespace. A cluster without the Service (an
/// API server that does not publish itself) gives none.
pub(crate) struct MasterServiceEnv {
    client: Arc<dyn Client>,
    cached: Mutex<Option<(Instant, Variables)>>,
}

impl MasterServiceEnv {
    pub(crate) fn new(client: Arc<dyn Client>) -> Self {
        MasterServiceEnv {
            client,
            cached: Mutex::new(None),
        }
    }

    /// The variables; an API error keeps the last known ones (or none).
    pub(crate) async fn variables(&self) -> Vec<(String, String)> {
        if let Some((at, vars)) = self.cached.lock().as_ref() {
            if at.elapsed() < CACHE_FOR {
                return vars.clone();
            }
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let vars = match api.get_opt("kubernetes").await {
            Ok(Some(service)) => service_variables(&service),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::debug!(%error, "reading the kubernetes Service");
                return self
                    .cached
                    .lock()
                    .as_ref()
                    .map(|(_, vars)| vars.clone())
                    .unwrap_or_default();
            }
        };
        *self.cached.lock() = Some((Instant::now(), vars.clone()));
        vars
    }
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
