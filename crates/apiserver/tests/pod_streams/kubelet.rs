//! A stand-in kubelet for the API server's kubelet proxying: an HTTP server on a loopback
//! port that records every request (method, path, query, `Authorization`, headers) and
//! answers as a kubelet would, enough to see what the API server sends and relays:
//!
//! - `/containerLogs/{ns}/{pod}/{container}`: `line 1` to `line 3`, honouring `tailLines`;
//!   with `follow=true`, `first line`, then, once [`FakeKubelet::release`] is called,
//!   `second line` and the end. Container `broken` is refused with 400 and a kubelet's text;
//!   container `flood` follows with 64 KiB chunks as fast as they are taken, counting them
//!   ([`FakeKubelet::flooded`]).
//! - `/exec/...`, `/attach/...`, `/portForward/...`: an upgrade is answered 101 with the
//!   protocol asked for; the upgraded stream says `kubelet says hi\n`, then echoes every byte.
//! - `/stats/summary`: a Summary API document for node `n1` and Pod `default/web`.
//! - anything else: `<METHOD> <path>?<query> body=<body>` in plain text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// One request the stand-in saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) authorization: Option<String>,
    pub(crate) headers: HeaderMap,
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Notify>,
    flooded: Arc<std::sync::atomic::AtomicU64>,
}

/// The running stand-in; it stops on drop.
pub(crate) struct FakeKubelet {
    address: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    /// Serves on a free loopback port.
    pub(crate) async fn start() -> FakeKubelet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKubelet {
            address,
            shared,
            task,
        }
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.address.port()
    }

    /// Every request seen so far, oldest first.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }

    /// The last request whose path starts with `prefix`; panics if there is none.
    pub(crate) fn last(&self, prefix: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.path.starts_with(prefix))
            .unwrap_or_else(|| panic!("no request to {prefix} in {:?}", self.seen()))
    }

    /// How many bytes the `flood` log stream has handed to its connection so far.
    pub(crate) fn flooded(&self) -> u64 {
        self.shared
            .flooded
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets a waiting follow stream send its second line and end.
    pub(crate) fn release(&self) {
        self.shared.gate.notify_one();
    }
}

async fn handle(State(shared): State<Shared>, mut request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let headers = request.headers().clone();
    shared.seen.lock().push(Seen {
        method: request.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        headers: headers.clone(),
    });
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["containerLogs", _, pod, container] => logs(&shared, pod, container, &query),
        ["exec" | "attach", _, _, _] | ["portForward", _, _] => {
            if headers.contains_key(header::UPGRADE) {
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(echo(upgrade));
                let protocol = headers[header::UPGRADE].clone();
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                response
                    .headers_mut()
                    .insert(header::CONNECTION, "Upgrade".parse().unwrap());
                response.headers_mut().insert(header::UPGRADE, protocol);
                if let Some(version) = headers.get("x-stream-protocol-version") {
                    response
                        .headers_mut()
                        .insert("x-stream-protocol-version", version.clone());
                }
                response
            } else {
                (StatusCode::BAD_REQUEST, "Upgrade request required").into_response()
            }
        }
        ["stats", "summary"] => axum::Json(summary()).into_response(),
        _ => {
            let method = request.method().to_string();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            format!(
                "{method} {path}?{query} body={}",
                String::from_utf8_lossy(&body)
            )
            .into_response()
        }
    }
}

fn logs(shared: &Shared, pod: &str, container: &str, query: &str) -> Response {
    if container == "broken" {
        return (
            StatusCode::BAD_REQUEST,
            format!("container \"broken\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        )
            .into_response();
    }
    if container == "flood" {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let flooded = shared.flooded.clone();
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            while sender.send(chunk.clone()).await.is_ok() {
                flooded.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
        });
        return Response::new(Body::from_stream(stream));
    }
    if query.split('&').any(|p| p == "follow=true") {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let gate = shared.gate.clone();
        tokio::spawn(async move {
            let _ = sender.send(Bytes::from_static(b"first line\n")).await;
            gate.notified().await;
            let _ = sender.send(Bytes::from_static(b"second line\n")).await;
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
        });
        return Response::new(Body::from_stream(stream));
    }
    let tail: usize = query
        .split('&')
        .find_map(|p| p.strip_prefix("tailLines="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let lines: Vec<String> = (1..=3)
        .skip(3 - tail.min(3))
        .map(|n| format!("line {n}\n"))
        .collect();
    lines.concat().into_response()
}

/// Greets, then echoes every byte back until the other side closes.
async fn echo(upgrade: hyper::upgrade::OnUpgrade) {
    let Ok(upgraded) = upgrade.await else { return };
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    if io.write_all(b"kubelet says hi\n").await.is_err() {
        return;
    }
    let mut buffer = [0u8; 1024];
    loop {
        match io.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if io.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The Summary API of node `n1`: the node at 250m and 64Mi, Pod `default/web`'s container
/// `app` at 5m and 8Mi.
fn summary() -> serde_json::Value {
    let time = "2026-12-07T10:00:05Z";
    json!({
        "node": {
            "nodeName": "n1",
            "startTime": "2026-12-07T09:00:00Z",
            "cpu": {"time": time, "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": 9_000_000_000u64},
            "memory": {"time": time, "workingSetBytes": 64u64 << 20, "usageBytes": 80u64 << 20},
        },
        "pods": [{
            "podRef": {"name": "web", "namespace": "default", "uid": "u1"},
            "startTime": "2026-12-07T09:30:00Z",
            "containers": [{
                "name": "app",
                "startTime": "2026-12-07T09:30:00Z",
                "cpu": {"time": time, "usageNanoCores": 5_000_000u64},
                "memory": {"time": time, "workingSetBytes": 8u64 << 20},
            }],
        }],
    })
}
