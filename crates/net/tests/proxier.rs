//! The proxy loop end to end: Services and EndpointSlices (or Endpoints) written to the
//! in-process API server show up in the fake backend's state, rate-limited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Endpoints, Service};
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_net::proxy::fake::FakeProxyBackend;
use capstan_net::proxy::{
    EndpointsSource, Protocol, Proxier, ProxierOptions, ProxyError, ProxyState, ServicePortName,
    SessionAffinity,
};
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "default";

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

struct Running {
    client: Arc<dyn Client>,
    backend: FakeProxyBackend,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

impl Running {
    fn start(options: ProxierOptions) -> Self {
        let client = capstan_apiserver::testing::client();
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let backend = FakeProxyBackend::new();
        let proxier = Proxier::new(factory, Arc::new(backend.clone()), options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxier.run(async move {
            let _ = stopped.await;
        }));
        Running {
            client,
            backend,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        assert!(
            self.backend.contract_violations().is_empty(),
            "{:?}",
            self.backend.contract_violations()
        );
    }

    async fn create_service(&self, name: &str, spec: serde_json::Value) -> Service {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": spec
        }))
        .unwrap();
        Api::<Service>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &service)
            .await
            .unwrap()
    }

    async fn put_slice(&self, service: &str, endpoints: serde_json::Value) {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .unwrap();
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), NS);
        let name = slice.metadata.name.clone().unwrap();
        match api.get(&name).await {
            Ok(current) => {
                let mut updated = slice;
                updated.metadata.resource_version = current.metadata.resource_version;
                api.update(&PostParams::default(), &updated).await.unwrap();
            }
            Err(_) => {
                api.create(&PostParams::default(), &slice).await.unwrap();
            }
        }
    }
}

fn fast() -> ProxierOptions {
    ProxierOptions {
        min_sync_period: Duration::from_millis(50),
        sync_period: Duration::from_secs(600),
        retry_period: Duration::from_millis(50),
        endpoints: EndpointsSource::EndpointSlices,
    }
}

fn http(name: &str) -> ServicePortName {
    ServicePortName::new(NS, name, "http", Protocol::Tcp)
}

fn endpoints_of(state: &ProxyState, name: &str) -> Option<Vec<SocketAddr>> {
    state
        .services
        .get(&http(name))
        .map(|port| port.endpoints.clone())
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn services_and_ready_endpoints_reach_the_backend_and_leave_it() {
    within(LIMIT, async {
        let proxy = Running::start(fast());
        let service = proxy
            .create_service(
                "web",
                json!({"type": "NodePort", "sessionAffinity": "ClientIP",
                       "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}),
            )
            .await;
        proxy
            .put_slice(
                "web",
                json!([{"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                       {"addresses": ["10.244.1.3"], "conditions": {"ready": true}}]),
            )
            .await;
        let state = proxy
            .backend
            .wait_for(|state| endpoints_of(state, "web").is_some_and(|e| e.len() == 2))
            .await;
        let port = &state.services[&http("web")];
        let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
        assert_eq!(port.cluster_ip.to_string(), cluster_ip);
        assert_eq!((port.port, port.node_port), (80, Some(30080)));
        assert_eq!(
            port.affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10800
            }
        );

        // An endpoint that stops being ready leaves.
        proxy
            .put_slice(
                "web",
                json!([{"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                       {"addresses": ["10.244.1.3"], "conditions": {"ready": false}}]),
            )
            .await;
        proxy
            .backend
            .wait_for(|state| endpoints_of(state, "web") == Some(vec![addr("10.244.1.2:8080")]))
            .await;

        // A removed endpoint leaves.
        proxy.put_slice("web", json!([])).await;
        proxy
            .backend
            .wait_for(|state| endpoints_of(state, "web") == Some(vec![]))
            .await;

        // A deleted Service leaves.
        Api::<Service>::namespaced(proxy.client.clone(), NS)
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        proxy
            .backend
            .wait_for(|state| !state.services.contains_key(&http("web")))
            .await;
        let history = proxy.backend.history();
        assert!(history[0].changes.is_full(), "{history:?}");
        assert!(proxy.backend.partial_syncs() >= 3, "{history:?}");
        proxy.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_burst_of_changes_is_applied_by_few_syncs() {
    within(LIMIT, async {
        let proxy = Running::start(ProxierOptions {
            min_sync_period: Duration::from_secs(1),
            ..fast()
        });
        // The first (full) sync of the empty cluster.
        proxy
            .backend
            .wait_for_syncs(1, Duration::from_millis(10))
            .await;
        for i in 0..20 {
            proxy
                .create_service(
                    &format!("svc-{i}"),
                    json!({"ports": [{"name": "http", "port": 80}]}),
                )
                .await;
        }
        proxy.backend.wait_for(|state| state.len() == 20).await;
        // Twenty creations within one min_sync_period: one or two syncs, not twenty.
        let syncs = proxy.backend.syncs();
        assert!(syncs <= 3, "{syncs} syncs: {:?}", proxy.backend.history());
        proxy.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_failed_sync_is_retried_as_a_full_one() {
    within(LIMIT, async {
        let proxy = Running::start(fast());
        proxy
            .backend
            .wait_for_syncs(1, Duration::from_millis(10))
            .await;
        proxy.backend.fail_next_sync(ProxyError::CommandFailed {
            command: "iptables-restore".into(),
            status: "exit status: 4".into(),
            stderr: "resource temporarily unavailable".into(),
        });
        proxy
            .create_service("web", json!({"ports": [{"name": "http", "port": 80}]}))
            .await;
        proxy
            .backend
            .wait_for(|state| state.services.contains_key(&http("web")))
            .await;
        let history = proxy.backend.history();
        assert!(
            history.last().unwrap().changes.is_full(),
            "the retry after a failure must be full: {history:?}"
        );
        proxy.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_full_resync_happens_every_sync_period() {
    within(LIMIT, async {
        let proxy = Running::start(ProxierOptions {
            sync_period: Duration::from_millis(200),
            ..fast()
        });
        proxy
            .backend
            .wait_for_syncs(3, Duration::from_millis(20))
            .await;
        assert_eq!(proxy.backend.partial_syncs(), 0);
        proxy.stop().await;
    })
    .await
}

#[tokio::test]
async fn endpoints_objects_can_be_the_source_and_not_ready_addresses_are_left_out() {
    within(LIMIT, async {
        let proxy = Running::start(ProxierOptions {
            endpoints: EndpointsSource::Endpoints,
            ..fast()
        });
        proxy
            .create_service("web", json!({"ports": [{"name": "http", "port": 80}]}))
            .await;
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": NS},
            "subsets": [{"addresses": [{"ip": "10.244.1.2"}],
                         "notReadyAddresses": [{"ip": "10.244.1.3"}],
                         "ports": [{"name": "http", "port": 8080}]}]
        }))
        .unwrap();
        Api::<Endpoints>::namespaced(proxy.client.clone(), NS)
            .create(&PostParams::default(), &endpoints)
            .await
            .unwrap();
        proxy
            .backend
            .wait_for(|state| endpoints_of(state, "web") == Some(vec![addr("10.244.1.2:8080")]))
            .await;
        proxy.stop().await;
    })
    .await
}
