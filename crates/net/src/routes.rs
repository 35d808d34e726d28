//! Host-gw routes: reach other nodes' pods through the other nodes themselves.
//!
//! With host-gw networking, every node routes each other node's pod CIDR via that node's
//! address; the nodes must share a link (layer 2). [`host_gw_routes`] computes the routes a
//! node needs from every node's address and pod CIDR (pure, no OS access), and [`RouteSync`]
//! makes the node's main routing table match them with `ip route replace` and `ip route del`,
//! in the caller's network namespace or a named one.
//!
//! Routes are tagged with a route protocol number ([`DEFAULT_ROUTE_PROTOCOL`]), so a sync
//! only ever removes routes it made and leaves every other route alone; it is idempotent and
//! a restarted node agent picks up where it left off.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// The route protocol number that marks routes made by [`RouteSync`] (not one of iproute2's
/// named protocols).
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 190;

/// Why computing or syncing routes failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// `ip` ran and refused (unknown namespace, unreachable gateway, no permission).
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What `ip` printed on stderr.
        stderr: String,
    },
    /// `ip` printed a route list this module does not understand.
    #[error("cannot parse the output of `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What is wrong.
        message: String,
    },
    /// `ip` could not be started.
    #[error("running `{command}`: {source}")]
    Io {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One node as host-gw routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddressing {
    /// The node's name.
    pub name: String,
    /// The node's address on the shared link (its `InternalIP`).
    pub node_ip: IpAddr,
    /// The node's pod CIDR (`spec.podCIDR`), once it has one.
    pub pod_cidr: Option<IpNet>,
}

/// A route to another node's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRoute {
    /// The other node's pod CIDR.
    pub dst: IpNet,
    /// The other node's address.
    pub via: IpAddr,
}

/// The routes node `local` needs: every other node's pod CIDR via that node's address,
/// sorted by destination.
///
/// Left out: nodes without a pod CIDR, nodes whose pod CIDR and address are of different
/// families, and CIDRs that overlap `local`'s own. If two nodes claim overlapping CIDRs,
/// the node whose name sorts first gets the route.
pub fn host_gw_routes(local: &str, nodes: &[NodeAddressing]) -> Vec<HostRoute> {
    let own = nodes
        .iter()
        .find(|n| n.name == local)
        .and_then(|n| n.pod_cidr);
    let mut others: Vec<&NodeAddressing> = nodes.iter().filter(|n| n.name != local).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes: Vec<HostRoute> = Vec::new();
    for node in others {
        let Some(dst) = node.pod_cidr.map(|c| c.trunc()) else {
            continue;
        };
        let overlaps = |other: &IpNet| other.contains(&dst) || dst.contains(other);
        if dst.addr().is_ipv4() != node.node_ip.is_ipv4()
            || own.is_some_and(|own| overlaps(&own.trunc()))
            || routes.iter().any(|r| overlaps(&r.dst))
        {
            continue;
        }
        routes.push(HostRoute {
            dst,
            via: node.node_ip,
        });
    }
    routes.sort();
    routes
}

/// What a [`RouteSync::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes added or whose gateway changed.
    pub replaced: Vec<HostRoute>,
    /// Routes of ours that were no longer wanted.
    pub removed: Vec<HostRoute>,
}

/// Keeps a routing table's host-gw routes equal to a wanted set, through `ip route`.
#[derive(Clone, Debug)]
pub struct RouteSync {
    netns: Option<String>,
    protocol: u8,
}

impl Default for RouteSync {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteSync {
    /// Syncs the caller's network namespace with [`DEFAULT_ROUTE_PROTOCOL`].
    pub fn new() -> Self {
        RouteSync {
            netns: None,
            protocol: DEFAULT_ROUTE_PROTOCOL,
        }
    }

    /// Syncs the named network namespace (`ip -n NAME`) instead.
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Marks (and recognises) routes with another route protocol number.
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    /// The routes of ours in the main table, both families, sorted.
    pub async fn current(&self) -> Result<Vec<HostRoute>, RouteError> {
        let protocol = self.protocol.to_string();
        let mut all = Vec::new();
        for family in ["-4", "-6"] {
            let args = [
                family, "-j", "route", "show", "table", "main", "proto", &protocol,
            ];
            let (command, stdout) = self.ip(&args).await?;
            all.extend(parse_routes(&command, &stdout)?);
        }
        all.sort();
        Ok(all)
    }

    /// Makes our routes exactly `wanted`: replaces what is missing or points elsewhere,
    /// removes ours that are not wanted, and touches no other route. Idempotent. Stops at the
    /// first `ip` error (for example a gateway not on any link), leaving the routes done so
    /// far; a later sync finishes the job.
    pub async fn sync(&self, wanted: &[HostRoute]) -> Result<SyncReport, RouteError> {
        let current: BTreeMap<IpNet, IpAddr> = self
            .current()
            .await?
            .into_iter()
            .map(|r| (r.dst, r.via))
            .collect();
        let wanted: BTreeMap<IpNet, IpAddr> =
            wanted.iter().map(|r| (r.dst.trunc(), r.via)).collect();
        let protocol = self.protocol.to_string();
        let mut report = SyncReport::default();
        for (dst, via) in &wanted {
            if current.get(dst) != Some(via) {
                let (dst_text, via_text) = (dst.to_string(), via.to_string());
                self.ip(&[
                    "route", "replace", &dst_text, "via", &via_text, "proto", &protocol,
                ])
                .await?;
                report.replaced.push(HostRoute {
                    dst: *dst,
                    via: *via,
                });
            }
        }
        for (dst, via) in &current {
            if !wanted.contains_key(dst) {
                let dst_text = dst.to_string();
                self.ip(&["route", "del", &dst_text, "proto", &protocol])
                    .await?;
                report.removed.push(HostRoute {
                    dst: *dst,
                    via: *via,
                });
            }
        }
        Ok(report)
    }

