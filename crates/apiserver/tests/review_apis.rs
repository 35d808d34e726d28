//! The review APIs (`authorization.k8s.io`, `authentication.k8s.io`), `apiservices` and
//! `componentstatuses`, through the in-process router with RBAC and bearer tokens, and
//! through the real `kubectl` against a bound server.
//!
//! The users: `root` (in `system:masters`, so `cluster-admin`) and `alice`, bound in
//! `default` to a Role that allows only `get pods`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use capstan_api::k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_apiserver::http::layers::{
    ApiServerOptions, Attributes, Authorizer, Decision, RbacAuthorizer, StaticTokens, UserInfo,
    SUPERUSER_GROUP,
};
use capstan_apiserver::http::router;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(60);

fn tokens() -> StaticTokens {
    StaticTokens::new()
        .with("alice-token", UserInfo::new("alice", ["devs"]))
        .with("root-token", UserInfo::new("root", [SUPERUSER_GROUP]))
}

/// A registry bootstrapped as kube-apiserver's (default RBAC) with `alice` allowed to get
/// pods in `default`, and an RBAC authorizer over it.
async fn rbac_registry() -> (Arc<Registry>, RbacAuthorizer) {
    let registry = capstan_apiserver::testing::registry();
    registry.bootstrap().await.expect("bootstrap");
    let client: Arc<dyn Client> = registry.clone();
    capstan_apiserver::testing::create_namespace(&*client, "default").await;
    let pp = PostParams::default();
    let role = Role {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("pod-getter".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            verbs: vec!["get".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), "default")
        .create(&pp, &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("alice-gets-pods".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: capstan_api::compat::value(String::from("rbac.authorization.k8s.io")),
            kind: "Role".into(),
            name: "pod-getter".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "alice".into(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), "default")
        .create(&pp, &binding)
        .await
        .unwrap();
    let rbac = RbacAuthorizer::new(client, Duration::from_secs(10))
        .await
        .expect("the RBAC cache syncs");
    (registry, rbac)
}

fn rbac_options(rbac: RbacAuthorizer) -> ApiServerOptions {
    ApiServerOptions::default()
        .authenticator(tokens())
        .authorizer(rbac)
        .anonymous(false)
}

async fn rbac_app() -> Router {
    let (registry, rbac) = rbac_registry().await;
    rbac_options(rbac).apply(router(registry, "127.0.0.1:6443".into()))
}

/// Sends `method path` with `body` (JSON unless `content_type` says otherwise) as `token`.
async fn send(
    app: &Router,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(app: &Router, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    send(
        app,
        Method::POST,
        path,
        token,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn access_review(group: &str, resource: &str, verb: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "namespace": "default", "verb": verb, "group": group, "resource": resource,
        }},
    })
}

#[tokio::test]
async fn self_access_reviews_answer_for_the_admin_and_the_restricted_user() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let (code, review) = post(
            &app,
            SSAR,
            "root-token",
            access_review("apps", "deployments", "create"),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        assert_eq!(review["status"]["allowed"], true);
        let (_, review) = post(
            &app,
            SSAR,
            "alice-token",
            access_review("apps", "deployments", "create"),
        )
        .await;
        assert_eq!(review["status"]["allowed"], false);
        assert_eq!(review["status"].get("reason"), None);
        let (_, review) = post(&app, SSAR, "alice-token", access_review("", "pods", "get")).await;
        assert_eq!(review["status"]["allowed"], true);
    })
    .await;
}

/// Encodes one length-delimited protobuf field.
fn field(number: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    [vec![number << 3 | 2, payload.len() as u8], payload.to_vec()].concat()
}

#[tokio::test]
async fn a_protobuf_self_access_review_as_kubectl_sends_it_is_understood() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let attributes = [field(1, b"default"), field(2, b"get"), field(5, b"pods")].concat();
        let spec = field(1, &attributes);
        let raw = [field(1, &[]), field(2, &spec)].concat();
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let (code, review) = send(
            &app,
            Method::POST,
            SSAR,
            "alice-token",
            "application/vnd.kubernetes.protobuf",
            body,
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        assert_eq!(review["spec"]["resourceAttributes"]["resource"], "pods");
        assert_eq!(review["status"]["allowed"], true);
    })
    .await;
}

