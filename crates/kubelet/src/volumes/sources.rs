//! The files of ConfigMap, Secret and downward API volumes (and projections), as the
//! kubelet's volume plugins write them.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret,
};
use capstan_api::k8s_openapi::NamespaceResourceScope;
use capstan_api::kube_core::ResourceExt;
use capstan_api::{Api, Client, Error};

use super::atomic_writer::FileContent;
use super::VolumeError;

/// Reads what volumes project, for one Pod.
pub(crate) struct Resolver<'a> {
    pub(crate) client: &'a Arc<dyn Client>,
    pub(crate) namespace: &'a str,
    pub(crate) pod: &'a Pod,
}

impl Resolver<'_> {
    /// A ConfigMap's keys (`data` and `binaryData`) as files, or only `items`.
    pub(super) async fn config_map(
        &self,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: bool,
        mode: u32,
    ) -> Result<Vec<FileContent>, VolumeError> {
        let Some(config_map) = self.fetch::<ConfigMap>("configmap", name, optional).await? else {
            return Ok(Vec::new());
        };
        let mut data: BTreeMap<String, Vec<u8>> = config_map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (key, value) in config_map.binary_data.unwrap_or_default() {
            data.insert(key, value.0);
        }
        project(data, items, optional, mode, "configmap")
    }

    /// A Secret's keys as files, or only `items`.
    pub(super) async fn secret(
        &self,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: bool,
        mode: u32,
    ) -> Result<Vec<FileContent>, VolumeError> {
        let Some(secret) = self.fetch::<Secret>("secret", name, optional).await? else {
            return Ok(Vec::new());
        };
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (key, value) in secret.string_data.unwrap_or_default() {
            data.insert(key, value.into_bytes());
        }
        project(data, items, optional, mode, "secret")
    }

    /// The object `name` of the Pod's namespace; `None` when it is missing and `optional`.
    /// `kind` names it in the error (`configmap "app" not found`).
    pub(crate) async fn fetch<K>(
        &self,
        kind: &str,
        name: &str,
        optional: bool,
    ) -> Result<Option<K>, VolumeError>
    where
        K: capstan_api::Resource<Scope = NamespaceResourceScope>
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Clone
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        match api.get(name).await {
            Ok(found) => Ok(Some(found)),
            Err(Error::NotFound { .. }) if optional => Ok(None),
            Err(Error::NotFound { .. }) => Err(VolumeError::MissingSource {
                message: format!("{kind} \"{name}\" not found"),
            }),
            Err(error) => Err(VolumeError::Api(error.to_string())),
        }
    }

    /// The downward API's files: the Pod's name, namespace, uid, labels and annotations.
    pub(super) fn downward_api(
        &self,
        items: Option<&[DownwardAPIVolumeFile]>,
        mode: u32,
    ) -> Result<Vec<FileContent>, VolumeError> {
        let mut files = Vec::new();
        for item in items.unwrap_or_default() {
            let value = if let Some(field) = &item.field_ref {
                field_value(self.pod, &field.field_path)?
            } else if let Some(resource) = &item.resource_field_ref {
                resource_value(self.pod, resource)?
            } else {
                return Err(VolumeError::Invalid(format!(
                    "downward API item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                )));
            };
            files.push(FileContent {
                path: item.path.clone(),
                data: value.into_bytes(),
                mode: item.mode.map_or(mode, |m| m as u32),
            });
        }
        Ok(files)
    }
}

fn project(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: u32,
    kind: &str,
) -> Result<Vec<FileContent>, VolumeError> {
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        return Ok(data
            .into_iter()
            .map(|(path, data)| FileContent { path, data, mode })
            .collect());
    };
    let mut files = Vec::new();
    for item in items {
        match data.get(&item.key) {
            Some(value) => files.push(FileContent {
                path: item.path.clone(),
                data: value.clone(),
                mode: item.mode.map_or(mode, |m| m as u32),
            }),
            None if optional => {}
            None => {
                return Err(VolumeError::MissingSource {
                    message: format!("{kind} references non-existent config key: {}", item.key),
                })
            }
        }
    }
    Ok(files)
}

/// A `fieldRef` of the downward API (`metadata.name`, `metadata.labels['app']`, ...).
pub(crate) fn field_value(pod: &Pod, path: &str) -> Result<String, VolumeError> {
    let map_entry =
        |map: &BTreeMap<String, String>, key: &str| map.get(key).cloned().unwrap_or_default();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => format_map(pod.labels()),
        "metadata.annotations" => format_map(pod.annotations()),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        "status.hostIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .unwrap_or_default(),
        _ => {
            if let Some(key) = subscript("metadata.labels['") {
                map_entry(pod.labels(), &key)
            } else if let Some(key) = subscript("metadata.annotations['") {
                map_entry(pod.annotations(), &key)
            } else {
                return Err(VolumeError::Invalid(format!(
                    "unsupported fieldPath: {path}"
                )));
            }
        }
    })
}

/// `key="value"` lines, sorted by key, as the kubelet writes labels and annotations.
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resource_value(
    pod: &Pod,
    reference: &capstan_api::k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, VolumeError> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    let container = match reference.container_name.as_deref() {
        Some(name) => containers.into_iter().find(|c| c.name == name),
        None => pod.spec.as_ref().and_then(|s| s.containers.first()),
    }
    .ok_or_else(|| {
        VolumeError::Invalid(format!(
            "resourceFieldRef names no container of the pod: {:?}",
            reference.container_name
        ))
    })?;
    let resources = container.resources.clone().unwrap_or_default();
    let (kind, name) = reference
        .resource
        .split_once('.')
        .unwrap_or(("limits", reference.resource.as_str()));
    let map = if kind == "requests" {
        resources.requests
    } else {
        resources.limits
    };
    Ok(map
        .and_then(|m| m.get(name).map(|q| q.0.clone()))
        .unwrap_or_else(|| "0".into()))
}
