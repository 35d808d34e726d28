//! gRPC probes and probe warnings through the pod worker: what the kubelet hands the prober,
//! and what a passing-with-warning probe does to the Pod and its Events.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_kubelet::{GrpcCheck, HttpGet, Kubelet, KubeletConfig, ProbeOutcome, Prober};
use capstan_runtime::fake::ImageBehaviour;
use parking_lot::Mutex;
use serde_json::json;
use support::*;

/// Answers HTTP probes with a redirect warning and gRPC probes with success, recording the
/// gRPC targets.
#[derive(Default)]
struct RecordingProber {
    grpc: Mutex<Vec<GrpcCheck>>,
}

#[async_trait]
impl Prober for RecordingProber {
    async fn http_get(&self, _target: &HttpGet, _timeout: Duration) -> ProbeOutcome {
        ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
    }
    async fn tcp(&self, _host: &str, _port: u16, _timeout: Duration) -> ProbeOutcome {
        ProbeOutcome::Failure("unexpected".into())
    }
    async fn grpc(&self, target: &GrpcCheck, _timeout: Duration) -> ProbeOutcome {
        self.grpc.lock().push(target.clone());
        ProbeOutcome::Success
    }
}

/// A node whose kubelet probes with `prober` instead of the harness' scripted one.
async fn node_with(prober: Arc<RecordingProber>) -> Node {
    let mut node = Node::start(vec![("web", ImageBehaviour::new())]).await;
    node.kubelet.take().expect("a kubelet").stop();
    let kubelet = Kubelet::builder(KubeletConfig::new(NODE).internal_ip("192.168.0.10"))
        .client(node.client.clone())
        .runtime(node.runtime.clone())
        .network(node.network.clone())
        .prober(prober)
        .clock(Arc::new(node.clock.clone()))
        .events(node.events.recorder("kubelet"))
        .build()
        .expect("valid kubelet");
    let running = kubelet.start();
    while !running.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kubelet = Some(running);
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_readiness_probe_asks_the_pod_ip_about_its_service() {
    within(LIMIT, async {
        let prober = Arc::new(RecordingProber::default());
        let node = node_with(prober.clone()).await;
        let mut spec = pod("grpc-1", &[("web", "web")], json!({}));
        spec["spec"]["containers"][0]["readinessProbe"] = json!({
            "grpc": {"port": 9090, "service": "db"}, "periodSeconds": 5,
        });
        node.create(spec).await;
        let pod = node
            .wait_pod("grpc-1", "Ready", |p| condition(p, "Ready") == Some("True"))
            .await;
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let calls = prober.grpc.lock().clone();
        assert_eq!(
            calls.first(),
            Some(&GrpcCheck {
                host: ip,
                port: 9090,
                service: "db".into()
            })
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_warning_passes_with_a_probe_warning_event() {
    within(LIMIT, async {
        let node = node_with(Arc::new(RecordingProber::default())).await;
        let mut spec = pod("warn-1", &[("web", "web")], json!({}));
        spec["spec"]["containers"][0]["readinessProbe"] = json!({
            "httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5,
        });
        node.create(spec).await;
        node.wait_pod("warn-1", "Ready", |p| condition(p, "Ready") == Some("True"))
            .await;
        assert!(
            node.has_event(
                "ProbeWarning",
                "Readiness probe warning: Probe terminated redirects, Response body: moved"
            )
            .await,
            "{:?}",
            node.events().await
        );
        assert!(!node.events().await.iter().any(|(r, _)| r == "Unhealthy"));
    })
    .await;
}
