//! Server-side apply end to end: through the HTTP router in process, through the `Client`
//! trait, through a kube-rs client over HTTP, and with the real `kubectl`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client, Error};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_secs(60);
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, replicas: i64, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers}
            }
        }
    })
}

/// One request through the in-process router: (status, JSON body).
async fn call(
    registry: &Arc<Registry>,
    method: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, Value) {
    let router = capstan_apiserver::http::router(registry.clone(), "127.0.0.1:0".into());
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("user-agent", "kubectl/v1.32.4 (linux/amd64) kubernetes/abc")
        .body(Body::from(body))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn apply_http(
    registry: &Arc<Registry>,
    name: &str,
    query: &str,
    body: String,
) -> (u16, Value) {
    let path = format!("{DEPLOYMENTS}/{name}?{query}");
    call(
        registry,
        "PATCH",
        &path,
        "application/apply-patch+yaml",
        body,
    )
    .await
}

fn json(object: &Deployment) -> Value {
    serde_json::to_value(object).unwrap()
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_over_http_creates_then_merges_containers_of_two_managers() {
    within(DEADLINE, async {
        let registry = capstan_apiserver::testing::registry();
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n";
        let (code, created) = apply_http(&registry, "web", "fieldManager=alice", yaml.into()).await;
        assert_eq!(code, 200, "{created}");
        assert_eq!(managers(&created), [("alice".to_string(), "Apply".to_string())]);
        let entry = &created["metadata"]["managedFields"][0];
        assert_eq!(entry["apiVersion"], "apps/v1");
        assert_eq!(entry["fieldsType"], "FieldsV1");
        assert!(entry["time"].is_string());
        assert_eq!(
            entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}})
        );
        // A second manager adds its own container; both stay.
        let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}});
        let (code, merged) = apply_http(&registry, "web", "fieldManager=bob", sidecar.to_string()).await;
        assert_eq!(code, 200, "{merged}");
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "sidecar"]);
        // Applying the same configuration again changes nothing.
        let (_, again) = apply_http(&registry, "web", "fieldManager=alice", yaml.into()).await;
        assert_eq!(again["metadata"]["resourceVersion"], merged["metadata"]["resourceVersion"]);
    })
    .await;
}

#[tokio::test]
async fn a_conflict_is_a_409_status_with_field_manager_causes_and_force_takes_over() {
    within(DEADLINE, async {
        let registry = capstan_apiserver::testing::registry();
        let body = deployment("web", 2, json!([{"name": "web", "image": "nginx"}]));
        let (code, _) = call(&registry, "POST", DEPLOYMENTS, "application/json", body.to_string()).await;
        assert_eq!(code, 201);
        let scale = json!({"spec": {"replicas": 5}}).to_string();
        let (code, scaled) =
            call(&registry, "PATCH", &format!("{DEPLOYMENTS}/web"), "application/merge-patch+json", scale).await;
        assert_eq!(code, 200, "{scaled}");
        assert!(managers(&scaled).contains(&("kubectl".into(), "Update".into())));

        let config = deployment("web", 3, json!([{"name": "web", "image": "nginx"}]));
        let (code, status) = apply_http(&registry, "web", "fieldManager=ci", config.to_string()).await;
        assert_eq!(code, 409, "{status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["message"],
            r#"Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas"#
        );
        assert_eq!(
            status["details"]["causes"],
            json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\" using apps/v1", "field": ".spec.replicas"}])
        );
        let (code, forced) =
            apply_http(&registry, "web", "fieldManager=ci&force=true", config.to_string()).await;
        assert_eq!(code, 200, "{forced}");
        assert_eq!(forced["spec"]["replicas"], 3);
    })
    .await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_dry_run_stores_nothing() {
    within(DEADLINE, async {
        let registry = capstan_apiserver::testing::registry();
        let config = deployment("web", 1, json!([{"name": "web", "image": "nginx"}])).to_string();
        let (code, status) = apply_http(&registry, "web", "", config.clone()).await;
        assert_eq!(code, 422, "{status}");
        assert!(status["message"].as_str().unwrap().contains("fieldManager: Required value"));
        let (code, _) = apply_http(&registry, "web", "fieldManager=m", "a: [unclosed".into()).await;
        assert_eq!(code, 400);
        let (code, status) = call(&registry, "PATCH", &format!("{DEPLOYMENTS}/web?force=true"),
            "application/merge-patch+json", "{}".into()).await;
        assert_eq!(code, 422, "{status}");
        let (code, dry) = apply_http(&registry, "web", "fieldManager=m&dryRun=All", config).await;
        assert_eq!(code, 200, "{dry}");
        let (code, _) = call(&registry, "GET", &format!("{DEPLOYMENTS}/web"), "application/json", String::new()).await;
        assert_eq!(code, 404);
        let strict = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"bogus": 1}});
        let (code, _) = apply_http(&registry, "web", "fieldManager=m&fieldValidation=Strict", strict.to_string()).await;
        assert_eq!(code, 400);
    })
    .await;
}

