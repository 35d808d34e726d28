//! Pod volumes and what containers do with them, as Kubernetes' `ValidateVolumes`,
//! `ValidateVolumeMounts` and `ValidateVolumeDevices` check them, with its messages and field
//! paths:
//!
//! - every volume has a DNS-1123 label name, unique in the pod (`Duplicate value`), and exactly
//!   one source (`must specify a volume type`, `may not specify more than 1 volume type`);
//! - each source's own rules ([`sources`]): required names and paths, `defaultMode`/`mode`
//!   between 0 and 0777, `items` paths relative and without `..`, hostPath types, downward API
//!   field paths, projected sources, ...;
//! - mounts ([`mounts`]) name a valid volume (`Not found`), have a unique `mountPath`, a
//!   relative `subPath` without `..` and a known `mountPropagation`; devices name a claim
//!   volume.
//!
//! A volume with any error is left out of the pod's volumes, as Kubernetes does, so mounts of
//! it are reported `Not found` as well.

mod mounts;
mod paths;
mod sources;

use std::collections::BTreeMap;

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::names::{check_dns, NameRule};

pub(crate) use mounts::{validate_volume_devices, validate_volume_mounts};
pub(crate) use paths::local_descending_path;

/// The valid volumes of a pod spec: name to the JSON key of its source (`emptyDir`,
/// `persistentVolumeClaim`, ...). What container mounts and devices are checked against.
pub(crate) type PodVolumes = BTreeMap<String, &'static str>;

/// Checks `spec.volumes` (at `path`, e.g. `spec` or `spec.template.spec`) and returns the valid
/// ones. Called once per pod spec by `pod_spec`; pure.
pub(crate) fn validate_volumes(
    spec: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) -> PodVolumes {
    let mut volumes = PodVolumes::new();
    let Some(list) = spec.get("volumes").and_then(Value::as_array) else {
        return volumes;
    };
    let mut names = std::collections::BTreeSet::new();
    for (i, volume) in list.iter().enumerate() {
        let field = format!("{path}.volumes[{i}]");
        let empty = Map::new();
        let volume = volume.as_object().unwrap_or(&empty);
        let name = str_at(volume, "name");
        let mut errors = Vec::new();
        let source = sources::validate_source(volume, &field, name, &mut errors);
        let name_field = format!("{field}.name");
        if name.is_empty() {
            errors.push(FieldError::required(&name_field, ""));
        } else {
            check_dns(&name_field, name, NameRule::Dns1123Label, &mut errors);
        }
        if names.contains(name) {
            errors.push(FieldError::duplicate(&name_field, name));
        }
        if errors.is_empty() {
            names.insert(name.to_string());
            volumes.insert(name.to_string(), source.unwrap_or(""));
        } else {
            causes.append(&mut errors);
        }
    }
    volumes
}

/// The valid volumes of `spec`, without reporting anything: what the `ephemeralcontainers`
/// subresource checks its containers' mounts against.
pub(crate) fn valid_volumes(spec: &Map<String, Value>) -> PodVolumes {
    validate_volumes(spec, "spec", &mut Vec::new())
}

/// The string at `key`, empty when missing or not a string (Go's zero value).
pub(super) fn str_at<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object at `key`, if it is one (a set pointer field in Go).
pub(super) fn object_at<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Option<&'a Map<String, Value>> {
    map.get(key).and_then(Value::as_object)
}

/// The array at `key`, empty when missing.
pub(super) fn array_at<'a>(map: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    map.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Kubernetes' `InclusiveRangeError`.
pub(super) fn inclusive_range(low: i64, high: i64) -> String {
    format!("must be between {low} and {high}, inclusive")
}

#[cfg(test)]
mod tests;
