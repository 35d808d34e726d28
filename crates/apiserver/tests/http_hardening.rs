//! The HTTP surface under bad input and hostile clients, against real servers on loopback:
//! `dryRun` validation on every write verb, bounded parsing of deeply nested bodies, the
//! order of authentication, the in-flight limit, authorization and body reading, watch
//! errors as `ERROR` events, the listen backlog, graceful shutdown, and small protocol
//! details (`/version/`, non-ASCII content types).
//!
//! Requests go over raw HTTP/1.1 on `TcpStream`, so that no client library hides what goes
//! over the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing;
use axum::Router;
use capstan_api::testing::within;
use capstan_apiserver::http::layers::limits::DEFAULT_MAX_ANONYMOUS_IN_FLIGHT;
use capstan_apiserver::http::layers::{ApiServerOptions, Limits, StaticTokens, UserInfo};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use capstan_apiserver::watch_cache::WatchCacheOptions;
use capstan_store::memory::MemoryStore;
use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(60);

/// Tests that measure memory or time, or open hundreds of connections, run one at a time so
/// that they do not disturb each other's figures.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

async fn server() -> ApiServer {
    server_with(ApiServerOptions::default()).await
}

async fn server_with(options: ApiServerOptions) -> ApiServer {
    ApiServer::bind_with(
        capstan_apiserver::testing::registry(),
        "127.0.0.1:0".parse().unwrap(),
        options,
    )
    .await
    .expect("bind a loopback port")
}

/// An HTTP response, read to its end.
#[derive(Debug)]
struct Reply {
    code: u16,
    /// The body, de-chunked.
    body: Vec<u8>,
    /// Whether a chunked body ended with its last chunk (`0\r\n\r\n`).
    clean_end: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a Kubernetes `Status` with `code` and `reason`, and returns it.
    fn status(&self, code: u16, reason: &str) -> Value {
        assert_eq!(self.code, code, "{}", String::from_utf8_lossy(&self.body));
        let status = self.json();
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["code"], code, "{status}");
        assert_eq!(status["reason"], reason, "{status}");
        status
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

fn head(method: &str, path: &str, headers: &[(&str, &str)], body_len: Option<usize>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = body_len {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends one request and reads the whole response (the body is written concurrently, so an
/// answer given before the body is read is heard).
async fn exchange(address: SocketAddr, request_head: Vec<u8>, body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(address).await.unwrap();
    read_reply(stream, request_head, body).await
}

async fn read_reply(stream: TcpStream, request_head: Vec<u8>, body: Vec<u8>) -> Reply {
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(&request_head).await?;
        writer.write_all(&body).await?;
        writer.flush().await?;
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let mut raw = Vec::new();
    let _ = reader.read_to_end(&mut raw).await;
    writing.abort();
    parse(&raw)
}

async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let headers = [("Content-Type", content_type)];
    exchange(
        address,
        head(method, path, &headers, Some(body.len())),
        body.to_vec(),
    )
    .await
}

async fn get(address: SocketAddr, path: &str) -> Reply {
    exchange(address, head("GET", path, &[], None), Vec::new()).await
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&raw[..end], &raw[end + 4..]))
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
    let chunked = lines
        .filter_map(|line| line.split_once(':'))
        .any(|(n, v)| n.trim().eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let (body, clean_end) = if chunked {
        dechunk(body)
    } else {
        (body.to_vec(), true)
    };
    Reply {
        code,
        body,
        clean_end,
    }
}

/// The chunks' data, and whether the last chunk arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16)
        else {
            return (body, false);
        };
        if size == 0 {
            return (body, raw[end..].starts_with(b"\r\n\r\n"));
        }
        let start = end + 2;
        if raw.len() < start + size + 2 {
            body.extend_from_slice(&raw[start.min(raw.len())..]);
            return (body, false);
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    (body, false)
}

fn config_map(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"key": "value"},
    }))
    .unwrap()
}

fn deployment(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }))
    .unwrap()
}

/// Every ConfigMap and Deployment as listed, byte for byte (resourceVersions included).
async fn snapshot(address: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let config_maps = get(address, CONFIG_MAPS).await;
    let deployments = get(address, DEPLOYMENTS).await;
    assert_eq!((config_maps.code, deployments.code), (200, 200));
    (config_maps.body, deployments.body)
}