#[tokio::test]
async fn a_rules_review_lists_what_the_user_may_do_in_the_namespace() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": "default"},
        });
        let path = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
        let (code, review) = post(&app, path, "alice-token", body.clone()).await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        let status = &review["status"];
        assert_eq!(status["incomplete"], false);
        let rules = status["resourceRules"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r["resources"] == json!(["pods"]) && r["verbs"] == json!(["get"])),
            "{rules:?}"
        );
        // system:basic-user, bound to every authenticated user.
        assert!(rules.iter().any(|r| r["resources"]
            .to_string()
            .contains("selfsubjectaccessreviews")));
        assert!(!rules.iter().any(|r| r["verbs"] == json!(["*"])));
        let (_, root) = post(&app, path, "root-token", body).await;
        assert!(root["status"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verbs"] == json!(["*"]) && r["resources"] == json!(["*"])));
        let (code, _) = post(
            &app,
            path,
            "alice-token",
            json!({"kind": "SelfSubjectRulesReview", "spec": {}}),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    })
    .await;
}

/// An authorizer that cannot list its rules.
struct Opaque;

#[async_trait::async_trait]
impl Authorizer for Opaque {
    async fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }
}

#[tokio::test]
async fn an_authorizer_that_cannot_list_rules_reports_an_incomplete_review() {
    within(DEADLINE, async {
        let registry = capstan_apiserver::testing::registry();
        let app = ApiServerOptions::default()
            .authorizer(Opaque)
            .apply(router(registry, "127.0.0.1:6443".into()));
        let (code, review) = post(
            &app,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            "",
            json!({"spec": {"namespace": "default"}}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        assert_eq!(review["status"]["incomplete"], true);
        // The default server (AllowAll) lists everything.
        let open = router(capstan_apiserver::testing::registry(), "x".into());
        let (_, review) = post(
            &open,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            "",
            json!({"spec": {"namespace": "default"}}),
        )
        .await;
        assert_eq!(review["status"]["resourceRules"][0]["verbs"], json!(["*"]));
    })
    .await;
}

#[tokio::test]
async fn subject_access_reviews_ask_about_another_user_and_are_validated() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        let spec = |user: Value| {
            json!({"kind": "SubjectAccessReview", "spec": {
                "user": user,
                "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"},
            }})
        };
        let (code, review) = post(&app, sar, "root-token", spec(json!("alice"))).await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        assert_eq!(review["status"]["allowed"], true);
        let (_, review) = post(&app, sar, "root-token", spec(json!("bob"))).await;
        assert_eq!(review["status"]["allowed"], false);
        let (code, status) = post(&app, sar, "root-token", spec(Value::Null)).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.user");
        // Alice may not ask about others.
        let (code, _) = post(&app, sar, "alice-token", spec(json!("bob"))).await;
        assert_eq!(code, StatusCode::FORBIDDEN);

        let local = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
        let mut body = spec(json!("alice"));
        body["kind"] = "LocalSubjectAccessReview".into();
        let (code, review) = post(&app, local, "root-token", body.clone()).await;
        assert_eq!(code, StatusCode::CREATED, "{review}");
        assert_eq!(review["status"]["allowed"], true);
        body["spec"]["resourceAttributes"]["namespace"] = "other".into();
        let (code, status) = post(&app, local, "root-token", body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            status["message"],
            "spec.resourceAttributes.namespace must match namespace: default"
        );
    })
    .await;
}

#[tokio::test]
async fn token_reviews_and_self_subject_reviews_name_the_user() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let path = "/apis/authentication.k8s.io/v1/tokenreviews";
        let review = |token: &str| json!({"kind": "TokenReview", "spec": {"token": token}});
        let (code, answer) = post(&app, path, "root-token", review("alice-token")).await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"]["authenticated"], true);
        assert_eq!(answer["status"]["user"]["username"], "alice");
        assert_eq!(
            answer["status"]["user"]["groups"],
            json!(["devs", "system:authenticated"])
        );
        let (_, answer) = post(&app, path, "root-token", review("forged")).await;
        assert_eq!(answer["status"]["authenticated"], false);
        let (code, _) = post(&app, path, "root-token", review("")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);

        let (code, answer) = post(
            &app,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "alice-token",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"]["userInfo"]["username"], "alice");
    })
    .await;
}

