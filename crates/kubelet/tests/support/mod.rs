//! Test doubles and a harness for the kubelet's integration tests: an in-process API server
//! over the memory store, one fake runtime and a network double sharing one `FakeClock`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use capstan_api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan_api::kube_core::params::PostParams;
pub use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_kubelet::{HttpGet, Kubelet, KubeletConfig, ProbeOutcome, Prober, RunningKubelet};
use capstan_net::{AttachResult, Attachment, IpConfig, NetError, NetworkPlugin};
use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
use capstan_runtime::*;
use parking_lot::Mutex;

pub const NODE: &str = "node-1";
pub const NS: &str = "default";

/// Every test's time limit.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A network plugin double: hands out `10.244.0.<n>` per attachment and records calls.
#[derive(Default)]
pub struct TestNetwork {
    state: Mutex<NetState>,
}

#[derive(Default)]
struct NetState {
    next: u8,
    attached: HashMap<String, IpAddr>,
    dels: Vec<String>,
    adds: Vec<Attachment>,
    down: Option<String>,
    failing_adds: usize,
}

impl TestNetwork {
    pub fn attached(&self) -> HashMap<String, IpAddr> {
        self.state.lock().attached.clone()
    }
    pub fn dels(&self) -> Vec<String> {
        self.state.lock().dels.clone()
    }
    pub fn adds(&self) -> Vec<Attachment> {
        self.state.lock().adds.clone()
    }
    /// The next `n` adds fail with an exhausted range.
    pub fn fail_adds(&self, n: usize) {
        self.state.lock().failing_adds = n;
    }
    pub fn set_down(&self, reason: Option<&str>) {
        self.state.lock().down = reason.map(str::to_string);
    }
}

#[async_trait]
impl NetworkPlugin for TestNetwork {
    fn name(&self) -> &str {
        "test-net"
    }

    async fn add(&self, attachment: &Attachment) -> capstan_net::Result<AttachResult> {
        let mut state = self.state.lock();
        if attachment.netns.as_os_str().is_empty() {
            return Err(NetError::InvalidArgument("no netns".into()));
        }
        if state.failing_adds > 0 {
            state.failing_adds -= 1;
            return Err(NetError::AddressExhausted {
                range: "10.244.0.0/24".into(),
            });
        }
        if state.attached.contains_key(&attachment.container_id) {
            return Err(NetError::AlreadyExists {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
            });
        }
        state.next += 1;
        let ip = IpAddr::V4(Ipv4Addr::new(10, 244, 0, state.next + 1));
        state.attached.insert(attachment.container_id.clone(), ip);
        state.adds.push(attachment.clone());
        Ok(AttachResult {
            cni_version: "1.0.0".into(),
            ips: vec![IpConfig {
                address: format!("{ip}/24").parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..AttachResult::default()
        })
    }

    async fn del(&self, attachment: &Attachment) -> capstan_net::Result<()> {
        let mut state = self.state.lock();
        state.attached.remove(&attachment.container_id);
        state.dels.push(attachment.container_id.clone());
        Ok(())
    }

    async fn check(&self, attachment: &Attachment) -> capstan_net::Result<()> {
        if self
            .state
            .lock()
            .attached
            .contains_key(&attachment.container_id)
        {
            Ok(())
        } else {
            Err(NetError::CheckFailed {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
                message: "not attached".into(),
            })
        }
    }

    async fn status(&self) -> capstan_net::Result<()> {
        match &self.state.lock().down {
            None => Ok(()),
            Some(reason) => Err(NetError::InvalidConfig {
                path: None,
                message: reason.clone(),
            }),
        }
    }
}

/// A prober whose HTTP and TCP answers the test sets per port (failure when unset).
#[derive(Default)]
pub struct ScriptedProber {
    answers: Mutex<HashMap<u16, bool>>,
    calls: Mutex<Vec<String>>,
}

impl ScriptedProber {
    pub fn set(&self, port: u16, healthy: bool) {
        self.answers.lock().insert(port, healthy);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
    fn answer(&self, port: u16, what: String) -> ProbeOutcome {
        self.calls.lock().push(what);
        if self.answers.lock().get(&port).copied().unwrap_or(false) {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
        }
    }
}

#[async_trait]
impl Prober for ScriptedProber {
    async fn http_get(&self, target: &HttpGet, _timeout: Duration) -> ProbeOutcome {
        self.answer(target.port, target.url())
    }
    async fn tcp(&self, host: &str, port: u16, _timeout: Duration) -> ProbeOutcome {
        self.answer(port, format!("tcp {host}:{port}"))
    }
}

/// The fake runtime, recording the grace period of every `stop_container`.
pub struct RecordingRuntime {
    pub inner: FakeRuntime,
    pub stops: Mutex<Vec<(String, Duration)>>,
}

#[async_trait]
impl ContainerRuntime for RecordingRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        self.inner.version().await
    }
    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        self.inner.run_pod_sandbox(config).await
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.inner.stop_pod_sandbox(id).await
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.inner.remove_pod_sandbox(id).await
    }
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        self.inner.pod_sandbox_status(id).await
    }
    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        self.inner.list_pod_sandboxes(filter).await
    }
    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        self.inner
            .create_container(pod_sandbox_id, config, sandbox_config)
            .await
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()> {
        let name = self
            .inner
            .container_status(id)
            .await
            .map(|s| s.metadata.name)
            .unwrap_or_default();
        self.stops.lock().push((name, grace_period));
        self.inner.stop_container(id, grace_period).await
    }
    async fn remove_container(&self, id: &str) -> Result<()> {
        self.inner.remove_container(id).await
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        self.inner.container_status(id).await
    }
    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>> {
        self.inner.list_containers(filter).await
    }
    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        self.inner.container_logs(id, options).await
    }
    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse> {
        self.inner.exec_sync(request).await
    }
    async fn exec(
        &self,
        request: capstan_runtime::StreamingExecRequest,
    ) -> Result<capstan_runtime::ProcessIo> {
        self.inner.exec(request).await
    }
    async fn attach(
        &self,
        request: capstan_runtime::AttachRequest,
    ) -> Result<capstan_runtime::ProcessIo> {
        self.inner.attach(request).await
    }
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<capstan_runtime::DuplexStream> {
        self.inner.port_forward(pod_sandbox_id, port).await
    }
    async fn container_stats(&self, id: &str) -> Result<capstan_runtime::ContainerStats> {
        self.inner.container_stats(id).await
    }
    async fn pull_image(&self, image: &ImageSpec) -> Result<String> {
        self.inner.pull_image(image).await
    }
    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        self.inner.image_status(image).await
    }
    async fn list_images(&self) -> Result<Vec<Image>> {
        self.inner.list_images().await
    }
    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        self.inner.remove_image(image).await
    }
    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>> {
        self.inner.import_image(archive).await
    }
}

