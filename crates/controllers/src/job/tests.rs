//! Unit tests of the Job controller's pure helpers.

use super::*;
use crate::util::controlled_by;
use capstan_api::k8s_openapi::api::core::v1::PodStatus;

#[test]
fn failure_backoff_starts_at_ten_seconds_doubles_and_caps_at_six_minutes() {
    assert_eq!(failure_backoff(0), Duration::ZERO);
    assert_eq!(failure_backoff(1), Duration::from_secs(10));
    assert_eq!(failure_backoff(2), Duration::from_secs(20));
    assert_eq!(failure_backoff(5), Duration::from_secs(160));
    assert_eq!(failure_backoff(6), Duration::from_secs(320));
    assert_eq!(failure_backoff(7), MAX_FAILURE_BACKOFF);
    assert_eq!(failure_backoff(200), MAX_FAILURE_BACKOFF);
}

#[test]
fn job_pods_carry_the_tracking_finalizer_labels_and_owner() {
    let job = Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("uid-pi".into()),
            ..ObjectMeta::default()
        },
        ..Job::default()
    };
    let pod = job_pod(&job);
    assert!(has_tracking_finalizer(&pod));
    assert!(controlled_by(&pod, "uid-pi"));
    let pod_labels = pod.metadata.labels.unwrap();
    assert_eq!(pod_labels[labels::JOB_NAME], "pi");
    assert_eq!(pod_labels[labels::CONTROLLER_UID], "uid-pi");
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
}

#[test]
fn a_pod_deleted_before_it_succeeded_counts_as_failed() {
    let mut pod = Pod {
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    assert!(!is_pod_failed(&pod));
    pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    assert!(is_pod_failed(&pod));
    pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(!is_pod_failed(&pod));
}
