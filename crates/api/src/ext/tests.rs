use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorTerm, Pod, PodSpec, Service, Taint, Toleration,
};
use serde_json::{json, Value};

use super::*;

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn pod(value: Value) -> Pod {
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
    merge(&mut pod, value);
    from(pod)
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

fn node(labels: Value) -> Node {
    from(json!({"metadata": {"name": "n1", "labels": labels}}))
}

// ---------------------------------------------------------------------------------------
// Tolerations
// ---------------------------------------------------------------------------------------

fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.map(str::to_string),
        effect: effect.into(),
        time_added: None,
    }
}

fn toleration(value: Value) -> Toleration {
    from(value)
}

#[test]
fn tolerations_tolerate_taints_by_kubernetes_rules() {
    let taint = taint("dedicated", Some("infra"), "NoSchedule");
    let cases = [
        (
            "the same key, value and effect",
            json!({"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}),
            true,
        ),
        (
            "another value",
            json!({"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}),
            false,
        ),
        (
            "no value against a value",
            json!({"key": "dedicated", "operator": "Equal"}),
            false,
        ),
        (
            "another key",
            json!({"key": "team", "operator": "Exists"}),
            false,
        ),
        (
            "another effect",
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
            false,
        ),
        (
            "no operator means Equal",
            json!({"key": "dedicated", "value": "infra"}),
            true,
        ),
        (
            "an empty operator means Equal",
            json!({"key": "dedicated", "operator": "", "value": "web"}),
            false,
        ),
        (
            "Exists ignores the value",
            json!({"key": "dedicated", "operator": "Exists", "value": "web"}),
            true,
        ),
        (
            "no effect matches every effect",
            json!({"key": "dedicated", "operator": "Exists"}),
            true,
        ),
        (
            "an empty effect matches every effect",
            json!({"key": "dedicated", "operator": "Exists", "effect": ""}),
            true,
        ),
        (
            "an empty key with Exists",
            json!({"operator": "Exists"}),
            true,
        ),
        (
            "an unknown operator",
            json!({"key": "dedicated", "operator": "Matches", "value": "infra"}),
            false,
        ),
    ];
    for (case, toleration_json, tolerated) in cases {
        assert_eq!(
            toleration(toleration_json).tolerates(&taint),
            tolerated,
            "{case}"
        );
    }
}

#[test]
fn an_empty_toleration_key_with_exists_tolerates_every_taint() {
    let everything = toleration(json!({"operator": "Exists"}));
    for taint in [
        taint("dedicated", Some("infra"), "NoSchedule"),
        taint("node.kubernetes.io/unreachable", None, "NoExecute"),
        taint("gpu", Some(""), "PreferNoSchedule"),
    ] {
        assert!(everything.tolerates(&taint), "{taint:?}");
    }
    let no_execute_only = toleration(json!({"operator": "Exists", "effect": "NoExecute"}));
    assert!(!no_execute_only.tolerates(&taint("dedicated", None, "NoSchedule")));
}

/// The scheduler's copy refused every `Equal` toleration without a key; Kubernetes compares
/// the values whatever the key (the API server rejects such a toleration, the matcher does
/// not).
#[test]
fn an_empty_toleration_key_with_equal_tolerates_every_taint_with_the_same_value() {
    let empty_value = toleration(json!({"operator": "Equal"}));
    assert!(empty_value.tolerates(&taint("dedicated", None, "NoSchedule")));
    assert!(empty_value.tolerates(&taint("gpu", Some(""), "NoExecute")));
    assert!(!empty_value.tolerates(&taint("dedicated", Some("infra"), "NoSchedule")));
    let infra = toleration(json!({"value": "infra"}));
    assert!(infra.tolerates(&taint("dedicated", Some("infra"), "NoSchedule")));
    assert!(!infra.tolerates(&taint("dedicated", None, "NoSchedule")));
}

#[test]
fn numeric_toleration_operators_tolerate_nothing_with_their_feature_gate_off() {
    let taint = taint("capacity", Some("50"), "NoSchedule");
    for operator in ["Gt", "Lt"] {
        let numeric = toleration(json!({"key": "capacity", "operator": operator, "value": "10"}));
        assert!(!numeric.tolerates(&taint), "{operator}");
    }
}

#[test]
fn a_taint_is_tolerated_when_any_toleration_tolerates_it() {
    let taint = taint("dedicated", Some("infra"), "NoSchedule");
    let web = toleration(json!({"key": "dedicated", "value": "web"}));
    let infra = toleration(json!({"key": "dedicated", "value": "infra"}));
    assert!(!taint.is_tolerated_by(&[]));
    assert!(!taint.is_tolerated_by(std::slice::from_ref(&web)));
    assert!(taint.is_tolerated_by(&[web, infra]));
}

// ---------------------------------------------------------------------------------------
// Node selectors
// ---------------------------------------------------------------------------------------

fn term(value: Value) -> NodeSelectorTerm {
    from(value)
}

fn expression(key: &str, operator: &str, values: &[&str]) -> NodeSelectorTerm {
    term(json!({"matchExpressions": [{"key": key, "operator": operator, "values": values}]}))
}

fn field(key: &str, operator: &str, values: &[&str]) -> NodeSelectorTerm {
    term(json!({"matchFields": [{"key": key, "operator": operator, "values": values}]}))
}

#[test]
fn match_expressions_compare_the_node_labels() {
    let gpu = node(json!({"gpu": "a100", "cores": "64"}));
    let plain = node(json!({"cores": "8"}));
    let unlabelled = node(json!(null));
    let cases = [
        (
            expression("gpu", "In", &["a100", "h100"]),
            [true, false, false],
        ),
        (expression("gpu", "In", &[]), [false, false, false]),
        (expression("gpu", "NotIn", &["a100"]), [false, true, true]),
        (expression("gpu", "NotIn", &["h100"]), [true, true, true]),
        (expression("gpu", "Exists", &[]), [true, false, false]),
        (expression("gpu", "DoesNotExist", &[]), [false, true, true]),
        (expression("cores", "Gt", &["16"]), [true, false, false]),
        (expression("cores", "Lt", &["16"]), [false, true, false]),
        (expression("cores", "Gt", &["64"]), [false, false, false]),
        (expression("cores", "Lt", &["+65"]), [true, true, false]),
        (expression("cores", "Gt", &["-1"]), [true, true, false]),
        (expression("gpu", "Lt", &["1"]), [false, false, false]),
        (expression("cores", "Gt", &["eight"]), [false, false, false]),
        (
            expression("cores", "Gt", &["1", "2"]),
            [false, false, false],
        ),
        (expression("cores", "Gt", &[]), [false, false, false]),
        (expression("gpu", "Like", &["a100"]), [false, false, false]),
    ];
    for (term, wanted) in cases {
        let got = [&gpu, &plain, &unlabelled].map(|n| term.matches(n));
        assert_eq!(got, wanted, "{term:?}");
    }
}

#[test]
fn match_fields_compare_the_node_name() {
    let n1 = node(json!(null));
    let cases = [
        (field("metadata.name", "In", &["n1"]), true),
        (field("metadata.name", "In", &["n0", "n1"]), true),
        (field("metadata.name", "In", &["n2"]), false),
        (field("metadata.name", "NotIn", &["n2"]), true),
        (field("metadata.name", "NotIn", &["n1"]), false),
        (field("metadata.name", "Exists", &[]), true),
        (field("metadata.name", "DoesNotExist", &[]), false),
    ];
    for (term, wanted) in cases {
        assert_eq!(term.matches(&n1), wanted, "{term:?}");
    }
}

/// The scheduler's copy compared `Gt` and `Lt` on `metadata.name` as integers; Kubernetes'
/// field selectors have no numeric operators.
#[test]
fn gt_and_lt_match_no_field() {
    let numbered: Node = from(json!({"metadata": {"name": "7"}}));
    assert!(expression("rank", "Gt", &["5"]).matches(&from(
        json!({"metadata": {"name": "7", "labels": {"rank": "7"}}})
    )));
    assert!(!field("metadata.name", "Gt", &["5"]).matches(&numbered));
    assert!(!field("metadata.name", "Lt", &["9"]).matches(&numbered));
}

/// The scheduler's copy failed every requirement on a field other than `metadata.name`; in
/// Kubernetes such a field is absent from the Node's field set, so `NotIn` holds and `In`
/// does not.
#[test]
fn a_field_other_than_metadata_name_is_absent() {
    let n1 = node(json!({"spec.unschedulable": "true"}));
    assert!(!field("spec.unschedulable", "In", &["true"]).matches(&n1));
    assert!(field("spec.unschedulable", "NotIn", &["true"]).matches(&n1));
    assert!(!field("metadata.namespace", "Exists", &[]).matches(&n1));
}

#[test]
fn an_empty_term_matches_no_node() {
    let n1 = node(json!({"gpu": "a100"}));
    assert!(!term(json!({})).matches(&n1));
    assert!(!term(json!({"matchExpressions": [], "matchFields": []})).matches(&n1));
    let selector = NodeSelector {
        node_selector_terms: vec![term(json!({}))],
    };
    assert!(!selector.matches(&n1));
}

#[test]
fn a_selector_without_terms_matches_no_node() {
    let selector = NodeSelector {
        node_selector_terms: vec![],
    };
    assert!(!selector.matches(&node(json!({"gpu": "a100"}))));
}

#[test]
fn requirements_of_a_term_are_anded_and_terms_are_ored() {
    let gpu_n1 = node(json!({"gpu": "a100"}));
    let gpu_n2: Node = from(json!({"metadata": {"name": "n2", "labels": {"gpu": "h100"}}}));
    let both = term(json!({
        "matchExpressions": [{"key": "gpu", "operator": "Exists"}],
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
    }));
    assert!(both.matches(&gpu_n1));
    assert!(!both.matches(&gpu_n2));
    let either = NodeSelector {
        node_selector_terms: vec![
            expression("gpu", "In", &["h100"]),
            field("metadata.name", "In", &["n1"]),
        ],
    };
    assert!(either.matches(&gpu_n1));
    assert!(either.matches(&gpu_n2));
    assert!(!either.matches(&from(json!({"metadata": {"name": "n3"}}))));
}

fn spec(value: Value) -> PodSpec {
    let mut spec = json!({"containers": []});
    merge(&mut spec, value);
    from(spec)
}

#[test]
fn a_pod_matches_a_node_through_its_node_selector_and_required_affinity() {
    let gpu = node(json!({"gpu": "a100", "zone": "a"}));
    let plain = node(json!({"zone": "a"}));
    let affinity = |terms: Value| {
        json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "never", "operator": "Exists"}]}}
            ],
        }}})
    };
    let cases = [
        ("no constraint", json!({}), [true, true]),
        (
            "an empty nodeSelector",
            json!({"nodeSelector": {}}),
            [true, true],
        ),
        (
            "a nodeSelector",
            json!({"nodeSelector": {"gpu": "a100"}}),
            [true, false],
        ),
        (
            "a nodeSelector needing every label",
            json!({"nodeSelector": {"gpu": "a100", "zone": "b"}}),
            [false, false],
        ),
        (
            "a required affinity",
            affinity(json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])),
            [false, true],
        ),
        (
            "a required affinity without terms",
            affinity(json!([])),
            [false, false],
        ),
        (
            "both",
            {
                let mut both = affinity(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]),
                );
                merge(&mut both, json!({"nodeSelector": {"gpu": "a100"}}));
                both
            },
            [true, false],
        ),
    ];
    for (case, value, wanted) in cases {
        let spec = spec(value);
        let got = [&gpu, &plain].map(|n| spec.matches_node_selector_and_affinity(n));
        assert_eq!(got, wanted, "{case}");
        let pod = Pod {
            spec: Some(spec),
            ..Pod::default()
        };
        let got = [&gpu, &plain].map(|n| pod.matches_node_selector_and_affinity(n));
        assert_eq!(got, wanted, "{case} (pod)");
    }
    assert!(Pod::default().matches_node_selector_and_affinity(&gpu));
}

