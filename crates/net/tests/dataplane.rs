//! The proxy backends' real rules, in network namespaces the tests create (the host's tables
//! are never touched): a client namespace and two backend namespaces, each serving HTTP with
//! busybox `httpd`, joined by a bridge in a fourth namespace. The backend programs a cluster
//! IP in the client's namespace (the OUTPUT path); requests from the client must spread over
//! both backends, and stop reaching a backend once its endpoint is removed.
//!
//! Needs root and `ip`, `iptables`/`iptables-save`/`iptables-restore`, `nft`, `busybox` and
//! `bash` (the client, through `/dev/tcp`) on the PATH: `scripts/test` installs them (`scripts/lib-net-proxy.sh`). Debian's
//! `iptables` is the `iptables-nft` flavour; the tests use whichever `iptables-restore` is on
//! the PATH.

#![cfg(feature = "test-dataplane")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capstan_api::testing::within;
use capstan_net::proxy::iptables::{IptablesBackend, IptablesConfig};
use capstan_net::proxy::nftables::{NftablesBackend, NftablesConfig};
use capstan_net::proxy::{
    Changes, Protocol, ProxyBackend, ProxyState, ServicePortName, ServicePortState, SessionAffinity,
};

const CLUSTER_IP: &str = "10.96.0.10";
const BACKENDS: [&str; 2] = ["10.77.0.2", "10.77.0.3"];

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(120);

