//! The command lines: `capstan <component>` for one component per process, and the
//! embedded cluster (`capstan cluster`, also `cargo run --example cluster`).

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::{Event, Node, Pod};
use capstan_api::kube_core::params::{ListParams, Patch, PatchParams, PostParams};
use capstan_api::{Api, Client};
use capstan_controllers::manager::ControllerSelection;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::apiserver::{connect, serve, ApiServerConfig};
use crate::control_plane::{start_controller_manager, start_scheduler, ControlPlaneOptions};
use crate::dns::{start_cluster_dns, ClusterDnsOptions};
use crate::embedded::{ClusterConfig, EmbeddedCluster};
use crate::node::{start_kubelet, start_proxy, start_routes, NodeOptions};
use crate::options::{NetworkOption, ProxyMode, RuntimeOption, StoreOption};

/// The seeds' `newkubia` Deployment (5 replicas of `luksa/kubia:v2`).
pub const NEWKUBIA: &str = include_str!("../manifests/newkubia-deployment.yaml");

/// `capstan`: run one Capstan component.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about)]
pub struct Cli {
    /// The component.
    #[command(subcommand)]
    pub command: Command,
}

/// The components.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The API server: the registry on the store, served over HTTP(S).
    Apiserver(ApiServerArgs),
    /// A controller-manager replica (leader-elected).
    ControllerManager(ControlPlaneArgs),
    /// A scheduler replica (leader-elected).
    Scheduler(ControlPlaneArgs),
    /// A node's kubelet.
    Kubelet(NodeArgs),
    /// A node's service proxy.
    Proxy(NodeArgs),
    /// Cluster DNS: `<service>.<namespace>.svc.<domain>` answered from the API's Services and
    /// EndpointSlices (CoreDNS' role, with its metric names).
    Dns(DnsArgs),
    /// The whole cluster in one process (the example cluster).
    Cluster(ClusterArgs),
    /// Writes an OCI image tarball of the static busybox, for `kubelet --preload-image`
    /// (no registry is reachable here).
    BusyboxImage(BusyboxImageArgs),
}

/// `capstan dns`.
#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    /// The kubeconfig naming the API server.
    #[arg(long, default_value = "capstan.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Where DNS is answered, over UDP and TCP.
    #[arg(long, default_value = "127.0.0.1:10053")]
    pub listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = capstan_net::dns::DEFAULT_DOMAIN)]
    pub domain: String,
    /// Where to serve `/metrics`, `/healthz`, `/livez` and `/readyz` (plain HTTP, no
    /// authentication: keep it on loopback); port 0 picks a free one, which is logged.
    #[arg(long, default_value = crate::observability::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
}

impl DnsArgs {
    /// The options `start_cluster_dns` takes.
    pub fn options(&self) -> ClusterDnsOptions {
        ClusterDnsOptions {
            listen: self.listen,
            domain: self.domain.clone(),
            metrics_listen: Some(self.metrics_listen),
        }
    }
}

