//! The Pod subresources over HTTP: `pods/eviction` asking the PodDisruptionBudget (429 with
//! Kubernetes' message and cause, 500 for two budgets, pending Pods deleted at once, dry
//! run, protobuf bodies) and `pods/ephemeralcontainers` (what `kubectl debug` patches, and
//! the rules that keep ephemeral containers append-only), then `kubectl debug` itself.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Client as _, ResourceInfo};
use capstan_apiserver::protobuf::envelope::wrap;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt as _;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt as _;

const LIMIT: Duration = Duration::from_secs(60);
const NS: &str = "default";
const PODS: &str = "/api/v1/namespaces/default/pods";
const BUDGETS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

async fn registry() -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    capstan_apiserver::testing::create_namespace(&*registry, NS).await;
    registry
}

async fn send(
    registry: &Arc<Registry>,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let router = capstan_apiserver::http::router(registry.clone(), "127.0.0.1:6443".into());
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let code = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, value)
}

async fn send_json(
    registry: &Arc<Registry>,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let content_type = match method {
        Method::PATCH => "application/strategic-merge-patch+json",
        _ => "application/json",
    };
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    send(registry, method, path, content_type, body).await
}

/// A Pod of `app` on `node01` (when `running`, Running and Ready, else Pending).
async fn pod(registry: &Arc<Registry>, name: &str, app: &str, running: bool) {
    let pods = ResourceInfo::builtin("", "Pod").unwrap();
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": app } },
        "spec": { "nodeName": "node01", "containers": [{ "name": "app", "image": "nginx" }] },
    });
    let created = registry
        .create(
            &pods,
            Some(NS),
            serde_json::from_value(object).unwrap(),
            &PostParams::default(),
        )
        .await
        .unwrap();
    if running {
        let mut status = serde_json::to_value(created).unwrap();
        status["status"] = json!({
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }],
        });
        registry
            .update_status(
                &pods,
                Some(NS),
                serde_json::from_value(status).unwrap(),
                &PostParams::default(),
            )
            .await
            .unwrap();
    }
}

/// A budget of `app` with `minAvailable: 2` and the status a disruption controller would
/// have written: `allowed` disruptions, 2 desired, `healthy` current, observed at
/// `observed` (the budget's generation when `None`).
async fn budget(
    registry: &Arc<Registry>,
    name: &str,
    app: &str,
    allowed: i32,
    healthy: i32,
    observed: Option<i64>,
) {
    let (code, created) = send_json(
        registry,
        Method::POST,
        BUDGETS,
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": name },
            "spec": { "minAvailable": 2, "selector": { "matchLabels": { "app": app } } },
        }),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let generation = created["metadata"]["generation"].as_i64().unwrap_or(1);
    let mut status = created.clone();
    status["status"] = json!({
        "observedGeneration": observed.unwrap_or(generation),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": 2,
        "expectedPods": 3,
    });
    let (code, written) = send_json(
        registry,
        Method::PUT,
        &format!("{BUDGETS}/{name}/status"),
        status,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{written}");
}

fn eviction(name: &str) -> Value {
    json!({ "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": { "name": name, "namespace": NS } })
}

async fn evict(registry: &Arc<Registry>, name: &str, body: Value) -> (StatusCode, Value) {
    send_json(
        registry,
        Method::POST,
        &format!("{PODS}/{name}/eviction"),
        body,
    )
    .await
}

async fn get(registry: &Arc<Registry>, path: &str) -> (StatusCode, Value) {
    send_json(registry, Method::GET, path, Value::Null).await
}

