//! A compact live view of the cluster: one line per node with its Pods by phase, then the
//! Pods of the watched namespace, redrawn in place on a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use capstan_api::ext::{MetaExt, NodeExt};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};

/// Renders the table of `nodes` and `pods`: at most `max_pods` Pod lines (the rest counted).
pub fn render(nodes: &[Node], pods: &[Pod], max_pods: usize) -> String {
    let mut per_node: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("<unscheduled>");
        *per_node
            .entry(node)
            .or_default()
            .entry(phase(pod))
            .or_default() += 1;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<9} {:<15} PODS",
        "NODE", "STATUS", "POD CIDR"
    );
    for node in nodes {
        let name = node.name_str();
        let status = if node.is_ready() { "Ready" } else { "NotReady" };
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .unwrap_or("-");
        let _ = writeln!(
            out,
            "{name:<12} {status:<9} {cidr:<15} {}",
            counts(per_node.get(name))
        );
    }
    if let Some(unscheduled) = per_node.get("<unscheduled>") {
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:<15} {}",
            "(none)",
            "",
            "",
            counts(Some(unscheduled))
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<30} {:<12} {:<8} {:<13} IMAGE",
        "POD", "STATUS", "NODE", "IP"
    );
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.name_str());
    for pod in sorted.iter().take(max_pods) {
        let status = pod.status.as_ref();
        let _ = writeln!(
            out,
            "{:<30} {:<12} {:<8} {:<13} {}",
            pod.name_str(),
            if pod.metadata.deletion_timestamp.is_some() {
                "Terminating"
            } else {
                phase(pod)
            },
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("-"),
            status.and_then(|s| s.pod_ip.as_deref()).unwrap_or("-"),
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                .unwrap_or_default()
        );
    }
    if sorted.len() > max_pods {
        let _ = writeln!(out, "... and {} more", sorted.len() - max_pods);
    }
    out
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn counts(phases: Option<&BTreeMap<&str, usize>>) -> String {
    match phases {
        None => "0".into(),
        Some(phases) => phases
            .iter()
            .map(|(phase, n)| format!("{n} {phase}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, cidr: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, phase: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "luksa/kubia:v2"}]},
            "status": {"phase": phase, "podIP": "10.244.1.2"},
        }))
        .unwrap()
    }

    #[test]
    fn nodes_show_readiness_cidr_and_their_pods_by_phase() {
        let table = render(
            &[
                node("node01", true, Some("10.244.0.0/24")),
                node("node02", false, None),
            ],
            &[
                pod("a", Some("node01"), Some("Running")),
                pod("b", Some("node01"), Some("Running")),
                pod("c", Some("node01"), None),
                pod("d", None, None),
            ],
            10,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("node01"), "{table}");
        assert!(
            lines[1].contains("Ready") && lines[1].contains("10.244.0.0/24"),
            "{table}"
        );
        assert!(lines[1].ends_with("1 Pending, 2 Running"), "{table}");
        assert!(
            lines[2].contains("NotReady") && lines[2].ends_with(" 0"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("(none)") && lines[3].ends_with("1 Pending"),
            "{table}"
        );
    }

    #[test]
    fn pods_beyond_the_limit_are_counted_not_listed() {
        let pods: Vec<Pod> = (0..5)
            .map(|i| pod(&format!("p{i}"), Some("node01"), Some("Running")))
            .collect();
        let table = render(&[], &pods, 2);
        assert!(
            table.contains("p0") && table.contains("p1") && !table.contains("p2 "),
            "{table}"
        );
        assert!(table.ends_with("... and 3 more\n"), "{table}");
    }
}
