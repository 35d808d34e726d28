//! The in-process fake network: IPAM over one pod CIDR, no OS access.
//!
//! [`FakeNetwork`] is one node's network plugin. `add` hands the attachment the next free
//! address of the node's pod CIDR (round robin, as CNI's host-local does), never one that is
//! in use, and never the network, gateway or broadcast address; it returns what a bridge
//! plugin would: `eth0` in the sandbox, the address with its gateway, and a default route.
//! `del` frees the address and is idempotent; `check` fails for attachments it does not know.
//!
//! It keeps only a map of attachments and a set of used addresses, with no task or timer, so
//! thousands of fake nodes fit in one process. A clone shares the same state. With a state
//! file ([`FakeNetworkBuilder::state_file`]) the allocations survive a restart: every change
//! is written to a temporary file that is then renamed over the state file, so a crash leaves
//! the old or the new state, never a torn one.
//!
//! ```
//! use capstan_net::fake::FakeNetwork;
//! use capstan_net::{Attachment, NetworkPlugin};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let network = FakeNetwork::new("10.244.1.0/24".parse().unwrap())?;
//! let result = network.add(&Attachment::new("sandbox-1", "/var/run/netns/p1")).await?;
//! assert_eq!(result.pod_ips(), vec!["10.244.1.2".parse::<std::net::IpAddr>().unwrap()]);
//! network.del(&Attachment::new("sandbox-1", "")).await?;
//! network.del(&Attachment::new("sandbox-1", "")).await?; // idempotent
//! assert_eq!(network.allocated_count(), 0);
//! # Ok::<(), capstan_net::NetError>(())
//! # }).unwrap();
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::addr::{from_u128, to_u128};
use crate::atomic_write::write_atomically;
use crate::error::{NetError, Result};
use crate::{AttachResult, Attachment, Interface, IpConfig, NetworkPlugin, Route};

/// The CNI version of the results the fake returns.
pub const FAKE_CNI_VERSION: &str = "1.0.0";

/// Builds a [`FakeNetwork`].
#[derive(Debug, Clone)]
pub struct FakeNetworkBuilder {
    name: String,
    cidr: IpNet,
    gateway: Option<IpAddr>,
    state_file: Option<PathBuf>,
}

impl FakeNetworkBuilder {
    /// The network's name (`fake` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The gateway returned with every address; the CIDR's first host by default. It is
    /// never handed to an attachment.
    pub fn gateway(mut self, gateway: IpAddr) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Keeps the allocations in a JSON file: `build` reloads it if it exists, and every
    /// change rewrites it atomically.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Builds the network.
    ///
    /// Fails with [`NetError::InvalidConfig`] if the CIDR has no usable address, the gateway
    /// is not a host of the CIDR, or the state file is unreadable or inconsistent (another
    /// CIDR, an address outside it, an address or attachment twice).
    pub fn build(self) -> Result<FakeNetwork> {
        let cidr = self.cidr.trunc();
        let network = to_u128(cidr.network());
        let broadcast = to_u128(cidr.broadcast());
        if broadcast - network < 2 {
            return Err(invalid(
                None,
                format!("pod CIDR {cidr} has no address to hand out"),
            ));
        }
        let (first, last) = (network + 1, broadcast - 1);
        let gateway = self.gateway.unwrap_or_else(|| from_u128(first, cidr));
        let gw = to_u128(gateway);
        if gateway.is_ipv4() != cidr.addr().is_ipv4() || gw < first || gw > last {
            return Err(invalid(
                None,
                format!("gateway {gateway} is not a host of {cidr}"),
            ));
        }
        let capacity = last - first; // every host but the gateway
        if capacity == 0 {
            return Err(invalid(
                None,
                format!("pod CIDR {cidr} has no address besides the gateway"),
            ));
        }
        let mut state = State {
            attachments: HashMap::new(),
            used: HashSet::new(),
            cursor: first,
        };
        if let Some(path) = &self.state_file {
            state.load(path, cidr, gw, first, last)?;
        }
        Ok(FakeNetwork {
            inner: Arc::new(Inner {
                name: self.name,
                cidr,
                gateway,
                first,
                last,
                capacity,
                state_file: self.state_file,
                state: Mutex::new(state),
                unavailable: Mutex::new(None),
            }),
        })
    }
}

