//! Service proxy rule generation at the design's scale: 10,000 Services × 10 endpoints.
//!
//! - `iptables/full`: the `iptables-restore` input of a full sync.
//! - `iptables/one_endpoint_change`: diffing the state after one endpoint changed and
//!   rendering the partial sync.
//!
//! - `nftables/…` and `ipvs/…`: the same for the other backends' rule text.
//! - `apply/…` (as root, with `ip`, `iptables-restore` and `nft` on the PATH): the real
//!   backends syncing a network namespace the benchmark creates and deletes; a full sync of
//!   the whole state, and a partial sync of one endpoint change (alternating between two
//!   states, so every sync changes something). Left out, with a note, when not root. The
//!   kernel side is far slower than generation, so these use `CAPSTAN_BENCH_APPLY_SERVICES`
//!   Services (1,000 by default) × 10 endpoints.
//!
//! Run: `cargo bench -p capstan-net --bench proxy_sync`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use capstan_net::proxy::iptables::{self, IptablesBackend, IptablesConfig, Masquerade};
use capstan_net::proxy::ipvs::IpvsTable;
use capstan_net::proxy::nftables::{self, NftablesBackend, NftablesConfig};
use capstan_net::proxy::{
    Changes, OwnedObjects, Protocol, ProxyBackend, ProxyState, ServicePortName, ServicePortState,
    SessionAffinity,
};
use criterion::{criterion_group, criterion_main, Criterion};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;

fn state() -> ProxyState {
    state_of(SERVICES)
}

fn state_of(services: u32) -> ProxyState {
    let mut state = ProxyState::new();
    for i in 0..services {
        let cluster_ip = IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i));
        let endpoints = (0..ENDPOINTS)
            .map(|e| {
                SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * ENDPOINTS + e)),
                    8080,
                )
            })
            .collect();
        state.insert(
            ServicePortName::new("bench", format!("svc-{i}"), "http", Protocol::Tcp),
            ServicePortState {
                cluster_ip,
                port: 80,
                node_port: (i % 10 == 0).then(|| 30000 + (i / 10) as u16),
                protocol: Protocol::Tcp,
                affinity: if i % 7 == 0 {
                    SessionAffinity::ClientIp {
                        timeout_seconds: 10800,
                    }
                } else {
                    SessionAffinity::None
                },
                endpoints,
            },
        );
    }
    state
}

fn one_endpoint_changed(state: &ProxyState) -> ProxyState {
    let mut changed = state.clone();
    let middle = changed.len() / 2;
    let port = changed.services.values_mut().nth(middle).unwrap();
    port.endpoints[3] = "10.250.0.1:8080".parse().unwrap();
    port.endpoints.sort();
    changed
}

fn iptables(c: &mut Criterion) {
    let before = state();
    let after = one_endpoint_changed(&before);
    let masquerade = Masquerade::default();
    let mut owned = OwnedObjects::default();
    owned.record(
        &Changes::Full,
        iptables::render(&before, &Changes::Full, &owned, &masquerade).written,
    );
    let mut group = c.benchmark_group("iptables");
    group.sample_size(10);
    group.bench_function("full", |b| {
        b.iter(|| {
            iptables::render(
                black_box(&before),
                &Changes::Full,
                &OwnedObjects::default(),
                &masquerade,
            )
        })
    });
    group.bench_function("one_endpoint_change", |b| {
        b.iter(|| {
            let changes = Changes::Partial(black_box(&after).diff(&before));
            iptables::render(&after, &changes, &owned, &masquerade)
        })
    });
    group.finish();
}

fn nftables(c: &mut Criterion) {
    let before = state();
    let after = one_endpoint_changed(&before);
    let mut owned = OwnedObjects::default();
    owned.record(
        &Changes::Full,
        nftables::render(&before, &Changes::Full, &owned, None).written,
    );
    let mut group = c.benchmark_group("nftables");
    group.sample_size(10);
    group.bench_function("full", |b| {
        b.iter(|| {
            nftables::render(
                black_box(&before),
                &Changes::Full,
                &OwnedObjects::default(),
                None,
            )
        })
    });
    group.bench_function("one_endpoint_change", |b| {
        b.iter(|| {
            let changes = Changes::Partial(black_box(&after).diff(&before));
            nftables::render(&after, &changes, &owned, None)
        })
    });
    group.finish();
}

fn ipvs(c: &mut Criterion) {
    let before = state();
    let after = one_endpoint_changed(&before);
    let node_ips = ["192.168.1.10".parse().unwrap()];
    let applied = IpvsTable::desired(&before, &node_ips);
    let mut group = c.benchmark_group("ipvs");
    group.sample_size(10);
    group.bench_function("full", |b| {
        b.iter(|| {
            IpvsTable::desired(black_box(&before), &node_ips).diff_from(&IpvsTable::default())
        })
    });
    group.bench_function("one_endpoint_change", |b| {
        b.iter(|| IpvsTable::desired(black_box(&after), &node_ips).diff_from(&applied))
    });
    group.finish();
}

/// A network namespace for the apply benchmarks, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("cpxbench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        ok.then_some(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn apply(c: &mut Criterion) {
    let Some(netns) = Netns::create() else {
        eprintln!("apply/*: left out (needs root and `ip` to create a network namespace)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let services = std::env::var("CAPSTAN_BENCH_APPLY_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let before = state_of(services);
    let after = one_endpoint_changed(&before);
    let backends: Vec<Box<dyn ProxyBackend>> = vec![
        Box::new(IptablesBackend::new(IptablesConfig {
            netns: Some(netns.0.clone()),
            ..IptablesConfig::default()
        })),
        Box::new(NftablesBackend::new(NftablesConfig {
            netns: Some(netns.0.clone()),
            ..NftablesConfig::default()
        })),
    ];
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    for backend in &backends {
        if let Err(error) = runtime.block_on(backend.sync(&before, &Changes::Full)) {
            eprintln!("apply/{}: left out: {error}", backend.name());
            continue;
        }
        group.bench_function(format!("{}/full/{services}", backend.name()), |b| {
            b.to_async(&runtime)
                .iter(|| async { backend.sync(&before, &Changes::Full).await.unwrap() })
        });
        let flipped = AtomicBool::new(false);
        group.bench_function(
            format!("{}/one_endpoint_change/{services}", backend.name()),
            |b| {
                b.to_async(&runtime).iter(|| async {
                    let (from, to) = if flipped.fetch_xor(true, Ordering::SeqCst) {
                        (&after, &before)
                    } else {
                        (&before, &after)
                    };
                    let changes = Changes::Partial(to.diff(from));
                    backend.sync(to, &changes).await.unwrap()
                })
            },
        );
        runtime.block_on(backend.cleanup()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, iptables, nftables, ipvs, apply);
criterion_main!(benches);
