//! Table-driven tests of the default plugins.

use std::sync::Arc;

use capstan_scheduler::framework::*;
use capstan_scheduler::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_scheduler::plugins::*;
use serde_json::{json, Value};

fn node(v: Value) -> NodeInfo {
    let mut v = v;
    if v.pointer("/metadata/name").is_none() {
        v["metadata"]["name"] = json!("n1");
    }
    NodeInfo::new(Arc::new(serde_json::from_value::<Node>(v).unwrap()))
}

fn pod(spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}))
        .unwrap()
}

fn filter(p: &dyn FilterPlugin, pod: &Pod, node: &NodeInfo) -> Status {
    p.filter(&CycleState::new(), pod, node)
}

#[test]
fn node_name_fits_only_the_named_node() {
    let n = node(json!({}));
    let cases = [
        (json!({}), true),
        (json!({"nodeName": "n1"}), true),
        (json!({"nodeName": "n2"}), false),
    ];
    for (spec, fits) in cases {
        let s = filter(&NodeName, &pod(spec.clone()), &n);
        assert_eq!(s.is_success(), fits, "{spec}");
        if !fits {
            assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
            assert_eq!(s.to_string(), ERR_REASON_NODE_NAME);
        }
    }
}

#[test]
fn node_unschedulable_rejects_cordoned_nodes_unless_tolerated() {
    let tol = json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]});
    let cases = [
        (json!({}), json!({}), true),
        (json!({"unschedulable": false}), json!({}), true),
        (json!({"unschedulable": true}), json!({}), false),
        (json!({"unschedulable": true}), tol, true),
    ];
    for (node_spec, pod_spec, fits) in cases {
        let s = filter(
            &NodeUnschedulable,
            &pod(pod_spec.clone()),
            &node(json!({"spec": node_spec})),
        );
        assert_eq!(s.is_success(), fits, "{node_spec} {pod_spec}");
    }
}

fn required(exprs: Value) -> Value {
    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": exprs}}}})
}

#[test]
fn node_affinity_filters_by_selector_and_required_terms() {
    let n = node(
        json!({"metadata": {"name": "node02", "labels": {"gpu": "true", "zone": "a", "cores": "8"}}}),
    );
    let cases = [
        ("no constraints", json!({}), true),
        (
            "selector matches",
            json!({"nodeSelector": {"gpu": "true"}}),
            true,
        ),
        (
            "selector value differs",
            json!({"nodeSelector": {"gpu": "false"}}),
            false,
        ),
        (
            "selector label missing",
            json!({"nodeSelector": {"ssd": "true"}}),
            false,
        ),
        (
            "In",
            required(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
            ),
            true,
        ),
        (
            "NotIn",
            required(
                json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
            ),
            false,
        ),
        (
            "Exists",
            required(json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}])),
            true,
        ),
        (
            "DoesNotExist",
            required(json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])),
            false,
        ),
        (
            "Gt",
            required(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]),
            ),
            true,
        ),
        (
            "Lt",
            required(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}]),
            ),
            false,
        ),
        (
            "terms are ORed",
            required(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ])),
            true,
        ),
        (
            "metadata.name field",
            required(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node02"]}]}]),
            ),
            true,
        ),
        (
            "other name",
            required(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node01"]}]}]),
            ),
            false,
        ),
        (
            "an empty term matches nothing",
            required(json!([{}])),
            false,
        ),
    ];
    for (name, spec, fits) in cases {
        let s = filter(&NodeAffinity, &pod(spec), &n);
        assert_eq!(s.is_success(), fits, "{name}");
        if !fits {
            assert_eq!(s.to_string(), ERR_REASON_POD, "{name}");
            assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        }
    }
}

fn scores(p: &dyn ScorePlugin, pod: &Pod, nodes: &[NodeInfo]) -> Vec<i64> {
    let state = CycleState::new();
    let mut s: Vec<NodeScore> = nodes
        .iter()
        .map(|n| NodeScore {
            name: n.name().to_owned(),
            score: p.score(&state, pod, n).unwrap(),
        })
        .collect();
    assert!(p.normalize_score(&state, pod, &mut s).is_success());
    s.into_iter().map(|s| s.score).collect()
}

#[test]
fn node_affinity_scores_preferred_terms_by_weight_normalized_to_100() {
    let p = pod(
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 6, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}
        ]}}}),
    );
    let nodes = [
        node(json!({"metadata": {"name": "a", "labels": {"zone": "a"}}})),
        node(json!({"metadata": {"name": "b", "labels": {"zone": "a", "gpu": "x"}}})),
        node(json!({"metadata": {"name": "c"}})),
    ];
    assert_eq!(scores(&NodeAffinity, &p, &nodes), [25, 100, 0]);
    assert!(NodeAffinity
        .pre_score(&mut CycleState::new(), &pod(json!({})), &[])
        .is_skip());
}