/// One node's fake network plugin: in-process IPAM over a pod CIDR. Clones share state.
#[derive(Clone)]
pub struct FakeNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    cidr: IpNet,
    gateway: IpAddr,
    first: u128,
    last: u128,
    capacity: u128,
    state_file: Option<PathBuf>,
    state: Mutex<State>,
    unavailable: Mutex<Option<String>>,
}

struct State {
    attachments: HashMap<Key, Allocation>,
    used: HashSet<u128>,
    cursor: u128,
}

type Key = (String, String);

#[derive(Clone)]
struct Allocation {
    netns: PathBuf,
    address: u128,
}

/// The state file's format.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    cidr: IpNet,
    allocations: Vec<StateEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateEntry {
    container_id: String,
    ifname: String,
    netns: PathBuf,
    address: IpAddr,
}

impl FakeNetwork {
    /// A builder for a network handing out addresses of `cidr`.
    pub fn builder(cidr: IpNet) -> FakeNetworkBuilder {
        FakeNetworkBuilder {
            name: "fake".to_owned(),
            cidr,
            gateway: None,
            state_file: None,
        }
    }

    /// A network over `cidr` with the default name and gateway and no state file.
    pub fn new(cidr: IpNet) -> Result<Self> {
        Self::builder(cidr).build()
    }

