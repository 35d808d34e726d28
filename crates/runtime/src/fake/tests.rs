//! Unit tests of the fake runtime.

use super::ids::hex256;
use crate::clock::FakeClock;

use super::*;
use futures::StreamExt;

const SECOND: Duration = Duration::from_secs(1);

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig::new(PodSandboxMetadata::new(
        name,
        "default",
        format!("uid-{name}"),
    ))
    .log_directory(format!("/var/log/pods/default_{name}"))
}

async fn running(runtime: &FakeRuntime, image: &str) -> (String, String, PodSandboxConfig) {
    let config = pod("p");
    let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
    crate::ensure_image(runtime, &ImageSpec::new(image))
        .await
        .unwrap();
    let id = runtime
        .create_container(&sandbox, ContainerConfig::new("c", image), &config)
        .await
        .unwrap();
    runtime.start_container(&id).await.unwrap();
    (sandbox, id, config)
}

#[tokio::test]
async fn a_second_sandbox_with_the_same_metadata_already_exists() {
    let runtime = FakeRuntime::new();
    let first = runtime.run_pod_sandbox(pod("a")).await.unwrap();
    let err = runtime.run_pod_sandbox(pod("a")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists { ref id, .. } if *id == first));
    let mut next = pod("a");
    next.metadata.attempt = 1;
    runtime.run_pod_sandbox(next).await.unwrap();
    runtime.remove_pod_sandbox(&first).await.unwrap();
    runtime.run_pod_sandbox(pod("a")).await.unwrap();
}

#[tokio::test]
async fn a_container_name_and_attempt_is_reserved_until_removal() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let config = pod("p");
    let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
    let c = ContainerConfig::new("web", "busybox");
    let first = runtime
        .create_container(&sandbox, c.clone(), &config)
        .await
        .unwrap();
    let err = runtime
        .create_container(&sandbox, c.clone(), &config)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RuntimeError::AlreadyExists {
            kind: "container",
            ..
        }
    ));
    runtime
        .create_container(&sandbox, c.clone().attempt(1), &config)
        .await
        .unwrap();
    runtime.remove_container(&first).await.unwrap();
    runtime
        .create_container(&sandbox, c, &config)
        .await
        .unwrap();
}

#[tokio::test]
async fn creating_a_container_needs_its_image_and_a_ready_sandbox() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let config = pod("p");
    let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
    let err = runtime
        .create_container(&sandbox, ContainerConfig::new("c", "nginx"), &config)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RuntimeError::ImageNotFound {
            image: "nginx".into()
        }
    );
    let err = runtime
        .create_container("nope", ContainerConfig::new("c", "busybox"), &config)
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    let err = runtime
        .create_container(&sandbox, ContainerConfig::new("c", "busybox"), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::FailedPrecondition(_)));
}

#[tokio::test]
async fn a_start_delay_keeps_the_container_created_until_the_clock_passes_it() {
    let clock = FakeClock::new();
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("slow", ImageBehaviour::new().start_delay(3 * SECOND))
        .build();
    let t0 = clock.now();
    let (_, id, _) = running(&runtime, "slow").await;
    assert_eq!(
        runtime.container_status(&id).await.unwrap().state,
        ContainerState::Created
    );
    clock.advance(3 * SECOND);
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Running);
    assert_eq!(status.started_at, Some(t0 + 3 * SECOND));
}

#[tokio::test]
async fn a_crash_looping_image_exits_non_zero_every_attempt() {
    let clock = FakeClock::new();
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("crash", ImageBehaviour::new().crash_loop())
        .build();
    let (sandbox, first, config) = running(&runtime, "crash").await;
    clock.advance(SECOND);
    let status = runtime.container_status(&first).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(status.exit_code, Some(1));
    assert_eq!(status.reason, "Error");
    let second = runtime
        .create_container(
            &sandbox,
            ContainerConfig::new("c", "crash").attempt(1),
            &config,
        )
        .await
        .unwrap();
    runtime.start_container(&second).await.unwrap();
    clock.advance(SECOND);
    assert_eq!(
        runtime.container_status(&second).await.unwrap().exit_code,
        Some(1)
    );
}

#[tokio::test]
async fn stop_is_idempotent_and_records_the_grace_period() {
    let clock = FakeClock::new();
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .preload("busybox")
        .build();
    let (_, id, _) = running(&runtime, "busybox").await;
    clock.advance(SECOND);
    runtime.stop_container(&id, 30 * SECOND).await.unwrap();
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.finished_at, Some(clock.now()));
    assert!(status.message.contains("30s"), "{}", status.message);
    clock.advance(SECOND);
    runtime.stop_container(&id, Duration::ZERO).await.unwrap();
    let again = runtime.container_status(&id).await.unwrap();
    assert_eq!(again, status, "a second stop changes nothing");
    runtime.stop_container("missing", SECOND).await.unwrap();
    assert_eq!(runtime.metrics().containers_stopped, 1);
}

