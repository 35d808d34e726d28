//! Tests of the fake runtime's streaming features: exec, the file view and mounts, `tar` for
//! `kubectl cp`, attach, port forwarding and stats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::clock::FakeClock;
use crate::streaming::{AttachRequest, StdioOptions, StreamingExecRequest, TerminalSize};

const SECOND: Duration = Duration::from_secs(1);

/// Runs `body` with a 10 s limit.
async fn within<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("finished in time")
}

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig::new(PodSandboxMetadata::new(
        name,
        "default",
        format!("uid-{name}"),
    ))
}

/// A runtime with `behaviour` as image `app`, and a running container of it made from
/// `config` (its image set to `app`); returns the runtime, the sandbox and the container.
async fn start(
    clock: &FakeClock,
    behaviour: ImageBehaviour,
    config: ContainerConfig,
) -> (FakeRuntime, String, String) {
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("app", behaviour)
        .build();
    let sandbox_config = pod("web");
    let sandbox = runtime
        .run_pod_sandbox(sandbox_config.clone())
        .await
        .unwrap();
    runtime.pull_image(&ImageSpec::new("app")).await.unwrap();
    let mut config = config;
    config.image = ImageSpec::new("app");
    let id = runtime
        .create_container(&sandbox, config, &sandbox_config)
        .await
        .unwrap();
    runtime.start_container(&id).await.unwrap();
    (runtime, sandbox, id)
}

async fn read_all(reader: Option<impl AsyncRead + Unpin>) -> String {
    let mut out = Vec::new();
    if let Some(mut reader) = reader {
        reader.read_to_end(&mut out).await.unwrap();
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn request(id: &str, cmd: &[&str], stdio: StdioOptions) -> StreamingExecRequest {
    StreamingExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdio,
    }
}

/// Execs `cmd` with stdout and stderr; returns the exit code, stdout and stderr.
async fn exec(runtime: &FakeRuntime, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let io = runtime
        .exec(request(id, cmd, StdioOptions::output()))
        .await
        .unwrap();
    let (out, err, code) = tokio::join!(read_all(io.stdout), read_all(io.stderr), io.exit);
    (code.unwrap(), out, err)
}

/// Execs `cmd` with `input` on stdin.
async fn exec_with_input(
    runtime: &FakeRuntime,
    id: &str,
    cmd: &[&str],
    input: &[u8],
) -> (i32, Vec<u8>, String) {
    let stdio = StdioOptions {
        stdin: true,
        ..StdioOptions::output()
    };
    let io = runtime.exec(request(id, cmd, stdio)).await.unwrap();
    let mut stdin = io.stdin.unwrap();
    let input = input.to_vec();
    let write = async move {
        stdin.write_all(&input).await.unwrap();
        stdin.shutdown().await.unwrap();
    };
    let read_out = async move {
        let mut out = Vec::new();
        io.stdout.unwrap().read_to_end(&mut out).await.unwrap();
        out
    };
    let (_, out, err, code) = tokio::join!(write, read_out, read_all(io.stderr), io.exit);
    (code.unwrap(), out, err)
}

#[tokio::test]
async fn exec_streams_echo_and_cat_reads_stdin_until_end_of_file() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        assert_eq!(
            exec(&runtime, &id, &["echo", "-n", "a", "b"]).await,
            (0, "a b".into(), String::new())
        );
        let (code, out, _) =
            exec_with_input(&runtime, &id, &["cat"], b"line one\nline two\n").await;
        assert_eq!((code, out), (0, b"line one\nline two\n".to_vec()));
        assert_eq!(runtime.metrics().execs, 2);
    })
    .await;
}

