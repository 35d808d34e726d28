//! Objects on the wire in Go struct order, as kube-apiserver writes them: a Pod read, listed
//! and watched through the in-process router, checked on the raw bytes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Client as _, ResourceInfo};
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

const DEADLINE: Duration = Duration::from_secs(120);

/// A registry with the `default` namespace and the Pod `web` in it.
async fn seeded_registry() -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    capstan_apiserver::testing::create_namespace(&*registry, "default").await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"zeta": "1", "app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    });
    registry
        .create(
            &ResourceInfo::builtin("", "Pod").unwrap(),
            Some("default"),
            serde_json::from_value(pod).unwrap(),
            &PostParams::default(),
        )
        .await
        .unwrap();
    registry
}

async fn get(registry: &Arc<Registry>, path: &str) -> (StatusCode, String) {
    let router = capstan_apiserver::http::router(registry.clone(), "127.0.0.1:6443".into());
    let response = router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

/// Panics unless every needle occurs in `text`, each after the one before.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle} not found after byte {from} in {text}"),
        }
    }
}

/// The key order of a Pod as kube-apiserver writes it.
const POD: &[&str] = &[
    r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"default","uid":"#,
    r#""resourceVersion":"#,
    r#""creationTimestamp":"#,
    r#""labels":{"app":"web","zeta":"1"}"#,
    r#""spec":{"#,
    r#""containers":[{"name":"web","image":"nginx""#,
];

#[tokio::test]
async fn a_pod_is_read_in_go_struct_order() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, body) = get(&registry, "/api/v1/namespaces/default/pods/web").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.starts_with(POD[0]), "{body}");
        assert_in_order(&body, POD);
    })
    .await;
}

#[tokio::test]
async fn a_pod_list_is_kind_api_version_metadata_items_in_go_struct_order() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, body) = get(&registry, "/api/v1/namespaces/default/pods").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(
            body.starts_with(r#"{"kind":"PodList","apiVersion":"v1","metadata":{"#),
            "{body}"
        );
        let items = body.find(r#""items":["#).expect("items");
        assert_in_order(&body[items..], &POD[1..]);
        assert!(body[items..].contains(r#"{"name":"web","namespace":"default","uid":"#));
    })
    .await;
}

#[tokio::test]
async fn a_pod_watch_streams_events_with_the_type_first_and_the_pod_in_go_struct_order() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, body) = get(
            &registry,
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion=0&timeoutSeconds=1",
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let first = body.lines().next().expect("an event");
        assert!(first.starts_with(r#"{"type":"ADDED","object":"#), "{first}");
        assert_in_order(first, POD);
    })
    .await;
}

#[tokio::test]
async fn an_error_is_a_status_in_go_struct_order() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, body) = get(&registry, "/api/v1/namespaces/default/pods/missing").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert!(
            body.starts_with(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#
            ),
            "{body}"
        );
        assert_in_order(
            &body,
            &[
                r#""reason":"NotFound""#,
                r#""details":{"name":"missing""#,
                r#""code":404}"#,
            ],
        );
    })
    .await;
}
