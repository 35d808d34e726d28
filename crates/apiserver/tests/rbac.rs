//! The RBAC authorizer behind a real `ApiServer` on loopback: static bearer tokens name the
//! users, and Roles, ClusterRoles and bindings stored in the server's own registry decide
//! what they may do. Every test is bounded by a deadline; waits for a change to take effect
//! poll with a short interval and a bounded total.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::api::rbac::v1::{
    ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client, Error};
use capstan_apiserver::http::layers::{
    ApiServerOptions, RbacAuthorizer, StaticTokens, UserInfo, SUPERUSER_GROUP,
};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::remote::RemoteClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a change may take to reach the authorizer's informers.
const PROPAGATION: Duration = Duration::from_secs(10);
/// How often a test polls for a change.
const POLL: Duration = Duration::from_millis(20);

fn tokens() -> StaticTokens {
    StaticTokens::new()
        .with("alice-token", UserInfo::new("alice", ["devs"]))
        .with("bob-token", UserInfo::new("bob", Vec::<String>::new()))
        .with("root-token", UserInfo::new("root", [SUPERUSER_GROUP]))
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(String::from),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// A Role in `team` allowing get and list on pods.
fn pod_reader() -> Role {
    Role {
        metadata: meta(Some("team"), "pod-reader"),
        rules: Some(vec![PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            ..Default::default()
        }]),
    }
}

/// A RoleBinding in `team` of `pod-reader` to the user `user`.
fn reads_pods(user: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(Some("team"), &format!("{user}-reads-pods")),
        role_ref: RoleRef {
            api_group: capstan_api::compat::value(String::from("rbac.authorization.k8s.io")),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: user.into(),
            namespace: None,
        }]),
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }))
    .unwrap()
}

/// A server over a fresh registry holding `pod-reader`, alice's binding to it, and the pod
/// `team/web`, authorized by RBAC over that same registry; anonymous requests are refused.
async fn server() -> ApiServer {
    let registry = capstan_apiserver::testing::registry();
    let client: Arc<dyn Client> = registry.clone();
    capstan_apiserver::testing::create_namespace(&*client, "team").await;
    let pp = PostParams::default();
    Api::<Role>::namespaced(client.clone(), "team")
        .create(&pp, &pod_reader())
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "team")
        .create(&pp, &reads_pods("alice"))
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "team")
        .create(&pp, &pod("web"))
        .await
        .unwrap();
    let rbac = RbacAuthorizer::new(client, PROPAGATION)
        .await
        .expect("the RBAC cache syncs");
    let options = ApiServerOptions::default()
        .authenticator(tokens())
        .authorizer(rbac)
        .anonymous(false);
    ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("bind a loopback port")
}

/// A client of `server` presenting `token`.
fn as_user(server: &ApiServer, token: &str) -> Arc<dyn Client> {
    Arc::new(RemoteClient::new(&server.url()).unwrap().with_token(token))
}

fn pods(client: &Arc<dyn Client>, namespace: &str) -> Api<Pod> {
    Api::namespaced(client.clone(), namespace)
}

/// The message of a 403, failing on any other outcome.
fn forbidden<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Forbidden { message }) => message,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

/// A raw `GET path` with `token`, returning the status code and the body as JSON.
async fn raw_get(address: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", String::from_utf8_lossy(&body)));
    (code, json)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16)
            .unwrap_or_default();
        if size == 0 {
            break;
        }
        let start = end + 2;
        body.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    body
}

#[tokio::test]
async fn alice_may_read_pods_in_her_namespace_and_nothing_else() {
    within(DEADLINE, async {
        let server = server().await;
        let alice = as_user(&server, "alice-token");
        let team = pods(&alice, "team");
        let listed = team.list(&ListParams::default()).await.expect("list in team");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(team.get("web").await.unwrap().metadata.name.as_deref(), Some("web"));

        let elsewhere = forbidden(pods(&alice, "default").list(&ListParams::default()).await);
        assert!(
            elsewhere.starts_with(
                r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
            ),
            "{elsewhere}"
        );
        let create = forbidden(team.create(&PostParams::default(), &pod("new")).await);
        assert!(
            create.starts_with(
                r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "team""#
            ),
            "{create}"
        );
        let delete = forbidden(team.delete("web", &DeleteParams::default()).await);
        assert!(delete.contains(r#"User "alice" cannot delete resource "pods""#), "{delete}");
    })
    .await;
}

#[tokio::test]
async fn a_user_without_bindings_gets_a_kubernetes_forbidden_status() {
    within(DEADLINE, async {
        let server = server().await;
        let (code, status) =
            raw_get(server.address(), "/api/v1/namespaces/default/pods", "bob-token").await;
        assert_eq!(code, 403, "{status}");
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["apiVersion"], "v1", "{status}");
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["reason"], "Forbidden", "{status}");
        assert_eq!(status["code"], 403, "{status}");
        let message = status["message"].as_str().expect("a message");
        assert!(
            message.starts_with(
                r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
            ),
            "{message}"
        );
        let bob = as_user(&server, "bob-token");
        forbidden(pods(&bob, "team").get("web").await);
        // The bootstrap `system:discovery` role is bound to every authenticated user, as in
        // Kubernetes; other non-resource paths need a grant.
        let (code, _) = raw_get(server.address(), "/apis", "bob-token").await;
        assert_eq!(code, 200, "discovery is open to authenticated users");
        let (code, _) = raw_get(server.address(), "/metrics", "bob-token").await;
        assert_eq!(code, 403, "metrics need a grant");
    })
    .await;
}