#[tokio::test]
async fn exit_codes_come_from_the_command_and_unknown_commands_exit_127() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        assert_eq!(exec(&runtime, &id, &["false"]).await.0, 1);
        assert_eq!(
            exec(
                &runtime,
                &id,
                &["sh", "-c", "echo out; echo err >&2; exit 3"]
            )
            .await,
            (3, "out\n".into(), "err\n".into())
        );
        let (code, _, err) = exec(&runtime, &id, &["nope", "x"]).await;
        assert_eq!(code, 127);
        assert!(
            err.contains("exec: \"nope\": executable file not found in $PATH"),
            "{err}"
        );
        assert_eq!(
            exec(&runtime, &id, &["sh", "-c", "nope"]).await,
            (127, String::new(), "sh: nope: not found\n".into())
        );
        let (code, _, err) = exec(&runtime, &id, &["cat", "/missing"]).await;
        assert_eq!(
            (code, err.as_str()),
            (1, "cat: can't open '/missing': No such file or directory\n")
        );
    })
    .await;
}

#[tokio::test]
async fn the_shell_runs_lists_pipes_redirections_and_variables() {
    within(async {
        let clock = FakeClock::new();
        let config = ContainerConfig::new("c", "app").env("GREETING", "hello");
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        let script = "echo $GREETING world > /tmp/out; cat /tmp/out | cat; \
                      false && echo skipped || echo fallback; X=1; echo \"x=$X status=$?\"; \
                      cd /tmp && pwd; ls /nope 2>/dev/null; echo ls=$?";
        assert_eq!(
            exec(&runtime, &id, &["sh", "-c", script]).await,
            (
                0,
                "hello world\nfallback\nx=1 status=0\n/tmp\nls=1\n".into(),
                String::new()
            )
        );
        assert_eq!(
            runtime.read_file(&id, "/tmp/out").unwrap(),
            Bytes::from("hello world\n")
        );
        let (code, out, _) = exec(&runtime, &id, &["env"]).await;
        assert_eq!(code, 0);
        assert!(
            out.contains("GREETING=hello\n") && out.contains("HOSTNAME=web\n"),
            "{out}"
        );
        assert_eq!(exec(&runtime, &id, &["hostname"]).await.1, "web\n");
        assert_eq!(
            exec(&runtime, &id, &["printenv", "GREETING"]).await.1,
            "hello\n"
        );
        assert_eq!(
            exec(&runtime, &id, &["sh", "-c", "echo 'unterminated"])
                .await
                .0,
            2
        );
    })
    .await;
}

#[tokio::test]
async fn a_terminal_merges_stderr_into_stdout_and_takes_resizes() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        let err = runtime
            .exec(request(
                &id,
                &["sh"],
                StdioOptions {
                    tty: true,
                    ..StdioOptions::output()
                },
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)));
        let stdio = StdioOptions {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let io = runtime.exec(request(&id, &["sh"], stdio)).await.unwrap();
        assert!(io.stderr.is_none());
        let resize = io.resize.unwrap();
        resize
            .send(TerminalSize {
                width: 80,
                height: 24,
            })
            .await
            .unwrap();
        let mut stdin = io.stdin.unwrap();
        stdin
            .write_all(b"stty size\recho oops >&2\rexit 5\r")
            .await
            .unwrap();
        let (out, code) = tokio::join!(read_all(io.stdout), io.exit);
        assert_eq!(code.unwrap(), 5);
        assert_eq!(
            out,
            "/ # stty size\r\n24 80\r\n/ # echo oops >&2\r\noops\r\n/ # exit 5\r\n"
        );
        // Without a terminal, `stty` fails.
        assert_eq!(exec(&runtime, &id, &["stty", "size"]).await.0, 1);
    })
    .await;
}