#[tokio::test]
async fn reviews_are_create_only() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let (code, status) = send(&app, Method::GET, SSAR, "root-token", "", Vec::new()).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status["reason"], "MethodNotAllowed");
    })
    .await;
}

#[tokio::test]
async fn discovery_lists_the_virtual_resources_with_their_verbs() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let get = |path: &'static str| send(&app, Method::GET, path, "root-token", "", Vec::new());
        let (code, authz) = get("/apis/authorization.k8s.io/v1").await;
        assert_eq!(code, StatusCode::OK, "{authz}");
        let resources = authz["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 4);
        assert!(resources.iter().all(|r| r["verbs"] == json!(["create"])));
        let (_, core) = get("/api/v1").await;
        let cs = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "componentstatuses")
            .expect("componentstatuses is listed");
        assert_eq!(cs["verbs"], json!(["get", "list"]));
        let (_, groups) = get("/apis").await;
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        for group in [
            "authorization.k8s.io",
            "authentication.k8s.io",
            "apiregistration.k8s.io",
        ] {
            assert!(names.contains(&group), "{group} in {names:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn component_statuses_report_the_store_as_etcd_0() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let (code, list) = send(
            &app,
            Method::GET,
            "/api/v1/componentstatuses",
            "root-token",
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list["kind"], "ComponentStatusList");
        assert_eq!(list["items"][0]["metadata"]["name"], "etcd-0");
        assert_eq!(list["items"][0]["conditions"][0]["status"], "True");
        let (code, _) = send(
            &app,
            Method::GET,
            "/api/v1/componentstatuses/scheduler",
            "root-token",
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        // Authorization applies: alice may not list them.
        let (code, _) = send(
            &app,
            Method::GET,
            "/api/v1/componentstatuses",
            "alice-token",
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn api_services_follow_the_served_group_versions() {
    within(DEADLINE, async {
        let (registry, rbac) = rbac_registry().await;
        let app = rbac_options(rbac).apply(router(registry.clone(), "x".into()));
        let list = || {
            send(
                &app,
                Method::GET,
                "/apis/apiregistration.k8s.io/v1/apiservices",
                "root-token",
                "",
                Vec::new(),
            )
        };
        let names = |list: &Value| -> Vec<String> {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (code, before) = list().await;
        assert_eq!(code, StatusCode::OK, "{before}");
        for expected in [
            "v1.",
            "v1.apps",
            "v2.autoscaling",
            "v1.authorization.k8s.io",
        ] {
            assert!(names(&before).contains(&expected.into()), "{expected}");
        }
        assert!(!names(&before).contains(&"v1.example.com".into()));
        registry.register(capstan_api::ResourceInfo::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
        ));
        let (_, after) = list().await;
        assert!(names(&after).contains(&"v1.example.com".into()));
        let (code, one) = send(
            &app,
            Method::GET,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps",
            "root-token",
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(one["status"]["conditions"][0]["type"], "Available");
        assert_eq!(one["status"]["conditions"][0]["status"], "True");
    })
    .await;
}

/// Lets anonymous callers do what alice may (get pods in `default`), review themselves and
/// read discovery: this kubectl sends bearer tokens over HTTPS only, so over plain HTTP the
/// restricted user is the anonymous one.
async fn restrict_anonymous_like_alice(registry: &Arc<Registry>) {
    use capstan_api::k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let client: Arc<dyn Client> = registry.clone();
    let pp = PostParams::default();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "anonymous-gets-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-getter"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "default")
        .create(&pp, &binding)
        .await
        .unwrap();
    for role in ["system:basic-user", "system:discovery"] {
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("anonymous-{}", role.replace(':', "-"))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:unauthenticated"}],
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&pp, &binding)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_for_an_allow_all_server_and_a_restricted_user() {
    within(DEADLINE, async {
        let open = Kubectl::start().await;
        let out = open.ok(&["auth", "can-i", "create", "deployments"]).await;
        assert_eq!(out.trim(), "yes");

        let (registry, rbac) = rbac_registry().await;
        restrict_anonymous_like_alice(&registry).await;
        let restricted = Kubectl::serve_with(registry, rbac_options(rbac).anonymous(true)).await;
        let no = restricted
            .run(&["auth", "can-i", "create", "deployments"])
            .await;
        assert!(!no.success());
        assert_eq!(no.stdout.trim(), "no");
        // The binding reaches the authorizer's informers shortly after it is written.
        let mut answer = restricted.run(&["auth", "can-i", "get", "pods"]).await;
        for _ in 1..50 {
            if answer.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = restricted.run(&["auth", "can-i", "get", "pods"]).await;
        }
        assert!(answer.success(), "{answer:?}");
        assert_eq!(answer.stdout.trim(), "yes");

        let out = restricted
            .ok(&["auth", "can-i", "--list", "-n", "default"])
            .await;
        let pods = out
            .lines()
            .find(|line| line.starts_with("pods "))
            .unwrap_or_else(|| panic!("a pods row in {out}"));
        assert!(pods.contains("[get]"), "{pods}");
        assert!(!out.contains("*.*"), "{out}");

        let out = restricted.ok(&["auth", "whoami"]).await;
        assert!(out.contains("system:anonymous"), "{out}");
        assert!(out.contains("system:unauthenticated"), "{out}");
    })
    .await;
}

#[tokio::test]
async fn kubectl_gets_api_services_and_component_statuses() {
    within(DEADLINE, async {
        let kubectl = Kubectl::start().await;
        let out = kubectl.ok(&["get", "apiservices"]).await;
        let apps = out
            .lines()
            .find(|line| line.starts_with("v1.apps "))
            .unwrap_or_else(|| panic!("v1.apps in {out}"));
        assert!(apps.contains("Local") && apps.contains("True"), "{apps}");

        let cs = kubectl.run(&["get", "cs"]).await;
        let (out, err) = (&cs.stdout, &cs.stderr);
        assert!(cs.success(), "{err}");
        assert!(
            out.lines()
                .any(|line| line.starts_with("etcd-0") && line.contains("Healthy")),
            "{out}"
        );
        assert!(err.contains("ComponentStatus is deprecated"), "{err}");
    })
    .await;
}

/// Sends `POST path` with `body` as `token`, with the `Impersonate-*` headers `impersonate`.
async fn post_impersonating(
    app: &Router,
    path: &str,
    token: &str,
    impersonate: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
    for (name, value) in impersonate {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_admin_impersonating_alice_is_reviewed_and_decided_as_alice() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let whoami = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let (code, answer) = post_impersonating(
            &app,
            whoami,
            "root-token",
            &[
                ("Impersonate-User", "alice"),
                ("Impersonate-Group", "devs"),
                ("Impersonate-Extra-Scopes", "view"),
            ],
            review,
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let user = &answer["status"]["userInfo"];
        assert_eq!(user["username"], "alice");
        assert_eq!(user["groups"], json!(["devs", "system:authenticated"]));
        assert_eq!(user["extra"], json!({"scopes": ["view"]}));

        let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        let as_alice = [("Impersonate-User", "alice")];
        let (_, pods) = post_impersonating(
            &app,
            ssar,
            "root-token",
            &as_alice,
            access_review("", "pods", "get"),
        )
        .await;
        assert_eq!(pods["status"]["allowed"], true, "{pods}");
        let (_, deployments) = post_impersonating(
            &app,
            ssar,
            "root-token",
            &as_alice,
            access_review("apps", "deployments", "create"),
        )
        .await;
        assert_eq!(deployments["status"]["allowed"], false, "{deployments}");
    })
    .await;
}

#[tokio::test]
async fn impersonation_without_the_permission_or_without_a_user_is_refused() {
    within(DEADLINE, async {
        let app = rbac_app().await;
        let whoami = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let (code, refusal) = post_impersonating(
            &app,
            whoami,
            "alice-token",
            &[("Impersonate-User", "jane")],
            review.clone(),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{refusal}");
        assert_eq!(refusal["reason"], "Forbidden");
        let message = refusal["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                r#"users "jane" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
            ),
            "{message}"
        );

        let (code, refusal) = post_impersonating(
            &app,
            whoami,
            "root-token",
            &[("Impersonate-Group", "devs")],
            review,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{refusal}");
        assert_eq!(
            refusal["message"],
            "requested [{Group  devs    }] without impersonating a user"
        );
    })
    .await;
}

/// Lets `system:anonymous` impersonate user `jane` and group `devs` (and nobody else), and
/// lets jane get pods in `default`: this kubectl sends bearer tokens over HTTPS only, so over
/// plain HTTP the impersonating caller is the anonymous one.
async fn let_anonymous_impersonate_jane(registry: &Arc<Registry>) {
    use capstan_api::k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let client: Arc<dyn Client> = registry.clone();
    let pp = PostParams::default();
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "jane-impersonator"},
        "rules": [
            {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["jane"]},
            {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["groups"], "resourceNames": ["devs"]},
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "anonymous-impersonates-jane"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "jane-impersonator"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "jane-gets-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-getter"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client, "default")
        .create(&pp, &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn kubectl_as_jane_answers_for_jane_and_a_refused_impersonation_is_forbidden() {
    within(DEADLINE, async {
        let (registry, rbac) = rbac_registry().await;
        let_anonymous_impersonate_jane(&registry).await;
        let kubectl = Kubectl::serve_with(registry, rbac_options(rbac).anonymous(true)).await;
        // The bindings reach the authorizer's informers shortly after they are written.
        let mut answer = kubectl.run(&["auth", "can-i", "get", "pods", "--as=jane"]).await;
        for _ in 1..50 {
            if answer.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = kubectl.run(&["auth", "can-i", "get", "pods", "--as=jane"]).await;
        }
        assert!(answer.success(), "{answer:?}");
        assert_eq!(answer.stdout.trim(), "yes");

        let out = kubectl
            .ok(&["auth", "can-i", "get", "pods", "--as=jane", "--as-group=devs"])
            .await;
        assert_eq!(out.trim(), "yes");
        let no = kubectl
            .run(&["auth", "can-i", "create", "deployments", "--as=jane"])
            .await;
        assert!(!no.success());
        assert_eq!(no.stdout.trim(), "no");
        // Anonymous itself may not even ask (nor get pods): the answer above was jane's.
        let anonymous = kubectl.run(&["auth", "can-i", "get", "pods"]).await;
        assert!(!anonymous.success());
        assert_ne!(anonymous.stdout.trim(), "yes", "{}", anonymous.stderr);

        let out = kubectl.ok(&["auth", "whoami", "--as=jane"]).await;
        let username = out
            .lines()
            .find(|line| line.starts_with("Username"))
            .unwrap_or_else(|| panic!("a Username row in {out}"));
        assert!(username.ends_with("jane"), "{out}");
        assert!(out.contains("system:authenticated"), "{out}");
        assert!(!out.contains("system:anonymous"), "{out}");
        let out = kubectl
            .ok(&["auth", "whoami", "--as=jane", "--as-group=devs"])
            .await;
        assert!(out.contains("devs"), "{out}");

        let err = kubectl
            .fails(&["get", "--raw", "/api/v1/namespaces/default/pods", "--as=bob"])
            .await;
        assert!(
            err.contains(
                r#"users "bob" is forbidden: User "system:anonymous" cannot impersonate resource "users" in API group "" at the cluster scope"#
            ),
            "{err}"
        );
        let err = kubectl
            .fails(&[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods",
                "--as=jane",
                "--as-group=admins",
            ])
            .await;
        assert!(
            err.contains(r#"groups "admins" is forbidden: User "system:anonymous" cannot impersonate resource "groups""#),
            "{err}"
        );
    })
    .await;
}
