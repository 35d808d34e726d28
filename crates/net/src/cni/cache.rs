//! The result cache: each attachment's ADD result with the configuration it was made with,
//! one file per attachment, read back by DEL and CHECK.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::config::invalid;
use super::{CniNetwork, NetworkConfig};
use crate::atomic_write::write_atomically;
use crate::error::{NetError, Result};
use crate::Attachment;

pub(super) struct CacheEntry {
    pub(super) config: NetworkConfig,
    pub(super) plugin_of_result: String,
    pub(super) result: Value,
}

impl CniNetwork {
    fn cache_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.inner.cache_dir.join(format!(
            "{}-{container_id}-{ifname}",
            self.inner.config.name
        ))
    }

    pub(super) fn read_cache(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CacheEntry>> {
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

    pub(super) fn write_cache(
        &self,
        attachment: &Attachment,
        plugin: &str,
        result: &Value,
    ) -> Result<()> {
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

    pub(super) fn remove_cache(&self, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.cache_path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NetError::io(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }
}
