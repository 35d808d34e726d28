//! The everyday `kubectl` commands against a real node: an API server over HTTP (with service
//! accounts and its kubelet client credential), one kubelet on containerd with the real CNI
//! bridge, and the real `kubectl logs`, `exec`, `cp`, `attach` and `port-forward` reaching a
//! busybox Pod through the API server and the kubelet's streaming server.
//!
//! Internal test feature `test-real-node`; needs root, a containerd
//! (`CAPSTAN_CONTAINERD_SOCKET`), the CNI plugins (`CAPSTAN_CNI_PATH`), busybox-static and
//! `kubectl`, all of which `scripts/test` provides.

#![cfg(feature = "test-real-node")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::{Api, Client};
use capstan_apiserver::http::pod_streams::KubeletClientConfig;
use capstan_apiserver::http::{ApiServer, ApiServerOptions};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_apiserver::serviceaccount::{
    ServiceAccountAdmission, ServiceAccountKeys, ServiceAccountTokens, TokenIssuer,
};
use capstan_kubelet::{Kubelet, KubeletConfig, RunningKubelet};
use capstan_net::cni::{CniNetwork, NetworkConfig};
use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::{ContainerFilter, ContainerRuntime, ImageSpec, PodSandboxFilter};
use futures::FutureExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

const IMAGE: &str = "capstan.test/busybox:1";
const NODE: &str = "real-kubectl-node";
const POD: &str = "tools";
/// What the API server publishes as the cluster's CA (the root CA publisher's ConfigMap).
const CA: &str = "-----BEGIN CERTIFICATE-----\nnot a real CA\n-----END CERTIFICATE-----\n";
/// The applets of the test image: the Pod's commands and what kubectl runs in it (`tar`).
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "true", "cat", "tar", "httpd", "env", "ls", "mkdir", "wc", "head",
    "test",
];

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

/// A network namespace standing for the node, and the test's scratch directory; both deleted
/// on drop.
struct NodeNetns {
    name: String,
    dir: PathBuf,
}

