//! Tests of containers running their own command line as their main process
//! (`FakeRuntimeBuilder::run_commands`), and of the shell, `date` and `httpd` built-ins
//! that such command lines use.
//!
//! Sleeping with a [`FakeClock`]: `sleep N` waits until the clock has moved `N` on from
//! when the sleep began, so a test advances the clock only after it saw what the process
//! did before sleeping (the helpers below wait for log lines and exits by yielding to the
//! process's task).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::clock::FakeClock;
use crate::streaming::{AttachRequest, StdioOptions};

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

/// A runtime (running commands if `run_commands`) serving `behaviour` as image `app`, with a
/// sandbox and a started container made from `config`; returns the runtime, the sandbox and
/// the container.
async fn start_with(
    clock: &FakeClock,
    run_commands: bool,
    behaviour: ImageBehaviour,
    config: ContainerConfig,
) -> (FakeRuntime, String, String) {
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .run_commands(run_commands)
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

async fn start(
    clock: &FakeClock,
    behaviour: ImageBehaviour,
    config: ContainerConfig,
) -> (FakeRuntime, String, String) {
    start_with(clock, true, behaviour, config).await
}

fn sh(script: &str) -> ContainerConfig {
    ContainerConfig::new("main", "app").command(["sh", "-c", script])
}

async fn logs(runtime: &FakeRuntime, id: &str) -> Vec<LogEntry> {
    let stream = runtime.container_logs(id, LogOptions::all()).await.unwrap();
    futures::StreamExt::collect::<Vec<_>>(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn texts(lines: &[LogEntry]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
}

/// Waits until the container's log has at least `n` lines; returns them.
async fn until_lines(runtime: &FakeRuntime, id: &str, n: usize) -> Vec<LogEntry> {
    loop {
        let lines = logs(runtime, id).await;
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the container exited; returns its status.
async fn until_exited(runtime: &FakeRuntime, id: &str) -> ContainerStatus {
    loop {
        let status = runtime.container_status(id).await.unwrap();
        if status.state == ContainerState::Exited {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends one HTTP/1.1 request on `conn` and reads the response (head and
/// `Content-Length` body).
async fn get(conn: &mut crate::streaming::DuplexStream, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buffered = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    while buffered.len() < head_end + length {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in a body");
        buffered.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffered[head_end..head_end + length]).into_owned();
    (head, body)
}

#[tokio::test]
async fn a_command_line_writes_the_log_and_its_exit_code_ends_the_container() {
    within(async {
        let clock = FakeClock::new();
        let started = clock.now();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            sh("echo hello; echo oops >&2; exit 3"),
        )
        .await;
        let status = until_exited(&runtime, &id).await;
        assert_eq!(status.exit_code, Some(3));
        assert_eq!(status.reason, "Error");
        assert_eq!(status.finished_at, Some(started));
        let lines = logs(&runtime, &id).await;
        assert_eq!(texts(&lines), vec!["hello", "oops"]);
        assert_eq!(lines[0].stream, OutputStream::Stdout);
        assert_eq!(lines[1].stream, OutputStream::Stderr);
        assert!(lines.iter().all(|l| l.timestamp == started));
    })
    .await;
}

#[tokio::test]
async fn a_loop_writes_one_line_per_second_of_the_fake_clock() {
    within(async {
        let clock = FakeClock::new();
        let started = clock.now();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            sh("while true; do echo tick; sleep 1; done"),
        )
        .await;
        for n in 1..=3 {
            let lines = until_lines(&runtime, &id, n).await;
            assert_eq!(lines.len(), n, "no line before the clock moves");
            let last = lines.last().unwrap();
            assert_eq!(last.line, Bytes::from("tick"));
            assert_eq!(last.timestamp, started + (n as u32 - 1) * SECOND);
            clock.advance(SECOND);
        }
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(status.state, ContainerState::Running);
    })
    .await;
}

#[tokio::test]
async fn the_kubernetes_counter_example_counts_with_dates_and_arithmetic() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            ContainerConfig::new("count", "app")
                .command(["/bin/sh", "-c"])
                .args([r#"i=0; while true; do echo "$i: $(date)"; i=$((i+1)); sleep 1; done"#]),
        )
        .await;
        until_lines(&runtime, &id, 1).await;
        clock.advance(SECOND);
        let lines = until_lines(&runtime, &id, 2).await;
        assert_eq!(
            texts(&lines),
            vec![
                "0: Mon Jan  1 00:00:00 UTC 2024",
                "1: Mon Jan  1 00:00:01 UTC 2024"
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn the_shell_runs_for_if_break_continue_and_substitutions() {
    within(async {
        let clock = FakeClock::new();
        let script = r#"
            for x in a b c; do
              if [ "$x" = b ]; then continue; fi
              echo "item $x"
            done
            n=0
            until [ $n -ge 10 ]; do
              n=$((n + 1))
              if [ $n -eq 3 ]; then break; else echo "n=$n"; fi
            done
            words="one two  three"
            for w in $words; do echo "[$w]"; done
            echo "host: $(hostname), ${MISSING:-fallback}, ${#words}"
            ! false && echo negated
            (exit 4) || echo "subshell said $?"
            trap 'echo bye' TERM
            exit $((6 * 7))
        "#;
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), sh(script)).await;
        let status = until_exited(&runtime, &id).await;
        assert_eq!(
            texts(&logs(&runtime, &id).await),
            vec![
                "item a",
                "item c",
                "n=1",
                "n=2",
                "[one]",
                "[two]",
                "[three]",
                "host: web, fallback, 14",
                "negated",
                "subshell said 4",
            ]
        );
        assert_eq!(status.exit_code, Some(42));
    })
    .await;
}

#[tokio::test]
async fn the_shell_reads_lines_pipes_loops_and_keeps_quoted_substitutions_whole() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new().file("/data/names", "ann\nbob cat\n");
        let (runtime, _, id) = start_with(
            &clock,
            false,
            behaviour,
            ContainerConfig::new("main", "app"),
        )
        .await;
        let script = r#"
            while read first rest; do echo "first=$first rest=$rest"; done < /data/names
            for i in 1 2 3; do echo $i; done | cat
            y='a   b'; x="$(echo "$y")"; echo "$x" $x
            if [ -f /data/names ] && [ ! -d /data/names ]; then echo file; fi
            echo $(( (1 + 2) * 3 )) "a"'b'c
            set -- p q; for arg; do echo "arg $arg"; done; echo "$# $@"
        "#;
        let response = runtime
            .exec_sync(ExecRequest::new(&id, ["sh", "-c", script]))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&response.stdout),
            "first=ann rest=\nfirst=bob rest=cat\n1\n2\n3\na   b a b\nfile\n9 abc\n\
             arg p\narg q\n2 p q\n"
        );
        assert_eq!(response.exit_code, 0);
    })
    .await;
}

#[tokio::test]
async fn the_command_gets_the_containers_environment_and_working_directory() {
    within(async {
        let clock = FakeClock::new();
        let mut config = sh("echo $GREETING from $(pwd); sleep 0.5; echo done");
        config.envs = vec![KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }];
        config.working_dir = "/tmp".into();
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        until_lines(&runtime, &id, 1).await;
        clock.advance(Duration::from_millis(500));
        let status = until_exited(&runtime, &id).await;
        assert_eq!(status.exit_code, Some(0));
        assert_eq!(status.reason, "Completed");
        assert_eq!(
            texts(&logs(&runtime, &id).await),
            vec!["hello from /tmp", "done"]
        );
    })
    .await;
}

#[tokio::test]
async fn output_merged_with_2_and_1_reaches_the_log_as_it_is_written() {
    within(async {
        let clock = FakeClock::new();
        let script = "{ echo one; echo two >&2; sleep 1; echo three; } 2>&1";
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), sh(script)).await;
        let lines = until_lines(&runtime, &id, 2).await;
        assert_eq!(texts(&lines), vec!["one", "two"]);
        assert!(lines.iter().all(|l| l.stream == OutputStream::Stdout));
        clock.advance(SECOND);
        until_exited(&runtime, &id).await;
        assert_eq!(
            texts(&logs(&runtime, &id).await),
            vec!["one", "two", "three"]
        );
    })
    .await;
}

