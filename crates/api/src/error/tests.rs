//! Unit tests of the error type and its wire form.

use super::*;
use kube_core::response::{Status, StatusCause};

fn every_variant() -> Vec<Error> {
    vec![
        Error::NotFound {
            resource: "pods".into(),
            name: "web".into(),
        },
        Error::NotFound {
            resource: "deployments.apps".into(),
            name: "web".into(),
        },
        Error::AlreadyExists {
            resource: "leases.coordination.k8s.io".into(),
            name: "lock".into(),
        },
        Error::Conflict {
            resource: "pods".into(),
            name: "web".into(),
            message: Error::OBJECT_MODIFIED.into(),
        },
        Error::Invalid {
            kind: "Deployment.apps".into(),
            name: "web".into(),
            causes: vec![
                FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
                FieldError::required("metadata.name", "name or generateName is required"),
                FieldError::duplicate("spec.containers[1].name", "app"),
                FieldError::not_supported("spec.restartPolicy", "Sometimes", ["Always", "Never"]),
                FieldError::forbidden("spec.nodeName", "may not be set on create"),
                FieldError::too_long("metadata.name", 63),
                FieldError::too_many("spec.containers", 1),
                FieldError::not_found("spec.volumes[0].secret", "missing"),
                FieldError::internal("spec", "validator crashed"),
                FieldError::type_invalid("spec.paused", "yes", "must be a boolean"),
                FieldError::invalid("metadata.labels", "a: b", "tricky: value"),
            ],
        },
        Error::Invalid {
            kind: "Pod".into(),
            name: "empty".into(),
            causes: vec![],
        },
        Error::bad_request("the namespace of the object does not match the request"),
        Error::bad_field("metadata.name", "may not contain '/'"),
        Error::Gone {
            message: "too old resource version: 5 (42)".into(),
        },
        Error::Expired {
            message: "The provided continue parameter is too old".into(),
        },
        Error::RequestEntityTooLarge {
            message: "request is too large".into(),
        },
        Error::TooManyRequests {
            message: "slow down".into(),
            retry_after_seconds: Some(3),
        },
        Error::TooManyRequests {
            message: "slow down".into(),
            retry_after_seconds: None,
        },
        Error::Unauthorized {
            message: "Unauthorized".into(),
        },
        Error::Forbidden {
            message: "pods \"web\" is forbidden: no".into(),
        },
        Error::MethodNotAllowed {
            message: "the server does not allow this method".into(),
        },
        Error::UnsupportedMediaType {
            message: "apply patches are not supported".into(),
        },
        Error::Timeout {
            message: "the request timed out".into(),
        },
        Error::ServiceUnavailable {
            message: "storage is unavailable".into(),
        },
        Error::internal("etcd said no"),
    ]
}

#[test]
fn every_variant_round_trips_through_status() {
    for error in every_variant() {
        let status = error.to_status();
        assert_eq!(status.code, error.code(), "{error:?}");
        assert_eq!(status.reason, error.reason(), "{error:?}");
        assert_eq!(status.message, error.to_string(), "{error:?}");
        assert!(status.is_failure());
        let back = Error::from_status(status);
        assert_eq!(back, error);
    }
}

#[test]
fn every_variant_round_trips_through_status_json() {
    for error in every_variant() {
        let json = serde_json::to_string(&error.to_status()).unwrap();
        let status: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(Error::from(status), error, "{json}");
    }
}

#[test]
fn not_found_messages_read_like_kubernetes() {
    let pods = Error::NotFound {
        resource: "pods".into(),
        name: "web".into(),
    };
    assert_eq!(pods.to_string(), r#"pods "web" not found"#);
    let deployments = Error::NotFound {
        resource: "deployments.apps".into(),
        name: "web".into(),
    };
    assert_eq!(
        deployments.to_string(),
        r#"deployments.apps "web" not found"#
    );
    let details = deployments.to_status().details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("web", "apps", "deployments")
    );
}

#[test]
fn already_exists_and_conflict_messages_read_like_kubernetes() {
    let exists = Error::AlreadyExists {
        resource: "pods".into(),
        name: "web".into(),
    };
    assert_eq!(exists.to_string(), r#"pods "web" already exists"#);
    let conflict = Error::Conflict {
        resource: "pods".into(),
        name: "web".into(),
        message: Error::OBJECT_MODIFIED.into(),
    };
    assert_eq!(
        conflict.to_string(),
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
}

#[test]
fn invalid_message_with_one_cause_has_no_brackets() {
    let error = Error::Invalid {
        kind: "Deployment.apps".into(),
        name: "web".into(),
        causes: vec![FieldError::invalid(
            "spec.replicas",
            -1,
            "must be greater than or equal to 0",
        )],
    };
    assert_eq!(
        error.to_string(),
        r#"Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#
    );
    let status = error.to_status();
    let details = status.details.unwrap();
    assert_eq!(
        (details.kind.as_str(), details.group.as_str()),
        ("Deployment", "apps")
    );
    assert_eq!(
        details.causes,
        vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: -1: must be greater than or equal to 0".into(),
            field: "spec.replicas".into(),
        }]
    );
}

