//! Network configurations: a [`NetworkConfig`] list (`.conflist`) or single plugin
//! (`.conf`), its [`PluginConfig`]s, and the CNI naming rules they are validated against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::SUPPORTED_VERSIONS;
use crate::error::{NetError, Result};

/// One plugin of a network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    pub(super) plugin_type: String,
    pub(super) raw: Map<String, Value>,
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
    pub(super) name: String,
    pub(super) cni_version: String,
    pub(super) disable_check: bool,
    pub(super) plugins: Vec<PluginConfig>,
    pub(super) source: Option<PathBuf>,
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
    pub(super) fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "disableCheck": self.disable_check,
            "plugins": self.plugins.iter().map(|p| Value::Object(p.raw.clone())).collect::<Vec<_>>(),
        })
    }

    pub(super) fn supports_check(&self) -> bool {
        !self.disable_check && !matches!(self.cni_version.as_str(), "0.3.0" | "0.3.1")
    }
}

/// CNI's rule for network names and container ids.
pub(super) fn valid_name(name: &str) -> bool {
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

pub(super) fn invalid(path: Option<&Path>, message: String) -> NetError {
    NetError::InvalidConfig {
        path: path.map(Path::to_path_buf),
        message,
    }
}
