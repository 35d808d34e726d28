//! The API server's side of "into the pods" against a stand-in kubelet: `pods/log`,
//! `pods/exec`, `pods/attach`, `pods/portforward`, `nodes/proxy` and the resource metrics API,
//! over real sockets, with raw HTTP where kubectl cannot show what matters, and with the real
//! `kubectl logs` and `kubectl top`.

#[path = "pod_streams/kubelet.rs"]
mod kubelet;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_apiserver::http::layers::{
    ApiServerOptions, Limits, Rule, StaticPolicy, StaticTokens, UserInfo,
};
use capstan_apiserver::http::pod_streams::KubeletClientConfig;
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt;
use kubelet::FakeKubelet;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);
const KUBELET_TOKEN: &str = "kubelet-secret";

/// Creates Node `name` reachable at `address` (if any) on `port` (if any), with 4 CPUs and
/// 8 GiB allocatable.
async fn add_node(registry: &Arc<Registry>, name: &str, address: Option<&str>, port: Option<u16>) {
    let nodes = Api::<Node>::cluster(registry.clone() as Arc<dyn Client>);
    let created = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": "a"}}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut node: Value = serde_json::to_value(created).unwrap();
    node["status"] = json!({
        "addresses": address.map(|a| vec![json!({"type": "Hostname", "address": name}), json!({"type": "InternalIP", "address": a})]).unwrap_or_default(),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port.unwrap_or(0)}},
        "capacity": {"cpu": "4", "memory": "8Gi"},
        "allocatable": {"cpu": "4", "memory": "8Gi"},
    });
    nodes
        .update_status(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .unwrap();
}

/// Creates Pod `default/name` with `containers`, on `node` (if any), in `phase`.
async fn add_pod(
    registry: &Arc<Registry>,
    name: &str,
    node: Option<&str>,
    containers: &[&str],
    phase: &str,
) {
    let pods = Api::<Pod>::namespaced(registry.clone() as Arc<dyn Client>, "default");
    let mut spec = json!({
        "containers": containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox:1.36"}))
            .collect::<Vec<_>>(),
    });
    if let Some(node) = node {
        spec["nodeName"] = node.into();
    }
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": spec,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut pod: Value = serde_json::to_value(created).unwrap();
    pod["status"] = json!({"phase": phase});
    pods.update_status(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
}

/// A registry with node `n1` on the stand-in kubelet and Pods `web` (container `app`), `duo`
/// (`app`, `sidecar`), `pending` (not scheduled), `done` (Succeeded) and `crashy` (container
/// `broken`).
async fn seeded(kubelet: &FakeKubelet) -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    add_node(&registry, "n1", Some("127.0.0.1"), Some(kubelet.port())).await;
    add_pod(&registry, "web", Some("n1"), &["app"], "Running").await;
    add_pod(&registry, "duo", Some("n1"), &["app", "sidecar"], "Running").await;
    add_pod(&registry, "pending", None, &["app"], "Pending").await;
    add_pod(&registry, "done", Some("n1"), &["app"], "Succeeded").await;
    add_pod(&registry, "crashy", Some("n1"), &["broken"], "Running").await;
    add_pod(&registry, "flood", Some("n1"), &["flood"], "Running").await;
    registry
}

/// The stand-in kubelet's credential, and a caller token (`caller-token`, user `caller` in
/// `system:masters`) next to anonymous access.
fn options() -> ApiServerOptions {
    ApiServerOptions::default()
        .authenticator(
            StaticTokens::new().with("caller-token", UserInfo::new("caller", ["system:masters"])),
        )
        .kubelet_client(KubeletClientConfig::with_token(KUBELET_TOKEN))
}

