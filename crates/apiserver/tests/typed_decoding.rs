//! Decode-then-admit, end to end: every write of a built-in kind (create, update, status
//! update, each kind of patch) is decoded into its k8s-openapi type first, so a value the type
//! cannot hold is refused with 400 and nothing is stored; ConfigMap and Secret keys, Secret
//! `stringData` and types, and resource quantities are validated as Kubernetes does.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use capstan_api::{
    k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret},
    kube_core::{
        params::{Patch, PatchParams, PostParams},
        DynamicObject,
    },
    testing::within,
    Api, Client, Error, ResourceInfo,
};
use capstan_apiserver::{http::router, registry::Registry};
use capstan_store::memory::MemoryStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// How long any one case may take.
const LIMIT: Duration = Duration::from_secs(20);

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(Arc::new(MemoryStore::new())))
}

fn builtin(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo::builtin(group, kind).unwrap()
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn deployment(name: &str, replicas: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            },
        },
    })
}

async fn create(
    registry: &Registry,
    group: &str,
    kind: &str,
    object: Value,
) -> Result<Value, Error> {
    let created = registry
        .create(
            &builtin(group, kind),
            Some("default"),
            dynamic(object),
            &PostParams::default(),
        )
        .await?;
    Ok(serde_json::to_value(created).unwrap())
}

fn expect_bad_request(error: Error, field: &str, words: &[&str]) {
    match error {
        Error::BadRequest {
            message,
            field: Some(found),
        } => {
            assert_eq!(found, field, "{message}");
            for word in words {
                assert!(message.contains(word), "{message:?} lacks {word:?}");
            }
        }
        other => panic!("expected a 400 naming {field}, got {other:?}"),
    }
}

