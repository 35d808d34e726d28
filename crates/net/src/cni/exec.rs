//! Running one plugin binary: the CNI command, its environment (`CNI_*`), the configuration
//! it reads on stdin, its timeout, and parsing its result or error.

use std::ffi::OsString;
use std::path::Path;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use super::{CniNetwork, NetworkConfig, PluginConfig, SUPPORTED_VERSIONS};
use crate::error::{NetError, Result};
use crate::{AttachResult, Attachment};

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Command {
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
    /// Runs one plugin and returns what it printed on success (JSON, or `Null` if nothing).
    pub(super) async fn exec(
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
    pub(super) async fn del_plugins(
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
pub(super) fn parse_result(plugin: &str, raw: Value) -> Result<AttachResult> {
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

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
