//! The scheduling algorithm alone: one pod through PreFilter, Filter, PreScore and Score with
//! the default plugins, on snapshots of 500 and 5,000 nodes with 2 pods each. No API server,
//! no binding: this is where the throughput bench's per-pod CPU goes first.
//!
//! ```text
//! cargo bench -p capstan-scheduler --bench schedule_pod
//! ```

use std::hint::black_box;
use std::sync::Arc;

use capstan_scheduler::cache::Snapshot;
use capstan_scheduler::framework::{CycleState, Framework, NodeInfo};
use capstan_scheduler::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_scheduler::plugins::{default_profile, default_registry};
use capstan_scheduler::schedule::schedule_pod;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.15",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }))
    .unwrap()
}

fn snapshot(nodes: usize) -> Snapshot {
    Snapshot::from_nodes((0..nodes).map(|i| {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("node{i:05}"), "labels": {
                "kubernetes.io/hostname": format!("node{i:05}"),
                "topology.kubernetes.io/zone": format!("z{}", i % 3)}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}},
        }))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(node));
        for j in 0..2 {
            let mut p = pod(&format!("p{i}-{j}"));
            p.spec.as_mut().unwrap().node_name = Some(format!("node{i:05}"));
            info.add_pod(Arc::new(p));
        }
        info
    }))
}

fn bench(c: &mut Criterion) {
    let fw = Framework::new(&default_registry(), &default_profile()).unwrap();
    let incoming = pod("incoming");
    let mut group = c.benchmark_group("schedule_pod");
    for nodes in [500, 5_000] {
        let snap = snapshot(nodes);
        let mut next_start = 0;
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &snap, |b, snap| {
            b.iter(|| {
                let mut state = CycleState::new();
                black_box(schedule_pod(&fw, &mut state, &incoming, snap, &mut next_start).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
