//! Unit tests of the disruption controller's arithmetic.

use capstan_api::k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use capstan_api::k8s_openapi::api::policy::v1::{
    PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::k8s_openapi::jiff::{SignedDuration, Timestamp};
use capstan_api::kube_core::ObjectMeta;

use super::status::*;
use super::*;

fn pod(name: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

#[test]
fn percentages_scale_rounding_up_and_integers_stay() {
    let p = |s: &str| IntOrString::String(s.into());
    assert_eq!(scaled_value(&IntOrString::Int(2), 10, true), Ok(2));
    assert_eq!(scaled_value(&p("50%"), 3, true), Ok(2));
    assert_eq!(scaled_value(&p("50%"), 3, false), Ok(1));
    assert_eq!(scaled_value(&p("34%"), 3, true), Ok(2));
    assert_eq!(scaled_value(&p("100%"), 7, true), Ok(7));
    assert!(scaled_value(&p("5"), 7, true)
        .unwrap_err()
        .contains("string is not a percentage"));
}

#[test]
fn an_integer_min_available_expects_the_pods_found_and_others_the_controllers_scale() {
    let min = budget(Some(IntOrString::Int(2)), None);
    let expected = expectation(&min, 3, || panic!("no scale for an integer")).unwrap();
    assert_eq!((expected.expected, expected.desired_healthy), (3, 2));

    let percent = budget(Some(IntOrString::String("50%".into())), None);
    let expected = expectation(&percent, 2, || Ok((5, Vec::new()))).unwrap();
    assert_eq!((expected.expected, expected.desired_healthy), (5, 3));

    let max = budget(None, Some(IntOrString::Int(1)));
    let expected = expectation(&max, 2, || Ok((4, vec!["lonely".into()]))).unwrap();
    assert_eq!((expected.expected, expected.desired_healthy), (4, 3));
    assert_eq!(expected.unmanaged, ["lonely"]);

    let too_many = budget(None, Some(IntOrString::String("200%".into())));
    let expected = expectation(&too_many, 2, || Ok((4, Vec::new()))).unwrap();
    assert_eq!(expected.desired_healthy, 0);

    let failing = expectation(&max, 2, || Err("found no controllers for pod \"p\"".into()));
    assert_eq!(failing.unwrap_err(), "found no controllers for pod \"p\"");
}

#[test]
fn recently_evicted_and_terminating_pods_are_not_healthy_until_the_entry_expires() {
    let (a, b, mut c, d) = (
        pod("a", true),
        pod("b", true),
        pod("c", true),
        pod("d", false),
    );
    c.metadata.deletion_timestamp = Some(Time(at(0)));
    let mut pdb = budget(Some(IntOrString::Int(1)), None);
    pdb.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(BTreeMap::from([
            ("a".to_string(), Time(at(0))),
            ("c".to_string(), Time(at(0))),
            ("gone".to_string(), Time(at(0))),
        ])),
        ..PodDisruptionBudgetStatus::default()
    });
    let pods = [&a, &b, &c, &d];
    let now = at(60);
    let disrupted = disrupted_pods(&pdb, &pods, now);
    assert_eq!(disrupted.kept.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(disrupted.recheck, Some(at(120)));
    assert_eq!(count_healthy(&pods, &disrupted.kept, now), 1);

    let later = at(121);
    let disrupted = disrupted_pods(&pdb, &pods, later);
    assert!(disrupted.kept.is_empty());
    assert_eq!(disrupted.expired, ["a"]);
    assert_eq!(count_healthy(&pods, &disrupted.kept, later), 2);
}

#[test]
fn the_status_allows_what_is_healthy_beyond_the_desired_and_is_written_only_on_change() {
    let pdb = budget(Some(IntOrString::Int(2)), None);
    let figures = Figures {
        current_healthy: 3,
        desired_healthy: 2,
        expected: 3,
    };
    let updated = updated_status(&pdb, &figures, BTreeMap::new(), at(0)).expect("a change");
    let status = updated.status.clone().unwrap();
    assert_eq!(status::int(&status.disruptions_allowed), 1);
    assert_eq!(status::int(&status.expected_pods), 3);
    assert_eq!(status.observed_generation, Some(1));
    let condition = &status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        capstan_api::compat::text(&condition.reason),
        "SufficientPods"
    );
    assert_eq!(capstan_api::compat::text(&condition.status), "True");
    assert!(updated_status(&updated, &figures, BTreeMap::new(), at(5)).is_none());

    let short = Figures {
        current_healthy: 1,
        ..figures.clone()
    };
    assert_eq!(short.disruptions_allowed(), 0);
    let refused = updated_status(&updated, &short, BTreeMap::new(), at(10)).unwrap();
    let condition = &refused
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        capstan_api::compat::text(&condition.reason),
        "InsufficientPods"
    );
    assert_eq!(capstan_api::compat::text(&condition.status), "False");
    assert_eq!(
        Figures {
            current_healthy: 3,
            desired_healthy: 0,
            expected: 0
        }
        .disruptions_allowed(),
        0
    );
}

#[test]
fn a_failed_sync_allows_no_disruption_and_says_why() {
    let mut pdb = budget(None, Some(IntOrString::Int(1)));
    let figures = Figures {
        current_healthy: 3,
        desired_healthy: 2,
        expected: 3,
    };
    pdb = updated_status(&pdb, &figures, BTreeMap::new(), at(0)).unwrap();
    let safe = fail_safe(&pdb, "found no controllers for pod \"p\"", at(1));
    let status = safe.status.unwrap();
    assert_eq!(status::int(&status.disruptions_allowed), 0);
    let condition = &status.conditions.unwrap()[0];
    assert_eq!(capstan_api::compat::text(&condition.reason), "SyncFailed");
    assert_eq!(
        capstan_api::compat::text(&condition.message),
        "found no controllers for pod \"p\""
    );
    assert_eq!(
        condition.last_transition_time,
        capstan_api::compat::value(Time(at(1)))
    );
    let _ = SignedDuration::ZERO;
}
