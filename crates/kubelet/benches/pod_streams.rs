//! The pod streams on a real node: `logs -f`, `exec` and `port-forward` through the API server
//! and a kubelet on containerd, each against a shorter path to the same bytes in the same run.
//!
//! ```text
//! scripts/bench-pod-streams
//! ```
//!
//! starts a throwaway containerd and runs `cargo bench -p capstan-kubelet --features
//! test-real-node --bench pod_streams` as root, with `CAPSTAN_CONTAINERD_SOCKET` and
//! `CAPSTAN_CNI_PATH` set. One process holds the API server (HTTP on loopback, with its kubelet
//! client credential), one kubelet on containerd with the CNI bridge in a network namespace
//! standing for the node, and the clients (kube-rs over the API server's HTTP). One Pod runs
//! four busybox containers: `logger` writes a known amount of output then sleeps, `idle` sleeps
//! (exec target), `sink` and `source` are `nc` servers on ports 9000 (reads a known amount
//! with `dd`, answers `done`) and 9001 (writes a known amount with `dd`; busybox `head` tops
//! out near 200 MB/s and would be what is measured).
//!
//! A bench binary of its own (no criterion: exec wants a median and a p99, and every figure is
//! set against its baseline from the same run). Measured, each a median over the rounds:
//!
//! 1. logs: the time to receive all of `logger`'s output, as MB/s of log text (the bytes the
//!    container wrote): the CRI log file read and parsed directly; the runtime's
//!    `container_logs` stream (follow); the kubelet's `/containerLogs` over HTTP (follow); and
//!    `Api::<Pod>::log_stream` with `follow` through the API server. The container is still
//!    running, so every follower is in follow mode when the data ends; the file is in the page
//!    cache for all of them.
//! 2. exec `true` until its exit status arrives: `Api::<Pod>::exec` through the API server and
//!    the kubelet; the runtime's `exec_sync` in process; `ctr task exec` (a fresh process each
//!    time, as a user runs it) on the same containerd. Median and p99.
//! 3. port-forward: MB/s of one connection uploading to `sink` (until its `done`) and
//!    downloading from `source`: `Api::<Pod>::portforward` through the API server and the
//!    kubelet, against the runtime's `port_forward` (a socket in the pod's network namespace).
//!
//! Sizes: `CAPSTAN_BENCH_LOG_MB` (default 100), `CAPSTAN_BENCH_FORWARD_MB` (default 100),
//! `CAPSTAN_BENCH_ROUNDS` (default 5), `CAPSTAN_BENCH_EXEC_RUNS` (default 200).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::{Api, Client};
use capstan_apiserver::http::pod_streams::KubeletClientConfig;
use capstan_apiserver::http::{ApiServer, ApiServerOptions};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_kubelet::{Kubelet, KubeletConfig, RunningKubelet};
use capstan_net::cni::{CniNetwork, NetworkConfig};
use capstan_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use capstan_runtime::oci::ImageArchive;
use capstan_runtime::{
    ContainerRuntime, ExecRequest, ImageSpec, LogOptions, PodSandboxFilter, PodSandboxState,
};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IMAGE: &str = "capstan.bench/busybox:1";
const NODE: &str = "bench-streams-node";
const POD: &str = "streams";
const APPLETS: &[&str] = &["sh", "yes", "head", "sleep", "true", "nc", "echo", "dd"];
/// Each log line, newline included: the logger writes whole lines only.
const LINE: u64 = 1000;
const SINK_PORT: u16 = 9000;
const SOURCE_PORT: u16 = 9001;
const CHUNK: usize = 64 * 1024;

/// What one run measures: sizes from the environment.
struct Settings {
    log_bytes: u64,
    forward_bytes: u64,
    rounds: usize,
    exec_runs: usize,
}

