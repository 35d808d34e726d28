//! Time from creating a 10,000-replica Deployment until every Pod exists and is bound, on
//! 1,000 fake nodes, with the built-in controllers (controller manager), the fake scheduler
//! and fake kubelets over the in-process registry on the memory store. Also reports when
//! every Pod is Running, and the same for a 1,000-replica Deployment.
//!
//! ```text
//! cargo bench -p capstan-controllers --bench deployment_scale
//! ```
//!
//! A bench binary of its own (no criterion): one cold cluster per run, three runs per size,
//! the median and the spread printed.

use capstan_api::compat::Maybe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::Api;
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions};
use capstan_controllers::manager::ControllerManager;
use capstan_watch::{ReflectorOptions, SharedInformer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 3;
/// The design budget's cluster: 1,000 fake nodes.
const NODES: usize = 1_000;

struct Run {
    bound: Duration,
    running: Duration,
}

async fn run(replicas: i32) -> Run {
    let client = capstan_apiserver::testing::client();
    let nodes: Vec<String> = (0..NODES).map(|n| format!("node{n:03}")).collect();
    let _scheduler = FakeScheduler::start(client.clone(), nodes.clone());
    let options = KubeletOptions {
        startup_delay: Duration::ZERO,
        ..KubeletOptions::default()
    };
    let _kubelet = FakeKubelet::start(client.clone(), nodes, options);
    let manager = ControllerManager::new(client.clone()).with_builtins();
    let manager = tokio::spawn(manager.run(std::future::pending()));
    // Our own view of the Pods, to see when they are bound and running.
    let pods = SharedInformer::<Pod>::spawn(
        Arc::new(Api::<Pod>::all(client.clone())),
        ReflectorOptions::default(),
    );
    pods.wait_for_sync().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut deployment: Deployment = serde_yaml_ng::from_str(include_str!(
        "../../../examples/manifests/newkubia-deployment.yaml"
    ))
    .expect("the newkubia manifest");
    deployment.spec.opt_mut().unwrap().replicas = Some(replicas);
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");

    let count =
        |pred: &dyn Fn(&Pod) -> bool| pods.cache().list().iter().filter(|pod| pred(pod)).count();
    let bound = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_ref())
            .is_some()
    };
    let running =
        |pod: &Pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let target = replicas as usize;
    while count(&bound) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bound_at = start.elapsed();
    while count(&running) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let running_at = start.elapsed();
    assert_eq!(
        pods.cache().list().len(),
        target,
        "no more pods than replicas"
    );
    manager.abort();
    Run {
        bound: bound_at,
        running: running_at,
    }
}

fn median(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks sizes (e.g. `1000`).
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
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| replicas.to_string().contains(f.as_str()))
        {
            continue;
        }
        let runs: Vec<Run> = (0..RUNS).map(|_| runtime.block_on(run(replicas))).collect();
        let (low, mid, high) = median(runs.iter().map(|r| r.bound).collect());
        let (rlow, rmid, rhigh) = median(runs.iter().map(|r| r.running).collect());
        println!(
            "deployment of {replicas}: all pods bound in {:.2} s (min {:.2}, max {:.2}); \
             all running in {:.2} s (min {:.2}, max {:.2}); {:.0} pods/s bound",
            mid.as_secs_f64(),
            low.as_secs_f64(),
            high.as_secs_f64(),
            rmid.as_secs_f64(),
            rlow.as_secs_f64(),
            rhigh.as_secs_f64(),
            replicas as f64 / mid.as_secs_f64(),
        );
    }
}
