//! Table-driven tests of PodTopologySpread and InterPodAffinity: both read every node's
//! pods, so each case builds a small cluster and runs the plugin's whole cycle.

use std::sync::Arc;

use capstan_scheduler::framework::*;
use capstan_scheduler::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_scheduler::plugins::*;
use serde_json::{json, Value};

/// A node with `labels` and the given pods (each `(name, labels, spec extras)`).
fn node(name: &str, labels: Value, pods: &[Pod]) -> Arc<NodeInfo> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    let mut info = NodeInfo::new(Arc::new(node));
    for p in pods {
        let mut p = p.clone();
        p.spec.as_mut().unwrap().node_name = Some(name.to_owned());
        info.add_pod(Arc::new(p));
    }
    Arc::new(info)
}

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c"}]);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    }))
    .unwrap()
}

fn framework(plugin: &str) -> Framework {
    let profile = Profile::new(DEFAULT_SCHEDULER_NAME).with_plugin(PluginConfig::new(plugin));
    Framework::new(&default_registry(), &profile).unwrap()
}

/// Runs PreFilter and Filter on every node: the names of the nodes that fit, and each
/// rejected node's status.
fn filter(
    plugin: &str,
    pod: &Pod,
    nodes: &[Arc<NodeInfo>],
) -> (Vec<String>, Vec<(String, Status)>) {
    let fw = framework(plugin);
    let mut state = CycleState::new();
    let (_, s) = fw.run_pre_filter(&mut state, pod, nodes);
    assert!(s.is_success(), "PreFilter: {s}");
    let mut fit = Vec::new();
    let mut rejected = Vec::new();
    for n in nodes {
        let s = fw.run_filter(&state, pod, n);
        if s.is_success() {
            fit.push(n.name().to_owned());
        } else {
            rejected.push((n.name().to_owned(), s));
        }
    }
    (fit, rejected)
}

/// Runs the whole scoring cycle over `nodes` (all of them feasible): normalized scores by
/// node name, or `None` when PreScore skipped.
fn score(plugin: &str, pod: &Pod, nodes: &[Arc<NodeInfo>]) -> Option<Vec<(String, i64)>> {
    let fw = framework(plugin);
    let mut state = CycleState::new();
    let (_, s) = fw.run_pre_filter(&mut state, pod, nodes);
    assert!(s.is_success(), "PreFilter: {s}");
    assert!(fw.run_pre_score(&mut state, pod, nodes).is_success());
    if state.skips_score(plugin) {
        return None;
    }
    let scores = fw.run_score(&state, pod, nodes).unwrap();
    Some(scores.into_iter().map(|s| (s.name, s.score)).collect())
}

fn zone(z: &str, host: &str) -> Value {
    json!({"topology.kubernetes.io/zone": z, "kubernetes.io/hostname": host})
}

fn spread(key: &str, max_skew: i32, when: &str) -> Value {
    json!({"topologySpreadConstraints": [{
        "maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}},
    }]})
}

fn web(name: &str) -> Pod {
    pod(name, json!({"app": "web"}), json!({}))
}

