//! The API server's security and limit layers, against real servers on loopback, driven by
//! raw HTTP/1.1 over `TcpStream` so that nothing in a client library hides what goes over the
//! wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{self, post};
use axum::Router;
use capstan_api::testing::within;
use capstan_apiserver::http::layers::{
    ApiServerOptions, BodyLimitLayer, InFlightLimitLayer, Limits, Rule, StaticPolicy, StaticTokens,
    TimeoutLayer, UserInfo,
};
use capstan_apiserver::http::ApiServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(20);

async fn server(options: ApiServerOptions) -> ApiServer {
    ApiServer::bind_with(
        capstan_apiserver::testing::registry(),
        "127.0.0.1:0".parse().unwrap(),
        options,
    )
    .await
    .expect("bind a loopback port")
}

/// Serves a test router on loopback, as `ApiServer` serves the API.
async fn serve(app: Router) -> ApiServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    ApiServer::serve(listener, app, Duration::from_secs(5))
}

/// An HTTP response, read to its end.
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a Kubernetes `Status` with `code` and `reason`, and returns its message.
    fn status(&self, code: u16, reason: &str) -> String {
        assert_eq!(self.code, code, "{self:?}");
        let status = self.json();
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["code"], code, "{status}");
        assert_eq!(status["reason"], reason, "{status}");
        status["message"].as_str().unwrap_or_default().to_string()
    }
}

/// The head of a request to `address`, closing the connection after the response.
fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

/// Sends `head` (without its final blank line) and `body`, and reads the whole response. The
/// body is written concurrently, so a server that answers before reading it all is heard.
async fn exchange(address: SocketAddr, head: String, body: Vec<Vec<u8>>) -> Reply {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(b"\r\n").await?;
        for chunk in body {
            writer.write_all(&chunk).await?;
        }
        writer.flush().await?;
        // Keep the write half open until the server closes: shutting it down early would
        // look like an aborted request body to some servers.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
        }
        if response_complete(&raw) {
            break;
        }
    }
    writing.abort();
    parse(&raw)
}

async fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut head = head(method, path, headers);
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n",
            body.len()
        ));
    }
    exchange(address, head, vec![body.to_vec()]).await
}

async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(address, "GET", path, headers, b"").await
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&raw[..end], &raw[end + 4..]))
}

fn response_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    match head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        Some(length) => body.len() >= length,
        None => head.contains("chunked") && body.ends_with(b"0\r\n\r\n"),
    }
}

fn parse(raw: &[u8]) -> Reply {
    let (head, body) = split_head(raw).unwrap_or_else(|| {
        panic!(
            "a complete response head, got {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|status| status.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Reply {
        code,
        headers,
        body,
    }
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

/// Opens a request and returns once its response head has arrived, leaving the stream open
/// (for watches).
async fn open(address: SocketAddr, path: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{}\r\n", head("GET", path, &[])).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while split_head(&raw).is_none() {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(
            n > 0,
            "the response head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    (parse(&raw).code, stream)
}

fn config_map(name: &str, value_bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"value": "x".repeat(value_bytes)},
    }))
    .unwrap()
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";

fn tokens() -> StaticTokens {
    StaticTokens::new()
        .with("admin-token", UserInfo::new("admin", ["admins"]))
        .with("alice-token", UserInfo::new("alice", ["devs"]))
        .with("bob-token", UserInfo::new("bob", Vec::<String>::new()))
}