/// A server holding ConfigMap `keep` and Deployment `web`.
async fn populated() -> ApiServer {
    let server = server().await;
    let address = server.address();
    let created = request(
        address,
        "POST",
        CONFIG_MAPS,
        "application/json",
        &config_map("keep"),
    )
    .await;
    assert_eq!(created.code, 201, "{created:?}");
    let created = request(
        address,
        "POST",
        DEPLOYMENTS,
        "application/json",
        &deployment("web"),
    )
    .await;
    assert_eq!(created.code, 201, "{created:?}");
    server
}

// ---------------------------------------------------------------------------------------------
// dryRun

/// One write of each verb: method, path (without query), content type and body.
struct Write {
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    options: &'static str,
}

/// Sends `write` with each bad `dryRun` and asserts 422 on `write.options` and nothing
/// changed; then with `dryRun=All` (once and repeated) and asserts success and nothing
/// changed.
async fn dry_run_case(write: Write) {
    let server = populated().await;
    let address = server.address();
    let before = snapshot(address).await;
    for query in [
        "dryRun=true",
        "dryRun=All&dryRun=true",
        "dryRun=",
        "dryRun=all",
    ] {
        let path = format!("{}?{query}", write.path);
        let reply = request(
            address,
            write.method,
            &path,
            write.content_type,
            &write.body,
        )
        .await;
        let status = reply.status(422, "Invalid");
        assert_eq!(status["details"]["kind"], write.options, "{status}");
        assert_eq!(status["details"]["group"], "meta.k8s.io", "{status}");
        let cause = &status["details"]["causes"][0];
        assert_eq!(cause["field"], "dryRun", "{status}");
        assert_eq!(cause["reason"], "FieldValueNotSupported", "{status}");
        assert!(
            status["message"].as_str().unwrap().starts_with(&format!(
                "{}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{",
                write.options
            )),
            "{status}"
        );
        assert_eq!(snapshot(address).await, before, "{} {path}", write.method);
    }
    for query in ["dryRun=All", "dryRun=All&dryRun=All"] {
        let path = format!("{}?{query}", write.path);
        let reply = request(
            address,
            write.method,
            &path,
            write.content_type,
            &write.body,
        )
        .await;
        assert!(
            reply.is_success(),
            "{} {path}: {} {}",
            write.method,
            reply.code,
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(snapshot(address).await, before, "{} {path}", write.method);
    }
}

#[tokio::test]
async fn create_refuses_a_dry_run_other_than_all_and_all_stores_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "POST",
            path: CONFIG_MAPS.into(),
            content_type: "application/json",
            body: config_map("new"),
            options: "CreateOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn update_refuses_a_dry_run_other_than_all_and_all_stores_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "PUT",
            path: format!("{CONFIG_MAPS}/keep"),
            content_type: "application/json",
            body: serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "keep", "namespace": "default"},
                "data": {"key": "changed"},
            }))
            .unwrap(),
            options: "UpdateOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn patch_refuses_a_dry_run_other_than_all_and_all_stores_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "PATCH",
            path: format!("{CONFIG_MAPS}/keep"),
            content_type: "application/merge-patch+json",
            body: br#"{"data":{"key":"patched"}}"#.to_vec(),
            options: "PatchOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn delete_refuses_a_dry_run_other_than_all_and_all_deletes_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "DELETE",
            path: format!("{CONFIG_MAPS}/keep"),
            content_type: "application/json",
            body: Vec::new(),
            options: "DeleteOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn deletecollection_refuses_a_dry_run_other_than_all_and_all_deletes_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "DELETE",
            path: CONFIG_MAPS.into(),
            content_type: "application/json",
            body: Vec::new(),
            options: "DeleteOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn a_scale_update_refuses_a_dry_run_other_than_all_and_all_stores_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "PUT",
            path: format!("{DEPLOYMENTS}/web/scale"),
            content_type: "application/json",
            body: br#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web","namespace":"default"},"spec":{"replicas":5}}"#.to_vec(),
            options: "UpdateOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn a_scale_patch_refuses_a_dry_run_other_than_all_and_all_stores_nothing() {
    within(
        DEADLINE,
        dry_run_case(Write {
            method: "PATCH",
            path: format!("{DEPLOYMENTS}/web/scale"),
            content_type: "application/merge-patch+json",
            body: br#"{"spec":{"replicas":7}}"#.to_vec(),
            options: "PatchOptions",
        }),
    )
    .await;
}