#[tokio::test]
async fn removing_a_running_container_kills_it_and_missing_ones_are_fine() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let (_, id, _) = running(&runtime, "busybox").await;
    runtime.remove_container(&id).await.unwrap();
    assert!(runtime
        .container_status(&id)
        .await
        .unwrap_err()
        .is_not_found());
    runtime.remove_container(&id).await.unwrap();
    let m = runtime.metrics();
    assert_eq!((m.containers_stopped, m.containers_removed), (1, 1));
}

#[tokio::test]
async fn stopping_a_sandbox_kills_its_containers_and_releases_its_ip() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let (sandbox, id, _) = running(&runtime, "busybox").await;
    let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
    assert_eq!(status.network.ip, "10.88.0.2");
    assert!(status
        .network_namespace_path
        .starts_with("/var/run/netns/cni-"));
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
    assert_eq!(status.state, PodSandboxState::NotReady);
    assert_eq!(status.network.ip, "");
    let c = runtime.container_status(&id).await.unwrap();
    assert_eq!(c.exit_code, Some(SIGKILL_EXIT_CODE));
    let next = runtime.run_pod_sandbox(pod("q")).await.unwrap();
    let ip = runtime.pod_sandbox_status(&next).await.unwrap().network.ip;
    assert_eq!(ip, "10.88.0.2", "the address is reused");
}

#[tokio::test]
async fn removing_a_sandbox_removes_its_containers() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let (sandbox, id, _) = running(&runtime, "busybox").await;
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(runtime
        .container_status(&id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(runtime
        .list_containers(ContainerFilter::all())
        .await
        .unwrap()
        .is_empty());
    assert!(runtime
        .list_pod_sandboxes(PodSandboxFilter::all())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn host_network_sandboxes_get_no_ip_or_namespace() {
    let runtime = FakeRuntime::new();
    let config = pod("h").namespace_options(NamespaceOptions {
        network: NamespaceMode::Node,
        ..Default::default()
    });
    let id = runtime.run_pod_sandbox(config).await.unwrap();
    let status = runtime.pod_sandbox_status(&id).await.unwrap();
    assert_eq!(status.network.ip, "");
    assert_eq!(status.network_namespace_path, "");
}

#[tokio::test]
async fn lists_filter_by_state_sandbox_and_labels_in_creation_order() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let a = pod("a").label("app", "web");
    let b = pod("b").label("app", "db");
    let sa = runtime.run_pod_sandbox(a.clone()).await.unwrap();
    let sb = runtime.run_pod_sandbox(b.clone()).await.unwrap();
    let web = PodSandboxFilter::all().label("app", "web");
    let listed = runtime.list_pod_sandboxes(web).await.unwrap();
    assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&sa]);
    let all = runtime
        .list_pod_sandboxes(PodSandboxFilter::all())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&sa, &sb]
    );
    let c1 = runtime
        .create_container(&sa, ContainerConfig::new("x", "busybox"), &a)
        .await
        .unwrap();
    let c2 = runtime
        .create_container(&sb, ContainerConfig::new("y", "busybox"), &b)
        .await
        .unwrap();
    runtime.start_container(&c2).await.unwrap();
    let running = runtime
        .list_containers(ContainerFilter::all().state(ContainerState::Running))
        .await
        .unwrap();
    assert_eq!(running.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c2]);
    let in_a = runtime
        .list_containers(ContainerFilter::all().pod_sandbox(&sa))
        .await
        .unwrap();
    assert_eq!(in_a.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c1]);
    let by_prefix = runtime
        .list_containers(ContainerFilter::all().id(&c1[..12]))
        .await
        .unwrap();
    assert_eq!(by_prefix.len(), 1);
}

#[tokio::test]
async fn pulls_fail_for_unknown_images_unless_allowed() {
    let runtime = FakeRuntime::new();
    let err = runtime.pull_image(&"nginx".into()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ImagePullFailed { .. }));
    assert!(err.is_retryable());
    let open = FakeRuntime::builder().allow_unknown_pulls(true).build();
    let id = open.pull_image(&"nginx".into()).await.unwrap();
    let image = open
        .image_status(&"docker.io/library/nginx".into())
        .await
        .unwrap();
    assert_eq!(image.map(|i| i.id), Some(id));
    assert_eq!(open.metrics().images_pulled, 1);
    assert_eq!(runtime.metrics().image_pull_failures, 1);
}