#[tokio::test]
async fn an_eviction_the_budget_cannot_afford_is_429_with_kubernetes_message_and_cause() {
    within(LIMIT, async {
        let registry = registry().await;
        for name in ["web-1", "web-2"] {
            pod(&registry, name, "web", true).await;
        }
        budget(&registry, "web", "web", 0, 2, None).await;
        let (code, status) = evict(&registry, "web-1", eviction("web-1")).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["code"], 429);
        assert_eq!(
            status["message"],
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        let (code, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert_eq!(code, StatusCode::OK);
        assert!(pod["metadata"]["deletionTimestamp"].is_null(), "{pod}");
    })
    .await;
}

#[tokio::test]
async fn an_allowed_eviction_takes_one_disruption_records_the_pod_and_deletes_it() {
    within(LIMIT, async {
        let registry = registry().await;
        for name in ["web-1", "web-2", "web-3"] {
            pod(&registry, name, "web", true).await;
        }
        budget(&registry, "web", "web", 1, 3, None).await;

        // A dry run checks and writes nothing.
        let (code, status) = send_json(
            &registry,
            Method::POST,
            &format!("{PODS}/web-1/eviction?dryRun=All"),
            eviction("web-1"),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
        let (_, pdb) = get(&registry, &format!("{BUDGETS}/web")).await;
        assert_eq!(pdb["status"]["disruptionsAllowed"], 1);
        let (_, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert!(pod["metadata"]["deletionTimestamp"].is_null());

        let mut body = eviction("web-1");
        body["deleteOptions"] = json!({ "gracePeriodSeconds": 7 });
        let (code, status) = evict(&registry, "web-1", body).await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
        assert_eq!(status["status"], "Success");
        let (_, pdb) = get(&registry, &format!("{BUDGETS}/web")).await;
        assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
        assert!(pdb["status"]["disruptedPods"]["web-1"].is_string(), "{pdb}");
        let condition = &pdb["status"]["conditions"][0];
        assert_eq!(condition["type"], "DisruptionAllowed");
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "InsufficientPods");
        // The Pod runs on a node: it is being deleted with the eviction's grace period.
        let (_, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 7);
        let target = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
            .unwrap_or_default();
        assert_eq!(target["status"], "True", "{pod}");
        assert_eq!(target["reason"], "EvictionByEvictionAPI");
        assert_eq!(target["message"], "Eviction API: evicting");

        // The next one is refused: the budget is spent.
        let (code, _) = evict(&registry, "web-2", eviction("web-2")).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    })
    .await;
}

#[tokio::test]
async fn a_stale_budget_status_is_429_and_two_budgets_are_500() {
    within(LIMIT, async {
        let registry = registry().await;
        pod(&registry, "db-1", "db", true).await;
        budget(&registry, "db", "db", 5, 3, Some(0)).await;
        let (code, status) = evict(&registry, "db-1", eviction("db-1")).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{status}");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "The disruption budget db is still being processed by the server."
        );

        pod(&registry, "api-1", "api", true).await;
        budget(&registry, "api-a", "api", 1, 3, None).await;
        budget(&registry, "api-b", "api", 1, 3, None).await;
        let (code, status) = evict(&registry, "api-1", eviction("api-1")).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{status}");
        assert_eq!(
            status["message"],
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        );
    })
    .await;
}

#[tokio::test]
async fn pending_pods_and_pods_without_a_budget_are_evicted_at_once() {
    within(LIMIT, async {
        let registry = registry().await;
        pod(&registry, "web-1", "web", false).await;
        pod(&registry, "lonely", "none", true).await;
        budget(&registry, "web", "web", 0, 0, None).await;
        // Pending: the budget is not asked, and an unscheduled... here scheduled but pending
        // Pod is deleted.
        let (code, status) = evict(&registry, "web-1", eviction("web-1")).await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
        let (code, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert!(
            code == StatusCode::NOT_FOUND || pod["metadata"]["deletionTimestamp"].is_string(),
            "{pod}"
        );
        // A precondition of the caller's that fails is a conflict, and nothing happens.
        let mut stale = eviction("lonely");
        stale["deleteOptions"] = json!({ "preconditions": { "uid": "not-the-uid" } });
        let (code, status) = evict(&registry, "lonely", stale).await;
        assert_eq!(code, StatusCode::CONFLICT, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("Precondition failed: UID in precondition: not-the-uid"),
            "{status}"
        );
        let (code, status) = evict(&registry, "lonely", eviction("lonely")).await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
        let (code, status) = evict(&registry, "missing", eviction("missing")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
        let (code, status) = evict(&registry, "lonely", eviction("other")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    })
    .await;
}

#[tokio::test]
async fn an_eviction_in_protobuf_is_read_as_its_json() {
    within(LIMIT, async {
        let registry = registry().await;
        pod(&registry, "web-1", "web", true).await;
        pod(&registry, "web-2", "web", true).await;
        budget(&registry, "web", "web", 0, 2, None).await;
        let message = policy::Eviction {
            metadata: Some(meta::ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            }),
            delete_options: Some(meta::DeleteOptions {
                grace_period_seconds: Some(3),
                ..Default::default()
            }),
        };
        let body = wrap("policy/v1", "Eviction", &message.encode_to_vec());
        let path = format!("{PODS}/web-1/eviction");
        let protobuf = "application/vnd.kubernetes.protobuf";
        let (code, status) = send(&registry, Method::POST, &path, protobuf, body.clone()).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{status}");
        budget(&registry, "other", "other", 0, 0, None).await;
        let (_, mut pdb) = get(&registry, &format!("{BUDGETS}/web")).await;
        pdb["status"]["disruptionsAllowed"] = json!(1);
        let (code, _) = send_json(
            &registry,
            Method::PUT,
            &format!("{BUDGETS}/web/status"),
            pdb,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let (code, status) = send(&registry, Method::POST, &path, protobuf, body).await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
        let (_, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 3, "{pod}");
    })
    .await;
}

#[tokio::test]
async fn discovery_lists_the_eviction_and_ephemeralcontainers_subresources() {
    within(LIMIT, async {
        let registry = registry().await;
        let (code, list) = get(&registry, "/api/v1").await;
        assert_eq!(code, StatusCode::OK);
        let resources = list["resources"].as_array().unwrap();
        let eviction = resources
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .expect("pods/eviction");
        assert_eq!(
            (
                &eviction["group"],
                &eviction["version"],
                &eviction["kind"],
                &eviction["verbs"]
            ),
            (
                &json!("policy"),
                &json!("v1"),
                &json!("Eviction"),
                &json!(["create"])
            )
        );
        assert!(resources
            .iter()
            .any(|r| r["name"] == "pods/ephemeralcontainers"));
    })
    .await;
}

#[tokio::test]
async fn ephemeral_containers_are_added_by_patch_and_never_changed_or_removed() {
    within(LIMIT, async {
        let registry = registry().await;
        pod(&registry, "p", "web", true).await;
        let path = format!("{PODS}/p/ephemeralcontainers");
        // kubectl debug's strategic merge patch, which also tries to change the image of the
        // app container: only the ephemeral containers are written.
        let patch = json!({ "spec": {
            "containers": [{ "name": "app", "image": "changed" }],
            "ephemeralContainers": [{ "name": "debugger", "image": "busybox",
                "targetContainerName": "app", "command": ["sleep", "1000"],
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent" }],
        } });
        let (code, patched) = send_json(&registry, Method::PATCH, &path, patch).await;
        assert_eq!(code, StatusCode::OK, "{patched}");
        assert_eq!(patched["kind"], "Pod");
        assert_eq!(patched["spec"]["ephemeralContainers"][0]["name"], "debugger");
        assert_eq!(patched["spec"]["containers"][0]["image"], "nginx");
        let (code, read) = get(&registry, &path).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(read["spec"]["ephemeralContainers"][0]["image"], "busybox");

        // Changing an existing one is forbidden.
        let change = json!({ "spec": { "ephemeralContainers": [
            { "name": "debugger", "image": "alpine" }] } });
        let (code, status) = send_json(&registry, Method::PATCH, &path, change).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
        assert!(
            status["message"].as_str().unwrap().contains(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debugger\" may not be changed"
            ),
            "{status}"
        );

        // A second one with ports is refused; a valid one is added beside the first.
        let ports = json!({ "spec": { "ephemeralContainers": [{ "name": "two", "image": "busybox",
            "ports": [{ "containerPort": 80 }] }] } });
        let (code, status) = send_json(&registry, Method::PATCH, &path, ports).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container"),
            "{status}"
        );
        let two = json!({ "spec": { "ephemeralContainers": [{ "name": "two", "image": "busybox" }] } });
        let (code, patched) = send_json(&registry, Method::PATCH, &path, two).await;
        assert_eq!(code, StatusCode::OK, "{patched}");
        assert_eq!(patched["spec"]["ephemeralContainers"].as_array().unwrap().len(), 2);

        // Through the Pod itself they may not change.
        let mut whole = patched.clone();
        whole["spec"]["ephemeralContainers"] = json!([]);
        let (code, status) =
            send_json(&registry, Method::PUT, &format!("{PODS}/p"), whole).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("spec: Forbidden: pod updates may not change fields other than"),
            "{status}"
        );
        // ...nor can a Pod be created with them.
        let (code, status) = send_json(
            &registry,
            Method::POST,
            PODS,
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "q" },
                    "spec": { "containers": [{ "name": "a", "image": "nginx" }],
                              "ephemeralContainers": [{ "name": "d", "image": "busybox" }] } }),
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    })
    .await;
}

#[tokio::test]
async fn kubectl_debug_adds_an_ephemeral_container_to_a_pod() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let manifest = kubectl.write(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: nginx\n",
        );
        kubectl
            .ok(&["apply", "-f", manifest.to_str().unwrap()])
            .await;
        let out = kubectl
            .ok(&[
                "debug",
                "pod/p",
                "--image=busybox",
                "-c",
                "debugger",
                "--target=app",
                "--",
                "sleep",
                "1000",
            ])
            .await;
        assert!(out.contains("Targeting container \"app\""), "{out}");
        let image = kubectl
            .ok(&[
                "get",
                "pod",
                "p",
                "-o",
                "jsonpath={.spec.ephemeralContainers[0].image} {.spec.ephemeralContainers[0].targetContainerName}",
            ])
            .await;
        assert_eq!(image.trim(), "busybox app");
        // A second debugger beside the first.
        kubectl
            .ok(&["debug", "pod/p", "--image=alpine", "-c", "second", "--", "sh"])
            .await;
        let names = kubectl
            .ok(&["get", "pod", "p", "-o", "jsonpath={.spec.ephemeralContainers[*].name}"])
            .await;
        assert_eq!(names.trim(), "debugger second");
    })
    .await;
}