async fn serve(registry: Arc<Registry>, options: ApiServerOptions) -> ApiServer {
    ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// Sends one request on a connection of its own.
async fn send(
    address: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> axum::http::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "capstan");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(
            request
                .body(http_body_util::Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn get(address: SocketAddr, path: &str) -> (StatusCode, String) {
    let response = send(address, Method::GET, path, &[], "").await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(address: SocketAddr, path: &str) -> (StatusCode, Value) {
    let (status, body) = get(address, path).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

const LOG: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn logs_pass_every_option_and_the_server_s_kubelet_credential() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let response = send(
            server.address(),
            Method::GET,
            &format!("{LOG}/web/log?container=app&previous=true&timestamps=1&sinceSeconds=30&tailLines=2&limitBytes=100"),
            &[("authorization", "Bearer caller-token")],
            "",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "line 2\nline 3\n");
        let seen = kubelet.last("/containerLogs");
        assert_eq!(seen.path, "/containerLogs/default/web/app");
        assert_eq!(
            seen.query,
            "limitBytes=100&previous=true&sinceSeconds=30&tailLines=2&timestamps=true"
        );
        assert_eq!(seen.authorization.as_deref(), Some("Bearer kubelet-secret"));
        let (status, _) = get(
            server.address(),
            &format!("{LOG}/web/log?sinceTime=2026-12-07T10:11:12.5Z&follow=false"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            kubelet.last("/containerLogs").query,
            "sinceTime=2026-12-07T10%3A11%3A12Z"
        );
        let (status, body) = get(server.address(), &format!("{LOG}/web/log")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "line 1\nline 2\nline 3\n"));
        assert_eq!(kubelet.last("/containerLogs").query, "");
    })
    .await;
}

#[tokio::test]
async fn log_requests_are_refused_in_kubernetes_words() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let address = server.address();
        let cases = [
            ("duo/log", 400, "a container name must be specified for pod duo, choose one of: [app sidecar]"),
            ("web/log?container=db", 400, "container db is not valid for pod web"),
            ("nope/log", 404, "pods \"nope\" not found"),
            ("web/log?tailLines=-1", 422, "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"),
            ("web/log?tailLines=ten", 400, "strconv.ParseInt: parsing \"ten\": invalid syntax"),
            ("web/log?limitBytes=0", 422, "limitBytes: Invalid value: 0: must be greater than 0"),
            ("web/log?sinceSeconds=5&sinceTime=2026-12-07T10:11:12Z", 422, "at most one of `sinceTime` or `sinceSeconds` may be specified"),
            ("crashy/log", 400, "container \"broken\" in pod \"crashy\" is waiting to start: ContainerCreating"),
        ];
        let before = kubelet.seen().len();
        for (path, code, message) in cases {
            let (status, body) = get_json(address, &format!("{LOG}/{path}")).await;
            assert_eq!(status.as_u16(), code, "{path}: {body}");
            assert_eq!(body["kind"], "Status", "{path}");
            assert!(
                body["message"].as_str().unwrap().contains(message),
                "{path}: {body}"
            );
        }
        // Only the kubelet's own refusal reached it.
        assert_eq!(kubelet.seen().len(), before + 1);
        let (status, body) = get(address, &format!("{LOG}/pending/log")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""), "no node, no log yet");
    })
    .await;
}

#[tokio::test]
async fn a_followed_log_arrives_as_written_and_outlives_the_request_timeout() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let limits = Limits {
            request_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = serve(seeded(&kubelet).await, options().limits(limits)).await;
        let response = send(
            server.address(),
            Method::GET,
            &format!("{LOG}/web/log?follow=true"),
            &[],
            "",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first line\n", "delivered before the stream goes on");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        kubelet.release();
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                rest.extend_from_slice(&data);
            }
        }
        assert_eq!(rest, b"second line\n");
        assert_eq!(kubelet.last("/containerLogs").query, "follow=true");
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_the_kubelet_back_instead_of_filling_memory() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let response = send(
            server.address(),
            Method::GET,
            &format!("{LOG}/flood/log?follow=true"),
            &[],
            "",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(!first.is_empty());
        // The client reads nothing more: once the buffers on the way are full, the kubelet's
        // stream stops being taken.
        let mut previous = kubelet.flooded();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = kubelet.flooded();
            if now == previous {
                break;
            }
            previous = now;
        }
        assert!(
            previous < 256 << 20,
            "the kubelet produced {previous} bytes for a stalled client"
        );
        // Reading again lets it go on.
        let mut read = 0usize;
        while read < 4 << 20 {
            read += body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len();
        }
        assert!(kubelet.flooded() > previous);
    })
    .await;
}