/// `capstan busybox-image`.
#[derive(Debug, Clone, Args)]
pub struct BusyboxImageArgs {
    /// The image's name, e.g. `luksa/kubia:v2`.
    #[arg(long)]
    pub name: String,
    /// Where to write the tarball.
    #[arg(long)]
    pub out: PathBuf,
    /// The static busybox binary (Debian's `busybox-static`).
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// The image's command (default: `sh`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// The busybox applets the images link: enough for a shell, `httpd`, `wget` and `sleep`.
const APPLETS: [&str; 14] = [
    "sh", "echo", "sleep", "true", "false", "cat", "ls", "httpd", "wget", "hostname", "ip", "ps",
    "nc", "env",
];

fn write_busybox_image(args: &BusyboxImageArgs) -> anyhow::Result<()> {
    let binary = std::fs::read(&args.busybox).with_context(|| {
        format!(
            "reading {} (install Debian's busybox-static)",
            args.busybox.display()
        )
    })?;
    // Named as kubelets look images up: `nginx` is `docker.io/library/nginx:latest`.
    let name = capstan_runtime::normalize_image_ref(&args.name);
    let mut image = capstan_runtime::oci::ImageArchive::busybox(name, binary, &APPLETS);
    if !args.command.is_empty() {
        image = image.cmd(args.command.clone());
    }
    std::fs::write(&args.out, image.build()?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// How to serve the API.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where objects are kept: `memory` or `etcd=<endpoint>[,...]`.
    #[arg(long, default_value = "memory")]
    pub store: StoreOption,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// A bearer token clients must present (authenticates as `admin`, `system:masters`).
    #[arg(long)]
    pub token: Option<String>,
    /// Serve HTTPS (feature `tls`). Without --tls-cert-file, a CA and a serving certificate
    /// signed by it are generated in --cert-dir, or reused from there; without --token, a
    /// random admin token too. The kubeconfig carries the CA and the token.
    #[arg(long)]
    pub tls: bool,
    /// Where the generated CA (ca.crt, ca.key), serving certificate (apiserver.crt,
    /// apiserver.key) and admin token (admin.token) are kept, as kube-apiserver's --cert-dir.
    /// Implies --tls [default: capstan-certs].
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM; feature `tls`).
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signs approved CertificateSigningRequests, as
    /// kube-controller-manager's flag (feature `tls`). Without it, --tls signs them with the
    /// CA generated in --cert-dir, and --tls-cert-file does not sign them. Implies --tls.
    #[arg(long, requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --cluster-signing-cert-file.
    #[arg(long, requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// Where to write the kubeconfig for kubectl and the other components.
    #[arg(long, default_value = "capstan.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// How often the store's history is compacted, as kube-apiserver's flag: a duration such
    /// as `5m`, `90s` or `1h30m` (a bare number is seconds); `0` turns compaction off.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub etcd_compaction_interval: Duration,
    /// The PEM key (RSA or P-256) service account tokens are signed with, as kube-apiserver's
    /// flag. Default: `sa.key` in the certificate directory, or a key for this run only.
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// A PEM file of further keys whose service account tokens verify (repeatable).
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// The issuer of service account tokens. Default:
    /// `https://kubernetes.default.svc.cluster.local`.
    #[arg(long)]
    pub service_account_issuer: Option<String>,
    /// The longest lifetime a TokenRequest gets (a duration such as `24h`).
    #[arg(long, value_parser = parse_duration)]
    pub service_account_max_token_expiration: Option<Duration>,
    /// The network namespace the cluster's nodes are on (an `ip netns` name or a path): the
    /// API server dials kubelets from there and serves --advertise-address there. Needs
    /// root. Default: the process's own.
    #[arg(long, value_name = "NETNS")]
    pub cluster_netns: Option<String>,
    /// The IP Pods reach the API server on, as kube-apiserver's flag: published in the
    /// `kubernetes` Service's endpoints, and served on the --listen port (inside
    /// --cluster-netns when given). Default: the --listen address.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<std::net::IpAddr>,
    /// The certificate (PEM) the API server presents to kubelets, as kube-apiserver's flag
    /// (feature `tls`): kubelets are then reached over HTTPS.
    #[arg(long, requires = "kubelet_client_key")]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// The key of --kubelet-client-certificate (PEM).
    #[arg(long, requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,
    /// The CA bundle (PEM) kubelets' serving certificates are verified against (feature
    /// `tls`): kubelets are then reached over HTTPS. Without it, as kube-apiserver, they are
    /// not verified.
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
}

/// Reads a duration as Go writes one (`1h30m`, `5m0s`, `250ms`); a bare number is seconds.
///
/// Errors: anything else, naming what was given.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (expected e.g. 5m, 90s, 1h30m or 0)");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(invalid()),
        };
        let amount = u32::try_from(amount).map_err(|_| invalid())?;
        total += scale.checked_mul(amount).ok_or_else(invalid)?;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// Where `--tls` keeps what it generates when `--cert-dir` is not given.
pub const DEFAULT_CERT_DIR: &str = "capstan-certs";

