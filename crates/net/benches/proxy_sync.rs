//! Service proxy rule generation at the design's scale: 10,000 Services × 10 endpoints.
//!
//! - `iptables/full`: the `iptables-restore` input of a full sync.
//! - `iptables/one_endpoint_change`: diffing the state after one endpoint changed and
//!   rendering the partial sync.
//!
//! Run: `cargo bench -p capstan-net --bench proxy_sync`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use capstan_net::proxy::iptables::{self, Masquerade};
use capstan_net::proxy::{
    Changes, Protocol, ProxyState, ServicePortName, ServicePortState, SessionAffinity,
};
use criterion::{criterion_group, criterion_main, Criterion};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;

fn state() -> ProxyState {
    let mut state = ProxyState::new();
    for i in 0..SERVICES {
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
    let port = changed.services.values_mut().nth(4242).unwrap();
    port.endpoints[3] = "10.250.0.1:8080".parse().unwrap();
    port.endpoints.sort();
    changed
}

fn iptables(c: &mut Criterion) {
    let before = state();
    let after = one_endpoint_changed(&before);
    let masquerade = Masquerade::default();
    let full = iptables::render(&before, &Changes::Full, &BTreeSet::new(), &masquerade);
    let mut group = c.benchmark_group("iptables");
    group.sample_size(10);
    group.bench_function("full", |b| {
        b.iter(|| {
            iptables::render(
                black_box(&before),
                &Changes::Full,
                &BTreeSet::new(),
                &masquerade,
            )
        })
    });
    group.bench_function("one_endpoint_change", |b| {
        b.iter(|| {
            let changes = Changes::Partial(black_box(&after).diff(&before));
            iptables::render(&after, &changes, &full.chains, &masquerade)
        })
    });
    group.finish();
}

criterion_group!(benches, iptables);
criterion_main!(benches);
