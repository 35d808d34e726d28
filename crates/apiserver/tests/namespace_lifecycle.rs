//! The namespace lifecycle over HTTP: what a fresh API server has, the NamespaceLifecycle
//! refusals as Kubernetes `Status` bodies, and the `finalize` subresource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::remote::RemoteClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request with a JSON body; the status code and the JSON answer.
async fn raw(address: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
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
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "a small JSON answer has a length"
    );
    let json = serde_json::from_slice(&raw[end + 4..]).expect("a JSON body");
    (code, json)
}

async fn server() -> (ApiServer, Arc<dyn Client>) {
    let server = ApiServer::bind(
        capstan_apiserver::testing::registry(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client: Arc<dyn Client> = Arc::new(RemoteClient::new(&server.url()).unwrap());
    (server, client)
}

#[tokio::test]
async fn a_fresh_server_has_the_system_namespaces_and_the_kubernetes_service() {
    within(DEADLINE, async {
        let (server, client) = server().await;
        let namespaces = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        let mut names: Vec<_> = namespaces
            .items
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["default", "kube-node-lease", "kube-public", "kube-system"]
        );
        let service = Api::<Service>::namespaced(client, "default")
            .get("kubernetes")
            .await
            .unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(
            serde_json::to_value(&port.target_port).unwrap(),
            json!(server.address().port())
        );
    })
    .await;
}

#[tokio::test]
async fn refusals_are_kubernetes_statuses() {
    within(DEADLINE, async {
        let (server, _) = server().await;
        let address = server.address();
        let (code, status) = raw(
            address,
            "POST",
            "/api/v1/namespaces/foo/configmaps",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        )
        .await;
        assert_eq!(code, 404, "{status}");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], r#"namespaces "foo" not found"#);
        let (code, status) = raw(
            address,
            "DELETE",
            "/api/v1/namespaces/kube-system",
            &json!({}),
        )
        .await;
        assert_eq!(code, 403, "{status}");
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            r#"namespaces "kube-system" is forbidden: this namespace may not be deleted"#
        );
    })
    .await;
}

#[tokio::test]
async fn the_finalize_subresource_removes_a_terminating_namespace() {
    within(DEADLINE, async {
        let (server, client) = server().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut doomed = Namespace::default();
        doomed.metadata.name = Some("doomed".into());
        namespaces
            .create(&PostParams::default(), &doomed)
            .await
            .unwrap();
        namespaces
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        let terminating = namespaces.get("doomed").await.unwrap();
        assert!(terminating.metadata.deletion_timestamp.is_some());
        assert_eq!(
            terminating.status.unwrap().phase.as_deref(),
            Some("Terminating")
        );
        let mut config = ConfigMap::default();
        config.metadata.name = Some("late".into());
        let error = Api::<ConfigMap>::namespaced(client.clone(), "doomed")
            .create(&PostParams::default(), &config)
            .await
            .unwrap_err();
        assert_eq!(error.code(), 403);
        assert!(
            error.to_string().contains(
                "unable to create new content in namespace doomed because it is being terminated"
            ),
            "{error}"
        );

        let (code, finalized) = raw(
            server.address(),
            "PUT",
            "/api/v1/namespaces/doomed/finalize",
            &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "doomed"}, "spec": {"finalizers": []}}),
        )
        .await;
        assert_eq!(code, 200, "{finalized}");
        assert_eq!(finalized["status"]["phase"], "Terminating");
        assert!(namespaces.get_opt("doomed").await.unwrap().is_none());
    })
    .await;
}