fn expect_invalid(error: Error, field: &str, detail: &str) {
    match error {
        Error::Invalid { causes, .. } => assert!(
            causes
                .iter()
                .any(|cause| cause.field == field && cause.body().contains(detail)),
            "no cause at {field} saying {detail:?}: {causes:?}"
        ),
        other => panic!("expected a 422 naming {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_out_of_range_replica_count_is_refused_over_http_and_nothing_is_stored() {
    within(LIMIT, async {
        let registry = registry();
        let app = router(registry.clone(), "127.0.0.1:0".into());
        let body = deployment("web", json!(1_099_511_627_776_i64));
        let request = Request::builder()
            .method(Method::POST)
            .uri("/apis/apps/v1/namespaces/default/deployments")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let status: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(
            status["message"],
            "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot \
             unmarshal number 1099511627776 into Go struct field Deployment.spec.replicas of \
             type int32"
        );
        assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");

        let get = Request::builder()
            .uri("/apis/apps/v1/namespaces/default/deployments/web")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(get).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let deployments: Api<Deployment> = Api::namespaced(registry, "default");
        assert!(deployments.get_opt("web").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn every_write_path_decodes_the_result_before_storing_it() {
    within(LIMIT, async {
        let registry = registry();
        let deployments = builtin("apps", "Deployment");
        create(&registry, "apps", "Deployment", deployment("web", json!(2)))
            .await
            .unwrap();
        let too_big = json!(1_099_511_627_776_i64);

        // Update of the object.
        let error = registry
            .update(
                &deployments,
                Some("default"),
                dynamic(deployment("web", too_big.clone())),
                &PostParams::default(),
            )
            .await
            .unwrap_err();
        expect_bad_request(error, "spec.replicas", &["1099511627776", "int32"]);

        // Update of the status subresource.
        let mut with_status = deployment("web", json!(2));
        with_status["status"] = json!({"readyReplicas": "two"});
        let error = registry
            .update_status(
                &deployments,
                Some("default"),
                dynamic(with_status),
                &PostParams::default(),
            )
            .await
            .unwrap_err();
        expect_bad_request(
            error,
            "status.readyReplicas",
            &["cannot unmarshal string", "int32"],
        );

        // Merge, strategic merge and JSON patches.
        let patches = [
            Patch::Merge(json!({"spec": {"replicas": too_big}})),
            Patch::Strategic(json!({"spec": {"replicas": too_big}})),
            Patch::Json(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/replicas", "value": too_big}
                ]))
                .unwrap(),
            ),
        ];
        for patch in &patches {
            let error = registry
                .patch(
                    &deployments,
                    Some("default"),
                    "web",
                    patch,
                    &PatchParams::default(),
                )
                .await
                .unwrap_err();
            expect_bad_request(error, "spec.replicas", &["int32"]);
        }

        let stored: Api<Deployment> = Api::namespaced(registry, "default");
        let stored = serde_json::to_value(stored.get("web").await.unwrap()).unwrap();
        assert_eq!(stored["spec"]["replicas"], 2);
    })
    .await;
}

#[tokio::test]
async fn config_maps_with_mistyped_values_or_bad_keys_are_refused() {
    within(LIMIT, async {
        let registry = registry();
        let config = |data: Value| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "settings"}, "data": data})
        };
        let error = create(&registry, "", "ConfigMap", config(json!({"a": {"b": 1}})))
            .await
            .unwrap_err();
        expect_bad_request(
            error,
            "data[a]",
            &["cannot unmarshal object", "of type string"],
        );

        let error = create(&registry, "", "ConfigMap", config(json!({"a/b": "1"})))
            .await
            .unwrap_err();
        expect_invalid(
            error,
            "data[a/b]",
            "Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters",
        );

        let mut both = config(json!({"a": "1"}));
        both["binaryData"] = json!({"a": "YQ=="});
        let error = create(&registry, "", "ConfigMap", both).await.unwrap_err();
        expect_invalid(error, "data[a]", "duplicate of key present in binaryData");

        let config_maps = builtin("", "ConfigMap");
        let stored = registry
            .get(&config_maps, Some("default"), "settings")
            .await;
        assert!(stored.unwrap_err().is_not_found());
        create(&registry, "", "ConfigMap", config(json!({"a.b": "1"})))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn secret_string_data_is_merged_into_data_on_create_and_update() {
    within(LIMIT, async {
        let registry = registry();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
            "data": {"user": "b2xk"},
            "stringData": {"user": "admin", "password": "s3cret"},
        });
        let created = create(&registry, "", "Secret", secret).await.unwrap();
        assert_eq!(created.get("stringData"), None);
        assert_eq!(
            created["data"],
            json!({"user": "YWRtaW4=", "password": "czNjcmV0"})
        );
        assert_eq!(created["type"], "Opaque");

        let secrets: Api<Secret> = Api::namespaced(registry.clone(), "default");
        let patch = Patch::Merge(json!({"stringData": {"token": "t"}}));
        let patched = secrets
            .patch("creds", &PatchParams::default(), &patch)
            .await
            .unwrap();
        assert_eq!(patched.string_data, None);
        let data = patched.data.unwrap();
        assert_eq!(data["token"].0, b"t");
        assert_eq!(data["user"].0, b"admin");
    })
    .await;
}

#[tokio::test]
async fn secret_types_require_their_keys_and_never_change() {
    within(LIMIT, async {
        let registry = registry();
        let tls = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert"},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c"},
        });
        let error = create(&registry, "", "Secret", tls).await.unwrap_err();
        expect_invalid(error, "data[tls.key]", "Required value");

        let docker = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
            "type": "kubernetes.io/dockerconfigjson", "data": {},
        });
        let error = create(&registry, "", "Secret", docker).await.unwrap_err();
        expect_invalid(error, "data[.dockerconfigjson]", "Required value");

        let opaque = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
            "stringData": {"username": "u"},
        });
        create(&registry, "", "Secret", opaque).await.unwrap();
        let patch = Patch::Merge(json!({"type": "kubernetes.io/basic-auth"}));
        let error = registry
            .patch(
                &builtin("", "Secret"),
                Some("default"),
                "plain",
                &patch,
                &PatchParams::default(),
            )
            .await
            .unwrap_err();
        expect_invalid(error, "type", "field is immutable");
    })
    .await;
}

