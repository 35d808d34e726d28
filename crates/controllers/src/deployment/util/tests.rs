//! Unit tests of the Deployment helpers.

use super::*;
use capstan_api::k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use capstan_api::k8s_openapi::api::core::v1::{Container, PodSpec};
use capstan_api::kube_core::ObjectMeta;

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: compat::value(DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            template: template("web:v1"),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn rs(name: &str, replicas: i32, created: i64, max_replicas: Option<i32>) -> ReplicaSet {
    let mut annotations = BTreeMap::new();
    if let Some(max) = max_replicas {
        annotations.insert(annotations::MAX_REPLICAS.to_string(), max.to_string());
    }
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(
                Timestamp::from_second(1_700_000_000 + created).unwrap(),
            )),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: compat::value(ReplicaSetSpec {
            replicas: Some(replicas),
            ..ReplicaSetSpec::default()
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ..ReplicaSetStatus::default()
        }),
    }
}

#[test]
fn fnv1a_matches_the_reference_vectors() {
    let hash = |s: &str| {
        let mut h = Fnv32a::new();
        h.write(s.as_bytes());
        h.0
    };
    assert_eq!(hash(""), 0x811c_9dc5);
    assert_eq!(hash("a"), 0xe40c_292c);
    assert_eq!(hash("foobar"), 0xbf9c_f968);
}

#[test]
fn safe_encoding_maps_digits_into_the_kubernetes_alphabet() {
    assert_eq!(safe_encode("0123456789"), "456789bcdf");
}

#[test]
fn the_template_hash_is_stable_safe_and_changes_with_the_template_and_collisions() {
    let v1 = pod_template_hash(&template("web:v1"), None);
    assert_eq!(v1, pod_template_hash(&template("web:v1"), None));
    assert!(v1.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{v1}");
    assert_ne!(v1, pod_template_hash(&template("web:v2"), None));
    assert_ne!(v1, pod_template_hash(&template("web:v1"), Some(1)));
    assert_ne!(
        pod_template_hash(&template("web:v1"), Some(1)),
        pod_template_hash(&template("web:v1"), Some(2))
    );
}

#[test]
fn templates_equal_but_for_the_hash_label_are_equal() {
    let mut hashed = template("web:v1");
    hashed
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
    assert!(equal_ignore_hash(&hashed, &template("web:v1")));
    assert!(!equal_ignore_hash(&hashed, &template("web:v2")));
}

#[test]
fn surge_rounds_up_and_unavailability_rounds_down() {
    let pct = |s: &str| IntOrString::String(s.into());
    assert_eq!(
        resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
        (3, 2)
    );
    assert_eq!(
        resolve_fenceposts(Some(&IntOrString::Int(1)), Some(&IntOrString::Int(1)), 3),
        (1, 1)
    );
    assert_eq!(
        resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5),
        (0, 1)
    );
    let d = deployment(3, IntOrString::Int(1), IntOrString::Int(5));
    assert_eq!(max_unavailable(&d), 3, "never more than the replicas");
    assert_eq!(max_surge(&d), 1);
}

#[test]
fn the_new_replica_set_grows_by_what_the_surge_allows() {
    let d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
    let old = rs("old", 3, 0, None);
    let new = rs("new", 0, 1, None);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
    let new = rs("new", 1, 1, None);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
    // The old one was told to shrink but still runs three Pods: wait for them.
    let mut shrinking = rs("old", 2, 0, None);
    shrinking.status.as_mut().unwrap().replicas = 3;
    assert_eq!(new_rs_new_replicas(&d, &[&shrinking, &new], &new), 1);
    shrinking.status.as_mut().unwrap().replicas = 2;
    assert_eq!(new_rs_new_replicas(&d, &[&shrinking, &new], &new), 2);
}

