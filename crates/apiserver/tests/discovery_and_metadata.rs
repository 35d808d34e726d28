//! What clients read besides objects: aggregated discovery, `/openapi/v2`, metadata-only
//! responses and Kubernetes' printer columns, through the in-process router, kube-rs and the
//! real `kubectl` (on the PATH; Debian's `kubernetes-client` works).

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Client as _, ResourceInfo};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt as _;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(120);

/// kube-rs' and kubectl's `Accept` header for discovery.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// A registry with the `default` namespace, a ConfigMap, a CronJob and a Job in it.
async fn seeded_registry() -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    capstan_apiserver::testing::create_namespace(&*registry, "default").await;
    for (group, kind, object) in [
        (
            "",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"a": "b"}}),
        ),
        (
            "batch",
            "CronJob",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup"},
                   "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                       "restartPolicy": "OnFailure",
                       "containers": [{"name": "backup", "image": "busybox"}]}}}}}}),
        ),
        (
            "batch",
            "Job",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
                   "spec": {"completions": 2, "template": {"spec": {"restartPolicy": "Never",
                       "containers": [{"name": "pi", "image": "perl"}]}}}}),
        ),
    ] {
        let resource = ResourceInfo::builtin(group, kind).unwrap();
        registry
            .create(
                &resource,
                Some("default"),
                serde_json::from_value(object).unwrap(),
                &PostParams::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("creating a {kind}: {e}"));
    }
    registry
}

/// One GET through the in-process router: the code, the headers and the body read to its end.
async fn get(
    registry: &Arc<Registry>,
    path: &str,
    accept: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let router = capstan_apiserver::http::router(registry.clone(), "127.0.0.1:6443".into());
    let mut request = Request::get(path);
    if !accept.is_empty() {
        request = request.header(header::ACCEPT, accept);
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

async fn get_json(
    registry: &Arc<Registry>,
    path: &str,
    accept: &str,
) -> (StatusCode, HeaderMap, Value) {
    let (code, headers, body) = get(registry, path, accept).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (code, headers, value)
}

#[tokio::test]
async fn aggregated_discovery_is_negotiated_by_accept_on_api_and_apis() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, headers, apis) = get_json(&registry, "/apis", AGGREGATED).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(headers[header::VARY], "Accept");
        assert_eq!(apis["kind"], "APIGroupDiscoveryList");
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
        let batch = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "batch")
            .expect("the batch group");
        let cronjobs = batch["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "cronjobs")
            .expect("cronjobs");
        assert_eq!(cronjobs["shortNames"], json!(["cj"]));
        assert_eq!(cronjobs["categories"], json!(["all"]));
        assert_eq!(cronjobs["scope"], "Namespaced");
        assert_eq!(cronjobs["subresources"][0]["subresource"], "status");

        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let (_, headers, core) = get_json(&registry, "/api", beta).await;
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        );
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .expect("pods");
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(pods["singularResource"], "pod");
    })
    .await;
}

#[tokio::test]
async fn a_kind_registered_at_run_time_appears_in_aggregated_discovery() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        registry.register(
            ResourceInfo::new("example.com", "v1", "Widget", "widgets", true)
                .with_categories(["all"]),
        );
        let (_, _, apis) = get_json(&registry, "/apis", AGGREGATED).await;
        let widgets = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "example.com")
            .expect("the example.com group");
        assert_eq!(
            widgets["versions"][0]["resources"][0]["resource"],
            "widgets"
        );
        assert_eq!(
            widgets["versions"][0]["resources"][0]["categories"],
            json!(["all"])
        );
    })
    .await;
}

#[tokio::test]
async fn a_plain_accept_keeps_the_legacy_documents_with_categories() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (_, headers, core) = get_json(&registry, "/api", "application/json").await;
        assert_eq!(core["kind"], "APIVersions");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let (_, _, groups) = get_json(&registry, "/apis", "").await;
        assert_eq!(groups["kind"], "APIGroupList");
        let (_, _, apps) = get_json(&registry, "/apis/apps/v1", "").await;
        let deployments = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments")
            .unwrap();
        assert_eq!(deployments["categories"], json!(["all"]));
    })
    .await;
}

#[tokio::test]
async fn openapi_v2_is_a_swagger_document_of_every_served_kind() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, headers, swagger) = get_json(&registry, "/openapi/v2", "application/json").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(swagger["swagger"], "2.0");
        let deployment = &swagger["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(swagger["paths"]
            .get("/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}")
            .is_some());
        // Built once, then served from the cache.
        let (_, _, again) = get_json(&registry, "/openapi/v2", "").await;
        assert_eq!(again, swagger);
    })
    .await;
}