#[tokio::test]
async fn a_streaming_handler_gets_argv_env_files_and_stdin_end_of_file() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .file("/app/config", "mode=fast")
            .exec_stream("wc-bytes", |mut p: FakeProcess| async move {
                let input = p.read_stdin().await.unwrap();
                let config = p.files.read("/app/config").unwrap();
                let line = format!(
                    "{} {} {} {}\n",
                    p.argv[1..].join(","),
                    p.getenv("MODE").unwrap_or("-"),
                    String::from_utf8_lossy(&config),
                    input.len()
                );
                p.print(line).await.unwrap();
                p.files.write("/app/seen", input).unwrap();
                7
            });
        let config = ContainerConfig::new("c", "app").env("MODE", "test");
        let (runtime, _, id) = start(&clock, behaviour, config).await;
        let (code, out, _) =
            exec_with_input(&runtime, &id, &["wc-bytes", "a", "b"], b"12345").await;
        assert_eq!((code, out), (7, b"a,b test mode=fast 5\n".to_vec()));
        assert_eq!(
            runtime.read_file(&id, "/app/seen").unwrap(),
            Bytes::from("12345")
        );
        // exec_sync runs it too, with no stdin; and so does `sh -c`.
        let out = runtime
            .exec_sync(ExecRequest::new(&id, ["wc-bytes", "x"]))
            .await
            .unwrap();
        assert_eq!(
            (out.exit_code, out.stdout),
            (7, Bytes::from("x test mode=fast 0\n"))
        );
        assert_eq!(
            exec(&runtime, &id, &["sh", "-c", "wc-bytes y; echo $?"])
                .await
                .1,
            "y test mode=fast 0\n7\n"
        );
    })
    .await;
}

#[tokio::test]
async fn dropping_the_session_kills_the_process_and_a_stopped_container_kills_execs() {
    within(async {
        let clock = FakeClock::new();
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let killed = Arc::new(AtomicBool::new(false));
        let seen = killed.clone();
        let behaviour = ImageBehaviour::new().exec_stream("server", move |_p: FakeProcess| {
            let flag = Flag(seen.clone());
            async move {
                let _flag = flag;
                futures::future::pending::<i32>().await
            }
        });
        let (runtime, _, id) = start(&clock, behaviour, ContainerConfig::new("c", "app")).await;
        let io = runtime
            .exec(request(&id, &["server"], StdioOptions::output()))
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert!(!killed.load(Ordering::SeqCst));
        drop(io);
        while !killed.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        // A long `sleep` is killed (137) when the container stops.
        let io = runtime
            .exec(request(&id, &["sleep", "3600"], StdioOptions::output()))
            .await
            .unwrap();
        clock.advance(SECOND);
        runtime.stop_container(&id, 10 * SECOND).await.unwrap();
        assert_eq!(io.exit.await.unwrap(), SIGKILL_EXIT_CODE);
    })
    .await;
}

#[tokio::test]
async fn sleep_follows_the_fake_clock() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        let io = runtime
            .exec(request(
                &id,
                &["sh", "-c", "sleep 5; echo woke"],
                StdioOptions::output(),
            ))
            .await
            .unwrap();
        let mut stdout = io.stdout.unwrap();
        let mut exit = io.exit;
        // Let the process reach its sleep (the test runtime has one thread).
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        clock.advance(4 * SECOND);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(futures::poll!(&mut exit).is_pending());
        clock.advance(SECOND);
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        assert_eq!((out.as_str(), exit.await.unwrap()), ("woke\n", 0));
        // exec_sync times out on the same clock.
        let clock2 = clock.clone();
        let sync = runtime.exec_sync(ExecRequest::new(&id, ["sleep", "10"]).timeout(2 * SECOND));
        let advance = async move {
            for _ in 0..100 {
                tokio::task::yield_now().await;
                clock2.advance(SECOND);
            }
        };
        let (result, ()) = tokio::join!(sync, advance);
        assert_eq!(result.unwrap_err(), RuntimeError::Timeout(2 * SECOND));
    })
    .await;
}

