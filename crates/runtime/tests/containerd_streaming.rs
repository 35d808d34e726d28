//! The containerd backend's streaming calls (exec, attach, port-forward, stats) against a real
//! containerd (feature `containerd`).
//!
//! Run like `containerd_runtime.rs`: `scripts/test` starts a throwaway containerd and exports
//! `CAPSTAN_CONTAINERD_SOCKET`; alone, `source scripts/lib-containerd.sh`, then
//! `capstan_start_containerd /tmp/containerd` and `cargo test -p capstan-runtime --features
//! containerd --test containerd_streaming` as root. Each test has its own containerd
//! namespace and state directory and imports a busybox image built from Debian's
//! `busybox-static`.
#![cfg(feature = "containerd")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "capstan.test/busybox-streaming:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "true", "stty", "httpd", "dd", "tr", "mkdir",
];

/// One test's world: its own containerd namespace, state directory and log directory.
struct World {
    runtime: ContainerdRuntime,
    root: PathBuf,
}

impl World {
    async fn new(test: &str) -> World {
        let socket = std::env::var("CAPSTAN_CONTAINERD_SOCKET").unwrap_or_else(|_| {
            panic!(
                "CAPSTAN_CONTAINERD_SOCKET is not set: run these tests through scripts/test, \
                 which starts a containerd (see scripts/lib-containerd.sh)"
            )
        });
        assert!(Path::new(&socket).exists(), "{socket} does not exist");
        let root = std::env::temp_dir().join(format!("capstan-streaming-{test}"));
        let runtime = ContainerdRuntime::connect(
            ContainerdConfig::new(&socket)
                .namespace(format!("capstan-streaming-{test}"))
                .state_dir(root.join("state")),
        )
        .await
        .unwrap_or_else(|e| panic!("containerd at {socket} is unreachable: {e}"));
        for sandbox in runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
        {
            runtime.remove_pod_sandbox(&sandbox.id).await.unwrap();
        }
        let binary = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install Debian's busybox-static");
        let archive = ImageArchive::busybox(IMAGE, binary, APPLETS)
            .build()
            .unwrap();
        runtime.import_image(archive.into()).await.unwrap();
        World { runtime, root }
    }

    /// A ready sandbox with the loopback interface up (what the CNI loopback plugin does).
    async fn sandbox(&self, name: &str) -> (String, PodSandboxConfig) {
        let config = PodSandboxConfig::new(PodSandboxMetadata::new(
            name,
            "default",
            format!("uid-{name}"),
        ))
        .log_directory(self.root.join("logs").to_string_lossy().into_owned());
        let id = self.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let netns = self
            .runtime
            .pod_sandbox_status(&id)
            .await
            .unwrap()
            .network_namespace_path;
        let up = Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .expect("nsenter and ip run");
        assert!(up.success());
        (id, config)
    }

