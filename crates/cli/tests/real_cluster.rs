//! The seeds' scenarios on the multi-process cluster on real parts (internal test feature
//! `test-real-cluster`):
//! `scripts/cluster up` starts the API server on its own etcd, two controller managers and
//! two schedulers, and three nodes in network namespaces, each a kubelet on containerd with
//! the CNI bridge and host-gw routes and a proxy on iptables, every one its own `capstan`
//! process. The scenarios are the embedded cluster's (`crates/cluster/tests/common`), run one after the
//! other on the one cluster, with the namespace emptied in between.
//!
//! Needs root, `CAPSTAN_CONTAINERD_SOCKET` (a running containerd) and `CAPSTAN_CNI_PATH` (the
//! CNI plugins), plus etcd, iptables, curl and busybox-static: `scripts/test` provides them all.
#![cfg(feature = "test-real-cluster")]

#[path = "../../cluster/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod, Service};
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::Api;
use capstan_cluster::embedded::is_settled;
use common::Scenario;
use futures::FutureExt;

const NODES: usize = 3;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the real-cluster tests need a running containerd and the CNI \
             plugins; run them through scripts/test (as root), which installs and starts both"
        )
    })
}

/// The running cluster; dropping it runs `scripts/cluster down`.
struct RealCluster {
    dir: PathBuf,
    scenario: Scenario,
    etcd_endpoints: String,
}

