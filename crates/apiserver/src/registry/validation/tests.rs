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
