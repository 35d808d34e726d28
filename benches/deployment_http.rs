//! Time from creating a 10,000-replica Deployment until every Pod is Running, on 1,000 fake
//! nodes, with every component talking to the API server over HTTP, in one process: the
//! controller manager (every built-in controller), the real scheduler (default profile,
//! leader-elected), the fake nodes (Node objects and Lease heartbeats) and the fake kubelet,
//! each with its own `RemoteClient`, and the benchmark's own Pod informer, also remote.
//!
//! ```text
//! cargo bench --bench deployment_http           # 1,000 and 10,000 replicas, 3 runs each
//! cargo bench --bench deployment_http -- 10000  # one size
//! ```
//!
//! One cold cluster per run. Prints the median and the range of "all bound" and "all
//! Running", and writes the Pods Running over time of the median 10,000-replica run to
//! `deployment_http.csv` (`seconds,running`) in the target directory (`CARGO_TARGET_DIR` or
//! `target/`), which `examples/bench_charts.rs` draws.

use capstan_api::compat::Maybe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan::api::k8s_openapi::api::apps::v1::Deployment;
use capstan::api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan::api::kube_core::params::PostParams;
use capstan::api::{Api, Client};
use capstan::apiserver::http::ApiServer;
use capstan::apiserver::remote::RemoteClient;
use capstan::cluster::control_plane::{start_scheduler, ControlPlaneOptions};
use capstan::controller::testing::{FakeKubelet, FakeNodes, KubeletOptions};
use capstan::controllers::manager::ControllerManager;
use capstan::watch::{ReflectorOptions, SharedInformer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 3;
/// kwok's and the design budget's cluster: 1,000 fake nodes.
const NODES: usize = 1_000;

struct Run {
    bound: Duration,
    running: Duration,
    /// (seconds since the create, Pods Running), every 100 ms.
    timeline: Vec<(f64, usize)>,
}

fn remote(url: &str) -> Arc<dyn Client> {
    Arc::new(RemoteClient::new(url).expect("a client for the loopback server"))
}

async fn run(replicas: i32) -> Run {
    let registry = capstan::apiserver::testing::registry();
    let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind a loopback port");
    let url = server.url();
    let names: Vec<String> = (0..NODES).map(|n| format!("node{n:04}")).collect();
    let _nodes = FakeNodes::start(remote(&url), names.clone());
    let _kubelet = FakeKubelet::start(
        remote(&url),
        names,
        KubeletOptions {
            startup_delay: Duration::ZERO,
            ..KubeletOptions::default()
        },
    );
    let manager = ControllerManager::new(remote(&url)).with_builtins();
    let manager = tokio::spawn(manager.run(std::future::pending()));
    let scheduler = start_scheduler(remote(&url), &ControlPlaneOptions::new("bench"))
        .expect("the scheduler starts");

    // Our own view, over HTTP too.
    let client = remote(&url);
    let nodes = SharedInformer::<Node>::spawn(
        Arc::new(Api::<Node>::all(client.clone())),
        ReflectorOptions::default(),
    );
    let pods = SharedInformer::<Pod>::spawn(
        Arc::new(Api::<Pod>::all(client.clone())),
        ReflectorOptions::default(),
    );
    pods.wait_for_sync().await;
    while nodes.cache().list().len() < NODES {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the scheduler's informers see every node.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut deployment: Deployment = serde_yaml_ng::from_str(include_str!(
        "../examples/manifests/newkubia-deployment.yaml"
    ))
    .expect("the newkubia manifest");
    deployment.spec.opt_mut().unwrap().replicas = Some(replicas);
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");

    let target = replicas as usize;
    let (mut bound_at, mut timeline) = (None, Vec::new());
    let mut next_sample = Duration::ZERO;
    let running_at = loop {
        let list = pods.cache().list();
        let bound = list
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let running = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        let elapsed = start.elapsed();
        if elapsed >= next_sample {
            timeline.push((elapsed.as_secs_f64(), running));
            next_sample += Duration::from_millis(100);
        }
        if bound >= target && bound_at.is_none() {
            bound_at = Some(elapsed);
        }
        if running >= target {
            timeline.push((elapsed.as_secs_f64(), running));
            break elapsed;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        pods.cache().list().len(),
        target,
        "no more Pods than replicas"
    );
    scheduler.stop(Duration::from_secs(5)).await;
    manager.abort();
    Run {
        bound: bound_at.expect("bound before running"),
        running: running_at,
        timeline,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks sizes (e.g. `10000`).
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for replicas in [1_000, 10_000] {
        if !filter.is_empty() && !filter.iter().any(|f| replicas.to_string() == *f) {
            continue;
        }
        let mut runs: Vec<Run> = (0..RUNS).map(|_| runtime.block_on(run(replicas))).collect();
        runs.sort_by_key(|r| r.running);
        let bound: Vec<f64> = {
            let mut b: Vec<f64> = runs.iter().map(|r| r.bound.as_secs_f64()).collect();
            b.sort_by(f64::total_cmp);
            b
        };
        let median = &runs[runs.len() / 2];
        println!(
            "{replicas} replicas on {NODES} nodes over HTTP: all bound in {:.2} s ({:.2} to {:.2}); \
             all Running in {:.2} s ({:.2} to {:.2}); load average {}",
            bound[bound.len() / 2],
            bound[0],
            bound[bound.len() - 1],
            median.running.as_secs_f64(),
            runs[0].running.as_secs_f64(),
            runs[runs.len() - 1].running.as_secs_f64(),
            load_average(),
        );
        if replicas == 10_000 {
            let csv: String = std::iter::once("seconds,running\n".to_string())
                .chain(median.timeline.iter().map(|(t, n)| format!("{t:.2},{n}\n")))
                .collect();
            let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
                std::path::PathBuf::from,
            );
            let path = dir.join("deployment_http.csv");
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, csv))
                .unwrap_or_else(|e| panic!("write the timeline to {}: {e}", path.display()));
            println!("timeline of the median run: {}", path.display());
        }
    }
}
