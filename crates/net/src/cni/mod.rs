//! The CNI backend: runs real CNI plugin binaries as the CNI specification says.
//!
//! [`CniNetwork`] executes the plugins of one network configuration list
//! ([`NetworkConfig`], a `.conflist` or a single `.conf`) for each call:
//!
//! - **ADD** runs the plugins in order. Each gets the network configuration on stdin with
//!   `name` and `cniVersion` injected, the previous plugin's result as `prevResult`, and
//!   `runtimeConfig.portMappings` when its `capabilities.portMappings` is true. The last
//!   result is the attachment's [`AttachResult`] and is cached per attachment in the cache
//!   directory (like libcni's `/var/lib/cni/results`). If a plugin fails, DEL runs for it
//!   and every plugin before it, in reverse, so nothing half-made remains.
//! - **DEL** runs the plugins in reverse with the cached result as `prevResult`, then drops
//!   the cache entry. A DEL of an attachment that is not there succeeds (plugins' DEL is
//!   idempotent), so DEL may be repeated.
//! - **CHECK** runs the plugins in order with the cached result (spec 0.4.0 and later,
//!   unless the list sets `disableCheck`).
//!
//! Plugins get `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`
//! (`IgnoreUnknown=1` and the pod's `K8S_POD_*`) and `CNI_PATH`, and are killed after a
//! timeout. A plugin's error result (`code`, `msg`, `details`) becomes
//! [`NetError::PluginFailed`]. Results of spec versions 0.3.0 to 1.0.0 are accepted (Debian's
//! plugins, v1.1.1, support all of them).
//!
//! [`CniNetworkBuilder::node_netns`] runs the plugins inside a named network namespace (with
//! `ip netns exec`), so the bridge and host-side interfaces live there rather than in the
//! host's namespace: several simulated nodes can share one machine.
//!
//! The backend's files: this one holds [`CniNetwork`], its builder and its
//! [`NetworkPlugin`] impl; `config` parses [`NetworkConfig`]s, `exec` runs one plugin binary
//! (its environment, stdin and result), and `cache` keeps the ADD results per attachment.

mod cache;
mod config;
mod exec;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::{NetError, Result};
use crate::{AttachResult, Attachment, NetworkPlugin};
use config::{invalid, valid_name};
use exec::{is_executable, parse_result, Command};

/// The spec versions whose configurations and results this backend understands.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Where plugin binaries are looked for when none is configured (Debian's location).
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Where results are cached when no cache directory is configured. Not libcni's
/// `/var/lib/cni/results`: its entries have another format, and a node may run both.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/capstan/cni/results";

/// How long one plugin may run by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub use config::{NetworkConfig, PluginConfig};

/// Builds a [`CniNetwork`].
#[derive(Clone, Debug)]
pub struct CniNetworkBuilder {
    config: NetworkConfig,
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
    node_netns: Option<String>,
}

impl CniNetworkBuilder {
    /// The directories searched for plugin binaries, in order (`CNI_PATH`);
    /// [`DEFAULT_PLUGIN_DIR`] by default.
    pub fn plugin_dirs(mut self, dirs: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.plugin_dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// Where ADD results are cached for DEL and CHECK; [`DEFAULT_CACHE_DIR`] by default.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// How long one plugin may run before it is killed; [`DEFAULT_TIMEOUT`] by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the plugins inside the named network namespace (`ip netns exec NAME`) instead of
    /// the caller's, as the network namespace of a simulated node.
    pub fn node_netns(mut self, name: impl Into<String>) -> Self {
        self.node_netns = Some(name.into());
        self
    }

    /// Builds the network. It checks nothing on disk; [`NetworkPlugin::status`] does.
    pub fn build(self) -> CniNetwork {
        CniNetwork {
            inner: Arc::new(self),
        }
    }
}

/// A [`NetworkPlugin`] that runs real CNI plugin binaries. Clones share the configuration.
#[derive(Clone, Debug)]
pub struct CniNetwork {
    inner: Arc<CniNetworkBuilder>,
}

impl CniNetwork {
    /// A builder running the plugins of `config`.
    pub fn builder(config: NetworkConfig) -> CniNetworkBuilder {
        CniNetworkBuilder {
            config,
            plugin_dirs: vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            timeout: DEFAULT_TIMEOUT,
            node_netns: None,
        }
    }