impl ServeArgs {
    /// The API server's settings these flags ask for.
    pub fn config(&self) -> ApiServerConfig {
        let https = self.tls
            || self.cert_dir.is_some()
            || self.tls_cert_file.is_some()
            || self.cluster_signing_cert_file.is_some();
        ApiServerConfig {
            store: self.store.clone(),
            listen: self.listen,
            token: self.token.clone(),
            tls: self
                .tls_cert_file
                .clone()
                .zip(self.tls_private_key_file.clone()),
            cert_dir: https.then(|| {
                self.cert_dir
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CERT_DIR.into())
            }),
            signing_ca: self
                .cluster_signing_cert_file
                .clone()
                .zip(self.cluster_signing_key_file.clone()),
            compaction_interval: self.etcd_compaction_interval,
            service_accounts: true,
            service_account_signing_key_file: self.service_account_signing_key_file.clone(),
            service_account_key_files: self.service_account_key_file.clone(),
            service_account_issuer: self.service_account_issuer.clone(),
            service_account_max_token_expiration: self.service_account_max_token_expiration,
            cluster_netns: self.cluster_netns.clone(),
            advertise_address: self.advertise_address,
            kubelet_client_certificate: self
                .kubelet_client_certificate
                .clone()
                .zip(self.kubelet_client_key.clone()),
            kubelet_certificate_authority: self.kubelet_certificate_authority.clone(),
        }
    }
}

/// `capstan apiserver`.
#[derive(Debug, Clone, Args)]
pub struct ApiServerArgs {
    /// Serving.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `capstan controller-manager` and `capstan scheduler`.
#[derive(Debug, Clone, Args)]
pub struct ControlPlaneArgs {
    /// The kubeconfig naming the API server.
    #[arg(long, default_value = "capstan.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// This replica's identity in leader election (default: host name and process id).
    #[arg(long)]
    pub identity: Option<String>,
    /// The Lease's duration, in seconds.
    #[arg(long, default_value_t = 15)]
    pub leader_elect_lease_duration: u64,
    /// How long a leader keeps trying to renew, in seconds.
    #[arg(long, default_value_t = 10)]
    pub leader_elect_renew_deadline: u64,
    /// How often candidates try, in seconds.
    #[arg(long, default_value_t = 2)]
    pub leader_elect_retry_period: u64,
    /// The cluster's pod CIDR, cut into node CIDRs (controller manager only).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: IpNet,
    /// The controllers to run (controller manager only), comma-separated, as
    /// kube-controller-manager's `--controllers`: `*` turns on every controller not named
    /// otherwise, `name` turns one on, `-name` turns one off (e.g. `*,-job-controller`).
    /// Names are Kubernetes' (`replicaset-controller`, `node-ipam-controller`, ...) or their
    /// old aliases; an unknown name stops the command, listing the known ones.
    #[arg(long, default_value = "*", value_name = "NAMES")]
    pub controllers: ControllerSelection,
    /// A kube-scheduler configuration file, YAML or JSON (`KubeSchedulerConfiguration`
    /// v1; scheduler only): its profiles, backoff and leader election, which replaces the
    /// `--leader-elect-*` flags. A file that does not decode or validate stops the command.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to serve `/metrics`, `/healthz`, `/livez` and `/readyz` (plain HTTP, no
    /// authentication: keep it on loopback); port 0 picks a free one, which is logged.
    #[arg(long, default_value = crate::observability::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// The cluster's CA bundle (PEM) published in every namespace's `kube-root-ca.crt`
    /// (controller manager only), as kube-controller-manager's flag: the API server's CA.
    /// Without it, or when it cannot be read (logged), the bundle is empty.
    #[arg(long, value_name = "FILE")]
    pub root_ca_file: Option<PathBuf>,
}

impl ControlPlaneArgs {
    fn options(&self) -> ControlPlaneOptions {
        let identity = self.identity.clone().unwrap_or_else(|| {
            format!(
                "{}_{}",
                capstan_controller::leader::default_identity(),
                std::process::id()
            )
        });
        let mut options = ControlPlaneOptions::new(identity);
        options.leader_election = options
            .leader_election
            .clone()
            .lease_duration(Duration::from_secs(self.leader_elect_lease_duration))
            .renew_deadline(Duration::from_secs(self.leader_elect_renew_deadline))
            .retry_period(Duration::from_secs(self.leader_elect_retry_period));
        options.cluster_cidr = Some(self.cluster_cidr);
        options.metrics_listen = Some(self.metrics_listen);
        options.controllers = self.controllers.clone();
        options.root_ca = self
            .root_ca_file
            .as_ref()
            .and_then(|file| match std::fs::read(file) {
                Ok(pem) => Some(Arc::new(pem)),
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "--root-ca-file unreadable");
                    None
                }
            });
        options
    }
}