#[tokio::test]
async fn metadata_only_reads_answer_partial_object_metadata() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let path = "/api/v1/namespaces/default/configmaps";
        let (code, _, one) = get_json(&registry, &format!("{path}/settings"), METADATA).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(one["kind"], "PartialObjectMetadata");
        assert_eq!(one["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(one["metadata"]["labels"]["app"], "web");
        assert!(one.get("data").is_none());

        let (_, _, list) = get_json(&registry, path, METADATA_LIST).await;
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert!(list["metadata"]["resourceVersion"].is_string());
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(list["items"][0]["metadata"]["name"], "settings");

        let beta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";
        let (_, _, list) = get_json(&registry, path, beta).await;
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1beta1");
    })
    .await;
}

#[tokio::test]
async fn unacceptable_transformations_are_406_not_acceptable() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let path = "/api/v1/namespaces/default/configmaps";
        for (path, accept) in [
            (
                path.to_string(),
                "application/json;as=Widget;g=meta.k8s.io;v=v1",
            ),
            (path.to_string(), METADATA),
            (format!("{path}/settings"), METADATA_LIST),
        ] {
            let (code, _, status) = get_json(&registry, &path, accept).await;
            assert_eq!(code, StatusCode::NOT_ACCEPTABLE, "{path} {accept}");
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "NotAcceptable");
            assert_eq!(status["code"], 406);
        }
        // A fallback media type is served instead.
        let fallback = "application/json;as=Widget;g=meta.k8s.io;v=v1,application/json";
        let (code, _, list) = get_json(&registry, path, fallback).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list["kind"], "ConfigMapList");
    })
    .await;
}

#[tokio::test]
async fn a_metadata_watch_streams_partial_object_metadata() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let (code, _, body) = get(
            &registry,
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0&timeoutSeconds=1",
            METADATA,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let first: Value =
            serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["type"], "ADDED");
        assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(first["object"]["metadata"]["name"], "settings");
        assert!(first["object"].get("data").is_none());
    })
    .await;
}

#[tokio::test]
async fn tables_print_kubernetes_columns_for_cron_jobs_and_jobs() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        let (_, _, cron_jobs) = get_json(
            &registry,
            "/apis/batch/v1/namespaces/default/cronjobs",
            table,
        )
        .await;
        assert_eq!(cron_jobs["kind"], "Table");
        let names: Vec<&str> = cron_jobs["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age"
            ]
        );
        assert_eq!(cron_jobs["rows"][0]["cells"][1], "*/5 * * * *");
        let (_, _, job) = get_json(
            &registry,
            "/apis/batch/v1/namespaces/default/jobs/pi",
            table,
        )
        .await;
        assert_eq!(job["rows"][0]["cells"][0], "pi");
        assert_eq!(job["rows"][0]["cells"][2], "0/2");
    })
    .await;
}

/// A server on loopback over `registry`, and a kube-rs client of it.
async fn kube_client(registry: Arc<Registry>) -> (ApiServer, kube::Client) {
    let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind a loopback port");
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = kube::Client::try_from(config).expect("a kube client");
    (server, client)
}

#[tokio::test]
async fn kube_rs_discovery_finds_deployments_with_their_verbs() {
    within(DEADLINE, async {
        let (_server, client) = kube_client(seeded_registry().await).await;
        let aggregated = kube::discovery::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery");
        let legacy = kube::discovery::Discovery::new(client)
            .run()
            .await
            .expect("legacy discovery");
        for discovery in [aggregated, legacy] {
            let apps = discovery.get("apps").expect("the apps group");
            let (resource, capabilities) = apps
                .recommended_resources()
                .into_iter()
                .find(|(r, _)| r.kind == "Deployment")
                .expect("Deployment");
            assert_eq!(resource.plural, "deployments");
            for verb in ["list", "watch", "create", "patch", "delete"] {
                assert!(capabilities.supports_operation(verb), "{verb}");
            }
            assert!(discovery.has_group(""), "the core group");
        }
    })
    .await;
}

#[tokio::test]
async fn kube_rs_reads_and_watches_metadata_only() {
    use futures::{StreamExt as _, TryStreamExt as _};
    use k8s_openapi::api::core::v1::ConfigMap;
    // kube 5 deprecates `metadata_watcher` for `watcher` over an
    // `Api<PartialObjectMeta<K>>`, which sends the same metadata-only requests.
    #[allow(deprecated)]
    use kube::runtime::metadata_watcher;
    use kube::runtime::{watcher, WatchStreamExt as _};

    within(DEADLINE, async {
        let (_server, client) = kube_client(seeded_registry().await).await;
        let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        let one = config_maps
            .get_metadata("settings")
            .await
            .expect("get_metadata");
        assert_eq!(one.metadata.name.as_deref(), Some("settings"));
        let list = config_maps
            .list_metadata(&Default::default())
            .await
            .expect("list_metadata");
        assert!(list
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some("settings")));
        #[allow(deprecated)]
        let seen = metadata_watcher(config_maps, watcher::Config::default())
            .applied_objects()
            .try_filter(|m| futures::future::ready(m.metadata.name.as_deref() == Some("settings")))
            .boxed()
            .next()
            .await
            .expect("an event")
            .expect("no watch error");
        assert_eq!(seen.metadata.labels.unwrap()["app"], "web");
    })
    .await;
}