#[tokio::test]
async fn the_client_trait_applies_removes_unapplied_fields_and_keeps_sets_and_atomic_lists() {
    within(DEADLINE, async {
        let client: Arc<dyn Client> = capstan_apiserver::testing::registry();
        let api: Api<Deployment> = Api::namespaced(client, "default");
        let mut config = deployment("web", 2, json!([{"name": "web", "image": "nginx", "args": ["a", "b"]}]));
        config["metadata"]["finalizers"] = json!(["example.com/a"]);
        let params = PatchParams::apply("mgr");
        let created = api.patch("web", &params, &Patch::Apply(config.clone())).await.unwrap();
        assert_eq!(json(&created)["spec"]["replicas"], 2);
        // Another manager adds a finalizer (a set) and replaces the args (an atomic list).
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "finalizers": ["example.com/b"]}});
        let both = api.patch("web", &PatchParams::apply("other"), &Patch::Apply(other)).await.unwrap();
        assert_eq!(both.metadata.finalizers.unwrap(), ["example.com/a", "example.com/b"]);
        let mut args = config.clone();
        args["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["c"]);
        let replaced = api.patch("web", &params, &Patch::Apply(args)).await.unwrap();
        let container = &json(&replaced)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!(["c"]));
        // `mgr` stops applying replicas and its finalizer: both go.
        let mut smaller = config.clone();
        smaller["spec"].as_object_mut().unwrap().remove("replicas");
        smaller["metadata"].as_object_mut().unwrap().remove("finalizers");
        let removed = api.patch("web", &params, &Patch::Apply(smaller)).await.unwrap();
        assert_eq!(removed.metadata.finalizers.clone().unwrap(), ["example.com/b"]);
        assert_eq!(json(&removed)["spec"]["replicas"], 1, "the default comes back");
        // A conflict through the trait is a typed error.
        let mut scaled = deployment("web", 9, json!([{"name": "web", "image": "nginx"}]));
        scaled["metadata"]["finalizers"] = json!(["example.com/b"]);
        let conflict = api.patch("web", &PatchParams::apply("third"), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "httpd"}]}}}})))
            .await
            .unwrap_err();
        assert!(matches!(conflict, Error::ApplyConflict { .. }), "{conflict:?}");
        // Create records an Update entry for its manager.
        let pp = PostParams { field_manager: Some("creator".into()), ..Default::default() };
        let made: Deployment = serde_json::from_value(deployment("other", 1, json!([{"name": "c", "image": "x"}]))).unwrap();
        let made = api.create(&pp, &made).await.unwrap();
        let entries = made.metadata.managed_fields.unwrap();
        assert_eq!(entries[0].manager.as_deref(), Some("creator"));
        assert_eq!(entries[0].operation.as_deref(), Some("Update"));
    })
    .await;
}