/// `capstan kubelet` and `capstan proxy`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The kubeconfig naming the API server.
    #[arg(long, default_value = "capstan.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long)]
    pub node_name: String,
    /// The Node's InternalIP.
    #[arg(long)]
    pub node_ip: String,
    /// The container runtime: `fake` or `containerd=<socket>`.
    #[arg(long, default_value = "fake")]
    pub runtime: RuntimeOption,
    /// The pod network: `fake` or `cni`.
    #[arg(long, default_value = "fake")]
    pub network: NetworkOption,
    /// The proxy's dataplane: `fake`, `iptables`, `nftables` or `ipvs`.
    #[arg(long, default_value = "iptables")]
    pub proxy: ProxyMode,
    /// The network namespace holding the node's dataplane (`ip netns` name).
    #[arg(long)]
    pub netns: Option<String>,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
    /// Where the node keeps state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The cluster's pod CIDR (for the proxy's masquerade rule).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: IpNet,
    /// The kubelet's heartbeat, in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_interval: u64,
    /// OCI image tarballs the kubelet imports before it starts (repeatable).
    #[arg(long)]
    pub preload_image: Vec<PathBuf>,
    /// Also keep host-gw routes to the other nodes' pod CIDRs (kubelet only).
    #[arg(long)]
    pub host_gw: bool,
    /// Masquerade all traffic to cluster IPs (proxy only).
    #[arg(long)]
    pub masquerade_all: bool,
    /// The IP the kubelet serves its API on (logs, exec, attach, port-forward, stats;
    /// kubelet only), as the kubelet's flag; inside --netns when given.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: std::net::IpAddr,
    /// The port of the kubelet's API (kubelet only), reported in the Node's
    /// `status.daemonEndpoints`; 0 picks a free one.
    #[arg(long, default_value_t = capstan_apiserver::http::pod_streams::DEFAULT_KUBELET_PORT)]
    pub port: u16,
    /// Serve the kubelet API over HTTPS with this certificate chain (PEM; kubelet only,
    /// feature `tls`), as the kubelet's flag.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Client certificates signed by this CA bundle (PEM) authenticate callers of the
    /// kubelet API as their CN and O groups (kubelet only, feature `tls`); implies HTTPS, with
    /// a self-signed serving certificate kept under --state-dir unless --tls-cert-file.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Where to serve `/metrics`, `/healthz`, `/livez` and `/readyz` (plain HTTP, no
    /// authentication: keep it on loopback); port 0 picks a free one, which is logged.
    #[arg(long, default_value = crate::observability::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
}

impl NodeArgs {
    fn options(&self) -> NodeOptions {
        let mut options = NodeOptions::fake(self.node_name.clone(), self.node_ip.clone());
        options.runtime = self.runtime.clone();
        options.network = self.network.clone();
        options.proxy = self.proxy;
        options.netns = self.netns.clone();
        options.cni_bin_dir = self.cni_bin_dir.clone();
        if let Some(dir) = &self.state_dir {
            options.state_dir = dir.clone();
        }
        options.cluster_cidr = Some(self.cluster_cidr);
        options.heartbeat_interval = Duration::from_secs(self.heartbeat_interval);
        options.preload_images = self.preload_image.clone();
        options.masquerade_all = self.masquerade_all;
        options.kubelet_metrics_listen = Some(self.metrics_listen);
        options.proxy_metrics_listen = Some(self.metrics_listen);
        options.kubelet_listen = Some(SocketAddr::new(self.address, self.port));
        if self.tls_cert_file.is_some() || self.client_ca_file.is_some() {
            options.kubelet_https = Some(crate::node::KubeletHttps {
                certificate: self
                    .tls_cert_file
                    .clone()
                    .zip(self.tls_private_key_file.clone()),
                client_ca: self.client_ca_file.clone(),
            });
        }
        options
    }
}

