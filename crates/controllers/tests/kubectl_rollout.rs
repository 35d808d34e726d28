//! The real `kubectl` against the API server with the built-in controllers running, the
//! fake scheduler and kubelets standing in for nodes: `rollout status`, `set image`,
//! `rollout history`, `rollout undo`, `scale`, and the endpoints of a Service.
//!
//! Needs `kubectl` on the PATH (`scripts/test` installs one when missing) and the seed
//! manifests in the repository's `examples/manifests`.

use capstan_api::compat::Maybe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use capstan_api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan_api::kube_core::params::ListParams;
use capstan_api::{Api, Client};
use capstan_apiserver::http::ApiServer;
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions};
use capstan_controllers::manager::ControllerManager;

/// A cluster on the fake backends, served over HTTP, and a kubeconfig for it.
struct Cluster {
    client: Arc<dyn Client>,
    kubeconfig: PathBuf,
    dir: PathBuf,
    _server: ApiServer,
    _scheduler: FakeScheduler,
    _kubelet: FakeKubelet,
    manager: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.manager.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let registry = capstan_apiserver::testing::registry();
        let client: Arc<dyn Client> = registry.clone();
        let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind a loopback port");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-rollout-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let nodes = vec!["node01".to_string(), "node02".to_string()];
        let scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let options = KubeletOptions {
            startup_delay: Duration::from_millis(50),
            ..KubeletOptions::default()
        };
        let kubelet = FakeKubelet::start(client.clone(), nodes, options);
        let manager = ControllerManager::new(client.clone()).with_builtins();
        let manager = tokio::spawn(async move {
            manager
                .run(std::future::pending())
                .await
                .expect("the controllers run");
        });
        Cluster {
            client,
            kubeconfig,
            dir,
            _server: server,
            _scheduler: scheduler,
            _kubelet: kubelet,
            manager,
        }
    }

    /// Runs kubectl; a call still running after 90 s fails the test with the cluster's state.
    async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(90), output).await {
            Ok(output) => output.unwrap_or_else(|e| {
                panic!("cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run scripts/test")
            }),
            Err(_) => panic!(
                "kubectl {} did not finish in 90 s; the cluster:\n{}",
                args.join(" "),
                self.state().await
            ),
        }
    }

    /// The Deployments, ReplicaSets and Pods of `default`, one line each, for failure messages.
    async fn state(&self) -> String {
        let mut lines = Vec::new();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), "default");
        for d in deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
        {
            lines.push(format!(
                "deployment {} generation {:?} spec.replicas {:?} status {:?}",
                d.metadata.name.unwrap_or_default(),
                d.metadata.generation,
                d.spec.into_opt().and_then(|s| s.replicas),
                d.status
            ));
        }
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), "default");
        for rs in sets.list(&ListParams::default()).await.unwrap().items {
            lines.push(format!(
                "replicaset {} annotations {:?} spec.replicas {:?} status {:?}",
                rs.metadata.name.unwrap_or_default(),
                rs.metadata.annotations,
                rs.spec.into_opt().and_then(|s| s.replicas),
                rs.status
            ));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        for pod in pods.list(&ListParams::default()).await.unwrap().items {
            let spec = pod.spec.unwrap_or_default();
            let status = pod.status.unwrap_or_default();
            lines.push(format!(
                "pod {} owner {:?} image {:?} node {:?} phase {:?} deleting {:?}",
                pod.metadata.name.unwrap_or_default(),
                pod.metadata
                    .owner_references
                    .unwrap_or_default()
                    .first()
                    .map(|o| o.name.clone()),
                spec.containers.first().and_then(|c| c.image.clone()),
                spec.node_name,
                status.phase,
                pod.metadata.deletion_timestamp.map(|t| t.0.to_string())
            ));
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        for event in events.list(&ListParams::default()).await.unwrap().items {
            lines.push(format!(
                "event {} {} x{:?}: {}",
                event.involved_object.name.unwrap_or_default(),
                event.reason.unwrap_or_default(),
                event.count,
                event.message.unwrap_or_default()
            ));
        }
        lines.join("\n")
    }

    /// Runs kubectl, failing the test if it fails; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).await;
        assert!(
            output.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the Deployment's live (not terminating) Pods are `count`, all of `image`;
    /// after 60 s it fails the test with the cluster's state.
    async fn pods_settle(&self, count: usize, image: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the pods did not settle at {count} of {image} in 60 s; the cluster:\n{}",
                    self.state().await
                );
            }
            let live: Vec<Pod> = pods
                .list(&ListParams::default().labels("app=newkubia"))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let images_match = live.iter().all(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers[0].image.as_deref())
                    == Some(image)
            });
            if live.len() == count && images_match {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn manifest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/manifests")
        .join(name);
    assert!(
        path.is_file(),
        "the seed manifest is expected at {}, in the repository's examples/manifests",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rolls_out_shows_history_rolls_back_and_scales_a_deployment() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let cluster = Cluster::start().await;
        let deployment = manifest("newkubia-deployment.yaml");
        cluster
            .ok(&["apply", "-f", deployment.to_str().unwrap()])
            .await;
        let status = cluster
            .ok(&["rollout", "status", "deployment/newkubia", "--timeout=60s"])
            .await;
        assert!(status.contains("successfully rolled out"), "{status}");
        cluster.pods_settle(5, "luksa/kubia:v2").await;

        cluster
            .ok(&[
                "set",
                "image",
                "deployment/newkubia",
                "newkubia=luksa/kubia:v3",
            ])
            .await;
        let status = cluster
            .ok(&["rollout", "status", "deployment/newkubia", "--timeout=60s"])
            .await;
        assert!(status.contains("successfully rolled out"), "{status}");
        cluster.pods_settle(5, "luksa/kubia:v3").await;

        let history = cluster
            .ok(&["rollout", "history", "deployment/newkubia"])
            .await;
        let revisions: Vec<&str> = history
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|first| first.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(revisions, ["1", "2"], "{history}");
        let second = cluster
            .ok(&["rollout", "history", "deployment/newkubia", "--revision=2"])
            .await;
        assert!(second.contains("luksa/kubia:v3"), "{second}");

        let undo = cluster
            .ok(&["rollout", "undo", "deployment/newkubia"])
            .await;
        assert!(undo.contains("rolled back"), "{undo}");
        cluster
            .ok(&["rollout", "status", "deployment/newkubia", "--timeout=60s"])
            .await;
        cluster.pods_settle(5, "luksa/kubia:v2").await;
        let image = cluster
            .ok(&[
                "get",
                "deployment",
                "newkubia",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .await;
        assert_eq!(image, "luksa/kubia:v2", "the old template is back");
        let history = cluster
            .ok(&["rollout", "history", "deployment/newkubia"])
            .await;
        assert!(
            history.lines().any(|l| l.starts_with('3')),
            "the rollback is revision 3: {history}"
        );

        let scaled = cluster
            .ok(&["scale", "deployment", "newkubia", "--replicas=3"])
            .await;
        assert!(scaled.contains("scaled"), "{scaled}");
        cluster.pods_settle(3, "luksa/kubia:v2").await;
        let events = cluster
            .ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=ScalingReplicaSet",
                "-o",
                "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
            ])
            .await;
        // Past ten distinct messages for one object and reason, Kubernetes' event correlator
        // combines them into one Event ("(combined from similar events): ..."), as here.
        assert!(
            events
                .lines()
                .any(|m| m.contains("Scaled down replica set newkubia-")
                    && m.ends_with("from 5 to 3")),
            "{events}"
        );
    })
    .await
    .expect("the kubectl rollout test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_a_services_endpoints_follow_its_ready_pods() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = Cluster::start().await;
        let manifest = manifest("rolling-update.yaml");
        cluster
            .ok(&["apply", "-f", manifest.to_str().unwrap()])
            .await;
        cluster
            .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
            .await;
        loop {
            let addresses = cluster
                .ok(&[
                    "get",
                    "endpoints",
                    "web",
                    "-o",
                    "jsonpath={.subsets[*].addresses[*].ip}",
                ])
                .await;
            if addresses.split_whitespace().count() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wide = cluster.ok(&["get", "endpoints", "web"]).await;
        assert!(wide.contains(":8080"), "{wide}");
    })
    .await
    .expect("the kubectl endpoints test timed out");
}