#[test]
fn topology_spread_keeps_every_zone_within_max_skew() {
    // Zone a has 2 web pods, zone b has 1, zone c none.
    let nodes = vec![
        node("a1", zone("a", "a1"), &[web("w1"), web("w2")]),
        node("b1", zone("b", "b1"), &[web("w3")]),
        node(
            "c1",
            zone("c", "c1"),
            &[pod("other", json!({"app": "db"}), json!({}))],
        ),
        node("nolabel", json!({}), &[]),
    ];
    let cases = [
        // maxSkew 1: min is 0 (zone c); placing in a gives 3, in b gives 2, in c gives 1.
        (1, vec!["c1"]),
        (2, vec!["b1", "c1"]),
        (3, vec!["a1", "b1", "c1"]),
    ];
    for (max_skew, fits) in cases {
        let p = pod(
            "new",
            json!({"app": "web"}),
            spread("topology.kubernetes.io/zone", max_skew, "DoNotSchedule"),
        );
        let (fit, rejected) = filter(POD_TOPOLOGY_SPREAD, &p, &nodes);
        assert_eq!(fit, fits, "maxSkew {max_skew}");
        let missing = rejected.iter().find(|(n, _)| n == "nolabel").unwrap();
        assert_eq!(missing.1.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(missing.1.to_string(), ERR_REASON_NODE_LABEL_NOT_MATCH);
        for (n, s) in &rejected {
            if n != "nolabel" {
                assert_eq!(s.code(), Code::Unschedulable, "{n}");
                assert_eq!(s.to_string(), ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
    }
}

#[test]
fn topology_spread_counts_only_matching_pods_in_the_pods_namespace() {
    let mut elsewhere = web("w-other-ns");
    elsewhere.metadata.namespace = Some("other".into());
    let mut terminating = web("w-going");
    terminating.metadata.deletion_timestamp = Some(
        capstan_scheduler::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ),
    );
    let nodes = vec![
        node("a1", zone("a", "a1"), &[elsewhere, terminating]),
        node("b1", zone("b", "b1"), &[web("w1")]),
    ];
    let p = pod(
        "new",
        json!({"app": "web"}),
        spread("topology.kubernetes.io/zone", 1, "DoNotSchedule"),
    );
    // Zone a counts 0 (other namespace, terminating), zone b counts 1: both fit with skew 1
    // ... but b would reach 2 - 0 = 2 > 1.
    assert_eq!(filter(POD_TOPOLOGY_SPREAD, &p, &nodes).0, vec!["a1"]);
}

#[test]
fn topology_spread_min_domains_treats_missing_domains_as_empty() {
    let nodes = vec![
        node("a1", zone("a", "a1"), &[web("w1")]),
        node("b1", zone("b", "b1"), &[web("w2")]),
    ];
    let mut spec = spread("topology.kubernetes.io/zone", 1, "DoNotSchedule");
    // Without minDomains both fit (min 1, skew 1).
    let p = pod("new", json!({"app": "web"}), spec.clone());
    assert_eq!(filter(POD_TOPOLOGY_SPREAD, &p, &nodes).0, vec!["a1", "b1"]);
    // With 3 required domains and 2 present, the global minimum is 0: skew 2 > 1.
    spec["topologySpreadConstraints"][0]["minDomains"] = json!(3);
    let p = pod("new", json!({"app": "web"}), spec);
    assert!(filter(POD_TOPOLOGY_SPREAD, &p, &nodes).0.is_empty());
}

#[test]
fn topology_spread_honors_node_affinity_when_counting_domains() {
    // Zone c is empty but the pod may not go there: it does not pull the minimum down.
    let nodes = vec![
        node(
            "a1",
            json!({"topology.kubernetes.io/zone": "a", "disk": "ssd"}),
            &[web("w1")],
        ),
        node(
            "b1",
            json!({"topology.kubernetes.io/zone": "b", "disk": "ssd"}),
            &[web("w2"), web("w3")],
        ),
        node("c1", json!({"topology.kubernetes.io/zone": "c"}), &[]),
    ];
    let mut spec = spread("topology.kubernetes.io/zone", 1, "DoNotSchedule");
    spec["nodeSelector"] = json!({"disk": "ssd"});
    let p = pod("new", json!({"app": "web"}), spec.clone());
    // min over {a: 1, b: 2} is 1: a reaches 2 - 1 = 1 (fits), b reaches 3 - 1 = 2.
    assert_eq!(filter(POD_TOPOLOGY_SPREAD, &p, &nodes).0, vec!["a1", "c1"]);
    // Ignoring node affinity, zone c (0) is the minimum and a reaches 2.
    spec["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
    let p = pod("new", json!({"app": "web"}), spec);
    assert_eq!(filter(POD_TOPOLOGY_SPREAD, &p, &nodes).0, vec!["c1"]);
}

#[test]
fn topology_spread_scores_emptier_domains_higher_and_skips_without_soft_constraints() {
    let nodes = vec![
        node("a1", zone("a", "a1"), &[web("w1"), web("w2"), web("w3")]),
        node("b1", zone("b", "b1"), &[web("w4")]),
        node("c1", zone("c", "c1"), &[]),
        node("nolabel", json!({}), &[]),
    ];
    let p = pod(
        "new",
        json!({"app": "web"}),
        spread("topology.kubernetes.io/zone", 1, "ScheduleAnyway"),
    );
    let scores = score(POD_TOPOLOGY_SPREAD, &p, &nodes).unwrap();
    let get = |n: &str| scores.iter().find(|(name, _)| name == n).unwrap().1;
    assert_eq!(get("c1"), 100);
    assert!(get("c1") > get("b1") && get("b1") > get("a1"), "{scores:?}");
    assert_eq!(get("nolabel"), 0);
    // A pod without soft constraints is not scored by this plugin at all.
    assert!(score(POD_TOPOLOGY_SPREAD, &web("plain"), &nodes).is_none());
}

/// A pod of the ReplicaSet with `uid` (its controlling owner).
fn replica(name: &str, uid: &str) -> Pod {
    let mut p = web(name);
    p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs", "uid": uid,
        "controller": true,
    }))
    .unwrap()]);
    p
}