    async fn run(&self, sandbox: &str, config: &PodSandboxConfig, c: ContainerConfig) -> String {
        let id = self
            .runtime
            .create_container(sandbox, c, config)
            .await
            .unwrap();
        self.runtime.start_container(&id).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.runtime.container_status(&id).await.unwrap().state != ContainerState::Running {
            assert!(Instant::now() < deadline, "{id} never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    }

    async fn exec(&self, id: &str, cmd: &[&str], stdio: StdioOptions) -> ProcessIo {
        self.runtime
            .exec(StreamingExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                stdio,
            })
            .await
            .unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn sh(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig::new(name, IMAGE).command(["sh", "-c", script])
}

async fn read_all(reader: Option<ByteReader>) -> String {
    let mut out = Vec::new();
    reader.unwrap().read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `reader` until what was read contains `needle`; returns all of it.
async fn read_until(reader: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "ended before {needle:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn exec_streams_output_and_input_and_reports_the_exit_code() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("exec").await;
        let (sandbox, config) = w.sandbox("exec").await;
        let id = w.run(&sandbox, &config, sh("main", "sleep 1000")).await;

        // Output on both streams, then the exit code.
        let io = w
            .exec(
                &id,
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                StdioOptions::output(),
            )
            .await;
        assert!(io.stdin.is_none() && io.resize.is_none());
        let (stdout, stderr) = tokio::join!(read_all(io.stdout), read_all(io.stderr));
        assert_eq!((stdout.as_str(), stderr.as_str()), ("out\n", "err\n"));
        assert_eq!(io.exit.await.unwrap(), 3);

        // Output arrives while the process still runs, not once it has ended.
        let mut io = w
            .exec(
                &id,
                &["sh", "-c", "echo first; exec sleep 30"],
                StdioOptions::output(),
            )
            .await;
        let mut stdout = io.stdout.take().unwrap();
        assert_eq!(read_until(&mut stdout, "first\n").await, "first\n");
        // Dropping the session kills the process.
        drop(stdout);
        drop(io);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = w
                .runtime
                .exec_sync(ExecRequest::new(
                    &id,
                    ["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
                ))
                .await
                .unwrap();
            if !String::from_utf8_lossy(&ps.stdout).contains("sleep 30") {
                break;
            }
            assert!(Instant::now() < deadline, "the abandoned exec still runs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Stdin streams in; shutting it down gives the process end-of-file.
        let mut io = w
            .exec(
                &id,
                &["cat"],
                StdioOptions {
                    stdin: true,
                    ..StdioOptions::output()
                },
            )
            .await;
        let mut stdin = io.stdin.take().unwrap();
        let mut stdout = io.stdout.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        assert_eq!(read_until(&mut stdout, "hello\n").await, "hello\n");
        stdin.write_all(b"world").await.unwrap();
        stdin.shutdown().await.unwrap();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "world");
        assert_eq!(io.exit.await.unwrap(), 0);

        // Once the process has exited, writing to its stdin fails rather than blocking.
        let mut io = w
            .exec(
                &id,
                &["true"],
                StdioOptions {
                    stdin: true,
                    ..StdioOptions::output()
                },
            )
            .await;
        assert_eq!(io.exit.await.unwrap(), 0);
        let mut stdin = io.stdin.take().unwrap();
        assert!(stdin.write_all(&vec![b'x'; 1 << 20]).await.is_err());

        // Finished sessions leave no FIFOs behind.
        let container_dir = w.root.join("state/containers").join(&id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&container_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        {
            assert!(Instant::now() < deadline, "exec FIFOs are left behind");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A command that does not exist: exit code 127 and the runtime's message.
        let io = w
            .exec(&id, &["no-such-command"], StdioOptions::output())
            .await;
        let (stdout, stderr) = tokio::join!(read_all(io.stdout), read_all(io.stderr));
        assert_eq!(stdout, "");
        assert!(
            stderr.starts_with("OCI runtime exec failed: exec failed")
                && stderr.contains("\"no-such-command\": executable file not found in $PATH"),
            "{stderr}"
        );
        assert_eq!(io.exit.await.unwrap(), 127);

        // Bad requests and containers that do not run are refused.
        for (cmd, stdio) in [
            (vec![], StdioOptions::output()),
            (
                vec!["true".to_string()],
                StdioOptions {
                    tty: true,
                    ..StdioOptions::output()
                },
            ),
        ] {
            let refused = w
                .runtime
                .exec(StreamingExecRequest {
                    container_id: id.clone(),
                    cmd,
                    stdio,
                })
                .await;
            assert!(matches!(refused, Err(RuntimeError::InvalidArgument(_))));
        }
        let missing = w
            .runtime
            .exec(StreamingExecRequest {
                container_id: "0".repeat(64),
                cmd: vec!["true".into()],
                stdio: StdioOptions::output(),
            })
            .await;
        assert!(matches!(missing, Err(e) if e.is_not_found()));
        w.runtime.stop_container(&id, Duration::ZERO).await.unwrap();
        let stopped = w
            .runtime
            .exec(StreamingExecRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                stdio: StdioOptions::output(),
            })
            .await;
        assert!(matches!(stopped, Err(RuntimeError::FailedPrecondition(_))));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_terminal_exec_merges_its_output_and_follows_resizes() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("tty").await;
        let (sandbox, config) = w.sandbox("tty").await;
        let id = w.run(&sandbox, &config, sh("main", "sleep 1000")).await;
        let mut io = w
            .exec(
                &id,
                &["sh"],
                StdioOptions {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                    tty: true,
                },
            )
            .await;
        assert!(io.stderr.is_none());
        let resize = io.resize.take().expect("a terminal can be resized");
        resize
            .send(TerminalSize {
                width: 123,
                height: 45,
            })
            .await
            .unwrap();
        let mut stdin = io.stdin.take().unwrap();
        let mut stdout = io.stdout.take().unwrap();
        // Resizes are applied asynchronously: ask until the new size shows.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            stdin
                .write_all(b"stty size; echo $TERM; echo er''r >&2\n")
                .await
                .unwrap();
            let seen = read_until(&mut stdout, "err").await;
            if seen.contains("45 123") {
                assert!(seen.contains("xterm"), "{seen:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the size never changed: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stdin.write_all(b"exit 5\n").await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 5);
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn attach_sees_new_output_and_writes_to_a_container_created_with_stdin() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("attach").await;
        let (sandbox, config) = w.sandbox("attach").await;
        let ticker = w
            .run(
                &sandbox,
                &config,
                sh("ticker", "i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.2; done"),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut io = w
            .runtime
            .attach(AttachRequest {
                container_id: ticker.clone(),
                stdio: StdioOptions::output(),
            })
            .await
            .unwrap();
        let mut stdout = io.stdout.take().unwrap();
        let mut stderr = io.stderr.take().unwrap();
        let out = read_until(&mut stdout, "\n").await;
        let err = read_until(&mut stderr, "\n").await;
        assert!(out.starts_with("tick "), "{out:?}");
        assert!(err.starts_with("tock "), "{err:?}");
        // Output from now on: a line printed before the attach is not replayed.
        let first: u32 = out.lines().next().unwrap()["tick ".len()..]
            .parse()
            .unwrap();
        assert!(first >= 2, "{out:?}");
        // The container ending ends the streams and resolves the exit.
        w.runtime
            .stop_container(&ticker, Duration::ZERO)
            .await
            .unwrap();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 137);

        // Stdin reaches a `cat` created with stdin; its echo comes back on stdout.
        let mut cat = ContainerConfig::new("cat", IMAGE).command(["cat"]);
        cat.stdin = true;
        let cat = w.run(&sandbox, &config, cat).await;
        let mut io = w
            .runtime
            .attach(AttachRequest {
                container_id: cat.clone(),
                stdio: StdioOptions {
                    stdin: true,
                    ..StdioOptions::output()
                },
            })
            .await
            .unwrap();
        let mut stdin = io.stdin.take().unwrap();
        let mut stdout = io.stdout.take().unwrap();
        stdin.write_all(b"ping\n").await.unwrap();
        assert_eq!(read_until(&mut stdout, "ping\n").await, "ping\n");
        // Detaching leaves the container's stdin open for the next session.
        drop(stdin);
        drop(io);
        let mut io = w
            .runtime
            .attach(AttachRequest {
                container_id: cat.clone(),
                stdio: StdioOptions {
                    stdin: true,
                    stdout: true,
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        assert!(io.stderr.is_none());
        let mut stdout = io.stdout.take().unwrap();
        io.stdin.as_mut().unwrap().write_all(b"pong\n").await.unwrap();
        assert_eq!(read_until(&mut stdout, "pong\n").await, "pong\n");
        let logs: Vec<LogEntry> = futures::StreamExt::collect::<Vec<_>>(
            w.runtime
                .container_logs(&cat, LogOptions::all())
                .await
                .unwrap(),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(logs.len(), 2, "{logs:?}");

        // A container on a terminal: one output stream, resizable, and its exit resolves.
        let mut shell = ContainerConfig::new("shell", IMAGE).command(["sh"]);
        (shell.stdin, shell.tty) = (true, true);
        let shell = w.run(&sandbox, &config, shell).await;
        let mut io = w
            .runtime
            .attach(AttachRequest {
                container_id: shell.clone(),
                stdio: StdioOptions {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                    tty: true,
                },
            })
            .await
            .unwrap();
        assert!(io.stderr.is_none());
        io.resize
            .take()
            .expect("a terminal can be resized")
            .send(TerminalSize {
                width: 77,
                height: 11,
            })
            .await
            .unwrap();
        let mut stdin = io.stdin.take().unwrap();
        let mut stdout = io.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            stdin.write_all(b"stty size; echo d''one\n").await.unwrap();
            let seen = read_until(&mut stdout, "done").await;
            if seen.contains("11 77") {
                break;
            }
            assert!(Instant::now() < deadline, "the size never changed: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stdin.write_all(b"exit 4\n").await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 4);

        w.runtime.stop_container(&cat, Duration::ZERO).await.unwrap();
        assert!(matches!(
            w.runtime
                .attach(AttachRequest {
                    container_id: cat.clone(),
                    stdio: StdioOptions::output(),
                })
                .await,
            Err(RuntimeError::FailedPrecondition(_))
        ));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_slow_attach_session_loses_output_but_never_holds_the_log_up() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("lag").await;
        let (sandbox, config) = w.sandbox("lag").await;
        // About 2 MB of output once the session is attached, then a last line.
        let id = w
            .run(
                &sandbox,
                &config,
                sh(
                    "chatty",
                    "while [ ! -e /tmp/go ]; do sleep 0.05; done; i=0; \
                     while [ $i -lt 20000 ]; do \
                     echo \"line $i ........................................................................................\"; \
                     i=$((i+1)); done; echo finished; sleep 1000",
                ),
            )
            .await;
        let mut io = w
            .runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio: StdioOptions::output(),
            })
            .await
            .unwrap();
        w.runtime
            .exec_sync(ExecRequest::new(&id, ["sh", "-c", "echo > /tmp/go"]))
            .await
            .unwrap();
        // Nobody reads the session, yet the container writes everything to its log.
        let deadline = Instant::now() + Duration::from_secs(30);
        let lines = loop {
            let entries: Vec<LogEntry> = futures::StreamExt::collect::<Vec<_>>(
                w.runtime.container_logs(&id, LogOptions::all()).await.unwrap(),
            )
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
            if entries.last().is_some_and(|e| &e.line[..] == b"finished") {
                break entries.len();
            }
            assert!(Instant::now() < deadline, "the log stalled at {} lines", entries.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(lines, 20_001);
        // The session got the start of the output and lost some of the rest.
        let mut stdout = io.stdout.take().unwrap();
        w.runtime.stop_container(&id, Duration::ZERO).await.unwrap();
        let mut seen = Vec::new();
        stdout.read_to_end(&mut seen).await.unwrap();
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.starts_with("line 0 "), "{}", &seen[..80.min(seen.len())]);
        assert!(seen.len() < 2_000_000, "{} bytes arrived", seen.len());
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn port_forward_reaches_a_server_listening_inside_the_pod() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("portfwd").await;
        let (sandbox, config) = w.sandbox("portfwd").await;
        let server = w
            .run(
                &sandbox,
                &config,
                sh("web", "mkdir -p /www && echo hello from the pod > /www/index.html && exec httpd -f -p 8080 -h /www"),
            )
            .await;
        // The server is reachable only inside the pod's namespace, once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match w.runtime.port_forward(&sandbox, 8080).await {
                Ok(stream) => break stream,
                Err(RuntimeError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("port-forward: {e}"),
            }
        };
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.") && response.contains(" 200 "), "{response}");
        assert!(response.ends_with("hello from the pod\n"), "{response}");

        // Nothing listens on another port: refused, with the OS's reason.
        match w.runtime.port_forward(&sandbox, 8081).await {
            Err(RuntimeError::Unavailable(message)) => {
                assert!(message.contains("refused"), "{message}")
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
        }
        assert!(matches!(
            w.runtime.port_forward(&"0".repeat(64), 8080).await,
            Err(e) if e.is_not_found()
        ));
        w.runtime.stop_container(&server, Duration::ZERO).await.unwrap();
        w.runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        assert!(matches!(
            w.runtime.port_forward(&sandbox, 8080).await,
            Err(RuntimeError::FailedPrecondition(_))
        ));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn stats_show_the_memory_and_cpu_of_a_running_container_and_zero_once_stopped() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("stats").await;
        let (sandbox, config) = w.sandbox("stats").await;
        // Keeps about 8 MiB in a shell variable and burns a little CPU.
        let id = w
            .run(
                &sandbox,
                &config,
                sh(
                    "busy",
                    "x=$(dd if=/dev/zero bs=1M count=8 2>/dev/null | tr '\\0' a); i=0; \
                     while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000",
                ),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let stats = loop {
            let stats = w.runtime.container_stats(&id).await.unwrap();
            if stats.memory_working_set_bytes > 1 << 20 && stats.cpu_usage_core_nanoseconds > 0 {
                break stats;
            }
            assert!(Instant::now() < deadline, "no usage: {stats:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(stats.container_id, id);
        assert!(stats.memory_usage_bytes >= stats.memory_working_set_bytes);
        assert_eq!(stats.cpu_usage_nano_cores, None);

        w.runtime.stop_container(&id, Duration::ZERO).await.unwrap();
        let stopped = w.runtime.container_stats(&id).await.unwrap();
        assert_eq!(
            (
                stopped.cpu_usage_core_nanoseconds,
                stopped.memory_working_set_bytes,
                stopped.memory_usage_bytes
            ),
            (0, 0, 0)
        );
        assert!(w
            .runtime
            .container_stats(&"0".repeat(64))
            .await
            .unwrap_err()
            .is_not_found());
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}