// ---------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------

#[test]
fn a_pod_is_ready_when_its_ready_condition_is_true() {
    let cases = [
        ("no status", json!({}), false),
        (
            "no conditions",
            json!({"status": {"phase": "Running"}}),
            false,
        ),
        (
            "Ready True",
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            true,
        ),
        (
            "Ready False",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            false,
        ),
        (
            "Ready Unknown",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            false,
        ),
        (
            "only ContainersReady",
            json!({"status": {"conditions": [{"type": "ContainersReady", "status": "True"}]}}),
            false,
        ),
    ];
    for (case, value, ready) in cases {
        assert_eq!(pod(value).is_ready(), ready, "{case}");
    }
}

/// The Endpoints and node lifecycle copies took any `Ready: True` condition; Kubernetes
/// (`GetPodCondition`) reads the first `Ready` condition only.
#[test]
fn only_the_first_ready_condition_of_a_pod_counts() {
    let pod = pod(json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "first"},
        {"type": "Ready", "status": "True", "reason": "second"},
    ]}}));
    assert!(!pod.is_ready());
    assert_eq!(
        pod.condition("Ready").and_then(|c| c.reason.as_deref()),
        Some("first")
    );
    assert!(pod.condition("PodScheduled").is_none());
}

#[test]
fn a_pod_is_active_until_it_is_terminal_or_terminating() {
    let deleting = json!({"deletionTimestamp": "2024-01-01T00:00:00Z"});
    let cases = [
        // (phase, being deleted, phase(), terminal, terminating, active)
        (None, false, "", false, false, true),
        (Some("Pending"), false, "Pending", false, false, true),
        (Some("Running"), false, "Running", false, false, true),
        (Some("Unknown"), false, "Unknown", false, false, true),
        (Some("Succeeded"), false, "Succeeded", true, false, false),
        (Some("Failed"), false, "Failed", true, false, false),
        (Some("Running"), true, "Running", false, true, false),
        (Some("Succeeded"), true, "Succeeded", true, true, false),
    ];
    for (phase, being_deleted, shown, terminal, terminating, active) in cases {
        let mut value = json!({});
        if let Some(phase) = phase {
            value = json!({"status": {"phase": phase}});
        }
        if being_deleted {
            merge(&mut value, json!({"metadata": deleting.clone()}));
        }
        let pod = pod(value);
        let case = format!("{phase:?}, deleting: {being_deleted}");
        assert_eq!(pod.phase(), shown, "{case}");
        assert_eq!(pod.is_terminal(), terminal, "{case}");
        assert_eq!(pod.is_terminating(), terminating, "{case}");
        assert_eq!(pod.is_active(), active, "{case}");
    }
    assert_eq!(Pod::default().phase(), "");
    assert!(Pod::default().is_active());
}