#[test]
fn taint_toleration_filters_hard_taints() {
    let taints = |t: Value| node(json!({"spec": {"taints": t}}));
    let cases = [
        ("no taints", json!([]), json!({}), true),
        (
            "NoSchedule",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            json!({}),
            false,
        ),
        (
            "NoExecute",
            json!([{"key": "k", "effect": "NoExecute"}]),
            json!({}),
            false,
        ),
        (
            "PreferNoSchedule only scores",
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
            json!({}),
            true,
        ),
        (
            "Equal toleration",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]}),
            true,
        ),
        (
            "wrong value",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            json!({"tolerations": [{"key": "k", "value": "w"}]}),
            false,
        ),
        (
            "wrong effect",
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            json!({"tolerations": [{"key": "k", "value": "v", "effect": "NoExecute"}]}),
            false,
        ),
        (
            "Exists without key tolerates all",
            json!([{"key": "k", "effect": "NoExecute"}]),
            json!({"tolerations": [{"operator": "Exists"}]}),
            true,
        ),
    ];
    for (name, t, spec, fits) in cases {
        let s = filter(&TaintToleration, &pod(spec), &taints(t));
        assert_eq!(s.is_success(), fits, "{name}");
    }
    let s = filter(
        &TaintToleration,
        &pod(json!({})),
        &taints(json!([{"key": "k", "value": "v", "effect": "NoSchedule"}])),
    );
    assert_eq!(s.to_string(), "node(s) had untolerated taint {k: v}");
}

#[test]
fn taint_toleration_prefers_nodes_with_fewer_untolerated_soft_taints() {
    let nodes = [
        node(json!({"metadata": {"name": "clean"}})),
        node(
            json!({"metadata": {"name": "one"}, "spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}}),
        ),
        node(json!({"metadata": {"name": "two"}, "spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]}})),
    ];
    assert_eq!(
        scores(&TaintToleration, &pod(json!({})), &nodes),
        [100, 50, 0]
    );
    let tolerating = pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}]}));
    assert_eq!(scores(&TaintToleration, &tolerating, &nodes), [100, 100, 0]);
}

fn sized(name: &str, cpu: &str, mem: &str, pods: &str) -> NodeInfo {
    node(
        json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods}}}),
    )
}

fn requesting(cpu: &str, mem: &str) -> Pod {
    pod(
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
    )
}

#[test]
fn node_resources_fit_compares_requests_with_what_is_left() {
    let mut busy = sized("busy", "2", "4Gi", "2");
    busy.add_pod(Arc::new(requesting("1500m", "1Gi")));
    let cases: [(&str, NodeInfo, Pod, &[&str]); 6] = [
        (
            "fits",
            sized("n", "2", "4Gi", "10"),
            requesting("1", "1Gi"),
            &[],
        ),
        (
            "exactly fits",
            sized("n", "2", "4Gi", "10"),
            requesting("2", "4Gi"),
            &[],
        ),
        (
            "cpu",
            busy.clone(),
            requesting("600m", "1Gi"),
            &["Insufficient cpu"],
        ),
        (
            "memory",
            busy.clone(),
            requesting("100m", "4Gi"),
            &["Insufficient memory"],
        ),
        (
            "both",
            busy.clone(),
            requesting("1", "4Gi"),
            &["Insufficient cpu", "Insufficient memory"],
        ),
        (
            "pod count",
            sized("n", "2", "4Gi", "0"),
            requesting("1m", "1"),
            &["Too many pods"],
        ),
    ];
    for (name, n, p, want) in cases {
        let s = filter(&NodeResourcesFit, &p, &n);
        assert_eq!(s.reasons().collect::<Vec<_>>(), want, "{name}");
        if !want.is_empty() {
            assert_eq!(s.code(), Code::Unschedulable, "{name}");
        }
    }
}

#[test]
fn least_allocated_and_balanced_allocation_score_like_kubernetes() {
    let n = sized("n", "4", "8Gi", "10");
    let p = requesting("1", "2Gi");
    // CPU (4000 - 1000) / 4000 = 75, memory (8 - 2) / 8 = 75.
    assert_eq!(
        scores(&NodeResourcesFit, &p, std::slice::from_ref(&n)),
        [75]
    );
    // Fractions 0.25 and 0.5: std 0.125, so (1 - 0.125) * 100 = 87.
    let p = requesting("1", "4Gi");
    assert_eq!(
        scores(&BalancedAllocation, &p, std::slice::from_ref(&n)),
        [87]
    );
    // No requests count as 100m and 200Mi when scoring.
    let empty = pod(json!({}));
    let s = NodeResourcesFit
        .score(&CycleState::new(), &empty, &n)
        .unwrap();
    assert_eq!(
        s,
        ((4000 - 100) * 100 / 4000 + (8192 - 200) * 100 / 8192) / 2
    );
}