impl RealCluster {
    fn up() -> RealCluster {
        let socket = required_env("CAPSTAN_CONTAINERD_SOCKET");
        let cni = required_env("CAPSTAN_CNI_PATH");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-real-cluster-{nonce}"));
        let output = Command::new("bash")
            .arg(repository().join("scripts/cluster"))
            .args(["up", &NODES.to_string()])
            .arg(&dir)
            .env("CAPSTAN_BIN", env!("CARGO_BIN_EXE_capstan"))
            .env("CAPSTAN_CONTAINERD_SOCKET", &socket)
            .env("CAPSTAN_CNI_PATH", &cni)
            // Its own etcd: a fresh /registry, whatever other tests left in theirs.
            .env_remove("CAPSTAN_ETCD_ENDPOINTS")
            .output()
            .expect("running scripts/cluster");
        let cluster = RealCluster {
            scenario: Scenario {
                client: capstan_cluster::apiserver::connect(&dir.join("kubeconfig"))
                    .unwrap_or_else(|e| {
                        panic!(
                            "scripts/cluster up failed ({e}): {}{}",
                            String::from_utf8_lossy(&output.stdout),
                            String::from_utf8_lossy(&output.stderr)
                        )
                    }),
            },
            etcd_endpoints: std::fs::read_to_string(dir.join("env"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("CAPSTAN_ETCD_ENDPOINTS="))
                .unwrap_or_default()
                .to_string(),
            dir,
        };
        assert!(
            output.status.success(),
            "scripts/cluster up failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(args)
            .output()
            .expect("running kubectl (scripts/test installs it)");
        assert!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    async fn wait_until_ready(&self) {
        let nodes: Api<Node> = Api::all(self.scenario.client.clone());
        loop {
            let ready = nodes
                .list(&ListParams::default())
                .await
                .map(|l| l.items.iter().filter(|n| is_settled(n)).count())
                .unwrap_or(0);
            if ready == NODES {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Empties `default` between scenarios: workloads, Pods, Services (but `kubernetes`,
    /// which the API server would restore within 10 s) and Events.
    async fn reset(&self) {
        self.kubectl(&[
            "delete",
            "deployments,pods,events",
            "--all",
            "--wait=false",
            "--grace-period=1",
        ]);
        self.kubectl(&[
            "delete",
            "services",
            "--field-selector",
            "metadata.name!=kubernetes",
        ]);
        let pods: Api<Pod> = self.scenario.api();
        while !pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.kubectl(&["delete", "events", "--all"]);
    }

    /// The pinned network namespace of the Pod whose IP is `ip`, on `node`.
    fn pod_netns(&self, node: &str, ip: &str) -> PathBuf {
        let prefix = self.dir.join("nodes").join(node);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(prefix.to_str().unwrap()) && m.ends_with("/net"))
            .map(PathBuf::from)
            .find(|netns| {
                let out = Command::new("nsenter")
                    .arg(format!("--net={}", netns.display()))
                    .args(["ip", "-4", "-o", "addr", "show"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
            })
            .unwrap_or_else(|| panic!("no pod network namespace with {ip} on {node}"))
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repository().join("scripts/cluster"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// Kills component `name` of the cluster in `dir` (`kubelet-node01`, `scheduler-a`, ...)
/// with SIGKILL, as a crash.
fn kill(dir: &Path, name: &str) {
    let pid = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid")))
        .unwrap_or_else(|e| panic!("no pid file for {name}: {e}"));
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {name}");
}

/// One HTTP GET from inside `netns`: the body (the answering Pod's hostname), if any.
fn get_from(netns: &Path, url: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["curl", "-s", "-m", "2", url])
        .output()
        .expect("nsenter and curl (scripts/test installs curl)");
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !body.is_empty()).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenarios_run_on_one_process_per_component_on_real_parts() {
    let cluster = RealCluster::up();
    tokio::time::timeout(Duration::from_secs(900), async {
        tokio::time::timeout(Duration::from_secs(90), cluster.wait_until_ready())
            .await
            .expect("the nodes become Ready");
        let s = &cluster.scenario;

        common::newkubia_five_to_three(s).await;
        cluster.reset().await;

        let (rs, pod) = common::nginx_deployment(s).await;
        let output = Command::new("etcdctl")
            .args(["--endpoints", &cluster.etcd_endpoints])
            .args(["get", "/registry", "--prefix", "--keys-only"])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl (scripts/test installs etcd-client)");
        let keys: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        common::assert_registry_keys(&keys, &rs, &pod);
        cluster.reset().await;

        common::node_name_and_selector(s).await;
        cluster.reset().await;

        // A client Pod on node03; the Service is reached from its network namespace.
        let client: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "client", "labels": {"role": "client"}},
            "spec": {"nodeName": "node03", "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap();
        s.api::<Pod>()
            .create(&PostParams::default(), &client)
            .await
            .unwrap();
        let client = s.running("role=client", 1, "nginx").await.remove(0);
        let client_ip = client.status.unwrap().pod_ip.unwrap();
        let netns = cluster.pod_netns("node03", &client_ip);
        let services: Api<Service> = s.api();
        common::rolling_update(s, move |pods: Vec<Pod>| {
            let (services, netns) = (services.clone(), netns.clone());
            async move {
                let ip = services
                    .get("web")
                    .await
                    .unwrap()
                    .spec
                    .unwrap()
                    .cluster_ip
                    .unwrap();
                let url = format!("http://{ip}/");
                let wanted: BTreeSet<String> =
                    pods.iter().map(|p| common::name(&p.metadata)).collect();
                // Every backend answers, and nothing else does.
                let mut answered = BTreeSet::new();
                loop {
                    let netns = netns.clone();
                    let url = url.clone();
                    if let Some(body) = tokio::task::spawn_blocking(move || get_from(&netns, &url))
                        .await
                        .unwrap()
                    {
                        if wanted.contains(&body) {
                            answered.insert(body);
                        } else {
                            answered.clear();
                        }
                    }
                    if answered == wanted {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            .boxed()
        })
        .await;
        cluster.reset().await;

        into_the_pods(&cluster).await;
        cluster.reset().await;

        // Both leaders crash: the controller manager's and the scheduler's standbys take over.
        let dir = cluster.dir.clone();
        common::leader_failover(s, move |manager, scheduler| {
            async move {
                kill(&dir, &manager);
                kill(&dir, &scheduler);
            }
            .boxed()
        })
        .await;
        cluster.reset().await;

        // Last, as it takes a node away: its kubelet dies.
        common::lost_node(s, {
            let dir = cluster.dir.clone();
            move |node| async move { kill(&dir, &format!("kubelet-{node}")) }.boxed()
        })
        .await;
    })
    .await
    .expect("the scenarios finish in time");
}

/// Everyday commands into a Pod on a node: `kubectl logs`, `exec` (its exit code),
/// `port-forward` to the Pod's httpd through the API server and the node's kubelet (reached
/// in the nodes' namespaces), and a process in the Pod calling the API server with its
/// service account token through the `kubernetes` Service's ClusterIP.
async fn into_the_pods(cluster: &RealCluster) {
    let s = &cluster.scenario;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tools", "labels": {"role": "tools"}},
        "spec": {"nodeName": "node02", "containers": [{
            "name": "web",
            "image": "nginx",
            "command": ["sh", "-c", "echo started on $(hostname); mkdir -p /tmp/www && \
                hostname >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
        }]},
    }))
    .unwrap();
    s.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    s.running("role=tools", 1, "nginx").await;

    // Logs and exec reach the kubelet on node02 through the API server.
    let logs = cluster.kubectl(&["logs", "tools"]);
    assert_eq!(logs.trim(), "started on tools", "kubectl logs");
    let namespace = cluster.kubectl(&[
        "exec",
        "tools",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
    ]);
    assert_eq!(namespace, "default", "the projected service account volume");
    let status = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.dir.join("kubeconfig"))
        .args(["exec", "tools", "--", "sh", "-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "kubectl exec passes the exit code on"
    );

    // The kubelet gave the container the `kubernetes` Service's variables.
    let env = cluster.kubectl(&["exec", "tools", "--", "env"]);
    assert!(
        env.lines()
            .any(|l| l == "KUBERNETES_SERVICE_HOST=10.96.0.1"),
        "the container's environment: {env}\nkubelet log: {}",
        std::fs::read_to_string(cluster.dir.join("logs/kubelet-node02.log")).unwrap_or_default()
    );

    // The Pod's process calls the API server with its token, through the ClusterIP the
    // node's proxy forwards to the server's address on the LAN: it is who the token says.
    let review = cluster.kubectl(&[
        "exec",
        "tools",
        "--",
        "sh",
        "-c",
        "wget -q -O - \
         --header \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" \
         --header 'Content-Type: application/json' \
         --post-data '{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}' \
         http://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews",
    ]);
    let review: serde_json::Value = serde_json::from_str(&review)
        .unwrap_or_else(|e| panic!("a SelfSubjectReview, not {review:?}: {e}"));
    assert_eq!(
        review["status"]["userInfo"]["username"], "system:serviceaccount:default:default",
        "{review}"
    );
    assert_eq!(
        review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"][0], "tools",
        "{review}"
    );

    // port-forward carries HTTP to the Pod's httpd.
    let mut forward = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.dir.join("kubeconfig"))
        .args(["port-forward", "pod/tools", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Read its output to the end (a closed pipe would kill it on its next line); the
    // first line names the local port.
    let (first_line, lines) = std::sync::mpsc::channel();
    let stdout = forward.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = first_line.send(line.unwrap_or_default());
        }
    });
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("kubectl port-forward prints where it listens");
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("kubectl port-forward printed {line:?}"))
        .to_string();
    let body = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "-m", "10", &format!("http://127.0.0.1:{port}/")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(
        String::from_utf8_lossy(&body.stdout).trim(),
        "tools",
        "port-forward to the Pod's httpd"
    );
}
