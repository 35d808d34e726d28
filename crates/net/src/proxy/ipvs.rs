//! The IPVS backend: one virtual server per cluster IP:port (and per node IP:node port),
//! round-robin over the endpoints as masqueraded real servers, applied with
//! `ipvsadm --restore`.
//!
//! A sync computes the whole desired [`IpvsTable`] and applies only its difference from the
//! current one: on a full sync the current table is read back from the kernel
//! (`ipvsadm -S -n`, the same format as the input), on a partial one it is the table the last
//! sync left. So established virtual servers are never torn down and rebuilt. The backend
//! owns the node's IPVS table: a full sync deletes virtual servers it did not ask for.
//! ClientIP affinity becomes persistence (`-p <timeout>`).
//!
//! IPVS only answers for addresses the node holds: the backend binds every cluster IP to a
//! dummy interface ([`IpvsConfig::interface`], created when missing) and unbinds those no
//! longer needed. Masquerading of Service traffic is left to the node's other rules.
//!
//! [`IpvsBackend::new`] checks that the kernel has IPVS and fails with
//! [`ProxyError::IpvsUnavailable`] when it has not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::command::Runner;
use super::{Changes, Protocol, ProxyBackend, ProxyError, ProxyState, Result, SessionAffinity};

/// The scheduler of every virtual server: round robin.
pub const SCHEDULER: &str = "rr";

/// A virtual server's identity: protocol and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualAddress {
    /// The protocol.
    pub protocol: Protocol,
    /// The address and port.
    pub address: SocketAddr,
}

impl VirtualAddress {
    fn flag(&self) -> String {
        let option = match self.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        };
        format!("{option} {}", self.address)
    }
}

/// A virtual server's settings and real servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtualServer {
    /// The scheduler (`rr`).
    pub scheduler: String,
    /// Persistence timeout in seconds, for ClientIP affinity.
    pub persistence: Option<u32>,
    /// The real servers (masqueraded, weight 1).
    pub reals: BTreeSet<SocketAddr>,
}

/// An IPVS table: what `ipvsadm -S -n` prints, as a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsTable {
    /// The virtual servers.
    pub servers: BTreeMap<VirtualAddress, VirtualServer>,
}

impl IpvsTable {
    /// The table that serves `state`, with node ports on each of `node_ips`.
    pub fn desired(state: &ProxyState, node_ips: &[IpAddr]) -> Self {
        let mut table = IpvsTable::default();
        for port in state.services.values() {
            let server = VirtualServer {
                scheduler: SCHEDULER.to_owned(),
                persistence: match port.affinity {
                    SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
                    SessionAffinity::None => None,
                },
                reals: port.endpoints.iter().copied().collect(),
            };
            let mut frontends = vec![SocketAddr::new(port.cluster_ip, port.port)];
            if let Some(node_port) = port.node_port {
                frontends.extend(
                    node_ips
                        .iter()
                        .filter(|ip| ip.is_ipv4() == port.cluster_ip.is_ipv4())
                        .map(|ip| SocketAddr::new(*ip, node_port)),
                );
            }
            for address in frontends {
                table.servers.insert(
                    VirtualAddress {
                        protocol: port.protocol,
                        address,
                    },
                    server.clone(),
                );
            }
        }
        table
    }

    /// Parses `ipvsadm -S -n` output. Lines it does not understand are skipped: they are
    /// virtual servers of a kind this backend never creates (firewall marks).
    pub fn parse(save: &str) -> Self {
        let mut table = IpvsTable::default();
        for line in save.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some((command, rest)) = words.split_first() else {
                continue;
            };
            let Some(virtual_address) = parse_virtual(rest) else {
                continue;
            };
            match *command {
                "-A" => {
                    let server = table.servers.entry(virtual_address).or_default();
                    server.scheduler = option(rest, "-s").unwrap_or(SCHEDULER).to_owned();
                    server.persistence = option(rest, "-p").and_then(|p| p.parse().ok());
                }
                "-a" => {
                    if let Some(real) = option(rest, "-r").and_then(|r| r.parse().ok()) {
                        table
                            .servers
                            .entry(virtual_address)
                            .or_default()
                            .reals
                            .insert(real);
                    }
                }
                _ => {}
            }
        }
        table
    }

    /// The `ipvsadm --restore` input that turns `current` into `self`.
    pub fn diff_from(&self, current: &IpvsTable) -> String {
        let mut out = String::new();
        for address in current.servers.keys() {
            if !self.servers.contains_key(address) {
                let _ = writeln!(out, "-D {}", address.flag());
            }
        }
        for (address, server) in &self.servers {
            let settings = format!(
                "{} -s {}{}",
                address.flag(),
                server.scheduler,
                server
                    .persistence
                    .map(|p| format!(" -p {p}"))
                    .unwrap_or_default()
            );
            let existing = current.servers.get(address);
            match existing {
                None => {
                    let _ = writeln!(out, "-A {settings}");
                }
                Some(old)
                    if old.scheduler != server.scheduler
                        || old.persistence != server.persistence =>
                {
                    let _ = writeln!(out, "-E {settings}");
                }
                Some(_) => {}
            }
            let old_reals = existing.map(|old| &old.reals);
            for real in old_reals.into_iter().flatten() {
                if !server.reals.contains(real) {
                    let _ = writeln!(out, "-d {} -r {real}", address.flag());
                }
            }
            for real in &server.reals {
                if !old_reals.is_some_and(|old| old.contains(real)) {
                    let _ = writeln!(out, "-a {} -r {real} -m -w 1", address.flag());
                }
            }
        }
        out
    }
}

