//! The containerd backend against a real containerd (feature `containerd`).
//!
//! `scripts/test` starts a throwaway containerd and exports `CAPSTAN_CONTAINERD_SOCKET`; to
//! run these alone: `source scripts/lib.sh scripts/lib-containerd.sh`, then
//! `capstan_start_containerd /tmp/containerd` and `cargo test -p capstan-runtime --features
//! containerd --test containerd_runtime` as root. Each test uses its own containerd
//! namespace and state directory, imports a busybox image built from Debian's
//! `busybox-static`, and checks through `ctr` and the filesystem that it leaves nothing behind.
#![cfg(feature = "containerd")]

mod contract;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::*;
use futures::StreamExt;

const LIMIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "capstan.test/busybox:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "id", "cat", "true", "false", "hostname", "readlink", "ls", "env",
    "printf", "grep",
];

/// One test's world: its own containerd namespace, state directory and log directory.
struct World {
    runtime: ContainerdRuntime,
    socket: String,
    namespace: String,
    root: PathBuf,
}

fn socket() -> String {
    let socket = std::env::var("CAPSTAN_CONTAINERD_SOCKET").unwrap_or_else(|_| {
        panic!(
            "CAPSTAN_CONTAINERD_SOCKET is not set: run these tests through scripts/test, which \
             starts a containerd (see scripts/lib-containerd.sh)"
        )
    });
    assert!(
        Path::new(&socket).exists(),
        "CAPSTAN_CONTAINERD_SOCKET={socket} does not exist: start containerd with scripts/test \
         (scripts/lib-containerd.sh)"
    );
    socket
}

/// Whether a 64-bit little-endian ELF binary names a dynamic loader (`PT_INTERP`).
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |at: usize, len: usize| -> u64 {
        elf.get(at..at + len)
            .map(|b| b.iter().rev().fold(0u64, |n, &x| n << 8 | u64::from(x)))
            .unwrap_or(0)
    };
    let (table, size, count) = (
        read(0x20, 8) as usize,
        read(0x36, 2) as usize,
        read(0x38, 2) as usize,
    );
    (0..count).any(|i| read(table + i * size, 4) == 3)
}

fn busybox_archive() -> Vec<u8> {
    let binary = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install Debian's busybox-static (scripts/test does)");
    assert!(
        !has_interpreter(&binary),
        "/bin/busybox is dynamically linked: replace Debian's busybox with busybox-static"
    );
    ImageArchive::busybox(IMAGE, binary, APPLETS)
        .build()
        .unwrap()
}

impl World {
    async fn new(test: &str) -> World {
        let socket = socket();
        let namespace = format!("capstan-test-{test}");
        let root = std::env::temp_dir().join(format!("capstan-containerd-{test}"));
        let runtime = ContainerdRuntime::connect(
            ContainerdConfig::new(&socket)
                .namespace(&namespace)
                .state_dir(root.join("state")),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("containerd at {socket} is unreachable ({e}): start it with scripts/test")
        });
        // What an earlier, interrupted run left behind goes first.
        for sandbox in runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
        {
            runtime.remove_pod_sandbox(&sandbox.id).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(root.join("logs"));
        let images = runtime
            .import_image(busybox_archive().into())
            .await
            .unwrap();
        assert_eq!(images[0].repo_tags, [IMAGE]);
        World {
            runtime,
            socket,
            namespace,
            root,
        }
    }

    fn pod(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig::new(PodSandboxMetadata::new(
            name,
            "default",
            format!("uid-{name}"),
        ))
        .log_directory(
            self.root
                .join("logs")
                .join(name)
                .to_string_lossy()
                .into_owned(),
        )
        .label("app", name)
    }