#[test]
fn evictions_and_ephemeral_containers_are_authorized_on_their_subresources() {
    use axum::http::Uri;
    use capstan_apiserver::http::layers::{Attributes, RequestInfo, Rule, StaticPolicy, UserInfo};

    let attributes = |method: Method, path: &str| {
        let info = RequestInfo::new(&method, &path.parse::<Uri>().unwrap());
        Attributes {
            user: UserInfo::new("drainer", ["ops"]),
            verb: info.verb,
            resource: info.resource,
            path: info.path,
        }
    };
    let evict = attributes(Method::POST, &format!("{PODS}/web-1/eviction"));
    assert_eq!(evict.verb, "create");
    let resource = evict.resource.clone().unwrap();
    assert_eq!(
        (resource.resource.as_str(), resource.subresource.as_deref()),
        ("pods", Some("eviction"))
    );
    let debug = attributes(Method::PATCH, &format!("{PODS}/p/ephemeralcontainers"));
    assert_eq!(debug.verb, "patch");
    let replace = attributes(Method::PUT, &format!("{PODS}/p/ephemeralcontainers"));
    assert_eq!(replace.verb, "update");

    let evictor = Rule::new()
        .users(["drainer"])
        .verbs(["create"])
        .api_groups([""])
        .resources(["pods/eviction"]);
    let debugger = Rule::new()
        .users(["drainer"])
        .verbs(["patch", "update"])
        .api_groups([""])
        .resources(["pods/ephemeralcontainers"]);
    let pods_only = Rule::new()
        .users(["drainer"])
        .verbs(["*"])
        .api_groups([""])
        .resources(["pods"]);
    assert!(StaticPolicy::new([evictor.clone()]).rules()[0].allows(&evict));
    assert!(!evictor.allows(&debug));
    assert!(debugger.allows(&debug) && debugger.allows(&replace));
    assert!(
        !pods_only.allows(&evict),
        "pods does not grant pods/eviction"
    );
    assert!(!pods_only.allows(&debug));
}