#[test]
fn invalid_message_with_several_causes_joins_them_in_brackets() {
    let error = Error::Invalid {
        kind: "Pod".into(),
        name: "web".into(),
        causes: vec![
            FieldError::required("metadata.name", "name or generateName is required"),
            FieldError::invalid("metadata.labels", "a b", "must be a valid label value"),
        ],
    };
    assert_eq!(
        error.to_string(),
        r#"Pod "web" is invalid: [metadata.name: Required value: name or generateName is required, metadata.labels: Invalid value: "a b": must be a valid label value]"#
    );
}

#[test]
fn field_error_display_matches_apimachinery() {
    assert_eq!(
        FieldError::required("metadata.name", "name or generateName is required").to_string(),
        "metadata.name: Required value: name or generateName is required"
    );
    assert_eq!(
        FieldError::not_supported("spec.restartPolicy", "Sometimes", ["Always", "Never"])
            .to_string(),
        r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never""#
    );
    assert_eq!(
        FieldError::too_long("metadata.name", 63).to_string(),
        "metadata.name: Too long: may not be more than 63 bytes"
    );
    assert_eq!(
        FieldError::too_many("spec.containers", 3).to_string(),
        "spec.containers: Too many: must have at most 3 items"
    );
    assert_eq!(
        FieldError::duplicate("spec.ports[1].port", 80).to_string(),
        "spec.ports[1].port: Duplicate value: 80"
    );
    assert_eq!(
        FieldError::forbidden("spec.nodeName", "may not be changed").to_string(),
        "spec.nodeName: Forbidden: may not be changed"
    );
}

#[test]
fn field_error_reasons_match_apimachinery() {
    let reasons: Vec<&str> = [
        FieldError::required("f", ""),
        FieldError::invalid("f", 1, ""),
        FieldError::duplicate("f", 1),
        FieldError::not_supported("f", 1, ["2"]),
        FieldError::forbidden("f", ""),
        FieldError::too_long("f", 1),
        FieldError::too_many("f", 1),
    ]
    .iter()
    .map(FieldError::reason)
    .collect();
    assert_eq!(
        reasons,
        [
            "FieldValueRequired",
            "FieldValueInvalid",
            "FieldValueDuplicate",
            "FieldValueNotSupported",
            "FieldValueForbidden",
            "FieldValueTooLong",
            "FieldValueTooMany",
        ]
    );
}

#[test]
fn bad_field_names_the_field_in_status_causes() {
    let status = Error::bad_field("metadata.namespace", "must be empty").to_status();
    assert_eq!(status.code, 400);
    assert_eq!(status.message, "metadata.namespace: must be empty");
    let cause = &status.details.unwrap().causes[0];
    assert_eq!(cause.field, "metadata.namespace");
}

#[test]
fn only_transient_errors_are_retryable() {
    let retryable: Vec<&str> = every_variant()
        .iter()
        .filter(|e| e.is_retryable())
        .map(Error::reason)
        .collect();
    assert_eq!(
        retryable,
        [
            "TooManyRequests",
            "TooManyRequests",
            "Timeout",
            "ServiceUnavailable",
            "InternalError"
        ]
    );
}

#[test]
fn retry_after_comes_from_too_many_requests_only() {
    let error = Error::TooManyRequests {
        message: "slow down".into(),
        retry_after_seconds: Some(7),
    };
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(error.to_status().details.unwrap().retry_after_seconds, 7);
    assert_eq!(Error::internal("x").retry_after(), None);
}

#[test]
fn gone_and_expired_both_count_as_gone() {
    assert!(Error::Gone {
        message: "old".into()
    }
    .is_gone());
    assert!(Error::Expired {
        message: "old".into()
    }
    .is_gone());
    assert!(!Error::internal("x").is_gone());
}

#[test]
fn status_from_a_real_apiserver_parses_into_invalid() {
    let status: Status = serde_json::from_str(
        r#"{
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Lease.coordination.k8s.io \"test_\" is invalid: metadata.name: Invalid value: \"test_\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                "reason": "Invalid",
                "details": {
                    "name": "test_", "group": "coordination.k8s.io", "kind": "Lease",
                    "causes": [{
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: \"test_\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                        "field": "metadata.name"
                    }]
                },
                "code": 422
            }"#,
    )
    .unwrap();
    let message = status.message.clone();
    let error = Error::from_status(status);
    assert_eq!(error.to_string(), message);
    let Error::Invalid { kind, causes, .. } = error else {
        panic!("expected Invalid");
    };
    assert_eq!(kind, "Lease.coordination.k8s.io");
    assert_eq!(
        causes[0].kind,
        FieldErrorKind::Invalid {
            value: "\"test_\"".into()
        }
    );
}

#[test]
fn status_without_details_still_names_the_object() {
    let status = Status::failure(r#"pods "web" not found"#, "NotFound").with_code(404);
    assert_eq!(
        Error::from_status(status),
        Error::NotFound {
            resource: "pods".into(),
            name: "web".into()
        }
    );
}

#[test]
fn status_with_unknown_reason_falls_back_to_its_code() {
    let status = Status::failure("no such thing", "").with_code(503);
    assert_eq!(
        Error::from_status(status),
        Error::ServiceUnavailable {
            message: "no such thing".into()
        }
    );
    let status = Status::failure("boom", "SomethingNew").with_code(418);
    assert_eq!(Error::from_status(status), Error::internal("boom"));
}