fn parse_virtual(words: &[&str]) -> Option<VirtualAddress> {
    let (protocol, address) = match words {
        ["-t", address, ..] => (Protocol::Tcp, address),
        ["-u", address, ..] => (Protocol::Udp, address),
        ["--sctp-service", address, ..] => (Protocol::Sctp, address),
        _ => return None,
    };
    Some(VirtualAddress {
        protocol,
        address: address.parse().ok()?,
    })
}

fn option<'a>(words: &[&'a str], name: &str) -> Option<&'a str> {
    words
        .windows(2)
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1])
}

/// Why IPVS cannot be used, or `None` when it can: `/proc/net/ip_vs` exists once the kernel
/// has IPVS (built in or the `ip_vs` module loaded).
pub fn ipvs_unavailable(proc_root: &std::path::Path) -> Option<String> {
    let table = proc_root.join("net/ip_vs");
    if table.exists() {
        return None;
    }
    let loaded = std::fs::read_to_string(proc_root.join("modules"))
        .map(|modules| modules.lines().any(|line| line.starts_with("ip_vs ")))
        .unwrap_or(false);
    Some(if loaded {
        format!(
            "the ip_vs module is loaded but {} is missing",
            table.display()
        )
    } else {
        format!(
            "{} is missing and the ip_vs module is not loaded",
            table.display()
        )
    })
}

/// Where the IPVS tools are and what the node looks like.
#[derive(Clone, Debug)]
pub struct IpvsConfig {
    /// The `ipvsadm` binary.
    pub ipvsadm: String,
    /// The `ip` binary (iproute2), to bind cluster IPs.
    pub ip: String,
    /// The dummy interface holding the cluster IPs.
    pub interface: String,
    /// The node's addresses, on which node ports are served.
    pub node_ips: Vec<IpAddr>,
    /// Run commands in this named network namespace; `None` for the proxy's own.
    pub netns: Option<String>,
    /// Where procfs is mounted (`/proc`), for the kernel check.
    pub proc_root: PathBuf,
}

