//! Abuse suite: a property test of the whole HTTP server (`ApiServer::bind`, every layer) under
//! hostile input. Each case sends one request with any method to a ConfigMap, Deployment
//! (and its `scale` and `status` subresources), Pod or Namespace path, with odd query
//! parameters (`dryRun`, `limit`, `resourceVersion`, `fieldValidation`,
//! `propagationPolicy`, `gracePeriodSeconds`, `timeoutSeconds`, selectors) and a malformed,
//! oversized, deeply nested, mistyped or out-of-range body under any content type. After
//! each request:
//!
//! - the server is healthy: `/healthz` answers 200 within a second;
//! - an answer that is not 2xx is a Kubernetes `Status` with its own code, and changed
//!   nothing: a full list of every kind touched (ConfigMaps, Deployments, Pods, Namespaces)
//!   is byte-identical before and after, resourceVersions included.
//!
//! The default is 256 cases, about two seconds in a debug build. Run more with
//! `CAPSTAN_ABUSE_CASES`:
//!
//! ```text
//! CAPSTAN_ABUSE_CASES=5000 cargo test -p capstan-apiserver --test abuse
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use capstan_apiserver::http::ApiServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default number of cases, kept small for CI.
const DEFAULT_CASES: u32 = 256;

/// The lists compared around a refused request: every kind the suite touches.
const LISTS: [&str; 4] = [
    "/api/v1/configmaps",
    "/apis/apps/v1/deployments",
    "/api/v1/pods",
    "/api/v1/namespaces",
];

struct Reply {
    code: u16,
    body: Vec<u8>,
}

/// Sends one request over a fresh connection and reads the whole answer, writing the body
/// concurrently (a server may answer before reading it, e.g. 413 or 401).
async fn exchange(address: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(&head).await?;
        writer.write_all(&body).await?;
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let mut raw = Vec::new();
    let _ = reader.read_to_end(&mut raw).await;
    writing.abort();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("a response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply { code, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16)
            .unwrap_or_default();
        let start = end + 2;
        if size == 0 || raw.len() < start + size {
            break;
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    body
}

fn request_head(method: &str, path: &str, content_type: &[u8], length: usize) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: capstan\r\nConnection: close\r\nContent-Length: {length}\r\n"
    )
    .into_bytes();
    if !content_type.is_empty() {
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(content_type);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

async fn get(address: SocketAddr, path: &str) -> Reply {
    exchange(address, request_head("GET", path, b"", 0), Vec::new()).await
}

/// Every list, byte for byte.
async fn snapshot(address: SocketAddr) -> Vec<Vec<u8>> {
    let mut lists = Vec::new();
    for path in LISTS {
        let reply = get(address, path).await;
        assert_eq!(
            reply.code,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        lists.push(reply.body);
    }
    lists
}

// ---------------------------------------------------------------------------------------------
// What is sent

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/api/v1/namespaces/default/configmaps"),
        Just("/api/v1/namespaces/default/configmaps/cm"),
        Just("/api/v1/namespaces/default/configmaps/missing"),
        Just("/apis/apps/v1/namespaces/default/deployments"),
        Just("/apis/apps/v1/namespaces/default/deployments/web"),
        Just("/apis/apps/v1/namespaces/default/deployments/web/scale"),
        Just("/apis/apps/v1/namespaces/default/deployments/web/status"),
        Just("/api/v1/namespaces/default/pods"),
        Just("/api/v1/namespaces/default/pods/pod"),
        Just("/api/v1/namespaces/default/pods/pod/status"),
        Just("/api/v1/namespaces"),
        Just("/api/v1/namespaces/abuse"),
        Just("/api/v1/namespaces/missing/configmaps"),
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("PATCH"),
        Just("DELETE"),
    ]
}

fn query_parameter() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(String::new()),
        Just("All".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("Strict".to_string()),
        Just("Orphan".to_string()),
        Just("Foreground".to_string()),
        Just("a%20in".to_string()),
        Just("metadata.name%3Dcm".to_string()),
        Just("%FF%FE".to_string()),
        "[a-zA-Z0-9=!(),%.]{0,16}",
    ];
    let name = prop_oneof![
        Just("dryRun"),
        Just("limit"),
        Just("resourceVersion"),
        Just("resourceVersionMatch"),
        Just("fieldValidation"),
        Just("propagationPolicy"),
        Just("gracePeriodSeconds"),
        Just("timeoutSeconds"),
        Just("labelSelector"),
        Just("fieldSelector"),
        Just("continue"),
        Just("fieldManager"),
    ];
    (name, value).prop_map(|(name, value)| format!("{name}={value}"))
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec(query_parameter(), 0..4).prop_map(|parameters| {
        if parameters.is_empty() {
            String::new()
        } else {
            format!("?{}", parameters.join("&"))
        }
    })
}

fn content_type() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b"application/yaml".to_vec()),
        Just(b"application/merge-patch+json".to_vec()),
        Just(b"application/strategic-merge-patch+json".to_vec()),
        Just(b"application/json-patch+json".to_vec()),
        Just(b"application/apply-patch+yaml".to_vec()),
        Just(b"application/vnd.kubernetes.protobuf".to_vec()),
        Just(b"text/plain".to_vec()),
        Just(b"application/json\xff\xfe".to_vec()),
        Just(Vec::new()),
    ]
}

/// A well-formed object of each kind, to be broken.
fn valid_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "abuse"}}),
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 3}}),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "propagationPolicy": "Background"}),
    ]
}

