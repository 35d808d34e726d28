//! The in-process network at cluster scale: 5,000 fake nodes, each a `FakeNetwork` over the
//! `/24` that `ClusterCidr` gives it out of `10.0.0.0/8`, with 100 pods added and then deleted
//! on every node (500,000 ADDs and DELs), and the cluster CIDR cut into all 65,536 node subnets.
//!
//! ```text
//! cargo bench -p capstan-net --bench fake_network
//! ```
//!
//! A bench binary of its own (no criterion): a few timed rounds, the best one reported.

use std::time::{Duration, Instant};

use capstan_net::fake::FakeNetwork;
use capstan_net::ipam::ClusterCidr;
use capstan_net::{Attachment, NetworkPlugin};

const NODES: usize = 5_000;
const PODS_PER_NODE: usize = 100;
const ROUNDS: usize = 5;

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().expect("at least one round")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut cidrs = ClusterCidr::new("10.0.0.0/8".parse().unwrap(), 24).unwrap();
    let start = Instant::now();
    let nodes: Vec<FakeNetwork> = (0..NODES)
        .map(|i| FakeNetwork::new(cidrs.allocate(&format!("node-{i}")).unwrap()).unwrap())
        .collect();
    let setup = start.elapsed();
    let pods: Vec<Attachment> = (0..PODS_PER_NODE)
        .map(|i| Attachment::new(format!("sandbox-{i}"), format!("/var/run/netns/p{i}")))
        .collect();

    let (mut add, mut del) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        runtime.block_on(async {
            let start = Instant::now();
            for node in &nodes {
                for pod in &pods {
                    node.add(pod).await.unwrap();
                }
            }
            add = add.min(start.elapsed());
            let start = Instant::now();
            for node in &nodes {
                for pod in &pods {
                    node.del(pod).await.unwrap();
                }
            }
            del = del.min(start.elapsed());
        });
        assert!(nodes.iter().all(|n| n.allocated_count() == 0));
    }
    let ops = (NODES * PODS_PER_NODE) as f64;
    println!("fake_network/setup_{NODES}_nodes: {setup:?}");
    println!(
        "fake_network/add: {:.2} M adds/s ({add:?} for {ops} adds)",
        ops / add.as_secs_f64() / 1e6
    );
    println!(
        "fake_network/del: {:.2} M dels/s ({del:?} for {ops} dels)",
        ops / del.as_secs_f64() / 1e6
    );

    let cut = best(|| {
        let mut all = ClusterCidr::new("10.0.0.0/8".parse().unwrap(), 24).unwrap();
        let names: Vec<String> = (0..65_536).map(|i| format!("node-{i}")).collect();
        let start = Instant::now();
        for name in &names {
            all.allocate(name).unwrap();
        }
        for name in &names {
            all.release(name);
        }
        start.elapsed()
    });
    println!(
        "cluster_cidr/allocate_and_release_65536: {cut:?} ({:.2} M allocations+releases/s)",
        65_536.0 / cut.as_secs_f64() / 1e6
    );
}