/// The embedded cluster's command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "cluster", about = "A whole Capstan cluster in one process")]
pub struct ClusterArgs {
    /// Serving.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The nodes' container runtime: `fake` or `containerd=<socket>`.
    #[arg(long, default_value = "fake")]
    pub runtime: RuntimeOption,
    /// The nodes' pod network: `fake` or `cni`.
    #[arg(long, default_value = "fake")]
    pub network: NetworkOption,
    /// The nodes' service proxy: `fake`, `iptables`, `nftables` or `ipvs`.
    #[arg(long, default_value = "fake")]
    pub proxy: ProxyMode,
    /// Replicas of the controller manager and of the scheduler.
    #[arg(long, default_value_t = 1)]
    pub control_plane_replicas: usize,
    /// Skip the seeds' scenario (newkubia 5 → 3); just run the cluster.
    #[arg(long)]
    pub no_scenario: bool,
    /// Exit after the scenario instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// The schedulers' kube-scheduler configuration file (as `capstan scheduler --config`).
    #[arg(long, value_name = "FILE")]
    pub scheduler_config: Option<PathBuf>,
    /// The controllers the controller managers run, as `capstan controller-manager
    /// --controllers` (comma-separated; `*`, `name`, `-name`).
    #[arg(long, default_value = "*", value_name = "NAMES")]
    pub controllers: ControllerSelection,
}

/// Loads and validates a scheduler configuration file, if one is named.
///
/// Errors: the file cannot be read, decoded or validated (every field error is listed).
pub fn load_scheduler_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<capstan_scheduler::config::KubeSchedulerConfiguration>>> {
    path.map(|path| {
        capstan_scheduler::config::KubeSchedulerConfiguration::load(path)
            .map(Arc::new)
            .with_context(|| format!("scheduler configuration {}", path.display()))
    })
    .transpose()
}