/// Sends a raw upgrade request and returns the stream, the response head, and whatever
/// arrived after it.
async fn upgrade(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: capstan\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let rest = received[end + 4..].to_vec();
            return (stream, head, rest);
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before a response head: {received:?}");
        received.extend_from_slice(&buffer[..n]);
    }
}

/// Reads from `stream` until `received` holds `expected` bytes.
async fn read_exactly(stream: &mut TcpStream, mut received: Vec<u8>, expected: usize) -> Vec<u8> {
    let mut buffer = [0u8; 1024];
    while received.len() < expected {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed early: {received:?}");
        received.extend_from_slice(&buffer[..n]);
    }
    received
}

const SPDY: &str =
    "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n";
const WEBSOCKET: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n";

#[tokio::test]
async fn exec_attach_and_port_forward_upgrades_are_spliced_both_ways() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let (mut stream, head, rest) = upgrade(
            server.address(),
            "POST",
            &format!("{LOG}/web/exec?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true"),
            &format!("{SPDY}Authorization: Bearer caller-token\r\n"),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: spdy/3.1"), "{head}");
        let greeting = read_exactly(&mut stream, rest, 16).await;
        assert_eq!(greeting, b"kubelet says hi\n");
        stream.write_all(b"ping\n").await.unwrap();
        assert_eq!(read_exactly(&mut stream, Vec::new(), 5).await, b"ping\n");
        stream.write_all(b"and again\n").await.unwrap();
        assert_eq!(read_exactly(&mut stream, Vec::new(), 10).await, b"and again\n");
        let seen = kubelet.last("/exec");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/exec/default/web/app");
        assert_eq!(
            seen.query,
            "command=sh&command=-c&command=echo+hi&input=1&output=1&tty=1"
        );
        assert_eq!(seen.authorization.as_deref(), Some("Bearer kubelet-secret"));
        assert_eq!(seen.headers["x-stream-protocol-version"], "v4.channel.k8s.io");

        let (mut stream, head, rest) = upgrade(
            server.address(),
            "GET",
            &format!("{LOG}/duo/attach?container=sidecar&stdout=1&stderr=1"),
            WEBSOCKET,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(read_exactly(&mut stream, rest, 16).await, b"kubelet says hi\n");
        let seen = kubelet.last("/attach");
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/attach/default/duo/sidecar"));
        assert_eq!(seen.query, "error=1&output=1");
        assert_eq!(seen.headers["sec-websocket-protocol"], "v5.channel.k8s.io");
        assert_eq!(seen.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");

        let (_stream, head, _) = upgrade(
            server.address(),
            "POST",
            &format!("{LOG}/web/portforward?ports=8080"),
            SPDY,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let seen = kubelet.last("/portForward");
        assert_eq!((seen.path.as_str(), seen.query.as_str()), ("/portForward/default/web", "port=8080"));
    })
    .await;
}

#[tokio::test]
async fn exec_requests_are_checked_before_the_kubelet_is_asked() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let cases = [
            (
                "web/exec?stdout=1",
                SPDY,
                "you must specify at least 1 command",
            ),
            (
                "web/exec?command=ls",
                SPDY,
                "you must specify at least 1 of stdin, stdout, stderr",
            ),
            (
                "pending/exec?command=ls&stdout=1",
                SPDY,
                "pod pending does not have a host assigned",
            ),
            (
                "done/exec?command=ls&stdout=1",
                SPDY,
                "cannot exec into a container in a completed pod; current phase is Succeeded",
            ),
            (
                "duo/exec?command=ls&stdout=1",
                SPDY,
                "a container name must be specified for pod duo, choose one of: [app sidecar]",
            ),
            (
                "web/exec?command=ls&stdout=1",
                "Content-Length: 0\r\n",
                "Upgrade request required",
            ),
            (
                "pending/portforward?ports=80",
                SPDY,
                "pod pending does not have a host assigned",
            ),
        ];
        for (path, headers, message) in cases {
            let (mut stream, head, rest) =
                upgrade(server.address(), "POST", &format!("{LOG}/{path}"), headers).await;
            assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.parse().unwrap())
                })
                .expect("a sized error body");
            let body = read_exactly(&mut stream, rest, length).await;
            let status: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status["message"], message, "{path}");
        }
        assert!(
            kubelet.seen().is_empty(),
            "nothing reached the kubelet: {:?}",
            kubelet.seen()
        );
    })
    .await;
}