fn host(name: &str) -> Value {
    json!({"kubernetes.io/hostname": name})
}

/// The whole cycle of PodTopologySpread configured with `args`.
fn spread_framework(args: Value) -> Result<Framework, capstan_scheduler::Error> {
    let profile = Profile::new(DEFAULT_SCHEDULER_NAME)
        .with_plugin(PluginConfig::new(POD_TOPOLOGY_SPREAD).args(args));
    Framework::new(&default_registry(), &profile)
}

#[test]
fn replica_set_pods_spread_over_hostnames_by_the_system_defaults() {
    // No zone labels: the system defaults still spread by hostname.
    let nodes = vec![
        node(
            "a",
            host("a"),
            &[replica("r1", "rs-1"), replica("r2", "rs-1")],
        ),
        node("b", host("b"), &[replica("r3", "rs-1")]),
        // Another ReplicaSet's pods, with the same labels, do not count.
        node(
            "c",
            host("c"),
            &[replica("o1", "rs-2"), replica("o2", "rs-2")],
        ),
    ];
    let scores = score(POD_TOPOLOGY_SPREAD, &replica("new", "rs-1"), &nodes).unwrap();
    let get = |n: &str| scores.iter().find(|(name, _)| name == n).unwrap().1;
    assert_eq!(get("c"), 100, "{scores:?}");
    assert!(get("c") > get("b") && get("b") > get("a"), "{scores:?}");
    // A pod without a spreading owner gets no default constraints.
    assert!(score(POD_TOPOLOGY_SPREAD, &web("bare"), &nodes).is_none());
    // The defaults are soft: no node is filtered out.
    let (fit, rejected) = filter(POD_TOPOLOGY_SPREAD, &replica("new", "rs-1"), &nodes);
    assert_eq!(fit.len(), 3, "{rejected:?}");
}

#[test]
fn list_defaulting_applies_the_configured_constraints_or_none() {
    let nodes = vec![
        node(
            "a",
            zone("z1", "a"),
            &[replica("r1", "rs-1"), replica("r2", "rs-1")],
        ),
        node("b", zone("z2", "b"), &[]),
    ];
    let fw = spread_framework(json!({
        "defaultingType": "List",
        "defaultConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "DoNotSchedule"}],
    }))
    .unwrap();
    let p = replica("new", "rs-1");
    let mut state = CycleState::new();
    let (_, s) = fw.run_pre_filter(&mut state, &p, &nodes);
    assert!(s.is_success(), "{s}");
    assert!(!fw.run_filter(&state, &p, &nodes[0]).is_success());
    assert!(fw.run_filter(&state, &p, &nodes[1]).is_success());
    // An empty list turns defaulting off: nothing is filtered or scored.
    let off = spread_framework(json!({"defaultingType": "List"})).unwrap();
    let mut state = CycleState::new();
    let (_, s) = off.run_pre_filter(&mut state, &p, &nodes);
    assert!(s.is_success(), "{s}");
    assert!(off.run_filter(&state, &p, &nodes[0]).is_success());
    assert!(off.run_pre_score(&mut state, &p, &nodes).is_success());
    assert!(state.skips_score(POD_TOPOLOGY_SPREAD));
}