impl NodeNetns {
    fn new() -> Self {
        let name = format!("knk-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let dir =
            std::env::temp_dir().join(format!("capstan-kubelet-kubectl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        NodeNetns { name, dir }
    }

    fn network(&self, cni_path: &Path) -> CniNetwork {
        let config = NetworkConfig::from_value(json!({
            "name": "pods",
            "cniVersion": "1.0.0",
            "plugins": [{
                "type": "bridge",
                "bridge": "kbr1",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.253.0.0/24"}]],
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
        ImageArchive::busybox(IMAGE, binary, APPLETS)
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

/// As [`wait_for`], giving up (`None`) after `limit`.
async fn wait_for_within<T>(
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The API server, the node and kubectl's files: everything one test needs.
struct Cluster {
    kubeconfig: PathBuf,
    cache: PathBuf,
    issuer: TokenIssuer,
    client: Arc<dyn Client>,
    runtime: Arc<ContainerdRuntime>,
    kubelet: Option<RunningKubelet>,
    server: Option<ApiServer>,
    node: NodeNetns,
}

impl Cluster {
    /// Serves the API server on 127.0.0.1:0 as the assembled cluster does, and starts the
    /// kubelet on containerd and the CNI bridge, serving its API where the node's InternalIP
    /// says.
    async fn start() -> Cluster {
        let socket = env_path(
            "CAPSTAN_CONTAINERD_SOCKET",
            "starts a containerd (scripts/lib-containerd.sh)",
        );
        let cni_path = env_path(
            "CAPSTAN_CNI_PATH",
            "installs containernetworking-plugins (scripts/lib-net-cni.sh)",
        );
        let node = NodeNetns::new();

        let store: Arc<dyn capstan_store::Store> =
            Arc::new(capstan_store::memory::MemoryStore::new());
        let registry = Arc::new(
            Registry::new(store.clone()).add_admission(ServiceAccountAdmission::new(store)),
        );
        let issuer = TokenIssuer::new(ServiceAccountKeys::generate().unwrap());
        let options = ApiServerOptions::default()
            .kubelet_client(KubeletClientConfig::with_generated_token())
            .service_account_tokens(ServiceAccountTokens::new(issuer.clone(), registry.clone()));
        let server = ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("the API server starts");
        let kubeconfig = node.dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let client: Arc<dyn Client> = Arc::new(RemoteClient::from_kubeconfig(&kubeconfig).unwrap());

        // What the service account and root CA publisher controllers would have made.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let ca: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": CA},
        }))
        .unwrap();
        maps.create(&PostParams::default(), &ca).await.unwrap();

        let namespace = format!("capstan-kubectl-{}", std::process::id());
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
        let config = KubeletConfig::new(NODE)
            .internal_ip("127.0.0.1")
            .server_listen("127.0.0.1:0".parse().unwrap())
            .root_dir(node.dir.join("kubelet"));
        let kubelet = Kubelet::builder(config)
            .client(client.clone())
            .runtime(runtime.clone())
            .network(Arc::new(node.network(&cni_path)))
            .build()
            .expect("a valid kubelet")
            .start();
        Cluster {
            cache: node.dir.join("kube-cache"),
            kubeconfig,
            issuer,
            client,
            runtime,
            kubelet: Some(kubelet),
            server: Some(server),
            node,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to its end, with `stdin` if any: its exit code, stdout and stderr.
    async fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
        let mut command = self.command(args);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): install it (Debian's kubernetes-client)")
        });
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input).await.unwrap();
            drop(pipe);
        }
        let output = child.wait_with_output().await.unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs kubectl and insists it succeeds; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kubectl(args, None).await;
        assert_eq!(code, 0, "kubectl {args:?}: {out}{err}");
        out
    }

    /// Starts a long-running kubectl (`logs -f`, `attach`, `port-forward`).
    fn spawn(&self, args: &[&str], stdin: bool) -> Child {
        let mut command = self.command(args);
        command.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        command.spawn().expect("kubectl runs")
    }

    /// `POST selfsubjectreviews` with `token` over plain HTTP/1.0: the review's JSON.
    async fn self_subject_review(&self, token: &str) -> serde_json::Value {
        let address = self.server.as_ref().unwrap().address();
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
        })
        .to_string();
        let request = format!(
            "POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.0\r\n\
             Host: {address}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.0 201"), "{response}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Deletes the Pod, waits until the kubelet removed everything it had, and stops the
    /// kubelet and the API server.
    async fn tear_down(mut self) {
        let pods = self.pods();
        if let Err(error) = pods.delete(POD, &DeleteParams::default()).await {
            assert!(error.is_not_found(), "deleting the pod: {error}");
        }
        wait_for("the pod to be gone", async || {
            pods.get_opt(POD).await.ok()?.is_none().then_some(())
        })
        .await;
        wait_for("the sandbox to be removed", async || {
            self.runtime
                .list_pod_sandboxes(PodSandboxFilter::default())
                .await
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(self
            .runtime
            .list_containers(ContainerFilter::default())
            .await
            .unwrap()
            .is_empty());
        drop(self.kubelet.take());
        self.runtime
            .remove_image(&ImageSpec::new(IMAGE))
            .await
            .unwrap();
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// Reads `reader` line by line until a line satisfies `done`; every line read so far.
async fn read_until(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    what: &str,
    mut done: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    let read = async {
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.unwrap();
            assert!(n > 0, "the stream ended before {what}: {lines:?}");
            let line = line.trim_end().to_owned();
            let finished = done(&line);
            lines.push(line);
            if finished {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("timed out reading {what}"));
    lines
}

fn tools_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c",
                    "mkdir -p /www && echo served by busybox > /www/index.html \
                     && exec httpd -f -p 8080 -h /www"]},
                {"name": "ticker", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c",
                    "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]},
                {"name": "reader", "image": IMAGE, "imagePullPolicy": "Never",
                 "stdin": true,
                 "command": ["sh", "-c",
                    "echo ready; while read line; do echo got $line; done"]},
                {"name": "crasher", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c",
                    "echo run $(cat /proc/uptime); sleep 1; exit 1"]},
            ],
        },
    }))
    .unwrap()
}

/// The Pod's containers `names` are running.
fn running(pod: &Pod, names: &[&str]) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    names.iter().all(|name| {
        statuses
            .iter()
            .any(|c| c.name == *name && c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
}

async fn logs_follow_tail_and_previous(cluster: &Cluster) {
    // The ticker's whole log, then its last two lines.
    let all = wait_for("the ticker's lines", async || {
        let out = cluster.ok(&["logs", POD, "-c", "ticker"]).await;
        (out.lines().count() >= 3).then_some(out)
    })
    .await;
    assert!(all.starts_with("tick 0\n"), "{all}");
    let tail = cluster.ok(&["logs", POD, "-c", "ticker", "--tail=2"]).await;
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail}");
    assert!(lines.iter().all(|l| l.starts_with("tick ")), "{tail}");

    // `-f` keeps streaming lines written after it started.
    let mut follow = cluster.spawn(&["logs", "-f", POD, "-c", "ticker", "--tail=1"], false);
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    let number = |line: &str| -> u64 {
        line.strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a tick: {line}"))
    };
    let first = read_until(&mut out, "a first line", |_| true).await;
    let start = number(&first[0]);
    let later = read_until(&mut out, "three more ticks", |l| number(l) >= start + 3).await;
    let numbers: Vec<u64> = later.iter().map(|l| number(l)).collect();
    let expected: Vec<u64> = (start + 1..=start + 3).collect();
    assert_eq!(numbers, expected, "followed lines in order, none lost");
    follow.kill().await.unwrap();

    // The crasher restarted: `--previous` shows the run before the current one, which
    // started later (each run prints the node's uptime when it starts).
    let pods = cluster.pods();
    let uptime = |log: &str| -> Option<f64> {
        log.strip_prefix("run ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut last = (String::new(), String::new());
    let found = wait_for_within(Duration::from_secs(40), async || {
        let pod = pods.get(POD).await.ok()?;
        let statuses = pod.status?.container_statuses?;
        let c = statuses.iter().find(|c| c.name == "crasher")?;
        if c.restart_count < 1 || c.state.as_ref()?.running.is_none() {
            return None;
        }
        let (code, previous, err) = cluster
            .kubectl(&["logs", POD, "-c", "crasher", "--previous"], None)
            .await;
        assert_eq!(code, 0, "{previous}{err}");
        let current = cluster.ok(&["logs", POD, "-c", "crasher"]).await;
        let ordered = uptime(&previous)? < uptime(&current)?;
        last = (previous, current);
        ordered.then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no previous run older than the current one: {last:?}"
    );
    let (code, _, err) = cluster
        .kubectl(&["logs", POD, "-c", "ticker", "--previous"], None)
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("previous terminated container \"ticker\" in pod \"tools\" not found"),
        "{err}"
    );
}

async fn exec_runs_commands_with_stdin_and_exit_codes(cluster: &Cluster) {
    let out = cluster
        .ok(&["exec", POD, "-c", "ticker", "--", "echo", "hi", "there"])
        .await;
    assert_eq!(out, "hi there\n");
    let (code, out, err) = cluster
        .kubectl(
            &["exec", "-i", POD, "-c", "ticker", "--", "cat"],
            Some(b"line one\nline two\n"),
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "line one\nline two\n"), "{err}");
    let (code, out, err) = cluster
        .kubectl(
            &[
                "exec",
                POD,
                "-c",
                "ticker",
                "--",
                "sh",
                "-c",
                "echo to stderr >&2; exit 3",
            ],
            None,
        )
        .await;
    assert_eq!(code, 3, "the command's exit code is kubectl's: {out}{err}");
    assert_eq!(err, "to stderr\ncommand terminated with exit code 3\n");
    let (code, _, err) = cluster
        .kubectl(
            &["exec", POD, "-c", "ticker", "--", "no-such-command"],
            None,
        )
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{err}"
    );
    let (code, _, err) = cluster
        .kubectl(&["exec", POD, "-c", "nope", "--", "true"], None)
        .await;
    assert_eq!(
        (code, err.trim_end()),
        (
            1,
            "Error from server (BadRequest): container nope is not valid for pod tools"
        )
    );
}

async fn cp_copies_into_and_out_of_the_container(cluster: &Cluster) {
    let local = cluster.node.dir.join("cp");
    std::fs::create_dir_all(local.join("tree/sub")).unwrap();
    std::fs::write(local.join("note.txt"), "a note for the pod\n").unwrap();
    std::fs::write(local.join("tree/sub/deep.txt"), "deep\n").unwrap();
    let source = local.join("note.txt");
    cluster
        .ok(&[
            "cp",
            source.to_str().unwrap(),
            &format!("{POD}:/tmp/note.txt"),
            "-c",
            "ticker",
        ])
        .await;
    let inside = cluster
        .ok(&["exec", POD, "-c", "ticker", "--", "cat", "/tmp/note.txt"])
        .await;
    assert_eq!(inside, "a note for the pod\n");
    let tree = local.join("tree");
    cluster
        .ok(&[
            "cp",
            tree.to_str().unwrap(),
            &format!("{POD}:/tmp/tree"),
            "-c",
            "ticker",
        ])
        .await;
    let inside = cluster
        .ok(&[
            "exec",
            POD,
            "-c",
            "ticker",
            "--",
            "cat",
            "/tmp/tree/sub/deep.txt",
        ])
        .await;
    assert_eq!(inside, "deep\n");

    // Out: a file the container wrote, and the directory copied in, back.
    cluster
        .ok(&[
            "exec",
            POD,
            "-c",
            "ticker",
            "--",
            "sh",
            "-c",
            "echo made inside > /tmp/made.txt",
        ])
        .await;
    let back = local.join("made.txt");
    cluster
        .ok(&[
            "cp",
            &format!("{POD}:/tmp/made.txt"),
            back.to_str().unwrap(),
            "-c",
            "ticker",
        ])
        .await;
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "made inside\n");
    let tree_back = local.join("tree-back");
    cluster
        .ok(&[
            "cp",
            &format!("{POD}:/tmp/tree"),
            tree_back.to_str().unwrap(),
            "-c",
            "ticker",
        ])
        .await;
    assert_eq!(
        std::fs::read_to_string(tree_back.join("sub/deep.txt")).unwrap(),
        "deep\n"
    );
}

async fn attach_reaches_the_container_s_stdin_and_stdout(cluster: &Cluster) {
    let mut attach = cluster.spawn(&["attach", "-i", POD, "-c", "reader"], true);
    let mut stdin = attach.stdin.take().unwrap();
    let mut out = BufReader::new(attach.stdout.take().unwrap());
    // Lines go in until one comes back: the attach may start after the first is written.
    let input = async {
        for i in 0.. {
            stdin
                .write_all(format!("hello {i}\n").as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let echoed = tokio::select! {
        lines = read_until(&mut out, "the reader's echo", |l| l.starts_with("got hello")) => lines,
        _ = input => unreachable!(),
    };
    assert!(
        echoed.last().unwrap().starts_with("got hello "),
        "{echoed:?}"
    );
    attach.kill().await.unwrap();
}

async fn port_forward_carries_http_to_the_pod(cluster: &Cluster) {
    let mut forward = cluster.spawn(&["port-forward", &format!("pod/{POD}"), ":8080"], false);
    let mut out = BufReader::new(forward.stdout.take().unwrap());
    let lines = read_until(&mut out, "the forwarding address", |l| {
        l.starts_with("Forwarding from 127.0.0.1:")
    })
    .await;
    let line = lines.last().unwrap();
    let port: u16 = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert!(line.ends_with("-> 8080"), "{line}");
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200 OK") || response.starts_with("HTTP/1.0 200 OK"),
            "{response}"
        );
        assert!(response.ends_with("served by busybox\n"), "{response}");
    }
    forward.kill().await.unwrap();
}

async fn service_account_credentials_are_in_the_container(cluster: &Cluster) {
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let listing = cluster
        .ok(&["exec", POD, "-c", "ticker", "--", "ls", dir])
        .await;
    let mut names: Vec<&str> = listing.split_whitespace().collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "namespace", "token"], "{listing}");
    let namespace = cluster
        .ok(&[
            "exec",
            POD,
            "-c",
            "ticker",
            "--",
            "cat",
            &format!("{dir}/namespace"),
        ])
        .await;
    assert_eq!(namespace, "default");
    let ca = cluster
        .ok(&[
            "exec",
            POD,
            "-c",
            "ticker",
            "--",
            "cat",
            &format!("{dir}/ca.crt"),
        ])
        .await;
    assert_eq!(ca, CA);
    let token = cluster
        .ok(&[
            "exec",
            POD,
            "-c",
            "ticker",
            "--",
            "cat",
            &format!("{dir}/token"),
        ])
        .await;
    let claims = cluster
        .issuer
        .verify(&token)
        .unwrap_or_else(|e| panic!("the token is not the API server's ({e}): {token}"));
    assert_eq!(claims.user_name(), "system:serviceaccount:default:default");