#[test]
fn proportional_scaling_shares_the_difference_by_size_as_kubernetes_does() {
    // Kubernetes' documented example: 10 replicas, maxSurge 3, mid-rollout with 8 old
    // and 5 new (max-replicas 13), scaled to 15 (max 18): +5 split 3 to old, 2 to new.
    let d = deployment(15, IntOrString::Int(3), IntOrString::Int(2));
    let old = rs("old", 8, 0, Some(13));
    let new = rs("new", 5, 1, Some(13));
    let sizes: BTreeMap<String, i32> = proportional_sizes(&d, &[old.clone(), new.clone()])
        .into_iter()
        .collect();
    assert_eq!(sizes["old"], 11);
    assert_eq!(sizes["new"], 7);
    // And back down to 10 (max 13): -5, the larger loses more.
    let d = deployment(10, IntOrString::Int(3), IntOrString::Int(2));
    let old = rs("old", 11, 0, Some(18));
    let new = rs("new", 7, 1, Some(18));
    let sizes: BTreeMap<String, i32> = proportional_sizes(&d, &[old, new]).into_iter().collect();
    assert_eq!(sizes.values().sum::<i32>(), 13);
    assert_eq!(sizes["old"], 8);
    assert_eq!(sizes["new"], 5);
}

#[test]
fn a_reused_replica_set_gets_the_new_revision_and_keeps_the_old_in_history() {
    let d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
    let mut old = rs("old", 0, 0, None);
    old.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(annotations::REVISION.into(), "1".into());
    assert!(set_new_replica_set_annotations(&d, &mut old, 3, true));
    assert_eq!(revision(&old), 3);
    assert_eq!(
        old.metadata.annotations.as_ref().unwrap()[annotations::REVISION_HISTORY],
        "1"
    );
    assert!(set_new_replica_set_annotations(&d, &mut old, 5, true));
    assert_eq!(
        old.metadata.annotations.as_ref().unwrap()[annotations::REVISION_HISTORY],
        "1,3"
    );
    assert!(!set_new_replica_set_annotations(&d, &mut old, 5, true));

    let mut fresh = rs("fresh", 0, 0, None);
    assert!(set_new_replica_set_annotations(&d, &mut fresh, 1, false));
    let annotations = fresh.metadata.annotations.unwrap();
    assert_eq!(annotations[annotations::DESIRED_REPLICAS], "3");
    assert_eq!(annotations[annotations::MAX_REPLICAS], "4");
    assert!(!annotations.contains_key(annotations::REVISION_HISTORY));
}

#[test]
fn the_only_active_replica_set_or_the_latest_is_scaled_directly() {
    let a = rs("a", 0, 0, None);
    let b = rs("b", 0, 5, None);
    assert_eq!(
        find_active_or_latest(None, &[a.clone(), b.clone()])
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("b")
    );
    let c = rs("c", 2, 1, None);
    assert_eq!(
        find_active_or_latest(Some(&c), std::slice::from_ref(&a))
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("c")
    );
    assert!(find_active_or_latest(Some(&c), &[rs("d", 1, 0, None)]).is_none());
}

#[test]
fn a_condition_keeps_its_transition_time_when_only_the_reason_changes() {
    let t0 = Timestamp::from_second(1_700_000_000).unwrap();
    let t1 = Timestamp::from_second(1_700_000_100).unwrap();
    let mut status = DeploymentStatus::default();
    set_condition(
        &mut status,
        new_condition("Progressing", "True", "A", "a", t0),
    );
    set_condition(
        &mut status,
        new_condition("Progressing", "True", "A", "changed", t1),
    );
    assert_eq!(
        get_condition(&status, "Progressing")
            .unwrap()
            .message
            .as_deref(),
        Some("a")
    );
    set_condition(
        &mut status,
        new_condition("Progressing", "True", "B", "b", t1),
    );
    let c = get_condition(&status, "Progressing").unwrap();
    assert_eq!(c.last_transition_time, Some(Time(t0)));
    assert_eq!(c.last_update_time, Some(Time(t1)));
}

#[test]
fn progress_times_out_only_after_the_deadline() {
    let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
    d.spec.opt_mut().unwrap().progress_deadline_seconds = Some(10);
    let t0 = Timestamp::from_second(1_700_000_000).unwrap();
    let mut status = DeploymentStatus::default();
    set_condition(
        &mut status,
        new_condition("Progressing", "True", reasons::RS_UPDATED, "x", t0),
    );
    let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
    assert!(!deployment_timed_out(&d, &status, at(10)));
    assert!(deployment_timed_out(&d, &status, at(11)));
}