/// Wrong types and out-of-range values put at places each kind has.
fn mistakes() -> Vec<(&'static str, Value)> {
    vec![
        ("/spec/replicas", json!("three")),
        ("/spec/replicas", json!(-1)),
        ("/spec/replicas", json!(1e20)),
        ("/spec/replicas", json!(2_147_483_648_i64)),
        ("/spec/containers", json!({"not": "a list"})),
        (
            "/spec/containers/0/ports",
            json!([{"containerPort": 70000}]),
        ),
        ("/spec/template/spec/containers/0/image", json!(42)),
        ("/metadata", json!("x")),
        ("/metadata/name", json!("Bad_Name!")),
        ("/metadata/name", json!("a".repeat(300))),
        ("/metadata/labels", json!({"k": ["v"]})),
        ("/metadata/resourceVersion", json!("not-a-number")),
        ("/metadata/generation", json!(-5)),
        ("/data", json!([1, 2])),
        ("/data/k", json!(null)),
        ("/gracePeriodSeconds", json!(-10)),
        ("/gracePeriodSeconds", json!(1e30)),
        ("/dryRun", json!(["All", "bogus"])),
        ("/propagationPolicy", json!(7)),
        ("/spec/bogusField", json!(true)),
        ("/apiVersion", json!("v999")),
        ("/kind", json!("Secret")),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let broken = (0..valid_objects().len(), 0..mistakes().len(), any::<bool>()).prop_map(
        |(object, mistake, as_yaml)| {
            let mut object = valid_objects()[object].clone();
            let (pointer, value) = mistakes()[mistake].clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            if let Some(Value::Object(map)) = object.pointer_mut(parent) {
                map.insert(key.to_string(), value);
            } else if let Some(Value::Array(items)) = object.pointer_mut(parent) {
                if let Some(item) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *item = value;
                }
            }
            if as_yaml {
                serde_yaml_ng::to_string(&object).unwrap().into_bytes()
            } else {
                serde_json::to_vec(&object).unwrap()
            }
        },
    );
    prop_oneof![
        Just(Vec::new()),
        (0..valid_objects().len()).prop_map(|i| serde_json::to_vec(&valid_objects()[i]).unwrap()),
        broken.clone(),
        broken,
        proptest::collection::vec(any::<u8>(), 0..128),
        "[{}\\[\\]\":,a-z0-9 -]{0,80}".prop_map(String::into_bytes),
        // Deeply nested, in JSON and YAML.
        (50usize..400).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        (50usize..400).prop_map(|n| format!(
            "{{\"metadata\":{}1{}}}",
            "{\"a\":".repeat(n),
            "}".repeat(n)
        )
        .into_bytes()),
        (50usize..300).prop_map(|n| (0..n)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>()
            .into_bytes()),
        // Over the 3 MiB limit.
        Just(vec![b' '; 3 * 1024 * 1024 + 1]),
        // JSON patches, well-formed and not.
        Just(br#"[{"op":"replace","path":"/spec/replicas","value":"x"}]"#.to_vec()),
        Just(br#"[{"op":"remove","path":"/metadata"}]"#.to_vec()),
        Just(br#"[{"op":"teleport"}]"#.to_vec()),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    path: &'static str,
    query: String,
    content_type: Vec<u8>,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (method(), path(), query(), content_type(), body()).prop_map(
        |(method, path, query, content_type, body)| Case {
            method,
            path,
            query,
            content_type,
            body,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn populate(address: SocketAddr) {
    for (path, object) in [
        ("/api/v1/namespaces", 3),
        ("/api/v1/namespaces/default/configmaps", 0),
        ("/apis/apps/v1/namespaces/default/deployments", 1),
        ("/api/v1/namespaces/default/pods", 2),
    ] {
        let body = serde_json::to_vec(&valid_objects()[object]).unwrap();
        let reply = exchange(
            address,
            request_head("POST", path, b"application/json", body.len()),
            body,
        )
        .await;
        assert_eq!(
            reply.code,
            201,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
}

async fn check(address: SocketAddr, case: &Case) -> Result<(), TestCaseError> {
    let before = snapshot(address).await;
    let path = format!("{}{}", case.path, case.query);
    let reply = exchange(
        address,
        request_head(case.method, &path, &case.content_type, case.body.len()),
        case.body.clone(),
    )
    .await;
    let started = Instant::now();
    let health = get(address, "/healthz").await;
    let took = started.elapsed();
    prop_assert_eq!(health.code, 200, "/healthz after {} {}", case.method, path);
    prop_assert!(took < Duration::from_secs(1), "/healthz took {:?}", took);
    if (200..300).contains(&reply.code) {
        return Ok(());
    }
    let status: Value = serde_json::from_slice(&reply.body).map_err(|e| {
        TestCaseError::fail(format!(
            "{} {path} answered {} without a Status ({e}): {:?}",
            case.method,
            reply.code,
            String::from_utf8_lossy(&reply.body)
        ))
    })?;
    prop_assert_eq!(&status["kind"], "Status", "{} {}", case.method, path);
    prop_assert_eq!(status["code"].as_u64(), Some(u64::from(reply.code)));
    let after = snapshot(address).await;
    prop_assert!(
        before == after,
        "{} {path} answered {} ({}) yet changed the stored objects",
        case.method,
        reply.code,
        status["message"]
    );
    Ok(())
}

#[test]
fn hostile_requests_leave_the_server_healthy_and_refusals_change_nothing() {
    let cases = std::env::var("CAPSTAN_ABUSE_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let server = ApiServer::bind(
            capstan_apiserver::testing::registry(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        populate(server.address()).await;
        server
    });
    let address = server.address();
    let mut runner = TestRunner::new(Config {
        cases,
        // Integration tests have no lib.rs for proptest to file regressions beside.
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&case(), |case| {
        runtime.block_on(capstan_api::testing::within(
            Duration::from_secs(30),
            check(address, &case),
        ))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