#[tokio::test]
async fn exec_sync_runs_built_in_commands_against_the_files() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        let run = |cmd: &'static [&'static str]| {
            runtime.exec_sync(ExecRequest::new(&id, cmd.iter().copied()))
        };
        assert_eq!(run(&["cat", "/tmp/healthy"]).await.unwrap().exit_code, 1);
        assert_eq!(run(&["touch", "/tmp/healthy"]).await.unwrap().exit_code, 0);
        assert_eq!(run(&["cat", "/tmp/healthy"]).await.unwrap().exit_code, 0);
        assert_eq!(
            run(&["mkdir", "-p", "/data/a/b"]).await.unwrap().exit_code,
            0
        );
        assert_eq!(
            run(&["ls", "/data"]).await.unwrap().stdout,
            Bytes::from("a\n")
        );
        let out = run(&["rm", "/data"]).await.unwrap();
        assert_eq!(
            (out.exit_code, out.stderr),
            (1, Bytes::from("rm: '/data' is a directory\n"))
        );
        assert_eq!(
            run(&["rm", "-rf", "/data", "/tmp/healthy"])
                .await
                .unwrap()
                .exit_code,
            0
        );
        assert_eq!(run(&["test", "-e", "/data"]).await.unwrap().exit_code, 1);
    })
    .await;
}

fn archive(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = ::tar::Builder::new(Vec::new());
    for (name, data, mode) in entries {
        let mut header = ::tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(::tar::EntryType::Regular);
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn unarchive(bytes: &[u8]) -> Vec<(String, Vec<u8>, u32)> {
    use std::io::Read as _;
    let mut archive = ::tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data, mode)
        })
        .collect()
}

