//! The kubelet's HTTP API end to end: a kubelet on the fake runtime over the in-process API
//! server, serving on 127.0.0.1:0 with a static token table, called over HTTP.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_api::k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use capstan_api::Api;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_kubelet::server::auth::{StaticAuth, User};
use capstan_kubelet::{Kubelet, KubeletConfig, ServerAuth};
use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
use capstan_runtime::FakeClock;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use parking_lot::Mutex;
use support::*;

const ADMIN: &str = "admin-token";
const VIEWER: &str = "viewer-token";

/// A node whose kubelet serves its API, and where.
struct Served {
    node: Node,
    address: SocketAddr,
}

/// A node serving with the static table: `admin` may do everything, `viewer` read stats.
async fn start(images: Vec<(&str, ImageBehaviour)>) -> Served {
    let auth = StaticAuth::new()
        .token(ADMIN, User::new("admin").group("system:masters"))
        .token(VIEWER, User::new("viewer"))
        .allow("admin")
        .allow_subresource("viewer", "stats");
    start_with(images, ServerAuth::custom(auth)).await
}

async fn start_with(images: Vec<(&str, ImageBehaviour)>, auth: ServerAuth) -> Served {
    let client = capstan_apiserver::testing::client();
    let clock = FakeClock::new();
    let mut builder = FakeRuntime::builder().node_name(NODE).clock(clock.clone());
    for (image, behaviour) in images {
        builder = builder.image(image, behaviour);
    }
    let fake = builder.build();
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let mut node = Node {
        client,
        clock,
        runtime: Arc::new(RecordingRuntime {
            inner: fake.clone(),
            stops: Mutex::new(Vec::new()),
        }),
        fake,
        network: Arc::new(TestNetwork::default()),
        prober: Arc::new(ScriptedProber::default()),
        events,
        kubelet: None,
    };
    let config = KubeletConfig::new(NODE)
        .internal_ip("127.0.0.1")
        .server_listen("127.0.0.1:0".parse().unwrap())
        .server_auth(auth);
    let kubelet = Kubelet::builder(config)
        .client(node.client.clone())
        .runtime(node.runtime.clone())
        .network(node.network.clone())
        .prober(node.prober.clone())
        .clock(Arc::new(node.clock.clone()))
        .events(node.events.recorder("kubelet"))
        .build()
        .expect("valid kubelet")
        .start();
    let address = kubelet.server_address().expect("a server");
    assert_ne!(address.port(), 0);
    while !kubelet.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kubelet = Some(kubelet);
    Served { node, address }
}

/// Sends one request and returns the response with its body unread.
async fn send(
    address: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("a response")
}

