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

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::atomic_write::write_atomically;
use crate::error::{NetError, Result};
use crate::{AttachResult, Attachment, NetworkPlugin};

/// The spec versions whose configurations and results this backend understands.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Where plugin binaries are looked for when none is configured (Debian's location).
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Where results are cached when no cache directory is configured. Not libcni's
/// `/var/lib/cni/results`: its entries have another format, and a node may run both.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/capstan/cni/results";

/// How long one plugin may run by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One plugin of a network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    plugin_type: String,
    raw: Map<String, Value>,
}

impl PluginConfig {
    /// The plugin's `type`: the name of its binary.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// Whether the plugin declares `capabilities.<name>: true`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.raw
            .get("capabilities")
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The plugin's configuration as written.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
}

/// A validated network configuration list: a `.conflist`, or a single `.conf` seen as a list
/// of one plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    name: String,
    cni_version: String,
    disable_check: bool,
    plugins: Vec<PluginConfig>,
    source: Option<PathBuf>,
}

impl NetworkConfig {
    /// Parses and validates a configuration from JSON text; `source` names the file in
    /// errors.
    ///
    /// A value with `plugins` is a list; one with a top-level `type` is a single plugin
    /// (`.conf`). Fails with [`NetError::InvalidConfig`] when the JSON is bad, or `name`,
    /// `cniVersion` (one of [`SUPPORTED_VERSIONS`]) or a plugin's `type` is missing or
    /// invalid, or the list has no plugins.
    pub fn from_slice(bytes: &[u8], source: Option<&Path>) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(source, format!("not valid JSON: {e}")))?;
        Self::parse(value, source)
    }

    /// Parses and validates a configuration given as a JSON value (see
    /// [`NetworkConfig::from_slice`]).
    pub fn from_value(value: Value) -> Result<Self> {
        Self::parse(value, None)
    }

    /// Reads one configuration file (`.conflist`, `.conf` or `.json`).
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| invalid(Some(path), format!("{e}")))?;
        Self::from_slice(&bytes, Some(path))
    }

    /// Loads the network configuration of a directory as the kubelet does: the file that
    /// sorts lowest among `*.conflist`, `*.conf` and `*.json` wins. If that file is invalid
    /// the error names it (the next file is not tried, so a broken configuration is never
    /// hidden by an older one).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| invalid(Some(dir), format!("{e}")))?;
        let mut files = BTreeSet::new();
        for entry in entries {
            let path = entry
                .map_err(|e| NetError::io(format!("listing {}", dir.display()), e))?
                .path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "conflist" | "conf" | "json") && path.is_file() {
                files.insert(path);
            }
        }
        match files.into_iter().next() {
            Some(first) => Self::load_file(first),
            None => Err(invalid(
                Some(dir),
                "no network configuration (*.conflist, *.conf, *.json)".to_owned(),
            )),
        }
    }

    fn parse(value: Value, source: Option<&Path>) -> Result<Self> {
        let bad = |message: String| invalid(source, message);
        let Value::Object(mut top) = value else {
            return Err(bad("the configuration is not a JSON object".to_owned()));
        };
        let name = match top.get("name") {
            Some(Value::String(name)) if valid_name(name) => name.clone(),
            Some(Value::String(name)) => {
                return Err(bad(format!(
                    "network name {name:?} must be letters, digits, '_', '.' or '-'"
                )))
            }
            _ => return Err(bad("missing string field \"name\"".to_owned())),
        };
        let cni_version = match top.get("cniVersion") {
            Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => v.clone(),
            Some(Value::String(v)) => {
                return Err(bad(format!(
                    "cniVersion {v:?} is not supported (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                )))
            }
            _ => return Err(bad("missing string field \"cniVersion\"".to_owned())),
        };
        let disable_check = top
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let raw_plugins = match top.remove("plugins") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err(bad("\"plugins\" is not a list".to_owned())),
            None if top.contains_key("type") => vec![Value::Object(top)],
            None => return Err(bad("neither \"plugins\" nor \"type\" is set".to_owned())),
        };
        if raw_plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".to_owned()));
        }
        let mut plugins = Vec::with_capacity(raw_plugins.len());
        for (i, plugin) in raw_plugins.into_iter().enumerate() {
            let Value::Object(raw) = plugin else {
                return Err(bad(format!("plugin {i} is not a JSON object")));
            };
            let plugin_type = match raw.get("type") {
                Some(Value::String(t)) if valid_type(t) => t.clone(),
                Some(Value::String(t)) => {
                    return Err(bad(format!("plugin {i} has an invalid type {t:?}")))
                }
                _ => return Err(bad(format!("plugin {i} has no string field \"type\""))),
            };
            plugins.push(PluginConfig { plugin_type, raw });
        }
        Ok(NetworkConfig {
            name,
            cni_version,
            disable_check,
            plugins,
            source: source.map(Path::to_path_buf),
        })
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec version plugins are called with.
    pub fn cni_version(&self) -> &str {
        &self.cni_version
    }

    /// The plugins, in ADD order.
    pub fn plugins(&self) -> &[PluginConfig] {
        &self.plugins
    }

    /// The file the configuration came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The list as JSON (what the result cache keeps).
    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "disableCheck": self.disable_check,
            "plugins": self.plugins.iter().map(|p| Value::Object(p.raw.clone())).collect::<Vec<_>>(),
        })
    }

    fn supports_check(&self) -> bool {
        !self.disable_check && !matches!(self.cni_version.as_str(), "0.3.0" | "0.3.1")
    }
}

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

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
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

    fn cache_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.inner.cache_dir.join(format!(
            "{}-{container_id}-{ifname}",
            self.inner.config.name
        ))
    }

    fn read_cache(&self, container_id: &str, ifname: &str) -> Result<Option<CacheEntry>> {
        let path = self.cache_path(container_id, ifname);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NetError::io(format!("reading {}", path.display()), e)),
        };
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(Some(&path), format!("corrupt result cache: {e}")))?;
        let config = NetworkConfig::from_value(value["config"].clone())
            .map_err(|e| invalid(Some(&path), format!("corrupt result cache: {e}")))?;
        Ok(Some(CacheEntry {
            config,
            plugin_of_result: value["plugin"].as_str().unwrap_or("").to_owned(),
            result: value["result"].clone(),
        }))
    }

    fn write_cache(&self, attachment: &Attachment, plugin: &str, result: &Value) -> Result<()> {
        let dir = &self.inner.cache_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
        let entry = json!({
            "kind": "capstanCniCacheV1",
            "containerId": attachment.container_id,
            "ifName": attachment.ifname,
            "networkName": self.inner.config.name,
            "config": self.inner.config.to_value(),
            "plugin": plugin,
            "result": result,
        });
        let bytes = serde_json::to_vec(&entry).expect("JSON values serialize");
        write_atomically(
            &self.cache_path(&attachment.container_id, &attachment.ifname),
            &bytes,
        )
    }

    fn remove_cache(&self, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.cache_path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NetError::io(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Runs one plugin and returns what it printed on success (JSON, or `Null` if nothing).
    async fn exec(
        &self,
        config: &NetworkConfig,
        plugin: &PluginConfig,
        command: Command,
        attachment: &Attachment,
        prev_result: Option<&Value>,
    ) -> Result<Value> {
        let binary = self.find_plugin(&plugin.plugin_type)?;
        let stdin = stdin_config(config, plugin, command, attachment, prev_result);
        let mut cmd = match &self.inner.node_netns {
            Some(ns) => {
                let mut cmd = tokio::process::Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&binary);
                cmd
            }
            None => tokio::process::Command::new(&binary),
        };
        let cni_path = std::env::join_paths(&self.inner.plugin_dirs).map_err(|e| {
            NetError::InvalidArgument(format!("plugin directory unusable in CNI_PATH: {e}"))
        })?;
        cmd.env("CNI_COMMAND", command.as_str())
            .env("CNI_PATH", &cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if command != Command::Version {
            cmd.env("CNI_CONTAINERID", &attachment.container_id)
                .env("CNI_NETNS", &attachment.netns)
                .env("CNI_IFNAME", &attachment.ifname)
                .env("CNI_ARGS", cni_args(attachment));
        }
        let context = || {
            format!(
                "running CNI plugin {} {}",
                binary.display(),
                command.as_str()
            )
        };
        let mut child = cmd.spawn().map_err(|e| NetError::io(context(), e))?;
        let bytes = serde_json::to_vec(&stdin).expect("JSON values serialize");
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let run = async move {
            // A plugin may exit without reading its input; that is its answer, not ours.
            let _ = pipe.write_all(&bytes).await;
            drop(pipe);
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(self.inner.timeout, run).await {
            Ok(output) => output.map_err(|e| NetError::io(context(), e))?,
            Err(_) => {
                return Err(NetError::PluginTimedOut {
                    plugin: plugin.plugin_type.clone(),
                    timeout: self.inner.timeout,
                })
            }
        };
        if output.status.success() {
            if output.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&output.stdout).map_err(|e| NetError::PluginFailed {
                plugin: plugin.plugin_type.clone(),
                code: 0,
                message: format!("printed a result that is not JSON: {e}"),
                details: String::from_utf8_lossy(&output.stdout).into_owned(),
            });
        }
        Err(plugin_error(&plugin.plugin_type, &output))
    }

    /// Runs DEL for `plugins` in reverse with `prev_result`, stopping at the first error.
    async fn del_plugins(
        &self,
        config: &NetworkConfig,
        plugins: &[PluginConfig],
        attachment: &Attachment,
        prev_result: Option<&Value>,
    ) -> Result<()> {
        for plugin in plugins.iter().rev() {
            self.exec(config, plugin, Command::Del, attachment, prev_result)
                .await?;
        }
        Ok(())
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

struct CacheEntry {
    config: NetworkConfig,
    plugin_of_result: String,
    result: Value,
}

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

/// The JSON a plugin reads on stdin.
fn stdin_config(
    config: &NetworkConfig,
    plugin: &PluginConfig,
    command: Command,
    attachment: &Attachment,
    prev_result: Option<&Value>,
) -> Value {
    if command == Command::Version {
        return json!({ "cniVersion": config.cni_version });
    }
    let mut raw = plugin.raw.clone();
    raw.insert("name".to_owned(), Value::String(config.name.clone()));
    raw.insert(
        "cniVersion".to_owned(),
        Value::String(config.cni_version.clone()),
    );
    match prev_result {
        Some(prev) if !prev.is_null() => {
            raw.insert("prevResult".to_owned(), prev.clone());
        }
        _ => {
            raw.remove("prevResult");
        }
    }
    if plugin.has_capability("portMappings") && !attachment.port_mappings.is_empty() {
        let mappings: Vec<Value> = attachment
            .port_mappings
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol,
                });
                if !m.host_ip.is_empty() {
                    entry["hostIP"] = Value::String(m.host_ip.clone());
                }
                entry
            })
            .collect();
        let runtime = raw
            .entry("runtimeConfig")
            .or_insert_with(|| Value::Object(Map::new()));
        if !runtime.is_object() {
            *runtime = Value::Object(Map::new());
        }
        runtime["portMappings"] = Value::Array(mappings);
    }
    Value::Object(raw)
}

