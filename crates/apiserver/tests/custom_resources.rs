//! CustomResourceDefinitions served at run time, through the HTTP router in process and with
//! the real `kubectl`: establishment, validation (schema and CEL), pruning, defaults, several
//! versions, the status and scale subresources, printer columns, short names, categories,
//! watch, field selectors, deletion and restart.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::WatchEvent;
use capstan_api::testing::within;
use capstan_api::{Client, ResourceInfo};
use capstan_apiserver::apiextensions::serve_custom_resources;
use capstan_apiserver::registry::Registry;
use capstan_store::memory::MemoryStore;
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_secs(30);
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-validations": [
                                    {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
                                ],
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 0, "default": 1},
                                    "maxReplicas": {"type": "integer", "default": 10},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "selector": {"type": "string"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer"},
                                    "selector": {"type": "string"},
                                },
                            },
                        },
                    }},
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"},
                    },
                    "additionalPrinterColumns": [
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    ],
                },
                {
                    "name": "v2", "served": true, "storage": false,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                    "additionalPrinterColumns": [
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    ],
                },
            ],
        },
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

/// A registry over `store` with the CRD controller running, and its router.
fn serve(
    store: Arc<MemoryStore>,
) -> (
    Arc<Registry>,
    Router,
    capstan_apiserver::apiextensions::CustomResourceController,
) {
    let registry = Arc::new(Registry::new(store));
    let controller = serve_custom_resources(registry.clone());
    let app = capstan_apiserver::http::router(registry.clone(), "127.0.0.1:6443".into());
    (registry, app, controller)
}

async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_with(
        app,
        method,
        path,
        body,
        "application/json",
        "application/json",
    )
    .await
}

