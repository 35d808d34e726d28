//! `kubectl debug` on the embedded cluster: the ephemeral container it adds through
//! `pods/ephemeralcontainers` is started by the node's kubelet in the running Pod's sandbox
//! and reported running in `status.ephemeralContainerStatuses`.
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client`; `scripts/test` installs it when
//! missing).

use std::path::PathBuf;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::{eventually, within};
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(150);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_debug_runs_an_ephemeral_container_in_the_pod() {
    within(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-debug-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _dir = TempDir(dir.clone());
        let mut config =
            ClusterConfig::fake("127.0.0.1:0".parse().unwrap(), dir.join("kubeconfig"), 1);
        config.state_dir = dir.join("nodes");
        let cluster = EmbeddedCluster::start(config)
            .await
            .expect("the cluster starts");
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .await
            .expect("the node becomes Ready");
        let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [{ "name": "app", "image": "nginx:1.27" }] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        eventually(Duration::from_secs(60), "p Running and Ready", || async {
            pods.get("p").await.is_ok_and(|p| p.is_ready())
        })
        .await;

        let output = tokio::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                cluster.kubeconfig().to_str().unwrap(),
                "--cache-dir",
                dir.join("kube-cache").to_str().unwrap(),
                "debug",
                "pod/p",
                "--image=busybox",
                "-c",
                "debugger",
                "--target=app",
                "--",
                "sleep",
                "1000",
            ])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run \
                     scripts/test"
                )
            });
        assert!(
            output.status.success(),
            "kubectl debug failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        eventually(Duration::from_secs(60), "the debugger running", || async {
            let Ok(pod) = pods.get("p").await else {
                return false;
            };
            pod.status
                .and_then(|s| s.ephemeral_container_statuses)
                .unwrap_or_default()
                .iter()
                .any(|s| {
                    s.name == "debugger"
                        && s.state.as_ref().is_some_and(|st| st.running.is_some())
                        && !s.ready
                })
        })
        .await;
        let pod = pods.get("p").await.unwrap();
        assert!(pod.is_ready(), "the Pod stays Ready");
        let spec = pod.spec.unwrap();
        let debugger = &spec.ephemeral_containers.unwrap()[0];
        assert_eq!(debugger.target_container_name.as_deref(), Some("app"));
        assert_eq!(
            debugger.command.as_deref(),
            Some(&["sleep".to_string(), "1000".to_string()][..])
        );
        cluster.shutdown().await;
    })
    .await;
}
