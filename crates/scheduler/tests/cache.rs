//! The node snapshot, the assume cache and NodeInfo accounting.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_scheduler::cache::{Cache, Snapshot};
use capstan_scheduler::framework::{pod_key, NodeInfo};
use capstan_scheduler::k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use capstan_scheduler::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_scheduler::k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

fn node(name: &str, cpu: &str, mem: &str, pods: &str) -> Arc<Node> {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    let alloc: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", mem), ("pods", pods)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
        .collect();
    n.status = Some(NodeStatus {
        allocatable: Some(alloc),
        ..Default::default()
    });
    Arc::new(n)
}

fn pod(name: &str, node: Option<&str>, cpu: Option<&str>, host_port: Option<i32>) -> Arc<Pod> {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    let requests = cpu.map(|c| [("cpu".to_owned(), Quantity(c.to_owned()))].into());
    p.spec = Some(PodSpec {
        node_name: node.map(str::to_owned),
        containers: vec![Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests,
                ..Default::default()
            }),
            ports: host_port.map(|hp| {
                vec![ContainerPort {
                    container_port: 80,
                    host_port: Some(hp),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    Arc::new(p)
}

#[test]
fn node_info_counts_requests_defaults_and_host_ports() {
    let mut info = NodeInfo::new(node("n1", "4", "8Gi", "110"));
    assert_eq!(info.allocatable().milli_cpu, 4000);
    assert_eq!(info.allocatable().memory, 8 << 30);
    assert_eq!(info.allocatable().allowed_pods, 110);
    let g = info.generation();
    info.add_pod(pod("a", Some("n1"), Some("500m"), Some(8080)));
    info.add_pod(pod("b", Some("n1"), None, None));
    assert!(info.generation() > g);
    assert_eq!(info.requested().milli_cpu, 500);
    assert_eq!(info.requested().memory, 0);
    assert_eq!(info.non_zero_requested().milli_cpu, 600);
    assert_eq!(info.non_zero_requested().memory, 2 * 200 * 1024 * 1024);
    assert_eq!(
        info.used_ports(),
        &[("0.0.0.0".to_owned(), "TCP".to_owned(), 8080)]
    );
    assert!(info.remove_pod("default/a"));
    assert!(!info.remove_pod("default/a"));
    assert_eq!(info.requested().milli_cpu, 0);
    assert!(info.used_ports().is_empty());
    assert_eq!(info.pods().len(), 1);
}

#[test]
fn node_info_counts_live_pods_per_controller() {
    let controlled = |name: &str, uid: &str, terminating: bool| {
        let mut p = Arc::unwrap_or_clone(pod(name, Some("n1"), None, None));
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        if terminating {
            p.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        Arc::new(p)
    };
    let mut info = NodeInfo::new(node("n1", "4", "8Gi", "110"));
    info.add_pod(controlled("a", "rs-1", false));
    info.add_pod(controlled("b", "rs-1", false));
    info.add_pod(controlled("c", "rs-2", false));
    info.add_pod(controlled("d", "rs-1", true));
    info.add_pod(pod("bare", Some("n1"), None, None));
    assert_eq!(
        info.pods_controlled_by("rs-1"),
        2,
        "the terminating one is left out"
    );
    assert_eq!(info.pods_controlled_by("rs-2"), 1);
    assert_eq!(info.pods_controlled_by("rs-3"), 0);
    assert!(info.remove_pod("default/a"));
    assert!(info.remove_pod("default/d"));
    assert_eq!(info.pods_controlled_by("rs-1"), 1);
    assert!(info.remove_pod("default/c"));
    assert_eq!(info.pods_controlled_by("rs-2"), 0);
}

#[test]
fn an_assumed_pod_counts_at_once_and_is_forgotten_when_binding_fails() {
    let cache = Cache::new();
    cache.add_node(node("n1", "2", "1Gi", "10"));
    let mut snap = Snapshot::default();
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.get("n1").unwrap().requested().milli_cpu, 0);

    let p = pod("a", Some("n1"), Some("1"), None);
    cache.assume_pod(p.clone()).unwrap();
    assert!(cache.is_assumed("default/a"));
    assert!(cache.assume_pod(p.clone()).is_err(), "assumed twice");
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.get("n1").unwrap().requested().milli_cpu, 1000);

    cache.forget_pod("default/a");
    assert!(!cache.is_assumed("default/a"));
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.get("n1").unwrap().requested().milli_cpu, 0);
}

#[test]
fn the_informer_confirms_an_assumed_pod_which_then_is_not_forgotten() {
    let cache = Cache::new();
    cache.add_node(node("n1", "2", "1Gi", "10"));
    let p = pod("a", Some("n1"), Some("1"), None);
    cache.assume_pod(p.clone()).unwrap();
    cache.finish_binding(&pod_key(&p));
    cache.add_pod(p.clone());
    assert!(!cache.is_assumed("default/a"));
    cache.forget_pod("default/a");
    assert_eq!(cache.pod_node("default/a").as_deref(), Some("n1"));
    let mut snap = Snapshot::default();
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.get("n1").unwrap().pods().len(), 1);
    cache.remove_pod("default/a");
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.get("n1").unwrap().pods().len(), 0);
}

#[test]
fn a_snapshot_update_copies_only_the_changed_nodes() {
    let cache = Cache::new();
    for i in 0..3 {
        cache.add_node(node(&format!("n{i}"), "2", "1Gi", "10"));
    }
    let mut snap = Snapshot::default();
    cache.update_snapshot(&mut snap);
    let names: Vec<_> = snap.nodes().iter().map(|n| n.name().to_owned()).collect();
    assert_eq!(names, ["n0", "n1", "n2"]);
    let before: Vec<_> = snap.nodes().to_vec();

    cache.add_pod(pod("a", Some("n1"), Some("1"), None));
    cache.update_snapshot(&mut snap);
    assert!(Arc::ptr_eq(&before[0], &snap.nodes()[0]));
    assert!(!Arc::ptr_eq(&before[1], &snap.nodes()[1]));
    assert!(Arc::ptr_eq(&before[2], &snap.nodes()[2]));
    // The old snapshot's NodeInfo was not changed underneath it (copy on write).
    assert_eq!(before[1].requested().milli_cpu, 0);
    assert_eq!(snap.nodes()[1].requested().milli_cpu, 1000);
}

#[test]
fn nodes_added_and_removed_change_the_snapshot_and_pods_on_unknown_nodes_wait() {
    let cache = Cache::new();
    cache.add_pod(pod("early", Some("n9"), Some("1"), None));
    cache.add_node(node("n1", "2", "1Gi", "10"));
    let mut snap = Snapshot::default();
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.len(), 1);
    assert_eq!(cache.node_count(), 1);
    cache.add_node(node("n9", "2", "1Gi", "10"));
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.len(), 2);
    assert_eq!(snap.get("n9").unwrap().requested().milli_cpu, 1000);
    cache.remove_node("n1");
    cache.update_snapshot(&mut snap);
    assert_eq!(snap.len(), 1);
    assert!(snap.get("n1").is_none());
    // A pod without a node is not the cache's business.
    cache.add_pod(pod("pending", None, None, None));
    assert_eq!(cache.pod_node("default/pending"), None);
}
