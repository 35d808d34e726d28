//! The fake runtime through the `ContainerRuntime` SPI, as a kubelet would drive it.

mod contract;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_runtime::fake::{FakeRegistry, FakeRuntime, ImageBehaviour};
use capstan_runtime::*;
use futures::StreamExt;

const SECOND: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(10);

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig::new(PodSandboxMetadata::new(
        name,
        "default",
        format!("uid-{name}"),
    ))
    .log_directory(format!("/var/log/pods/default_{name}_uid-{name}"))
    .label("io.kubernetes.pod.name", name)
}

#[tokio::test]
async fn a_pod_walks_its_whole_lifecycle() {
    tokio::time::timeout(LIMIT, async {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .start_delay(SECOND)
            .log_line(Duration::ZERO, "listening on :8080")
            .log_line(2 * SECOND, "GET /")
            .exec("cat", |cmd: &[String]| {
                ExecResponse::new(0).stdout(format!("{}\n", cmd[1]))
            });
        let fake = FakeRuntime::builder()
            .node_name("node-1")
            .clock(clock.clone())
            .image("luksa/kubia", behaviour)
            .build();
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(fake.clone());
        assert_eq!(runtime.version().await.unwrap().runtime_api_version, "v1");

        // Run the sandbox.
        let config = pod("kubia");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
        assert_eq!(status.state, PodSandboxState::Ready);
        assert!(!status.network.ip.is_empty());

        // Pull (twice: the second is a no-op with the same id).
        let image = ImageSpec::new("luksa/kubia");
        assert_eq!(runtime.image_status(&image).await.unwrap(), None);
        let image_id = runtime.pull_image(&image).await.unwrap();
        assert_eq!(
            ensure_image(runtime.as_ref(), &image).await.unwrap(),
            image_id
        );

        // Create and start.
        let container = runtime
            .create_container(
                &sandbox,
                ContainerConfig::new("kubia", "luksa/kubia")
                    .env("PORT", "8080")
                    .label("io.kubernetes.container.name", "kubia"),
                &config,
            )
            .await
            .unwrap();
        let created = runtime.container_status(&container).await.unwrap();
        assert_eq!(created.state, ContainerState::Created);
        assert_eq!(created.image_ref, image_id);
        assert_eq!(
            created.log_path,
            "/var/log/pods/default_kubia_uid-kubia/kubia/0.log"
        );
        let t0 = clock.now();
        runtime.start_container(&container).await.unwrap();
        assert!(matches!(
            runtime.start_container(&container).await,
            Err(RuntimeError::FailedPrecondition(_))
        ));

        // Status over time: created during the start delay, then running.
        assert_eq!(
            runtime.container_status(&container).await.unwrap().state,
            ContainerState::Created
        );
        clock.advance(3 * SECOND);
        let status = runtime.container_status(&container).await.unwrap();
        assert_eq!(status.state, ContainerState::Running);
        assert_eq!(status.started_at, Some(t0 + SECOND));

        // Logs.
        let lines: Vec<LogEntry> = runtime
            .container_logs(&container, LogOptions::all())
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(
            lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>(),
            vec![Bytes::from("listening on :8080"), Bytes::from("GET /")]
        );

        // Exec.
        let out = runtime
            .exec_sync(ExecRequest::new(&container, ["cat", "/etc/hostname"]).timeout(SECOND))
            .await
            .unwrap();
        assert_eq!(
            (out.exit_code, out.stdout),
            (0, Bytes::from("/etc/hostname\n"))
        );

        // Stop with a grace period, then stop the sandbox and remove everything.
        clock.advance(SECOND);
        runtime
            .stop_container(&container, 30 * SECOND)
            .await
            .unwrap();
        let stopped = runtime.container_status(&container).await.unwrap();
        assert_eq!(stopped.state, ContainerState::Exited);
        assert_eq!(stopped.exit_code, Some(0));
        assert_eq!(stopped.finished_at, Some(clock.now()));
        assert!(stopped.message.contains("grace period of 30s"));
        runtime
            .stop_container(&container, 30 * SECOND)
            .await
            .unwrap();
        runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        assert_eq!(
            runtime.pod_sandbox_status(&sandbox).await.unwrap().state,
            PodSandboxState::NotReady
        );
        runtime.remove_container(&container).await.unwrap();
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        assert!(runtime
            .pod_sandbox_status(&sandbox)
            .await
            .unwrap_err()
            .is_not_found());
        let m = fake.metrics();
        assert_eq!(
            (m.sandboxes_run, m.containers_created, m.containers_started),
            (1, 1, 1)
        );
        assert_eq!((m.containers_stopped, m.containers_removed), (1, 1));
        assert_eq!((m.images_pulled, m.execs), (1, 1));
    })
    .await
    .expect("the lifecycle finishes in time");
}

