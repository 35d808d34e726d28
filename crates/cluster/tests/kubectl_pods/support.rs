//! The harness of the `kubectl_pods` tests: an embedded cluster on the fakes (whose
//! containers run their commands), a kubeconfig for it, and runners for `kubectl` and
//! `curl`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::eventually;
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a Pod may take to run or a condition to hold.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// What a finished command did.
#[derive(Debug)]
pub(crate) struct Output {
    /// The exit code (`-1` when killed by a signal).
    pub(crate) code: i32,
    /// Its standard output, as bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its standard output, as text.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

impl Output {
    fn of(output: std::process::Output) -> Self {
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            bytes: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Whether the command exited 0.
    pub(crate) fn ok(&self) -> bool {
        self.code == 0
    }
}

/// A running cluster with its temporary directory, removed on drop.
pub(crate) struct Harness {
    pub(crate) dir: PathBuf,
    pub(crate) cluster: Option<EmbeddedCluster>,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    /// Starts a cluster of `nodes` nodes named after `test` and waits until they are Ready.
    pub(crate) async fn start(test: &str, nodes: usize) -> Self {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-kubectl-{test}-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = ClusterConfig::fake(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("kubeconfig"),
            nodes,
        );
        config.state_dir = dir.join("nodes");
        let cluster = EmbeddedCluster::start(config)
            .await
            .expect("the cluster starts");
        cluster
            .wait_until_ready(LIMIT)
            .await
            .expect("the nodes become Ready");
        Harness {
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            cache: dir.join("kube-cache"),
            dir,
            cluster: Some(cluster),
        }
    }

    /// The running cluster.
    pub(crate) fn cluster(&self) -> &EmbeddedCluster {
        self.cluster.as_ref().unwrap()
    }

    /// The Pods of `namespace`.
    pub(crate) fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.cluster().client(), namespace)
    }

    /// A kubectl command for this cluster, not started yet.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl with `args` to its end.
    pub(crate) async fn kubectl(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().await.unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run scripts/test"
            )
        });
        Output::of(output)
    }

    /// Runs kubectl with `args`, writing `input` to its stdin, to its end.
    pub(crate) async fn kubectl_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut command = self.command(args);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written concurrently with the reading of the output, so neither side blocks.
        let writer = tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        });
        let output = child.wait_with_output().await.unwrap();
        writer.await.unwrap();
        Output::of(output)
    }

    /// Runs kubectl with `args` until it succeeds with stdout holding `wanted` (or the
    /// limit passes); returns the last attempt.
    pub(crate) async fn kubectl_until(&self, args: &[&str], wanted: &str) -> Output {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let output = self.kubectl(args).await;
            if (output.ok() && output.stdout.contains(wanted))
                || tokio::time::Instant::now() > deadline
            {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts kubectl with `args` in the background.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().unwrap()
    }

    /// Creates the Pod `pod` (JSON) in `namespace` and waits until it is Ready.
    pub(crate) async fn run_pod(&self, namespace: &str, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let name = pod.metadata.name.clone().unwrap();
        let pods = self.pods(namespace);
        pods.create(&PostParams::default(), &pod).await.unwrap();
        self.ready(namespace, &name).await
    }

    /// Waits until Pod `name` of `namespace` is Ready, and returns it.
    pub(crate) async fn ready(&self, namespace: &str, name: &str) -> Pod {
        let pods = self.pods(namespace);
        eventually(LIMIT, &format!("{namespace}/{name} Ready"), || async {
            pods.get(name).await.is_ok_and(|p| p.is_ready())
        })
        .await;
        pods.get(name).await.unwrap()
    }

    /// Stops the cluster cleanly.
    pub(crate) async fn shutdown(mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
    }
}

/// Reads lines from `stdout` until `count` were read; returns them.
pub(crate) async fn read_lines(stdout: &mut BufReader<ChildStdout>, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines.len() < count {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).await.unwrap();
        assert!(read > 0, "the output ended after {lines:?}");
        lines.push(line.trim_end().to_string());
    }
    lines
}

/// Waits until `child` exits (at most `limit`); returns its exit code, `None` when it is
/// still running after `limit`.
pub(crate) async fn exits_within(child: &mut Child, limit: Duration) -> Option<i32> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Some(status.unwrap().code().unwrap_or(-1)),
        Err(_) => None,
    }
}

/// `curl` with `args` (silent, the status code on the last line); returns the HTTP status
/// and the body.
pub(crate) async fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run curl ({e}): install it or run scripts/test"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {args:?}: {text:?} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        }),
        body.to_string(),
    )
}

/// A file's bytes, for comparing copies.
pub(crate) fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