#[tokio::test]
async fn kubectl_reads_discovery_columns_explanations_and_validates_lists() {
    within(DEADLINE, async {
        let registry = seeded_registry().await;
        registry.register(ResourceInfo::new("example.com", "v1", "Widget", "widgets", true));
        let kubectl = Kubectl::serve(registry).await;
        let resources = kubectl.ok(&["api-resources"]).await;
        let cronjobs = resources
            .lines()
            .find(|l| l.starts_with("cronjobs"))
            .unwrap_or_else(|| panic!("no cronjobs in:\n{resources}"));
        assert!(cronjobs.contains(" cj "), "{cronjobs}");
        let all = kubectl.ok(&["api-resources", "--categories=all", "-o", "name"]).await;
        for name in ["pods", "services", "deployments.apps", "cronjobs.batch", "jobs.batch"] {
            assert!(all.lines().any(|l| l == name), "{name} not in:\n{all}");
        }

        let batch = kubectl.ok(&["get", "cronjobs,jobs"]).await;
        assert!(
            batch.contains("NAME") && batch.contains("SCHEDULE") && batch.contains("TIMEZONE"),
            "{batch}"
        );
        assert!(batch.contains("LAST SCHEDULE"), "{batch}");
        assert!(batch.contains("STATUS") && batch.contains("COMPLETIONS") && batch.contains("DURATION"), "{batch}");
        assert!(batch.contains("cronjob.batch/backup") && batch.contains("job.batch/pi"), "{batch}");
        let wide = kubectl.ok(&["get", "cronjobs", "-o", "wide"]).await;
        assert!(wide.contains("CONTAINERS") && wide.contains("busybox"), "{wide}");

        let everything = kubectl.ok(&["get", "all"]).await;
        assert!(everything.contains("service/kubernetes"), "{everything}");
        assert!(everything.contains("cronjob.batch/backup"), "{everything}");

        let explained = kubectl.ok(&["explain", "deployment.spec.replicas"]).await;
        assert!(explained.contains("replicas"), "{explained}");
        assert!(explained.contains("integer"), "{explained}");

        // A List has no server-side validation support in kubectl's eyes, so `--validate`
        // validates its items on the client, against the OpenAPI v2 document it reads as
        // protobuf: built-in kinds by their schemas, custom kinds (open objects) as maps.
        let list = kubectl.write(
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: first\n  data:\n    a: b\n\
             - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: second\n\
             - apiVersion: apps/v1\n  kind: Deployment\n  metadata:\n    name: web\n  spec:\n    replicas: 2\n    selector:\n      matchLabels:\n        app: web\n    template:\n      metadata:\n        labels:\n          app: web\n      spec:\n        containers:\n        - name: web\n          image: nginx\n          ports:\n          - containerPort: 80\n\
             - apiVersion: v1\n  kind: Service\n  metadata:\n    name: web\n  spec:\n    selector:\n      app: web\n    ports:\n    - port: 80\n      targetPort: http\n\
             - apiVersion: example.com/v1\n  kind: Widget\n  metadata:\n    name: gear\n  spec:\n    teeth: 12\n",
        );
        let created = kubectl
            .ok(&["create", "-f", list.to_str().unwrap(), "--validate=true"])
            .await;
        for name in [
            "configmap/first",
            "configmap/second",
            "deployment.apps/web",
            "service/web",
            "widget.example.com/gear",
        ] {
            assert!(created.contains(&format!("{name} created")), "{created}");
        }

        // An unknown field and a mistyped one are refused on the client: nothing is created.
        let invalid = kubectl.write(
            "invalid.yaml",
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: third\n  bogus: true\n\
             - apiVersion: apps/v1\n  kind: Deployment\n  metadata:\n    name: api\n  spec:\n    replicas: many\n    selector:\n      matchLabels:\n        app: api\n    template:\n      metadata:\n        labels:\n          app: api\n      spec:\n        containers:\n        - name: api\n          image: nginx\n",
        );
        let outcome = kubectl
            .run(&["create", "-f", invalid.to_str().unwrap(), "--validate=true"])
            .await;
        let (stdout, stderr) = (&outcome.stdout, &outcome.stderr);
        assert!(!outcome.success(), "{stdout}");
        assert!(stderr.contains("error validating data"), "{stderr}");
        assert!(
            stderr.contains(r#"unknown field "bogus" in io.k8s.api.core.v1.ConfigMap"#),
            "{stderr}"
        );
        assert!(
            stderr.contains(
                r#"invalid type for io.k8s.api.apps.v1.DeploymentSpec.replicas: got "string", expected "integer""#
            ),
            "{stderr}"
        );
        assert!(!stdout.contains("created"), "{stdout}");
        let found = kubectl.run(&["get", "configmap", "third"]).await.success();
        assert!(!found, "the invalid List was partly created");
    })
    .await;
}
