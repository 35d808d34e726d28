use serde_json::json;

use super::*;

/// The keys of `text` in the order they appear, as `"key":` spellings are found.
fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{needle} not in {text}"))
}

fn assert_in_order(text: &str, needles: &[&str]) {
    let positions: Vec<usize> = needles.iter().map(|n| position(text, n)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{needles:?} out of order in {text}"
    );
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "uid": "u-1",
            "namespace": "default",
            "name": "web",
            "labels": {"zeta": "1", "alpha": "2"},
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "resourceVersion": "7"
        },
        "status": {"replicas": 1},
        "spec": {
            "template": {
                "spec": {"containers": [{"image": "nginx", "name": "web", "ports": [{"protocol": "TCP", "containerPort": 80}]}]},
                "metadata": {"labels": {"app": "web"}}
            },
            "selector": {"matchLabels": {"app": "web"}},
            "replicas": 3
        }
    })
}

#[test]
fn a_deployment_is_written_in_go_struct_order() {
    let text = String::from_utf8(to_vec(&deployment())).unwrap();
    assert!(text.starts_with(r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"default","uid":"u-1","resourceVersion":"7","creationTimestamp""#), "{text}");
    assert_in_order(&text, &[r#""metadata""#, r#""spec""#, r#""status""#]);
    assert_in_order(
        &text,
        &[r#""replicas":3"#, r#""selector""#, r#""template""#],
    );
    assert_in_order(&text, &[r#""name":"web","image""#, r#""ports""#]);
    assert_in_order(&text, &[r#""containerPort":80"#, r#""protocol""#]);
    assert!(
        text.contains(r#""labels":{"alpha":"2","zeta":"1"}"#),
        "{text}"
    );
    let reread: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reread, deployment());
}

#[test]
fn keys_a_message_does_not_declare_come_after_the_declared_ones_sorted() {
    let mut object = deployment();
    object["spec"]["zzz"] = json!(1);
    object["spec"]["aaa"] = json!(2);
    object["extra"] = json!(true);
    let text = String::from_utf8(to_vec(&object)).unwrap();
    assert_in_order(&text, &[r#""template""#, r#""aaa":2"#, r#""zzz":1"#]);
    assert!(text.ends_with(r#","extra":true}"#), "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), object);
}

#[test]
fn inline_fields_take_the_place_of_the_inline_field() {
    // ConfigMapEnvSource embeds LocalObjectReference (name) before `optional`.
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "spec": {"containers": [{"name": "c", "envFrom": [{"optional": true, "configMapRef": {"optional": false, "name": "cm"}}]}]}
    });
    let text = String::from_utf8(to_vec(&pod)).unwrap();
    assert!(
        text.contains(r#""configMapRef":{"name":"cm","optional":false}"#),
        "{text}"
    );
}

#[test]
fn a_custom_resource_is_written_with_sorted_keys() {
    let object = json!({
        "kind": "Widget", "apiVersion": "example.com/v1",
        "metadata": {"namespace": "default", "name": "w"},
        "spec": {"size": 1}
    });
    let text = String::from_utf8(to_vec(&object)).unwrap();
    assert_eq!(text, serde_json::to_string(&object).unwrap());
    assert!(text.starts_with(r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"default"}"#), "{text}");
}

#[test]
fn a_list_is_kind_api_version_metadata_items_with_items_in_struct_order() {
    let list = json!({
        "items": [
            {"metadata": {"namespace": "default", "name": "a"}, "kind": "Pod", "apiVersion": "v1"},
            {"metadata": {"uid": "x", "name": "b"}, "spec": {"containers": []}}
        ],
        "metadata": {"resourceVersion": "9", "continue": "c"},
        "apiVersion": "v1",
        "kind": "PodList"
    });
    let text = String::from_utf8(to_vec(&list)).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"c"},"items":[{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"default"}},{"metadata":{"name":"b","uid":"x"},"spec":{"containers":[]}}]}"#
    );
}

#[test]
fn a_watch_event_has_its_type_first_and_its_object_in_struct_order() {
    let event = json!({"type": "ADDED", "object": deployment()});
    let text = String::from_utf8(to_vec(&event)).unwrap();
    assert!(text.starts_with(r#"{"type":"ADDED","object":{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web""#), "{text}");
    let mut line = Vec::new();
    write_event(&mut line, "ADDED", &deployment());
    assert_eq!(String::from_utf8(line).unwrap(), text);
}

#[test]
fn a_status_follows_the_meta_v1_status_struct() {
    let status = json!({
        "code": 404, "details": {"kind": "pods", "name": "x"}, "message": "not found",
        "metadata": {}, "reason": "NotFound", "status": "Failure", "apiVersion": "v1", "kind": "Status"
    });
    let text = String::from_utf8(to_vec(&status)).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
    );
}

#[test]
fn maps_of_messages_are_sorted_by_key_with_values_in_struct_order() {
    let node = json!({
        "kind": "Node", "apiVersion": "v1",
        "status": {"capacity": {"memory": "1Gi", "cpu": "2"}}
    });
    let text = String::from_utf8(to_vec(&node)).unwrap();
    assert!(
        text.contains(r#""capacity":{"cpu":"2","memory":"1Gi"}"#),
        "{text}"
    );
}

#[test]
fn values_without_a_kind_are_written_as_serde_json_writes_them() {
    for value in [
        json!(null),
        json!([1, "a"]),
        json!({"b": 1, "a": {"d": 2, "c": 3}}),
    ] {
        assert_eq!(to_vec(&value), serde_json::to_vec(&value).unwrap());
    }
}
