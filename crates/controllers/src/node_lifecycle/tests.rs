//! Unit tests of the node lifecycle controller's pure helpers.

use super::*;

fn taint(key: &str, added: i64) -> Taint {
    Taint {
        key: key.into(),
        effect: taints::NO_EXECUTE.into(),
        time_added: Some(Time(ts(added))),
        value: None,
    }
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn toleration(key: &str, operator: &str, seconds: Option<i64>) -> Toleration {
    Toleration {
        key: (!key.is_empty()).then(|| key.to_string()),
        operator: Some(operator.into()),
        toleration_seconds: seconds,
        ..Toleration::default()
    }
}

#[test]
fn tolerations_match_taints_as_kubernetes_matches_them() {
    let unreachable = taint(taints::UNREACHABLE, 0);
    assert!(toleration("", "Exists", None).tolerates(&unreachable));
    assert!(toleration(taints::UNREACHABLE, "Exists", None).tolerates(&unreachable));
    assert!(!toleration(taints::NOT_READY, "Exists", None).tolerates(&unreachable));
    let mut wrong_effect = toleration(taints::UNREACHABLE, "Exists", None);
    wrong_effect.effect = Some("NoSchedule".into());
    assert!(!wrong_effect.tolerates(&unreachable));
    let mut equal = toleration(taints::UNREACHABLE, "Equal", None);
    assert!(equal.tolerates(&unreachable));
    equal.value = Some("x".into());
    assert!(!equal.tolerates(&unreachable));
}

#[test]
fn eviction_waits_for_the_shortest_toleration_of_each_taint() {
    let start = |t: &Taint| t.time_added.as_ref().unwrap().0;
    let taints = [taint(taints::UNREACHABLE, 10), taint(taints::NOT_READY, 0)];
    assert_eq!(eviction_time(&[], &taints, start), Eviction::Now);
    let forever = [toleration("", "Exists", None)];
    assert_eq!(eviction_time(&forever, &taints, start), Eviction::Never);
    let timed = [
        toleration(taints::UNREACHABLE, "Exists", Some(60)),
        toleration(taints::UNREACHABLE, "Exists", Some(30)),
        toleration(taints::NOT_READY, "Exists", Some(100)),
    ];
    assert_eq!(eviction_time(&timed, &taints, start), Eviction::At(ts(40)));
    let negative = [toleration("", "Exists", Some(-5))];
    assert_eq!(
        eviction_time(&negative, &taints, start),
        Eviction::At(ts(0))
    );
    assert_eq!(eviction_time(&[], &[], start), Eviction::Never);
}

#[test]
fn zones_are_disrupted_as_kubernetes_counts_them() {
    assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
    assert_eq!(zone_state(1, 1, 0.55), ZoneState::Normal);
    assert_eq!(zone_state(2, 2, 0.55), ZoneState::Normal);
    assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
    assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
}

#[test]
fn a_taint_counts_from_the_moment_the_controller_saw_it_within_its_second() {
    let added = taint(taints::UNREACHABLE, 10);
    let precise = ts(10)
        .checked_add(SignedDuration::from_millis(700))
        .unwrap();
    assert_eq!(taint_start(&added, precise), precise);
    assert_eq!(taint_start(&added, ts(12)), ts(10));
    let mut bare = added.clone();
    bare.time_added = None;
    assert_eq!(taint_start(&bare, ts(12)), ts(12));
}