#[tokio::test]
async fn a_websocket_exec_needs_create_as_well_as_get_on_pods_exec() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let tokens = StaticTokens::new()
            .with("reader", UserInfo::new("reader", Vec::<String>::new()))
            .with("getter", UserInfo::new("getter", Vec::<String>::new()))
            .with("creator", UserInfo::new("creator", Vec::<String>::new()))
            .with("both", UserInfo::new("both", Vec::<String>::new()));
        let rule = |user: &str, verbs: &[&str], resource: &str| {
            Rule::new()
                .users([user])
                .verbs(verbs.iter().copied())
                .api_groups([""])
                .resources([resource])
        };
        let policy = StaticPolicy::new([
            rule("reader", &["get", "list"], "pods"),
            rule("getter", &["get"], "pods/exec"),
            rule("creator", &["create"], "pods/exec"),
            rule("both", &["get", "create"], "pods/exec"),
        ]);
        let server = serve(
            seeded(&kubelet).await,
            options().authenticator(tokens).authorizer(policy).anonymous(false),
        )
        .await;
        let exec = format!("{LOG}/web/exec?command=ls&stdout=1");
        let attempt = |method: &'static str, token: &'static str| {
            let exec = exec.clone();
            let address = server.address();
            async move {
                let headers = match method {
                    "GET" => format!("{WEBSOCKET}Authorization: Bearer {token}\r\n"),
                    _ => format!("{SPDY}Authorization: Bearer {token}\r\n"),
                };
                let (mut stream, head, rest) = upgrade(address, method, &exec, &headers).await;
                let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                if code == 101 {
                    return (code, String::new());
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                    .unwrap_or_default();
                let body = read_exactly(&mut stream, rest, length).await;
                (code, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (code, body) = attempt("GET", "reader").await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains(r#"User \"reader\" cannot get resource \"pods/exec\""#), "{body}");
        let (code, body) = attempt("GET", "getter").await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains(r#"pods \"web\" is forbidden: User \"getter\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""#),
            "{body}"
        );
        assert_eq!(attempt("POST", "creator").await.0, 101);
        assert_eq!(attempt("GET", "creator").await.0, 403);
        assert_eq!(attempt("GET", "both").await.0, 101);
        assert_eq!(attempt("POST", "getter").await.0, 403);
    })
    .await;
}

#[tokio::test]
async fn node_proxy_relays_any_method_path_query_and_body() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let (status, body) = get(server.address(), "/api/v1/nodes/n1/proxy/pods?verbose=1").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "GET /pods?verbose=1 body=")
        );
        let response = send(
            server.address(),
            Method::POST,
            "/api/v1/nodes/n1/proxy/debug/echo",
            &[
                ("authorization", "Bearer caller-token"),
                ("content-type", "text/plain"),
            ],
            "hello",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "POST /debug/echo? body=hello");
        let seen = kubelet.last("/debug/echo");
        assert_eq!(seen.authorization.as_deref(), Some("Bearer kubelet-secret"));
        assert_eq!(seen.headers["content-type"], "text/plain");
        let (status, summary) =
            get_json(server.address(), "/api/v1/nodes/n1/proxy/stats/summary").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(summary["node"]["nodeName"], "n1");
        let (status, body) = get(server.address(), "/api/v1/nodes/n1/proxy").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /? body="));
        // Another port of the node is reached without the kubelet credential.
        let other = FakeKubelet::start().await;
        let (status, body) = get(
            server.address(),
            &format!("/api/v1/nodes/n1:{}/proxy/metrics", other.port()),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "GET /metrics? body=")
        );
        assert_eq!(other.last("/metrics").authorization, None);
        let (status, body) = get(
            server.address(),
            &format!("/api/v1/nodes/n1:{}/proxy/pods", kubelet.port()),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "GET /pods? body=")
        );
        assert_eq!(
            kubelet.last("/pods").authorization.as_deref(),
            Some("Bearer kubelet-secret")
        );
        let (status, missing) = get_json(server.address(), "/api/v1/nodes/zz/proxy/pods").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(missing["message"], "nodes \"zz\" not found");
    })
    .await;
}