#[tokio::test]
async fn tar_copies_in_and_out_as_kubectl_cp_does() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("c", "app"),
        )
        .await;
        // kubectl cp ./dir POD:/dst: `test -d /dst` fails, so it extracts into `/` as `dst`.
        assert_eq!(exec(&runtime, &id, &["test", "-d", "/dst"]).await.0, 1);
        let input = archive(&[
            ("dst/a.txt", b"alpha\n", 0o644),
            ("dst/sub/run.sh", b"#!/bin/sh\n", 0o755),
        ]);
        let (code, out, err) =
            exec_with_input(&runtime, &id, &["tar", "-xmf", "-", "-C", "/"], &input).await;
        assert_eq!((code, out, err), (0, Vec::new(), String::new()));
        assert_eq!(exec(&runtime, &id, &["test", "-d", "/dst"]).await.0, 0);
        assert_eq!(
            runtime.read_file(&id, "/dst/a.txt").unwrap(),
            Bytes::from("alpha\n")
        );
        // The old-style form, into an existing directory.
        let more = archive(&[("b.txt", b"beta", 0o600)]);
        let cmd = ["tar", "xmf", "-", "-C", "/dst/sub"];
        assert_eq!(exec_with_input(&runtime, &id, &cmd, &more).await.0, 0);
        // kubectl cp POD:/dst ./out: `tar cf - /dst`.
        let io = runtime
            .exec(request(
                &id,
                &["tar", "cf", "-", "/dst"],
                StdioOptions::output(),
            ))
            .await
            .unwrap();
        let read_out = async {
            let mut out = Vec::new();
            io.stdout.unwrap().read_to_end(&mut out).await.unwrap();
            out
        };
        let (packed, err, code) = tokio::join!(read_out, read_all(io.stderr), io.exit);
        assert_eq!(code.unwrap(), 0);
        assert_eq!(err, "tar: removing leading '/' from member names\n");
        let entries = unarchive(&packed);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "dst/",
                "dst/a.txt",
                "dst/sub/",
                "dst/sub/b.txt",
                "dst/sub/run.sh"
            ]
        );
        assert_eq!(entries[1].1, b"alpha\n");
        assert_eq!(
            (entries[3].1.as_slice(), entries[3].2),
            (&b"beta"[..], 0o600)
        );
        assert_eq!(entries[4].2, 0o755);
        // A relative path under -C keeps its name; a missing one is an error.
        let (code, _, err) = exec(&runtime, &id, &["tar", "cf", "-", "-C", "/dst", "nope"]).await;
        assert_eq!(
            (code, err.as_str()),
            (1, "tar: nope: No such file or directory\n")
        );
    })
    .await;
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "capstan-fake-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn mounts_read_and_write_the_host_and_read_only_mounts_refuse_writes() {
    within(async {
        let clock = FakeClock::new();
        let secrets = temp_dir("token");
        std::fs::write(secrets.join("token"), "eyJ.token").unwrap();
        let data = temp_dir("data");
        let mut token_mount = Mount::new(
            secrets.to_string_lossy(),
            "/var/run/secrets/kubernetes.io/serviceaccount",
        );
        token_mount.readonly = true;
        let config = ContainerConfig::new("c", "app")
            .mount(token_mount)
            .mount(Mount::new(data.to_string_lossy(), "/data"));
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        assert_eq!(
            exec(
                &runtime,
                &id,
                &["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"]
            )
            .await,
            (0, "eyJ.token".into(), String::new())
        );
        assert_eq!(
            exec(&runtime, &id, &["ls", "/var/run/secrets/kubernetes.io"])
                .await
                .1,
            "serviceaccount\n"
        );
        // The kubelet rotates the token on the host: the container sees the new one.
        std::fs::write(secrets.join("token"), "eyJ.rotated").unwrap();
        assert_eq!(
            runtime
                .read_file(&id, "/var/run/secrets/kubernetes.io/serviceaccount/token")
                .unwrap(),
            Bytes::from("eyJ.rotated")
        );
        let (code, _, err) = exec(
            &runtime,
            &id,
            &[
                "sh",
                "-c",
                "echo x > /var/run/secrets/kubernetes.io/serviceaccount/token",
            ],
        )
        .await;
        assert_eq!(code, 1);
        assert!(err.contains("Read-only file system"), "{err}");
        let err = runtime
            .write_file(
                &id,
                "/var/run/secrets/kubernetes.io/serviceaccount/new",
                "x",
            )
            .unwrap_err();
        assert!(matches!(err, RuntimeError::FailedPrecondition(ref m) if m.contains("Read-only")));
        // A read-write mount writes through to the host, and back.
        assert_eq!(
            exec(
                &runtime,
                &id,
                &["sh", "-c", "mkdir -p /data/logs && echo hi > /data/logs/a"]
            )
            .await
            .0,
            0
        );
        assert_eq!(
            std::fs::read_to_string(data.join("logs/a")).unwrap(),
            "hi\n"
        );
        std::fs::write(data.join("from-host"), "h").unwrap();
        assert_eq!(
            runtime.read_file(&id, "/data/from-host").unwrap(),
            Bytes::from("h")
        );
        assert!(matches!(
            runtime.read_file(&id, "/data/missing"),
            Err(RuntimeError::NotFound { kind: "file", .. })
        ));
        let _ = std::fs::remove_dir_all(&secrets);
        let _ = std::fs::remove_dir_all(&data);
    })
    .await;
}

#[tokio::test]
async fn attach_sees_new_log_lines_and_echoes_stdin_into_the_log() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .log_line(Duration::ZERO, "before")
            .log_line(5 * SECOND, "later");
        let mut config = ContainerConfig::new("c", "app");
        config.stdin = true;
        let (runtime, _, id) = start(&clock, behaviour, config).await;
        let stdio = StdioOptions {
            stdin: true,
            ..StdioOptions::output()
        };
        let io = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio,
            })
            .await
            .unwrap();
        let mut stdout = io.stdout.unwrap();
        let mut stdin = io.stdin.unwrap();
        clock.advance(5 * SECOND);
        let mut line = vec![0u8; 6];
        stdout.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"later\n");
        stdin.write_all(b"hello\n").await.unwrap();
        stdout.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"hello\n");
        let logged: Vec<Bytes> = futures::StreamExt::collect::<Vec<_>>(
            runtime
                .container_logs(&id, LogOptions::all())
                .await
                .unwrap(),
        )
        .await
        .into_iter()
        .map(|l| l.unwrap().line)
        .collect();
        assert_eq!(
            logged,
            vec![
                Bytes::from("before"),
                Bytes::from("later"),
                Bytes::from("hello")
            ]
        );
        // The session ends with the container.
        runtime.stop_container(&id, SECOND).await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 0);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "");
    })
    .await;
}