/// `GET path` with `token`: the status and the whole body as text.
async fn get(address: SocketAddr, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let response = send(address, Method::GET, path, token).await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn admin(address: SocketAddr, path: &str) -> (StatusCode, String) {
    get(address, path, Some(ADMIN)).await
}

fn pod_json(name: &str, image: &str, extra: serde_json::Value) -> serde_json::Value {
    pod(name, &[(name, image)], extra)
}

fn running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|c| {
            c.iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
}

#[tokio::test]
async fn only_healthz_is_open_and_everything_else_needs_an_allowed_token() {
    within(LIMIT, async {
        let api = start(vec![]).await;
        let a = api.address;
        assert_eq!(
            get(a, "/healthz", None).await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get(a, "/pods", None).await,
            (StatusCode::UNAUTHORIZED, "Unauthorized".into())
        );
        assert_eq!(
            get(a, "/pods", Some("wrong")).await,
            (StatusCode::UNAUTHORIZED, "Unauthorized".into())
        );
        assert_eq!(
            get(a, "/pods", Some(VIEWER)).await,
            (
                StatusCode::FORBIDDEN,
                "Forbidden (user=viewer, verb=get, resource=nodes, subresource=proxy)".into()
            )
        );
        let exec = send(
            a,
            Method::POST,
            "/exec/default/web/web?command=ls&output=1",
            Some(VIEWER),
        )
        .await;
        let body = exec.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            "Forbidden (user=viewer, verb=create, resource=nodes, subresource=proxy)"
        );
        let (status, _) = get(a, "/stats/summary", Some(VIEWER)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(a, "/metrics/resource", Some(VIEWER)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "viewer may read stats, not metrics"
        );
        assert_eq!(
            get(a, "/nothing", Some(ADMIN)).await.0,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn the_node_reports_the_bound_port_as_its_kubelet_endpoint() {
    within(LIMIT, async {
        let api = start(vec![]).await;
        let nodes: Api<NodeObject> = Api::all(api.node.client.clone());
        let node = nodes.get(NODE).await.unwrap();
        let port = node
            .status
            .and_then(|s| s.daemon_endpoints)
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(i32::from(api.address.port())));
    })
    .await;
}

#[tokio::test]
async fn pods_lists_the_pods_bound_to_the_node() {
    within(LIMIT, async {
        let api = start(vec![("nginx", ImageBehaviour::new())]).await;
        api.node
            .create(pod_json("web", "nginx", serde_json::json!({})))
            .await;
        api.node.wait_pod("web", "running", running).await;
        let (status, body) = admin(api.address, "/pods").await;
        assert_eq!(status, StatusCode::OK);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["apiVersion"], "v1");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["web"]);
        assert_eq!(list["items"][0]["spec"]["nodeName"], NODE);
    })
    .await;
}

/// The next chunk of a streamed body, `None` at its end.
async fn chunk(body: &mut Incoming) -> Option<String> {
    let frame = body.frame().await?.expect("a frame");
    Some(String::from_utf8_lossy(&frame.into_data().expect("data")).into_owned())
}

fn talker() -> ImageBehaviour {
    ImageBehaviour::new()
        .log_line(Duration::from_secs(1), "one")
        .log_line(Duration::from_secs(2), "two")
        .log_line(Duration::from_secs(3), "three")
}

#[tokio::test]
async fn container_logs_honour_every_option() {
    within(LIMIT, async {
        let api = start(vec![("talker", talker())]).await;
        api.node
            .create(pod_json("talk", "talker", serde_json::json!({})))
            .await;
        api.node.wait_pod("talk", "running", running).await;
        api.node.advance(5).await;
        let a = api.address;
        let logs = |query: &str| {
            let path = format!("/containerLogs/default/talk/talk{query}");
            async move { admin(a, &path).await }
        };
        assert_eq!(logs("").await, (StatusCode::OK, "one\ntwo\nthree\n".into()));
        assert_eq!(logs("?tailLines=2").await.1, "two\nthree\n");
        assert_eq!(logs("?tail=1").await.1, "three\n");
        assert_eq!(logs("?limitBytes=6").await.1, "one\ntw");
        let (_, stamped) = logs("?timestamps=true").await;
        let lines: Vec<(&str, &str)> = stamped
            .lines()
            .map(|l| l.split_once(' ').expect("a timestamp and a line"))
            .collect();
        assert_eq!(
            lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            vec!["one", "two", "three"]
        );
        for (time, _) in &lines {
            assert!(time.ends_with('Z') && time.contains('T'), "{time}");
            time.parse::<capstan_api::k8s_openapi::jiff::Timestamp>()
                .expect("RFC 3339");
        }
        // From the second line's time on.
        let since = lines[1].0;
        assert_eq!(logs(&format!("?sinceTime={since}")).await.1, "two\nthree\n");
        // Five seconds passed since the start: the last second has no line, the last
        // hundred have them all.
        assert_eq!(logs("?sinceSeconds=1").await.1, "");
        assert_eq!(logs("?sinceSeconds=100").await.1, "one\ntwo\nthree\n");
        assert_eq!(
            logs("?tailLines=x").await,
            (
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#.into()
            )
        );
        assert_eq!(
            logs("?sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z").await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#.into()
            )
        );
    })
    .await;
}

#[tokio::test]
async fn following_a_log_streams_new_lines_until_the_container_stops() {
    within(LIMIT, async {
        let image = ImageBehaviour::new()
            .log_line(Duration::from_secs(1), "first")
            .log_line(Duration::from_secs(6), "second")
            .exit_after(Duration::from_secs(8), 0);
        let api = start(vec![("once", image)]).await;
        api.node
            .create(pod_json(
                "once",
                "once",
                serde_json::json!({"restartPolicy": "Never"}),
            ))
            .await;
        api.node.wait_pod("once", "running", running).await;
        api.node.advance(2).await;
        let response = send(
            api.address,
            Method::GET,
            "/containerLogs/default/once/once?follow=true",
            Some(ADMIN),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        assert_eq!(chunk(&mut body).await.as_deref(), Some("first\n"));
        api.node.advance(5).await;
        assert_eq!(chunk(&mut body).await.as_deref(), Some("second\n"));
        api.node.advance(3).await;
        assert_eq!(
            chunk(&mut body).await,
            None,
            "the stream ends when the container exits"
        );
    })
    .await;
}

#[tokio::test]
async fn previous_reads_the_attempt_before_a_restart() {
    within(LIMIT, async {
        let image = ImageBehaviour::new()
            .log_line(Duration::from_secs(1), "attempt")
            .exit_after(Duration::from_secs(2), 1);
        let api = start(vec![("crash", image)]).await;
        api.node
            .create(pod_json("crash", "crash", serde_json::json!({})))
            .await;
        api.node.wait_pod("crash", "running", running).await;
        let a = api.address;
        assert_eq!(
            admin(a, "/containerLogs/default/crash/crash?previous=true").await,
            (
                StatusCode::BAD_REQUEST,
                r#"previous terminated container "crash" in pod "crash" not found"#.into()
            )
        );
        // The first attempt logs and exits; the back-off (10 s) passes; the second runs.
        // Advancing a second at a time lets the worker see the exit, then the back-off end.
        let restarted = |p: &Pod| {
            running(p)
                && p.status
                    .as_ref()
                    .unwrap()
                    .container_statuses
                    .as_ref()
                    .unwrap()[0]
                    .restart_count
                    == 1
        };
        for _ in 0..30 {
            if api.node.get("crash").await.is_some_and(|p| restarted(&p)) {
                break;
            }
            api.node.advance(1).await;
        }
        api.node.wait_pod("crash", "a restart", restarted).await;
        assert_eq!(
            admin(a, "/containerLogs/default/crash/crash?previous=true").await,
            (StatusCode::OK, "attempt\n".into())
        );
        assert_eq!(
            admin(a, "/containerLogs/default/crash/crash").await,
            (StatusCode::OK, String::new()),
            "the new attempt has written nothing yet"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_and_waiting_containers_get_the_kubelets_answers() {
    within(LIMIT, async {
        let slow = ImageBehaviour::new().start_delay(Duration::from_secs(600));
        let api = start(vec![("nginx", ImageBehaviour::new()), ("slow", slow)]).await;
        api.node
            .create(pod_json("web", "nginx", serde_json::json!({})))
            .await;
        api.node
            .create(pod_json("slow", "slow", serde_json::json!({})))
            .await;
        api.node.wait_pod("web", "running", running).await;
        api.node
            .wait_pod("slow", "created", |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|c| c[0].container_id.is_some())
            })
            .await;
        let a = api.address;
        assert_eq!(
            admin(a, "/containerLogs/default/nope/web").await,
            (StatusCode::NOT_FOUND, r#"pod "nope" does not exist"#.into())
        );
        assert_eq!(
            admin(a, "/containerLogs/default/web/other").await,
            (
                StatusCode::NOT_FOUND,
                r#"container "other" not found in pod "web""#.into()
            )
        );
        assert_eq!(
            admin(a, "/containerLogs/default/slow/slow").await,
            (
                StatusCode::BAD_REQUEST,
                r#"container "slow" in pod "slow" is waiting to start: ContainerCreating"#.into()
            )
        );
        // Exec and port-forward check the Pod before any protocol.
        let (status, body) = admin(a, "/exec/default/nope/web?command=ls&output=1").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "pod does not exist")
        );
        let (status, body) = admin(a, "/exec/default/web/web?command=ls").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 of stdin, stdout, stderr"
            )
        );
        let (status, body) = admin(a, "/exec/default/web/wrong-uid/web?command=ls&output=1").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"container not found ("web")"#
            )
        );
        let (status, body) = admin(a, "/portForward/default/nope").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "pod does not exist")
        );
    })
    .await;
}