#[test]
fn the_default_profile_builds_with_kubernetes_weights() {
    let fw = Framework::new(&default_registry(), &default_profile()).unwrap();
    assert_eq!(fw.profile_name(), "default-scheduler");
    assert_eq!(
        fw.plugins_at("Filter"),
        [
            "NodeUnschedulable",
            "NodeName",
            "TaintToleration",
            "NodeAffinity",
            "NodePorts",
            "NodeResourcesFit",
            "PodTopologySpread",
            "InterPodAffinity"
        ]
    );
    assert_eq!(fw.score_weight("PodTopologySpread"), Some(2));
    assert_eq!(fw.score_weight("InterPodAffinity"), Some(2));
    assert_eq!(fw.score_weight("TaintToleration"), Some(3));
    assert_eq!(fw.score_weight("NodeAffinity"), Some(2));
    assert_eq!(fw.score_weight("NodeResourcesFit"), Some(1));
    assert_eq!(fw.score_weight("NodeResourcesBalancedAllocation"), Some(1));
    assert_eq!(fw.score_weight("ImageLocality"), Some(1));
    assert!(fw.queue_sort().is_some());
}

fn with_port(ip: Option<&str>, proto: &str, port: i32) -> Pod {
    let mut p =
        json!({"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "protocol": proto}]});
    if let Some(ip) = ip {
        p["ports"][0]["hostIP"] = json!(ip);
    }
    pod(json!({"containers": [p]}))
}

#[test]
fn node_ports_rejects_nodes_whose_host_port_is_taken() {
    let cases = [
        ("free port", (None, "TCP", 80), (None, "TCP", 81), true),
        ("same port", (None, "TCP", 80), (None, "TCP", 80), false),
        ("other protocol", (None, "TCP", 80), (None, "UDP", 80), true),
        (
            "different IPs",
            (Some("10.0.0.1"), "TCP", 80),
            (Some("10.0.0.2"), "TCP", 80),
            true,
        ),
        (
            "wildcard used",
            (None, "TCP", 80),
            (Some("10.0.0.2"), "TCP", 80),
            false,
        ),
        (
            "wildcard wanted",
            (Some("10.0.0.1"), "TCP", 80),
            (None, "TCP", 80),
            false,
        ),
    ];
    for (name, used, want, fits) in cases {
        let mut n = node(json!({}));
        n.add_pod(Arc::new(with_port(used.0, used.1, used.2)));
        let s = filter(&NodePorts, &with_port(want.0, want.1, want.2), &n);
        assert_eq!(s.is_success(), fits, "{name}");
        if !fits {
            assert_eq!(s.to_string(), ERR_REASON_NODE_PORTS);
        }
    }
}

#[test]
fn image_locality_prefers_nodes_holding_large_images() {
    let mb = 1024 * 1024;
    let with_image = |name: &str, size: i64| {
        node(json!({"metadata": {"name": name}, "status": {"images": [
            {"names": ["nginx:1.15", "docker.io/library/nginx:1.15"], "sizeBytes": size}]}}))
    };
    let nodes = [
        with_image("a", 500 * mb),
        with_image("b", 500 * mb),
        node(json!({"metadata": {"name": "c"}})),
    ];
    let arcs: Vec<Arc<NodeInfo>> = nodes.iter().cloned().map(Arc::new).collect();
    let p = pod(json!({"containers": [{"name": "c", "image": "nginx:1.15"}]}));
    let mut state = CycleState::new();
    assert!(ImageLocality.pre_score(&mut state, &p, &arcs).is_success());
    let got: Vec<i64> = nodes
        .iter()
        .map(|n| ImageLocality.score(&state, &p, n).unwrap())
        .collect();
    // 500 MB spread over 2 of 3 nodes: 333 MB, (333 - 23) / (1000 - 23) of 100.
    let want = 100 * (500 * mb * 2 / 3 - 23 * mb) / (1000 * mb - 23 * mb);
    assert_eq!(got, [want, want, 0]);
    assert_eq!(normalized_image_name("nginx"), "nginx:latest");
    assert_eq!(
        normalized_image_name("reg:5000/nginx"),
        "reg:5000/nginx:latest"
    );
    assert_eq!(normalized_image_name("nginx@sha256:ab"), "nginx@sha256:ab");
}
