//! Container resources on a real containerd (feature `containerd`): the limits of a
//! container's config become its cgroup's settings and its processes' OOM score
//! adjustment, and a container killed by the kernel's OOM killer ends with exit code 137
//! and reason `OOMKilled`.
//!
//! `scripts/test` starts a throwaway containerd and exports `CAPSTAN_CONTAINERD_SOCKET`; to
//! run these alone: `source scripts/lib.sh scripts/lib-containerd.sh`, then
//! `capstan_start_containerd /tmp/containerd` and `cargo test -p capstan-runtime --features
//! containerd --test containerd_resources` as root. The busybox image is built from
//! Debian's `busybox-static`.
#![cfg(feature = "containerd")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::*;
use futures::StreamExt;

const LIMIT: Duration = Duration::from_secs(90);
const IMAGE: &str = "capstan.test/busybox-resources:1";
const APPLETS: &[&str] = &["sh", "cat", "sleep", "head", "tail", "tr", "echo", "true"];
/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent cgroup the runtime puts containers under by default.
const CGROUP_PARENT: &str = "capstan";

fn socket() -> String {
    let socket = std::env::var("CAPSTAN_CONTAINERD_SOCKET").unwrap_or_else(|_| {
        panic!(
            "CAPSTAN_CONTAINERD_SOCKET is not set: run these tests through scripts/test, which \
             starts a containerd (see scripts/lib-containerd.sh)"
        )
    });
    assert!(
        Path::new(&socket).exists(),
        "CAPSTAN_CONTAINERD_SOCKET={socket} does not exist: start containerd with scripts/test"
    );
    socket
}

/// One test's world: its own containerd namespace and directories, the busybox image.
struct World {
    runtime: ContainerdRuntime,
    root: PathBuf,
}

impl World {
    async fn new(test: &str) -> World {
        let socket = socket();
        let root = std::env::temp_dir().join(format!("capstan-containerd-resources-{test}"));
        let runtime = ContainerdRuntime::connect(
            ContainerdConfig::new(&socket)
                .namespace(format!("capstan-test-resources-{test}"))
                .state_dir(root.join("state")),
        )
        .await
        .unwrap_or_else(|e| panic!("containerd at {socket} is unreachable ({e})"));
        for sandbox in runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
        {
            runtime.remove_pod_sandbox(&sandbox.id).await.unwrap();
        }
        let busybox = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install Debian's busybox-static");
        let archive = ImageArchive::busybox(IMAGE, busybox, APPLETS)
            .build()
            .unwrap();
        runtime.import_image(archive.into()).await.unwrap();
        World { runtime, root }
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
    }

    async fn wait_for(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
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

    /// The container's first stdout line, waiting for it.
    async fn first_line(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stream = self
                .runtime
                .container_logs(id, LogOptions::all())
                .await
                .unwrap();
            let lines: Vec<String> = stream
                .filter_map(|e| async move {
                    let e = e.ok()?;
                    (e.stream == OutputStream::Stdout)
                        .then(|| String::from_utf8_lossy(&e.line).into_owned())
                })
                .collect()
                .await;
            if let Some(line) = lines.into_iter().next() {
                return line;
            }
            assert!(Instant::now() < deadline, "{id} wrote nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A file of the container's cgroup, trimmed: under the unified hierarchy (v2), else under
/// its `controller` (v1).
fn cgroup_file(id: &str, controller: &str, file: &str) -> String {
    let root = Path::new(CGROUP_ROOT);
    let base = if cgroup_v2() {
        root.to_path_buf()
    } else {
        root.join(controller)
    };
    let path = base.join(CGROUP_PARENT).join(id).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn cgroup_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

#[tokio::test]
async fn limits_become_the_containers_cgroup_settings_and_oom_score_adjustment() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("limits").await;
        let config = w.pod("limits");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let resources = LinuxContainerResources::default()
            .cpu(512, 50_000, 100_000)
            .memory_limit(64 << 20)
            .oom_score_adj(873)
            .pids_limit(64);
        let container = ContainerConfig::new("limited", IMAGE)
            .command(["sh", "-c", "cat /proc/self/oom_score_adj; sleep 60"])
            .resources(resources);
        let id = w
            .runtime
            .create_container(&sandbox, container, &config)
            .await
            .unwrap();
        w.runtime.start_container(&id).await.unwrap();
        w.wait_for(&id, ContainerState::Running).await;
        assert_eq!(w.first_line(&id).await, "873");
        if cgroup_v2() {
            assert_eq!(cgroup_file(&id, "", "cpu.max"), "50000 100000");
            assert_eq!(
                cgroup_file(&id, "", "memory.max"),
                (64u64 << 20).to_string()
            );
            assert_eq!(cgroup_file(&id, "", "pids.max"), "64");
        } else {
            assert_eq!(cgroup_file(&id, "cpu", "cpu.shares"), "512");
            assert_eq!(cgroup_file(&id, "cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(cgroup_file(&id, "cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(
                cgroup_file(&id, "memory", "memory.limit_in_bytes"),
                (64u64 << 20).to_string()
            );
            assert_eq!(cgroup_file(&id, "pids", "pids.max"), "64");
        }
        // No limits: no quota and no memory limit.
        let free = ContainerConfig::new("free", IMAGE).command(["sleep", "60"]);
        let free = w
            .runtime
            .create_container(&sandbox, free, &config)
            .await
            .unwrap();
        w.runtime.start_container(&free).await.unwrap();
        w.wait_for(&free, ContainerState::Running).await;
        if cgroup_v2() {
            assert!(cgroup_file(&free, "", "cpu.max").starts_with("max"));
            assert_eq!(cgroup_file(&free, "", "memory.max"), "max");
        } else {
            assert_eq!(cgroup_file(&free, "cpu", "cpu.cfs_quota_us"), "-1");
        }
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed_with_exit_code_137() {
    tokio::time::timeout(LIMIT, async {
        let w = World::new("oom").await;
        let config = w.pod("oom");
        let sandbox = w.runtime.run_pod_sandbox(config.clone()).await.unwrap();
        // `tail` keeps the last line in memory, and /dev/zero has no line end.
        let hog = ContainerConfig::new("hog", IMAGE)
            .command(["tail", "/dev/zero"])
            .resources(LinuxContainerResources::default().memory_limit(20 << 20));
        let id = w
            .runtime
            .create_container(&sandbox, hog, &config)
            .await
            .unwrap();
        w.runtime.start_container(&id).await.unwrap();
        let status = w.wait_for(&id, ContainerState::Exited).await;
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (Some(137), "OOMKilled"),
            "{status:?}"
        );
        // A process that ends with an error of its own is no OOM kill, even with a limit.
        let failing = ContainerConfig::new("failing", IMAGE)
            .command(["sh", "-c", "exit 137"])
            .resources(LinuxContainerResources::default().memory_limit(20 << 20));
        let failing = w
            .runtime
            .create_container(&sandbox, failing, &config)
            .await
            .unwrap();
        w.runtime.start_container(&failing).await.unwrap();
        let status = w.wait_for(&failing, ContainerState::Exited).await;
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (Some(137), "Error")
        );
        w.runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    })
    .await
    .expect("in time");
}