    /// The configuration the plugins run with.
    pub fn config(&self) -> &NetworkConfig {
        &self.inner.config
    }

    /// The cached result of an attachment's ADD, if it is set up.
    pub fn cached_result(&self, container_id: &str, ifname: &str) -> Result<Option<AttachResult>> {
        validate_ids(container_id, ifname)?;
        match self.read_cache(container_id, ifname)? {
            Some(entry) => parse_result(&entry.plugin_of_result, entry.result).map(Some),
            None => Ok(None),
        }
    }

    /// The binary of `plugin_type` on the search path.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        self.inner
            .plugin_dirs
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|path| is_executable(path))
            .ok_or_else(|| NetError::PluginNotFound {
                plugin: plugin_type.to_owned(),
                search_path: self.inner.plugin_dirs.clone(),
            })
    }

    /// The spec versions a plugin binary supports (`CNI_COMMAND=VERSION`).
    pub async fn plugin_versions(&self, plugin_type: &str) -> Result<Vec<String>> {
        let config = &self.inner.config;
        let plugin = PluginConfig {
            plugin_type: plugin_type.to_owned(),
            raw: Map::new(),
        };
        let answer = self
            .exec(
                config,
                &plugin,
                Command::Version,
                &Attachment::default(),
                None,
            )
            .await?;
        let versions = answer["supportedVersions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(NetError::PluginFailed {
                plugin: plugin_type.to_owned(),
                code: 0,
                message: "VERSION printed no supportedVersions".to_owned(),
                details: answer.to_string(),
            });
        }
        Ok(versions)
    }
}

impl CniNetwork {
    /// Brings the sandbox's loopback interface up with the `loopback` plugin, as containerd's
    /// CRI does for every pod, so a process in the pod (and port-forwarding, which connects
    /// to `localhost` in the pod) can use `127.0.0.1`. Skipped when the plugin directories
    /// hold no `loopback` binary (the network's own plugins may bring `lo` up).
    async fn loopback_up(&self, attachment: &Attachment) -> Result<()> {
        if self.find_plugin(LOOPBACK_PLUGIN).is_err() {
            return Ok(());
        }
        let mut raw = Map::new();
        raw.insert("type".to_owned(), Value::String(LOOPBACK_PLUGIN.to_owned()));
        let plugin = PluginConfig {
            plugin_type: LOOPBACK_PLUGIN.to_owned(),
            raw,
        };
        let config = NetworkConfig {
            name: "cni-loopback".to_owned(),
            cni_version: self.inner.config.cni_version.clone(),
            disable_check: true,
            plugins: vec![plugin.clone()],
            source: None,
        };
        let lo = Attachment {
            ifname: "lo".to_owned(),
            port_mappings: Vec::new(),
            ..attachment.clone()
        };
        self.exec(&config, &plugin, Command::Add, &lo, None)
            .await
            .map(|_| ())
    }
}

/// The reference plugin that brings `lo` up in a namespace.
const LOOPBACK_PLUGIN: &str = "loopback";

