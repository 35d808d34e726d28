//! The cluster DNS server answering Debian's `dig` run inside a pod-like network namespace:
//! the server listens on the host end of a veth pair, `dig` asks from the other end.
//!
//! Needs root, `ip` (iproute2) and `dig` (dnsutils); `scripts/test` installs them
//! (`scripts/lib-net-dns.sh`).
#![cfg(feature = "test-dns")]

mod support;

use std::net::{IpAddr, SocketAddr};

use capstan_api::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::Api;
use capstan_net::dns::hickory::DnsServer;
use capstan_net::dns::{ClusterDns, DEFAULT_DOMAIN};
use capstan_watch::{InformerFactory, ReflectorOptions};
use support::{sh, unique, within, Netns, LIMIT};

fn require_tools() {
    for (tool, package) in [("dig", "dnsutils"), ("ip", "iproute2")] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: install Debian's {package}, or run the tests through \
             scripts/test, which does (scripts/lib-net-dns.sh)"
        );
    }
}

/// A veth pair from the host into `ns`, deleted when dropped.
struct Veth {
    host: String,
}

impl Veth {
    fn new(ns: &Netns, host_ip: &str, peer_ip: &str) -> Self {
        let host = unique("cdns");
        let run = |args: &[&str]| {
            let out = sh(args);
            assert!(
                out.status.success(),
                "{args:?} failed (the dns tests need root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        let veth = Veth { host };
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &veth.host,
        ]);
        run(&["ip", "link", "set", &veth.host, "up"]);
        run(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{peer_ip}/30"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns.name, "link", "set", "eth0", "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host]);
    }
}

/// Runs `dig` in `ns` against `server` (off the async workers) and returns its stdout.
async fn dig(ns: &Netns, server: SocketAddr, args: &[&str]) -> String {
    let mut all: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &ns.name,
        "dig",
        &format!("@{}", server.ip()),
        "-p",
        &server.port().to_string(),
        "+time=2",
        "+tries=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        sh(&args)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "dig failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_in_a_pod_namespace_resolves_a_service_to_its_cluster_ip() {
    require_tools();
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let service = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let created = Api::<Service>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &service)
            .await
            .unwrap();
        let cluster_ip = created.spec.unwrap().cluster_ip.unwrap();

        let pod = Netns::new("cdnspod-");
        let _veth = Veth::new(&pod, "192.168.254.1", "192.168.254.2");
        let factory = InformerFactory::new(client.clone(), ReflectorOptions::default());
        let dns = ClusterDns::new(&factory, DEFAULT_DOMAIN).unwrap();
        dns.wait_for_sync().await;
        let host: IpAddr = "192.168.254.1".parse().unwrap();
        let server = DnsServer::bind(dns, SocketAddr::new(host, 0))
            .await
            .unwrap();
        let addr = server.local_addr();

        let name = "web.default.svc.cluster.local";
        assert_eq!(dig(&pod, addr, &[name, "+short"]).await, cluster_ip);
        assert_eq!(dig(&pod, addr, &[name, "+short", "+tcp"]).await, cluster_ip);
        assert_eq!(
            dig(
                &pod,
                addr,
                &["_http._tcp.web.default.svc.cluster.local", "SRV", "+short"]
            )
            .await,
            "0 100 80 web.default.svc.cluster.local."
        );
        let unknown = dig(&pod, addr, &["nope.default.svc.cluster.local"]).await;
        assert!(unknown.contains("status: NXDOMAIN"), "{unknown}");
        let outside = dig(&pod, addr, &["example.com"]).await;
        assert!(outside.contains("status: REFUSED"), "{outside}");

        server.shutdown().await.unwrap();
    })
    .await
}
