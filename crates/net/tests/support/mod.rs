//! Helpers of the `test-cni` feature's tests: the plugins' location, network namespaces that are
//! deleted even when a test panics, and simulated nodes.
#![allow(dead_code)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub(crate) use capstan_api::testing::within;
use capstan_net::cni::{CniNetwork, NetworkConfig};
use capstan_net::Attachment;
use serde_json::json;

pub(crate) const NETWORK: &str = "capstan-test";

/// The plugin directory; fails loudly if the plugins are not installed.
pub(crate) fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("CAPSTAN_CNI_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"));
    for plugin in ["bridge", "host-local", "loopback"] {
        assert!(
            dir.join(plugin).is_file(),
            "CNI plugin {plugin} is not in {} (CAPSTAN_CNI_PATH): install Debian's \
             containernetworking-plugins, or run the tests through scripts/test, which does",
            dir.display()
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("ping", "iputils-ping")] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: install {package} (scripts/test does)"
        );
    }
    dir
}

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub(crate) fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// A network namespace deleted when dropped, even when the test panics.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        let out = sh(&["ip", "netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name} failed (the CNI tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    pub(crate) fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Names of the links of a type (`veth`, `bridge`) in the namespace.
    pub(crate) fn links(&self, kind: &str) -> Vec<String> {
        let out = sh(&["ip", "-n", &self.name, "-o", "link", "show", "type", kind]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
            .collect()
    }

    pub(crate) fn has_link(&self, name: &str) -> bool {
        sh(&["ip", "-n", &self.name, "link", "show", name])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// One simulated node: its namespace (holding the bridge), a private host-local store, a
/// result cache and a directory for extra plugins.
pub(crate) struct Node {
    pub(crate) ns: Netns,
    pub(crate) dir: PathBuf,
    pub(crate) bridge: String,
}

impl Node {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("capstan-cni-test-"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        Node {
            ns: Netns::new("cnode-"),
            dir,
            bridge: unique("cb"),
        }
    }

    pub(crate) fn bridge_plugin(&self, subnet: &str) -> serde_json::Value {
        json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.join("ipam"),
            }
        })
    }

    pub(crate) fn network(&self, plugins: serde_json::Value) -> CniNetwork {
        let config = NetworkConfig::from_value(
            json!({"name": NETWORK, "cniVersion": "1.0.0", "plugins": plugins}),
        )
        .unwrap();
        CniNetwork::builder(config)
            .plugin_dirs([self.dir.join("bin"), plugin_dir()])
            .cache_dir(self.dir.join("cache"))
            .node_netns(self.ns.name.clone())
            .timeout(Duration::from_secs(20))
            .build()
    }

    /// Addresses host-local has allocated (one file per address in its store).
    pub(crate) fn allocated(&self) -> Vec<IpAddr> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("ipam").join(NETWORK)) else {
            return Vec::new();
        };
        let mut all: Vec<IpAddr> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
            .collect();
        all.sort();
        all
    }

    /// Writes a plugin script into the node's extra plugin directory.
    pub(crate) fn script_plugin(&self, name: &str, body: &str) {
        let path = self.dir.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = sh(&["ip", "-n", &self.ns.name, "link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn pod_attachment(ns: &Netns) -> Attachment {
    Attachment::new(unique("sandbox-"), ns.path()).pod("default", ns.name.clone(), "uid")
}

/// Every test's time limit.
pub(crate) const LIMIT: Duration = Duration::from_secs(120);
