//! The nftables backend: one `nft -f` transaction per sync into its own table,
//! `ip capstan-proxy`. It never touches another table.
//!
//! ```text
//! nat-prerouting, nat-output (hooks) ─► services:
//!     ip daddr . meta l4proto . th dport vmap @service-ips     ─► service-<hash>
//!     fib daddr type local: meta l4proto . th dport vmap @service-nodeports ─► external-<hash>
//! external-<hash>: mark for masquerade, goto service-<hash>
//! service-<hash>:  (affinity: ip saddr @affinity-<ep hash> goto endpoint-<ep hash>, per endpoint)
//!                  numgen random mod n vmap { 0 : goto endpoint-…, 1 : … }
//! endpoint-<hash>: hairpin traffic marked; (affinity: update @affinity-<hash> { ip saddr });
//!                  dnat to endpoint
//! nat-postrouting (hook) ─► masquerading: packets with mark 0x4000 are masqueraded
//! ```
//!
//! Every sync flushes and refills the few fixed chains. A full sync also flushes both maps,
//! rewrites every Service port's chains and map elements, and deletes the chains and sets of
//! the table the state no longer needs (read from `nft list table`); a partial sync rewrites
//! only the changed Service ports' chains and map elements, deleting their stale ones (the
//! others are left as the last sync wrote them). Affinity sets are
//! created once and never flushed, so clients keep their endpoints across syncs.
//!
//! IPv4 only (`ip` family), like the [`iptables`](super::iptables) backend. A Service port
//! without ready endpoints gets no map entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use parking_lot::Mutex;

use super::command::Runner;
use super::hash::{endpoint_hash, service_hash};
use super::{
    Changes, OwnedObjects, ProxyBackend, ProxyError, ProxyState, Result, ServicePortName,
    ServicePortState, SessionAffinity,
};

/// The table this backend owns.
pub const TABLE: &str = "capstan-proxy";
/// The mark bit that asks for masquerading.
pub const MASQUERADE_MARK: &str = "0x4000";

const AFFINITY_PREFIX: &str = "affinity-";
const FIXED_CHAINS: [&str; 6] = [
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "services",
    "mark-for-masquerade",
    "masquerading",
];

/// The chains and sets of an `nft list table ip capstan-proxy` listing, fixed chains and
/// maps left out: what a full sync finds.
pub fn listed_objects(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("chain"), Some(name)) if !FIXED_CHAINS.contains(&name) => Some(name),
                (Some("set"), Some(name)) => Some(name),
                _ => None,
            }
        })
        .map(str::to_owned)
        .collect()
}

/// What a rendering produced: the `nft -f` input and the objects it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The `nft -f` input: one transaction.
    pub text: String,
    /// The chains and sets of each Service port it (re)wrote; record them with
    /// [`OwnedObjects::record`] once applied.
    pub written: BTreeMap<ServicePortName, Vec<String>>,
}

