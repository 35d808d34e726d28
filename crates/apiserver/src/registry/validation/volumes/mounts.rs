//! What a container does with the pod's volumes: `volumeMounts` (`ValidateVolumeMounts`) and
//! `volumeDevices` (`ValidateVolumeDevices`). Some errors are named without the item's index
//! (`volumeMounts.subPath`, `volumeMounts.mountPropagation`), as Kubernetes names them.

use std::collections::{BTreeMap, BTreeSet};

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{
    array_at,
    paths::{local_descending_path, no_backsteps},
    str_at, PodVolumes,
};

/// The mount propagation modes, sorted.
const PROPAGATIONS: [&str; 3] = ["Bidirectional", "HostToContainer", "None"];

/// The recursive read-only modes, sorted.
const RECURSIVE_READ_ONLY: [&str; 3] = ["Disabled", "Enabled", "IfPossible"];

/// `name` to path of the container's `key` list (`volumeMounts` with `mountPath`,
/// `volumeDevices` with `devicePath`); the last one wins, as in Kubernetes' maps.
fn paths_by_name<'a>(
    container: &'a Map<String, Value>,
    key: &str,
    path_key: &str,
) -> BTreeMap<&'a str, &'a str> {
    array_at(container, key)
        .iter()
        .filter_map(Value::as_object)
        .map(|item| (str_at(item, "name"), str_at(item, path_key)))
        .collect()
}

/// Checks the `volumeMounts` of the container at `path` against the pod's valid `volumes`.
/// Called by `pod_spec` for every container, init and ephemeral container.
pub(crate) fn validate_volume_mounts(
    container: &Map<String, Value>,
    volumes: &PodVolumes,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let devices = paths_by_name(container, "volumeDevices", "devicePath");
    let privileged = container
        .get("securityContext")
        .and_then(|context| context.get("privileged"))
        .and_then(Value::as_bool)
        == Some(true);
    let list_field = format!("{path}.volumeMounts");
    let mut mount_points = BTreeSet::new();
    for (i, mount) in array_at(container, "volumeMounts").iter().enumerate() {
        let Some(mount) = mount.as_object() else {
            continue;
        };
        let field = format!("{list_field}[{i}]");
        let name = str_at(mount, "name");
        let mount_path = str_at(mount, "mountPath");
        if name.is_empty() {
            causes.push(FieldError::required(format!("{field}.name"), ""));
        }
        if !volumes.contains_key(name) {
            causes.push(FieldError::not_found(format!("{field}.name"), name));
        }
        if mount_path.is_empty() {
            causes.push(FieldError::required(format!("{field}.mountPath"), ""));
        }
        if !mount_points.insert(mount_path) {
            causes.push(FieldError::invalid(
                format!("{field}.mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        if devices.contains_key(name) {
            causes.push(FieldError::invalid(
                format!("{field}.name"),
                name,
                "must not already exist in volumeDevices",
            ));
        }
        if devices.values().any(|device| *device == mount_path) {
            causes.push(FieldError::invalid(
                format!("{field}.mountPath"),
                mount_path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = str_at(mount, "subPath");
        let sub_path_expr = str_at(mount, "subPathExpr");
        if volumes.get(name) == Some(&"image") {
            for (key, value) in [("subPath", sub_path), ("subPathExpr", sub_path_expr)] {
                if !value.is_empty() {
                    causes.push(FieldError::invalid(
                        format!("{field}.{key}"),
                        value,
                        "not allowed in image volume sources",
                    ));
                }
            }
        }
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &format!("{list_field}.subPath"), causes);
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                causes.push(FieldError::invalid(
                    format!("{field}.subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(sub_path_expr, &format!("{list_field}.subPathExpr"), causes);
        }
        let propagation = mount.get("mountPropagation").and_then(Value::as_str);
        if let Some(propagation) = propagation {
            let field = format!("{list_field}.mountPropagation");
            if !PROPAGATIONS.contains(&propagation) {
                causes.push(FieldError::not_supported(&field, propagation, PROPAGATIONS));
            }
            if propagation == "Bidirectional" && !privileged {
                causes.push(FieldError::forbidden(
                    field,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(mode) = mount.get("recursiveReadOnly").and_then(Value::as_str) {
            let field = format!("{list_field}.recursiveReadOnly");
            match mode {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if mount.get("readOnly").and_then(Value::as_bool) != Some(true) {
                        causes.push(FieldError::forbidden(
                            &field,
                            "may only be specified when readOnly is true",
                        ));
                    }
                    if propagation.is_some_and(|p| p != "None") {
                        causes.push(FieldError::forbidden(
                            &field,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => causes.push(FieldError::not_supported(
                    &field,
                    other,
                    RECURSIVE_READ_ONLY,
                )),
            }
        }
    }
}

/// Checks the `volumeDevices` of the container at `path`: each names a claim volume
/// (`persistentVolumeClaim` or `ephemeral`) once, at a unique path without `..`, neither used
/// by a mount.
pub(crate) fn validate_volume_devices(
    container: &Map<String, Value>,
    volumes: &PodVolumes,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let mounts = paths_by_name(container, "volumeMounts", "mountPath");
    let mut names = BTreeSet::new();
    let mut device_paths = BTreeSet::new();
    for (i, device) in array_at(container, "volumeDevices").iter().enumerate() {
        let Some(device) = device.as_object() else {
            continue;
        };
        let field = format!("{path}.volumeDevices[{i}]");
        let name_field = format!("{field}.name");
        let path_field = format!("{field}.devicePath");
        let name = str_at(device, "name");
        let device_path = str_at(device, "devicePath");
        if name.is_empty() {
            causes.push(FieldError::required(&name_field, ""));
        }
        if names.contains(name) {
            causes.push(FieldError::invalid(&name_field, name, "must be unique"));
        }
        match volumes.get(name) {
            Some(&("persistentVolumeClaim" | "ephemeral")) => {}
            Some(_) => causes.push(FieldError::invalid(
                &name_field,
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block \
                 mode",
            )),
            None => causes.push(FieldError::not_found(&name_field, name)),
        }
        if device_path.is_empty() {
            causes.push(FieldError::required(&path_field, ""));
        }
        if device_paths.contains(device_path) {
            causes.push(FieldError::invalid(
                &path_field,
                device_path,
                "must be unique",
            ));
        }
        let mut backsteps = Vec::new();
        no_backsteps(device_path, "", &mut backsteps);
        if !device_path.is_empty() && !backsteps.is_empty() {
            causes.push(FieldError::invalid(
                &path_field,
                device_path,
                "can not contain backsteps ('..')",
            ));
        } else {
            device_paths.insert(device_path);
        }
        if mounts.contains_key(name) {
            causes.push(FieldError::invalid(
                &name_field,
                name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.values().any(|mount| *mount == device_path) {
            causes.push(FieldError::invalid(
                &path_field,
                device_path,
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !name.is_empty() {
            names.insert(name);
        }
    }
}
