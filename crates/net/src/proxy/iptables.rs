//! The iptables backend: kube-proxy's chain design in the `nat` table, written atomically
//! with `iptables-restore --noflush`.
//!
//! ```text
//! PREROUTING, OUTPUT ─► KUBE-SERVICES ─ -d VIP -p P --dport PORT ─► KUBE-SVC-<hash>
//!                              └─ dst-type LOCAL ─► KUBE-NODEPORTS ─ --dport NP ─► KUBE-EXT-<hash>
//! KUBE-EXT-<hash>: mark for masquerade, then KUBE-SVC-<hash>
//! KUBE-SVC-<hash>: (affinity: -m recent --rcheck per endpoint), then
//!                  -m statistic --mode random --probability 1/n, 1/(n-1), … ─► KUBE-SEP-<hash>
//! KUBE-SEP-<hash>: hairpin traffic marked for masquerade; DNAT to the endpoint
//!                  (affinity: -m recent --set)
//! POSTROUTING ─► KUBE-POSTROUTING: packets with mark 0x4000 are masqueraded
//! ```
//!
//! Chain names are `KUBE-SVC-`, `KUBE-EXT-` and `KUBE-SEP-` followed by a
//! [`hash`](super::hash) of the Service port (and endpoint). A full sync declares, and so
//! flushes, every chain it writes and deletes every `KUBE-SVC/EXT/SEP` chain of the table the
//! state no longer needs; a partial sync rewrites `KUBE-SERVICES` and `KUBE-NODEPORTS` (one
//! rule per Service port) plus the chains of the changed Service ports, deletes their stale
//! chains, and leaves every other chain alone. The jumps from the built-in chains are added
//! with `iptables -C`/`-I` on full syncs, so a sync never duplicates them.
//!
//! IPv4 only: Service ports whose cluster IP is IPv6 are left to an `ip6tables` instance.
//! A Service port without ready endpoints gets no rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use parking_lot::Mutex;

use super::command::Runner;
use super::hash::{endpoint_hash, service_hash};
use super::{
    Changes, OwnedObjects, ProxyBackend, ProxyState, Result, ServicePortName, ServicePortState,
    SessionAffinity,
};

/// The chain the built-in chains jump to for Service traffic.
pub const SERVICES_CHAIN: &str = "KUBE-SERVICES";
/// The chain holding one rule per node port.
pub const NODEPORTS_CHAIN: &str = "KUBE-NODEPORTS";
/// The chain that marks a packet for masquerading.
pub const MARK_MASQ_CHAIN: &str = "KUBE-MARK-MASQ";
/// The chain, jumped to from POSTROUTING, that masquerades marked packets.
pub const POSTROUTING_CHAIN: &str = "KUBE-POSTROUTING";
/// The mark bit that asks for masquerading.
pub const MASQUERADE_MARK: &str = "0x4000";

const SERVICE_PREFIX: &str = "KUBE-SVC-";
const EXTERNAL_PREFIX: &str = "KUBE-EXT-";
const ENDPOINT_PREFIX: &str = "KUBE-SEP-";
const FIXED_CHAINS: [&str; 4] = [
    SERVICES_CHAIN,
    NODEPORTS_CHAIN,
    MARK_MASQ_CHAIN,
    POSTROUTING_CHAIN,
];

/// How Service traffic is masqueraded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Masquerade {
    /// Masquerade all traffic to cluster IPs.
    pub all: bool,
    /// Otherwise, masquerade traffic to cluster IPs from outside this pod CIDR (none when
    /// unset). Node-port traffic and hairpin traffic are always masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// What a rendering produced: the `iptables-restore` input and the chains it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The `iptables-restore --noflush` input.
    pub text: String,
    /// The `KUBE-SVC/EXT/SEP` chains of each Service port it (re)wrote; record them with
    /// [`OwnedObjects::record`] once applied.
    pub written: BTreeMap<ServicePortName, Vec<String>>,
}