#[tokio::test]
async fn stats_summary_and_resource_metrics_report_the_running_containers() {
    within(LIMIT, async {
        let image = ImageBehaviour::new().usage(250, 1 << 20);
        let api = start(vec![("busy", image)]).await;
        api.node
            .create(pod_json("busy", "busy", serde_json::json!({})))
            .await;
        api.node.wait_pod("busy", "running", running).await;
        api.node.advance(4).await;
        let a = api.address;
        let (status, body) = admin(a, "/stats/summary").await;
        assert_eq!(status, StatusCode::OK);
        let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(summary["node"]["nodeName"], NODE);
        assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].is_u64());
        assert!(summary["node"]["memory"]["workingSetBytes"].is_u64());
        let pods = summary["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 1, "{summary}");
        assert_eq!(pods[0]["podRef"]["name"], "busy");
        assert_eq!(pods[0]["podRef"]["namespace"], "default");
        let container = &pods[0]["containers"][0];
        assert_eq!(container["name"], "busy");
        let (_, metrics) = admin(a, "/metrics/resource").await;
        assert!(metrics.contains("# TYPE node_cpu_usage_seconds_total counter\n"));
        assert!(metrics.contains("# TYPE resource_scrape_error gauge\n"));
        assert!(metrics.lines().any(|l| l.starts_with(
            "container_start_time_seconds{container=\"busy\",namespace=\"default\",pod=\"busy\"} "
        )));
        // 250 millicores for 4 s, 1 MiB: the node is the sum of its one pod.
        assert_eq!(container["cpu"]["usageNanoCores"], 250_000_000u64);
        assert_eq!(container["cpu"]["usageCoreNanoSeconds"], 1_000_000_000u64);
        assert_eq!(container["memory"]["workingSetBytes"], 1u64 << 20);
        assert_eq!(pods[0]["cpu"], container["cpu"]);
        assert_eq!(summary["node"]["memory"]["workingSetBytes"], 1u64 << 20);
        assert_eq!(
            summary["node"]["cpu"]["usageCoreNanoSeconds"],
            1_000_000_000u64
        );
        let labels = "{container=\"busy\",namespace=\"default\",pod=\"busy\"}";
        for prefix in [
            format!("container_cpu_usage_seconds_total{labels} 1 "),
            format!("container_memory_working_set_bytes{labels} 1.048576e+06 "),
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"busy\"} 1 ".to_string(),
            "node_memory_working_set_bytes 1.048576e+06 ".to_string(),
        ] {
            assert!(
                metrics.lines().any(|l| l.starts_with(&prefix)),
                "no {prefix:?} in\n{metrics}"
            );
        }
        assert!(metrics.contains("\nresource_scrape_error 0\n"), "{metrics}");
    })
    .await;
}