    /// `ctr -a <socket> -n <namespace> <args> -q`: the ids containerd lists.
    fn ctr(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("ctr")
            .args(["-a", &self.socket, "-n", &self.namespace])
            .args(args)
            .output()
            .expect("ctr (from Debian's containerd package) runs");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    async fn run(
        &self,
        sandbox: &str,
        config: &PodSandboxConfig,
        container: ContainerConfig,
    ) -> String {
        let id = self
            .runtime
            .create_container(sandbox, container, config)
            .await
            .unwrap();
        self.runtime.start_container(&id).await.unwrap();
        id
    }

    async fn wait_for(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.runtime.container_status(id).await.unwrap();
            if status.state == state {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {state:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_lines(&self, id: &str) -> Vec<(OutputStream, String)> {
        let stream = self
            .runtime
            .container_logs(id, LogOptions::all())
            .await
            .unwrap();
        stream
            .map(|e| {
                let e = e.unwrap();
                (e.stream, String::from_utf8_lossy(&e.line).into_owned())
            })
            .collect()
            .await
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

#[tokio::test]
async fn a_container_logs_and_reports_its_exit_code_and_a_new_attempt_runs_after_it() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("exit").await;
        let config = w.pod("exit");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let started = std::time::SystemTime::now();
        let id = w
            .run(
                &sandbox,
                &config,
                sh("job", "echo hello; echo oops >&2; exit 3"),
            )
            .await;
        let status = w.wait_for(&id, ContainerState::Exited).await;
        assert_eq!(status.exit_code, Some(3));
        assert_eq!(status.reason, "Error");
        let (begun, ended) = (status.started_at.unwrap(), status.finished_at.unwrap());
        assert!(begun <= ended && started <= ended, "{status:?}");
        // Each stream keeps its order; across streams, order is not kept.
        let mut lines = w.log_lines(&id).await;
        lines.sort_by_key(|(stream, _)| stream.as_str());
        assert_eq!(
            lines,
            [
                (OutputStream::Stderr, "oops".into()),
                (OutputStream::Stdout, "hello".into())
            ]
        );
        // The log is a CRI log file where the kubelet expects it.
        assert_eq!(
            status.log_path,
            format!("{}/job/0.log", config.log_directory)
        );
        let file = std::fs::read_to_string(&status.log_path).unwrap();
        assert!(
            file.lines().any(|l| l.ends_with(" stdout F hello")),
            "{file}"
        );

        // Starting it again is refused; the same attempt cannot be created twice.
        assert!(matches!(
            w.runtime.start_container(&id).await,
            Err(RuntimeError::FailedPrecondition(_))
        ));
        assert!(matches!(
            w.runtime
                .create_container(&sandbox, sh("job", "true"), &config)
                .await,
            Err(RuntimeError::AlreadyExists { .. })
        ));
        // restartPolicy: Always: the next attempt runs beside the exited one.
        let again = w
            .run(&sandbox, &config, sh("job", "echo again").attempt(1))
            .await;
        let status = w.wait_for(&again, ContainerState::Exited).await;
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (Some(0), "Completed")
        );
        assert_eq!(
            w.log_lines(&again).await,
            [(OutputStream::Stdout, "again".into())]
        );
        let listed = w
            .runtime
            .list_containers(
                ContainerFilter::all()
                    .pod_sandbox(&sandbox)
                    .state(ContainerState::Exited),
            )
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn exec_runs_in_a_running_container_that_shares_the_pods_namespaces() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("exec").await;
        let config = w.pod("exec");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let status = w.runtime.pod_sandbox_status(&sandbox).await.unwrap();
        let netns = status.network_namespace_path.clone();
        assert!(Path::new(&netns).exists(), "{netns}");
        let first = w
            .run(
                &sandbox,
                &config,
                ContainerConfig::new("a", IMAGE).command(["sleep", "1000"]),
            )
            .await;
        let second = w
            .run(
                &sandbox,
                &config,
                ContainerConfig::new("b", IMAGE).command(["sleep", "1000"]),
            )
            .await;
        w.wait_for(&first, ContainerState::Running).await;
        w.wait_for(&second, ContainerState::Running).await;

        let response = w
            .runtime
            .exec_sync(ExecRequest::new(
                &first,
                ["sh", "-c", "echo out; echo err >&2; exit 7"],
            ))
            .await
            .unwrap();
        assert_eq!(response.exit_code, 7);
        assert_eq!(
            (&response.stdout[..], &response.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );

        // Both containers are in the pinned network namespace, and share IPC and UTS.
        let inode = std::fs::metadata(&netns).unwrap().ino();
        for (id, ns) in [
            (&first, "net"),
            (&second, "net"),
            (&first, "ipc"),
            (&second, "uts"),
        ] {
            let out = w
                .runtime
                .exec_sync(ExecRequest::new(
                    id.as_str(),
                    ["readlink", &format!("/proc/self/ns/{ns}")],
                ))
                .await
                .unwrap();
            let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if ns == "net" {
                assert_eq!(link, format!("net:[{inode}]"));
            }
            let pinned = std::fs::metadata(Path::new(&netns).with_file_name(ns))
                .unwrap()
                .ino();
            assert_eq!(link, format!("{ns}:[{pinned}]"));
        }
        let hostname = w
            .runtime
            .exec_sync(ExecRequest::new(&second, ["hostname"]))
            .await
            .unwrap();
        assert_eq!(&hostname.stdout[..], b"exec\n");
        let files = w
            .runtime
            .exec_sync(ExecRequest::new(
                &second,
                ["cat", "/etc/hostname", "/etc/hosts"],
            ))
            .await
            .unwrap();
        let files = String::from_utf8_lossy(&files.stdout).into_owned();
        assert!(
            files.starts_with("exec\n") && files.contains("127.0.1.1\texec"),
            "{files}"
        );

        // A timeout kills the command; bad requests are refused.
        assert!(matches!(
            w.runtime
                .exec_sync(
                    ExecRequest::new(&first, ["sleep", "30"]).timeout(Duration::from_millis(300))
                )
                .await,
            Err(RuntimeError::Timeout(_))
        ));
        assert!(matches!(
            w.runtime
                .exec_sync(ExecRequest::new(&first, Vec::<String>::new()))
                .await,
            Err(RuntimeError::InvalidArgument(_))
        ));

        // SIGTERM first: a container that handles it exits by itself within the grace period.
        let polite = w
            .run(
                &sandbox,
                &config,
                sh(
                    "polite",
                    "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
                ),
            )
            .await;
        w.wait_for(&polite, ContainerState::Running).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let begun = Instant::now();
        w.runtime
            .stop_container(&polite, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(begun.elapsed() < Duration::from_secs(10));
        let status = w.runtime.container_status(&polite).await.unwrap();
        assert_eq!(
            (status.state, status.exit_code),
            (ContainerState::Exited, Some(0))
        );
        assert_eq!(
            w.log_lines(&polite).await,
            [(OutputStream::Stdout, "bye".into())]
        );
        // A PID 1 without a handler ignores SIGTERM: SIGKILL follows the grace period.
        w.runtime
            .stop_container(&first, Duration::from_millis(200))
            .await
            .unwrap();
        let status = w.runtime.container_status(&first).await.unwrap();
        assert_eq!(
            (status.state, status.exit_code),
            (ContainerState::Exited, Some(137))
        );
        assert!(matches!(
            w.runtime
                .exec_sync(ExecRequest::new(&first, ["true"]))
                .await,
            Err(RuntimeError::FailedPrecondition(_))
        ));
        w.runtime
            .stop_container(&first, Duration::ZERO)
            .await
            .unwrap();
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn removing_a_sandbox_leaves_no_container_task_snapshot_or_namespace_behind() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("cleanup").await;
        let config = w.pod("cleanup");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        assert!(matches!(
            w.runtime.run_pod_sandbox(config.clone()).await,
            Err(RuntimeError::AlreadyExists { .. })
        ));
        let netns = w
            .runtime
            .pod_sandbox_status(&sandbox)
            .await
            .unwrap()
            .network_namespace_path;
        let running = w
            .run(
                &sandbox,
                &config,
                ContainerConfig::new("web", IMAGE).command(["sleep", "1000"]),
            )
            .await;
        let done = w.run(&sandbox, &config, sh("init", "true")).await;
        let created = w
            .runtime
            .create_container(&sandbox, ContainerConfig::new("later", IMAGE), &config)
            .await
            .unwrap();
        w.wait_for(&running, ContainerState::Running).await;
        w.wait_for(&done, ContainerState::Exited).await;
        assert_eq!(
            w.ctr(&["tasks", "ls", "-q"]),
            std::slice::from_ref(&running)
        );
        assert_eq!(w.ctr(&["containers", "ls", "-q"]).len(), 4);

        w.runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        let status = w.runtime.pod_sandbox_status(&sandbox).await.unwrap();
        assert_eq!(status.state, PodSandboxState::NotReady);
        assert!(
            !Path::new(&netns).exists(),
            "the network namespace outlived the stop"
        );
        assert_eq!(
            w.runtime.container_status(&running).await.unwrap().state,
            ContainerState::Exited
        );
        assert!(matches!(
            w.runtime
                .create_container(&sandbox, ContainerConfig::new("x", IMAGE), &config)
                .await,
            Err(RuntimeError::FailedPrecondition(_))
        ));
        w.runtime.stop_pod_sandbox(&sandbox).await.unwrap();

        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        assert!(w
            .runtime
            .pod_sandbox_status(&sandbox)
            .await
            .unwrap_err()
            .is_not_found());
        for id in [&running, &done, &created] {
            assert!(w
                .runtime
                .container_status(id)
                .await
                .unwrap_err()
                .is_not_found());
        }
        assert!(w
            .runtime
            .list_containers(ContainerFilter::all())
            .await
            .unwrap()
            .is_empty());
        assert!(w
            .runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
            .is_empty());
        assert!(w.ctr(&["containers", "ls", "-q"]).is_empty());
        assert!(w.ctr(&["tasks", "ls", "-q"]).is_empty());
        // Only the image's committed layer stays: no container's active snapshot.
        let snapshots = w.ctr(&["snapshots", "ls"]);
        assert!(snapshots.len() > 1, "{snapshots:?}");
        for line in &snapshots[1..] {
            assert!(line.trim_end().ends_with("Committed"), "{snapshots:?}");
            for id in [&running, &done, &created] {
                assert!(!line.starts_with(id.as_str()), "{snapshots:?}");
            }
        }
        let state = w.root.join("state");
        for dir in ["sandboxes", "containers"] {
            assert_eq!(
                std::fs::read_dir(state.join(dir)).unwrap().count(),
                0,
                "{dir} left behind"
            );
        }
        assert!(!std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&netns));
        // The logs stay for the kubelet to clean.
        assert!(Path::new(&config.log_directory).join("init/0.log").exists());
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn images_are_imported_listed_removed_and_a_missing_one_fails_to_pull() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("images").await;
        let image = w
            .runtime
            .image_status(&IMAGE.into())
            .await
            .unwrap()
            .expect("imported");
        assert!(image.id.starts_with("sha256:"));
        assert_eq!(w.runtime.pull_image(&IMAGE.into()).await.unwrap(), image.id);
        let by_id = w
            .runtime
            .image_status(&ImageSpec::new(image.id.clone()))
            .await
            .unwrap();
        assert_eq!(by_id.map(|i| i.repo_tags), Some(vec![IMAGE.to_string()]));
        assert_eq!(
            w.runtime.list_images().await.unwrap(),
            std::slice::from_ref(&image)
        );
        // Importing again changes nothing.
        let again = w
            .runtime
            .import_image(busybox_archive().into())
            .await
            .unwrap();
        assert_eq!(again[0].id, image.id);

        let missing = ImageSpec::new("capstan.test/missing:1");
        let err = w.runtime.pull_image(&missing).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ImagePullFailed { .. }), "{err}");
        assert!(err.is_retryable());
        let config = w.pod("images");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        assert!(matches!(
            w.runtime
                .create_container(
                    &sandbox,
                    ContainerConfig::new("c", "capstan.test/missing:1"),
                    &config
                )
                .await,
            Err(RuntimeError::ImageNotFound { .. })
        ));
        assert!(matches!(
            w.runtime
                .import_image(Bytes::from_static(b"not a tarball"))
                .await,
            Err(RuntimeError::InvalidArgument(_))
        ));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();

        w.runtime.remove_image(&IMAGE.into()).await.unwrap();
        w.runtime.remove_image(&IMAGE.into()).await.unwrap();
        assert_eq!(w.runtime.image_status(&IMAGE.into()).await.unwrap(), None);
        assert!(w.runtime.list_images().await.unwrap().is_empty());
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn the_security_context_sets_the_user_and_capabilities() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("security").await;
        let config = w.pod("security");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let mut container = sh("who", "id -u; id -g; grep CapEff /proc/self/status");
        container.security_context.run_as_user = Some(1234);
        container.security_context.run_as_group = Some(5678);
        let id = w.run(&sandbox, &config, container).await;
        w.wait_for(&id, ContainerState::Exited).await;
        let lines: Vec<String> = w.log_lines(&id).await.into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines[..2], ["1234", "5678"]);
        // A non-root process keeps no effective capabilities.
        assert!(lines[2].ends_with("0000000000000000"), "{lines:?}");

        // Root with the default set minus KILL and NET_RAW.
        let mut container = sh("root", "id -u; grep CapBnd /proc/self/status");
        container.security_context.drop_capabilities = vec!["KILL".into(), "NET_RAW".into()];
        let id = w.run(&sandbox, &config, container).await;
        w.wait_for(&id, ContainerState::Exited).await;
        let lines: Vec<String> = w.log_lines(&id).await.into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines[0], "0");
        let mask = u64::from_str_radix(lines[1].rsplit('\t').next().unwrap().trim(), 16).unwrap();
        const CAP_KILL: u64 = 1 << 5;
        const CAP_NET_RAW: u64 = 1 << 13;
        const CAP_CHOWN: u64 = 1;
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        assert_eq!(
            mask & (CAP_KILL | CAP_NET_RAW | CAP_SYS_ADMIN),
            0,
            "{mask:x}"
        );
        assert_ne!(mask & CAP_CHOWN, 0);

        let mut refused = sh("nonroot", "true");
        refused.security_context.run_as_non_root = true;
        assert!(matches!(
            w.runtime.create_container(&sandbox, refused, &config).await,
            Err(RuntimeError::InvalidArgument(_))
        ));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_followed_log_yields_new_lines_and_ends_when_the_container_exits() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("follow").await;
        let config = w.pod("follow");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let id = w
            .run(
                &sandbox,
                &config,
                sh("talker", "echo one; sleep 1; echo two; sleep 1; echo three"),
            )
            .await;
        let lines: Vec<String> = w
            .runtime
            .container_logs(&id, LogOptions::all().follow())
            .await
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().line).into_owned())
            .collect()
            .await;
        assert_eq!(lines, ["one", "two", "three"]);
        assert_eq!(
            w.runtime.container_status(&id).await.unwrap().state,
            ContainerState::Exited
        );
        let tail: Vec<_> = w
            .runtime
            .container_logs(&id, LogOptions::all().tail(1))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(tail.len(), 1);
        assert!(matches!(
            w.runtime.container_logs("nope", LogOptions::all()).await,
            Err(RuntimeError::NotFound { .. })
        ));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_new_runtime_takes_over_the_running_containers_of_an_earlier_one() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("takeover").await;
        let config = w.pod("takeover");
        let socket = w.socket.clone();
        let namespace = w.namespace.clone();
        let state = w.root.join("state");
        let (pod, state_dir) = (config.clone(), state.clone());
        // The earlier node agent runs on a tokio runtime of its own and goes away with it.
        let (sandbox, id) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let earlier = ContainerdRuntime::connect(
                    ContainerdConfig::new(&socket)
                        .namespace(&namespace)
                        .state_dir(&state_dir),
                )
                .await
                .unwrap();
                let sandbox = earlier.run_pod_sandbox(pod.clone()).await.unwrap();
                let id = earlier
                    .create_container(
                        &sandbox,
                        sh("long", "echo before; sleep 2; echo after; exit 4"),
                        &pod,
                    )
                    .await
                    .unwrap();
                earlier.start_container(&id).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
                (sandbox, id)
            })
        })
        .join()
        .unwrap();
        let later = ContainerdRuntime::connect(
            ContainerdConfig::new(&w.socket)
                .namespace(&w.namespace)
                .state_dir(&state),
        )
        .await
        .unwrap();
        assert_eq!(
            later.container_status(&id).await.unwrap().state,
            ContainerState::Running
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while later.container_status(&id).await.unwrap().state != ContainerState::Exited {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The exit was recorded and the task deleted by the later runtime's watcher.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !w.ctr(&["tasks", "ls", "-q"]).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the exited task was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = later.container_status(&id).await.unwrap();
        assert_eq!(status.exit_code, Some(4));
        let lines: Vec<String> = later
            .container_logs(&id, LogOptions::all())
            .await
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().line).into_owned())
            .collect()
            .await;
        assert_eq!(lines, ["before", "after"]);
        later.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn containerd_keeps_the_contract_every_backend_keeps() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("contract").await;
        let long_running = ContainerConfig::new("main", IMAGE).command(["sleep", "1000"]);
        contract::check_contract(&w.runtime, w.pod("contract"), long_running).await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("badinput").await;
        let images = w.runtime.list_images().await.unwrap();
        let config = w.pod("badinput");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let objects = w.ctr(&["containers", "ls", "-q"]);
        let sandboxes = std::fs::read_dir(w.root.join("state/sandboxes"))
            .unwrap()
            .count();

        let mut nameless = config.clone();
        nameless.metadata.uid.clear();
        assert!(matches!(
            w.runtime.run_pod_sandbox(nameless).await,
            Err(RuntimeError::InvalidArgument(_))
        ));
        let mut escaping = sh("escape", "true");
        escaping.log_path = "../../../etc/cron.d/x".into();
        let mut bad_capability = sh("caps", "true");
        bad_capability.security_context.add_capabilities = vec!["CAP_FLY".into()];
        for bad in [escaping, bad_capability, ContainerConfig::new("", IMAGE)] {
            assert!(matches!(
                w.runtime.create_container(&sandbox, bad, &config).await,
                Err(RuntimeError::InvalidArgument(_))
            ));
        }
        // A tarball whose layer does not match its digest imports nothing.
        let mut corrupt = busybox_archive();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        assert!(matches!(
            w.runtime.import_image(corrupt.into()).await,
            Err(RuntimeError::InvalidArgument(_))
        ));

        assert_eq!(w.runtime.list_images().await.unwrap(), images);
        assert_eq!(w.ctr(&["containers", "ls", "-q"]), objects);
        assert_eq!(
            std::fs::read_dir(w.root.join("state/sandboxes"))
                .unwrap()
                .count(),
            sandboxes
        );
        assert!(w.ctr(&["snapshots", "ls"])[1..]
            .iter()
            .all(|l| l.trim_end().ends_with("Committed")));
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}