#[async_trait]
impl NetworkPlugin for CniNetwork {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn add(&self, attachment: &Attachment) -> Result<AttachResult> {
        validate_ids(&attachment.container_id, &attachment.ifname)?;
        if attachment.netns.as_os_str().is_empty() {
            return Err(NetError::InvalidArgument(
                "empty network namespace path on add".to_owned(),
            ));
        }
        if self
            .read_cache(&attachment.container_id, &attachment.ifname)?
            .is_some()
        {
            return Err(NetError::AlreadyExists {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
            });
        }
        let config = &self.inner.config;
        // Every binary must be there before anything is set up.
        for plugin in &config.plugins {
            self.find_plugin(&plugin.plugin_type)?;
        }
        self.loopback_up(attachment).await?;
        let mut prev: Option<Value> = None;
        let mut last_plugin = "";
        for (i, plugin) in config.plugins.iter().enumerate() {
            let outcome = self
                .exec(config, plugin, Command::Add, attachment, prev.as_ref())
                .await
                .and_then(|result| match result {
                    Value::Null => Err(NetError::PluginFailed {
                        plugin: plugin.plugin_type.clone(),
                        code: 0,
                        message: "ADD printed no result".to_owned(),
                        details: String::new(),
                    }),
                    result => parse_result(&plugin.plugin_type, result.clone()).map(|_| result),
                });
            match outcome {
                Ok(result) => {
                    prev = Some(result);
                    last_plugin = &plugin.plugin_type;
                }
                Err(error) => {
                    // Undo this plugin and those before it; the ADD's error is what matters.
                    let _ = self
                        .del_plugins(config, &config.plugins[..=i], attachment, prev.as_ref())
                        .await;
                    return Err(error);
                }
            }
        }
        let raw = prev.expect("a validated list has a plugin");
        let result = parse_result(last_plugin, raw.clone())?;
        if let Err(error) = self.write_cache(attachment, last_plugin, &raw) {
            let _ = self
                .del_plugins(config, &config.plugins, attachment, Some(&raw))
                .await;
            return Err(error);
        }
        Ok(result)
    }

    async fn del(&self, attachment: &Attachment) -> Result<()> {
        validate_ids(&attachment.container_id, &attachment.ifname)?;
        // A corrupt entry must not make the attachment undeletable: DEL then runs as if
        // nothing were cached, and the entry goes with the attachment.
        let cached = match self.read_cache(&attachment.container_id, &attachment.ifname) {
            Err(NetError::InvalidConfig { .. }) => None,
            other => other?,
        };
        // What was added is what gets removed: the cached list if there is one.
        let (config, prev) = match &cached {
            Some(entry) => (&entry.config, Some(&entry.result)),
            None => (&self.inner.config, None),
        };
        self.del_plugins(config, &config.plugins, attachment, prev)
            .await?;
        self.remove_cache(&attachment.container_id, &attachment.ifname)
    }

    async fn check(&self, attachment: &Attachment) -> Result<()> {
        validate_ids(&attachment.container_id, &attachment.ifname)?;
        let failed = |message: String| NetError::CheckFailed {
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            message,
        };
        let Some(entry) = self.read_cache(&attachment.container_id, &attachment.ifname)? else {
            return Err(failed(
                "no cached result: the attachment was not added".to_owned(),
            ));
        };
        if !entry.config.supports_check() {
            return Ok(());
        }
        for plugin in &entry.config.plugins {
            self.exec(
                &entry.config,
                plugin,
                Command::Check,
                attachment,
                Some(&entry.result),
            )
            .await
            .map_err(|e| match e {
                NetError::PluginFailed { .. } => failed(e.to_string()),
                other => other,
            })?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<()> {
        let config = &self.inner.config;
        if let Some(source) = &config.source {
            if !source.is_file() {
                return Err(invalid(
                    Some(source),
                    "the configuration file is gone".to_owned(),
                ));
            }
        }
        let types: BTreeSet<&str> = config.plugins.iter().map(|p| p.plugin_type()).collect();
        for plugin_type in &types {
            self.find_plugin(plugin_type)?;
        }
        for plugin_type in types {
            let versions = self.plugin_versions(plugin_type).await?;
            if !versions.iter().any(|v| v == &config.cni_version) {
                return Err(invalid(
                    config.source.as_deref(),
                    format!(
                        "plugin {} does not support cniVersion {} (it supports {})",
                        plugin_type,
                        config.cni_version,
                        versions.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Container ids and interface names end up in file names and plugin arguments.
fn validate_ids(container_id: &str, ifname: &str) -> Result<()> {
    if container_id.is_empty() {
        return Err(NetError::InvalidArgument("empty container id".to_owned()));
    }
    if !valid_name(container_id) {
        return Err(NetError::InvalidArgument(format!(
            "container id {container_id:?} must be letters, digits, '_', '.' or '-'"
        )));
    }
    let bad_ifname = ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad_ifname {
        return Err(NetError::InvalidArgument(format!(
            "interface name {ifname:?} is not a valid Linux interface name"
        )));
    }
    Ok(())
}
