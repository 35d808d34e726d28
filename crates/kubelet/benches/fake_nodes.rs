//! 1,000 kubelets on fake runtimes in one process, 100 Pods each, over the in-process
//! registry on the memory store: what one node agent costs in CPU and memory.
//!
//! ```text
//! cargo bench -p capstan-kubelet --bench fake_nodes
//! CAPSTAN_BENCH_NODES=100 CAPSTAN_BENCH_PODS_PER_NODE=10 cargo bench -p capstan-kubelet --bench fake_nodes
//! ```
//!
//! A bench binary of its own (no criterion: one cold cluster, phases measured once). Every
//! kubelet has its own `FakeRuntime` and network double; all share one `FakeClock`, which the
//! benchmark advances by hand. It reports, from `/proc/self`:
//!
//! 1. start-up: registering every Node and syncing every Pod informer (CPU, resident memory);
//! 2. Pod start: creating every Pod (bound by `spec.nodeName`) until all are Running (time,
//!    CPU, memory);
//! 3. steady state: ten 1-second clock steps (each wakes every Pod worker for a relist) and one
//!    heartbeat (Lease renewals), CPU per node per simulated second.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::Api;
use capstan_kubelet::{Kubelet, KubeletConfig, RunningKubelet};
use capstan_net::{AttachResult, Attachment, IpConfig, NetworkPlugin};
use capstan_runtime::fake::{FakeRegistry, FakeRuntime, ImageBehaviour};
use capstan_runtime::{Clock, FakeClock};
use capstan_watch::{ReflectorOptions, SharedInformer};
use parking_lot::Mutex;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One node's addresses: `10.<n / 256>.<n % 256>.<k>`.
struct NodeNetwork {
    prefix: (u8, u8),
    next: AtomicU32,
    attached: Mutex<HashMap<String, IpAddr>>,
}

#[async_trait]
impl NetworkPlugin for NodeNetwork {
    fn name(&self) -> &str {
        "bench"
    }
    async fn add(&self, attachment: &Attachment) -> capstan_net::Result<AttachResult> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let ip = IpAddr::V4(Ipv4Addr::new(
            10,
            self.prefix.0,
            self.prefix.1,
            (k % 250 + 2) as u8,
        ));
        self.attached
            .lock()
            .insert(attachment.container_id.clone(), ip);
        Ok(AttachResult {
            ips: vec![IpConfig {
                address: format!("{ip}/24").parse().expect("an address"),
                gateway: None,
                interface: None,
            }],
            ..AttachResult::default()
        })
    }
    async fn del(&self, attachment: &Attachment) -> capstan_net::Result<()> {
        self.attached.lock().remove(&attachment.container_id);
        Ok(())
    }
    async fn check(&self, _: &Attachment) -> capstan_net::Result<()> {
        Ok(())
    }
    async fn status(&self) -> capstan_net::Result<()> {
        Ok(())
    }
}

