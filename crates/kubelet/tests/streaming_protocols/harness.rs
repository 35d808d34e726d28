//! The harness of `streaming_protocols.rs`: fake processes, the test server (discovery, one
//! Running pod, the streaming subresources), and kubectl and kube-rs clients for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use capstan_kubelet::streaming::{
    serve_port_forward, serve_remote_command, ConnectPort, OpenProcess, StreamError,
};
use capstan_runtime::{DuplexStream, ProcessIo, StdioOptions, TerminalSize};
use futures::FutureExt;
use http::Response;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every test's time limit.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);
/// How many bytes the `flood` process managed to write so far.
pub(crate) static FLOODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the pod's port 80 answers.
pub(crate) const PAGE: &str = "hello from the pod";

// ---- fake processes --------------------------------------------------------------------

/// A process whose behaviour is named by its command.
pub(crate) fn fake_process(stdio: StdioOptions, command: Vec<String>) -> ProcessIo {
    let (stdin_writer, mut stdin) = tokio::io::duplex(16 * 1024);
    let (mut stdout, stdout_reader) = tokio::io::duplex(16 * 1024);
    let (mut stderr, stderr_reader) = tokio::io::duplex(16 * 1024);
    let (resize_tx, mut resizes) = mpsc::channel::<TerminalSize>(4);
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<i32>();
    tokio::spawn(async move {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let code = match args.as_slice() {
            ["echo", words @ ..] => {
                let line = format!("{}\n", words.join(" "));
                let _ = stdout.write_all(line.as_bytes()).await;
                0
            }
            ["warn", words @ ..] => {
                let line = format!("{}\n", words.join(" "));
                let _ = stderr.write_all(line.as_bytes()).await;
                0
            }
            ["sh", "-c", script] if script.starts_with("exit ") => {
                script[5..].trim().parse().unwrap_or(1)
            }
            ["big", n] => {
                let n: usize = n.parse().unwrap();
                let chunk: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                let _ = stdout.write_all(&chunk).await;
                0
            }
            ["cat"] | ["attach"] => {
                if args == ["attach"] {
                    let _ = stdout.write_all(b"attached\n").await;
                }
                let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
                0
            }
            ["flood"] => {
                let chunk = [b'x'; 1024];
                for _ in 0..256 * 1024 {
                    if stdout.write_all(&chunk).await.is_err() {
                        break;
                    }
                    FLOODED.fetch_add(chunk.len(), Ordering::Relaxed);
                }
                0
            }
            ["tty"] => {
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        size = resizes.recv() => match size {
                            Some(size) => {
                                let line = format!("{}x{}\n", size.width, size.height);
                                let _ = stdout.write_all(line.as_bytes()).await;
                            }
                            None => break,
                        },
                        n = stdin.read(&mut buf) => match n {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let _ = stdout.write_all(&buf[..n]).await;
                                // A terminal's end of input (^D).
                                if buf[..n].contains(&4) {
                                    break;
                                }
                            }
                        },
                    }
                }
                0
            }
            _ => 127,
        };
        drop((stdout, stderr));
        let _ = exit_tx.send(code);
    });
    ProcessIo {
        stdin: stdio.stdin.then(|| Box::pin(stdin_writer) as _),
        stdout: stdio.stdout.then(|| Box::pin(stdout_reader) as _),
        stderr: (stdio.stderr && !stdio.tty).then(|| Box::pin(stderr_reader) as _),
        resize: stdio.tty.then_some(resize_tx),
        exit: async move { Ok(exit_rx.await.unwrap_or(137)) }.boxed(),
    }
}

// ---- the test server ---------------------------------------------------------------------

pub(crate) fn query(request: &Request) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let bytes = v.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            (n.to_string(), String::from_utf8(out).unwrap())
        })
        .collect()
}

pub(crate) fn stdio_of(pairs: &[(String, String)]) -> StdioOptions {
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(n, v)| n == name && (v == "true" || v == "1"))
    };
    StdioOptions {
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    }
}

pub(crate) async fn exec(request: Request) -> Response<Body> {
    let pairs = query(&request);
    let stdio = stdio_of(&pairs);
    let command: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let open: OpenProcess = Box::new(move |stdio| {
        async move {
            if command.first().map(String::as_str) == Some("missing") {
                return Err(StreamError {
                    code: 500,
                    reason: "InternalError".into(),
                    message: "executable file not found".into(),
                });
            }
            Ok(fake_process(stdio, command))
        }
        .boxed()
    });
    serve_remote_command(request, stdio, open)
}

pub(crate) async fn attach(request: Request) -> Response<Body> {
    let stdio = stdio_of(&query(&request));
    let open: OpenProcess = Box::new(move |stdio| {
        async move { Ok(fake_process(stdio, vec!["attach".into()])) }.boxed()
    });
    serve_remote_command(request, stdio, open)
}

