//! Unit tests of the validation: names, metadata and a few kinds, through [`validate`].

use capstan_api::ResourceInfo;
use serde_json::{json, Value};

use super::*;

fn fields(group: &str, kind: &str, object: Value) -> Vec<String> {
    let resource = ResourceInfo::builtin(group, kind).unwrap();
    validate(&resource, &object, None)
        .into_iter()
        .map(|cause| cause.field)
        .collect()
}

fn deployment(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn template(labels: Value, containers: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": containers}})
}

#[test]
fn name_rules_follow_kubernetes() {
    assert!(is_dns1123_subdomain("web.example-1"));
    assert!(!is_dns1123_subdomain("Web"));
    assert!(!is_dns1123_subdomain("web..x"));
    assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    assert!(is_dns1123_label("123-abc"));
    assert!(!is_dns1123_label("a.b"));
    assert!(!is_dns1123_label(&"a".repeat(64)));
    assert!(is_dns1035_label("my-service"));
    assert!(!is_dns1035_label("1service"));
}

#[test]
fn a_valid_deployment_has_no_errors() {
    let object = deployment(json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(json!({"app": "web"}), json!([{"name": "app", "image": "nginx"}])),
    }));
    assert_eq!(fields("apps", "Deployment", object), Vec::<String>::new());
}

#[test]
fn rbac_names_may_hold_colons() {
    let role = json!({"metadata": {"name": "system:controller:x"}});
    assert!(fields("rbac.authorization.k8s.io", "ClusterRole", role).is_empty());
    let pod = json!({"metadata": {"name": "system:x", "namespace": "default"},
                     "spec": {"containers": [{"name": "a", "image": "b"}]}});
    assert_eq!(fields("", "Pod", pod), ["metadata.name"]);
}

#[test]
fn port_names_are_iana_service_names() {
    assert!(is_port_name("http"));
    assert!(is_port_name("h2c-1"));
    assert!(!is_port_name("8080"));
    assert!(!is_port_name("a--b"));
    assert!(!is_port_name("averyveryverylongname"));
}

#[test]
fn both_gc_finalizers_together_are_invalid() {
    let object = json!({"metadata": {"name": "c", "namespace": "d",
                                     "finalizers": ["orphan", "foregroundDeletion"]}});
    assert_eq!(fields("", "ConfigMap", object), ["metadata.finalizers"]);
}

#[test]
fn an_unknown_strategy_type_is_not_supported() {
    let object = deployment(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "Sometimes"},
        "template": template(json!({"app": "web"}), json!([{"name": "app", "image": "nginx"}])),
    }));
    assert_eq!(fields("apps", "Deployment", object), ["spec.strategy.type"]);
}

#[test]
fn volume_mounts_must_name_a_volume() {
    let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "a", "image": "b",
                        "volumeMounts": [{"name": "cache", "mountPath": "/c"}]}],
    }});
    assert_eq!(
        fields("", "Pod", pod),
        ["spec.containers[0].volumeMounts[0].name"]
    );
}

#[test]
fn template_quantities_are_parsed_and_requests_stay_within_limits() {
    let object = deployment(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(json!({"app": "web"}), json!([{
            "name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": "2", "memory": "1GB"}, "limits": {"cpu": "1"}},
        }])),
    }));
    assert_eq!(
        fields("apps", "Deployment", object),
        [
            "spec.template.spec.containers[0].resources.requests[memory]",
            "spec.template.spec.containers[0].resources.requests",
        ]
    );
}

#[test]
fn pod_overhead_and_empty_dir_size_limits_are_quantities() {
    let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
        "overhead": {"cpu": "abc"},
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "-1Gi"}}],
        "containers": [{"name": "a", "image": "b", "resources": {"limits": {"cpu": "1"}}}],
    }});
    assert_eq!(
        fields("", "Pod", pod),
        ["spec.volumes[0].emptyDir.sizeLimit", "spec.overhead[cpu]"]
    );
}

#[test]
fn limit_ranges_and_quotas_hold_valid_quantities() {
    let range = json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"limits": [
        {"type": "Container", "max": {"cpu": "2"}, "defaultRequest": {"memory": "1x"}},
    ]}});
    assert_eq!(
        fields("", "LimitRange", range),
        ["spec.limits[0].defaultRequest[memory]"]
    );
    let quota = json!({"metadata": {"name": "q", "namespace": "d"},
                       "spec": {"hard": {"pods": "10", "requests.cpu": "-1"}}});
    assert_eq!(
        fields("", "ResourceQuota", quota),
        ["spec.hard[requests.cpu]"]
    );
}

#[test]
fn config_map_and_secret_keys_must_be_config_keys() {
    let config = json!({"metadata": {"name": "c", "namespace": "d"},
                        "data": {"ok.key": "1", "a/b": "2"}, "binaryData": {"..": "YQ=="}});
    assert_eq!(
        fields("", "ConfigMap", config),
        ["data[a/b]", "binaryData[..]"]
    );
    let secret = json!({"metadata": {"name": "s", "namespace": "d"}, "data": {"a b": "YQ=="}});
    assert_eq!(fields("", "Secret", secret), ["data[a b]"]);
}