#[tokio::test]
async fn the_metrics_api_serves_kubelet_summaries_as_metrics_server_does() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options()).await;
        let address = server.address();
        let base = "/apis/metrics.k8s.io/v1beta1";
        let (status, nodes) = get_json(address, &format!("{base}/nodes")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(nodes["kind"], "NodeMetricsList");
        assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
        let n1 = &nodes["items"][0];
        assert_eq!(n1["metadata"]["name"], "n1");
        assert_eq!(n1["metadata"]["labels"]["zone"], "a");
        assert_eq!(n1["usage"], json!({"cpu": "250m", "memory": "64Mi"}));
        assert_eq!(n1["timestamp"], "2026-12-07T10:00:05Z");
        assert_eq!(n1["window"], "10s");
        let (status, one) = get_json(address, &format!("{base}/nodes/n1")).await;
        assert_eq!(
            (status, &one["kind"]),
            (StatusCode::OK, &json!("NodeMetrics"))
        );
        let (_, filtered) =
            get_json(address, &format!("{base}/nodes?labelSelector=zone%3Db")).await;
        assert_eq!(filtered["items"], json!([]));

        let (status, pods) = get_json(address, &format!("{base}/namespaces/default/pods")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(pods["kind"], "PodMetricsList");
        let items = pods["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "only web has metrics: {pods}");
        assert_eq!(items[0]["metadata"]["name"], "web");
        assert_eq!(items[0]["metadata"]["namespace"], "default");
        assert_eq!(
            items[0]["containers"],
            json!([{"name": "app", "usage": {"cpu": "5m", "memory": "8Mi"}}])
        );
        let (_, all) = get_json(address, &format!("{base}/pods?labelSelector=app%3Dweb")).await;
        assert_eq!(all["items"].as_array().unwrap().len(), 1);
        let (_, none) = get_json(address, &format!("{base}/pods?labelSelector=app%3Dduo")).await;
        assert_eq!(none["items"], json!([]));
        let (status, web) = get_json(address, &format!("{base}/namespaces/default/pods/web")).await;
        assert_eq!(
            (status, &web["kind"]),
            (StatusCode::OK, &json!("PodMetrics"))
        );
        let (status, duo) = get_json(address, &format!("{base}/namespaces/default/pods/duo")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            duo["message"],
            "podmetrics.metrics.k8s.io \"default/duo\" not found"
        );
        assert!(kubelet
            .seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer kubelet-secret")));

        let (_, groups) = get_json(address, "/apis").await;
        assert!(groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io"));
        let (status, resources) = get_json(address, base).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nodes", "pods"]);
        let response = send(
            address,
            Method::GET,
            "/apis",
            &[(
                "accept",
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            )],
            "",
        )
        .await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let aggregated: Value = serde_json::from_slice(&body).unwrap();
        let metrics_group = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap_or_else(|| panic!("metrics.k8s.io in {aggregated}"));
        assert_eq!(metrics_group["versions"][0]["version"], "v1beta1");
        assert_eq!(
            metrics_group["versions"][0]["resources"][1]["verbs"],
            json!(["get", "list"])
        );
        let (_, core) = get_json(address, "/api/v1").await;
        let core: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for subresource in [
            "pods/log",
            "pods/exec",
            "pods/attach",
            "pods/portforward",
            "nodes/proxy",
        ] {
            assert!(core.contains(&subresource), "{subresource} in {core:?}");
        }
        let (status, service) = get_json(
            address,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{service}");
        assert_eq!(service["status"]["conditions"][0]["type"], "Available");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_or_addressless_kubelet_is_a_clean_error() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let registry = seeded(&kubelet).await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        add_node(&registry, "n2", Some("127.0.0.1"), Some(port)).await;
        add_node(&registry, "n3", None, None).await;
        add_pod(&registry, "far", Some("n2"), &["app"], "Running").await;
        let server = serve(registry, options()).await;
        let address = server.address();
        let dial = format!("dial tcp 127.0.0.1:{port}: connect: connection refused");

        let (status, log) = get_json(address, &format!("{LOG}/far/log?follow=true")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            log["message"],
            format!(
                "Get \"http://127.0.0.1:{port}/containerLogs/default/far/app?follow=true\": {dial}"
            )
        );
        let (mut stream, head, rest) = upgrade(
            address,
            "POST",
            &format!("{LOG}/far/exec?command=ls&stdout=1"),
            SPDY,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.parse().unwrap())
            })
            .unwrap();
        let body: Value =
            serde_json::from_slice(&read_exactly(&mut stream, rest, length).await).unwrap();
        assert_eq!(body["message"], format!("error dialing backend: {dial}"));
        let (status, proxy) = get_json(address, "/api/v1/nodes/n2/proxy/pods").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            proxy["message"],
            format!("error trying to reach service: {dial}")
        );
        let (status, proxy) = get_json(address, "/api/v1/nodes/n3/proxy/pods").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            proxy["message"],
            "no preferred addresses found; known addresses: []"
        );
        let (status, nodes) = get_json(address, "/apis/metrics.k8s.io/v1beta1/nodes").await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n1"], "unreachable nodes are left out");
    })
    .await;
}