fn require_tools(tools: &[&str]) {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the dataplane tests create network namespaces and need root; run them through scripts/test as root"
    );
    for tool in tools {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` is not on the PATH: scripts/test installs it (scripts/lib-net-proxy.sh, capstan_net_proxy_setup)"
        );
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn in_netns(netns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("run ip netns exec")
}

/// The namespaces, bridge and HTTP servers of one test; all removed on drop.
struct Topology {
    client: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Topology {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "cpx{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let switch = format!("{prefix}-sw");
        let client = format!("{prefix}-c");
        let backends: Vec<String> = (1..=BACKENDS.len())
            .map(|i| format!("{prefix}-b{i}"))
            .collect();
        let mut topology = Topology {
            client: client.clone(),
            namespaces: Vec::new(),
            servers: Vec::new(),
            dirs: Vec::new(),
        };
        for netns in [&switch, &client].into_iter().chain(&backends) {
            ip(&["netns", "add", netns]);
            topology.namespaces.push(netns.clone());
            ip(&["-n", netns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let hosts = [(client.as_str(), "10.77.0.1")]
            .into_iter()
            .chain(backends.iter().map(String::as_str).zip(BACKENDS));
        for (i, (netns, address)) in hosts.enumerate() {
            let port = format!("port{i}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", netns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", netns, "link", "set", "eth0", "up"]);
        }
        // Cluster IPs must be routable for the OUTPUT hook to see the packets.
        ip(&["-n", &client, "route", "add", "10.96.0.0/12", "dev", "eth0"]);
        for (i, netns) in backends.iter().enumerate() {
            let dir = std::env::temp_dir().join(format!("{netns}-www"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), format!("backend-{}\n", i + 1)).unwrap();
            let server = Command::new("ip")
                .args([
                    "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start busybox httpd");
            topology.servers.push(server);
            topology.dirs.push(dir);
        }
        topology
    }

    /// Sends one HTTP request to `address:port` from the client namespace (bash's
    /// `/dev/tcp`, a new connection each time); the response body, or what went wrong.
    fn get(&self, address: &str, port: u16) -> Result<String, String> {
        let script = format!(
            "exec 3<>/dev/tcp/{address}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let output = in_netns(&self.client, &["timeout", "3", "bash", "-c", &script]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        match (output.status.success(), stdout.lines().last()) {
            (true, Some(body)) if stdout.starts_with("HTTP/1.") => Ok(body.trim().to_owned()),
            _ => Err(format!(
                "{}: {stdout} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }

    /// Asks the cluster IP from the client namespace.
    fn request(&self) -> Result<String, String> {
        self.get(CLUSTER_IP, 80)
    }

    /// Waits until both servers answer on their own addresses.
    async fn wait_for_servers(&self) {
        for address in BACKENDS {
            let mut last = Err(String::new());
            for _ in 0..100 {
                last = self.get(address, 8080);
                if last.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(error) = last {
                panic!("backend {address} never answered: {error}");
            }
        }
    }

    fn answers(&self, requests: usize) -> Vec<String> {
        (0..requests)
            .map(|_| {
                self.request()
                    .unwrap_or_else(|error| panic!("request failed: {error}"))
            })
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for netns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn web() -> ServicePortName {
    ServicePortName::new("default", "web", "http", Protocol::Tcp)
}

fn state(endpoints: &[&str]) -> ProxyState {
    let mut state = ProxyState::new();
    state.insert(
        web(),
        ServicePortState {
            cluster_ip: CLUSTER_IP.parse().unwrap(),
            port: 80,
            node_port: Some(30080),
            protocol: Protocol::Tcp,
            affinity: SessionAffinity::None,
            endpoints: endpoints
                .iter()
                .map(|ip| format!("{ip}:8080").parse::<SocketAddr>().unwrap())
                .collect(),
        },
    );
    state
}

/// The scenario every backend must pass.
async fn traffic_follows_the_endpoints(backend: &dyn ProxyBackend, topology: &Topology) {
    topology.wait_for_servers().await;
    assert!(
        topology.request().is_err(),
        "the cluster IP answers before any rule exists"
    );

    let both = state(&BACKENDS);
    backend.sync(&both, &Changes::Full).await.unwrap();
    // Syncing again is harmless (and must not duplicate the hooks).
    backend.sync(&both, &Changes::Full).await.unwrap();
    let answers = topology.answers(40);
    for expected in ["backend-1", "backend-2"] {
        assert!(
            answers.iter().any(|answer| answer == expected),
            "{expected} never answered: {answers:?}"
        );
    }

    let one = state(&BACKENDS[..1]);
    backend
        .sync(&one, &Changes::Partial(one.diff(&both)))
        .await
        .unwrap();
    let answers = topology.answers(20);
    assert!(
        answers.iter().all(|answer| answer == "backend-1"),
        "traffic still reaches the removed endpoint: {answers:?}"
    );

    // Back to both, then no Service at all.
    backend
        .sync(&both, &Changes::Partial(both.diff(&one)))
        .await
        .unwrap();
    assert!(topology.answers(40).iter().any(|a| a == "backend-2"));
    let empty = ProxyState::new();
    backend
        .sync(&empty, &Changes::Partial(empty.diff(&both)))
        .await
        .unwrap();
    assert!(
        topology.request().is_err(),
        "the removed Service still answers"
    );

    backend.sync(&both, &Changes::Full).await.unwrap();
    backend.cleanup().await.unwrap();
    backend.cleanup().await.unwrap();
    assert!(topology.request().is_err(), "rules survived the cleanup");
}

#[tokio::test]
async fn iptables_rules_spread_traffic_over_ready_endpoints() {
    within(LIMIT, async {
        require_tools(&[
            "ip",
            "iptables",
            "iptables-save",
            "iptables-restore",
            "busybox",
        ]);
        let topology = Topology::new();
        let backend = IptablesBackend::new(IptablesConfig {
            netns: Some(topology.client.clone()),
            ..IptablesConfig::default()
        });
        traffic_follows_the_endpoints(&backend, &topology).await;

        let save = in_netns(&topology.client, &["iptables-save", "-t", "nat"]);
        let save = String::from_utf8_lossy(&save.stdout);
        assert!(!save.contains("KUBE-"), "left behind:\n{save}");
    })
    .await
}

#[tokio::test]
async fn iptables_hooks_are_added_once() {
    within(LIMIT, async {
        require_tools(&[
            "ip",
            "iptables",
            "iptables-save",
            "iptables-restore",
            "busybox",
        ]);
        let topology = Topology::new();
        let backend = IptablesBackend::new(IptablesConfig {
            netns: Some(topology.client.clone()),
            ..IptablesConfig::default()
        });
        for _ in 0..3 {
            backend
                .sync(&state(&BACKENDS), &Changes::Full)
                .await
                .unwrap();
        }
        let save = in_netns(&topology.client, &["iptables-save", "-t", "nat"]);
        let save = String::from_utf8_lossy(&save.stdout);
        for chain in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
            let hooks = save
                .lines()
                .filter(|line| line.starts_with(&format!("-A {chain} ")))
                .count();
            assert_eq!(hooks, 1, "{chain} hooks:\n{save}");
        }
        backend.cleanup().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn nftables_rules_spread_traffic_over_ready_endpoints() {
    within(LIMIT, async {
        require_tools(&["ip", "nft", "busybox"]);
        let topology = Topology::new();
        let backend = NftablesBackend::new(NftablesConfig {
            netns: Some(topology.client.clone()),
            ..NftablesConfig::default()
        });
        traffic_follows_the_endpoints(&backend, &topology).await;

        let tables = in_netns(&topology.client, &["nft", "list", "tables"]);
        let tables = String::from_utf8_lossy(&tables.stdout);
        assert!(!tables.contains("capstan-proxy"), "left behind: {tables}");
    })
    .await
}