#[tokio::test]
async fn in_process_clients_evict_through_create_subresource() {
    within(LIMIT, async {
        let registry = registry().await;
        for name in ["web-1", "web-2"] {
            pod(&registry, name, "web", true).await;
        }
        budget(&registry, "web", "web", 0, 2, None).await;
        let pods = capstan_api::Api::<capstan_api::k8s_openapi::api::core::v1::Pod>::namespaced(
            registry.clone(),
            NS,
        );
        let refused = pods
            .create_subresource::<_, Value>(
                "web-1",
                "eviction",
                &PostParams::default(),
                &eviction("web-1"),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), 429);
        assert_eq!(
            refused.to_string(),
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        let (_, mut pdb) = get(&registry, &format!("{BUDGETS}/web")).await;
        pdb["status"]["disruptionsAllowed"] = json!(1);
        let (code, _) = send_json(
            &registry,
            Method::PUT,
            &format!("{BUDGETS}/web/status"),
            pdb,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let answer: Value = pods
            .create_subresource(
                "web-1",
                "eviction",
                &PostParams::default(),
                &eviction("web-1"),
            )
            .await
            .unwrap();
        assert_eq!(answer["status"], "Success");
        let (_, pod) = get(&registry, &format!("{PODS}/web-1")).await;
        assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    })
    .await;
}