#[test]
fn bad_topology_spread_arguments_are_refused_naming_the_field() {
    for (args, field) in [
        (
            json!({"defaultingType": "System", "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]}),
            "defaultConstraints",
        ),
        (json!({"defaultingType": "Sometimes"}), "defaultingType"),
        (
            json!({"defaultingType": "List", "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"app": "web"}}}]}),
            "defaultConstraints[0].labelSelector",
        ),
        (
            json!({"defaultingType": "List", "defaultConstraints": [
                {"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]}),
            "defaultConstraints[0].maxSkew",
        ),
        (
            json!({"defaultingType": "List", "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "Never"}]}),
            "defaultConstraints[0].whenUnsatisfiable",
        ),
        (json!({"defaultConstrains": []}), "defaultConstrains"),
    ] {
        match spread_framework(args.clone()) {
            Err(capstan_scheduler::Error::InvalidArgs { plugin, message }) => {
                assert_eq!(plugin, POD_TOPOLOGY_SPREAD);
                assert!(message.contains(field), "{args}: {message}");
            }
            other => panic!("{args}: expected InvalidArgs, got {:?}", other.err()),
        }
    }
}

fn anti_affinity(labels: Value, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": key}
    ]}}})
}

fn affinity(labels: Value, key: &str) -> Value {
    json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": key}
    ]}}})
}