/// Renders the `nft -f` transaction that takes a table holding the `owned` objects to `state`, with
/// traffic from outside `cluster_cidr` (when set) masqueraded. With [`Changes::Partial`]
/// only the named Service ports' chains and map elements are written. Pure: the golden
/// tests' subject.
pub fn render(
    state: &ProxyState,
    changes: &Changes,
    owned: &OwnedObjects,
    cluster_cidr: Option<Ipv4Net>,
) -> Rendered {
    let t = format!("ip {TABLE}");
    let mut out = String::with_capacity(512 * state.len());
    let mut cleanup = String::new();
    let mut written = BTreeMap::new();
    let _ = writeln!(out, "add table {t}");
    for (chain, hook, priority) in [
        ("nat-prerouting", "prerouting", "-100"),
        ("nat-output", "output", "-100"),
        ("nat-postrouting", "postrouting", "100"),
    ] {
        let _ = writeln!(
            out,
            "add chain {t} {chain} {{ type nat hook {hook} priority {priority} ; policy accept ; }}"
        );
    }
    for chain in ["services", "mark-for-masquerade", "masquerading"] {
        let _ = writeln!(out, "add chain {t} {chain}");
    }
    for chain in FIXED_CHAINS {
        let _ = writeln!(out, "flush chain {t} {chain}");
    }
    let _ = writeln!(
        out,
        "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}"
    );
    let _ = writeln!(
        out,
        "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}"
    );
    if changes.is_full() {
        let _ = writeln!(out, "flush map {t} service-ips");
        let _ = writeln!(out, "flush map {t} service-nodeports");
    }
    let _ = writeln!(out, "add rule {t} nat-prerouting jump services");
    let _ = writeln!(out, "add rule {t} nat-output jump services");
    let _ = writeln!(out, "add rule {t} nat-postrouting jump masquerading");
    let _ = writeln!(
        out,
        "add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    let _ = writeln!(
        out,
        "add rule {t} services fib daddr type local meta l4proto . th dport vmap @service-nodeports"
    );
    let _ = writeln!(
        out,
        "add rule {t} mark-for-masquerade meta mark set meta mark | {MASQUERADE_MARK}"
    );
    let _ = writeln!(
        out,
        "add rule {t} masquerading meta mark & {MASQUERADE_MARK} == 0 return"
    );
    let _ = writeln!(
        out,
        "add rule {t} masquerading meta mark set meta mark ^ {MASQUERADE_MARK}"
    );
    let _ = writeln!(out, "add rule {t} masquerading masquerade fully-random");

    let mut elements = String::new();
    for (name, port) in &state.services {
        if !port.cluster_ip.is_ipv4() || port.endpoints.is_empty() {
            continue;
        }
        let hash = service_hash(name);
        let svc_chain = format!("service-{hash}");
        let ext_chain = format!("external-{hash}");
        let proto = port.protocol.as_str();
        let rewrite = match changes {
            Changes::Full => true,
            Changes::Partial(changed) => changed.contains(name),
        };
        if rewrite {
            let endpoint_hashes: Vec<String> = port
                .endpoints
                .iter()
                .map(|endpoint| endpoint_hash(name, endpoint))
                .collect();
            write_service(
                &mut out,
                &t,
                name,
                port,
                &svc_chain,
                &ext_chain,
                &endpoint_hashes,
                cluster_cidr,
            );
            let cluster_element = format!(
                "service-ips {{ {} . {proto} . {} }}",
                port.cluster_ip, port.port
            );
            let _ = writeln!(
                elements,
                "add element {t} service-ips {{ {} . {proto} . {} : goto {svc_chain} }}",
                port.cluster_ip, port.port
            );
            let mut objects = vec![cluster_element];
            if let Some(node_port) = port.node_port {
                let _ = writeln!(
                    elements,
                    "add element {t} service-nodeports {{ {proto} . {node_port} : goto {ext_chain} }}"
                );
                objects.push(format!("service-nodeports {{ {proto} . {node_port} }}"));
                objects.push(ext_chain);
            }
            objects.push(svc_chain);
            for hash in &endpoint_hashes {
                objects.push(format!("endpoint-{hash}"));
                if port.affinity != SessionAffinity::None {
                    objects.push(format!("{AFFINITY_PREFIX}{hash}"));
                }
            }
            written.insert(name.clone(), objects);
        }
    }
    // Stale map elements go before the new ones (a key may move to another Service port);
    // a full sync has flushed the maps already. Stale chains are flushed before any is
    // deleted: they may jump to one another, and their rules may use the stale sets.
    let stale = owned.stale(changes, &written);
    let mut stale_chains = Vec::new();
    let mut stale_sets = Vec::new();
    for object in &stale {
        if object.starts_with("service-ips {") || object.starts_with("service-nodeports {") {
            if !changes.is_full() {
                let _ = writeln!(out, "delete element {t} {object}");
            }
        } else if object.starts_with(AFFINITY_PREFIX) {
            stale_sets.push(object);
        } else {
            stale_chains.push(object);
        }
    }
    out.push_str(&elements);
    for chain in &stale_chains {
        let _ = writeln!(out, "flush chain {t} {chain}");
    }
    for chain in &stale_chains {
        let _ = writeln!(cleanup, "delete chain {t} {chain}");
    }
    for set in &stale_sets {
        let _ = writeln!(cleanup, "delete set {t} {set}");
    }
    out.push_str(&cleanup);
    Rendered { text: out, written }
}