#[test]
fn a_pod_is_on_the_node_its_spec_names() {
    let cases = [
        (json!({}), None),
        (json!({"spec": {"nodeName": ""}}), None),
        (json!({"spec": {"nodeName": "n1"}}), Some("n1")),
    ];
    for (value, node) in cases {
        assert_eq!(pod(value.clone()).node_name(), node, "{value}");
    }
    assert_eq!(Pod::default().node_name(), None);
}

// ---------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------

#[test]
fn a_node_is_ready_when_its_first_ready_condition_is_true() {
    let with = |conditions: Value| -> Node {
        from(json!({"metadata": {"name": "n1"}, "status": {"conditions": conditions}}))
    };
    let cases = [
        ("no conditions", json!([]), false),
        (
            "Ready True",
            json!([{"type": "Ready", "status": "True"}]),
            true,
        ),
        (
            "Ready False",
            json!([{"type": "Ready", "status": "False"}]),
            false,
        ),
        (
            "Ready Unknown",
            json!([{"type": "Ready", "status": "Unknown"}]),
            false,
        ),
        (
            "a pressure condition only",
            json!([{"type": "MemoryPressure", "status": "True"}]),
            false,
        ),
        (
            "a later Ready True",
            json!([{"type": "Ready", "status": "Unknown"}, {"type": "Ready", "status": "True"}]),
            false,
        ),
    ];
    for (case, conditions, ready) in cases {
        assert_eq!(with(conditions).is_ready(), ready, "{case}");
    }
    let node = with(json!([
        {"type": "MemoryPressure", "status": "False"},
        {"type": "Ready", "status": "True"},
    ]));
    assert_eq!(
        node.condition("MemoryPressure").map(|c| c.status.as_str()),
        Some("False")
    );
    assert!(node.condition("DiskPressure").is_none());
    assert!(!Node::default().is_ready());
}

