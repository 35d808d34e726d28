//! The streaming protocols (`exec`, `attach`, `portforward`) against real clients: `kubectl`
//! 1.32 over WebSocket and over SPDY, and kube-rs. A small axum server plays the API server
//! (discovery, one Running pod) and routes the subresources to `capstan_kubelet::streaming`,
//! backed by in-test fake processes and a local HTTP server as the pod's port.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[path = "streaming_protocols/harness.rs"]
mod harness;

use harness::*;

// ---- exec ----------------------------------------------------------------------------------

async fn exec_prints_stdout_and_stderr(transport: Transport) {
    let server = server().await;
    let (code, stdout, stderr) = server
        .run(
            transport,
            &["exec", "p", "--", "echo", "hello", "world"],
            b"",
        )
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout), "hello world\n");
    let (code, stdout, stderr) = server
        .run(transport, &["exec", "p", "--", "warn", "careful"], b"")
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("careful"), "{stderr}");
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_prints_stdout_and_stderr_over_websocket() {
    within(exec_prints_stdout_and_stderr(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_prints_stdout_and_stderr_over_spdy() {
    within(exec_prints_stdout_and_stderr(Transport::Spdy)).await;
}

async fn exec_passes_stdin_through(transport: Transport) {
    let server = server().await;
    // More than SPDY's initial window, both ways.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (code, stdout, stderr) = server
        .run(transport, &["exec", "-i", "p", "--", "cat"], &input)
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.len(), input.len());
    assert!(stdout == input, "the echoed bytes differ");
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_passes_stdin_through_over_websocket() {
    within(exec_passes_stdin_through(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_passes_stdin_through_over_spdy() {
    within(exec_passes_stdin_through(Transport::Spdy)).await;
}

async fn exec_propagates_the_exit_code(transport: Transport) {
    let server = server().await;
    let (code, _, stderr) = server
        .run(transport, &["exec", "p", "--", "sh", "-c", "exit 3"], b"")
        .await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );
    let (code, _, stderr) = server
        .run(transport, &["exec", "p", "--", "missing"], b"")
        .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("executable file not found"), "{stderr}");
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_propagates_the_exit_code_over_websocket() {
    within(exec_propagates_the_exit_code(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_propagates_the_exit_code_over_spdy() {
    within(exec_propagates_the_exit_code(Transport::Spdy)).await;
}

async fn exec_streams_large_output(transport: Transport) {
    let server = server().await;
    let (code, stdout, stderr) = server
        .run(transport, &["exec", "p", "--", "big", "1000000"], b"")
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.len(), 1_000_000);
    assert!(stdout
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_streams_large_output_over_websocket() {
    within(exec_streams_large_output(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_streams_large_output_over_spdy() {
    within(exec_streams_large_output(Transport::Spdy)).await;
}

/// `kubectl exec -it` on a pseudo-terminal (`script`) sized 120x40: the size reaches the
/// process, typed input comes back, ^D ends the session.
async fn exec_on_a_terminal(transport: Transport) {
    let server = server().await;
    let kubectl = format!(
        "stty cols 120 rows 40; exec kubectl --kubeconfig {} --cache-dir {} exec -it p -- tty",
        server.dir.join("kubeconfig").display(),
        server.dir.join("cache").display()
    );
    let websockets = if transport == Transport::WebSocket {
        "true"
    } else {
        "false"
    };
    let mut child = tokio::process::Command::new("script")
        .args(["-qefc", &kubectl, "/dev/null"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script on the PATH");
    let mut stdin = child.stdin.take().unwrap();
    let (seen_tx, mut seen) = tokio::sync::watch::channel(String::new());
    let mut stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen_tx.send_modify(|s| s.push_str(&String::from_utf8_lossy(&buf[..n])));
        }
    });
    seen.wait_for(|s| s.contains("120x40")).await.unwrap();
    stdin.write_all(b"typed").await.unwrap();
    seen.wait_for(|s| s.contains("typed")).await.unwrap();
    stdin.write_all(b"\x04").await.unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}: {}", seen.borrow().clone());
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_on_a_terminal_over_websocket() {
    within(exec_on_a_terminal(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_on_a_terminal_over_spdy() {
    within(exec_on_a_terminal(Transport::Spdy)).await;
}

// ---- attach --------------------------------------------------------------------------------

async fn attach_connects_to_the_main_process(transport: Transport) {
    let server = server().await;
    let (code, stdout, stderr) = server
        .run(transport, &["attach", "-i", "p"], b"hi there\n")
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout), "attached\nhi there\n");
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_connects_to_the_main_process_over_websocket() {
    within(attach_connects_to_the_main_process(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_connects_to_the_main_process_over_spdy() {
    within(attach_connects_to_the_main_process(Transport::Spdy)).await;
}

// ---- port-forward --------------------------------------------------------------------------

/// `kubectl port-forward pod/p :<remote>` in the background; returns it and its local port.
async fn port_forward(
    server: &Server,
    transport: Transport,
    remote: u16,
) -> (tokio::process::Child, u16) {
    let mut child = server
        .kubectl(transport, &["port-forward", "pod/p", &format!(":{remote}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on the PATH");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("kubectl port-forward printed its port");
        // "Forwarding from 127.0.0.1:41234 -> 80"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split(' ').next().unwrap().parse::<u16>().unwrap();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

async fn get_page(port: u16) -> std::io::Result<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n")
        .await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    Ok(response)
}

async fn port_forward_reaches_the_pods_port(transport: Transport) {
    let server = server().await;
    let (mut child, port) = port_forward(&server, transport, 80).await;
    for _ in 0..3 {
        let response = get_page(port).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with(PAGE), "{response}");
    }
    server.assert_transport(transport);
    if transport == Transport::WebSocket {
        // kubectl tunnels SPDY in the WebSocket.
        let upgrades = server.upgrades.lock().unwrap().clone();
        assert!(
            upgrades[0].ends_with("SPDY/3.1+portforward.k8s.io"),
            "{upgrades:?}"
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_the_pods_port_over_websocket() {
    within(port_forward_reaches_the_pods_port(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_the_pods_port_over_spdy() {
    within(port_forward_reaches_the_pods_port(Transport::Spdy)).await;
}

async fn port_forward_carries_a_megabyte_both_ways(transport: Transport) {
    let server = server().await;
    let (mut child, port) = port_forward(&server, transport, 7).await;
    let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let sent: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253) as u8).collect();
    let expected = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    writing.await.unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "the echoed bytes differ");
    server.assert_transport(transport);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_carries_a_megabyte_both_ways_over_websocket() {
    within(port_forward_carries_a_megabyte_both_ways(
        Transport::WebSocket,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_carries_a_megabyte_both_ways_over_spdy() {
    within(port_forward_carries_a_megabyte_both_ways(Transport::Spdy)).await;
}

async fn port_forward_reports_a_refused_port(transport: Transport) {
    let server = server().await;
    let (mut child, port) = port_forward(&server, transport, 81).await;
    let response = get_page(port).await.unwrap_or_default();
    assert!(response.is_empty(), "{response}");
    let mut stderr = child.stderr.take().unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&text).contains("IPv6") {
                break;
            }
        }
    })
    .await;
    let _ = child.kill().await;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("error forwarding port 81 to pod p, uid : failed to connect to localhost:81"),
        "{text}"
    );
    server.assert_transport(transport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reports_a_refused_port_over_websocket() {
    within(port_forward_reports_a_refused_port(Transport::WebSocket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reports_a_refused_port_over_spdy() {
    within(port_forward_reports_a_refused_port(Transport::Spdy)).await;
}

// ---- kube-rs -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_reads_output_and_the_status() {
    within(async {
        let server = server().await;
        let pods: kube::Api<Pod> = kube::Api::namespaced(kube_client(&server), "default");
        let mut process = pods
            .exec("p", ["echo", "from", "kube"], &AttachParams::default())
            .await
            .unwrap();
        let mut stdout = String::new();
        process
            .stdout()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        let status = process.take_status().unwrap().await.unwrap();
        assert_eq!(stdout, "from kube\n");
        assert_eq!(status.status.as_deref(), Some("Success"));
        process.join().await.unwrap();

        let mut process = pods
            .exec("p", ["sh", "-c", "exit 4"], &AttachParams::default())
            .await
            .unwrap();
        let status = process.take_status().unwrap().await.unwrap();
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        assert_eq!(
            status.message.as_deref(),
            Some("command terminated with non-zero exit code: error executing command [sh -c exit 4], exit code 4")
        );
        let causes = status.details.unwrap().causes.unwrap();
        assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
        assert_eq!(causes[0].message.as_deref(), Some("4"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_closes_stdin_and_resizes_the_terminal() {
    within(async {
        let server = server().await;
        let pods: kube::Api<Pod> = kube::Api::namespaced(kube_client(&server), "default");
        let params = AttachParams::interactive_tty();
        let mut process = pods.exec("p", ["tty"], &params).await.unwrap();
        let mut sizes = process.terminal_size().unwrap();
        let mut stdin = process.stdin().unwrap();
        let mut stdout = BufReader::new(process.stdout().unwrap());
        let mut line = String::new();
        futures::SinkExt::send(
            &mut sizes,
            kube::api::TerminalSize {
                width: 100,
                height: 30,
            },
        )
        .await
        .unwrap();
        stdout.read_line(&mut line).await.unwrap();
        assert_eq!(line, "100x30\n");
        stdin.write_all(b"typed\n").await.unwrap();
        line.clear();
        stdout.read_line(&mut line).await.unwrap();
        assert_eq!(line, "typed\n");
        // v5: closing stdin reaches the process, which then exits.
        stdin.shutdown().await.unwrap();
        drop(stdin);
        let status = process.take_status().unwrap().await.unwrap();
        assert_eq!(status.status.as_deref(), Some("Success"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_port_forward_reaches_the_pods_port_and_reports_errors() {
    within(async {
        let server = server().await;
        let pods: kube::Api<Pod> = kube::Api::namespaced(kube_client(&server), "default");
        let mut forwarder = pods.portforward("p", &[80]).await.unwrap();
        let mut stream = forwarder.take_stream(80).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.ends_with(PAGE), "{response}");
        drop(stream);
        // The server closes the connection once the port's forwarding ended (as the kubelet
        // does): kube-rs then reports its own late Close as an error, which is not the server's.
        let _ = forwarder.join().await;

        let mut forwarder = pods.portforward("p", &[81]).await.unwrap();
        let error = forwarder.take_error(81).unwrap().await;
        assert!(
            error
                .as_deref()
                .unwrap_or("")
                .starts_with("error forwarding port 81 to pod p, uid : failed to connect"),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_spdy_protocol_is_refused_with_the_accepted_ones() {
    within(async {
        let server = server().await;
        let mut socket = TcpStream::connect(server.address).await.unwrap();
        socket
            .write_all(
                b"POST /api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true HTTP/1.1\r\n\
                  Host: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                  X-Stream-Protocol-Version: v9.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
            )
            .await
            .unwrap();
        let mut response = vec![0u8; 4096];
        let n = socket.read(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response[..n]).to_lowercase();
        assert!(response.starts_with("http/1.1 403"), "{response}");
        assert!(
            response.contains("x-accepted-stream-protocol-versions: v5.channel.k8s.io"),
            "{response}"
        );
    })
    .await;
}

// ---- raw WebSocket clients -----------------------------------------------------------------

/// A WebSocket to `path` offering `protocol`; returns it and the protocol the server chose.
async fn websocket(
    server: &Server,
    path: &str,
    protocol: &str,
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    Option<String>,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let mut request = format!("ws://{}{path}", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base64_protocol_carries_channels_as_text() {
    use base64::Engine;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    within(async {
        let server = server().await;
        let (mut ws, chosen) = websocket(
            &server,
            "/api/v1/namespaces/default/pods/p/exec?command=echo&command=hi&stdout=true",
            "v4.base64.channel.k8s.io",
        )
        .await;
        assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
        let mut channels: Vec<(char, Vec<u8>)> = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) => {
                    let channel = text.chars().next().unwrap();
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(&text.as_str()[1..])
                        .unwrap();
                    channels.push((channel, data));
                }
                Message::Close(_) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            channels,
            vec![
                ('1', Vec::new()),
                ('1', b"hi\n".to_vec()),
                ('3', br#"{"metadata":{},"status":"Success"}"#.to_vec()),
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_the_process_back() {
    within(async {
        let server = server().await;
        let (ws, chosen) = websocket(
            &server,
            "/api/v1/namespaces/default/pods/p/exec?command=flood&stdout=true",
            "v5.channel.k8s.io",
        )
        .await;
        assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
        // The client reads nothing: the process gets as far as the bounded queues and the
        // sockets' buffers let it, then stalls, far from its 256 MiB.
        let mut written = FLOODED.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = FLOODED.load(Ordering::Relaxed);
            if now > 0 && now == written {
                break;
            }
            assert!(now < 32 * 1024 * 1024, "{now} bytes buffered");
            written = now;
        }
        assert!(written < 32 * 1024 * 1024, "{written} bytes buffered");
        drop(ws);
    })
    .await;
}