pub(crate) fn pod_json() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "00000000-0000-0000-0000-000000000001", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": true,
                                 "ports": [{"containerPort": 80, "name": "http"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.0.2",
                   "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    })
}

pub(crate) fn json(value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

/// The pod's ports: 80 is an HTTP server, 7 echoes (until its client half-closes); anything
/// else refuses.
pub(crate) fn connect_port(http: SocketAddr) -> ConnectPort {
    Arc::new(move |port| {
        async move {
            if port == 7 {
                let (conn, pod_side) = tokio::io::duplex(64 * 1024);
                tokio::spawn(async move {
                    let (mut reader, mut writer) = tokio::io::split(pod_side);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
                return Ok(Box::new(conn) as DuplexStream);
            }
            if port != 80 {
                return Err(StreamError {
                    code: 500,
                    reason: "InternalError".into(),
                    message: format!(
                        "failed to connect to localhost:{port} inside namespace \"sandbox\", IPv4: connection refused IPv6 connection refused "
                    ),
                });
            }
            let stream = TcpStream::connect(http)
                .await
                .map_err(|e| StreamError::internal(e.to_string()))?;
            Ok(Box::new(stream) as DuplexStream)
        }
        .boxed()
    })
}

/// A one-page HTTP server: answers every request with [`PAGE`] and closes.
pub(crate) async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(&mut socket);
                let mut line = String::new();
                while reader.read_line(&mut line).await.unwrap_or(0) > 0 {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    address
}

pub(crate) struct Server {
    pub(crate) address: SocketAddr,
    pub(crate) dir: PathBuf,
    /// The `Upgrade` (and `Sec-WebSocket-Protocol`) of every upgrade request served.
    pub(crate) upgrades: Upgrades,
}

pub(crate) type Upgrades = Arc<std::sync::Mutex<Vec<String>>>;

pub(crate) async fn record_upgrade(
    axum::extract::State(upgrades): axum::extract::State<Upgrades>,
    request: Request,
    next: axum::middleware::Next,
) -> Response<Body> {
    let line = {
        let headers = request.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let upgrade = header("upgrade");
        (!upgrade.is_empty()).then(|| {
            format!("{upgrade} {}", header("sec-websocket-protocol"))
                .trim()
                .to_string()
        })
    };
    if let Some(line) = line {
        upgrades.lock().unwrap().push(line);
    }
    next.run(request).await
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn server() -> Server {
    let upgrades = Upgrades::default();
    let http = http_server().await;
    let connect = connect_port(http);
    let pods = "/api/v1/namespaces/default/pods/p";
    let app = Router::new()
        .route(
            "/api",
            get(|| async {
                json(serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
            }),
        )
        .route(
            "/apis",
            get(|| async {
                json(serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
            }),
        )
        .route(
            "/api/v1",
            get(|| async {
                json(serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                     "verbs": ["get", "list"], "shortNames": ["po"]},
                    {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                    {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                    {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}
                ]}))
            }),
        )
        .route(pods, get(|| async { json(pod_json()) }))
        .route(&format!("{pods}/exec"), any(exec))
        .route(&format!("{pods}/attach"), any(attach))
        .route(
            &format!("{pods}/portforward"),
            any(move |request: Request| {
                let connect = connect.clone();
                async move { serve_port_forward(request, connect) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            upgrades.clone(),
            record_upgrade,
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "capstan-streaming-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{address}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n"
        ),
    )
    .unwrap();
    Server {
        address,
        dir,
        upgrades,
    }
}

// ---- kubectl -----------------------------------------------------------------------------

/// Which transport kubectl uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Spdy,
}

impl Server {
    /// Asserts that kubectl upgraded its requests with `transport` (and nothing else).
    pub(crate) fn assert_transport(&self, transport: Transport) {
        let upgrades = self.upgrades.lock().unwrap().clone();
        assert!(!upgrades.is_empty(), "no upgrade was requested");
        for upgrade in &upgrades {
            let expected = match transport {
                Transport::WebSocket => upgrade.to_ascii_lowercase().starts_with("websocket"),
                Transport::Spdy => upgrade == "SPDY/3.1",
            };
            assert!(expected, "{transport:?} expected, got {upgrades:?}");
        }
    }

    pub(crate) fn kubectl(&self, transport: Transport, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        let websockets = if transport == Transport::WebSocket {
            "true"
        } else {
            "false"
        };
        command
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets);
        command
    }

    /// Runs kubectl with `input` on its stdin; returns (exit code, stdout, stderr).
    pub(crate) async fn run(
        &self,
        transport: Transport,
        args: &[&str],
        input: &[u8],
    ) -> (i32, Vec<u8>, String) {
        let mut child = self
            .kubectl(transport, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on the PATH");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writing = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        });
        let output = child.wait_with_output().await.unwrap();
        writing.await.unwrap();
        (
            output.status.code().unwrap_or(-1),
            output.stdout,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

pub(crate) fn kube_client(server: &Server) -> kube::Client {
    let config = kube::Config::new(format!("http://{}", server.address).parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

pub(crate) async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("the test timed out")
}
