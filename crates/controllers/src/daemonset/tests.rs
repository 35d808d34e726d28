//! Unit tests of eligibility, daemon Pods and the rolling-update arithmetic.

use super::*;
use crate::util::controlled_by;
use capstan_api::ext::TolerationExt;
use capstan_api::k8s_openapi::api::apps::v1::DaemonSetSpec;
use capstan_api::k8s_openapi::api::core::v1::NodeSpec;

fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        value: None,
        time_added: None,
    }
}

fn daemon_set(spec: PodSpec) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
            uid: Some("uid-agent".into()),
            ..ObjectMeta::default()
        },
        spec: capstan_api::compat::value(DaemonSetSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(spec),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

fn with_affinity(requirements: Vec<NodeSelectorRequirement>) -> PodSpec {
    PodSpec {
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(requirements),
                        match_fields: None,
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        }),
        ..PodSpec::default()
    }
}

#[test]
fn node_selector_and_affinity_operators_match_node_labels() {
    let gpu = node("n1", &[("gpu", "a100"), ("cores", "64")], vec![]);
    let plain = node("n2", &[("cores", "8")], vec![]);
    let cases = [
        (requirement("gpu", "In", &["a100", "h100"]), true, false),
        (requirement("gpu", "NotIn", &["a100"]), false, true),
        (requirement("gpu", "Exists", &[]), true, false),
        (requirement("gpu", "DoesNotExist", &[]), false, true),
        (requirement("cores", "Gt", &["16"]), true, false),
        (requirement("cores", "Lt", &["16"]), false, true),
    ];
    for (requirement, on_gpu, on_plain) in cases {
        let spec = with_affinity(vec![requirement.clone()]);
        assert_eq!(
            spec.matches_node_selector_and_affinity(&gpu),
            on_gpu,
            "{requirement:?}"
        );
        assert_eq!(
            spec.matches_node_selector_and_affinity(&plain),
            on_plain,
            "{requirement:?}"
        );
    }
    let selector = PodSpec {
        node_selector: Some(BTreeMap::from([("gpu".into(), "a100".into())])),
        ..PodSpec::default()
    };
    assert!(selector.matches_node_selector_and_affinity(&gpu));
    assert!(!selector.matches_node_selector_and_affinity(&plain));
}

#[test]
fn no_schedule_taints_keep_new_pods_away_and_no_execute_taints_evict() {
    let ds = daemon_set(PodSpec::default());
    let clean = node("n1", &[], vec![]);
    assert!(node_should_run_daemon_pod(&clean, &ds).should_run);

    let no_schedule = node("n2", &[], vec![taint("dedicated", "NoSchedule")]);
    let placement = node_should_run_daemon_pod(&no_schedule, &ds);
    assert!(!placement.should_run && placement.should_continue_running);
    assert_eq!(placement.untolerated_taint.unwrap().key, "dedicated");

    let no_execute = node("n3", &[], vec![taint("dedicated", "NoExecute")]);
    let placement = node_should_run_daemon_pod(&no_execute, &ds);
    assert!(!placement.should_run && !placement.should_continue_running);

    // Preferences are not obstacles; the default tolerations cover node conditions.
    let benign = node(
        "n4",
        &[],
        vec![
            taint("dedicated", "PreferNoSchedule"),
            taint(taints::NOT_READY, "NoExecute"),
            taint(taints::UNSCHEDULABLE, "NoSchedule"),
            taint(taints::MEMORY_PRESSURE, "NoSchedule"),
        ],
    );
    assert!(node_should_run_daemon_pod(&benign, &ds).should_run);

    let tolerant = daemon_set(PodSpec {
        tolerations: Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]),
        ..PodSpec::default()
    });
    assert!(node_should_run_daemon_pod(&no_execute, &tolerant).should_run);
}

#[test]
fn equal_tolerations_need_the_taints_value() {
    let mut tainted = taint("team", "NoSchedule");
    tainted.value = Some("infra".into());
    let equal = |value: &str| Toleration {
        key: Some("team".into()),
        operator: Some("Equal".into()),
        value: Some(value.into()),
        effect: Some("NoSchedule".into()),
        toleration_seconds: None,
    };
    assert!(equal("infra").tolerates(&tainted));
    assert!(!equal("web").tolerates(&tainted));
}

#[test]
fn daemon_pods_are_bound_and_pinned_to_their_node_with_the_revision_hash() {
    let ds = daemon_set(PodSpec::default());
    let hash = template_hash(&ds.spec.opt().unwrap().template);
    let pod = daemon_pod(&ds, "n7", &hash);
    assert_eq!(target_node(&pod).as_deref(), Some("n7"));
    assert_eq!(pod_hash(&pod), Some(hash.as_str()));
    assert!(controlled_by(&pod, "uid-agent"));
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 6);
    let mut unbound = pod.clone();
    unbound.spec.as_mut().unwrap().node_name = None;
    assert_eq!(target_node(&unbound).as_deref(), Some("n7"));
    // The hash is stable and follows the template.
    assert_eq!(hash, template_hash(&ds.spec.opt().unwrap().template));
    let other = daemon_set(PodSpec {
        host_network: Some(true),
        ..PodSpec::default()
    });
    assert_ne!(hash, template_hash(&other.spec.opt().unwrap().template));
}

#[test]
fn max_unavailable_scales_percentages_up_and_is_never_zero() {
    let mut ds = daemon_set(PodSpec::default());
    assert_eq!(max_unavailable(&ds, 10), 1);
    ds.spec.opt_mut().unwrap().update_strategy = Some(
        capstan_api::k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(
                capstan_api::k8s_openapi::api::apps::v1::RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("25%".into())),
                    max_surge: None,
                },
            ),
        },
    );
    assert_eq!(max_unavailable(&ds, 10), 3);
    assert_eq!(max_unavailable(&ds, 1), 1);
}