impl Settings {
    fn from_env() -> Self {
        let number = |var: &str, default: u64| -> u64 {
            std::env::var(var)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{var}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        let log_bytes = number("CAPSTAN_BENCH_LOG_MB", 100) * 1_000_000;
        Settings {
            log_bytes: log_bytes / LINE * LINE,
            forward_bytes: number("CAPSTAN_BENCH_FORWARD_MB", 100) * 1_000_000,
            rounds: number("CAPSTAN_BENCH_ROUNDS", 5).max(1) as usize,
            exec_runs: number("CAPSTAN_BENCH_EXEC_RUNS", 200).max(1) as usize,
        }
    }
}

fn env_path(var: &str, how: &str) -> PathBuf {
    let value = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run scripts/bench-pod-streams, which {how}"));
    let path = PathBuf::from(value);
    assert!(path.exists(), "{var}={} does not exist", path.display());
    path
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "{args:?} failed (this benchmark needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace standing for the node, and the scratch directory; both deleted on drop.
struct NodeNetns {
    name: String,
    dir: PathBuf,
}

impl NodeNetns {
    fn new() -> Self {
        let name = format!("kbs-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let dir =
            std::env::temp_dir().join(format!("capstan-bench-streams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        NodeNetns { name, dir }
    }

    fn network(&self, cni_path: &Path) -> CniNetwork {
        let config = NetworkConfig::from_value(json!({
            "name": "pods",
            "cniVersion": "1.0.0",
            "plugins": [{
                "type": "bridge",
                "bridge": "kbs0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.251.0.0/24"}]],
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

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The API server, the node and the clients.
struct Cluster {
    client: Arc<dyn Client>,
    kube: kube::Client,
    runtime: Arc<ContainerdRuntime>,
    socket: PathBuf,
    namespace: String,
    kubelet: Option<RunningKubelet>,
    kubelet_token: String,
    server: Option<ApiServer>,
    _node: NodeNetns,
}

impl Cluster {
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
        let registry = Arc::new(Registry::new(store));
        let kubelet_token = format!("bench-kubelet-client-{}", std::process::id());
        let options = ApiServerOptions::default()
            .kubelet_client(KubeletClientConfig::with_token(kubelet_token.clone()));
        let server = ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("the API server starts");
        let kubeconfig = node.dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let client: Arc<dyn Client> = Arc::new(RemoteClient::from_kubeconfig(&kubeconfig).unwrap());
        let url = format!("http://{}", server.address());
        let kube = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();

        let namespace = format!("capstan-bench-streams-{}", std::process::id());
        let runtime = Arc::new(
            ContainerdRuntime::connect(
                ContainerdConfig::new(&socket)
                    .namespace(&namespace)
                    .state_dir(node.dir.join("state")),
            )
            .await
            .expect("connecting to containerd"),
        );
        let binary = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install Debian's busybox-static");
        let archive = ImageArchive::busybox(IMAGE, binary, APPLETS)
            .build()
            .unwrap();
        runtime.import_image(Bytes::from(archive)).await.unwrap();
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
            client,
            kube,
            runtime,
            socket,
            namespace,
            kubelet: Some(kubelet),
            kubelet_token,
            server: Some(server),
            _node: node,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn kube_pods(&self) -> kube::Api<Pod> {
        kube::Api::namespaced(self.kube.clone(), "default")
    }

    /// Deletes the Pod, waits until the kubelet removed its sandbox, and stops the kubelet
    /// and the API server.
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
        drop(self.kubelet.take());
        let _ = self.runtime.remove_image(&ImageSpec::new(IMAGE)).await;
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2)).await;
        }
    }
}

fn streams_pod(settings: &Settings) -> Pod {
    let line = "x".repeat(LINE as usize - 1);
    let logger = format!(
        "yes {line} | head -c {}; exec sleep 100000",
        settings.log_bytes
    );
    // Whole megabytes, in 1 MB blocks (`fullblock`: short reads from the socket are
    // gathered into whole blocks).
    let blocks = settings.forward_bytes / 1_000_000;
    let upload =
        format!("dd of=/dev/null bs=1000000 count={blocks} iflag=fullblock 2>/dev/null; echo done");
    let download = format!("dd if=/dev/zero bs=1000000 count={blocks} 2>/dev/null");
    serde_json::from_value(json!({
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "logger", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", logger]},
                {"name": "idle", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "100000"]},
                {"name": "sink", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["nc", "-ll", "-p", SINK_PORT.to_string(), "-e", "sh", "-c", upload]},
                {"name": "source", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["nc", "-ll", "-p", SOURCE_PORT.to_string(), "-e", "sh", "-c", download]},
            ],
        },
    }))
    .unwrap()
}

/// The runtime ids of the Pod's containers, once all four run.
fn container_ids(pod: &Pod) -> Option<Vec<(String, String)>> {
    let statuses = pod.status.as_ref()?.container_statuses.clone()?;
    let running: Vec<(String, String)> = statuses
        .iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| {
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((c.name.clone(), id.to_owned()))
        })
        .collect();
    (running.len() == 4).then_some(running)
}

/// A CRI log file's text bytes (what the container wrote, newlines included), and the times of
/// its first and last records.
struct LogFile {
    text: u64,
    first: SystemTime,
    last: SystemTime,
}

/// Reads and parses the CRI log file at `path` directly: one `<time> <stream> <P|F> <text>`
/// record per line, as any reader of the file must.
fn read_log_file(path: &Path) -> LogFile {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(2 * LINE as usize);
    let mut text = 0u64;
    let mut times = None;
    let mut last = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        let mut fields = line.splitn(4, |&b| b == b' ');
        let time = fields.next().unwrap();
        let _stream = fields.next().expect("a stream field");
        let full = fields.next().expect("a P|F field") == b"F";
        let rest = fields.next().expect("a text field");
        // The record's newline is the line's own only when the record is full.
        text += rest.len() as u64 - u64::from(!full);
        if times.is_none() {
            times = Some(time.to_vec());
        }
        last = Some(time.to_vec());
    }
    let parse = |t: Option<Vec<u8>>| {
        let t = String::from_utf8(t.expect("a record")).unwrap();
        parse_rfc3339(&t).unwrap_or_else(|| panic!("a record time: {t}"))
    };
    LogFile {
        text,
        first: parse(times),
        last: parse(last),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` as the runtime writes it.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let nanos: u32 = format!("{fraction:0<9}")[..9].parse().ok()?;
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days =
        u64::try_from(era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + h * 3_600 + min * 60 + s, nanos))
}

/// Reads `reader` until `total` bytes arrived; the time it took.
async fn receive(reader: &mut (impl AsyncRead + Unpin), total: u64) -> Duration {
    let begun = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < total {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended after {got} of {total} bytes");
        got += n as u64;
    }
    assert_eq!(got, total, "more bytes than written");
    begun.elapsed()
}

/// As [`receive`], for kube-rs' log streams (futures' buffered reader): how many reads it
/// took (each read hands over what one body frame carried).
async fn receive_buffered(reader: &mut (impl futures::AsyncBufRead + Unpin), total: u64) -> u64 {
    use futures::AsyncBufReadExt;
    let mut got = 0u64;
    let mut reads = 0u64;
    while got < total {
        reads += 1;
        let n = reader.fill_buf().await.unwrap().len();
        assert!(n > 0, "the stream ended after {got} of {total} bytes");
        reader.consume_unpin(n);
        got += n as u64;
    }
    assert_eq!(got, total, "more bytes than written");
    reads
}

/// Writes `total` bytes into `stream`, then reads the sink's `done`.
async fn send(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), total: u64) {
    let buf = vec![b'u'; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    stream.flush().await.unwrap();
    let mut answer = [0u8; 5];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"done\n");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The `q` quantile (nearest rank) of sorted `values`.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Logs: each path's median MB/s over the rounds.
fn bench_logs(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    settings: &Settings,
    logger: &str,
) -> Vec<(String, String)> {
    let total = settings.log_bytes;
    let path = PathBuf::from(
        rt.block_on(cluster.runtime.container_status(logger))
            .unwrap()
            .log_path,
    );
    // The logger is done once its file holds all of its text.
    let started = Instant::now();
    let written = loop {
        let file = path.exists().then(|| read_log_file(&path));
        if let Some(file) = file.filter(|f| f.text >= total) {
            break file;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the logger never finished"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(written.text, total, "the log holds what the logger wrote");
    let write_time = written.last.duration_since(written.first).unwrap();
    let file_size = std::fs::metadata(&path).unwrap().len();

    let kubelet = cluster
        .kubelet
        .as_ref()
        .unwrap()
        .server_address()
        .expect("the kubelet serves its API");
    // The kube-rs client's HTTP stack, pointed at the kubelet's own address.
    let config = kube::Config::new(format!("http://{kubelet}").parse().unwrap());
    // The client's buffer service spawns its worker on the current runtime.
    let kubelet_client = rt.block_on(async { kube::Client::try_from(config).unwrap() });
    let kubelet_request = || {
        http::Request::get(format!("/containerLogs/default/{POD}/logger?follow=true"))
            .header("Authorization", format!("Bearer {}", cluster.kubelet_token))
            .body(Vec::new())
            .unwrap()
    };
    let kube_pods = cluster.kube_pods();
    let params = kube::api::LogParams {
        container: Some("logger".into()),
        follow: true,
        ..Default::default()
    };
    let (mut file, mut runtime, mut kubelet_http, mut api) = (vec![], vec![], vec![], vec![]);
    // Bytes per read of the last round, per HTTP path.
    let (mut kubelet_frame, mut api_frame) = (0, 0);
    for _ in 0..settings.rounds {
        let begun = Instant::now();
        let read = read_log_file(&path);
        file.push(mb_per_s(total, begun.elapsed()));
        assert_eq!(read.text, total);

        runtime.push(rt.block_on(async {
            let begun = Instant::now();
            let mut stream = cluster
                .runtime
                .container_logs(logger, LogOptions::all().follow())
                .await
                .unwrap();
            let mut got = 0u64;
            while got < total {
                let entry = stream.next().await.expect("more lines").unwrap();
                got += entry.line.len() as u64 + 1;
            }
            assert_eq!(got, total);
            mb_per_s(total, begun.elapsed())
        }));

        kubelet_http.push(rt.block_on(async {
            let begun = Instant::now();
            let reader = kubelet_client
                .request_stream(kubelet_request())
                .await
                .unwrap();
            let mut reader = std::pin::pin!(reader);
            kubelet_frame = total / receive_buffered(&mut reader, total).await;
            mb_per_s(total, begun.elapsed())
        }));

        api.push(rt.block_on(async {
            let begun = Instant::now();
            let reader = kube_pods.log_stream(POD, &params).await.unwrap();
            let mut reader = std::pin::pin!(reader);
            api_frame = total / receive_buffered(&mut reader, total).await;
            mb_per_s(total, begun.elapsed())
        }));
    }
    let file = median(&mut file);
    let row = |name: &str, values: &mut Vec<f64>, frame: Option<u64>| {
        let v = median(values);
        let frame = frame.map_or(String::new(), |f| format!(", {f} B per read"));
        (
            name.to_owned(),
            format!("{v:.0} MB/s ({:.2}× the file{frame})", v / file),
        )
    };
    vec![
        (
            "container → CRI log file (shim FIFO, the runtime's log writer), from the records' times"
                .to_owned(),
            format!("{:.0} MB/s", mb_per_s(total, write_time)),
        ),
        (
            format!("CRI log file read + parsed directly ({file_size} bytes on disk)"),
            format!("{file:.0} MB/s"),
        ),
        row(
            "runtime `container_logs` (follow), in process",
            &mut runtime,
            None,
        ),
        row(
            "kubelet `/containerLogs?follow=true` over HTTP (kube-rs' HTTP client)",
            &mut kubelet_http,
            Some(kubelet_frame),
        ),
        row(
            "API server `pods/log?follow=true` → kubelet (kube-rs `log_stream`)",
            &mut api,
            Some(api_frame),
        ),
    ]
}

/// Exec `true`: median and p99 of each path.
fn bench_exec(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    settings: &Settings,
    idle: &str,
) -> Vec<(String, String)> {
    let runs = settings.exec_runs;
    let kube_pods = cluster.kube_pods();
    let params = kube::api::AttachParams::default().container("idle");
    let (mut api, mut runtime, mut ctr) = (vec![], vec![], vec![]);
    for i in 0..runs {
        api.push(rt.block_on(async {
            let begun = Instant::now();
            let mut process = kube_pods.exec(POD, ["true"], &params).await.unwrap();
            let status = process.take_status().unwrap().await.unwrap();
            let took = begun.elapsed();
            assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
            let _ = process.join().await;
            took
        }));
        runtime.push(rt.block_on(async {
            let begun = Instant::now();
            let response = cluster
                .runtime
                .exec_sync(ExecRequest::new(idle, ["true"]))
                .await
                .unwrap();
            let took = begun.elapsed();
            assert_eq!(response.exit_code, 0);
            took
        }));
        let begun = Instant::now();
        let status = Command::new("ctr")
            .arg("-a")
            .arg(&cluster.socket)
            .args(["-n", &cluster.namespace, "task", "exec", "--exec-id"])
            .arg(format!("bench-{i}"))
            .args([idle, "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("ctr runs (Debian's containerd)");
        ctr.push(begun.elapsed());
        assert!(status.success(), "ctr task exec: {status}");
    }
    let mut rows = Vec::new();
    for (name, values) in [
        (
            "API server → kubelet → containerd (kube-rs `exec`, WebSocket)",
            &mut api,
        ),
        ("runtime `exec_sync`, in process", &mut runtime),
        ("`ctr task exec` (a new process each time)", &mut ctr),
    ] {
        values.sort();
        rows.push((
            name.to_owned(),
            format!(
                "{} median, {} p99 ({runs} runs)",
                ms(quantile(values, 0.5)),
                ms(quantile(values, 0.99))
            ),
        ));
    }
    rows
}

/// Port-forward: MB/s up and down, through the API server and directly.
fn bench_forward(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    settings: &Settings,
) -> Vec<(String, String)> {
    let total = settings.forward_bytes;
    let sandbox = rt
        .block_on(
            cluster
                .runtime
                .list_pod_sandboxes(PodSandboxFilter::default()),
        )
        .unwrap()
        .into_iter()
        .find(|s| s.state == PodSandboxState::Ready)
        .expect("the pod's sandbox")
        .id;
    let kube_pods = cluster.kube_pods();
    let (mut api_up, mut api_down, mut direct_up, mut direct_down) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..settings.rounds {
        rt.block_on(async {
            let begun = Instant::now();
            let mut stream = cluster
                .runtime
                .port_forward(&sandbox, SINK_PORT)
                .await
                .unwrap();
            send(&mut stream, total).await;
            direct_up.push(mb_per_s(total, begun.elapsed()));

            let begun = Instant::now();
            let mut stream = cluster
                .runtime
                .port_forward(&sandbox, SOURCE_PORT)
                .await
                .unwrap();
            receive(&mut stream, total).await;
            direct_down.push(mb_per_s(total, begun.elapsed()));

            let begun = Instant::now();
            let mut forwarder = kube_pods.portforward(POD, &[SINK_PORT]).await.unwrap();
            let mut stream = forwarder.take_stream(SINK_PORT).unwrap();
            send(&mut stream, total).await;
            api_up.push(mb_per_s(total, begun.elapsed()));
            drop(stream);
            forwarder.abort();

            let begun = Instant::now();
            let mut forwarder = kube_pods.portforward(POD, &[SOURCE_PORT]).await.unwrap();
            let mut stream = forwarder.take_stream(SOURCE_PORT).unwrap();
            receive(&mut stream, total).await;
            api_down.push(mb_per_s(total, begun.elapsed()));
            drop(stream);
            forwarder.abort();
        });
    }
    let direct_up = median(&mut direct_up);
    let direct_down = median(&mut direct_down);
    let api_up = median(&mut api_up);
    let api_down = median(&mut api_down);
    vec![
        (
            "upload: runtime `port_forward` (a socket in the pod's netns), in process".to_owned(),
            format!("{direct_up:.0} MB/s"),
        ),
        (
            "upload: API server → kubelet (kube-rs `portforward`, WebSocket)".to_owned(),
            format!("{api_up:.0} MB/s ({:.2}× direct)", api_up / direct_up),
        ),
        (
            "download: runtime `port_forward`, in process".to_owned(),
            format!("{direct_down:.0} MB/s"),
        ),
        (
            "download: API server → kubelet (kube-rs `portforward`, WebSocket)".to_owned(),
            format!("{api_down:.0} MB/s ({:.2}× direct)", api_down / direct_down),
        ),
    ]
}

fn main() {
    let settings = Settings::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(Cluster::start());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pods = cluster.pods();
        rt.block_on(pods.create(&PostParams::default(), &streams_pod(&settings)))
            .unwrap();
        let ids = rt.block_on(wait_for("the pod's containers to run", async || {
            container_ids(&pods.get(POD).await.ok()?)
        }));
        let id = |name: &str| {
            ids.iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| id.clone())
                .unwrap()
        };
        eprintln!(
            "logs: {} MB, port-forward: {} MB, {} rounds; exec: {} runs",
            settings.log_bytes / 1_000_000,
            settings.forward_bytes / 1_000_000,
            settings.rounds,
            settings.exec_runs
        );
        let mut rows = Vec::new();
        rows.extend(bench_logs(&rt, &cluster, &settings, &id("logger")));
        rows.extend(bench_exec(&rt, &cluster, &settings, &id("idle")));
        rows.extend(bench_forward(&rt, &cluster, &settings));
        println!("| path | result |\n|---|---:|");
        for (name, value) in rows {
            println!("| {name} | {value} |");
        }
    }));
    rt.block_on(cluster.tear_down());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
