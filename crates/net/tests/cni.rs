//! The CNI backend against Debian's real plugins (`containernetworking-plugins`), inside
//! network namespaces this test creates and always deletes.
//!
//! Needs root, `ip` (iproute2), `ping` (iputils-ping) and the plugin binaries in
//! `CAPSTAN_CNI_PATH` (default `/usr/lib/cni`); `scripts/test` installs and exports them.
//! Each test runs its plugins inside its own "node" namespace (`CniNetworkBuilder::node_netns`),
//! so bridges and host-side veths never touch the host and tests run in parallel.
#![cfg(feature = "test-cni")]

mod support;

use std::time::Duration;

use capstan_net::cni::{CniNetwork, NetworkConfig};
use capstan_net::{NetError, NetworkPlugin};
use serde_json::json;
use support::{plugin_dir, pod_attachment, sh, within, Netns, Node, LIMIT, NETWORK};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_get_addresses_from_the_range_and_ping_each_other_across_the_bridge() {
    within(LIMIT, async {
        let node = Node::new();
        let network = node.network(json!([node.bridge_plugin("10.250.1.0/24")]));
        network.status().await.unwrap();
        let (ns_a, ns_b) = (Netns::new("cpod-"), Netns::new("cpod-"));
        let (a, b) = (pod_attachment(&ns_a), pod_attachment(&ns_b));
        let result_a = network.add(&a).await.unwrap();
        let result_b = network.add(&b).await.unwrap();
        let (ip_a, ip_b) = (result_a.pod_ips()[0], result_b.pod_ips()[0]);
        let range: ipnet::IpNet = "10.250.1.0/24".parse().unwrap();
        assert!(range.contains(&ip_a) && range.contains(&ip_b) && ip_a != ip_b);
        assert_eq!(result_a.ips[0].gateway, Some("10.250.1.1".parse().unwrap()));
        assert!(result_a.interfaces.iter().any(|i| i.name == node.bridge));
        assert!(result_a
            .interfaces
            .iter()
            .any(|i| i.name == "eth0" && i.sandbox == ns_a.path().display().to_string()));
        assert_eq!(node.allocated(), {
            let mut both = vec![ip_a, ip_b];
            both.sort();
            both
        });
        assert!(node.ns.has_link(&node.bridge));
        assert!(
            !sh(&["ip", "link", "show", &node.bridge]).status.success(),
            "host untouched"
        );

        for (from, to) in [(&ns_a, ip_b), (&ns_b, ip_a)] {
            let out = from.exec(&["ping", "-c1", "-W2", &to.to_string()]);
            assert!(
                out.status.success(),
                "ping {to} from {} failed: {}{}",
                from.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        network.check(&a).await.unwrap();

        network.del(&a).await.unwrap();
        network.del(&b).await.unwrap();
        assert!(node.allocated().is_empty());
        assert!(
            node.ns.links("veth").is_empty(),
            "{:?}",
            node.ns.links("veth")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_frees_the_address_and_may_be_repeated_even_after_the_namespace_is_gone() {
    within(LIMIT, async {
        let node = Node::new();
        let network = node.network(json!([node.bridge_plugin("10.250.2.0/29")]));
        let ns = Netns::new("cpod-");
        let pod = pod_attachment(&ns);
        let first = network.add(&pod).await.unwrap().pod_ips()[0];
        assert_eq!(node.allocated(), [first]);
        assert!(ns.has_link("eth0"));
        network.del(&pod).await.unwrap();
        assert!(node.allocated().is_empty(), "{:?}", node.allocated());
        assert!(!ns.has_link("eth0"));
        network.del(&pod).await.unwrap();
        let err = network.check(&pod).await.unwrap_err();
        assert!(matches!(err, NetError::CheckFailed { .. }), "{err}");

        // A /29 has five addresses for pods: adding and deleting more than that only works
        // if DEL really frees them.
        let mut seen = vec![first];
        for _ in 0..6 {
            let result = network.add(&pod).await.unwrap();
            seen.push(result.pod_ips()[0]);
            assert_eq!(node.allocated().len(), 1);
            network.del(&pod).await.unwrap();
        }
        assert!(
            seen.iter().filter(|ip| **ip == first).count() >= 2,
            "{seen:?}"
        );

        // DEL after the pod's namespace is gone still frees the address.
        let gone = Netns::new("cpod-");
        let orphan = pod_attachment(&gone);
        network.add(&orphan).await.unwrap();
        drop(gone);
        network.del(&orphan).await.unwrap();
        network.del(&orphan).await.unwrap();
        assert!(node.allocated().is_empty());
        // The kernel destroys a deleted namespace, and the veth pair with it, asynchronously.
        for _ in 0..100 {
            if node.ns.links("veth").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            node.ns.links("veth").is_empty(),
            "{:?}",
            node.ns.links("veth")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_plugin_type_fails_before_anything_is_set_up() {
    within(LIMIT, async {
        let node = Node::new();
        let network = node.network(json!([
            node.bridge_plugin("10.250.3.0/24"),
            {"type": "no-such-plugin"}
        ]));
        let ns = Netns::new("cpod-");
        let err = network.add(&pod_attachment(&ns)).await.unwrap_err();
        assert!(matches!(err, NetError::PluginNotFound { ref plugin, .. } if plugin == "no-such-plugin"), "{err}");
        assert!(matches!(network.status().await, Err(NetError::PluginNotFound { .. })));
        assert!(node.allocated().is_empty());
        assert!(node.ns.links("veth").is_empty());
        assert!(!ns.has_link("eth0"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_whose_second_plugin_fails_is_undone_and_reports_the_cni_error() {
    within(LIMIT, async {
        let node = Node::new();
        node.script_plugin(
            "refuse",
            r#"if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.0.0","code":101,"msg":"policy refused","details":"no egress"}'
  exit 1
fi"#,
        );
        let network = node.network(json!([
            node.bridge_plugin("10.250.4.0/24"),
            {"type": "refuse"}
        ]));
        let ns = Netns::new("cpod-");
        let pod = pod_attachment(&ns);
        let err = network.add(&pod).await.unwrap_err();
        match &err {
            NetError::PluginFailed {
                plugin,
                code,
                message,
                details,
            } => {
                assert_eq!((plugin.as_str(), *code), ("refuse", 101));
                assert_eq!(
                    (message.as_str(), details.as_str()),
                    ("policy refused", "no egress")
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert!(node.allocated().is_empty(), "{:?}", node.allocated());
        assert!(
            node.ns.links("veth").is_empty(),
            "{:?}",
            node.ns.links("veth")
        );
        assert!(!ns.has_link("eth0"));
        assert!(network
            .cached_result(&pod.container_id, "eth0")
            .unwrap()
            .is_none());

        // A working list on the same node can then use the range from the start.
        let working = node.network(json!([node.bridge_plugin("10.250.4.0/24")]));
        let ip = working.add(&pod).await.unwrap().pod_ips()[0];
        assert_eq!(node.allocated(), [ip]);
        working.del(&pod).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_spec_0_4_0_from_the_debian_plugins_are_understood() {
    within(LIMIT, async {
        let node = Node::new();
        let config = NetworkConfig::from_value(json!({
            "name": NETWORK, "cniVersion": "0.4.0",
            "plugins": [node.bridge_plugin("10.250.5.0/24")]
        }))
        .unwrap();
        let network = CniNetwork::builder(config)
            .plugin_dirs([plugin_dir()])
            .cache_dir(node.dir.join("cache"))
            .node_netns(node.ns.name.clone())
            .build();
        network.status().await.unwrap();
        let ns = Netns::new("cpod-");
        let pod = pod_attachment(&ns);
        let result = network.add(&pod).await.unwrap();
        assert_eq!(result.cni_version, "0.4.0");
        assert_eq!(result.ips[0].gateway, Some("10.250.5.1".parse().unwrap()));
        network.check(&pod).await.unwrap();
        network.del(&pod).await.unwrap();
        assert!(node.allocated().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_mappings_reach_the_portmap_plugin_and_del_removes_its_rules() {
    within(LIMIT, async {
        let node = Node::new();
        let network = node.network(json!([
            node.bridge_plugin("10.250.6.0/24"),
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
        ]));
        let ns = Netns::new("cpod-");
        let mut pod = pod_attachment(&ns);
        pod.port_mappings = vec![capstan_net::PortMapping {
            host_port: 18080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let nat_rules = || {
            let out = node.ns.exec(&["iptables", "-t", "nat", "-S"]);
            assert!(
                out.status.success(),
                "iptables failed (install iptables; scripts/test does): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let ip = network.add(&pod).await.unwrap().pod_ips()[0];
        let rules = nat_rules();
        assert!(
            rules
                .lines()
                .any(|l| l.contains("--dport 18080")
                    && l.contains(&format!("--to-destination {ip}:80"))),
            "{rules}"
        );
        // No CHECK here: portmap v1.1.1's CHECK looks for an IPv6 chain it never made.
        network.del(&pod).await.unwrap();
        let rules = nat_rules();
        assert!(!rules.contains("18080"), "{rules}");
        assert!(node.allocated().is_empty());
    })
    .await;
}
