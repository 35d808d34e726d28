//! The cluster-level pieces against the in-process API server: the node IPAM controller
//! giving 5,000 Nodes their pod CIDRs, and cluster DNS over 5,000 Services (lookups in
//! process and UDP round trips through the server).
//!
//! ```text
//! cargo bench -p capstan-net --bench cluster_services
//! ```
//!
//! A bench binary of its own (no criterion): timed runs, the best one reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use capstan_api::k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::Api;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_net::dns::hickory::DnsServer;
use capstan_net::dns::{ClusterDns, DEFAULT_DOMAIN, SERVICE_NAME_LABEL};
use capstan_net::ipam::controller::{NodeIpamController, COMPONENT};
use capstan_net::ipam::ClusterCidr;
use capstan_watch::{InformerFactory, ReflectorOptions};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

const NODES: usize = 5_000;
const SERVICES: usize = 5_000;
const LOOKUPS: usize = 200_000;
const ROUND_TRIPS: usize = 20_000;
const ROUNDS: usize = 3;

async fn node_ipam() -> Duration {
    let client = capstan_apiserver::testing::client();
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        let mut node = Node::default();
        node.metadata.name = Some(format!("node-{i}"));
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let cidrs = ClusterCidr::new("10.0.0.0/8".parse().unwrap(), 24).unwrap();
    let factory = Arc::new(InformerFactory::new(
        client.clone(),
        ReflectorOptions::default(),
    ));
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let controller =
        NodeIpamController::new(client.clone(), factory, events.recorder(COMPONENT), &cidrs);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    loop {
        let listed = nodes.list(&ListParams::default()).await.unwrap();
        let done = listed
            .items
            .iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some())
            .count();
        if done == NODES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    elapsed
}

fn question(name: &str) -> Vec<u8> {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

async fn dns() {
    let client = capstan_apiserver::testing::client();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for i in 0..SERVICES {
        let service = Service {
            metadata: ObjectMeta {
                name: Some(format!("svc-{i}")),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: (i == 0).then(|| "None".to_owned()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        services
            .create(&PostParams::default(), &service)
            .await
            .unwrap();
    }
    // svc-0 is headless, with 100 ready endpoints.
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("svc-0-a".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), "svc-0".to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: capstan_api::compat::value(
            (0..100)
                .map(|i| Endpoint {
                    addresses: vec![format!("10.244.0.{}", i + 1)],
                    ..Endpoint::default()
                })
                .collect::<Vec<_>>(),
        ),
        ports: None,
    };
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
    let factory = InformerFactory::new(client.clone(), ReflectorOptions::default());
    let dns = ClusterDns::new(&factory, DEFAULT_DOMAIN).unwrap();
    dns.wait_for_sync().await;

    let names: Vec<Name> = (0..1000)
        .map(|i| Name::from_ascii(format!("svc-{}.default.svc.cluster.local.", 1 + i * 4)).unwrap())
        .collect();
    let headless = vec![Name::from_ascii("svc-0.default.svc.cluster.local.").unwrap()];
    let missing = vec![Name::from_ascii("nope.default.svc.cluster.local.").unwrap()];
    for (label, asked) in [
        ("cluster_ip", &names),
        ("headless_100_endpoints", &headless),
        ("nxdomain", &missing),
    ] {
        let best = (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for i in 0..LOOKUPS {
                    std::hint::black_box(dns.resolve(&asked[i % asked.len()], RecordType::A));
                }
                start.elapsed()
            })
            .min()
            .unwrap();
        println!(
            "cluster_dns/resolve_{label}: {:.2} µs/lookup ({:.0} k lookups/s, {SERVICES} Services)",
            best.as_secs_f64() * 1e6 / LOOKUPS as f64,
            LOOKUPS as f64 / best.as_secs_f64() / 1e3
        );
    }

    let server = DnsServer::bind(dns, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr: SocketAddr = server.local_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let query = question("svc-1.default.svc.cluster.local.");
    let mut buffer = vec![0; 1500];
    let best = {
        let mut best = Duration::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS {
                socket.send_to(&query, addr).await.unwrap();
                socket.recv_from(&mut buffer).await.unwrap();
            }
            best = best.min(start.elapsed());
        }
        best
    };
    println!(
        "cluster_dns/udp_round_trip: {:.1} µs ({:.1} k queries/s, one client, sequential)",
        best.as_secs_f64() * 1e6 / ROUND_TRIPS as f64,
        ROUND_TRIPS as f64 / best.as_secs_f64() / 1e3
    );
    server.shutdown().await.unwrap();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let best = {
            let mut best = Duration::MAX;
            for _ in 0..ROUNDS {
                best = best.min(node_ipam().await);
            }
            best
        };
        println!(
            "node_ipam/assign_{NODES}_nodes: {best:?} ({:.0} nodes/s, from controller start)",
            NODES as f64 / best.as_secs_f64()
        );
        dns().await;
    });
}