#[tokio::test]
async fn the_delete_options_body_is_held_to_the_same_dry_run_rule() {
    within(DEADLINE, async {
        let server = populated().await;
        let address = server.address();
        let before = snapshot(address).await;
        for path in [format!("{CONFIG_MAPS}/keep"), CONFIG_MAPS.to_string()] {
            let reply = request(
                address,
                "DELETE",
                &path,
                "application/json",
                br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["true"]}"#,
            )
            .await;
            let status = reply.status(422, "Invalid");
            assert_eq!(
                status["message"],
                r#"DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"true"}: supported values: "All""#
            );
            assert_eq!(snapshot(address).await, before, "DELETE {path}");
            let reply = request(
                address,
                "DELETE",
                &path,
                "application/json",
                br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#,
            )
            .await;
            assert_eq!(reply.code, 200, "{reply:?}");
            assert_eq!(snapshot(address).await, before, "DELETE {path} (dry run)");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bounded parsing

/// A body of the largest size accepted, all nesting: `[[[[...` or YAML's `- - - ...`.
fn nested_body(yaml: bool) -> Vec<u8> {
    let max = Limits::default().max_body_bytes;
    if yaml {
        let mut body = b"key: ".to_vec();
        body.resize(max, b'[');
        body
    } else {
        vec![b'['; max]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_nested_body_is_refused_with_400_within_a_fixed_time() {
    within(DEADLINE, async {
        let _heavy = HEAVY.lock().await;
        let server = server().await;
        let address = server.address();
        for (content_type, yaml) in [
            ("application/json", false),
            ("application/yaml", true),
            ("application/merge-patch+json", false),
        ] {
            let body = nested_body(yaml);
            let method = if content_type.contains("patch") {
                "PATCH"
            } else {
                "POST"
            };
            let path = if method == "PATCH" {
                format!("{CONFIG_MAPS}/x")
            } else {
                CONFIG_MAPS.to_string()
            };
            let started = Instant::now();
            let reply = request(address, method, &path, content_type, &body).await;
            let took = started.elapsed();
            let status = reply.status(400, "BadRequest");
            assert!(
                status["message"]
                    .as_str()
                    .unwrap()
                    .contains("nests deeper than the limit of 100 levels"),
                "{status}"
            );
            eprintln!("refusing a maximal nested {content_type} body took {took:?}");
            assert!(
                took < Duration::from_secs(2),
                "{content_type}: refusing took {took:?}"
            );
        }
        // Block nesting by indentation, too.
        let mut block = String::new();
        for level in 0..200 {
            block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        let reply = request(
            address,
            "POST",
            CONFIG_MAPS,
            "application/yaml",
            block.as_bytes(),
        )
        .await;
        reply.status(400, "BadRequest");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_fast_while_nested_bodies_are_in_flight() {
    within(DEADLINE, async {
        let _heavy = HEAVY.lock().await;
        let server = server().await;
        let address = server.address();
        let mut floods = tokio::task::JoinSet::new();
        for index in 0..6 {
            let body = nested_body(index % 2 == 0);
            floods.spawn(async move {
                request(address, "POST", CONFIG_MAPS, "application/yaml", &body)
                    .await
                    .code
            });
        }
        let mut slowest = Duration::ZERO;
        while !floods.is_empty() {
            let started = Instant::now();
            let health = get(address, "/healthz").await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(health.code, 200);
            while let Some(code) = floods.try_join_next() {
                assert_eq!(code.unwrap(), 400);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!("the slowest /healthz during the nested bodies took {slowest:?}");
        assert!(
            slowest < Duration::from_millis(500),
            "/healthz took {slowest:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Handler order: authentication, in-flight limit, authorization, then the body

/// The process's resident set, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// One MiB of a body, shared by every flooding connection so the flood costs the test
/// nothing of its own.
static MEBIBYTE: [u8; 1 << 20] = [b'a'; 1 << 20];

/// Floods `address` with `count` unauthenticated uploads that declare 3 MB, send 1 MiB and
/// stall. Returns the connections' tasks and a channel of the codes of those answered.
fn flood(
    address: SocketAddr,
    count: usize,
) -> (
    tokio::task::JoinSet<()>,
    tokio::sync::mpsc::UnboundedReceiver<u16>,
) {
    let (answered, codes) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let answered = answered.clone();
        tasks.spawn(async move {
            let Ok(stream) = TcpStream::connect(address).await else {
                return;
            };
            let (mut reader, mut writer) = stream.into_split();
            let request_head = head(
                "POST",
                CONFIG_MAPS,
                &[("Content-Type", "application/json")],
                Some(3_000_000),
            );
            let writing = tokio::spawn(async move {
                writer.write_all(&request_head).await?;
                writer.write_all(&MEBIBYTE).await?;
                // Stall, holding the connection.
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(writer)
            });
            let mut raw = Vec::new();
            let mut buffer = [0u8; 4096];
            while split_head(&raw).is_none() {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buffer[..n]),
                }
            }
            if split_head(&raw).is_some() {
                let _ = answered.send(parse(&raw).code);
            }
            // Held until the test ends the flood.
            std::future::pending::<()>().await;
            writing.abort();
        });
    }
    (tasks, codes)
}

/// The flood of `count` unauthenticated slow uploads against a server with the admin token;
/// `refused` of them must be answered with `code`. Asserts the admin is still served, and
/// returns how much the process grew.
async fn flood_and_measure(anonymous: bool, count: usize, refused: usize, code: u16) -> usize {
    let tokens =
        StaticTokens::new().with("admin-token", UserInfo::new("admin", ["system:masters"]));
    let server = server_with(
        ApiServerOptions::default()
            .authenticator(tokens)
            .anonymous(anonymous),
    )
    .await;
    let address = server.address();
    let admin = [
        ("Authorization", "Bearer admin-token"),
        ("Content-Type", "application/json"),
    ];
    // Warm up: the first requests allocate what the server keeps (schemas, caches).
    for name in ["warm-a", "warm-b"] {
        let body = config_map(name);
        let reply = exchange(
            address,
            head("POST", CONFIG_MAPS, &admin, Some(body.len())),
            body,
        )
        .await;
        assert_eq!(reply.code, 201, "{reply:?}");
    }
    let before = rss();
    let (mut tasks, mut codes) = flood(address, count);
    for _ in 0..refused {
        let answered = codes.recv().await.expect("a flooding request is answered");
        assert_eq!(answered, code);
    }
    // Let the admitted uploads arrive in full.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["admin-a", "admin-b", "admin-c"] {
        let body = config_map(name);
        let reply = exchange(
            address,
            head("POST", CONFIG_MAPS, &admin, Some(body.len())),
            body,
        )
        .await;
        assert_eq!(
            reply.code, 201,
            "the admin is served during the flood: {reply:?}"
        );
        let listed = exchange(address, head("GET", CONFIG_MAPS, &admin, None), Vec::new()).await;
        assert_eq!(listed.code, 200, "{listed:?}");
    }
    let grown = rss().saturating_sub(before);
    eprintln!(
        "a flood of {count} slow uploads (anonymous {anonymous}) grew the process by {} KiB",
        grown >> 10
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    grown
}

/// What the flood may add to the process: the admitted anonymous uploads (20 of 1 MiB) and
/// the connections' buffers, with room to spare; without the handler order it added about
/// 1.5 MiB per flooding connection.
const FLOOD_GROWTH_BOUND: usize = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_is_refused_before_its_bodies_are_read() {
    within(DEADLINE, async {
        let _heavy = HEAVY.lock().await;
        // Anonymous requests off: all 410 are refused with 401 before the body is read.
        let grown = flood_and_measure(false, 410, 410, 401).await;
        assert!(
            grown < FLOOD_GROWTH_BOUND,
            "the flood grew the process by {} MiB",
            grown >> 20
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_flood_has_a_budget_of_its_own_and_never_locks_out_the_admin() {
    within(DEADLINE, async {
        let _heavy = HEAVY.lock().await;
        // Anonymous requests on: 20 are admitted and read; the other 390 get 429.
        let count = 410;
        let grown =
            flood_and_measure(true, count, count - DEFAULT_MAX_ANONYMOUS_IN_FLIGHT, 429).await;
        assert!(
            grown < FLOOD_GROWTH_BOUND,
            "the flood grew the process by {} MiB",
            grown >> 20
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Watch errors

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_200_then_one_error_event() {
    within(DEADLINE, async {
        let registry = Arc::new(
            Registry::new(Arc::new(MemoryStore::new())).with_watch_cache(WatchCacheOptions {
                window: 2,
                ..WatchCacheOptions::default()
            }),
        );
        let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();
        let first = request(
            address,
            "POST",
            CONFIG_MAPS,
            "application/json",
            &config_map("c0"),
        )
        .await;
        let first_version = first.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        // Start the watch cache, then move it well past the first version.
        assert_eq!(
            get(
                address,
                &format!("{CONFIG_MAPS}?watch=1&resourceVersion=0&timeoutSeconds=1")
            )
            .await
            .code,
            200
        );
        for index in 1..10 {
            let created = request(
                address,
                "POST",
                CONFIG_MAPS,
                "application/json",
                &config_map(&format!("c{index}")),
            )
            .await;
            assert_eq!(created.code, 201);
        }
        let reply = get(
            address,
            &format!("{CONFIG_MAPS}?watch=1&resourceVersion={first_version}"),
        )
        .await;
        assert_eq!(reply.code, 200, "{reply:?}");
        assert!(reply.clean_end, "the stream ends with its last chunk");
        let lines: Vec<Value> = reply
            .body
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "ERROR");
        let status = &lines[0]["object"];
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 410);
        assert!(
            matches!(status["reason"].as_str(), Some("Expired" | "Gone")),
            "{status}"
        );
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("too old resource version: {first_version} (")),
            "{status}"
        );
        // Bad parameters are still refused before any stream.
        get(
            address,
            &format!("{CONFIG_MAPS}?watch=1&timeoutSeconds=soon"),
        )
        .await
        .status(400, "BadRequest");
        get(
            address,
            &format!("{CONFIG_MAPS}?watch=1&labelSelector=a%20in"),
        )
        .await
        .status(400, "BadRequest");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Small breaks

#[tokio::test]
async fn version_is_served_with_a_trailing_slash_too() {
    within(DEADLINE, async {
        let server = server_with(ApiServerOptions::default().anonymous(false)).await;
        let plain = get(server.address(), "/version").await;
        let slash = get(server.address(), "/version/").await;
        assert_eq!((plain.code, slash.code), (200, 200), "{slash:?}");
        assert_eq!(plain.json(), slash.json());
        assert!(slash.json()["gitVersion"].is_string());
    })
    .await;
}

#[tokio::test]
async fn a_content_type_with_non_ascii_bytes_is_415_and_stores_nothing() {
    within(DEADLINE, async {
        let server = server().await;
        let address = server.address();
        let body = config_map("x");
        let mut request_head =
            format!("POST {CONFIG_MAPS} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: application/json", body.len())
                .into_bytes();
        request_head.extend_from_slice(b"\xe9\xff\r\n\r\n");
        let reply = exchange(address, request_head, body).await;
        reply.status(415, "UnsupportedMediaType");
        let list = get(address, CONFIG_MAPS).await.json();
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Listen backlog

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simultaneous_connections_connect_well_under_the_syn_retry() {
    within(DEADLINE, async {
        let _heavy = HEAVY.lock().await;
        let server = server().await;
        let address = server.address();
        let start = Arc::new(tokio::sync::Barrier::new(1000));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let start = start.clone();
            clients.spawn(async move {
                start.wait().await;
                let began = Instant::now();
                let stream = TcpStream::connect(address).await.unwrap();
                let connected = began.elapsed();
                let reply =
                    read_reply(stream, head("GET", "/version", &[], None), Vec::new()).await;
                (connected, reply.code)
            });
        }
        let mut slowest = Duration::ZERO;
        while let Some(outcome) = clients.join_next().await {
            let (connected, code) = outcome.unwrap();
            assert_eq!(code, 200);
            slowest = slowest.max(connected);
        }
        eprintln!("the slowest of 1000 simultaneous connects took {slowest:?}");
        assert!(
            slowest < Duration::from_millis(900),
            "the slowest connect took {slowest:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_ends_watches_cleanly_and_refuses_new_connections() {
    within(DEADLINE, async {
        let app = Router::new()
            .route(
                "/slow",
                routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "finished"
                }),
            )
            .route(
                "/api/v1/pods",
                routing::get(|| async {
                    let events = futures::stream::once(async {
                        Ok::<_, std::convert::Infallible>("{\"type\":\"ADDED\"}\n")
                    })
                    .chain(futures::stream::pending());
                    axum::body::Body::from_stream(events)
                }),
            );
        let listener = capstan_apiserver::http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = ApiServer::serve(listener, app, Duration::from_secs(5));
        let address = server.address();
        let slow = tokio::spawn(get(address, "/slow"));
        let watch = tokio::spawn(get(address, "/api/v1/pods?watch=1"));
        // Both requests are in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        server.shutdown(Duration::from_secs(10)).await;
        let took = started.elapsed();
        let slow = slow.await.unwrap();
        assert_eq!((slow.code, slow.body.as_slice()), (200, &b"finished"[..]));
        let watch = watch.await.unwrap();
        assert_eq!(watch.code, 200);
        assert_eq!(watch.body, b"{\"type\":\"ADDED\"}\n");
        assert!(
            watch.clean_end,
            "the watch ends with its last chunk: {watch:?}"
        );
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "new connections are refused after shutdown"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_an_api_watch_cleanly_and_a_grace_period_bounds_it() {
    within(DEADLINE, async {
        let server = server().await;
        let address = server.address();
        let watch =
            tokio::spawn(async move { get(address, &format!("{CONFIG_MAPS}?watch=1")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let created = request(
            address,
            "POST",
            CONFIG_MAPS,
            "application/json",
            &config_map("seen"),
        )
        .await;
        assert_eq!(created.code, 201);
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.shutdown(Duration::from_secs(10)).await;
        let watch = watch.await.unwrap();
        assert_eq!(watch.code, 200);
        assert!(watch.clean_end, "{watch:?}");
        let event: Value =
            serde_json::from_slice(watch.body.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["metadata"]["name"], "seen");
    })
    .await;
}

#[tokio::test]
async fn a_request_outliving_the_grace_period_is_dropped() {
    within(DEADLINE, async {
        let app = Router::new().route(
            "/stuck",
            routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        );
        let listener = capstan_apiserver::http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = ApiServer::serve(listener, app, Duration::from_secs(5));
        let address = server.address();
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(&head("GET", "/stuck", &[], None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        server.shutdown(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    })
    .await;
}

/// kube-apiserver serves no deletecollection for Namespaces: a DELETE of the collection is
/// 405 and changes nothing (before, it set namespaces terminating one by one until it reached
/// a system namespace), and discovery does not list the verb.
#[tokio::test]
async fn namespaces_have_no_delete_collection() {
    within(DEADLINE, async {
        let server = server().await;
        let address = server.address();
        let created = request(
            address,
            "POST",
            "/api/v1/namespaces",
            "application/json",
            br#"{"metadata":{"name":"team"}}"#,
        )
        .await;
        assert_eq!(created.code, 201);
        let before = get(address, "/api/v1/namespaces").await;
        let refused = request(
            address,
            "DELETE",
            "/api/v1/namespaces",
            "application/json",
            b"",
        )
        .await;
        assert_eq!(
            refused.code,
            405,
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(get(address, "/api/v1/namespaces").await.body, before.body);
        let discovery: serde_json::Value =
            serde_json::from_slice(&get(address, "/api/v1").await.body).unwrap();
        let verbs = |name: &str| {
            discovery["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .map(|r| r["verbs"].clone())
                .unwrap()
        };
        assert!(!verbs("namespaces")
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("deletecollection")));
        assert!(verbs("configmaps")
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("deletecollection")));
    })
    .await;
}