#[tokio::test]
async fn kube_rs_applies_with_force_over_http() {
    within(DEADLINE, async {
        let server = ApiServer::bind(
            capstan_apiserver::testing::registry(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let config = kube::Config::new(server.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api: kube::Api<Deployment> = kube::Api::namespaced(client, "default");
        let body = deployment("web", 2, json!([{"name": "web", "image": "nginx"}]));
        let params = kube::api::PatchParams::apply("my-controller");
        let applied = api
            .patch("web", &params, &kube::api::Patch::Apply(&body))
            .await
            .unwrap();
        let entries = applied.metadata.managed_fields.clone().unwrap();
        assert_eq!(entries[0].manager.as_deref(), Some("my-controller"));
        assert_eq!(entries[0].fields_type.as_deref(), Some("FieldsV1"));
        let other = deployment("web", 4, json!([{"name": "web", "image": "nginx"}]));
        let error = api
            .patch(
                "web",
                &kube::api::PatchParams::apply("other"),
                &kube::api::Patch::Apply(&other),
            )
            .await
            .unwrap_err();
        match error {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 409);
                assert!(
                    status.message.starts_with("Apply failed with 1 conflict"),
                    "{}",
                    status.message
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let forced = api
            .patch(
                "web",
                &kube::api::PatchParams::apply("other").force(),
                &kube::api::Patch::Apply(&other),
            )
            .await
            .unwrap();
        assert_eq!(json(&forced)["spec"]["replicas"], 4);
    })
    .await;
}

/// Writes a Deployment manifest of `replicas` copies of `image`, and returns its path.
fn manifest(kubectl: &Kubectl, name: &str, replicas: u32, image: &str) -> String {
    let path = kubectl.write(
        &format!("{name}-{replicas}-{}.yaml", image.replace([':', '/'], "-")),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        ports:\n        - containerPort: 80\n"
        ),
    );
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn kubectl_server_side_apply_is_idempotent_conflicts_after_scale_and_forces() {
    within(Duration::from_secs(120), async {
        let kubectl = Kubectl::start().await;
        let first = manifest(&kubectl, "web", 2, "nginx:1");
        let out = kubectl.ok(&["apply", "--server-side", "-f", &first]).await;
        assert!(out.contains("serverside-applied"), "{out}");
        let out = kubectl.ok(&["apply", "--server-side", "-f", &first]).await;
        assert!(out.contains("serverside-applied"), "{out}");
        let changed = manifest(&kubectl, "web", 2, "nginx:2");
        kubectl
            .ok(&["apply", "--server-side", "-f", &changed])
            .await;
        let image = kubectl
            .ok(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .await;
        assert_eq!(image, "nginx:2");
        kubectl
            .ok(&["scale", "deployment", "web", "--replicas=5"])
            .await;
        let more = manifest(&kubectl, "web", 3, "nginx:2");
        let refused = kubectl.run(&["apply", "--server-side", "-f", &more]).await;
        assert_eq!(refused.status.code(), Some(1));
        let stderr = &refused.stderr;
        assert!(
            stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl"),
            "{stderr}"
        );
        assert!(stderr.contains(".spec.replicas"), "{stderr}");
        kubectl
            .ok(&["apply", "--server-side", "--force-conflicts", "-f", &more])
            .await;
        let replicas = kubectl
            .ok(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .await;
        assert_eq!(replicas, "3");
        let fields = kubectl
            .ok(&[
                "get",
                "deployment",
                "web",
                "--show-managed-fields",
                "-o",
                "json",
            ])
            .await;
        let object: Value = serde_json::from_str(&fields).unwrap();
        assert!(
            managers(&object).contains(&("kubectl".into(), "Apply".into())),
            "{:?}",
            managers(&object)
        );
    })
    .await;
}

#[tokio::test]
async fn client_side_kubectl_apply_still_works_and_records_its_manager() {
    within(Duration::from_secs(120), async {
        let kubectl = Kubectl::start().await;
        let first = manifest(&kubectl, "api", 1, "nginx:1");
        kubectl.ok(&["apply", "-f", &first]).await;
        let second = manifest(&kubectl, "api", 2, "nginx:1");
        kubectl.ok(&["apply", "-f", &second]).await;
        let json_out = kubectl
            .ok(&[
                "get",
                "deployment",
                "api",
                "--show-managed-fields",
                "-o",
                "json",
            ])
            .await;
        let object: Value = serde_json::from_str(&json_out).unwrap();
        assert_eq!(object["spec"]["replicas"], 2);
        assert!(
            managers(&object).contains(&("kubectl-client-side-apply".into(), "Update".into())),
            "{:?}",
            managers(&object)
        );
    })
    .await;
}

#[tokio::test]
async fn status_patches_and_status_applies_change_the_status_only() {
    within(DEADLINE, async {
        let registry = capstan_apiserver::testing::registry();
        let containers = json!([{"name": "web", "image": "nginx"}]);
        let (code, _) = apply_http(
            &registry,
            "web",
            "fieldManager=alice",
            deployment("web", 2, containers).to_string(),
        )
        .await;
        assert_eq!(code, 200);
        // A merge patch of the status subresource keeps the spec as it was.
        let patch = json!({"spec": {"replicas": 9}, "status": {"observedGeneration": 1, "replicas": 2}});
        let (code, patched) = call(
            &registry,
            "PATCH",
            &format!("{DEPLOYMENTS}/web/status"),
            "application/merge-patch+json",
            patch.to_string(),
        )
        .await;
        assert_eq!(code, 200, "{patched}");
        assert_eq!(patched["status"]["replicas"], 2);
        assert_eq!(patched["spec"]["replicas"], 2);
        // A status apply (what kube-rs controllers send with `patch_status`) records its
        // manager on the status subresource.
        let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "status": {"readyReplicas": 1}});
        let (code, applied) = call(
            &registry,
            "PATCH",
            &format!("{DEPLOYMENTS}/web/status?fieldManager=status-writer"),
            "application/apply-patch+yaml",
            status.to_string(),
        )
        .await;
        assert_eq!(code, 200, "{applied}");
        assert_eq!(applied["status"]["readyReplicas"], 1);
        assert_eq!(applied["status"]["replicas"], 2);
        assert!(managers(&applied).contains(&("status-writer".to_string(), "Apply".to_string())));
        // A status apply never creates the object.
        let (code, missing) = call(
            &registry,
            "PATCH",
            &format!("{DEPLOYMENTS}/absent/status?fieldManager=status-writer"),
            "application/apply-patch+yaml",
            status.to_string().replace("\"web\"", "\"absent\""),
        )
        .await;
        assert_eq!(code, 404, "{missing}");
        // A kind without a status subresource has no status to patch.
        let (code, _) = call(
            &registry,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/settings/status",
            "application/merge-patch+json",
            "{}".into(),
        )
        .await;
        assert_eq!(code, 404);
    })
    .await;
}