#[test]
fn a_node_without_taints_has_an_empty_list() {
    assert!(Node::default().taints().is_empty());
    assert!(from::<Node>(json!({"spec": {}})).taints().is_empty());
    let tainted: Node = from(json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}));
    assert_eq!(tainted.taints(), [taint("k", None, "NoSchedule")]);
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

#[test]
fn a_service_is_headless_only_with_cluster_ip_none() {
    let service = |cluster_ip: Option<&str>| -> Service {
        from(json!({"metadata": {"name": "s"}, "spec": {"clusterIP": cluster_ip}}))
    };
    let cases = [
        // (clusterIP, headless, cluster IP set)
        (Some("None"), true, false),
        (Some("10.96.0.10"), false, true),
        (Some("fd00::10"), false, true),
        (Some(""), false, false),
        (None, false, false),
    ];
    for (cluster_ip, headless, set) in cases {
        let service = service(cluster_ip);
        assert_eq!(service.is_headless(), headless, "{cluster_ip:?}");
        assert_eq!(service.is_cluster_ip_set(), set, "{cluster_ip:?}");
    }
    assert!(!Service::default().is_headless());
    assert!(!Service::default().is_cluster_ip_set());
}

/// The DNS server's copy compared `None` ignoring case; Kubernetes (and its API server, which
/// rejects `none` as an IP) compares it exactly.
#[test]
fn a_lowercase_none_cluster_ip_is_not_headless() {
    let service: Service = from(json!({"spec": {"clusterIP": "none"}}));
    assert!(!service.is_headless());
}

/// The Endpoints controller's copy called a Service without a cluster IP headless; Kubernetes
/// does not (`ClusterIP == ClusterIPNone`), although its Endpoints and EndpointSlice
/// controllers label such a Service's objects headless (`!IsServiceIPSet`).
#[test]
fn a_service_without_a_cluster_ip_is_not_headless_but_has_no_cluster_ip() {
    for spec in [json!({}), json!({"clusterIP": ""})] {
        let service: Service = from(json!({"spec": spec}));
        assert!(!service.is_headless(), "{spec}");
        assert!(!service.is_cluster_ip_set(), "{spec}");
    }
}

#[test]
fn meta_ext_borrows_the_name_and_namespace_and_gives_empty_when_absent() {
    let named: Pod = from(json!({"metadata": {"name": "web", "namespace": "prod"}}));
    assert_eq!((named.name_str(), named.namespace_str()), ("web", "prod"));
    let generated: Pod = from(json!({"metadata": {"generateName": "web-"}}));
    assert_eq!((generated.name_str(), generated.namespace_str()), ("", ""));
    let cluster_scoped = node(json!({}));
    assert_eq!(cluster_scoped.namespace_str(), "");
}