impl Default for IpvsConfig {
    fn default() -> Self {
        IpvsConfig {
            ipvsadm: "ipvsadm".into(),
            ip: "ip".into(),
            interface: "capstan-ipvs0".into(),
            node_ips: Vec::new(),
            netns: None,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// The IPVS [`ProxyBackend`].
#[derive(Debug)]
pub struct IpvsBackend {
    config: IpvsConfig,
    runner: Runner,
    applied: Mutex<IpvsTable>,
}

impl IpvsBackend {
    /// A backend using `config`, once the kernel is found to have IPVS; otherwise
    /// [`ProxyError::IpvsUnavailable`] saying what is missing. Touches nothing.
    pub fn new(config: IpvsConfig) -> Result<Self> {
        if let Some(reason) = ipvs_unavailable(&config.proc_root) {
            return Err(ProxyError::IpvsUnavailable { reason });
        }
        Ok(IpvsBackend {
            runner: Runner::new(config.netns.clone()),
            config,
            applied: Mutex::new(IpvsTable::default()),
        })
    }

    async fn kernel_table(&self) -> Result<IpvsTable> {
        let save = self
            .runner
            .run(&self.config.ipvsadm, &["-S", "-n"], "")
            .await?;
        Ok(IpvsTable::parse(&save))
    }

    async fn bound_addresses(&self) -> Result<BTreeSet<IpAddr>> {
        let interface = &self.config.interface;
        if self
            .runner
            .run(&self.config.ip, &["link", "show", interface], "")
            .await
            .is_err()
        {
            self.runner
                .run(
                    &self.config.ip,
                    &["link", "add", interface, "type", "dummy"],
                    "",
                )
                .await?;
        }
        let listing = self
            .runner
            .run(
                &self.config.ip,
                &["-o", "addr", "show", "dev", interface],
                "",
            )
            .await?;
        Ok(listing
            .lines()
            .filter_map(|line| {
                let mut words = line
                    .split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6");
                words.next()?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    async fn bind(&self, wanted: &BTreeSet<IpAddr>, bound: &BTreeSet<IpAddr>) -> Result<()> {
        let interface = &self.config.interface;
        let mut batch = String::new();
        for address in wanted.difference(bound) {
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(batch, "addr add {address}/{prefix} dev {interface}");
        }
        for address in bound.difference(wanted) {
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(batch, "addr del {address}/{prefix} dev {interface}");
        }
        if !batch.is_empty() {
            self.runner
                .run(&self.config.ip, &["-batch", "-"], &batch)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ProxyBackend for IpvsBackend {
    fn name(&self) -> &str {
        "ipvs"
    }

    async fn sync(&self, state: &ProxyState, changes: &Changes) -> Result<()> {
        state.validate()?;
        let desired = IpvsTable::desired(state, &self.config.node_ips);
        let current = match changes {
            Changes::Full => self.kernel_table().await?,
            Changes::Partial(_) => self.applied.lock().clone(),
        };
        let cluster_ips: BTreeSet<IpAddr> = state.services.values().map(|p| p.cluster_ip).collect();
        let bound = self.bound_addresses().await?;
        // Bind new addresses before their virtual servers exist, unbind old ones after.
        self.bind(&cluster_ips.union(&bound).copied().collect(), &bound)
            .await?;
        let text = desired.diff_from(&current);
        if !text.is_empty() {
            self.runner
                .run(&self.config.ipvsadm, &["--restore"], &text)
                .await?;
        }
        let all: BTreeSet<IpAddr> = cluster_ips.union(&bound).copied().collect();
        self.bind(&cluster_ips, &all).await?;
        *self.applied.lock() = desired;
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        let current = self.kernel_table().await?;
        let text = IpvsTable::default().diff_from(&current);
        if !text.is_empty() {
            self.runner
                .run(&self.config.ipvsadm, &["--restore"], &text)
                .await?;
        }
        if self
            .runner
            .run(
                &self.config.ip,
                &["link", "show", &self.config.interface],
                "",
            )
            .await
            .is_ok()
        {
            self.runner
                .run(
                    &self.config.ip,
                    &["link", "del", &self.config.interface],
                    "",
                )
                .await?;
        }
        *self.applied.lock() = IpvsTable::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::assert_golden;
    use crate::proxy::tests::sample_state;
    use crate::proxy::ServicePortName;

    fn node_ips() -> Vec<IpAddr> {
        vec!["192.168.1.10".parse().unwrap()]
    }

    #[test]
    fn a_first_sync_creates_every_virtual_and_real_server() {
        let desired = IpvsTable::desired(&sample_state(), &node_ips());
        let text = desired.diff_from(&IpvsTable::default());
        assert_golden("ipvs_full.txt", &text);
        // What ipvsadm -S prints is what the backend reads back.
        assert_eq!(IpvsTable::parse(&text), desired);
    }

    #[test]
    fn a_changed_service_only_changes_its_servers() {
        let before = sample_state();
        let mut after = before.clone();
        let web = ServicePortName::new("default", "web", "http", Protocol::Tcp);
        let port = after.services.get_mut(&web).unwrap();
        port.endpoints = vec![
            "10.244.1.3:8080".parse().unwrap(),
            "10.244.1.4:8080".parse().unwrap(),
        ];
        port.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
        let api = ServicePortName::new("default", "api", "", Protocol::Udp);
        after.services.remove(&api);
        let text = IpvsTable::desired(&after, &node_ips())
            .diff_from(&IpvsTable::desired(&before, &node_ips()));
        assert_golden("ipvs_partial.txt", &text);
        let same = IpvsTable::desired(&after, &node_ips());
        assert_eq!(same.diff_from(&same), "");
    }

    #[test]
    fn a_kernel_without_ipvs_is_a_clear_error() {
        let proc_root =
            std::env::temp_dir().join(format!("capstan-ipvs-proc-{}", std::process::id()));
        std::fs::create_dir_all(proc_root.join("net")).unwrap();
        std::fs::write(proc_root.join("modules"), "nf_nat 61440 2 - Live 0x0\n").unwrap();
        let error = IpvsBackend::new(IpvsConfig {
            proc_root: proc_root.clone(),
            ..IpvsConfig::default()
        })
        .unwrap_err();
        assert!(matches!(error, ProxyError::IpvsUnavailable { .. }));
        assert_eq!(
            error.to_string(),
            format!(
                "the kernel has no IPVS support ({}/net/ip_vs is missing and the ip_vs module is not loaded); load the ip_vs module or use the iptables or nftables backend",
                proc_root.display()
            )
        );
        assert!(!error.is_retryable());
        std::fs::write(
            proc_root.join("net/ip_vs"),
            "IP Virtual Server version 1.2.1\n",
        )
        .unwrap();
        assert!(IpvsBackend::new(IpvsConfig {
            proc_root: proc_root.clone(),
            ..IpvsConfig::default()
        })
        .is_ok());
        std::fs::remove_dir_all(proc_root).unwrap();
    }

    #[test]
    fn this_kernel_is_checked_through_proc() {
        // The answer depends on the machine; the check must agree with /proc either way.
        let has_ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
        match IpvsBackend::new(IpvsConfig::default()) {
            Ok(_) => assert!(has_ipvs),
            Err(error) => {
                assert!(!has_ipvs);
                assert!(
                    error.to_string().contains("/proc/net/ip_vs is missing"),
                    "{error}"
                );
            }
        }
    }
}
