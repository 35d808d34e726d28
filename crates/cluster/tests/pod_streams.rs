//! "Into the pods" on the embedded cluster, end to end: the real `kubectl logs`, `exec`,
//! `top` and `get --raw .../nodes/{name}/proxy/...` go through the API server, which reaches
//! the node's kubelet with its own credential (reviewed by the API server as
//! `kube-apiserver-kubelet-client`).
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client`; `scripts/test` installs it when
//! missing).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::{eventually, within};
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(150);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs kubectl with `args` (and `stdin`, if any) against the cluster; returns its exit
/// success, stdout and stderr.
async fn kubectl(
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (bool, String, String) {
    let mut command = tokio::process::Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run scripts/test"
        )
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let output = child.wait_with_output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_exec_proxy_and_top_reach_the_node_s_kubelet() {
    within(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-pod-streams-{nonce}"));
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
            "spec": { "containers": [{
                "name": "app",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo hello from p; sleep 3600"],
            }] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        eventually(Duration::from_secs(60), "p Running and Ready", || async {
            pods.get("p").await.is_ok_and(|p| p.is_ready())
        })
        .await;
        let node = pods
            .get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .unwrap();
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        let cache = dir.join("kube-cache");
        let run = |args: Vec<String>, stdin: Option<&'static [u8]>| {
            let kubeconfig = kubeconfig.clone();
            let cache = cache.clone();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                kubectl(&kubeconfig, &cache, &args, stdin).await
            }
        };
        let args = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();

        let mut logs = (false, String::new(), String::new());
        for _ in 0..50 {
            logs = run(args(&["logs", "p"]), None).await;
            if logs.0 && logs.1.contains("hello from p") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(logs.1.contains("hello from p"), "kubectl logs: {logs:?}");

        let exec = run(args(&["exec", "p", "--", "echo", "hi", "there"]), None).await;
        assert!(exec.0, "kubectl exec: {exec:?}");
        assert_eq!(exec.1, "hi there\n");
        let piped = run(args(&["exec", "-i", "p", "--", "cat"]), Some(b"piped in\n")).await;
        assert!(piped.0, "kubectl exec -i: {piped:?}");
        assert_eq!(piped.1, "piped in\n");
        let failing = run(args(&["exec", "p", "--", "false"]), None).await;
        assert!(
            !failing.0,
            "the command's exit code reaches kubectl: {failing:?}"
        );

        let healthz = run(
            args(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/healthz"),
            ]),
            None,
        )
        .await;
        assert!(healthz.0, "nodes/proxy: {healthz:?}");
        assert_eq!(healthz.1.trim(), "ok");
        let proxied_pods = run(
            args(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/pods")]),
            None,
        )
        .await;
        assert!(proxied_pods.0, "nodes/proxy: {proxied_pods:?}");
        assert!(proxied_pods.1.contains("\"PodList\""), "{proxied_pods:?}");

        let mut top = (false, String::new(), String::new());
        for _ in 0..50 {
            top = run(args(&["top", "node"]), None).await;
            if top.0 && top.1.contains(&node) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(top.0 && top.1.contains(&node), "kubectl top node: {top:?}");
        let mut top = (false, String::new(), String::new());
        for _ in 0..50 {
            top = run(args(&["top", "pod", "p"]), None).await;
            if top.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(top.0 && top.1.contains("p "), "kubectl top pod: {top:?}");

        // Port forwarding: an echo server in a Pod, reached through kubectl's local port.
        let echo: Pod = serde_json::from_value(json!({
            "metadata": { "name": "echo" },
            "spec": { "containers": [{
                "name": "app",
                "image": "busybox:1.36",
                "command": ["nc", "-lk", "-p", "7000", "-e", "cat"],
                "ports": [{ "containerPort": 7000 }],
            }] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &echo).await.unwrap();
        eventually(
            Duration::from_secs(60),
            "echo Running and Ready",
            || async { pods.get("echo").await.is_ok_and(|p| p.is_ready()) },
        )
        .await;
        let mut forward = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["port-forward", "pod/echo", ":7000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(forward.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap();
        // `Forwarding from 127.0.0.1:43721 -> 7000`
        let local = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"))
            .to_string();
        let mut connection = tokio::net::TcpStream::connect(&local).await.unwrap();
        connection.write_all(b"through the tunnel\n").await.unwrap();
        let mut echoed = vec![0u8; 19];
        tokio::io::AsyncReadExt::read_exact(&mut connection, &mut echoed)
            .await
            .unwrap();
        assert_eq!(echoed, b"through the tunnel\n");
        drop(connection);
        let _ = forward.kill().await;
        cluster.shutdown().await;
    })
    .await;
}
