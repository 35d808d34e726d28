//! Host-gw routing between two simulated nodes: each node is a network namespace with a bridge
//! and pods wired by Debian's real CNI plugins, the nodes share a veth link, their pod CIDRs
//! come from `ClusterCidr`, and `RouteSync` installs the routes between them.
//!
//! Needs what `tests/cni.rs` needs (root, `ip`, `ping`, `CAPSTAN_CNI_PATH`; see
//! `scripts/test`).
#![cfg(feature = "test-cni")]

mod support;

use capstan_net::ipam::ClusterCidr;
use capstan_net::routes::{host_gw_routes, HostRoute, NodeAddressing, RouteError, RouteSync};
use capstan_net::{IpNet, NetworkPlugin};
use serde_json::json;
use support::{pod_attachment, sh, within, Netns, Node, LIMIT};

/// Connects two nodes with a veth pair (`link0` in each) addressed `ip_a` and `ip_b` in /24.
fn connect(a: &Node, b: &Node, ip_a: &str, ip_b: &str) {
    let run = |args: &[&str]| {
        let out = sh(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (na, nb) = (a.ns.name.as_str(), b.ns.name.as_str());
    run(&[
        "ip", "-n", na, "link", "add", "link0", "type", "veth", "peer", "name", "link0", "netns",
        nb,
    ]);
    for (ns, ip) in [(na, ip_a), (nb, ip_b)] {
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "link0",
        ]);
        run(&["ip", "-n", ns, "link", "set", "link0", "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }
}

fn pings(from: &Netns, to: std::net::IpAddr) -> bool {
    from.exec(&["ping", "-c1", "-W2", &to.to_string()])
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_one_node_reaches_a_pod_on_another_through_host_gw_routes() {
    within(LIMIT, async {
        let (node_a, node_b) = (Node::new(), Node::new());
        connect(&node_a, &node_b, "192.168.251.1", "192.168.251.2");
        let (mut cidrs, rejected) = ClusterCidr::restore(
            "10.251.0.0/16".parse().unwrap(),
            24,
            [("node-a", None), ("node-b", None)],
        )
        .unwrap();
        assert!(rejected.is_empty());
        let cidr_a = cidrs.allocate("node-a").unwrap();
        let cidr_b = cidrs.allocate("node-b").unwrap();
        assert_ne!(cidr_a, cidr_b);

        let net_a = node_a.network(json!([node_a.bridge_plugin(&cidr_a.to_string())]));
        let net_b = node_b.network(json!([node_b.bridge_plugin(&cidr_b.to_string())]));
        let (pod_a, pod_b) = (Netns::new("cpod-"), Netns::new("cpod-"));
        let ip_a = net_a.add(&pod_attachment(&pod_a)).await.unwrap().pod_ips()[0];
        let ip_b = net_b.add(&pod_attachment(&pod_b)).await.unwrap().pod_ips()[0];
        assert!(cidr_a.contains(&ip_a) && cidr_b.contains(&ip_b));
        assert!(!pings(&pod_a, ip_b), "no route yet, so no reply");

        let nodes = vec![
            NodeAddressing {
                name: "node-a".into(),
                node_ip: "192.168.251.1".parse().unwrap(),
                pod_cidr: cidrs.get("node-a"),
            },
            NodeAddressing {
                name: "node-b".into(),
                node_ip: "192.168.251.2".parse().unwrap(),
                pod_cidr: cidrs.get("node-b"),
            },
        ];
        let sync_a = RouteSync::new().in_netns(node_a.ns.name.clone());
        let sync_b = RouteSync::new().in_netns(node_b.ns.name.clone());
        let routes_a = host_gw_routes("node-a", &nodes);
        assert_eq!(
            routes_a,
            [HostRoute {
                dst: cidr_b,
                via: "192.168.251.2".parse().unwrap()
            }]
        );
        let report = sync_a.sync(&routes_a).await.unwrap();
        assert_eq!(report.replaced, routes_a);
        sync_b
            .sync(&host_gw_routes("node-b", &nodes))
            .await
            .unwrap();

        assert!(
            pings(&pod_a, ip_b),
            "pod on node A cannot reach {ip_b} on node B"
        );
        assert!(
            pings(&pod_b, ip_a),
            "pod on node B cannot reach {ip_a} on node A"
        );

        // Syncing again changes nothing; the routes are in the table, tagged as ours.
        let again = sync_a.sync(&routes_a).await.unwrap();
        assert!(
            again.replaced.is_empty() && again.removed.is_empty(),
            "{again:?}"
        );
        assert_eq!(sync_a.current().await.unwrap(), routes_a);

        // Node B goes away: its CIDR is released and node A's route to it removed, while a
        // route someone else made stays.
        sh(&[
            "ip",
            "-n",
            &node_a.ns.name,
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "192.168.251.2",
        ]);
        assert_eq!(cidrs.release("node-b"), Some(cidr_b));
        let report = sync_a
            .sync(&host_gw_routes("node-a", &nodes[..1]))
            .await
            .unwrap();
        assert_eq!(report.removed, routes_a);
        assert!(sync_a.current().await.unwrap().is_empty());
        let table = sh(&["ip", "-n", &node_a.ns.name, "route", "show"]);
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(table.contains("10.99.0.0/24 via 192.168.251.2"), "{table}");
        assert!(!table.contains(&cidr_b.to_string()), "{table}");
        assert!(!pings(&pod_a, ip_b));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_via_an_unreachable_node_is_a_command_error_naming_it() {
    within(LIMIT, async {
        let node = Node::new();
        let sync = RouteSync::new().in_netns(node.ns.name.clone());
        let wanted = [HostRoute {
            dst: "10.252.0.0/24".parse::<IpNet>().unwrap(),
            via: "192.168.252.9".parse().unwrap(),
        }];
        let err = sync.sync(&wanted).await.unwrap_err();
        match &err {
            RouteError::Command { command, stderr } => {
                assert!(
                    command.contains("route replace 10.252.0.0/24 via 192.168.252.9"),
                    "{err}"
                );
                assert!(!stderr.is_empty());
            }
            other => panic!("unexpected {other}"),
        }
        assert!(sync.current().await.unwrap().is_empty());
        let missing = RouteSync::new().in_netns("capstan-no-such-netns");
        assert!(matches!(
            missing.current().await,
            Err(RouteError::Command { .. })
        ));
    })
    .await;
}