/// `CNI_ARGS`: `IgnoreUnknown=1` and the pod's identity.
fn cni_args(attachment: &Attachment) -> OsString {
    let mut args = String::from("IgnoreUnknown=1");
    for (key, value) in [
        ("K8S_POD_NAMESPACE", &attachment.pod_namespace),
        ("K8S_POD_NAME", &attachment.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", &attachment.container_id),
        ("K8S_POD_UID", &attachment.pod_uid),
    ] {
        if !value.is_empty() {
            args.push_str(&format!(";{key}={value}"));
        }
    }
    args.into()
}

/// A failed plugin's CNI error result, or its exit status and stderr if it printed none.
fn plugin_error(plugin: &str, output: &std::process::Output) -> NetError {
    let parsed: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64);
    match (parsed.as_ref(), code) {
        (Some(error), Some(code)) => NetError::PluginFailed {
            plugin: plugin.to_owned(),
            code: u32::try_from(code).unwrap_or(u32::MAX),
            message: error["msg"].as_str().unwrap_or("").to_owned(),
            details: error["details"].as_str().unwrap_or("").to_owned(),
        },
        _ => NetError::PluginFailed {
            plugin: plugin.to_owned(),
            code: 0,
            message: format!("exited with {} and no CNI error result", output.status),
            details: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        },
    }
}