#[tokio::test]
async fn attach_uses_the_stdin_handler_and_needs_a_running_container() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .on_stdin(|line: &[u8]| Bytes::from(String::from_utf8_lossy(line).to_uppercase()));
        let mut config = ContainerConfig::new("c", "app");
        config.stdin = true;
        let (runtime, _, id) = start(&clock, behaviour, config).await;
        let stdio = StdioOptions {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        let io = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio,
            })
            .await
            .unwrap();
        let mut stdin = io.stdin.unwrap();
        stdin.write_all(b"shout").await.unwrap();
        stdin.shutdown().await.unwrap();
        let mut got = vec![0u8; 6];
        io.stdout.unwrap().read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"SHOUT\n");
        // Removal ends the session with an error.
        runtime.remove_container(&id).await.unwrap();
        assert!(io.exit.await.unwrap_err().is_not_found());
        let err = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio,
            })
            .await
            .unwrap_err();
        assert!(err.is_not_found());
    })
    .await;
}

#[tokio::test]
async fn exec_and_attach_need_a_running_container_that_exists() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new().exit_after(SECOND, 0);
        let (runtime, _, id) = start(&clock, behaviour, ContainerConfig::new("c", "app")).await;
        clock.advance(SECOND);
        let err = runtime
            .exec(request(&id, &["true"], StdioOptions::output()))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            RuntimeError::FailedPrecondition(format!("container not running ({id})"))
        );
        let err = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio: StdioOptions::output(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::FailedPrecondition(_)));
        let err = runtime
            .exec(request("missing", &["true"], StdioOptions::output()))
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        let err = runtime
            .exec(request(&id, &[], StdioOptions::output()))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)));
        assert!(matches!(
            runtime.read_file("missing", "/etc/hostname"),
            Err(RuntimeError::NotFound {
                kind: "container",
                ..
            })
        ));
        // The files outlive the process.
        assert_eq!(
            runtime.read_file(&id, "/etc/hostname").unwrap(),
            Bytes::from("web\n")
        );
    })
    .await;
}