/// Denies `carol` everything on the node but `stats`; allows everything else.
struct NodeStatsOnly;

#[async_trait::async_trait]
impl capstan_apiserver::http::layers::Authorizer for NodeStatsOnly {
    async fn authorize(
        &self,
        attributes: &capstan_apiserver::http::layers::Attributes,
    ) -> capstan_apiserver::http::layers::Decision {
        use capstan_apiserver::http::layers::Decision;
        let on_node_proxy = attributes
            .resource
            .as_ref()
            .is_some_and(|r| r.resource == "nodes" && r.subresource.as_deref() != Some("stats"));
        if attributes.user.name == "carol" && on_node_proxy {
            Decision::Deny("not for carol".into())
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test]
async fn delegated_auth_asks_the_api_server_over_http() {
    use capstan_apiserver::http::layers::{ApiServerOptions, StaticTokens, UserInfo};
    use capstan_kubelet::server::auth::{CacheTtls, DelegatedAuth};
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let tokens = StaticTokens::new()
            .with(
                "kubelet-token",
                UserInfo::new("system:node:node-1", ["system:nodes"]),
            )
            .with("carol-token", UserInfo::new("carol", ["devs"]))
            .with("dave-token", UserInfo::new("dave", ["devs"]));
        let options = ApiServerOptions {
            authenticator: Some(Arc::new(tokens)),
            authorizer: Arc::new(NodeStatsOnly),
            ..ApiServerOptions::default()
        };
        let server = capstan_apiserver::http::ApiServer::bind_with(
            registry,
            "127.0.0.1:0".parse().unwrap(),
            options,
        )
        .await
        .expect("an API server");
        let remote: Arc<dyn capstan_api::Client> = Arc::new(
            capstan_apiserver::remote::RemoteClient::new(&server.url())
                .expect("a client")
                .with_token("kubelet-token"),
        );
        let auth = DelegatedAuth::new(remote, CacheTtls::default());
        let auth = Arc::new(auth);
        let served = start_with(
            vec![],
            ServerAuth::Custom {
                authenticator: auth.clone(),
                authorizer: auth,
            },
        )
        .await;
        let a = served.address;
        assert_eq!(
            get(a, "/pods", Some("nobody")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(get(a, "/pods", Some("dave-token")).await.0, StatusCode::OK);
        assert_eq!(
            get(a, "/pods", Some("carol-token")).await,
            (
                StatusCode::FORBIDDEN,
                "Forbidden (user=carol, verb=get, resource=nodes, subresource=proxy)".into()
            )
        );
        assert_eq!(
            get(a, "/stats/summary", Some("carol-token")).await.0,
            StatusCode::OK
        );
    })
    .await;
}