    /// A network over `cidr` whose allocations are kept in (and reloaded from) `path`.
    pub fn with_state_file(cidr: IpNet, path: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(cidr).state_file(path).build()
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> IpNet {
        self.inner.cidr
    }

    /// The gateway given to every attachment.
    pub fn gateway(&self) -> IpAddr {
        self.inner.gateway
    }

    /// How many addresses the CIDR can hand out in all.
    pub fn capacity(&self) -> u128 {
        self.inner.capacity
    }

    /// How many addresses are allocated.
    pub fn allocated_count(&self) -> usize {
        self.inner.state.lock().used.len()
    }

    /// The address of an attachment, if it is set up.
    pub fn address_of(&self, container_id: &str, ifname: &str) -> Option<IpAddr> {
        let state = self.inner.state.lock();
        state
            .attachments
            .get(&(container_id.to_owned(), ifname.to_owned()))
            .map(|a| from_u128(a.address, self.inner.cidr))
    }

    /// Every allocated address with its attachment's container id and interface, sorted by
    /// address.
    pub fn allocations(&self) -> Vec<(IpAddr, String, String)> {
        let state = self.inner.state.lock();
        let mut all: Vec<_> = state
            .attachments
            .iter()
            .map(|((id, ifname), a)| {
                (
                    from_u128(a.address, self.inner.cidr),
                    id.clone(),
                    ifname.clone(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Makes `status` and `add` fail with [`NetError::Unavailable`] (`Some(reason)`) or
    /// succeed again (`None`), as a node whose network is not ready. `del` and `check` still
    /// work, as they would with a real plugin whose configuration went away.
    pub fn set_unavailable(&self, reason: Option<String>) {
        *self.inner.unavailable.lock() = reason;
    }

    fn result_for(&self, attachment: &Attachment, address: u128) -> AttachResult {
        let cidr = self.inner.cidr;
        let ip = from_u128(address, cidr);
        let default_dst = if ip.is_ipv4() {
            IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0)
        } else {
            IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0)
        }
        .expect("a zero prefix is valid");
        AttachResult {
            cni_version: FAKE_CNI_VERSION.to_owned(),
            interfaces: vec![Interface {
                name: attachment.ifname.clone(),
                mac: mac_for(address),
                sandbox: attachment.netns.display().to_string(),
            }],
            ips: vec![IpConfig {
                address: IpNet::new(ip, cidr.prefix_len()).expect("prefix of the CIDR"),
                gateway: Some(self.inner.gateway),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: default_dst,
                gw: Some(self.inner.gateway),
            }],
            ..Default::default()
        }
    }

    /// Saves `state` if there is a state file.
    fn persist(&self, state: &State) -> Result<()> {
        match &self.inner.state_file {
            Some(path) => state.save(path, self.inner.cidr),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for FakeNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeNetwork")
            .field("name", &self.inner.name)
            .field("cidr", &self.inner.cidr)
            .field("allocated", &self.allocated_count())
            .finish_non_exhaustive()
    }
}

fn key_of(attachment: &Attachment) -> Result<Key> {
    if attachment.container_id.is_empty() {
        return Err(NetError::InvalidArgument("empty container id".to_owned()));
    }
    if attachment.ifname.is_empty() {
        return Err(NetError::InvalidArgument("empty interface name".to_owned()));
    }
    Ok((attachment.container_id.clone(), attachment.ifname.clone()))
}

#[async_trait]
impl NetworkPlugin for FakeNetwork {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn add(&self, attachment: &Attachment) -> Result<AttachResult> {
        let key = key_of(attachment)?;
        if attachment.netns.as_os_str().is_empty() {
            return Err(NetError::InvalidArgument(
                "empty network namespace path on add".to_owned(),
            ));
        }
        if let Some(reason) = self.inner.unavailable.lock().clone() {
            return Err(NetError::Unavailable(reason));
        }
        let inner = &self.inner;
        let mut state = inner.state.lock();
        if state.attachments.contains_key(&key) {
            return Err(NetError::AlreadyExists {
                container_id: key.0,
                ifname: key.1,
            });
        }
        if state.used.len() as u128 >= inner.capacity {
            return Err(NetError::AddressExhausted {
                range: inner.cidr.to_string(),
            });
        }
        let gateway = to_u128(inner.gateway);
        let mut candidate = state.cursor;
        let address = loop {
            if candidate < inner.first || candidate > inner.last {
                candidate = inner.first;
            }
            if candidate != gateway && !state.used.contains(&candidate) {
                break candidate;
            }
            candidate += 1;
        };
        let cursor = state.cursor;
        state.used.insert(address);
        state.attachments.insert(
            key.clone(),
            Allocation {
                netns: attachment.netns.clone(),
                address,
            },
        );
        state.cursor = address + 1;
        if let Err(error) = self.persist(&state) {
            state.used.remove(&address);
            state.attachments.remove(&key);
            state.cursor = cursor;
            return Err(error);
        }
        Ok(self.result_for(attachment, address))
    }

    async fn del(&self, attachment: &Attachment) -> Result<()> {
        let key = key_of(attachment)?;
        let mut state = self.inner.state.lock();
        let Some(allocation) = state.attachments.remove(&key) else {
            return Ok(());
        };
        state.used.remove(&allocation.address);
        if let Err(error) = self.persist(&state) {
            state.used.insert(allocation.address);
            state.attachments.insert(key, allocation);
            return Err(error);
        }
        Ok(())
    }

    async fn check(&self, attachment: &Attachment) -> Result<()> {
        let key = key_of(attachment)?;
        let state = self.inner.state.lock();
        let failed = |message: String| NetError::CheckFailed {
            container_id: key.0.clone(),
            ifname: key.1.clone(),
            message,
        };
        match state.attachments.get(&key) {
            None => Err(failed("no such attachment".to_owned())),
            Some(a) if a.netns != attachment.netns => Err(failed(format!(
                "set up in network namespace {}, not {}",
                a.netns.display(),
                attachment.netns.display()
            ))),
            Some(_) => Ok(()),
        }
    }

    async fn status(&self) -> Result<()> {
        match self.inner.unavailable.lock().clone() {
            Some(reason) => Err(NetError::Unavailable(reason)),
            None => Ok(()),
        }
    }
}

impl State {
    fn load(
        &mut self,
        path: &Path,
        cidr: IpNet,
        gateway: u128,
        first: u128,
        last: u128,
    ) -> Result<()> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NetError::io(format!("reading {}", path.display()), e)),
        };
        let bad = |message: String| invalid(Some(path), message);
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a state file: {e}")))?;
        if file.cidr.trunc() != cidr {
            return Err(bad(format!(
                "the state is for pod CIDR {}, not {cidr}",
                file.cidr
            )));
        }
        for entry in file.allocations {
            let address = to_u128(entry.address);
            if !cidr.contains(&entry.address)
                || address < first
                || address > last
                || address == gateway
            {
                return Err(bad(format!(
                    "address {} is not one {cidr} hands out",
                    entry.address
                )));
            }
            if entry.container_id.is_empty() || entry.ifname.is_empty() {
                return Err(bad(
                    "an allocation without container id or interface".to_owned()
                ));
            }
            if !self.used.insert(address) {
                return Err(bad(format!("address {} is allocated twice", entry.address)));
            }
            let key = (entry.container_id, entry.ifname);
            if self.attachments.contains_key(&key) {
                return Err(bad(format!("attachment {}/{} appears twice", key.0, key.1)));
            }
            self.attachments.insert(
                key,
                Allocation {
                    netns: entry.netns,
                    address,
                },
            );
            self.cursor = self.cursor.max(address + 1);
        }
        Ok(())
    }

    fn save(&self, path: &Path, cidr: IpNet) -> Result<()> {
        let mut allocations: Vec<StateEntry> = self
            .attachments
            .iter()
            .map(|((id, ifname), a)| StateEntry {
                container_id: id.clone(),
                ifname: ifname.clone(),
                netns: a.netns.clone(),
                address: from_u128(a.address, cidr),
            })
            .collect();
        allocations.sort_by_key(|e| e.address);
        let bytes = serde_json::to_vec_pretty(&StateFile { cidr, allocations })
            .expect("the state serializes");
        write_atomically(path, &bytes)
    }
}

fn invalid(path: Option<&Path>, message: String) -> NetError {
    NetError::InvalidConfig {
        path: path.map(Path::to_path_buf),
        message,
    }
}

/// A locally administered unicast MAC derived from the address, like the bridge plugin's.
fn mac_for(address: u128) -> String {
    let b = (address as u32).to_be_bytes();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(cidr: &str) -> FakeNetwork {
        FakeNetwork::new(cidr.parse().unwrap()).unwrap()
    }

    fn pod(id: &str) -> Attachment {
        Attachment::new(id, format!("/var/run/netns/{id}"))
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), f).await })
            .expect("the test finishes in time")
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "capstan-fake-net-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn add_returns_eth0_an_address_with_gateway_and_a_default_route() {
        run(async {
            let network = net("10.244.1.0/24");
            let result = network.add(&pod("a")).await.unwrap();
            assert_eq!(result.cni_version, "1.0.0");
            assert_eq!(result.interfaces[0].name, "eth0");
            assert_eq!(result.interfaces[0].sandbox, "/var/run/netns/a");
            assert_eq!(result.ips[0].address, "10.244.1.2/24".parse().unwrap());
            assert_eq!(result.ips[0].gateway, Some("10.244.1.1".parse().unwrap()));
            assert_eq!(result.ips[0].interface, Some(0));
            assert_eq!(result.routes[0].dst, "0.0.0.0/0".parse().unwrap());
            assert_eq!(
                network.address_of("a", "eth0"),
                Some("10.244.1.2".parse().unwrap())
            );
        });
    }

    #[test]
    fn a_small_range_skips_network_gateway_and_broadcast_then_is_exhausted() {
        run(async {
            let network = net("10.0.0.0/29"); // .0 network, .1 gateway, .7 broadcast
            assert_eq!(network.capacity(), 5);
            let mut got = Vec::new();
            for i in 0..5 {
                let r = network.add(&pod(&format!("p{i}"))).await.unwrap();
                got.push(r.pod_ips()[0].to_string());
            }
            assert_eq!(
                got,
                ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
            );
            let err = network.add(&pod("p5")).await.unwrap_err();
            assert!(
                matches!(err, NetError::AddressExhausted { ref range } if range == "10.0.0.0/29")
            );
            assert!(err.is_retryable());
            network.del(&pod("p2")).await.unwrap();
            let again = network.add(&pod("p5")).await.unwrap();
            assert_eq!(again.pod_ips()[0].to_string(), "10.0.0.4");
        });
    }

    #[test]
    fn a_custom_gateway_is_never_handed_out() {
        run(async {
            let network = FakeNetwork::builder("10.0.0.0/29".parse().unwrap())
                .gateway("10.0.0.3".parse().unwrap())
                .build()
                .unwrap();
            let mut got = Vec::new();
            for i in 0..5 {
                got.push(network.add(&pod(&format!("p{i}"))).await.unwrap().pod_ips()[0]);
            }
            assert!(!got.contains(&"10.0.0.3".parse().unwrap()));
            assert!(got.contains(&"10.0.0.1".parse().unwrap()));
        });
    }

    #[test]
    fn ipv6_ranges_work() {
        run(async {
            let network = net("fd00:10::/120");
            let result = network.add(&pod("a")).await.unwrap();
            assert_eq!(result.ips[0].address, "fd00:10::2/120".parse().unwrap());
            assert_eq!(result.routes[0].dst, "::/0".parse().unwrap());
        });
    }

    #[test]
    fn ranges_without_a_free_host_and_foreign_gateways_are_refused() {
        for cidr in ["10.0.0.0/31", "10.0.0.7/32"] {
            let err = FakeNetwork::builder(cidr.parse().unwrap())
                .gateway("10.0.0.1".parse().unwrap())
                .build()
                .unwrap_err();
            assert!(
                matches!(err, NetError::InvalidConfig { .. }),
                "{cidr}: {err}"
            );
        }
        let err = FakeNetwork::builder("10.0.0.0/24".parse().unwrap())
            .gateway("10.0.1.1".parse().unwrap())
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("not a host of 10.0.0.0/24"),
            "{err}"
        );
    }

    #[test]
    fn adding_the_same_attachment_twice_is_already_exists_and_keeps_the_first() {
        run(async {
            let network = net("10.244.1.0/24");
            network.add(&pod("a")).await.unwrap();
            let err = network.add(&pod("a")).await.unwrap_err();
            assert!(matches!(err, NetError::AlreadyExists { .. }), "{err}");
            assert_eq!(network.allocated_count(), 1);
            // Another interface of the same sandbox is another attachment.
            let mut net1 = pod("a");
            net1.ifname = "net1".into();
            network.add(&net1).await.unwrap();
            assert_eq!(network.allocated_count(), 2);
        });
    }

    #[test]
    fn deleting_a_missing_attachment_succeeds_and_frees_the_address_once() {
        run(async {
            let network = net("10.244.1.0/24");
            network.del(&pod("never")).await.unwrap();
            network.add(&pod("a")).await.unwrap();
            network.del(&Attachment::new("a", "")).await.unwrap();
            network.del(&Attachment::new("a", "")).await.unwrap();
            assert_eq!(network.allocated_count(), 0);
            assert_eq!(network.address_of("a", "eth0"), None);
        });
    }

    #[test]
    fn bad_requests_are_invalid_arguments_and_change_nothing() {
        run(async {
            let network = net("10.244.1.0/24");
            network.add(&pod("a")).await.unwrap();
            for bad in [Attachment::new("", "/var/run/netns/x"), {
                let mut a = pod("b");
                a.ifname.clear();
                a
            }] {
                let err = network.add(&bad).await.unwrap_err();
                assert!(matches!(err, NetError::InvalidArgument(_)), "{err}");
                assert!(matches!(
                    network.del(&bad).await.unwrap_err(),
                    NetError::InvalidArgument(_)
                ));
            }
            let err = network.add(&Attachment::new("c", "")).await.unwrap_err();
            assert!(err.to_string().contains("network namespace"), "{err}");
            assert_eq!(network.allocations().len(), 1);
        });
    }

    #[test]
    fn check_fails_for_unknown_or_moved_attachments() {
        run(async {
            let network = net("10.244.1.0/24");
            let err = network.check(&pod("a")).await.unwrap_err();
            assert!(matches!(err, NetError::CheckFailed { .. }), "{err}");
            network.add(&pod("a")).await.unwrap();
            network.check(&pod("a")).await.unwrap();
            let err = network
                .check(&Attachment::new("a", "/var/run/netns/other"))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("/var/run/netns/other"), "{err}");
        });
    }

    #[test]
    fn an_unavailable_network_fails_status_and_add_but_still_deletes() {
        run(async {
            let network = net("10.244.1.0/24");
            network.add(&pod("a")).await.unwrap();
            network.set_unavailable(Some("no conflist".into()));
            assert!(matches!(
                network.status().await,
                Err(NetError::Unavailable(_))
            ));
            assert!(network.add(&pod("b")).await.unwrap_err().is_retryable());
            network.del(&pod("a")).await.unwrap();
            network.set_unavailable(None);
            network.status().await.unwrap();
            network.add(&pod("b")).await.unwrap();
        });
    }

    #[test]
    fn clones_share_allocations() {
        run(async {
            let network = net("10.244.1.0/24");
            let other = network.clone();
            let a = network.add(&pod("a")).await.unwrap();
            let b = other.add(&pod("b")).await.unwrap();
            assert_ne!(a.pod_ips(), b.pod_ips());
            assert_eq!(network.allocated_count(), 2);
        });
    }

    #[test]
    fn allocations_survive_a_restart_through_the_state_file() {
        run(async {
            let path = temp_path("state.json");
            let cidr: IpNet = "10.244.1.0/24".parse().unwrap();
            let first = FakeNetwork::with_state_file(cidr, &path).unwrap();
            let a = first.add(&pod("a")).await.unwrap().pod_ips()[0];
            let b = first.add(&pod("b")).await.unwrap().pod_ips()[0];
            first.del(&pod("a")).await.unwrap();
            drop(first);

            let second = FakeNetwork::with_state_file(cidr, &path).unwrap();
            assert_eq!(second.address_of("b", "eth0"), Some(b));
            assert_eq!(second.address_of("a", "eth0"), None);
            let c = second.add(&pod("c")).await.unwrap().pod_ips()[0];
            assert!(
                c != b && c != a,
                "round robin continues after the highest address"
            );
            second.check(&pod("b")).await.unwrap();
            // No temporary file is left next to the state file.
            let dir = path.parent().unwrap();
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn a_state_file_for_another_range_or_corrupt_is_invalid_config_naming_it() {
        let path = temp_path("state.json");
        std::fs::write(&path, r#"{"cidr":"10.9.0.0/24","allocations":[]}"#).unwrap();
        let err =
            FakeNetwork::with_state_file("10.244.1.0/24".parse().unwrap(), &path).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidConfig { path: Some(ref p), .. } if p == &path),
            "{err}"
        );
        std::fs::write(&path, "{not json").unwrap();
        let err = FakeNetwork::with_state_file("10.9.0.0/24".parse().unwrap(), &path).unwrap_err();
        assert!(err.to_string().contains("not a state file"), "{err}");
        let twice = r#"{"cidr":"10.9.0.0/24","allocations":[
            {"containerId":"a","ifname":"eth0","netns":"/n/a","address":"10.9.0.5"},
            {"containerId":"b","ifname":"eth0","netns":"/n/b","address":"10.9.0.5"}]}"#;
        std::fs::write(&path, twice).unwrap();
        let err = FakeNetwork::with_state_file("10.9.0.0/24".parse().unwrap(), &path).unwrap_err();
        assert!(err.to_string().contains("allocated twice"), "{err}");
        let gateway = r#"{"cidr":"10.9.0.0/24","allocations":[
            {"containerId":"a","ifname":"eth0","netns":"/n/a","address":"10.9.0.1"}]}"#;
        std::fs::write(&path, gateway).unwrap();
        let err = FakeNetwork::with_state_file("10.9.0.0/24".parse().unwrap(), &path).unwrap_err();
        assert!(err.to_string().contains("not one"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_failed_state_write_leaves_the_allocation_undone() {
        run(async {
            let path = temp_path("state.json");
            let network =
                FakeNetwork::with_state_file("10.244.1.0/24".parse().unwrap(), &path).unwrap();
            network.add(&pod("a")).await.unwrap();
            // Make the directory vanish so the next write fails.
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
            let err = network.add(&pod("b")).await.unwrap_err();
            assert!(matches!(err, NetError::Io { .. }), "{err}");
            assert_eq!(network.allocated_count(), 1);
            assert!(network.del(&pod("a")).await.is_err());
            assert_eq!(network.allocated_count(), 1);
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Del(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(0u8..40).prop_map(Op::Add), (0u8..40).prop_map(Op::Del)]
    }

    proptest! {
        #[test]
        fn allocations_are_unique_and_all_freed_after_deletes(ops in proptest::collection::vec(op(), 1..200)) {
            run(async {
                // 29 usable addresses for up to 40 pods: exhaustion happens too.
                let network = net("10.1.0.0/27");
                let mut model: HashMap<u8, IpAddr> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Add(i) => match network.add(&pod(&format!("p{i}"))).await {
                            Ok(result) => {
                                let ip = result.pod_ips()[0];
                                assert!(!model.contains_key(&i));
                                assert!(!model.values().any(|v| *v == ip), "{ip} given twice");
                                assert!(!["10.1.0.0", "10.1.0.1", "10.1.0.31"].contains(&ip.to_string().as_str()));
                                model.insert(i, ip);
                            }
                            Err(NetError::AlreadyExists { .. }) => assert!(model.contains_key(&i)),
                            Err(NetError::AddressExhausted { .. }) => assert_eq!(model.len(), 29),
                            Err(other) => panic!("unexpected {other}"),
                        },
                        Op::Del(i) => {
                            network.del(&pod(&format!("p{i}"))).await.unwrap();
                            model.remove(&i);
                        }
                    }
                    assert_eq!(network.allocated_count(), model.len());
                }
                for i in model.keys().copied().collect::<Vec<_>>() {
                    network.del(&pod(&format!("p{i}"))).await.unwrap();
                }
                assert_eq!(network.allocated_count(), 0);
                assert!(network.allocations().is_empty());
            });
        }
    }
}