#[test]
fn required_anti_affinity_keeps_matching_pods_out_of_the_domain() {
    let nodes = vec![
        node("a1", zone("a", "a1"), &[web("w1")]),
        node("a2", zone("a", "a2"), &[]),
        node(
            "b1",
            zone("b", "b1"),
            &[pod("db", json!({"app": "db"}), json!({}))],
        ),
    ];
    let cases = [
        ("per host", "kubernetes.io/hostname", vec!["a2", "b1"]),
        ("per zone", "topology.kubernetes.io/zone", vec!["b1"]),
    ];
    for (what, key, fits) in cases {
        let p = pod(
            "new",
            json!({"app": "web"}),
            anti_affinity(json!({"app": "web"}), key),
        );
        let (fit, rejected) = filter(INTER_POD_AFFINITY, &p, &nodes);
        assert_eq!(fit, fits, "{what}");
        for (_, s) in rejected {
            assert_eq!(s.code(), Code::Unschedulable);
            assert_eq!(s.to_string(), ERR_REASON_ANTI_AFFINITY);
        }
    }
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    // w1 refuses any other web pod in its zone; the new pod has no terms of its own.
    let guard = pod(
        "w1",
        json!({"app": "web"}),
        anti_affinity(json!({"app": "web"}), "topology.kubernetes.io/zone"),
    );
    let nodes = vec![
        node("a1", zone("a", "a1"), &[guard]),
        node("a2", zone("a", "a2"), &[]),
        node("b1", zone("b", "b1"), &[]),
    ];
    let (fit, rejected) = filter(INTER_POD_AFFINITY, &web("new"), &nodes);
    assert_eq!(fit, vec!["b1"]);
    assert!(rejected
        .iter()
        .all(|(_, s)| s.to_string() == ERR_REASON_EXISTING_ANTI_AFFINITY));
    // A pod the guard's selector does not match goes anywhere.
    let db = pod("db", json!({"app": "db"}), json!({}));
    assert_eq!(filter(INTER_POD_AFFINITY, &db, &nodes).0.len(), 3);
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain_except_for_the_first_of_a_group() {
    let nodes = vec![
        node(
            "a1",
            zone("a", "a1"),
            &[pod("cache", json!({"app": "cache"}), json!({}))],
        ),
        node("a2", zone("a", "a2"), &[]),
        node("b1", zone("b", "b1"), &[]),
        node("nolabel", json!({}), &[]),
    ];
    let p = pod(
        "new",
        json!({"app": "web"}),
        affinity(json!({"app": "cache"}), "topology.kubernetes.io/zone"),
    );
    let (fit, rejected) = filter(INTER_POD_AFFINITY, &p, &nodes);
    assert_eq!(fit, vec!["a1", "a2"]);
    for (_, s) in rejected {
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(s.to_string(), ERR_REASON_AFFINITY);
    }
    // No pod matches, but the pod matches its own term: it may go wherever the key exists.
    let first = pod(
        "w0",
        json!({"app": "web"}),
        affinity(json!({"app": "web"}), "topology.kubernetes.io/zone"),
    );
    assert_eq!(
        filter(INTER_POD_AFFINITY, &first, &nodes).0,
        vec!["a1", "a2", "b1"]
    );
    // No pod matches and the pod does not match its own term: nowhere.
    let lonely = pod(
        "l",
        json!({"app": "web"}),
        affinity(json!({"app": "ghost"}), "topology.kubernetes.io/zone"),
    );
    assert!(filter(INTER_POD_AFFINITY, &lonely, &nodes).0.is_empty());
}

#[test]
fn affinity_terms_look_only_in_their_namespaces() {
    let mut cache = pod("cache", json!({"app": "cache"}), json!({}));
    cache.metadata.namespace = Some("infra".into());
    let nodes = vec![
        node("a1", zone("a", "a1"), &[cache]),
        node("b1", zone("b", "b1"), &[]),
    ];
    let mut term = affinity(json!({"app": "cache"}), "topology.kubernetes.io/zone");
    // Own namespace only: nothing matches, and the pod is not a cache itself.
    let p = pod("new", json!({"app": "web"}), term.clone());
    assert!(filter(INTER_POD_AFFINITY, &p, &nodes).0.is_empty());
    let t =
        &mut term["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    t["namespaces"] = json!(["infra"]);
    let p = pod("new", json!({"app": "web"}), term.clone());
    assert_eq!(filter(INTER_POD_AFFINITY, &p, &nodes).0, vec!["a1"]);
    // An empty namespaceSelector means every namespace.
    let t =
        &mut term["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    t["namespaces"] = json!([]);
    t["namespaceSelector"] = json!({});
    let p = pod("new", json!({"app": "web"}), term);
    assert_eq!(filter(INTER_POD_AFFINITY, &p, &nodes).0, vec!["a1"]);
}

#[test]
fn preferred_terms_score_towards_and_away_from_matching_pods() {
    let nodes = vec![
        node(
            "a1",
            zone("a", "a1"),
            &[pod("cache", json!({"app": "cache"}), json!({}))],
        ),
        node("b1", zone("b", "b1"), &[web("w1")]),
        node("c1", zone("c", "c1"), &[]),
    ];
    let p = pod(
        "new",
        json!({"app": "web"}),
        json!({"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}}
            ]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}
            ]},
        }}),
    );
    let scores = score(INTER_POD_AFFINITY, &p, &nodes).unwrap();
    assert_eq!(
        scores,
        vec![("a1".into(), 100), ("b1".into(), 0), ("c1".into(), 33)],
        "raw: a1 +10, b1 -5, c1 0"
    );
    // Nobody has terms: the plugin skips scoring.
    assert!(score(INTER_POD_AFFINITY, &web("plain"), &nodes).is_none());
}

#[test]
fn existing_pods_preferred_terms_attract_matching_pods() {
    let friendly = pod(
        "cache",
        json!({"app": "cache"}),
        json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}
        ]}}}),
    );
    let nodes = vec![
        node("a1", zone("a", "a1"), &[friendly]),
        node("b1", zone("b", "b1"), &[]),
    ];
    let scores = score(INTER_POD_AFFINITY, &web("new"), &nodes).unwrap();
    assert_eq!(scores, vec![("a1".into(), 100), ("b1".into(), 0)]);
}
