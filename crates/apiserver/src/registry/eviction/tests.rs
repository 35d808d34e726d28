//! Unit tests of the eviction subresource's request reading and Pod rules (the HTTP paths
//! are in `tests/pod_subresources.rs`).

use capstan_api::k8s_openapi::api::core::v1::PodStatus;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

fn pod(phase: &str) -> Pod {
    Pod {
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

#[test]
fn an_eviction_names_its_pod_and_carries_delete_options() {
    let eviction = json!({ "apiVersion": "policy/v1beta1", "kind": "Eviction",
        "metadata": { "name": "web-1" },
        "deleteOptions": { "gracePeriodSeconds": 5, "dryRun": ["All"],
                           "preconditions": { "uid": "u-1" }, "propagationPolicy": "Background" } });
    let request = read_eviction("web-1", &eviction, false).unwrap();
    assert!(request.dry_run);
    assert_eq!(request.params.grace_period_seconds, Some(5));
    assert_eq!(
        request.params.preconditions.unwrap().uid.as_deref(),
        Some("u-1")
    );
    assert!(matches!(
        request.params.propagation_policy,
        Some(PropagationPolicy::Background)
    ));

    let other = read_eviction("web-2", &eviction, false).unwrap_err();
    assert_eq!(
        other.to_string(),
        "name in URL does not match name in Eviction object"
    );
    let wrong = json!({ "kind": "Pod", "metadata": { "name": "web-1" } });
    assert_eq!(
        read_eviction("web-1", &wrong, false).unwrap_err().code(),
        400
    );
    let bad_dry_run =
        json!({ "metadata": { "name": "web-1" }, "deleteOptions": { "dryRun": ["x"] } });
    assert_eq!(
        read_eviction("web-1", &bad_dry_run, false)
            .unwrap_err()
            .code(),
        422
    );
    let plain = json!({ "metadata": { "name": "web-1" } });
    assert!(read_eviction("web-1", &plain, true).unwrap().params.dry_run);
}

#[test]
fn pods_that_no_longer_count_skip_the_budget_and_running_ones_are_pinned() {
    for phase in ["Pending", "Succeeded", "Failed"] {
        assert!(can_ignore_budget(&pod(phase)), "{phase}");
    }
    let running = pod("Running");
    assert!(!can_ignore_budget(&running));
    assert!(should_enforce_resource_version(&running));
    assert!(should_enforce_resource_version(&pod("Pending")));
    assert!(!should_enforce_resource_version(&pod("Succeeded")));
    let mut deleting = pod("Running");
    deleting.metadata.deletion_timestamp =
        Some(Time(capstan_api::k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    assert!(can_ignore_budget(&deleting));
    assert!(!should_enforce_resource_version(&deleting));
}

#[test]
fn refusals_carry_kubernetes_status_codes_reasons_and_causes() {
    let refusal = EvictionError::DisruptionBudget {
        cause: "The disruption budget web needs 2 healthy pods and has 2 currently".into(),
        retry_after_seconds: 0,
    };
    let status = refusal.to_status();
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(status.message, BUDGET_REFUSAL);
    let details = status.details.unwrap();
    assert_eq!(details.causes[0].reason, DISRUPTION_BUDGET_CAUSE);
    let multiple = EvictionError::MultipleBudgets.to_status();
    assert_eq!(
        (multiple.code, multiple.message.as_str()),
        (500, MULTIPLE_BUDGETS)
    );
    assert_eq!(still_processing("db").code(), 429);
}