async fn call_with(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    content_type: &str,
    accept: &str,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, accept)
        .body(match body {
            Some(body) => Body::from(body.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn condition<'a>(crd: &'a Value, kind: &str) -> Option<&'a Value> {
    crd["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Creates the widget CRD and waits until it is Established; returns how long that took.
async fn establish(app: &Router) -> Duration {
    let started = Instant::now();
    let (code, body) = call(app, "POST", CRDS, Some(widget_crd())).await;
    assert_eq!(code, 201, "{body}");
    loop {
        let (_, crd) = call(app, "GET", &format!("{CRDS}/widgets.example.com"), None).await;
        if condition(&crd, "Established").is_some_and(|c| c["status"] == "True") {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_crd_is_established_within_a_second_and_its_group_is_served() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        assert_eq!(call(&app, "GET", WIDGETS, None).await.0, 404);
        assert_eq!(call(&app, "GET", "/apis/example.com/v1", None).await.0, 404);
        let took = establish(&app).await;
        assert!(took < Duration::from_secs(1), "established after {took:?}");
        let (_, crd) = call(&app, "GET", &format!("{CRDS}/widgets.example.com"), None).await;
        assert_eq!(
            condition(&crd, "NamesAccepted").unwrap()["reason"],
            "NoConflicts"
        );
        assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
        assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(
            crd["metadata"]["finalizers"],
            json!(["customresourcecleanup.apiextensions.k8s.io"])
        );
        let (code, list) = call(&app, "GET", WIDGETS, None).await;
        assert_eq!((code, list["kind"].as_str()), (200, Some("WidgetList")));
        let (_, discovery) = call(&app, "GET", "/apis/example.com/v1", None).await;
        let widgets = discovery["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "widgets")
            .unwrap()
            .clone();
        assert_eq!(widgets["shortNames"], json!(["wd"]));
        assert_eq!(widgets["categories"], json!(["all"]));
        let (_, openapi) = call(&app, "GET", "/openapi/v3/apis/example.com/v1", None).await;
        let schemas = openapi["components"]["schemas"].as_object().unwrap();
        let schema = &schemas["com.example.v1.Widget"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["replicas"]["type"],
            "integer",
            "{:?}",
            schemas.keys().collect::<Vec<_>>()
        );
    })
    .await;
}

#[tokio::test]
async fn a_second_crd_with_the_same_names_is_not_accepted() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        let mut copy = widget_crd();
        copy["metadata"]["name"] = "gadgets.example.com".into();
        copy["spec"]["names"] =
            json!({"plural": "gadgets", "singular": "gadget", "kind": "Widget"});
        assert_eq!(call(&app, "POST", CRDS, Some(copy)).await.0, 201);
        loop {
            let (_, crd) = call(&app, "GET", &format!("{CRDS}/gadgets.example.com"), None).await;
            if let Some(names) = condition(&crd, "NamesAccepted") {
                assert_eq!(names["status"], "False");
                assert_eq!(names["reason"], "KindConflict");
                assert_eq!(names["message"], "\"Widget\" is already in use");
                assert_eq!(condition(&crd, "Established").unwrap()["status"], "False");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_widgets_are_refused_with_kubernetes_messages() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        let (code, status) = call(&app, "POST", WIDGETS, Some(widget("w", json!({"replicas": "three"})))).await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");
        assert!(
            status["message"].as_str().unwrap().contains(
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
            ),
            "{status}"
        );
        let (code, status) = call(&app, "POST", WIDGETS, Some(widget("w", json!({"color": "green"})))).await;
        assert_eq!(code, 422);
        assert!(status["message"].as_str().unwrap().contains(r#"spec.color: Unsupported value: "green": supported values: "red", "blue""#), "{status}");
        let (code, status) = call(&app, "POST", WIDGETS, Some(widget("w", json!({"replicas": 5, "maxReplicas": 3})))).await;
        assert_eq!(code, 422);
        assert!(status["message"].as_str().unwrap().contains(r#"spec: Invalid value: "object": replicas must not exceed maxReplicas"#), "{status}");
    })
    .await;
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_filled() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        let mut object = widget("w", json!({"color": "red", "shape": "round"}));
        object["extra"] = json!(true);
        let (code, created) = call(&app, "POST", WIDGETS, Some(object)).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(
            created["spec"],
            json!({"color": "red", "replicas": 1, "maxReplicas": 10})
        );
        assert!(created.get("extra").is_none());
    })
    .await;
}

#[tokio::test]
async fn objects_are_stored_in_the_storage_version_and_served_in_each() {
    within(DEADLINE, async {
        let store = Arc::new(MemoryStore::new());
        let (registry, app, _controller) = serve(store.clone());
        establish(&app).await;
        let v2 = json!({"apiVersion": "example.com/v2", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"anything": 1}});
        let (code, created) = call(&app, "POST", "/apis/example.com/v2/namespaces/default/widgets", Some(v2)).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(created["apiVersion"], "example.com/v2");
        let stored = capstan_store::StoreExt::get(&**registry.store(), "/registry/example.com/widgets/default/w2".to_string())
            .await
            .unwrap()
            .unwrap();
        let stored: Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(stored["apiVersion"], "example.com/v1");
        let (_, read) = call(&app, "GET", &format!("{WIDGETS}/w2"), None).await;
        assert_eq!(read["apiVersion"], "example.com/v1");
        let (_, list) = call(&app, "GET", "/apis/example.com/v2/namespaces/default/widgets", None).await;
        assert_eq!(list["items"][0]["apiVersion"], "example.com/v2");
    })
    .await;
}

#[tokio::test]
async fn status_and_scale_subresources_follow_the_crd() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        let (_, created) = call(
            &app,
            "POST",
            WIDGETS,
            Some(widget("w", json!({"replicas": 2}))),
        )
        .await;
        // A write of the object ignores status; a status write ignores the rest.
        let mut changed = created.clone();
        changed["status"] = json!({"replicas": 7});
        let (code, updated) =
            call(&app, "PUT", &format!("{WIDGETS}/w"), Some(changed.clone())).await;
        assert_eq!(code, 200, "{updated}");
        assert!(updated.get("status").is_none());
        changed["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"].clone();
        changed["spec"]["replicas"] = json!(9);
        changed["status"] = json!({"replicas": 2, "selector": "app=w"});
        let (code, updated) =
            call(&app, "PUT", &format!("{WIDGETS}/w/status"), Some(changed)).await;
        assert_eq!(code, 200, "{updated}");
        assert_eq!(
            (
                updated["spec"]["replicas"].as_i64(),
                updated["status"]["replicas"].as_i64()
            ),
            (Some(2), Some(2))
        );
        let (code, scale) = call(&app, "GET", &format!("{WIDGETS}/w/scale"), None).await;
        assert_eq!(code, 200, "{scale}");
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=w");
        let (code, scale) = call_with(
            &app,
            "PATCH",
            &format!("{WIDGETS}/w/scale"),
            Some(json!({"spec": {"replicas": 4}})),
            "application/merge-patch+json",
            "application/json",
        )
        .await;
        assert_eq!(
            (code, scale["spec"]["replicas"].as_i64()),
            (200, Some(4)),
            "{scale}"
        );
        let (_, read) = call(&app, "GET", &format!("{WIDGETS}/w"), None).await;
        assert_eq!(read["spec"]["replicas"], 4);
    })
    .await;
}

#[tokio::test]
async fn tables_show_the_printer_columns() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        call(
            &app,
            "POST",
            WIDGETS,
            Some(widget("w", json!({"replicas": 3, "color": "blue"}))),
        )
        .await;
        let (code, table) = call_with(
            &app,
            "GET",
            WIDGETS,
            None,
            "application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .await;
        assert_eq!(code, 200, "{table}");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Replicas", "Color"]);
        assert_eq!(table["rows"][0]["cells"], json!(["w", 3, "blue"]));
    })
    .await;
}

