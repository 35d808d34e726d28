//! Compaction soak: the memory-store-backed registry under a steady write load, with the
//! store compacted on a schedule or not at all, sampling the process's resident memory.
//!
//! ```text
//! cargo run --release -p capstan-apiserver --example compaction_soak            # compaction on
//! cargo run --release -p capstan-apiserver --example compaction_soak -- --off   # no compaction
//! ```
//!
//! Time is simulated (a paused tokio clock advanced by the program), so an hour of cluster
//! life takes seconds. Every simulated `--period` seconds (default 10, a kubelet's Lease
//! renewal), each of `--nodes` nodes (default 500) renews its Lease in `kube-node-lease`, and
//! `--configmaps` ConfigMaps of 64 KiB (default 10) are rewritten. A watcher per kind reads
//! every event, as controllers do, so the watch caches run. The API server's
//! [`Compactor`](capstan_apiserver::compactor::Compactor) compacts every `--interval`
//! simulated seconds (default 60; kube-apiserver's default is 300). Runs `--rounds` periods
//! (default 360: one simulated hour). Prints, every 5 simulated minutes, the store's revision,
//! the process's resident memory (`/proc/self/statm`) and the bytes the allocator holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{PostParams, WatchParams};
use capstan_api::{Api, Client};
use capstan_apiserver::compactor::Compactor;
use capstan_apiserver::registry::Registry;
use capstan_store::memory::MemoryStore;
use capstan_store::Store;
use futures::StreamExt;

/// mimalloc, counting the bytes currently allocated.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory, from `/proc/self/statm` (pages; 4 KiB on this platform).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (pages * 4096) as f64 / MIB
}

struct Options {
    compaction: bool,
    nodes: usize,
    configmaps: usize,
    rounds: usize,
    period: u64,
    interval: u64,
}

fn options() -> Options {
    let mut options = Options {
        compaction: true,
        nodes: 500,
        configmaps: 10,
        rounds: 360,
        period: 10,
        interval: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--off" => options.compaction = false,
            "--nodes" => options.nodes = value(),
            "--configmaps" => options.configmaps = value(),
            "--rounds" => options.rounds = value(),
            "--period" => options.period = value() as u64,
            "--interval" => options.interval = value() as u64,
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

fn lease(node: usize, now: Timestamp) -> Lease {
    let mut lease = Lease::default();
    lease.metadata.name = Some(format!("node-{node:04}"));
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(format!("node-{node:04}")),
        lease_duration_seconds: Some(40),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    });
    lease
}

fn config_map(i: usize, round: usize) -> ConfigMap {
    let mut config = ConfigMap::default();
    config.metadata.name = Some(format!("large-{i:02}"));
    // 64 KiB that differ every round.
    let filler = format!("{round:08}").repeat(8 * 1024);
    config.data = Some(BTreeMap::from([("payload".to_string(), filler)]));
    config
}

/// Reads every event of `api`'s kind until the stream ends, as an informer would.
fn drain<K>(api: Api<K>)
where
    K: capstan_api::Resource + serde::de::DeserializeOwned + Clone + std::fmt::Debug + Send,
    K: 'static,
{
    tokio::spawn(async move {
        let mut events = api.watch(&WatchParams::default(), "0").await.unwrap();
        while let Some(Ok(_)) = events.next().await {}
    });
}

async fn soak(options: Options) {
    let store = Arc::new(MemoryStore::new());
    let client: Arc<dyn Client> = Arc::new(Registry::new(store.clone()));
    for name in ["kube-node-lease"] {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.into());
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    drain(leases.clone());
    drain(config_maps.clone());
    let period = Duration::from_secs(options.period);
    let compactor = options.compaction.then(|| {
        Compactor::start(
            store.clone() as Arc<dyn Store>,
            Duration::from_secs(options.interval),
        )
        .expect("a positive interval")
    });
    let started = tokio::time::Instant::now();
    let post = PostParams::default();
    let mut lease_objects = Vec::new();
    for node in 0..options.nodes {
        lease_objects.push(
            leases
                .create(&post, &lease(node, Timestamp::now()))
                .await
                .unwrap(),
        );
    }
    let mut cm_objects = Vec::new();
    for i in 0..options.configmaps {
        cm_objects.push(config_maps.create(&post, &config_map(i, 0)).await.unwrap());
    }
    println!(
        "compaction: {}, {} nodes renewing every {}s, {} ConfigMaps of 64 KiB rewritten every {}s",
        match &compactor {
            Some(c) => format!("every {}s (simulated)", c.interval().as_secs()),
            None => "off".into(),
        },
        options.nodes,
        options.period,
        options.configmaps,
        options.period
    );
    println!("| simulated min | revision | compacted to | RSS MiB | allocated MiB |");
    println!("|---:|---:|---:|---:|---:|");
    let sample_every = (300 / options.period.max(1)).max(1) as usize;
    for round in 1..=options.rounds {
        for (node, current) in lease_objects.iter_mut().enumerate() {
            let mut next = lease(node, Timestamp::now());
            next.metadata.resource_version = current.metadata.resource_version.clone();
            *current = leases.update(&post, &next).await.unwrap();
        }
        for (i, current) in cm_objects.iter_mut().enumerate() {
            let mut next = config_map(i, round);
            next.metadata.resource_version = current.metadata.resource_version.clone();
            *current = config_maps.update(&post, &next).await.unwrap();
        }
        // Let the watchers read, then let a period pass.
        tokio::task::yield_now().await;
        tokio::time::advance(period).await;
        tokio::task::yield_now().await;
        if round % sample_every == 0 || round == options.rounds {
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            let compacted = compactor
                .as_ref()
                .and_then(|c| c.status().compacted)
                .map_or("-".to_string(), |r| r.to_string());
            println!(
                "| {minutes:.0} | {} | {compacted} | {:.1} | {:.1} |",
                store.current_revision().await.unwrap(),
                rss_mib(),
                ALLOCATOR.allocated() as f64 / MIB,
            );
        }
    }
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let wall = std::time::Instant::now();
    runtime.block_on(soak(options));
    println!("wall time: {:.1}s", wall.elapsed().as_secs_f64());
}