/// Renders the `iptables-restore --noflush` input that takes a `nat` table holding the
/// `owned` chains to `state`. With [`Changes::Partial`] only the named Service ports' chains
/// are written. Pure: the golden tests' subject.
pub fn render(
    state: &ProxyState,
    changes: &Changes,
    owned: &OwnedObjects,
    masquerade: &Masquerade,
) -> Rendered {
    let mut declared = String::new();
    let mut rules = String::with_capacity(match changes {
        Changes::Full => 1024 * state.len(),
        Changes::Partial(_) => 256 * state.len(),
    });
    let mut written = BTreeMap::new();
    let _ = writeln!(declared, "*nat");
    for chain in FIXED_CHAINS {
        let _ = writeln!(declared, ":{chain} - [0:0]");
    }
    let _ = writeln!(
        rules,
        "-A {POSTROUTING_CHAIN} -m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN"
    );
    let _ = writeln!(
        rules,
        "-A {POSTROUTING_CHAIN} -j MARK --xor-mark {MASQUERADE_MARK}"
    );
    let _ = writeln!(
        rules,
        "-A {POSTROUTING_CHAIN} -m comment --comment \"capstan service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(
        rules,
        "-A {MARK_MASQ_CHAIN} -j MARK --or-mark {MASQUERADE_MARK}"
    );

    let mut service_rules = String::with_capacity(160 * state.len());
    let mut nodeport_rules = String::new();
    for (name, port) in &state.services {
        if !port.cluster_ip.is_ipv4() || port.endpoints.is_empty() {
            continue;
        }
        let hash = service_hash(name);
        let svc_chain = format!("{SERVICE_PREFIX}{hash}");
        let ext_chain = format!("{EXTERNAL_PREFIX}{hash}");
        let proto = port.protocol.as_str();
        let _ = writeln!(
            service_rules,
            "-A {SERVICES_CHAIN} -d {}/32 -p {proto} -m comment --comment \"{name} cluster IP\" -m {proto} --dport {} -j {svc_chain}",
            port.cluster_ip, port.port
        );
        if let Some(node_port) = port.node_port {
            let _ = writeln!(
                nodeport_rules,
                "-A {NODEPORTS_CHAIN} -p {proto} -m comment --comment \"{name}\" -m {proto} --dport {node_port} -j {ext_chain}"
            );
        }
        let rewrite = match changes {
            Changes::Full => true,
            Changes::Partial(changed) => changed.contains(name),
        };
        if rewrite {
            let endpoint_chains: Vec<String> = port
                .endpoints
                .iter()
                .map(|endpoint| format!("{ENDPOINT_PREFIX}{}", endpoint_hash(name, endpoint)))
                .collect();
            write_service_chains(
                &mut declared,
                &mut rules,
                name,
                port,
                &svc_chain,
                &ext_chain,
                &endpoint_chains,
                masquerade,
            );
            let mut chains = vec![svc_chain];
            if port.node_port.is_some() {
                chains.push(ext_chain);
            }
            chains.extend(endpoint_chains);
            written.insert(name.clone(), chains);
        }
    }
    rules.push_str(&service_rules);
    let _ = writeln!(
        rules,
        "-A {SERVICES_CHAIN} -m comment --comment \"capstan service nodeports\" -m addrtype --dst-type LOCAL -j {NODEPORTS_CHAIN}"
    );
    rules.push_str(&nodeport_rules);

    // Chains the state no longer needs: declared (so flushed) first, deleted last, when
    // nothing references them any more.
    let stale = owned.stale(changes, &written);
    for chain in &stale {
        let _ = writeln!(declared, ":{chain} - [0:0]");
    }
    for chain in &stale {
        let _ = writeln!(rules, "-X {chain}");
    }
    declared.push_str(&rules);
    declared.push_str("COMMIT\n");
    Rendered {
        text: declared,
        written,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_service_chains(
    declared: &mut String,
    rules: &mut String,
    name: &ServicePortName,
    port: &ServicePortState,
    svc_chain: &str,
    ext_chain: &str,
    endpoint_chains: &[String],
    masquerade: &Masquerade,
) {
    let proto = port.protocol.as_str();
    let _ = writeln!(declared, ":{svc_chain} - [0:0]");
    if port.node_port.is_some() {
        let _ = writeln!(declared, ":{ext_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {ext_chain} -m comment --comment \"masquerade traffic for {name} external destinations\" -j {MARK_MASQ_CHAIN}"
        );
        let _ = writeln!(rules, "-A {ext_chain} -j {svc_chain}");
    }
    let frontend = format!(
        "-d {}/32 -p {proto} -m {proto} --dport {}",
        port.cluster_ip, port.port
    );
    if masquerade.all {
        let _ = writeln!(
            rules,
            "-A {svc_chain} {frontend} -m comment --comment \"{name} cluster IP\" -j {MARK_MASQ_CHAIN}"
        );
    } else if let Some(cidr) = masquerade.cluster_cidr {
        let _ = writeln!(
            rules,
            "-A {svc_chain} ! -s {cidr} {frontend} -m comment --comment \"{name} cluster IP\" -j {MARK_MASQ_CHAIN}"
        );
    }
    if let SessionAffinity::ClientIp { timeout_seconds } = port.affinity {
        for (endpoint, chain) in port.endpoints.iter().zip(endpoint_chains) {
            let _ = writeln!(
                rules,
                "-A {svc_chain} -m comment --comment \"{name} -> {endpoint}\" -m recent --name {chain} --mask 255.255.255.255 --rsource --rcheck --seconds {timeout_seconds} --reap -j {chain}"
            );
        }
    }
    let count = port.endpoints.len();
    for (i, (endpoint, chain)) in port.endpoints.iter().zip(endpoint_chains).enumerate() {
        let remaining = count - i;
        let statistic = if remaining > 1 {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / remaining as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc_chain} -m comment --comment \"{name} -> {endpoint}\"{statistic} -j {chain}"
        );
    }
    for (endpoint, chain) in port.endpoints.iter().zip(endpoint_chains) {
        let _ = writeln!(declared, ":{chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {chain} -s {}/32 -m comment --comment \"{name}\" -j {MARK_MASQ_CHAIN}",
            endpoint.ip()
        );
        let recent = match port.affinity {
            SessionAffinity::ClientIp { .. } => {
                format!(" -m recent --name {chain} --mask 255.255.255.255 --rsource --set")
            }
            SessionAffinity::None => String::new(),
        };
        let _ = writeln!(
            rules,
            "-A {chain} -p {proto} -m comment --comment \"{name}\"{recent} -m {proto} -j DNAT --to-destination {endpoint}"
        );
    }
}

/// The jumps from the built-in `nat` chains into this backend's chains: `(chain, rule)`.
pub fn hook_rules() -> Vec<(&'static str, Vec<String>)> {
    let jump = |comment: &str, target: &str| -> Vec<String> {
        ["-m", "comment", "--comment", comment, "-j", target]
            .map(str::to_owned)
            .to_vec()
    };
    vec![
        (
            "PREROUTING",
            jump("capstan service portals", SERVICES_CHAIN),
        ),
        ("OUTPUT", jump("capstan service portals", SERVICES_CHAIN)),
        (
            "POSTROUTING",
            jump("capstan postrouting rules", POSTROUTING_CHAIN),
        ),
    ]
}

/// The chains of an `iptables-save -t nat` dump that this backend owns.
pub fn owned_chains(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|chain| {
            FIXED_CHAINS.contains(chain)
                || [SERVICE_PREFIX, EXTERNAL_PREFIX, ENDPOINT_PREFIX]
                    .iter()
                    .any(|prefix| chain.starts_with(prefix))
        })
        .map(str::to_owned)
        .collect()
}