/// (CPU seconds, resident bytes) of this process.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, rss_kb * 1024)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn total_syncs(kubelets: &[RunningKubelet]) -> u64 {
    kubelets.iter().map(|k| k.metrics().pod_syncs).sum()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let nodes = env("CAPSTAN_BENCH_NODES", 1_000);
    let per_node = env("CAPSTAN_BENCH_PODS_PER_NODE", 100);
    let pods_total = nodes * per_node;
    println!("fake_nodes: {nodes} nodes x {per_node} pods = {pods_total} pods");

    let client = capstan_apiserver::testing::client();
    let clock = FakeClock::new();
    let images = FakeRegistry::new();
    images.insert("app", ImageBehaviour::new());
    let all_pods = SharedInformer::<Pod>::spawn(
        Arc::new(Api::<Pod>::all(client.clone())),
        ReflectorOptions::default(),
    );
    all_pods.wait_for_sync().await;
    let (cpu0, rss0) = usage();

    // 1. Start-up.
    let start = Instant::now();
    let mut kubelets = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let name = format!("node-{n:04}");
        let fake = FakeRuntime::builder()
            .node_name(&name)
            .shared_clock(Arc::new(clock.clone()) as Arc<dyn Clock>)
            .registry(images.clone())
            .preload("app")
            .build();
        let network = Arc::new(NodeNetwork {
            prefix: ((n / 256) as u8, (n % 256) as u8),
            next: AtomicU32::new(0),
            attached: Mutex::new(HashMap::new()),
        });
        let config = KubeletConfig::new(&name)
            .internal_ip(format!("192.168.{}.{}", n / 250, n % 250 + 2))
            .capacity("pods", per_node.max(110).to_string());
        let kubelet = Kubelet::builder(config)
            .client(client.clone())
            .runtime(Arc::new(fake))
            .network(network)
            .clock(Arc::new(clock.clone()))
            .build()
            .expect("a valid kubelet");
        kubelets.push(kubelet.start());
    }
    while kubelets.iter().any(|k| !k.is_ready()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = start.elapsed();
    let (cpu1, rss1) = usage();
    println!(
        "start-up: {:.2} s, CPU {:.2} s ({:.2} ms/node), RSS +{:.1} MiB ({:.1} KiB/node)",
        started.as_secs_f64(),
        cpu1 - cpu0,
        (cpu1 - cpu0) * 1000.0 / nodes as f64,
        mib(rss1.saturating_sub(rss0)),
        rss1.saturating_sub(rss0) as f64 / 1024.0 / nodes as f64
    );

    // 2. Pods.
    let start = Instant::now();
    let creators = 32;
    let mut tasks = Vec::new();
    for c in 0..creators {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        tasks.push(tokio::spawn(async move {
            for i in (c..pods_total).step_by(creators) {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{i:06}"), "namespace": "default"},
                    "spec": {
                        "nodeName": format!("node-{:04}", i % nodes),
                        "containers": [{"name": "app", "image": "app"}],
                    },
                }))
                .expect("a pod");
                api.create(&PostParams::default(), &pod)
                    .await
                    .expect("created");
            }
        }));
    }
    for task in tasks {
        task.await.expect("creator");
    }
    let created = start.elapsed();
    let running =
        |pod: &Pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    loop {
        let count = all_pods
            .cache()
            .list()
            .iter()
            .filter(|p| running(p))
            .count();
        if count >= pods_total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_running = start.elapsed();
    let (cpu2, rss2) = usage();
    println!(
        "pods: created in {:.2} s, all Running after {:.2} s ({:.0} pods/s), CPU {:.2} s ({:.1} ms/node, {:.2} ms/pod), RSS {:.1} MiB (+{:.1} MiB over start-up; {:.1} KiB/node)",
        created.as_secs_f64(),
        all_running.as_secs_f64(),
        pods_total as f64 / all_running.as_secs_f64(),
        cpu2 - cpu1,
        (cpu2 - cpu1) * 1000.0 / nodes as f64,
        (cpu2 - cpu1) * 1000.0 / pods_total as f64,
        mib(rss2),
        mib(rss2.saturating_sub(rss1)),
        rss2.saturating_sub(rss0) as f64 / 1024.0 / nodes as f64
    );

    // 3. Steady state: ten clock seconds, each waking every worker, with one heartbeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu3, _) = usage();
    let start = Instant::now();
    let steps = 10u64;
    for _ in 0..steps {
        let before = total_syncs(&kubelets);
        clock.advance(Duration::from_secs(1));
        while total_syncs(&kubelets) < before + pods_total as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let steady = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu4, rss4) = usage();
    let cpu = cpu4 - cpu3;
    println!(
        "steady state: {steps} clock seconds in {:.2} s, CPU {:.2} s = {:.2} ms per node per second ({:.1} µs per pod sync), RSS {:.1} MiB ({:.1} KiB/node)",
        steady.as_secs_f64(),
        cpu,
        cpu * 1000.0 / nodes as f64 / steps as f64,
        cpu * 1e6 / (pods_total as f64 * steps as f64),
        mib(rss4),
        rss4.saturating_sub(rss0) as f64 / 1024.0 / nodes as f64
    );
    drop(kubelets);
}
