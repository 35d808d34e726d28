//! Pod start latency of the containerd backend, against `ctr run` on the same containerd in
//! the same run.
//!
//! ```text
//! scripts/bench-containerd
//! ```
//!
//! starts a throwaway containerd and runs `cargo bench -p capstan-runtime --features
//! containerd --bench pod_start` with `CAPSTAN_CONTAINERD_SOCKET` set (as root). Measured:
//!
//! - `pod_start/capstan`: a sandbox (pinned namespaces) and one busybox `sleep` container,
//!   until the container is running. Teardown is not timed.
//! - `pod_run_true/capstan`: the whole cycle of a pod whose container runs `true`: sandbox,
//!   create, start, wait for the exit, remove the sandbox.
//! - `pod_run_true/ctr`: `ctr -a <socket> -n capstan-bench run --rm <image> <id> true`, the
//!   same cycle for one container through containerd's own client.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::*;
use criterion::{criterion_group, criterion_main, Criterion};

const IMAGE: &str = "capstan.bench/busybox:1";
const NAMESPACE: &str = "capstan-bench";

static NEXT: AtomicU64 = AtomicU64::new(0);

fn socket() -> String {
    std::env::var("CAPSTAN_CONTAINERD_SOCKET").expect(
        "CAPSTAN_CONTAINERD_SOCKET is not set: run scripts/bench-containerd, which starts containerd",
    )
}

fn setup(rt: &tokio::runtime::Runtime) -> ContainerdRuntime {
    let state = std::env::temp_dir().join("capstan-bench-containerd");
    let runtime = rt
        .block_on(ContainerdRuntime::connect(
            ContainerdConfig::new(socket())
                .namespace(NAMESPACE)
                .state_dir(&state),
        ))
        .expect("containerd named by CAPSTAN_CONTAINERD_SOCKET");
    let binary = std::fs::read("/bin/busybox").expect("busybox-static's /bin/busybox");
    let archive = ImageArchive::busybox(IMAGE, binary, &["sh", "sleep", "true"])
        .build()
        .unwrap();
    rt.block_on(runtime.import_image(archive.into())).unwrap();
    runtime
}

fn pod(name: &str) -> PodSandboxConfig {
    let dir = std::env::temp_dir().join("capstan-bench-logs").join(name);
    PodSandboxConfig::new(PodSandboxMetadata::new(name, "bench", name))
        .log_directory(dir.to_string_lossy().into_owned())
}

async fn start_pod(runtime: &ContainerdRuntime, command: &[&str]) -> (String, String) {
    let name = format!("pod-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let config = pod(&name);
    let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
    let container = ContainerConfig::new("main", IMAGE).command(command.iter().copied());
    let id = runtime
        .create_container(&sandbox, container, &config)
        .await
        .unwrap();
    runtime.start_container(&id).await.unwrap();
    (sandbox, id)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = setup(&rt);

    let mut group = c.benchmark_group("pod_start");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("capstan", |b| {
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let begun = Instant::now();
                    let (sandbox, id) = start_pod(&runtime, &["sleep", "1000"]).await;
                    let state = runtime.container_status(&id).await.unwrap().state;
                    timed += begun.elapsed();
                    assert_eq!(state, ContainerState::Running);
                    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
                }
                timed
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pod_run_true");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("capstan", |b| {
        b.to_async(&rt).iter(|| async {
            let (sandbox, id) = start_pod(&runtime, &["true"]).await;
            while runtime.container_status(&id).await.unwrap().state != ContainerState::Exited {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        })
    });
    let socket = socket();
    group.bench_function("ctr", |b| {
        b.iter(|| {
            let id = format!("ctr-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let status = Command::new("ctr")
                .args([
                    "-a", &socket, "-n", NAMESPACE, "run", "--rm", IMAGE, &id, "true",
                ])
                .status()
                .expect("ctr runs");
            assert!(status.success());
        })
    });
    group.finish();
    for dir in ["capstan-bench-containerd", "capstan-bench-logs"] {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(dir));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
