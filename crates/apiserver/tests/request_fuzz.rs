//! Property test (fuzzing) of the request decoding path: random methods, paths, content
//! types and bodies go through the whole router. The server never panics and never answers
//! 5xx to bad input; every error is a Kubernetes `Status` with the code it carries; and a
//! rejected write stores nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use capstan_apiserver::http::router;
use capstan_apiserver::registry::Registry;
use capstan_store::{memory::MemoryStore, Range, Store};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/api/v1/namespaces/default/configmaps".to_string()),
        Just("/api/v1/namespaces/default/configmaps/x".to_string()),
        Just("/apis/apps/v1/namespaces/default/deployments".to_string()),
        Just("/apis/apps/v1/namespaces/default/deployments/web/scale".to_string()),
        Just("/api/v1/nodes".to_string()),
        "/[a-z0-9/._%-]{0,40}",
        "/api/v1/namespaces/[a-zA-Z0-9%._-]{0,12}/[a-z]{0,12}(/[a-zA-Z0-9%._-]{0,12}){0,2}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok"}}"#.to_vec()),
        Just(br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec()),
        Just(br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec()),
        Just(br#"[1,2,3]"#.to_vec()),
        Just(br#"{"spec":{"replicas":-3}}"#.to_vec()),
        "[{}\\[\\]\":,a-z0-9 ]{0,60}".prop_map(String::into_bytes),
        "(apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [a-z]{1,5}\n)?[a-z: \n-]{0,30}"
            .prop_map(String::into_bytes),
    ]
}

fn content_type() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("application/json"),
        Just("application/yaml"),
        Just("application/merge-patch+json"),
        Just("application/strategic-merge-patch+json"),
        Just("application/json-patch+json"),
        Just("application/vnd.kubernetes.protobuf"),
        Just("text/plain"),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
    ]
}

/// The system namespaces, which the registry creates on its own when first needed (as
/// kube-apiserver's bootstrap does at start), whatever the request.
const SYSTEM_NAMESPACES: [&[u8]; 4] = [
    b"/registry/namespaces/default",
    b"/registry/namespaces/kube-system",
    b"/registry/namespaces/kube-public",
    b"/registry/namespaces/kube-node-lease",
];

/// What the store holds besides the system namespaces.
async fn stored(store: &dyn Store) -> Vec<capstan_store::KeyValue> {
    let mut stored = store.range(Range::prefix("/registry/")).await.unwrap().kvs;
    stored.retain(|kv| !SYSTEM_NAMESPACES.contains(&&kv.key[..]));
    stored
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        // Integration tests have no lib.rs for proptest to file regressions beside.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn bad_requests_never_panic_never_500_and_always_answer_a_status(
        method in method(),
        path in path(),
        query in "(\\?(labelSelector|fieldSelector|limit|watch|resourceVersion)=[a-z0-9=!(),%]{0,12})?",
        content_type in content_type(),
        body in body(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let app = router(Arc::new(Registry::new(store.clone())), "127.0.0.1:0".into());
            let before = stored(&*store).await;
            let watch = query.contains("watch=");
            let request = Request::builder()
                .method(method.clone())
                .uri(format!("{path}{query}"))
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.clone()))
                .unwrap();
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let code = response.status().as_u16();
            if code >= 400 {
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let status: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {bytes:?}")))?;
                prop_assert_eq!(&status["kind"], "Status");
                prop_assert_eq!(status["code"].as_u64(), Some(u64::from(code)));
                // The one 5xx a client can provoke is Kubernetes' own: a read at a
                // resourceVersion the store has not reached waits, then answers
                // 504 "Too large resource version".
                let future_revision = code == 504
                    && query.contains("resourceVersion=")
                    && status["reason"] == "Timeout"
                    && status["message"].as_str().is_some_and(|m| m.contains("Too large resource version"));
                prop_assert!(
                    code < 500 || future_revision,
                    "{method} {path}{query} ({content_type}) answered {code}: {status}"
                );
                // A rejected request stores nothing.
                let after = stored(&*store).await;
                prop_assert!(after == before, "a rejected request stored {:?}", after);
            } else if !watch {
                // Reading the body of a successful non-watch answer must work too.
                let _ = response.into_body().collect().await.unwrap();
            }
            Ok(())
        })?;
    }
}