#[tokio::test]
async fn a_binding_created_through_the_api_takes_effect_shortly_after() {
    within(DEADLINE, async {
        let server = server().await;
        let bob = as_user(&server, "bob-token");
        forbidden(pods(&bob, "team").list(&ListParams::default()).await);

        let root = as_user(&server, "root-token");
        Api::<RoleBinding>::namespaced(root, "team")
            .create(&PostParams::default(), &reads_pods("bob"))
            .await
            .expect("a superuser creates the binding");
        tokio::time::timeout(PROPAGATION, async {
            loop {
                match pods(&bob, "team").list(&ListParams::default()).await {
                    Ok(list) => break list,
                    Err(Error::Forbidden { .. }) => tokio::time::sleep(POLL).await,
                    Err(other) => panic!("unexpected error: {other:?}"),
                }
            }
        })
        .await
        .expect("the new binding took effect");
        // The binding is in team only.
        forbidden(pods(&bob, "default").list(&ListParams::default()).await);
    })
    .await;
}

#[tokio::test]
async fn a_system_masters_member_may_do_anything() {
    within(DEADLINE, async {
        let server = server().await;
        let root = as_user(&server, "root-token");
        let team = pods(&root, "team");
        team.create(&PostParams::default(), &pod("extra"))
            .await
            .unwrap();
        team.delete("web", &DeleteParams::default()).await.unwrap();
        Api::<Pod>::all(root.clone())
            .list(&ListParams::default())
            .await
            .expect("a list across namespaces");
        let admin = ClusterRole {
            metadata: meta(None, "anything"),
            rules: Some(vec![PolicyRule {
                verbs: vec!["*".into()],
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                ..Default::default()
            }]),
            aggregation_rule: None,
        };
        Api::<ClusterRole>::all(root)
            .create(&PostParams::default(), &admin)
            .await
            .expect("a cluster-scoped write");
        let (code, _) = raw_get(server.address(), "/apis", "root-token").await;
        assert_eq!(code, 200, "non-resource paths too");
    })
    .await;
}

#[tokio::test]
async fn the_authorizer_follows_a_remote_api_server_too() {
    within(DEADLINE, async {
        // An open upstream server holds the RBAC objects; the authorizer watches it over HTTP.
        let registry = capstan_apiserver::testing::registry();
        let upstream = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let remote: Arc<dyn Client> = Arc::new(RemoteClient::new(&upstream.url()).unwrap());
        let rbac = RbacAuthorizer::new(remote.clone(), PROPAGATION)
            .await
            .expect("the RBAC cache syncs over HTTP");
        let options = ApiServerOptions::default()
            .authenticator(tokens())
            .authorizer(rbac)
            .anonymous(false);
        let front = ApiServer::bind_with(
            capstan_apiserver::testing::registry(),
            "127.0.0.1:0".parse().unwrap(),
            options,
        )
        .await
        .unwrap();
        let alice = as_user(&front, "alice-token");
        forbidden(pods(&alice, "team").list(&ListParams::default()).await);

        capstan_apiserver::testing::create_namespace(&*remote, "team").await;
        let pp = PostParams::default();
        Api::<Role>::namespaced(remote.clone(), "team")
            .create(&pp, &pod_reader())
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(remote, "team")
            .create(&pp, &reads_pods("alice"))
            .await
            .unwrap();
        tokio::time::timeout(PROPAGATION, async {
            while pods(&alice, "team")
                .list(&ListParams::default())
                .await
                .is_err()
            {
                tokio::time::sleep(POLL).await;
            }
        })
        .await
        .expect("the upstream binding took effect");
    })
    .await;
}