#[allow(clippy::too_many_arguments)]
fn write_service(
    out: &mut String,
    t: &str,
    name: &ServicePortName,
    port: &ServicePortState,
    svc_chain: &str,
    ext_chain: &str,
    endpoint_hashes: &[String],
    cluster_cidr: Option<Ipv4Net>,
) {
    let proto = port.protocol.as_str();
    // Every chain first: a rule may only jump to a chain the transaction already holds.
    let endpoint_chains: Vec<String> = endpoint_hashes
        .iter()
        .map(|hash| format!("endpoint-{hash}"))
        .collect();
    let mut chains = vec![svc_chain];
    if port.node_port.is_some() {
        chains.push(ext_chain);
    }
    for chain in chains
        .into_iter()
        .chain(endpoint_chains.iter().map(String::as_str))
    {
        let _ = writeln!(out, "add chain {t} {chain}");
        let _ = writeln!(out, "flush chain {t} {chain}");
    }
    if port.node_port.is_some() {
        let _ = writeln!(
            out,
            "add rule {t} {ext_chain} jump mark-for-masquerade comment \"{name} external\""
        );
        let _ = writeln!(out, "add rule {t} {ext_chain} goto {svc_chain}");
    }
    if let Some(cidr) = cluster_cidr {
        let _ = writeln!(
            out,
            "add rule {t} {svc_chain} ip saddr != {cidr} jump mark-for-masquerade"
        );
    }
    if let SessionAffinity::ClientIp { timeout_seconds } = port.affinity {
        for hash in endpoint_hashes {
            let _ = writeln!(
                out,
                "add set {t} affinity-{hash} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout_seconds}s ; }}"
            );
            let _ = writeln!(
                out,
                "add rule {t} {svc_chain} ip saddr @affinity-{hash} goto endpoint-{hash}"
            );
        }
    }
    if let [only] = endpoint_hashes {
        let _ = writeln!(
            out,
            "add rule {t} {svc_chain} goto endpoint-{only} comment \"{name}\""
        );
    } else {
        let targets: Vec<String> = endpoint_hashes
            .iter()
            .enumerate()
            .map(|(i, hash)| format!("{i} : goto endpoint-{hash}"))
            .collect();
        let _ = writeln!(
            out,
            "add rule {t} {svc_chain} numgen random mod {} vmap {{ {} }} comment \"{name}\"",
            endpoint_hashes.len(),
            targets.join(" , ")
        );
    }
    for ((endpoint, hash), chain) in port
        .endpoints
        .iter()
        .zip(endpoint_hashes)
        .zip(&endpoint_chains)
    {
        let _ = writeln!(
            out,
            "add rule {t} {chain} ip saddr {} jump mark-for-masquerade",
            endpoint.ip()
        );
        if port.affinity != SessionAffinity::None {
            let _ = writeln!(
                out,
                "add rule {t} {chain} update @affinity-{hash} {{ ip saddr }}"
            );
        }
        let _ = writeln!(
            out,
            "add rule {t} {chain} meta l4proto {proto} dnat to {endpoint} comment \"{name} -> {endpoint}\""
        );
    }
}

/// Where `nft` is and where it runs.
#[derive(Clone, Debug)]
pub struct NftablesConfig {
    /// The `nft` binary.
    pub nft: String,
    /// Run `nft` in this named network namespace (`ip netns exec`); `None` for the proxy's
    /// own namespace.
    pub netns: Option<String>,
    /// Masquerade traffic to cluster IPs from outside this pod CIDR; none when unset.
    /// Node-port and hairpin traffic is always masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        NftablesConfig {
            nft: "nft".into(),
            netns: None,
            cluster_cidr: None,
        }
    }
}