#[tokio::test]
async fn a_removed_image_is_gone_and_removing_it_again_is_fine() {
    let runtime = FakeRuntime::builder().preload("busybox:1.36").build();
    assert_eq!(runtime.list_images().await.unwrap().len(), 1);
    runtime.remove_image(&"busybox:1.36".into()).await.unwrap();
    runtime.remove_image(&"busybox:1.36".into()).await.unwrap();
    assert!(runtime.list_images().await.unwrap().is_empty());
    assert_eq!(
        runtime.image_status(&"busybox:1.36".into()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_imported_oci_tarball_makes_its_images_present() {
    let runtime = FakeRuntime::new();
    let index = br#"{"manifests":[{"digest":"sha256:feed","size":9,
            "annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest"}}]}"#;
    let archive = crate::oci::tar(&[("index.json", index)]);
    let images = runtime.import_image(archive.into()).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, "sha256:feed");
    let status = runtime.image_status(&"busybox".into()).await.unwrap();
    assert_eq!(status.map(|i| i.id).as_deref(), Some("sha256:feed"));
}

#[tokio::test]
async fn exec_runs_handlers_and_builtins_only_in_running_containers() {
    let clock = FakeClock::new();
    let behaviour = ImageBehaviour::new()
        .exit_after(10 * SECOND, 0)
        .exec("cat", |cmd: &[String]| {
            ExecResponse::new(0).stdout(format!("contents of {}", cmd[1]))
        })
        .exec("sleep", |_: &[String]| {
            ExecOutcome::taking(ExecResponse::new(0), 5 * SECOND)
        });
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("app", behaviour)
        .build();
    let (_, id, _) = running(&runtime, "app").await;
    let out = runtime
        .exec_sync(ExecRequest::new(&id, ["cat", "/etc/hostname"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, Bytes::from("contents of /etc/hostname"));
    let out = runtime
        .exec_sync(ExecRequest::new(&id, ["echo", "a", "b"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, Bytes::from("a b\n"));
    let out = runtime
        .exec_sync(ExecRequest::new(&id, ["nope"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127);
    let err = runtime
        .exec_sync(ExecRequest::new(&id, ["sleep"]).timeout(SECOND))
        .await
        .unwrap_err();
    assert_eq!(err, RuntimeError::Timeout(SECOND));
    let err = runtime
        .exec_sync(ExecRequest::new(&id, Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidArgument(_)));
    clock.advance(10 * SECOND);
    let err = runtime
        .exec_sync(ExecRequest::new(&id, ["true"]))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::FailedPrecondition(_)));
}

#[tokio::test]
async fn logs_show_the_lines_written_by_now_with_tail_and_since() {
    let clock = FakeClock::new();
    let behaviour = ImageBehaviour::new()
        .log_line(Duration::ZERO, "one")
        .stderr_line(SECOND, "two")
        .log_line(2 * SECOND, "three");
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("app", behaviour)
        .build();
    let t0 = clock.now();
    let (_, id, _) = running(&runtime, "app").await;
    clock.advance(SECOND);
    let read = |options: LogOptions| {
        let runtime = runtime.clone();
        let id = id.clone();
        async move {
            let stream = runtime.container_logs(&id, options).await.unwrap();
            stream.map(|l| l.unwrap()).collect::<Vec<_>>().await
        }
    };
    let lines = read(LogOptions::all()).await;
    assert_eq!(
        lines.iter().map(|l| &l.line[..]).collect::<Vec<_>>(),
        vec![&b"one"[..], b"two"]
    );
    assert_eq!(lines[1].stream, OutputStream::Stderr);
    assert_eq!(lines[1].timestamp, t0 + SECOND);
    assert_eq!(read(LogOptions::all().tail(1)).await.len(), 1);
    assert_eq!(read(LogOptions::all().since(t0 + SECOND)).await.len(), 1);
    let err = runtime
        .container_logs("missing", LogOptions::all())
        .await
        .err()
        .unwrap();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn following_a_log_yields_new_lines_and_ends_when_the_container_exits() {
    let clock = FakeClock::new();
    let behaviour = ImageBehaviour::new()
        .log_line(Duration::ZERO, "one")
        .log_line(SECOND, "two")
        .exit_after(2 * SECOND, 0);
    let runtime = FakeRuntime::builder()
        .clock(clock.clone())
        .image("app", behaviour)
        .build();
    let (_, id, _) = running(&runtime, "app").await;
    let mut stream = runtime
        .container_logs(&id, LogOptions::all().follow())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        assert_eq!(stream.next().await.unwrap().unwrap().line, "one");
        let advancer = {
            let clock = clock.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                clock.advance(SECOND);
            })
        };
        assert_eq!(stream.next().await.unwrap().unwrap().line, "two");
        advancer.await.unwrap();
        clock.advance(SECOND);
        assert!(stream.next().await.is_none(), "ends once exited");
    })
    .await
    .expect("the follower finishes");
}

#[tokio::test]
async fn an_unavailable_runtime_fails_every_call_until_it_recovers() {
    let runtime = FakeRuntime::new();
    runtime.set_unavailable(Some("socket closed"));
    let err = runtime.version().await.unwrap_err();
    assert_eq!(err, RuntimeError::Unavailable("socket closed".into()));
    assert!(runtime.run_pod_sandbox(pod("a")).await.is_err());
    runtime.set_unavailable(None);
    assert_eq!(runtime.version().await.unwrap().runtime_name, "fake");
}

#[tokio::test]
async fn an_external_kill_records_its_reason() {
    let runtime = FakeRuntime::builder().preload("busybox").build();
    let (_, id, _) = running(&runtime, "busybox").await;
    assert!(runtime.kill_container(&id, 137, "OOMKilled", "out of memory"));
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.reason, "OOMKilled");
    assert!(!runtime.kill_container(&id, 137, "OOMKilled", ""));
}