#[tokio::test]
async fn watches_and_field_selectors_serve_custom_resources() {
    within(DEADLINE, async {
        let (registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        let widgets = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        let mut events = registry
            .watch(&widgets, Some("default"), &WatchParams::default(), "0")
            .await
            .unwrap();
        call(&app, "POST", WIDGETS, Some(widget("a", json!({})))).await;
        call(&app, "POST", WIDGETS, Some(widget("b", json!({})))).await;
        match events.next().await {
            Some(Ok(WatchEvent::Added(object))) => {
                assert_eq!(object.metadata.name.as_deref(), Some("a"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let params = ListParams::default().fields("metadata.name=b");
        let list = registry
            .list(&widgets, Some("default"), &params)
            .await
            .unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["b"]);
        let (code, list) = call(
            &app,
            "GET",
            "/apis/example.com/v1/widgets?fieldSelector=metadata.namespace%3Ddefault",
            None,
        )
        .await;
        assert_eq!(
            (code, list["items"].as_array().map(Vec::len)),
            (200, Some(2))
        );
    })
    .await;
}

#[tokio::test]
async fn deleting_the_crd_deletes_its_widgets_and_unserves_them() {
    within(DEADLINE, async {
        let (registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        establish(&app).await;
        call(&app, "POST", WIDGETS, Some(widget("a", json!({})))).await;
        let (code, _) = call(&app, "DELETE", &format!("{CRDS}/widgets.example.com"), None).await;
        assert_eq!(code, 200);
        loop {
            let (code, _) = call(&app, "GET", &format!("{CRDS}/widgets.example.com"), None).await;
            if code == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(call(&app, "GET", WIDGETS, None).await.0, 404);
        let left = capstan_store::StoreExt::get(
            &**registry.store(),
            "/registry/example.com/widgets/default/a".to_string(),
        )
        .await
        .unwrap();
        assert!(left.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_restarted_registry_serves_the_stored_crds_once_the_controller_syncs() {
    within(DEADLINE, async {
        let store = Arc::new(MemoryStore::new());
        {
            let (_registry, app, _controller) = serve(store.clone());
            establish(&app).await;
            call(&app, "POST", WIDGETS, Some(widget("a", json!({})))).await;
        }
        let (_registry, app, controller) = serve(store);
        controller.synced().await;
        let (code, list) = call(&app, "GET", WIDGETS, None).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["items"][0]["metadata"]["name"], "a");
    })
    .await;
}

#[tokio::test]
async fn invalid_crds_are_refused() {
    within(DEADLINE, async {
        let (_registry, app, _controller) = serve(Arc::new(MemoryStore::new()));
        let mut crd = widget_crd();
        crd["spec"]["conversion"] = json!({"strategy": "Webhook"});
        let (code, status) = call(&app, "POST", CRDS, Some(crd)).await;
        assert_eq!(code, 422, "{status}");
        assert!(status["message"].as_str().unwrap().contains(r#"spec.conversion.strategy: Unsupported value: "Webhook": supported values: "None""#), "{status}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// kubectl

mod kubectl {
    use super::*;
    use crate::support::kubectl::Kubectl;

    /// Writes `value` as JSON to the file `name` in kubectl's directory; returns its path.
    fn write(kubectl: &Kubectl, name: &str, value: &Value) -> String {
        let path = kubectl.write(name, value.to_string());
        path.to_string_lossy().into_owned()
    }

    #[tokio::test]
    async fn kubectl_applies_waits_for_gets_scales_and_deletes_a_crd() {
        within(Duration::from_secs(120), async {
            let kubectl = Kubectl::start().await;
            let crd = write(&kubectl, "crd.json", &widget_crd());
            kubectl.ok(&["apply", "-f", &crd]).await;
            kubectl
                .ok(&[
                    "wait",
                    "--for",
                    "condition=established",
                    "--timeout=10s",
                    "crd/widgets.example.com",
                ])
                .await;
            let mut object = widget("w1", json!({"replicas": 2, "color": "red"}));
            object["metadata"]["namespace"] = "default".into();
            let path = write(&kubectl, "w1.json", &object);
            kubectl.ok(&["apply", "-f", &path]).await;
            let table = kubectl.ok(&["get", "widgets"]).await;

            assert!(table.starts_with("NAME"), "{table}");
            assert!(
                table.contains("REPLICAS") && table.contains("COLOR"),
                "{table}"
            );
            assert!(table.contains("w1") && table.contains("red"), "{table}");
            let short = kubectl.ok(&["get", "wd", "-o", "name"]).await;
            assert_eq!(short.trim(), "widget.example.com/w1");
            kubectl.ok(&["scale", "widget/w1", "--replicas=5"]).await;
            let replicas = kubectl
                .ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"])
                .await;
            assert_eq!(replicas, "5");
            let all = kubectl.ok(&["get", "all"]).await;
            assert!(all.contains("widget.example.com/w1"), "{all}");
            kubectl.ok(&["delete", "crd", "widgets.example.com"]).await;
            let gone = kubectl.run(&["get", "widgets"]).await;
            assert!(!gone.success());
        })
        .await;
    }
}