#[tokio::test]
async fn an_image_entrypoint_runs_with_the_containers_args() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new().entrypoint(["echo", "entry"]);
        let config = ContainerConfig::new("main", "app").args(["with", "args"]);
        let (runtime, _, id) = start(&clock, behaviour, config).await;
        assert_eq!(until_exited(&runtime, &id).await.exit_code, Some(0));
        assert_eq!(texts(&logs(&runtime, &id).await), vec!["entry with args"]);
    })
    .await;
}

#[tokio::test]
async fn stopping_kills_the_command_with_sigterm_or_sigkill() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), sh("sleep infinity")).await;
        runtime.stop_container(&id, 30 * SECOND).await.unwrap();
        let status = until_exited(&runtime, &id).await;
        assert_eq!(status.exit_code, Some(143));

        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), sh("sleep infinity")).await;
        runtime.stop_container(&id, Duration::ZERO).await.unwrap();
        assert_eq!(until_exited(&runtime, &id).await.exit_code, Some(137));

        let behaviour = ImageBehaviour::new().term_exit_code(2);
        let (runtime, _, id) = start(&clock, behaviour, sh("sleep infinity")).await;
        runtime.stop_container(&id, SECOND).await.unwrap();
        assert_eq!(until_exited(&runtime, &id).await.exit_code, Some(2));
    })
    .await;
}