    /// Runs `ip [-n NETNS] ARGS...` and returns its command line and stdout.
    async fn ip(&self, args: &[&str]) -> Result<(String, Vec<u8>), RouteError> {
        let mut all: Vec<&str> = Vec::with_capacity(args.len() + 2);
        if let Some(ns) = &self.netns {
            all.extend(["-n", ns.as_str()]);
        }
        all.extend_from_slice(args);
        let command = format!("ip {}", all.join(" "));
        let output = tokio::process::Command::new("ip")
            .args(&all)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| RouteError::Io {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(RouteError::Command {
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok((command, output.stdout))
    }
}

/// `ip -j route show` output: only routes with a destination and a gateway are ours to keep.
fn parse_routes(command: &str, stdout: &[u8]) -> Result<Vec<HostRoute>, RouteError> {
    #[derive(Deserialize)]
    struct Entry {
        dst: String,
        gateway: Option<IpAddr>,
    }
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |message: String| RouteError::Parse {
        command: command.to_owned(),
        message,
    };
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut routes = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(via) = entry.gateway else {
            continue;
        };
        // `ip` prints host routes without a prefix length, and `default` for /0.
        let dst = if entry.dst == "default" {
            let any = if via.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u8; 16])
            };
            IpNet::new(any, 0).expect("a zero prefix is valid")
        } else if let Ok(net) = entry.dst.parse::<IpNet>() {
            net
        } else if let Ok(addr) = entry.dst.parse::<IpAddr>() {
            IpNet::from(addr)
        } else {
            return Err(bad(format!("destination {:?}", entry.dst)));
        };
        routes.push(HostRoute { dst, via });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> NodeAddressing {
        NodeAddressing {
            name: name.to_owned(),
            node_ip: ip.parse().unwrap(),
            pod_cidr: cidr.map(|c| c.parse().unwrap()),
        }
    }

    fn route(dst: &str, via: &str) -> HostRoute {
        HostRoute {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn each_other_node_is_the_gateway_to_its_pods() {
        let nodes = [
            node("c", "192.168.0.3", Some("10.244.2.0/24")),
            node("a", "192.168.0.1", Some("10.244.0.0/24")),
            node("b", "192.168.0.2", Some("10.244.1.0/24")),
            node("new", "192.168.0.4", None),
        ];
        assert_eq!(
            host_gw_routes("a", &nodes),
            [
                route("10.244.1.0/24", "192.168.0.2"),
                route("10.244.2.0/24", "192.168.0.3")
            ]
        );
        assert_eq!(host_gw_routes("new", &nodes).len(), 3);
        assert!(host_gw_routes("a", &nodes[1..2]).is_empty());
    }

    #[test]
    fn mixed_families_and_overlapping_cidrs_are_left_out() {
        let nodes = [
            node("a", "192.168.0.1", Some("10.244.0.0/24")),
            node("v6", "fd00::2", Some("10.244.1.0/24")),
            node("dup-z", "192.168.0.9", Some("10.244.2.0/24")),
            node("dup-b", "192.168.0.8", Some("10.244.2.0/25")),
            node("mine", "192.168.0.7", Some("10.244.0.0/16")),
            node("six", "fd00::3", Some("fd10::/64")),
        ];
        assert_eq!(
            host_gw_routes("a", &nodes),
            [
                route("10.244.2.0/25", "192.168.0.8"),
                route("fd10::/64", "fd00::3")
            ]
        );
    }

    #[test]
    fn ip_route_json_is_parsed_and_routes_without_gateway_are_skipped() {
        let text = br#"[{"dst":"10.251.1.0/24","gateway":"192.168.77.2","dev":"v0","flags":[]},
            {"dst":"10.9.9.9","gateway":"192.168.77.3","dev":"v0","flags":[]},
            {"dst":"192.168.77.0/24","dev":"v0","protocol":"kernel","scope":"link","flags":[]}]"#;
        assert_eq!(
            parse_routes("ip route", text).unwrap(),
            [
                route("10.251.1.0/24", "192.168.77.2"),
                route("10.9.9.9/32", "192.168.77.3")
            ]
        );
        assert!(parse_routes("ip route", b"").unwrap().is_empty());
        let err = parse_routes("ip route", b"garbage").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot parse the output of `ip route`"),
            "{err}"
        );
        assert_eq!(
            parse_routes("ip route", br#"[{"dst":"default","gateway":"10.0.0.1"}]"#).unwrap(),
            [route("0.0.0.0/0", "10.0.0.1")]
        );
        let err =
            parse_routes("ip route", br#"[{"dst":"nowhere","gateway":"10.0.0.1"}]"#).unwrap_err();
        assert!(err.to_string().contains("\"nowhere\""), "{err}");
    }
}