#[tokio::test]
async fn kubectl_logs_and_top_work_through_the_server() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let kubectl = Kubectl::serve_with(seeded(&kubelet).await, options()).await;
        assert_eq!(
            kubectl.ok(&["logs", "web"]).await,
            "line 1\nline 2\nline 3\n"
        );
        assert_eq!(kubectl.ok(&["logs", "web", "--tail=1"]).await, "line 3\n");
        let refused = kubectl.fails(&["logs", "web", "-c", "db"]).await;
        assert!(
            refused.contains("container db is not valid for pod web"),
            "{refused}"
        );

        let mut follow = kubectl.spawn(&["logs", "-f", "web"]);
        let mut stdout = follow.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 256];
        while !seen.ends_with(b"first line\n") {
            let n = stdout.read(&mut buffer).await.unwrap();
            assert!(n > 0, "kubectl ended early: {seen:?}");
            seen.extend_from_slice(&buffer[..n]);
        }
        kubelet.release();
        stdout.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"first line\nsecond line\n");
        assert!(follow.wait().await.unwrap().success());

        let nodes = kubectl.ok(&["top", "node"]).await;
        let row = nodes
            .lines()
            .find(|l| l.starts_with("n1"))
            .unwrap_or_else(|| panic!("{nodes}"));
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns[1], "250m", "{nodes}");
        assert_eq!(columns[3], "64Mi", "{nodes}");
        let one = kubectl.ok(&["top", "node", "n1"]).await;
        assert!(
            one.lines()
                .any(|l| l.starts_with("n1") && l.contains("250m")),
            "{one}"
        );
        let pods = kubectl.ok(&["top", "pod"]).await;
        let row = pods
            .lines()
            .find(|l| l.starts_with("web"))
            .unwrap_or_else(|| panic!("{pods}"));
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["web", "5m", "8Mi"],
            "{pods}"
        );
        let containers = kubectl.ok(&["top", "pod", "web", "--containers"]).await;
        assert!(containers.contains("app"), "{containers}");
        let none = kubectl.fails(&["top", "pod", "duo"]).await;
        assert!(
            none.contains("not found") || none.contains("metrics not available yet"),
            "{none}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_kubelet_credential_reviews_as_the_kubelet_client_user() {
    within(LIMIT, async {
        let kubelet = FakeKubelet::start().await;
        let server = serve(seeded(&kubelet).await, options().anonymous(false)).await;
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": KUBELET_TOKEN},
        });
        let response = send(
            server.address(),
            Method::POST,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &[
                ("authorization", "Bearer caller-token"),
                ("content-type", "application/json"),
            ],
            &review.to_string(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["status"]["authenticated"], true, "{answer}");
        assert_eq!(
            answer["status"]["user"]["username"],
            "kube-apiserver-kubelet-client"
        );
        assert!(answer["status"]["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:masters")));
        // The caller's own token still works next to it, and a wrong one is refused.
        let (status, _) = get(server.address(), "/api/v1/namespaces/default/pods").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let response = send(
            server.address(),
            Method::GET,
            "/api/v1/namespaces/default/pods/web",
            &[("authorization", "Bearer caller-token")],
            "",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}