fn policy() -> StaticPolicy {
    StaticPolicy::new([
        Rule::new()
            .user_groups(["admins"])
            .verbs(["*"])
            .resources(["*"]),
        Rule::new()
            .users(["alice"])
            .verbs(["get", "list", "watch"])
            .api_groups([""])
            .resources(["configmaps"])
            .namespaces(["default"]),
        Rule::new()
            .user_groups(["system:authenticated"])
            .verbs(["get"])
            .paths(["/api", "/api/*", "/apis", "/apis/*"]),
    ])
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn requests_without_credentials_are_unauthorized_when_anonymous_is_off() {
    within(DEADLINE, async {
        let server = server(
            ApiServerOptions::default()
                .authenticator(tokens())
                .anonymous(false),
        )
        .await;
        let reply = get(server.address(), CONFIG_MAPS, &[]).await;
        assert_eq!(reply.status(401, "Unauthorized"), "Unauthorized");
        let discovery = get(server.address(), "/api", &[]).await;
        discovery.status(401, "Unauthorized");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_even_when_anonymous_is_allowed() {
    within(DEADLINE, async {
        let server = server(ApiServerOptions::default().authenticator(tokens())).await;
        let reply = get(
            server.address(),
            CONFIG_MAPS,
            &[("Authorization", "Bearer not-a-token")],
        )
        .await;
        assert_eq!(reply.status(401, "Unauthorized"), "Unauthorized");
        // Without credentials, the same request is anonymous, and AllowAll lets it through.
        assert_eq!(get(server.address(), CONFIG_MAPS, &[]).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn a_known_token_from_a_token_file_is_served_as_its_user() {
    within(DEADLINE, async {
        let dir = std::env::temp_dir().join(format!("capstan-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens.csv");
        std::fs::write(&file, "admin-token,admin,1000,\"admins,ops\"\n").unwrap();
        let tokens = StaticTokens::load(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let options = ApiServerOptions::default()
            .authenticator(tokens)
            .authorizer(policy())
            .anonymous(false);
        let server = server(options).await;
        let auth = [("Authorization", "Bearer admin-token")];
        let created = send(
            server.address(),
            "POST",
            CONFIG_MAPS,
            &auth,
            &config_map("settings", 10),
        )
        .await;
        assert_eq!(created.code, 201, "{created:?}");
        let listed = get(server.address(), CONFIG_MAPS, &auth).await;
        assert_eq!(listed.code, 200);
        assert_eq!(listed.json()["items"][0]["metadata"]["name"], "settings");
    })
    .await;
}

#[tokio::test]
async fn health_and_version_stay_open_without_credentials() {
    within(DEADLINE, async {
        let options = ApiServerOptions::default()
            .authenticator(tokens())
            .authorizer(StaticPolicy::default())
            .anonymous(false);
        let server = server(options).await;
        for path in ["/healthz", "/livez", "/readyz", "/version"] {
            assert_eq!(get(server.address(), path, &[]).await.code, 200, "{path}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Authorization

#[tokio::test]
async fn a_user_the_policy_does_not_cover_is_forbidden_in_kubernetes_words() {
    within(DEADLINE, async {
        let options = ApiServerOptions::default()
            .authenticator(tokens())
            .authorizer(policy());
        let server = server(options).await;
        let bob = get(
            server.address(),
            CONFIG_MAPS,
            &[("Authorization", "Bearer bob-token")],
        )
        .await;
        assert_eq!(
            bob.status(403, "Forbidden"),
            r#"configmaps is forbidden: User "bob" cannot list resource "configmaps" in API group "" in the namespace "default""#
        );

        // Alice may read config maps in default, and nothing more.
        let alice = [("Authorization", "Bearer alice-token")];
        assert_eq!(get(server.address(), CONFIG_MAPS, &alice).await.code, 200);
        let create = send(
            server.address(),
            "POST",
            CONFIG_MAPS,
            &alice,
            &config_map("x", 1),
        )
        .await;
        let message = create.status(403, "Forbidden");
        assert!(message.contains(r#"User "alice" cannot create resource "configmaps""#), "{message}");
        let elsewhere = get(
            server.address(),
            "/api/v1/namespaces/prod/configmaps/settings",
            &alice,
        )
        .await;
        assert_eq!(
            elsewhere.status(403, "Forbidden"),
            r#"configmaps "settings" is forbidden: User "alice" cannot get resource "configmaps" in API group "" in the namespace "prod""#
        );
        let deployments = get(server.address(), "/apis/apps/v1/deployments", &alice).await;
        assert!(deployments
            .status(403, "Forbidden")
            .ends_with(r#"cannot list resource "deployments" in API group "apps" at the cluster scope"#));
        // Discovery is granted to every authenticated user by the policy's path rule.
        assert_eq!(get(server.address(), "/apis", &alice).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn anonymous_requests_are_authorized_as_system_anonymous() {
    within(DEADLINE, async {
        let policy = StaticPolicy::new([Rule::new()
            .user_groups(["system:unauthenticated"])
            .verbs(["list"])
            .resources(["configmaps"])]);
        let server = server(ApiServerOptions::default().authorizer(policy)).await;
        assert_eq!(get(server.address(), CONFIG_MAPS, &[]).await.code, 200);
        let watch = get(server.address(), &format!("{CONFIG_MAPS}?watch=1"), &[]).await;
        let message = watch.status(403, "Forbidden");
        assert!(
            message.contains(r#"User "system:anonymous" cannot watch resource "configmaps""#),
            "{message}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Limits

const FOUR_MIB: usize = 4 * 1024 * 1024;

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_and_nothing_is_stored() {
    within(DEADLINE, async {
        let server = server(ApiServerOptions::default()).await;
        let reply = send(
            server.address(),
            "POST",
            CONFIG_MAPS,
            &[],
            &config_map("big", FOUR_MIB),
        )
        .await;
        reply.status(413, "RequestEntityTooLarge");
        let read = get(server.address(), &format!("{CONFIG_MAPS}/big"), &[]).await;
        read.status(404, "NotFound");
    })
    .await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_by_counting() {
    within(DEADLINE, async {
        let server = server(ApiServerOptions::default()).await;
        let mut head = head("POST", CONFIG_MAPS, &[("Content-Type", "application/json")]);
        head.push_str("Transfer-Encoding: chunked\r\n");
        let body = config_map("big", FOUR_MIB);
        let mut chunks: Vec<Vec<u8>> = body
            .chunks(64 * 1024)
            .map(|chunk| {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(chunk);
                framed.extend_from_slice(b"\r\n");
                framed
            })
            .collect();
        chunks.push(b"0\r\n\r\n".to_vec());
        let reply = exchange(server.address(), head, chunks).await;
        reply.status(413, "RequestEntityTooLarge");
        let read = get(server.address(), &format!("{CONFIG_MAPS}/big"), &[]).await;
        read.status(404, "NotFound");
    })
    .await;
}

#[tokio::test]
async fn bodies_up_to_the_limit_reach_the_handler_whole() {
    within(DEADLINE, async {
        // 2.5 MiB: over axum's own 2 MB default, under the 3 MiB limit.
        let app = Router::new()
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(BodyLimitLayer::new(Limits::default().max_body_bytes));
        let server = serve(app).await;
        let size = 5 * 512 * 1024;
        let reply = send(server.address(), "POST", "/echo", &[], &vec![b'x'; size]).await;
        assert_eq!(reply.code, 200, "{reply:?}");
        assert_eq!(String::from_utf8_lossy(&reply.body), size.to_string());
    })
    .await;
}

/// A router whose `/slow` holds until released, behind an in-flight limit of one.
fn held_router(release: Arc<Semaphore>, entered: Arc<Semaphore>) -> Router {
    Router::new()
        .route(
            "/slow",
            routing::get(move || async move {
                entered.add_permits(1);
                let _ = release.acquire().await;
                "done"
            }),
        )
        .route("/fast", routing::get(|| async { "fast" }))
        .route("/api/v1/pods", routing::get(|| async { "pods" }))
        .layer(InFlightLimitLayer::new(1))
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_429_with_retry_after() {
    within(DEADLINE, async {
        let (release, entered) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let server = serve(held_router(release.clone(), entered.clone())).await;
        let address = server.address();
        let slow = tokio::spawn(async move { get(address, "/slow", &[]).await });
        entered.acquire().await.unwrap().forget();

        let refused = get(address, "/fast", &[]).await;
        refused.status(429, "TooManyRequests");
        assert_eq!(refused.header("Retry-After"), Some("1"));
        assert_eq!(refused.json()["details"]["retryAfterSeconds"], 1);

        release.add_permits(1);
        assert_eq!(slow.await.unwrap().code, 200);
        assert_eq!(get(address, "/fast", &[]).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn watches_are_exempt_from_the_in_flight_limit() {
    within(DEADLINE, async {
        let (release, entered) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let server = serve(held_router(release.clone(), entered.clone())).await;
        let address = server.address();
        let _slow = tokio::spawn(async move { get(address, "/slow", &[]).await });
        entered.acquire().await.unwrap().forget();

        assert_eq!(get(address, "/api/v1/pods?watch=true", &[]).await.code, 200);
        assert_eq!(get(address, "/api/v1/pods?watch=1", &[]).await.code, 200);
        get(address, "/api/v1/pods", &[])
            .await
            .status(429, "TooManyRequests");
        release.add_permits(1);
    })
    .await;
}

#[tokio::test]
async fn open_watches_neither_count_against_nor_wait_for_the_in_flight_limit() {
    within(DEADLINE, async {
        let limits = Limits {
            max_in_flight: 1,
            ..Limits::default()
        };
        let server = server(ApiServerOptions::default().limits(limits)).await;
        let watches = format!("{CONFIG_MAPS}?watch=1");
        let (first, _first) = open(server.address(), &watches).await;
        let (second, _second) = open(server.address(), &watches).await;
        assert_eq!((first, second), (200, 200));
        assert_eq!(get(server.address(), CONFIG_MAPS, &[]).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn a_request_running_past_the_timeout_gets_504_but_a_watch_does_not() {
    within(DEADLINE, async {
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "late"
        };
        let app = Router::new()
            .route("/slow", routing::get(slow))
            .route("/api/v1/pods", routing::get(slow))
            .layer(TimeoutLayer::new(Duration::from_millis(200)));
        let server = serve(app).await;
        let started = Instant::now();
        let reply = get(server.address(), "/slow", &[]).await;
        reply.status(504, "Timeout");
        assert!(started.elapsed() < Duration::from_millis(550));
        let watch = get(server.address(), "/api/v1/pods?watch=1", &[]).await;
        assert_eq!((watch.code, watch.body.as_slice()), (200, &b"late"[..]));
    })
    .await;
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_after_the_header_timeout_while_others_are_served() {
    within(DEADLINE, async {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = server(ApiServerOptions::default().limits(limits)).await;
        let address = server.address();

        // One client sends nothing at all; another drips its headers a byte at a time.
        let mut silent = TcpStream::connect(address).await.unwrap();
        let dripping = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let started = Instant::now();
            for byte in head("GET", "/healthz", &[("X-Padding", &"p".repeat(200))]).bytes() {
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if started.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
            (started.elapsed(), rest)
        });

        // Others are served meanwhile.
        for _ in 0..3 {
            assert_eq!(get(address, "/healthz", &[]).await.code, 200);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let mut rest = Vec::new();
        let silent_end =
            tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut rest)).await;
        assert!(
            matches!(silent_end, Ok(Ok(0)) | Ok(Err(_))),
            "the silent client's connection was closed: {silent_end:?}"
        );

        let (elapsed, rest) = dripping.await.unwrap();
        assert!(
            elapsed < Duration::from_secs(5),
            "the dripping client was cut off before it finished, after {elapsed:?}"
        );
        // Either closed outright, or closed after a 408.
        let text = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || text.starts_with("HTTP/1.1 408"),
            "no response to the dripping client: {text}"
        );
        assert_eq!(get(address, "/healthz", &[]).await.code, 200);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Wiring

#[tokio::test]
async fn the_default_server_keeps_serving_everyone_anonymously() {
    within(DEADLINE, async {
        let server = ApiServer::bind(
            capstan_apiserver::testing::registry(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let created = send(
            server.address(),
            "POST",
            CONFIG_MAPS,
            &[],
            &config_map("open", 10),
        )
        .await;
        assert_eq!(created.code, 201, "{created:?}");
        assert_eq!(get(server.address(), "/apis", &[]).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn a_kubeconfig_can_carry_a_bearer_token() {
    within(DEADLINE, async {
        let server = server(ApiServerOptions::default()).await;
        let path =
            std::env::temp_dir().join(format!("capstan-kubeconfig-{}", uuid::Uuid::new_v4()));
        server
            .write_kubeconfig_with_token(&path, "s3cr:t \"token\"")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let config: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(config["users"][0]["user"]["token"], "s3cr:t \"token\"");
        assert_eq!(config["clusters"][0]["cluster"]["server"], server.url());
    })
    .await;
}

#[tokio::test]
async fn a_server_serves_its_additional_listeners_and_publishes_its_advertise_address() {
    within(DEADLINE, async {
        // The second listener stands for one bound in another network namespace.
        let extra = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let extra_address = extra.local_addr().unwrap();
        let advertised: SocketAddr = "192.0.2.10:6443".parse().unwrap();
        let server = server(
            ApiServerOptions::default()
                .additional_listener(extra)
                .advertise_address(advertised),
        )
        .await;
        for address in [server.address(), extra_address] {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(
                    b"GET /api/v1/namespaces/default/endpoints/kubernetes HTTP/1.1\r\n\
                      Host: x\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.unwrap();
            let reply = String::from_utf8_lossy(&reply);
            assert!(reply.starts_with("HTTP/1.1 200"), "{address}: {reply}");
            let body: Value = serde_json::from_str(&reply[reply.find("\r\n\r\n").unwrap() + 4..])
                .unwrap_or_else(|e| panic!("{address}: {e}: {reply}"));
            assert_eq!(body["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
            assert_eq!(body["subsets"][0]["ports"][0]["port"], 6443);
        }
        server.shutdown(Duration::from_secs(5)).await;
        // Shut down, neither listener takes connections any more.
        assert!(TcpStream::connect(extra_address).await.is_err());
    })
    .await;
}
