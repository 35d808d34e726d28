//! The kubelet on a real node: containerd (with runc and overlayfs) runs the Pods, and the
//! real CNI `bridge` and `host-local` plugins wire their network namespaces. The bridge lives
//! in a network namespace the test makes ("the node"), so the host's own network is left
//! alone. Internal test feature `test-real-node`; needs root, a containerd (`CAPSTAN_CONTAINERD_SOCKET`), the
//! CNI plugins (`CAPSTAN_CNI_PATH`) and busybox-static, all of which `scripts/test` provides.

#![cfg(feature = "test-real-node")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::Api;
use capstan_kubelet::{Kubelet, KubeletConfig};
use capstan_net::cni::{CniNetwork, NetworkConfig};
use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::{ContainerFilter, ContainerRuntime, LogOptions, PodSandboxFilter};
use futures::StreamExt;
use serde_json::json;

const IMAGE: &str = "capstan.test/busybox:1";
const NODE: &str = "real-node-1";

fn env_path(var: &str, how: &str) -> PathBuf {
    let value = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run these tests through scripts/test, which {how}")
    });
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "{var}={} does not exist: run these tests through scripts/test, which {how}",
        path.display()
    );
    path
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e} (install iproute2; scripts/test does)"));
    assert!(
        out.status.success(),
        "{args:?} failed (these tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace standing for the node, deleted on drop.
struct NodeNetns {
    name: String,
    dir: PathBuf,
}

impl NodeNetns {
    fn new() -> Self {
        let name = format!("kn-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!("capstan-kubelet-real-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        NodeNetns { name, dir }
    }

    fn network(&self, cni_path: &Path) -> CniNetwork {
        let config = NetworkConfig::from_value(json!({
            "name": "pods",
            "cniVersion": "1.0.0",
            "plugins": [{
                "type": "bridge",
                "bridge": "kbr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.252.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.dir.join("ipam"),
                },
            }],
        }))
        .unwrap();
        CniNetwork::builder(config)
            .plugin_dirs([cni_path.to_path_buf()])
            .cache_dir(self.dir.join("cache"))
            .node_netns(self.name.clone())
            .timeout(Duration::from_secs(20))
            .build()
    }

    /// Addresses host-local still holds.
    fn allocated(&self) -> usize {
        std::fs::read_dir(self.dir.join("ipam").join("pods"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn busybox() -> Bytes {
    let binary = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install Debian's busybox-static (scripts/test does)");
    Bytes::from(
        ImageArchive::busybox(IMAGE, binary, &["sh", "echo", "sleep", "true"])
            .build()
            .unwrap(),
    )
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_pod_runs_restarts_reports_its_exit_and_leaves_nothing_behind() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let socket = env_path(
            "CAPSTAN_CONTAINERD_SOCKET",
            "starts a containerd (scripts/lib-containerd.sh)",
        );
        let cni_path = env_path(
            "CAPSTAN_CNI_PATH",
            "installs containernetworking-plugins (scripts/lib-net-cni.sh)",
        );
        let node = NodeNetns::new();
        let namespace = format!("capstan-kubelet-{}", std::process::id());
        let runtime = Arc::new(
            ContainerdRuntime::connect(
                ContainerdConfig::new(&socket)
                    .namespace(&namespace)
                    .state_dir(node.dir.join("state")),
            )
            .await
            .expect("connecting to containerd"),
        );
        runtime.import_image(busybox()).await.unwrap();

        let client = capstan_apiserver::testing::client();
        let kubelet = Kubelet::builder(KubeletConfig::new(NODE).internal_ip("192.168.0.2"))
            .client(client.clone())
            .runtime(runtime.clone())
            .network(Arc::new(node.network(&cni_path)))
            .build()
            .unwrap()
            .start();

        // It prints, exits 3, and is restarted (restartPolicy Always).
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "crasher", "namespace": "default"},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo hello from busybox; sleep 1; exit 3"]}],
            },
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod).await.unwrap();

        let status = wait_for("a restart after exit code 3", async || {
            let status = pods.get("crasher").await.ok()?.status?;
            let c = status.container_statuses.as_ref()?.first()?.clone();
            let last = c.last_state.as_ref()?.terminated.as_ref()?;
            (c.restart_count >= 1 && last.exit_code == 3).then_some(status)
        })
        .await;
        let ip = status.pod_ip.clone().expect("the pod has an IP");
        assert!(ip.starts_with("10.252.0."), "{ip}");

        // Its log is in the file the runtime wrote.
        let containers = runtime
            .list_containers(ContainerFilter::default())
            .await
            .unwrap();
        let first = containers.first().expect("a container");
        let mut log = runtime
            .container_logs(&first.id, LogOptions::default())
            .await
            .unwrap();
        let line = log.next().await.expect("a log line").unwrap();
        assert!(String::from_utf8_lossy(&line.line).contains("hello from busybox"));
        assert_eq!(node.allocated(), 1);

        // Deleting the Pod stops and removes everything it had.
        pods.delete("crasher", &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the pod to be gone", async || {
            pods.get_opt("crasher").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(runtime
            .list_pod_sandboxes(PodSandboxFilter::default())
            .await
            .unwrap()
            .is_empty());
        assert!(runtime
            .list_containers(ContainerFilter::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(node.allocated(), 0, "the pod's address was released");
        drop(kubelet);
    })
    .await
    .expect("the test timed out");
}