    // The token authenticates its bearer as the service account (kubectl sends no token over
    // plain HTTP, so the review is asked directly).
    let review = cluster.self_subject_review(&token).await;
    assert_eq!(
        review["status"]["userInfo"]["username"], "system:serviceaccount:default:default",
        "{review}"
    );
    assert_eq!(
        review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!([POD]),
        "{review}"
    );

    let env = cluster
        .ok(&["exec", POD, "-c", "ticker", "--", "env"])
        .await;
    let services: Api<capstan_api::k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cluster.client.clone(), "default");
    let kubernetes = services.get("kubernetes").await.unwrap();
    let ip = kubernetes.spec.unwrap().cluster_ip.unwrap();
    assert!(
        env.lines()
            .any(|l| l == format!("KUBERNETES_SERVICE_HOST={ip}")),
        "{env}"
    );
    for variable in [
        "KUBERNETES_SERVICE_PORT=443".to_owned(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_owned(),
        format!("KUBERNETES_PORT=tcp://{ip}:443"),
        format!("KUBERNETES_PORT_443_TCP_ADDR={ip}"),
    ] {
        assert!(env.lines().any(|l| l == variable), "{variable} in {env}");
    }
}

async fn the_node_proxy_serves_the_containers_real_stats(cluster: &Cluster) {
    let path = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    let summary: serde_json::Value = wait_for("the ticker's stats", async || {
        let (code, out, _) = cluster.kubectl(&["get", "--raw", &path], None).await;
        let summary: serde_json::Value = serde_json::from_str(&out).ok()?;
        let pod = summary["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == POD)?
            .clone();
        let ticker = pod["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "ticker")?
            .clone();
        let working_set = ticker["memory"]["workingSetBytes"].as_u64()?;
        (code == 0 && working_set > 0).then_some(summary)
    })
    .await;
    assert_eq!(summary["node"]["nodeName"], NODE, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_cp_attach_and_port_forward_reach_a_busybox_pod_on_containerd() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let cluster = Cluster::start().await;
        // Whatever fails, the Pod is deleted and the node cleaned before the failure is told.
        let outcome = std::panic::AssertUnwindSafe(async {
            let pods = cluster.pods();
            pods.create(&PostParams::default(), &tools_pod())
                .await
                .unwrap();
            wait_for("the pod's containers to run", async || {
                let pod = pods.get(POD).await.ok()?;
                running(&pod, &["web", "ticker", "reader"]).then_some(())
            })
            .await;

            service_account_credentials_are_in_the_container(&cluster).await;
            exec_runs_commands_with_stdin_and_exit_codes(&cluster).await;
            cp_copies_into_and_out_of_the_container(&cluster).await;
            attach_reaches_the_container_s_stdin_and_stdout(&cluster).await;
            port_forward_carries_http_to_the_pod(&cluster).await;
            the_node_proxy_serves_the_containers_real_stats(&cluster).await;
            logs_follow_tail_and_previous(&cluster).await;
        })
        .catch_unwind()
        .await;
        cluster.tear_down().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await
    .expect("the test timed out");
}