#[tokio::test]
async fn port_forward_reaches_echo_and_http_servers_and_refuses_closed_ports() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new().echo_port(7).http_port(8080, 200, "hello from the pod\n");
        let (runtime, sandbox, id) = start(&clock, behaviour, ContainerConfig::new("c", "app")).await;
        let mut echo = runtime.port_forward(&sandbox, 7).await.unwrap();
        echo.write_all(b"ping").await.unwrap();
        echo.shutdown().await.unwrap();
        let mut back = String::new();
        echo.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "ping");

        let mut http = runtime.port_forward(&sandbox, 8080).await.unwrap();
        let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\nhello from the pod\n";
        for _ in 0..2 {
            http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
            let mut response = vec![0u8; expected.len()];
            http.read_exact(&mut response).await.unwrap();
            assert_eq!(String::from_utf8(response).unwrap(), expected);
        }
        http.write_all(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").await.unwrap();
        let mut last = String::new();
        http.read_to_string(&mut last).await.unwrap();
        assert!(last.starts_with("HTTP/1.1 200 OK\r\n") && last.contains("Connection: close\r\n"), "{last}");

        let err = runtime.port_forward(&sandbox, 9090).await.err().unwrap();
        assert!(matches!(err, RuntimeError::Unavailable(ref m) if m.contains("connection refused")), "{err}");
        assert!(runtime.port_forward("missing", 7).await.err().unwrap().is_not_found());
        // A stopped container listens no more.
        runtime.stop_container(&id, SECOND).await.unwrap();
        assert!(matches!(runtime.port_forward(&sandbox, 7).await.err().unwrap(), RuntimeError::Unavailable(_)));
        runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        assert!(matches!(
            runtime.port_forward(&sandbox, 7).await.err().unwrap(),
            RuntimeError::FailedPrecondition(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn stats_accumulate_cpu_with_the_clock_and_follow_set_usage() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .usage(250, 64 << 20)
            .start_delay(SECOND);
        let (runtime, _, id) = start(&clock, behaviour, ContainerConfig::new("c", "app")).await;
        let stats = runtime.container_stats(&id).await.unwrap();
        assert_eq!(
            (
                stats.cpu_usage_core_nanoseconds,
                stats.memory_working_set_bytes
            ),
            (0, 0)
        );
        clock.advance(SECOND);
        clock.advance(4 * SECOND);
        let stats = runtime.container_stats(&id).await.unwrap();
        assert_eq!(stats.timestamp, clock.now());
        // 250 millicores for 4 s = 1 s of CPU.
        assert_eq!(stats.cpu_usage_core_nanoseconds, 1_000_000_000);
        assert_eq!(stats.cpu_usage_nano_cores, Some(250_000_000));
        assert_eq!(
            (stats.memory_working_set_bytes, stats.memory_usage_bytes),
            (64 << 20, 64 << 20)
        );
        runtime.set_usage(&id, 1000, 1 << 30).unwrap();
        clock.advance(2 * SECOND);
        let stats = runtime.container_stats(&id).await.unwrap();
        assert_eq!(stats.cpu_usage_core_nanoseconds, 3_000_000_000);
        assert_eq!(stats.memory_working_set_bytes, 1 << 30);
        runtime.stop_container(&id, SECOND).await.unwrap();
        let stats = runtime.container_stats(&id).await.unwrap();
        assert_eq!(
            (
                stats.cpu_usage_core_nanoseconds,
                stats.cpu_usage_nano_cores,
                stats.memory_usage_bytes
            ),
            (0, Some(0), 0)
        );
        assert!(runtime
            .container_stats("missing")
            .await
            .unwrap_err()
            .is_not_found());
        assert!(runtime
            .set_usage("missing", 1, 1)
            .unwrap_err()
            .is_not_found());
    })
    .await;
}

#[tokio::test]
async fn an_image_without_builtins_runs_only_its_scripted_commands() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .without_builtins()
            .exec("version", |_: &[String]| {
                ExecResponse::new(0).stdout("v1\n")
            });
        let (runtime, _, id) = start(&clock, behaviour, ContainerConfig::new("c", "app")).await;
        assert_eq!(
            exec(&runtime, &id, &["version"]).await,
            (0, "v1\n".into(), String::new())
        );
        let (code, _, err) = exec(&runtime, &id, &["sh", "-c", "true"]).await;
        assert_eq!(code, 127);
        assert!(
            err.contains("exec: \"sh\": executable file not found in $PATH"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn removing_the_container_ends_an_exec_with_an_error_and_a_tty_attach_uses_crlf() {
    within(async {
        let clock = FakeClock::new();
        let mut config = ContainerConfig::new("c", "app");
        config.tty = true;
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        let stdio = StdioOptions {
            stdout: true,
            tty: true,
            ..Default::default()
        };
        let attached = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio,
            })
            .await
            .unwrap();
        assert!(attached.stderr.is_none() && attached.resize.is_some());
        runtime
            .write_log(&id, OutputStream::Stderr, "warn\nmore")
            .unwrap();
        let mut got = vec![0u8; 12];
        attached.stdout.unwrap().read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"warn\r\nmore\r\n");
        let io = runtime
            .exec(request(&id, &["sleep", "infinity"], StdioOptions::output()))
            .await
            .unwrap();
        runtime.remove_container(&id).await.unwrap();
        assert!(io.exit.await.unwrap_err().is_not_found());
        assert!(attached.exit.await.unwrap_err().is_not_found());
    })
    .await;
}