#[tokio::test]
async fn quantities_are_validated_in_pods_templates_and_other_kinds() {
    within(LIMIT, async {
        let registry = registry();
        let pod = |resources: Value| {
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "app", "image": "nginx", "resources": resources}]},
            })
        };
        let error = create(&registry, "", "Pod", pod(json!({"limits": {"cpu": "1GB"}})))
            .await
            .unwrap_err();
        expect_invalid(
            error,
            "spec.containers[0].resources.limits[cpu]",
            "Invalid value: \"1GB\": quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        );
        let error = create(&registry, "", "Pod", pod(json!({"requests": {"cpu": "-1"}})))
            .await
            .unwrap_err();
        expect_invalid(
            error,
            "spec.containers[0].resources.requests[cpu]",
            "must be greater than or equal to 0",
        );
        let over = json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}});
        let error = create(&registry, "", "Pod", pod(over)).await.unwrap_err();
        expect_invalid(
            error,
            "spec.containers[0].resources.requests",
            "must be less than or equal to cpu limit of 1",
        );

        let mut template = deployment("web", json!(1));
        template["spec"]["template"]["spec"]["initContainers"] =
            json!([{"name": "init", "image": "busybox", "resources": {"requests": {"memory": "abc"}}}]);
        let error = create(&registry, "apps", "Deployment", template)
            .await
            .unwrap_err();
        expect_invalid(
            error,
            "spec.template.spec.initContainers[0].resources.requests[memory]",
            "quantities must match",
        );

        let quota = json!({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"pods": "--1"}},
        });
        let error = create(&registry, "", "ResourceQuota", quota).await.unwrap_err();
        expect_invalid(error, "spec.hard[pods]", "quantities must match");

        let claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1GB"}}},
        });
        let error = create(&registry, "", "PersistentVolumeClaim", claim)
            .await
            .unwrap_err();
        expect_invalid(error, "spec.resources.requests[storage]", "quantities must match");

        create(
            &registry,
            "",
            "Pod",
            pod(json!({"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "0.5", "memory": "1e10"}})),
        )
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test]
async fn node_status_writes_validate_capacity_and_allocatable() {
    within(LIMIT, async {
        let registry = registry();
        let nodes = builtin("", "Node");
        let node = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi"}},
        });
        registry
            .create(&nodes, None, dynamic(node.clone()), &PostParams::default())
            .await
            .unwrap();
        let mut bad = node;
        bad["status"]["allocatable"] = json!({"memory": "8GB"});
        let error = registry
            .update_status(&nodes, None, dynamic(bad), &PostParams::default())
            .await
            .unwrap_err();
        expect_invalid(error, "status.allocatable[memory]", "quantities must match");
        let stored = registry.get(&nodes, None, "n1").await.unwrap();
        let stored = serde_json::to_value(stored).unwrap();
        assert_eq!(stored["status"].get("allocatable"), None);
    })
    .await;
}

#[tokio::test]
async fn a_mutating_step_that_writes_a_mistyped_field_gets_the_write_refused() {
    within(LIMIT, async {
        use capstan_apiserver::registry::admission::mutating;
        let registry = Registry::new(Arc::new(MemoryStore::new())).add_admission(mutating(
            "overflow",
            |_request: &capstan_apiserver::registry::AdmissionRequest<'_>, object: &mut Value| {
                if object["kind"] == "Deployment" {
                    object["spec"]["replicas"] = json!(1_099_511_627_776_i64);
                }
                Ok(())
            },
        ));
        let error = create(&registry, "apps", "Deployment", deployment("web", json!(1)))
            .await
            .unwrap_err();
        expect_bad_request(error, "spec.replicas", &["1099511627776", "int32"]);
        let stored = registry
            .list(
                &builtin("apps", "Deployment"),
                Some("default"),
                &Default::default(),
            )
            .await
            .unwrap();
        assert!(stored.items.is_empty(), "nothing is stored");
        // Objects the step leaves alone still pass.
        create(
            &registry,
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"a": "b"}}),
        )
        .await
        .unwrap();
    })
    .await;
}