/// The nftables [`ProxyBackend`]. It remembers the objects its last successful sync left, for
/// partial syncs; a full sync re-reads them from the kernel.
#[derive(Debug)]
pub struct NftablesBackend {
    config: NftablesConfig,
    runner: Runner,
    owned: Mutex<OwnedObjects>,
}

impl NftablesBackend {
    /// A backend using `config`. Touches nothing until the first sync.
    pub fn new(config: NftablesConfig) -> Self {
        NftablesBackend {
            runner: Runner::new(config.netns.clone()),
            config,
            owned: Mutex::new(OwnedObjects::default()),
        }
    }

    async fn table_objects(&self) -> Result<BTreeSet<String>> {
        match self
            .runner
            .run(&self.config.nft, &["list", "table", "ip", TABLE], "")
            .await
        {
            Ok(listing) => Ok(listed_objects(&listing)),
            Err(ProxyError::CommandFailed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(BTreeSet::new())
            }
            Err(other) => Err(other),
        }
    }
}

#[async_trait]
impl ProxyBackend for NftablesBackend {
    fn name(&self) -> &str {
        "nftables"
    }

    async fn sync(&self, state: &ProxyState, changes: &Changes) -> Result<()> {
        state.validate()?;
        let cidr = self.config.cluster_cidr;
        let rendered = match changes {
            Changes::Full => {
                let found = OwnedObjects::found(self.table_objects().await?);
                render(state, changes, &found, cidr)
            }
            Changes::Partial(_) => render(state, changes, &self.owned.lock(), cidr),
        };
        self.runner
            .run(&self.config.nft, &["-f", "-"], &rendered.text)
            .await?;
        self.owned.lock().record(changes, rendered.written);
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        // Adding first makes the deletion succeed when the table is already gone.
        let text = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
        self.runner
            .run(&self.config.nft, &["-f", "-"], &text)
            .await?;
        *self.owned.lock() = OwnedObjects::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::assert_golden;
    use crate::proxy::tests::sample_state;
    use crate::proxy::Protocol;

    #[test]
    fn a_full_sync_renders_one_transaction_into_the_own_table() {
        let found = OwnedObjects::found(["service-GONE".to_owned(), "affinity-GONE".to_owned()]);
        let rendered = render(&sample_state(), &Changes::Full, &found, None);
        assert_golden("nftables_full.txt", &rendered.text);
        assert!(rendered
            .text
            .lines()
            .all(|line| line.contains(&format!(" ip {TABLE}"))));
        let mut owned = OwnedObjects::default();
        owned.record(&Changes::Full, rendered.written);
        assert_eq!(owned.len(), 10, "{owned:?}");
    }

    #[test]
    fn a_partial_sync_rewrites_only_the_changed_service() {
        let before = sample_state();
        let full = render(&before, &Changes::Full, &OwnedObjects::default(), None);
        let mut owned = OwnedObjects::default();
        owned.record(&Changes::Full, full.written);
        let mut after = before.clone();
        let api = ServicePortName::new("default", "api", "", Protocol::Udp);
        after.services.remove(&api);
        let changes = Changes::Partial(after.diff(&before));
        let partial = render(
            &after,
            &changes,
            &owned,
            Some("10.244.0.0/16".parse().unwrap()),
        );
        assert_golden("nftables_partial.txt", &partial.text);
        owned.record(&changes, partial.written);
        assert_eq!(owned.len(), 4, "{owned:?}");
    }

    #[test]
    fn objects_are_read_from_a_listing() {
        let listing = "table ip capstan-proxy {\n\tset affinity-AAAA {\n\t\ttype ipv4_addr\n\t}\n\tmap service-ips {\n\t}\n\tchain services {\n\t}\n\tchain service-BBBB {\n\t}\n}\n";
        assert_eq!(
            listed_objects(listing),
            BTreeSet::from(["affinity-AAAA".to_owned(), "service-BBBB".to_owned()])
        );
    }
}