/// Runs `capstan` with the process's arguments.
///
/// Errors: whatever stopped the component.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The embedded cluster draws a table on stdout; only warnings go to stderr there.
    init_tracing(if matches!(cli.command, Command::Cluster(_)) {
        "error"
    } else {
        "info"
    });
    match cli.command {
        Command::Apiserver(args) => run_apiserver(args).await,
        Command::ControllerManager(args) => {
            let client = connect(&args.kubeconfig)?;
            let component = start_controller_manager(client, &args.options())?;
            run_until_ctrl_c(component).await
        }
        Command::Scheduler(args) => {
            let mut options = args.options();
            options.scheduler_config = load_scheduler_config(args.config.as_deref())?;
            let client = connect(&args.kubeconfig)?;
            let component = start_scheduler(client, &options)?;
            run_until_ctrl_c(component).await
        }
        Command::Kubelet(args) => {
            let options = args.options();
            let kubelet = start_kubelet(connect(&args.kubeconfig)?, &options).await?;
            let routes = args
                .host_gw
                .then(|| connect(&args.kubeconfig).map(|client| start_routes(client, &options)))
                .transpose()?;
            tracing::info!(node = %args.node_name, host_gw = args.host_gw, "kubelet running");
            shutdown_signal().await;
            kubelet.stop();
            if let Some(routes) = routes {
                routes.stop(Duration::from_secs(5)).await;
            }
            Ok(())
        }
        Command::Proxy(args) => {
            let proxy = start_proxy(connect(&args.kubeconfig)?, &args.options())?;
            tracing::info!(node = %args.node_name, mode = %args.proxy, "proxy running");
            shutdown_signal().await;
            proxy.stop(false).await;
            Ok(())
        }
        Command::Dns(args) => {
            let dns = start_cluster_dns(connect(&args.kubeconfig)?, &args.options()).await?;
            tracing::info!(
                address = %dns.address(),
                metrics = ?dns.endpoint().map(|e| e.url()),
                "cluster DNS answering"
            );
            shutdown_signal().await;
            dns.stop().await;
            Ok(())
        }
        Command::Cluster(args) => run_cluster(args).await,
        Command::BusyboxImage(args) => write_busybox_image(&args),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default`, e.g. `info`).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run_apiserver(args: ApiServerArgs) -> anyhow::Result<()> {
    let server = serve(&args.serve.config()).await?;
    server.write_kubeconfig(&args.serve.kubeconfig)?;
    tracing::info!(url = %server.url(), kubeconfig = %args.serve.kubeconfig.display(), "API server serving");
    shutdown_signal().await;
    Ok(())
}

async fn run_until_ctrl_c(component: crate::control_plane::Component) -> anyhow::Result<()> {
    tracing::info!(component = %component.name(), "running");
    shutdown_signal().await;
    component.stop(Duration::from_secs(10)).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The embedded cluster: starts it, plays the seeds' scenario (unless `--no-scenario`) with a
/// live table, prints the Events as `kubectl get events --watch` does, then serves until
/// Ctrl-C (or exits, with `--exit`).
///
/// Errors: the cluster did not start, or the scenario did not complete.
pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let mut config =
        ClusterConfig::fake(args.serve.listen, args.serve.kubeconfig.clone(), args.nodes);
    config.apiserver = args.serve.config();
    config.runtime = args.runtime.clone();
    config.network = args.network.clone();
    config.proxy = args.proxy;
    config.control_plane_replicas = args.control_plane_replicas;
    config.scheduler_config = load_scheduler_config(args.scheduler_config.as_deref())?;
    config.controllers = args.controllers.clone();
    let started = Instant::now();
    let cluster = EmbeddedCluster::start(config)
        .await
        .context("starting the cluster")?;
    println!(
        "API server at {} · kubeconfig {} · {} nodes ({} runtime, {} network, {} proxy) · store {}",
        cluster.url(),
        args.serve.kubeconfig.display(),
        args.nodes,
        args.runtime,
        args.network,
        args.proxy,
        args.serve.store
    );
    // One line per component: where its Prometheus metrics are (health beside them).
    for (component, url) in cluster.metrics_endpoints() {
        println!("metrics  {component:<40} {url}");
    }
    if let Some(dns) = cluster.dns() {
        println!("cluster DNS at {} (UDP and TCP)", dns.address());
    }
    let client = cluster.client();
    let mut view = LiveView::new(client.clone());
    view.until(
        "waiting for the nodes to be Ready",
        Duration::from_secs(60),
        |nodes, _| nodes.len() == args.nodes && nodes.iter().all(crate::embedded::is_settled),
    )
    .await?;
    println!(
        "{} nodes Ready after {:.1} s",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    if !args.no_scenario {
        scenario(&client, &mut view).await?;
    }
    if args.exit {
        cluster.shutdown().await;
        return Ok(());
    }
    println!(
        "\nServing until Ctrl-C. Try: kubectl --kubeconfig {} get nodes,deploy,rs,pods -o wide",
        args.serve.kubeconfig.display()
    );
    tokio::select! {
        () = view.follow() => {}
        () = shutdown_signal() => {}
    }
    println!(
        "\nShutting down: nodes, scheduler, controller manager (Leases released), API server."
    );
    cluster.shutdown().await;
    Ok(())
}

/// seeds/000: newkubia with 5 replicas, scaled to 3.
async fn scenario(client: &Arc<dyn Client>, view: &mut LiveView) -> anyhow::Result<()> {
    let deployment: Deployment =
        serde_yaml_ng::from_str(NEWKUBIA).context("parsing the newkubia manifest")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let since = Instant::now();
    println!("\n$ kubectl apply -f newkubia-deployment.yaml   # replicas: 5");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .context("creating newkubia")?;
    view.until(
        "newkubia: 5 Pods Running",
        Duration::from_secs(60),
        |_, pods| running(pods) == 5 && live(pods) == 5,
    )
    .await?;
    println!(
        "all 5 Pods Running after {:.2} s",
        since.elapsed().as_secs_f64()
    );
    println!("\n$ kubectl scale deployment newkubia --replicas=3");
    deployments
        .patch(
            "newkubia",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .context("scaling newkubia")?;
    view.until(
        "newkubia: 3 Pods Running",
        Duration::from_secs(60),
        |_, pods| running(pods) == 3 && pods.len() == 3,
    )
    .await?;
    println!("\n$ kubectl get events --watch");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut all = events.list(&ListParams::default()).await?.items;
    // In the order they were last written, as a watch delivers them.
    all.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    });
    print!("{}", events_table(&all));
    Ok(())
}

fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

fn live(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

/// Events in `kubectl get events` columns: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE.
pub fn events_table(events: &[Event]) -> String {
    let mut out = format!(
        "{:<9} {:<8} {:<18} {:<34} MESSAGE\n",
        "LAST SEEN", "TYPE", "REASON", "OBJECT"
    );
    let now = capstan_api::k8s_openapi::jiff::Timestamp::now();
    for event in events {
        let seen = event
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.event_time.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .map(|t| {
                capstan_apiserver::http::table::human_duration(
                    now.as_second().saturating_sub(t.as_second()),
                )
            })
            .unwrap_or_else(|| "<unknown>".into());
        let object = &event.involved_object;
        out.push_str(&format!(
            "{:<9} {:<8} {:<18} {:<34} {}\n",
            seen,
            event.type_.as_deref().unwrap_or_default(),
            event.reason.as_deref().unwrap_or_default(),
            format!(
                "{}/{}",
                object.kind.as_deref().unwrap_or_default().to_lowercase(),
                object.name.as_deref().unwrap_or_default()
            ),
            event.message.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// The live table: redrawn in place on a terminal; elsewhere printed when it changes.
struct LiveView {
    nodes: Api<Node>,
    pods: Api<Pod>,
    terminal: bool,
    last: String,
    last_printed: Option<Instant>,
}

impl LiveView {
    fn new(client: Arc<dyn Client>) -> Self {
        LiveView {
            nodes: Api::all(client.clone()),
            pods: Api::namespaced(client, "default"),
            terminal: std::io::stdout().is_terminal(),
            last: String::new(),
            last_printed: None,
        }
    }

    async fn snapshot(&self) -> anyhow::Result<(Vec<Node>, Vec<Pod>)> {
        let nodes = self.nodes.list(&ListParams::default()).await?.items;
        let pods = self.pods.list(&ListParams::default()).await?.items;
        Ok((nodes, pods))
    }

    fn show(&mut self, title: &str, nodes: &[Node], pods: &[Pod], force: bool) {
        let table = format!("{title}\n{}", crate::status::render(nodes, pods, 12));
        if table == self.last && !force {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let lines = self.last.lines().count();
            if lines > 0 {
                // Up over the previous table, and clear to the end of the screen.
                let _ = write!(out, "\x1b[{lines}A\x1b[J");
            }
            let _ = write!(out, "{table}");
        } else {
            let due = self
                .last_printed
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
            if !(force || due) {
                return;
            }
            let _ = write!(out, "{table}");
            self.last_printed = Some(Instant::now());
        }
        let _ = out.flush();
        self.last = table;
    }

    /// Redraws until `done` holds, up to `timeout`; the final table stays on screen.
    async fn until(
        &mut self,
        title: &str,
        timeout: Duration,
        done: impl Fn(&[Node], &[Pod]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (nodes, pods) = self.snapshot().await?;
            if done(&nodes, &pods) {
                self.show(title, &nodes, &pods, true);
                self.last.clear();
                return Ok(());
            }
            self.show(title, &nodes, &pods, false);
            if Instant::now() > deadline {
                anyhow::bail!("{title}: not reached within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps the table live while serving.
    async fn follow(&mut self) {
        loop {
            if let Ok((nodes, pods)) = self.snapshot().await {
                self.show("cluster (live)", &nodes, &pods, false);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod compaction_flag_tests {
    use super::*;

    #[test]
    fn compaction_intervals_read_as_kube_apiserver_durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5x", "m", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod signing_flag_tests {
    use super::*;

    fn apiserver(args: &[&str]) -> Result<ApiServerConfig, clap::Error> {
        let cli = Cli::try_parse_from(
            ["capstan", "apiserver"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match cli.command {
            Command::Apiserver(args) => Ok(args.serve.config()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_cluster_signing_flags_name_the_ca_that_signs_and_imply_https() {
        let config = apiserver(&[
            "--cluster-signing-cert-file",
            "/etc/ca.crt",
            "--cluster-signing-key-file",
            "/etc/ca.key",
        ])
        .unwrap();
        assert_eq!(
            config.signing_ca,
            Some((PathBuf::from("/etc/ca.crt"), PathBuf::from("/etc/ca.key")))
        );
        assert_eq!(config.cert_dir, Some(PathBuf::from(DEFAULT_CERT_DIR)));

        let plain = apiserver(&[]).unwrap();
        assert_eq!(plain.signing_ca, None);
        assert_eq!(plain.cert_dir, None);
    }

    #[test]
    fn a_signing_certificate_without_its_key_is_refused() {
        for args in [
            &["--cluster-signing-cert-file", "/etc/ca.crt"][..],
            &["--cluster-signing-key-file", "/etc/ca.key"][..],
        ] {
            let error = apiserver(args).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{args:?}"
            );
        }
    }
}