/// Parses a plugin's result (spec 0.3.0 to 1.0.0).
fn parse_result(plugin: &str, raw: Value) -> Result<AttachResult> {
    let version = raw["cniVersion"].as_str().unwrap_or("").to_owned();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(NetError::PluginFailed {
            plugin: plugin.to_owned(),
            code: 0,
            message: format!("result of unsupported cniVersion {version:?}"),
            details: raw.to_string(),
        });
    }
    serde_json::from_value(raw.clone()).map_err(|e| NetError::PluginFailed {
        plugin: plugin.to_owned(),
        code: 0,
        message: format!("result does not parse: {e}"),
        details: raw.to_string(),
    })
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

/// CNI's rule for network names and container ids.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A plugin type names a binary in a search directory: no path separators.
fn valid_type(plugin_type: &str) -> bool {
    !plugin_type.is_empty()
        && plugin_type != "."
        && plugin_type != ".."
        && !plugin_type.contains('/')
        && !plugin_type.contains('\0')
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn invalid(path: Option<&Path>, message: String) -> NetError {
    NetError::InvalidConfig {
        path: path.map(Path::to_path_buf),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A temporary directory with script plugins that log every call.
    struct Scripts {
        root: PathBuf,
    }

    impl Scripts {
        fn new() -> Self {
            let root =
                std::env::temp_dir().join(format!("capstan-cni-unit-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::create_dir_all(root.join("log")).unwrap();
            Scripts { root }
        }

        fn bin(&self) -> PathBuf {
            self.root.join("bin")
        }

        fn cache(&self) -> PathBuf {
            self.root.join("cache")
        }

        /// A plugin that logs its stdin and CNI_* environment, then runs `on_add` for ADD
        /// (other commands succeed silently, VERSION answers 0.4.0 and 1.0.0).
        fn plugin(&self, name: &str, on_add: &str) {
            let log = self.root.join("log");
            let text = format!(
                r#"#!/bin/sh
n=$(printf %03d "$(ls "{log}" | wc -l)")
cat > "{log}/$n-{name}-$CNI_COMMAND.json"
env | grep '^CNI_' | sort > "{log}/$n-{name}-$CNI_COMMAND.zenv"
case "$CNI_COMMAND" in
  VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
  ADD) {on_add} ;;
esac
"#,
                log = log.display()
            );
            let path = self.bin().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        /// The calls so far: (plugin, command, stdin, environment).
        fn calls(&self) -> Vec<(String, String, Value, String)> {
            let mut names: Vec<_> = std::fs::read_dir(self.root.join("log"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".json"))
                .collect();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let stem = n.trim_end_matches(".json");
                    let mut parts = stem.splitn(3, '-');
                    let (_, plugin, command) =
                        (parts.next(), parts.next().unwrap(), parts.next().unwrap());
                    let stdin = std::fs::read(self.root.join("log").join(&n)).unwrap();
                    let env =
                        std::fs::read_to_string(self.root.join("log").join(format!("{stem}.zenv")))
                            .unwrap();
                    (
                        plugin.to_owned(),
                        command.to_owned(),
                        serde_json::from_slice(&stdin).unwrap(),
                        env,
                    )
                })
                .collect()
        }

        fn calls_brief(&self) -> Vec<String> {
            self.calls()
                .into_iter()
                .map(|(p, c, _, _)| format!("{p} {c}"))
                .collect()
        }

        fn network(&self, plugins: Value) -> CniNetwork {
            let config = NetworkConfig::from_value(json!({
                "name": "unit", "cniVersion": "1.0.0", "plugins": plugins
            }))
            .unwrap();
            CniNetwork::builder(config)
                .plugin_dirs([self.bin()])
                .cache_dir(self.cache())
                .timeout(Duration::from_secs(10))
                .build()
        }
    }

    impl Drop for Scripts {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const IPAM_RESULT: &str = r#"echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}'"#;
    const LINK_RESULT: &str = r#"echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/n"}],"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}]}'"#;
    const FAILURE: &str = r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad range","details":"10.9.0.0/24 is full"}'; exit 1"#;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
            .expect("the test finishes in time")
    }

    fn pod(id: &str) -> Attachment {
        Attachment::new(id, format!("/var/run/netns/{id}")).pod("default", "web-0", "uid-1")
    }

    #[test]
    fn a_conflist_and_a_single_conf_are_validated() {
        let list = NetworkConfig::from_slice(
            br#"{"name":"pods","cniVersion":"0.4.0","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(list.name(), "pods");
        assert_eq!(list.cni_version(), "0.4.0");
        assert_eq!(list.plugins().len(), 2);
        assert!(list.plugins()[1].has_capability("portMappings"));
        assert!(!list.plugins()[0].has_capability("portMappings"));
        let single = NetworkConfig::from_value(
            json!({"name":"one","cniVersion":"1.0.0","type":"bridge","bridge":"cni0"}),
        )
        .unwrap();
        assert_eq!(single.plugins()[0].plugin_type(), "bridge");
        assert_eq!(single.plugins()[0].raw()["bridge"], "cni0");

        let path = Path::new("/etc/cni/net.d/10-bad.conflist");
        for (text, wanted) in [
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "\"name\"",
            ),
            (
                r#"{"name":"x","plugins":[{"type":"bridge"}]}"#,
                "\"cniVersion\"",
            ),
            (
                r#"{"name":"x","cniVersion":"0.2.0","plugins":[{"type":"bridge"}]}"#,
                "not supported",
            ),
            (r#"{"name":"x","cniVersion":"1.0.0","plugins":[]}"#, "empty"),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"bridge":"b"}]}"#,
                "plugin 0 has no",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"../sh"}]}"#,
                "invalid type",
            ),
            (
                r#"{"name":"x y","cniVersion":"1.0.0","type":"bridge"}"#,
                "network name",
            ),
            (r#"{"name":"x","cniVersion":"1.0.0"}"#, "neither"),
            ("[1]", "not a JSON object"),
            ("{", "not valid JSON"),
        ] {
            let err = NetworkConfig::from_slice(text.as_bytes(), Some(path)).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, NetError::InvalidConfig { path: Some(_), .. }),
                "{message}"
            );
            assert!(
                message.contains("10-bad.conflist") && message.contains(wanted),
                "{message}"
            );
        }
    }

    #[test]
    fn the_lowest_sorted_file_of_a_directory_wins_and_a_broken_one_is_named() {
        let scripts = Scripts::new();
        let dir = scripts.root.join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        let err = NetworkConfig::load_dir(&dir).unwrap_err();
        assert!(
            err.to_string().contains("no network configuration"),
            "{err}"
        );
        std::fs::write(
            dir.join("20-b.conflist"),
            r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("10-a.conf"),
            r#"{"name":"a","cniVersion":"1.0.0","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("00-notes.txt"), "ignored").unwrap();
        let config = NetworkConfig::load_dir(&dir).unwrap();
        assert_eq!(config.name(), "a");
        assert_eq!(config.source(), Some(dir.join("10-a.conf").as_path()));
        std::fs::write(dir.join("05-broken.conflist"), r#"{"name":"c"}"#).unwrap();
        let err = NetworkConfig::load_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("05-broken.conflist"), "{err}");
    }

    #[test]
    fn add_chains_results_and_injects_name_version_args_and_port_mappings() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        // `ports` prints a fixed result where a real one would pass on its prevResult.
        scripts.plugin("ports", IPAM_RESULT);
        let network = scripts.network(json!([
            {"type": "link", "bridge": "cbr0", "prevResult": {"stale": true}},
            {"type": "ports", "capabilities": {"portMappings": true}}
        ]));
        let mut attachment = pod("sandbox1");
        attachment.port_mappings = vec![crate::PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        }];
        run(async {
            let result = network.add(&attachment).await.unwrap();
            assert_eq!(
                result.pod_ips(),
                vec!["10.9.0.5".parse::<std::net::IpAddr>().unwrap()]
            );
        });
        let calls = scripts.calls();
        assert_eq!(scripts.calls_brief(), ["link ADD", "ports ADD"]);
        let (_, _, link_in, link_env) = &calls[0];
        assert_eq!(link_in["name"], "unit");
        assert_eq!(link_in["cniVersion"], "1.0.0");
        assert_eq!(link_in["bridge"], "cbr0");
        assert!(
            link_in.get("prevResult").is_none(),
            "the first plugin gets no prevResult"
        );
        assert!(link_in.get("runtimeConfig").is_none());
        for line in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=sandbox1",
            "CNI_NETNS=/var/run/netns/sandbox1",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1",
        ] {
            assert!(link_env.lines().any(|l| l == line), "{line} missing in {link_env}");
        }
        assert!(link_env.contains(&format!("CNI_PATH={}", scripts.bin().display())));
        let (_, _, ports_in, _) = &calls[1];
        assert_eq!(ports_in["prevResult"]["interfaces"][0]["name"], "eth0");
        assert_eq!(
            ports_in["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        let cached = network.cached_result("sandbox1", "eth0").unwrap().unwrap();
        assert_eq!(cached.ips[0].address, "10.9.0.5/24".parse().unwrap());
    }

    #[test]
    fn del_runs_in_reverse_with_the_cached_result_and_may_repeat() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        scripts.plugin("ipam", IPAM_RESULT);
        let network = scripts.network(json!([{"type": "link"}, {"type": "ipam"}]));
        run(async {
            network.add(&pod("s1")).await.unwrap();
            let err = network.add(&pod("s1")).await.unwrap_err();
            assert!(matches!(err, NetError::AlreadyExists { .. }), "{err}");
            network.check(&pod("s1")).await.unwrap();
            network.del(&Attachment::new("s1", "")).await.unwrap();
            network.del(&Attachment::new("s1", "")).await.unwrap();
            let err = network.check(&pod("s1")).await.unwrap_err();
            assert!(matches!(err, NetError::CheckFailed { .. }), "{err}");
        });
        assert_eq!(
            scripts.calls_brief(),
            [
                "link ADD",
                "ipam ADD",
                "link CHECK",
                "ipam CHECK",
                "ipam DEL",
                "link DEL",
                "ipam DEL",
                "link DEL"
            ]
        );
        let calls = scripts.calls();
        assert_eq!(calls[3].2["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        // The first DEL carries the cached result, the repeated one has none left.
        assert_eq!(calls[4].2["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        assert!(calls[6].2.get("prevResult").is_none());
        assert!(calls[4].3.lines().any(|l| l == "CNI_NETNS="));
        assert!(network.cached_result("s1", "eth0").unwrap().is_none());
    }

    #[test]
    fn a_corrupt_cache_entry_blocks_add_but_not_del() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        let network = scripts.network(json!([{"type": "link"}]));
        std::fs::create_dir_all(scripts.cache()).unwrap();
        let entry = scripts.cache().join("unit-s1-eth0");
        std::fs::write(&entry, "{torn").unwrap();
        run(async {
            let err = network.add(&pod("s1")).await.unwrap_err();
            assert!(
                matches!(err, NetError::InvalidConfig { path: Some(ref p), .. } if p == &entry),
                "{err}"
            );
            network.del(&pod("s1")).await.unwrap();
            assert!(!entry.exists());
            network.add(&pod("s1")).await.unwrap();
        });
        assert_eq!(scripts.calls_brief(), ["link DEL", "link ADD"]);
    }

    #[test]
    fn a_failing_plugin_is_a_typed_error_and_undoes_the_plugins_before_it() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        scripts.plugin("broken", FAILURE);
        let network = scripts.network(json!([{"type": "link"}, {"type": "broken"}]));
        run(async {
            let err = network.add(&pod("s1")).await.unwrap_err();
            match &err {
                NetError::PluginFailed {
                    plugin,
                    code,
                    message,
                    details,
                } => {
                    assert_eq!((plugin.as_str(), *code), ("broken", 7));
                    assert_eq!(message, "bad range");
                    assert_eq!(details, "10.9.0.0/24 is full");
                }
                other => panic!("unexpected {other}"),
            }
            assert!(!err.is_retryable());
            assert!(network.cached_result("s1", "eth0").unwrap().is_none());
        });
        assert_eq!(
            scripts.calls_brief(),
            ["link ADD", "broken ADD", "broken DEL", "link DEL"]
        );
        assert_eq!(
            scripts.calls()[3].2["prevResult"]["interfaces"][0]["name"],
            "eth0"
        );
    }

    #[test]
    fn a_plugin_without_a_cni_error_or_with_garbage_output_is_plugin_failed() {
        let scripts = Scripts::new();
        scripts.plugin("crash", "echo oops >&2; exit 3");
        scripts.plugin("garbage", "echo not-json");
        scripts.plugin(
            "old",
            r#"echo '{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}'"#,
        );
        run(async {
            for (plugin, wanted) in [
                ("crash", "oops"),
                ("garbage", "not JSON"),
                ("old", "unsupported cniVersion"),
            ] {
                let err = scripts
                    .network(json!([{"type": plugin}]))
                    .add(&pod("s1"))
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, NetError::PluginFailed { code: 0, .. }),
                    "{err}"
                );
                assert!(err.to_string().contains(wanted), "{err}");
            }
        });
    }

    #[test]
    fn a_missing_binary_is_plugin_not_found_before_anything_runs() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        let network = scripts.network(json!([{"type": "link"}, {"type": "no-such-plugin"}]));
        run(async {
            let err = network.add(&pod("s1")).await.unwrap_err();
            match &err {
                NetError::PluginNotFound {
                    plugin,
                    search_path,
                } => {
                    assert_eq!(plugin, "no-such-plugin");
                    assert_eq!(search_path, &vec![scripts.bin()]);
                }
                other => panic!("unexpected {other}"),
            }
            assert!(matches!(
                network.status().await,
                Err(NetError::PluginNotFound { .. })
            ));
        });
        assert!(scripts.calls().is_empty());
    }

    #[test]
    fn a_hanging_plugin_is_killed_after_the_timeout() {
        let scripts = Scripts::new();
        scripts.plugin("slow", "sleep 30");
        let config =
            NetworkConfig::from_value(json!({"name":"unit","cniVersion":"1.0.0","type":"slow"}))
                .unwrap();
        let network = CniNetwork::builder(config)
            .plugin_dirs([scripts.bin()])
            .cache_dir(scripts.cache())
            .timeout(Duration::from_millis(300))
            .build();
        run(async {
            let err = network.add(&pod("s1")).await.unwrap_err();
            assert!(matches!(err, NetError::PluginTimedOut { .. }), "{err}");
            assert!(err.is_retryable());
        });
    }

    #[test]
    fn status_asks_each_plugin_for_its_versions() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        run(async {
            let network = scripts.network(json!([{"type": "link"}, {"type": "link"}]));
            network.status().await.unwrap();
            assert_eq!(
                network.plugin_versions("link").await.unwrap(),
                ["0.4.0", "1.0.0"]
            );
            let old =
                NetworkConfig::from_value(json!({"name":"u","cniVersion":"0.3.1","type":"link"}))
                    .unwrap();
            let network = CniNetwork::builder(old)
                .plugin_dirs([scripts.bin()])
                .build();
            let err = network.status().await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("does not support cniVersion 0.3.1"),
                "{err}"
            );
        });
        assert_eq!(
            scripts.calls_brief(),
            ["link VERSION", "link VERSION", "link VERSION"]
        );
    }

    #[test]
    fn bad_attachments_are_refused_before_any_plugin_runs() {
        let scripts = Scripts::new();
        scripts.plugin("link", LINK_RESULT);
        let network = scripts.network(json!([{"type": "link"}]));
        run(async {
            for bad in [
                Attachment::new("", "/n"),
                Attachment::new("../etc", "/n"),
                Attachment {
                    ifname: "a/b".into(),
                    ..Attachment::new("s1", "/n")
                },
                Attachment {
                    ifname: "much-too-long-name".into(),
                    ..Attachment::new("s1", "/n")
                },
                Attachment::new("s1", ""),
            ] {
                let err = network.add(&bad).await.unwrap_err();
                assert!(matches!(err, NetError::InvalidArgument(_)), "{err}");
            }
            assert!(network.del(&Attachment::new("", "")).await.is_err());
        });
        assert!(scripts.calls().is_empty());
    }
}