/// Where the iptables binaries are and where they run.
#[derive(Clone, Debug)]
pub struct IptablesConfig {
    /// `iptables` (for the hooks).
    pub iptables: String,
    /// `iptables-save`.
    pub iptables_save: String,
    /// `iptables-restore`.
    pub iptables_restore: String,
    /// Run every command in this named network namespace (`ip netns exec`); `None` for the
    /// proxy's own namespace.
    pub netns: Option<String>,
    /// Masquerading of cluster IP traffic.
    pub masquerade: Masquerade,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        IptablesConfig {
            iptables: "iptables".into(),
            iptables_save: "iptables-save".into(),
            iptables_restore: "iptables-restore".into(),
            netns: None,
            masquerade: Masquerade::default(),
        }
    }
}

/// The iptables [`ProxyBackend`]. It remembers the chains its last successful sync left, so
/// partial syncs can delete the stale ones; a full sync re-reads them from the kernel.
#[derive(Debug)]
pub struct IptablesBackend {
    config: IptablesConfig,
    runner: Runner,
    owned: Mutex<OwnedObjects>,
}

impl IptablesBackend {
    /// A backend using `config`. Touches nothing until the first sync.
    pub fn new(config: IptablesConfig) -> Self {
        IptablesBackend {
            runner: Runner::new(config.netns.clone()),
            config,
            owned: Mutex::new(OwnedObjects::default()),
        }
    }