#[tokio::test]
async fn attached_stdin_reaches_a_cat_main_process() {
    within(async {
        let clock = FakeClock::new();
        let mut config = ContainerConfig::new("main", "app").command(["cat"]);
        config.stdin = true;
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        let io = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio: StdioOptions {
                    stdin: true,
                    ..StdioOptions::output()
                },
            })
            .await
            .unwrap();
        let (mut stdin, mut stdout) = (io.stdin.unwrap(), io.stdout.unwrap());
        stdin.write_all(b"hello cat\n").await.unwrap();
        let mut line = vec![0u8; 10];
        stdout.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"hello cat\n");
        assert_eq!(texts(&logs(&runtime, &id).await), vec!["hello cat"]);
        // Closing one session's stdin does not end the process's input.
        drop(stdin);
        runtime.stop_container(&id, SECOND).await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 143);
    })
    .await;
}

#[tokio::test]
async fn an_interactive_shell_on_a_terminal_shows_its_prompt_to_attached_sessions() {
    within(async {
        let clock = FakeClock::new();
        let mut config = ContainerConfig::new("main", "app").command(["sh"]);
        config.stdin = true;
        config.tty = true;
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        // Attached before the shell ran (the test's runtime has one thread): the first prompt
        // is seen as written, before any newline.
        let io = runtime
            .attach(AttachRequest {
                container_id: id.clone(),
                stdio: StdioOptions {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                    tty: true,
                },
            })
            .await
            .unwrap();
        let (mut stdin, mut stdout) = (io.stdin.unwrap(), io.stdout.unwrap());
        stdin.write_all(b"echo hi\r").await.unwrap();
        let expected = b"/ # echo hi\r\nhi\r\n/ # ";
        let mut seen = vec![0u8; expected.len()];
        stdout.read_exact(&mut seen).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen),
            String::from_utf8_lossy(expected)
        );
        stdin.write_all(b"exit 5\r").await.unwrap();
        assert_eq!(io.exit.await.unwrap(), 5);
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"exit 5\r\n");
        assert_eq!(
            texts(&logs(&runtime, &id).await),
            vec!["/ # echo hi", "hi", "/ # exit 5"]
        );
    })
    .await;
}

