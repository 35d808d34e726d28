//! Scheduling throughput, scheduler_perf style: pending Pods on Nodes with the default
//! plugins, through the real registry (in-process, memory store), informers and bind path.
//! Three workloads: 500 nodes / 1,000 pods, 5,000 / 10,000 (the headline) and
//! 5,000 / 50,000; `NODES` and `PODS` run one of your choice instead.
//!
//! ```text
//! cargo bench -p capstan-scheduler --bench scheduling_throughput
//! NODES=5000 PODS=10000 cargo bench -p capstan-scheduler --bench scheduling_throughput
//! ```
//!
//! The pods and nodes are created first; the clock runs from starting the scheduler until
//! our own informer has seen every pod bound. Per-pod latencies come from the scheduler's
//! metrics: the attempt (off the queue until the bind is written) and the algorithm alone.
//! A bench binary of its own (no criterion): one cold cluster per run.

use capstan_api::kube_core::ResourceExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::Api;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_scheduler::metrics::MetricsSnapshot;
use capstan_scheduler::{default_framework, Scheduler};
use capstan_watch::{Delta, InformerFactory, ReflectorOptions, SharedInformer};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(nodes: usize, pods: usize) -> (Duration, MetricsSnapshot) {
    let client = capstan_apiserver::testing::client();
    let node_api: Api<Node> = Api::cluster(client.clone());
    for i in 0..nodes {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("node{i:05}"), "labels": {"zone": format!("z{}", i % 3)}},
        }))
        .unwrap();
        let mut created = node_api
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        created.status = Some(
            serde_json::from_value(json!({
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            }))
            .unwrap(),
        );
        node_api
            .update_status(&PostParams::default(), &created)
            .await
            .unwrap();
    }
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..pods {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("pod{i:05}")},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.15",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        }))
        .unwrap();
        pod_api.create(&PostParams::default(), &pod).await.unwrap();
    }
    let watcher = SharedInformer::<Pod>::spawn(
        Arc::new(Api::<Pod>::all(client.clone())),
        ReflectorOptions::default(),
    );
    watcher.wait_for_sync().await;
    let mut deltas = watcher.subscribe();

    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let scheduler = Scheduler::new(
        client.clone(),
        default_framework(client.clone(), events.recorder("default-scheduler")).unwrap(),
        events.recorder("default-scheduler"),
    );
    let metrics = scheduler.metrics().clone();
    let informers = InformerFactory::new(client.clone(), ReflectorOptions::default());
    let started = Instant::now();
    let task = tokio::spawn(async move { scheduler.run(&informers).await });
    let mut bound = std::collections::HashSet::new();
    while bound.len() < pods {
        let Some(delta) = deltas.recv().await else {
            break;
        };
        if let Delta::Added(p) | Delta::Updated { new: p, .. } = delta {
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                bound.insert(p.name_any());
            }
        }
    }
    let took = started.elapsed();
    task.abort();
    (took, metrics.snapshot())
}

fn main() {
    let workloads = match (std::env::var("NODES"), std::env::var("PODS")) {
        (Err(_), Err(_)) => vec![(500, 1_000), (5_000, 10_000), (5_000, 50_000)],
        _ => vec![(env("NODES", 5_000), env("PODS", 10_000))],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (nodes, pods) in workloads {
        let (took, m) = rt.block_on(run(nodes, pods));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{nodes} nodes, {pods} pods: {:.2} s, {:.0} pods/s (budget 10,000 at 5,000 nodes); \
             attempt p50 {:.0} us p99 {:.0} us; algorithm p50 {:.0} us p99 {:.0} us",
            took.as_secs_f64(),
            pods as f64 / took.as_secs_f64(),
            us(m.attempt.p50),
            us(m.attempt.p99),
            us(m.algorithm.p50),
            us(m.algorithm.p99),
        );
    }
}