    async fn saved_chains(&self) -> Result<BTreeSet<String>> {
        let save = self
            .runner
            .run(&self.config.iptables_save, &["-t", "nat"], "")
            .await?;
        Ok(owned_chains(&save))
    }

    async fn restore(&self, text: &str) -> Result<()> {
        self.runner
            .run(
                &self.config.iptables_restore,
                &["-w", "5", "--noflush"],
                text,
            )
            .await
            .map(drop)
    }

    async fn has_rule(&self, chain: &str, rule: &[String]) -> Result<bool> {
        let mut args = vec!["-w", "5", "-t", "nat", "-C", chain];
        args.extend(rule.iter().map(String::as_str));
        match self.runner.run(&self.config.iptables, &args, "").await {
            Ok(_) => Ok(true),
            Err(super::ProxyError::CommandFailed { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn ensure_hooks(&self) -> Result<()> {
        for (chain, rule) in hook_rules() {
            if !self.has_rule(chain, &rule).await? {
                let mut args = vec!["-w", "5", "-t", "nat", "-I", chain, "1"];
                args.extend(rule.iter().map(String::as_str));
                self.runner.run(&self.config.iptables, &args, "").await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ProxyBackend for IptablesBackend {
    fn name(&self) -> &str {
        "iptables"
    }

    async fn sync(&self, state: &ProxyState, changes: &Changes) -> Result<()> {
        state.validate()?;
        let masquerade = &self.config.masquerade;
        let rendered = match changes {
            Changes::Full => {
                let mut found = self.saved_chains().await?;
                found.retain(|chain| !FIXED_CHAINS.contains(&chain.as_str()));
                render(state, changes, &OwnedObjects::found(found), masquerade)
            }
            Changes::Partial(_) => render(state, changes, &self.owned.lock(), masquerade),
        };
        self.restore(&rendered.text).await?;
        if changes.is_full() {
            self.ensure_hooks().await?;
        }
        self.owned.lock().record(changes, rendered.written);
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        for (chain, rule) in hook_rules() {
            while self.has_rule(chain, &rule).await? {
                let mut args = vec!["-w", "5", "-t", "nat", "-D", chain];
                args.extend(rule.iter().map(String::as_str));
                self.runner.run(&self.config.iptables, &args, "").await?;
            }
        }
        let owned = self.saved_chains().await?;
        if !owned.is_empty() {
            let mut text = String::from("*nat\n");
            for chain in &owned {
                let _ = writeln!(text, ":{chain} - [0:0]");
            }
            for chain in &owned {
                let _ = writeln!(text, "-X {chain}");
            }
            text.push_str("COMMIT\n");
            self.restore(&text).await?;
        }
        *self.owned.lock() = OwnedObjects::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::assert_golden;
    use crate::proxy::tests::sample_state;
    use crate::proxy::{Protocol, ServicePortName};

    fn web() -> ServicePortName {
        ServicePortName::new("default", "web", "http", Protocol::Tcp)
    }

    #[test]
    fn a_full_sync_renders_kube_proxy_chains() {
        let found = OwnedObjects::found(["KUBE-SVC-GONE".to_owned()]);
        let rendered = render(
            &sample_state(),
            &Changes::Full,
            &found,
            &Masquerade::default(),
        );
        assert_golden("iptables_full.txt", &rendered.text);
        let mut owned = OwnedObjects::default();
        owned.record(&Changes::Full, rendered.written);
        assert_eq!(owned.len(), 6, "{owned:?}");
    }

    #[test]
    fn a_partial_sync_rewrites_only_the_changed_service_and_deletes_its_stale_chains() {
        let before = sample_state();
        let full = render(
            &before,
            &Changes::Full,
            &OwnedObjects::default(),
            &Masquerade::default(),
        );
        let mut owned = OwnedObjects::default();
        owned.record(&Changes::Full, full.written);
        let mut after = before.clone();
        after.services.get_mut(&web()).unwrap().endpoints.remove(0);
        let changes = Changes::Partial(after.diff(&before));
        let partial = render(&after, &changes, &owned, &Masquerade::default());
        assert_golden("iptables_partial.txt", &partial.text);
        owned.record(&changes, partial.written);
        assert_eq!(owned.len(), 5);
        assert!(!partial.text.contains("default/api ->"));
    }

    #[test]
    fn masquerading_by_cluster_cidr_marks_traffic_from_outside_it() {
        let masquerade = Masquerade {
            all: false,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        };
        let text = render(
            &sample_state(),
            &Changes::Full,
            &OwnedObjects::default(),
            &masquerade,
        )
        .text;
        let svc = format!("KUBE-SVC-{}", service_hash(&web()));
        assert!(text.contains(&format!(
            "-A {svc} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster IP\" -j KUBE-MARK-MASQ"
        )), "{text}");
    }

    #[test]
    fn probabilities_spread_evenly_over_many_endpoints() {
        let mut state = sample_state();
        let port = state.services.get_mut(&web()).unwrap();
        port.endpoints = (1..=4)
            .map(|i| format!("10.244.1.{i}:8080").parse().unwrap())
            .collect();
        let text = render(
            &state,
            &Changes::Full,
            &OwnedObjects::default(),
            &Masquerade::default(),
        )
        .text;
        let probabilities: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split("--probability ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            probabilities,
            ["0.2500000000", "0.3333333333", "0.5000000000"]
        );
    }

    #[test]
    fn ownership_is_read_from_an_iptables_save_dump() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:DOCKER - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        assert_eq!(
            owned_chains(save),
            BTreeSet::from(["KUBE-SERVICES", "KUBE-SEP-BBBB", "KUBE-SVC-AAAA"].map(String::from))
        );
    }

    #[tokio::test]
    async fn an_invalid_state_is_refused_before_any_command_runs() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let backend = IptablesBackend::new(IptablesConfig {
                iptables_restore: "capstan-no-such-iptables-restore".into(),
                iptables_save: "capstan-no-such-iptables-save".into(),
                ..IptablesConfig::default()
            });
            let mut state = sample_state();
            state.services.get_mut(&web()).unwrap().port = 0;
            let error = backend.sync(&state, &Changes::Full).await.unwrap_err();
            assert!(
                matches!(error, crate::proxy::ProxyError::InvalidState { .. }),
                "{error}"
            );
            let missing = backend
                .sync(&sample_state(), &Changes::Full)
                .await
                .unwrap_err();
            assert!(
                missing
                    .to_string()
                    .contains("capstan-no-such-iptables-save"),
                "{missing}"
            );
        })
        .await
        .unwrap();
    }
}