#[tokio::test]
async fn httpd_serves_the_files_of_the_container_until_it_stops() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .file("/www/index.html", "<h1>hi</h1>\n")
            .file("/www/data/a.txt", "text\n");
        let config =
            ContainerConfig::new("web", "app").command(["httpd", "-f", "-p", "8080", "-h", "/www"]);
        let (runtime, sandbox, id) = start(&clock, behaviour, config).await;
        // The port opens once the process runs.
        let mut conn = loop {
            match runtime.port_forward(&sandbox, 8080).await {
                Ok(conn) => break conn,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        let (head, body) = get(&mut conn, "/").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/html\r\n"), "{head}");
        assert_eq!(body, "<h1>hi</h1>\n");
        // Keep-alive: more requests on the same connection.
        let (head, body) = get(&mut conn, "/data/a.txt").await;
        assert!(head.contains("Content-Type: text/plain"), "{head}");
        assert_eq!(body, "text\n");
        let (head, body) = get(&mut conn, "/missing").await;
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(body.contains("404 Not Found"));
        // Another process cannot take the port.
        let taken = runtime
            .exec_sync(ExecRequest::new(&id, ["httpd", "-p", "8080"]))
            .await
            .unwrap();
        assert_eq!(taken.exit_code, 1);
        assert_eq!(&taken.stderr[..], b"httpd: bind: Address already in use\n");

        runtime.stop_container(&id, SECOND).await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let refused = runtime.port_forward(&sandbox, 8080).await.err().unwrap();
        assert!(
            refused.to_string().contains("connection refused"),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn nc_with_cat_is_an_echo_server() {
    within(async {
        let clock = FakeClock::new();
        let config =
            ContainerConfig::new("echo", "app").command(["nc", "-lk", "-p", "7000", "-e", "cat"]);
        let (runtime, sandbox, _) = start(&clock, ImageBehaviour::new(), config).await;
        let mut conn = loop {
            match runtime.port_forward(&sandbox, 7000).await {
                Ok(conn) => break conn,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        conn.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_command_fails_to_start_with_runcs_message() {
    within(async {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .run_commands(true)
            .image("app", ImageBehaviour::new())
            .build();
        let sandbox = runtime.run_pod_sandbox(pod("p")).await.unwrap();
        runtime.pull_image(&ImageSpec::new("app")).await.unwrap();
        let config = ContainerConfig::new("main", "app").command(["nginx"]);
        let id = runtime
            .create_container(&sandbox, config, &pod("p"))
            .await
            .unwrap();
        let err = runtime.start_container(&id).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("exec: \"nginx\": executable file not found in $PATH"),
            "{err}"
        );
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(
            (status.state, status.exit_code, status.reason.as_str()),
            (ContainerState::Exited, Some(128), "StartError")
        );
    })
    .await;
}

#[tokio::test]
async fn commands_do_not_run_when_switched_off_or_scripted_by_the_image() {
    within(async {
        let clock = FakeClock::new();
        let script = "echo hello; exit 3";
        let (runtime, _, id) = start_with(&clock, false, ImageBehaviour::new(), sh(script)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(logs(&runtime, &id).await.is_empty());
        assert_eq!(
            runtime.container_status(&id).await.unwrap().state,
            ContainerState::Running
        );
        // A scripted image keeps its script even with the switch on.
        let behaviour = ImageBehaviour::new().log_line(Duration::ZERO, "scripted");
        let (runtime, _, id) = start(&clock, behaviour, sh(script)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(texts(&logs(&runtime, &id).await), vec!["scripted"]);
        assert_eq!(
            runtime.container_status(&id).await.unwrap().state,
            ContainerState::Running
        );
        // No command and no entrypoint: quiet as before.
        let config = ContainerConfig::new("main", "app");
        let (runtime, _, id) = start(&clock, ImageBehaviour::new(), config).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(logs(&runtime, &id).await.is_empty());
        assert!(ImageBehaviour::new()
            .ignore_command()
            .scripts_main_process());
    })
    .await;
}

#[tokio::test]
async fn a_start_delay_holds_the_command_until_the_container_runs() {
    within(async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new().start_delay(2 * SECOND);
        let (runtime, _, id) = start(&clock, behaviour, sh("echo up")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(logs(&runtime, &id).await.is_empty());
        clock.advance(2 * SECOND);
        let status = until_exited(&runtime, &id).await;
        assert_eq!(status.exit_code, Some(0));
        assert_eq!(
            logs(&runtime, &id).await[0].timestamp,
            SystemTime::UNIX_EPOCH + FakeClock::DEFAULT_START + 2 * SECOND
        );
    })
    .await;
}

#[tokio::test]
async fn following_the_log_sees_the_lines_as_the_command_writes_them() {
    within(async {
        let clock = FakeClock::new();
        let (runtime, _, id) = start(
            &clock,
            ImageBehaviour::new(),
            sh("echo one; sleep 1; echo two"),
        )
        .await;
        let mut follow = runtime
            .container_logs(
                &id,
                LogOptions {
                    follow: true,
                    ..LogOptions::all()
                },
            )
            .await
            .unwrap();
        let first = futures::StreamExt::next(&mut follow)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.line, Bytes::from("one"));
        clock.advance(SECOND);
        let second = futures::StreamExt::next(&mut follow)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.line, Bytes::from("two"));
        assert!(futures::StreamExt::next(&mut follow).await.is_none());
    })
    .await;
}

#[test]
fn date_formats_the_clock_like_busybox() {
    use super::builtins::format_date;
    let start = FakeClock::DEFAULT_START.as_secs() as i64;
    assert_eq!(
        format_date(start, "%a %b %e %H:%M:%S %Z %Y"),
        "Mon Jan  1 00:00:00 UTC 2024"
    );
    // 2024-02-29T13:05:09Z, a leap day.
    let leap = start + (31 + 28) * 86_400 + 13 * 3600 + 5 * 60 + 9;
    assert_eq!(
        format_date(leap, "%F %T %j %s"),
        format!("2024-02-29 13:05:09 060 {leap}")
    );
    assert_eq!(format_date(0, "%A %d %B %y"), "Thursday 01 January 70");
}