/// One node: API server, fake runtime, network double, scripted prober, events, kubelet.
pub struct Node {
    pub client: Arc<dyn Client>,
    pub clock: FakeClock,
    pub fake: FakeRuntime,
    pub runtime: Arc<RecordingRuntime>,
    pub network: Arc<TestNetwork>,
    pub prober: Arc<ScriptedProber>,
    pub events: EventBroadcaster,
    pub kubelet: Option<RunningKubelet>,
}

impl Node {
    /// A node whose registry serves `images`, with a kubelet started.
    pub async fn start(images: Vec<(&str, ImageBehaviour)>) -> Node {
        let client = capstan_apiserver::testing::client();
        let clock = FakeClock::new();
        let mut builder = FakeRuntime::builder().node_name(NODE).clock(clock.clone());
        for (image, behaviour) in images {
            builder = builder.image(image, behaviour);
        }
        let fake = builder.build();
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(1000),
        );
        let mut node = Node {
            client,
            clock,
            runtime: Arc::new(RecordingRuntime {
                inner: fake.clone(),
                stops: Mutex::new(Vec::new()),
            }),
            fake,
            network: Arc::new(TestNetwork::default()),
            prober: Arc::new(ScriptedProber::default()),
            events,
            kubelet: None,
        };
        node.start_kubelet().await;
        node
    }

    /// Starts (again) a kubelet on this node and waits until it is ready.
    pub async fn start_kubelet(&mut self) {
        let kubelet = Kubelet::builder(KubeletConfig::new(NODE).internal_ip("192.168.0.10"))
            .client(self.client.clone())
            .runtime(self.runtime.clone())
            .network(self.network.clone())
            .prober(self.prober.clone())
            .clock(Arc::new(self.clock.clone()))
            .events(self.events.recorder("kubelet"))
            .build()
            .expect("valid kubelet");
        let running = kubelet.start();
        while !running.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.kubelet = Some(running);
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("a pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("created")
    }

    pub async fn get(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("get")
    }

    /// Waits until `check` holds on the pod named `name` (polling every 5 ms).
    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pod) = self.get(name).await {
                if check(&pod) {
                    return pod;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!("pod {name} never got {what}; status: {:#?}", pod.status);
                }
            } else if tokio::time::Instant::now() > deadline {
                panic!("pod {name} is gone while waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `check` holds.
    pub async fn wait(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Advances the shared clock and lets the workers react.
    pub async fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    /// The Events recorded so far (reason, message), in order.
    pub async fn events(&self) -> Vec<(String, String)> {
        self.events.flush().await;
        self.events
            .history()
            .into_iter()
            .map(|e: Event| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    pub async fn has_event(&self, reason: &str, message: &str) -> bool {
        self.events()
            .await
            .iter()
            .any(|(r, m)| r == reason && m == message)
    }
}

/// A pod on [`NODE`] with `containers` (name, image) and extra spec fields.
pub fn pod(name: &str, containers: &[(&str, &str)], extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "nodeName": NODE,
        "containers": containers
            .iter()
            .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
            .collect::<Vec<_>>(),
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

pub fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

pub fn container<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a capstan_api::k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

pub fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    container(pod, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

pub fn restarts(pod: &Pod, name: &str) -> i32 {
    container(pod, name).map_or(-1, |c| c.restart_count)
}