#[tokio::test]
async fn a_crash_looping_image_exits_with_an_error_after_each_start() {
    tokio::time::timeout(LIMIT, async {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image(
                "crasher",
                ImageBehaviour::new().crash_loop().exit_after(2 * SECOND, 2),
            )
            .build();
        let config = pod("crasher");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        runtime.pull_image(&"crasher".into()).await.unwrap();
        for attempt in 0..3 {
            let id = runtime
                .create_container(
                    &sandbox,
                    ContainerConfig::new("main", "crasher").attempt(attempt),
                    &config,
                )
                .await
                .unwrap();
            runtime.start_container(&id).await.unwrap();
            let started = clock.now();
            clock.advance(SECOND);
            assert_eq!(
                runtime.container_status(&id).await.unwrap().state,
                ContainerState::Running
            );
            clock.advance(5 * SECOND);
            let status = runtime.container_status(&id).await.unwrap();
            assert_eq!(status.state, ContainerState::Exited);
            assert_eq!(status.exit_code, Some(2));
            assert_eq!(status.reason, "Error");
            assert_eq!(status.finished_at, Some(started + 2 * SECOND));
        }
        let exited = runtime
            .list_containers(ContainerFilter::all().state(ContainerState::Exited))
            .await
            .unwrap();
        assert_eq!(
            exited
                .iter()
                .map(|c| c.metadata.attempt)
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_pull_failure_is_err_image_pull_and_leaves_no_image() {
    tokio::time::timeout(LIMIT, async {
        let runtime = FakeRuntime::builder()
            .image(
                "private/app",
                ImageBehaviour::new().pull_error("401 Unauthorized"),
            )
            .build();
        let err = runtime.pull_image(&"private/app".into()).await.unwrap_err();
        match &err {
            RuntimeError::ImagePullFailed { image, reason } => {
                assert_eq!(image, "private/app");
                assert_eq!(reason, "401 Unauthorized");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_retryable());
        let unknown = runtime.pull_image(&"nosuch".into()).await.unwrap_err();
        assert!(matches!(unknown, RuntimeError::ImagePullFailed { .. }));
        assert!(runtime.list_images().await.unwrap().is_empty());

        // Creating a container from the missing image is ImageNotFound.
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let err = runtime
            .create_container(&sandbox, ContainerConfig::new("c", "private/app"), &config)
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }));

        // Once the registry lets it through, the retry succeeds.
        runtime
            .registry()
            .insert("private/app", ImageBehaviour::new());
        runtime.pull_image(&"private/app".into()).await.unwrap();
        assert_eq!(runtime.metrics().image_pull_failures, 2);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn scripted_exit_codes_follow_the_injected_clock() {
    tokio::time::timeout(LIMIT, async {
        let clock = FakeClock::new();
        let registry = FakeRegistry::new();
        registry.insert("job", ImageBehaviour::new().exit_after(5 * SECOND, 0));
        registry.insert("failing", ImageBehaviour::new().exit_after(8 * SECOND, 3));
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .registry(registry)
            .build();
        let config = pod("batch");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let mut ids = Vec::new();
        for (name, image) in [("ok", "job"), ("bad", "failing")] {
            runtime.pull_image(&image.into()).await.unwrap();
            let id = runtime
                .create_container(&sandbox, ContainerConfig::new(name, image), &config)
                .await
                .unwrap();
            runtime.start_container(&id).await.unwrap();
            ids.push(id);
        }
        let t0 = clock.now();
        let states = |runtime: FakeRuntime, ids: Vec<String>| async move {
            let mut out = Vec::new();
            for id in ids {
                let s = runtime.container_status(&id).await.unwrap();
                out.push((s.state, s.exit_code));
            }
            out
        };
        use ContainerState::{Exited, Running};
        clock.advance(4 * SECOND);
        assert_eq!(
            states(runtime.clone(), ids.clone()).await,
            vec![(Running, None), (Running, None)]
        );
        clock.advance(SECOND);
        assert_eq!(
            states(runtime.clone(), ids.clone()).await,
            vec![(Exited, Some(0)), (Running, None)]
        );
        clock.advance(10 * SECOND);
        assert_eq!(
            states(runtime.clone(), ids.clone()).await,
            vec![(Exited, Some(0)), (Exited, Some(3))]
        );
        let done = runtime.container_status(&ids[0]).await.unwrap();
        assert_eq!(done.reason, "Completed");
        assert_eq!(done.finished_at, Some(t0 + 5 * SECOND));
        // Stopping an exited container changes nothing.
        runtime.stop_container(&ids[1], SECOND).await.unwrap();
        let bad = runtime.container_status(&ids[1]).await.unwrap();
        assert_eq!(bad.exit_code, Some(3));
        assert_eq!(bad.finished_at, Some(t0 + 8 * SECOND));
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn every_id_is_unique_across_1000_sandboxes() {
    tokio::time::timeout(LIMIT, async {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new());
        let registry = FakeRegistry::new();
        registry.insert("pause", ImageBehaviour::new());
        let nodes: Vec<FakeRuntime> = (0..10)
            .map(|n| {
                FakeRuntime::builder()
                    .node_name(format!("node-{n}"))
                    .shared_clock(clock.clone())
                    .registry(registry.clone())
                    .preload("pause")
                    .build()
            })
            .collect();
        let mut ids = HashSet::new();
        for i in 0..1000 {
            let node = &nodes[i % nodes.len()];
            let config = pod(&format!("pod-{i}"));
            let sandbox = node.run_pod_sandbox(config.clone()).await.unwrap();
            let container = node
                .create_container(&sandbox, ContainerConfig::new("app", "pause"), &config)
                .await
                .unwrap();
            assert_eq!(sandbox.len(), 64);
            assert!(sandbox.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(ids.insert(sandbox), "sandbox id reused");
            assert!(ids.insert(container), "container id reused");
        }
        assert_eq!(ids.len(), 2000);
        for node in &nodes {
            let listed = node
                .list_pod_sandboxes(PodSandboxFilter::all())
                .await
                .unwrap();
            assert_eq!(listed.len(), 100);
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn two_thousand_fake_nodes_share_one_clock_and_one_registry() {
    tokio::time::timeout(LIMIT, async {
        let clock = FakeClock::new();
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let registry = FakeRegistry::new();
        registry.insert("job", ImageBehaviour::new().exit_after(30 * SECOND, 0));
        let mut containers = Vec::new();
        for n in 0..2000u32 {
            let node = FakeRuntime::builder()
                .node_name(format!("node-{n}"))
                .pod_ip_prefix(format!("10.{}.{}", n / 256, n % 256))
                .shared_clock(shared.clone())
                .registry(registry.clone())
                .build();
            let config = pod("job");
            let sandbox = node.run_pod_sandbox(config.clone()).await.unwrap();
            node.pull_image(&"job".into()).await.unwrap();
            let id = node
                .create_container(&sandbox, ContainerConfig::new("job", "job"), &config)
                .await
                .unwrap();
            node.start_container(&id).await.unwrap();
            containers.push((node, id));
        }
        clock.advance(29 * SECOND);
        for (node, id) in &containers {
            let state = node.container_status(id).await.unwrap().state;
            assert_eq!(state, ContainerState::Running);
        }
        clock.advance(SECOND);
        for (node, id) in &containers {
            let status = node.container_status(id).await.unwrap();
            assert_eq!(
                (status.state, status.exit_code),
                (ContainerState::Exited, Some(0))
            );
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn the_fake_keeps_the_contract_every_backend_keeps() {
    tokio::time::timeout(LIMIT, async {
        let fake = FakeRuntime::builder()
            .image("busybox", ImageBehaviour::new())
            .preload("busybox")
            .build();
        let long_running = ContainerConfig::new("main", "busybox").command(["sleep", "1000"]);
        contract::check_contract(&fake, pod("contract"), long_running).await;
    })
    .await
    .expect("in time");
}
