//! The cluster DNS server against the in-process API server (registry over the memory
//! store), queried with real DNS messages over UDP and TCP sockets (feature `dns`, on by default).
#![cfg(feature = "dns")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use capstan_api::k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_net::dns::hickory::DnsServer;
use capstan_net::dns::{ClusterDns, DEFAULT_DOMAIN, SERVICE_NAME_LABEL};
use capstan_watch::{InformerFactory, ReflectorOptions};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(60);

fn question(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message.metadata.recursion_desired = true;
    message.to_vec().unwrap()
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&question(name, qtype), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    assert_eq!(from, server);
    Message::from_vec(&buffer[..len]).unwrap()
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = question(name, qtype);
    stream
        .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buffer = vec![0; usize::from(len)];
    stream.read_exact(&mut buffer).await.unwrap();
    Message::from_vec(&buffer).unwrap()
}

fn answers(message: &Message) -> Vec<String> {
    let mut all: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    all.sort();
    all
}

/// Asks over UDP until `done` holds for the answer (the informers lag the API a little).
async fn until(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    done: impl Fn(&Message) -> bool,
) -> Message {
    loop {
        let message = udp(server, name, qtype).await;
        if done(&message) {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn service(name: &str, cluster_ip: Option<&str>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(str::to_owned),
            selector: Some([("app".to_owned(), name.to_owned())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn slice(service: &str, endpoints: &[(&str, bool)]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-x1")),
            namespace: Some("default".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: capstan_api::compat::value(
            endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect::<Vec<_>>(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

async fn start(client: &Arc<dyn Client>) -> DnsServer {
    let factory = InformerFactory::new(client.clone(), ReflectorOptions::default());
    let dns = ClusterDns::new(&factory, DEFAULT_DOMAIN).unwrap();
    dns.wait_for_sync().await;
    DnsServer::bind(dns, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_resolve_over_udp_and_tcp() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let web = services
            .create(&PostParams::default(), &service("web", None))
            .await
            .unwrap();
        let cluster_ip = web.spec.unwrap().cluster_ip.unwrap();
        services
            .create(&PostParams::default(), &service("db", Some("None")))
            .await
            .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .create(
                &PostParams::default(),
                &slice(
                    "db",
                    &[
                        ("10.244.1.5", true),
                        ("10.244.2.6", true),
                        ("10.244.3.7", false),
                    ],
                ),
            )
            .await
            .unwrap();
        let server = start(&client).await;
        let addr = server.local_addr();

        // ClusterIP.
        let web = until(addr, "web.default.svc.cluster.local.", RecordType::A, |m| {
            !m.answers.is_empty()
        })
        .await;
        assert_eq!(web.metadata.response_code, ResponseCode::NoError);
        assert!(web.metadata.authoritative);
        assert_eq!(answers(&web), [cluster_ip.as_str()]);
        let over_tcp = tcp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(answers(&over_tcp), [cluster_ip.as_str()]);

        // Headless: the ready endpoints only.
        let db = until(addr, "db.default.svc.cluster.local.", RecordType::A, |m| {
            m.answers.len() == 2
        })
        .await;
        assert_eq!(answers(&db), ["10.244.1.5", "10.244.2.6"]);

        // SRV, with the target's address in the additional section.
        let srv = udp(
            addr,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(answers(&srv), ["0 100 80 web.default.svc.cluster.local."]);
        let extra: Vec<String> = srv.additionals.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(extra, [cluster_ip.as_str()]);
        let headless_srv = udp(
            addr,
            "_http._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            answers(&headless_srv),
            [
                "0 50 8080 10-244-1-5.db.default.svc.cluster.local.",
                "0 50 8080 10-244-2-6.db.default.svc.cluster.local."
            ]
        );

        // Unknown in the cluster domain, and outside it.
        let unknown = udp(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(unknown.authorities[0].record_type(), RecordType::SOA);
        let outside = udp(addr, "example.com.", RecordType::A).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        assert!(outside.answers.is_empty());

        server.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_services_and_endpoints_are_answered() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let server = start(&client).await;
        let addr = server.local_addr();
        let name = "api.default.svc.cluster.local.";
        let missing = udp(addr, name, RecordType::A).await;
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);

        // Created: answered.
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let created = services
            .create(&PostParams::default(), &service("api", None))
            .await
            .unwrap();
        let ip = created.spec.unwrap().cluster_ip.unwrap();
        let found = until(addr, name, RecordType::A, |m| !m.answers.is_empty()).await;
        assert_eq!(answers(&found), [ip]);

        // A port renamed: the old SRV name is gone, the new one answers.
        let patch = json!({"spec": {"ports": [{"name": "grpc", "port": 9000, "protocol": "TCP"}]}});
        services
            .patch("api", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let srv = until(
            addr,
            "_grpc._tcp.api.default.svc.cluster.local.",
            RecordType::SRV,
            |m| !m.answers.is_empty(),
        )
        .await;
        assert_eq!(answers(&srv), ["0 100 9000 api.default.svc.cluster.local."]);
        let old = udp(
            addr,
            "_http._tcp.api.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(old.metadata.response_code, ResponseCode::NXDomain);

        // A headless Service's endpoint becoming ready shows up.
        services
            .create(&PostParams::default(), &service("db", Some("None")))
            .await
            .unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        slices
            .create(
                &PostParams::default(),
                &slice("db", &[("10.244.1.5", false)]),
            )
            .await
            .unwrap();
        let db = "db.default.svc.cluster.local.";
        let none_ready = until(addr, db, RecordType::A, |m| {
            m.metadata.response_code == ResponseCode::NoError
        })
        .await;
        assert!(none_ready.answers.is_empty());
        let patch =
            json!({"endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}]});
        slices
            .patch("db-x1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let ready = until(addr, db, RecordType::A, |m| !m.answers.is_empty()).await;
        assert_eq!(answers(&ready), ["10.244.1.5"]);

        // Deleted: NXDOMAIN again.
        services
            .delete("api", &DeleteParams::default())
            .await
            .unwrap();
        until(addr, name, RecordType::A, |m| {
            m.metadata.response_code == ResponseCode::NXDomain
        })
        .await;
        server.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        Api::<Service>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &service("big", Some("None")))
            .await
            .unwrap();
        let ips: Vec<String> = (1..=100).map(|i| format!("10.244.7.{i}")).collect();
        let endpoints: Vec<(&str, bool)> = ips.iter().map(|ip| (ip.as_str(), true)).collect();
        Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &slice("big", &endpoints))
            .await
            .unwrap();
        let server = start(&client).await;
        let addr = server.local_addr();
        let name = "big.default.svc.cluster.local.";
        // Without EDNS a UDP answer holds at most 512 bytes: the client is told to retry
        // over TCP.
        let udp_answer = until(addr, name, RecordType::A, |m| !m.answers.is_empty()).await;
        assert!(udp_answer.metadata.truncation);
        assert!(udp_answer.answers.len() < 100);
        let tcp_answer = tcp(addr, name, RecordType::A).await;
        assert!(!tcp_answer.metadata.truncation);
        assert_eq!(tcp_answer.answers.len(), 100);
        server.shutdown().await.unwrap();
    })
    .await
}