#[tokio::test]
async fn image_ids_are_stable_digests_of_the_reference() {
    let runtime = FakeRuntime::builder().allow_unknown_pulls(true).build();
    let id = runtime.pull_image(&"busybox".into()).await.unwrap();
    let again = FakeRuntime::builder().allow_unknown_pulls(true).build();
    assert_eq!(
        again.pull_image(&"busybox:latest".into()).await.unwrap(),
        id
    );
    let hex = id.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(!hex.contains("00000000"), "{hex}");
    assert_ne!(runtime.pull_image(&"nginx".into()).await.unwrap(), id);
}

#[test]
fn ids_differ_per_node_and_per_sequence_number() {
    let a = hex256(1, b"x", 1);
    assert_eq!(a.len(), 64);
    assert_ne!(a, hex256(1, b"x", 2));
    assert_ne!(a, hex256(2, b"x", 1));
}

#[tokio::test]
async fn usage_over_the_memory_limit_kills_the_container_as_oom_killed() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("app", ImageBehaviour::new().usage(100, 10 << 20))
            .build();
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        runtime.pull_image(&ImageSpec::new("app")).await.unwrap();
        let limits = LinuxContainerResources::default()
            .cpu(102, 50_000, 100_000)
            .memory_limit(20 << 20)
            .oom_score_adj(-997);
        let id = runtime
            .create_container(
                &sandbox,
                ContainerConfig::new("c", "app").resources(limits),
                &config,
            )
            .await
            .unwrap();
        runtime.start_container(&id).await.unwrap();
        assert_eq!(runtime.container_resources(&id).unwrap(), limits);
        // Under the limit: it runs; at the limit: still runs.
        clock.advance(Duration::from_secs(1));
        runtime.set_usage(&id, 100, 20 << 20).unwrap();
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(status.state, ContainerState::Running);
        // One byte over: killed now, as the OOM killer would.
        clock.advance(Duration::from_secs(1));
        runtime.set_usage(&id, 100, (20 << 20) + 1).unwrap();
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(
            (status.state, status.exit_code, status.reason.as_str()),
            (ContainerState::Exited, Some(137), "OOMKilled")
        );
        assert_eq!(status.finished_at, Some(clock.now()));
        // Lowering the usage afterwards brings nothing back.
        runtime.set_usage(&id, 100, 1).unwrap();
        let again = runtime.container_status(&id).await.unwrap();
        assert_eq!(again.state, ContainerState::Exited);
        assert!(matches!(
            runtime.container_resources("missing"),
            Err(RuntimeError::NotFound { .. })
        ));
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn an_image_using_more_than_the_limit_is_killed_as_it_starts_and_without_a_limit_runs() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("hog", ImageBehaviour::new().usage(0, 64 << 20))
            .build();
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        runtime.pull_image(&ImageSpec::new("hog")).await.unwrap();
        let limited = ContainerConfig::new("limited", "hog")
            .resources(LinuxContainerResources::default().memory_limit(32 << 20));
        let limited = runtime
            .create_container(&sandbox, limited, &config)
            .await
            .unwrap();
        let free = runtime
            .create_container(&sandbox, ContainerConfig::new("free", "hog"), &config)
            .await
            .unwrap();
        let started = clock.now();
        runtime.start_container(&limited).await.unwrap();
        runtime.start_container(&free).await.unwrap();
        clock.advance(Duration::from_secs(5));
        let status = runtime.container_status(&limited).await.unwrap();
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (Some(137), "OOMKilled")
        );
        assert_eq!(status.finished_at, Some(started));
        // The exit stays what it was once the usage changes.
        runtime.set_usage(&limited, 0, 1).unwrap();
        let status = runtime.container_status(&limited).await.unwrap();
        assert_eq!(
            (status.state, status.finished_at),
            (ContainerState::Exited, Some(started))
        );
        let free = runtime.container_status(&free).await.unwrap();
        assert_eq!(free.state, ContainerState::Running);
    })
    .await
    .expect("within the time limit");
}
