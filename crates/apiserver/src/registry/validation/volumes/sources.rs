//! Each volume source's rules (`validateVolumeSource` and the per-source functions of
//! Kubernetes' pod validation), with its field names, including the few that differ from the
//! JSON names (`gcePersistentDisk` is checked as `persistentDisk`, a second `cephfs` is
//! refused as `cephFS` and a second `downwardAPI` as `downwarAPI`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use capstan_api::{
    quantity::{parse_quantity, QUANTITY_FORMAT_MESSAGE},
    FieldError,
};
use regex::Regex;
use serde_json::{Map, Value};

use super::{
    array_at, inclusive_range, object_at,
    paths::{file_mode, key_to_path, local_descending_path, local_non_reserved_path, no_backsteps},
    str_at,
};
use crate::registry::validation::{
    downward_api::{validate_field_ref, validate_resource_field_ref, VOLUME_FIELD_PATHS},
    names::{check_dns, is_label_body, NameRule, DNS1123_SUBDOMAIN_MESSAGE},
};

/// Where a source is checked: its own path, and the volume's path and name.
struct Source<'a> {
    spec: &'a Map<String, Value>,
    path: String,
    volume_path: &'a str,
    volume_name: &'a str,
}

type Check = fn(&Source<'_>, &mut Vec<FieldError>);

/// Every source a volume may have, in Kubernetes' order: its JSON key, the name a second source
/// is refused under, the name its own errors are reported under, and its rules.
const SOURCES: [(&str, &str, &str, Check); 30] = [
    ("emptyDir", "emptyDir", "emptyDir", empty_dir),
    ("hostPath", "hostPath", "hostPath", host_path),
    ("gitRepo", "gitRepo", "gitRepo", git_repo),
    (
        "gcePersistentDisk",
        "gcePersistentDisk",
        "persistentDisk",
        gce_disk,
    ),
    (
        "awsElasticBlockStore",
        "awsElasticBlockStore",
        "awsElasticBlockStore",
        aws_disk,
    ),
    ("secret", "secret", "secret", secret),
    ("nfs", "nfs", "nfs", nfs),
    ("iscsi", "iscsi", "iscsi", iscsi),
    ("glusterfs", "glusterfs", "glusterfs", glusterfs),
    ("flocker", "flocker", "flocker", flocker),
    (
        "persistentVolumeClaim",
        "persistentVolumeClaim",
        "persistentVolumeClaim",
        claim,
    ),
    ("rbd", "rbd", "rbd", rbd),
    ("cinder", "cinder", "cinder", cinder),
    ("cephfs", "cephFS", "cephfs", cephfs),
    ("quobyte", "quobyte", "quobyte", quobyte),
    ("downwardAPI", "downwarAPI", "downwardAPI", downward_api),
    ("fc", "fc", "fc", fibre_channel),
    ("flexVolume", "flexVolume", "flexVolume", flex_volume),
    ("configMap", "configMap", "configMap", config_map),
    ("azureFile", "azureFile", "azureFile", azure_file),
    ("vsphereVolume", "vsphereVolume", "vsphereVolume", vsphere),
    (
        "photonPersistentDisk",
        "photonPersistentDisk",
        "photonPersistentDisk",
        photon,
    ),
    (
        "portworxVolume",
        "portworxVolume",
        "portworxVolume",
        portworx,
    ),
    ("azureDisk", "azureDisk", "azureDisk", azure_disk),
    ("storageos", "storageos", "storageos", storage_os),
    ("projected", "projected", "projected", projected),
    ("scaleIO", "scaleIO", "scaleIO", scale_io),
    ("csi", "csi", "csi", csi),
    ("ephemeral", "ephemeral", "ephemeral", ephemeral),
    ("image", "image", "image", image),
];

/// Checks the source of the volume `volume` at `path` and returns its JSON key (the first one
/// when there are several, which is an error).
pub(super) fn validate_source(
    volume: &Map<String, Value>,
    path: &str,
    name: &str,
    causes: &mut Vec<FieldError>,
) -> Option<&'static str> {
    let mut found = None;
    for (key, refused_as, checked_as, check) in SOURCES {
        let Some(spec) = object_at(volume, key) else {
            continue;
        };
        if found.is_some() {
            causes.push(FieldError::forbidden(
                format!("{path}.{refused_as}"),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found = Some(key);
        let source = Source {
            spec,
            path: format!("{path}.{checked_as}"),
            volume_path: path,
            volume_name: name,
        };
        check(&source, causes);
    }
    if found.is_none() {
        causes.push(FieldError::required(path, "must specify a volume type"));
    }
    found
}

impl Source<'_> {
    fn str(&self, key: &str) -> &str {
        str_at(self.spec, key)
    }

    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Pushes `Required` for `key` when it is empty; whether it was.
    fn require(&self, key: &str, causes: &mut Vec<FieldError>) -> bool {
        let missing = self.str(key).is_empty();
        if missing {
            causes.push(FieldError::required(self.field(key), ""));
        }
        missing
    }
}

fn vsphere(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("volumePath", causes);
}

fn photon(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("pdID", causes);
}

fn portworx(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("volumeID", causes);
}

fn empty_dir(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    let text = match source.spec.get("sizeLimit") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return,
    };
    let field = source.field("sizeLimit");
    match parse_quantity(&text) {
        Err(_) => causes.push(FieldError::invalid(
            field,
            text.as_str(),
            QUANTITY_FORMAT_MESSAGE,
        )),
        Ok(quantity) if quantity.is_negative() => causes.push(FieldError::forbidden(
            field,
            "SizeLimit field must be a valid resource quantity",
        )),
        Ok(_) => {}
    }
}

/// The hostPath types, sorted as Kubernetes lists them (the empty one first).
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

fn host_path(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    if source.require("path", causes) {
        return;
    }
    no_backsteps(source.str("path"), &source.field("path"), causes);
    if let Some(kind) = source.spec.get("type").and_then(Value::as_str) {
        if !HOST_PATH_TYPES.contains(&kind) {
            causes.push(FieldError::not_supported(
                source.field("type"),
                kind,
                HOST_PATH_TYPES,
            ));
        }
    }
}

fn git_repo(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("repository", causes);
    local_descending_path(source.str("directory"), &source.field("directory"), causes);
}

fn gce_disk(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    disk_with_partition(source, "pdName", causes);
}

fn aws_disk(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    disk_with_partition(source, "volumeID", causes);
}

fn disk_with_partition(source: &Source<'_>, id: &str, causes: &mut Vec<FieldError>) {
    source.require(id, causes);
    if let Some(partition) = source.spec.get("partition").and_then(Value::as_i64) {
        if !(0..=255).contains(&partition) {
            causes.push(FieldError::invalid(
                source.field("partition"),
                partition,
                inclusive_range(1, 255),
            ));
        }
    }
}

fn items(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    for (i, item) in array_at(source.spec, "items").iter().enumerate() {
        let empty = Map::new();
        let item = item.as_object().unwrap_or(&empty);
        key_to_path(item, &format!("{}.items[{i}]", source.path), causes);
    }
}

fn secret(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("secretName", causes);
    file_mode(source.spec, "defaultMode", &source.path, causes);
    items(source, causes);
}

fn config_map(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("name", causes);
    file_mode(source.spec, "defaultMode", &source.path, causes);
    items(source, causes);
}

fn nfs(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("server", causes);
    source.require("path", causes);
    let path = source.str("path");
    if !path.starts_with('/') {
        causes.push(FieldError::invalid(
            source.field("path"),
            path,
            "must be an absolute path",
        ));
    }
}

static IQN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"iqn\.[0-9]{4}-[0-9]{2}\.([[:alnum:].-]+)(:[^,;*&$|\t\n\x0C\r ]+)$").unwrap()
});
static EUI: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^eui.[[:alnum:]]{16}$").unwrap());
static NAA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^naa.[[:alnum:]]{32}$").unwrap());

/// Why an iSCSI qualified name is malformed, if it is.
fn iscsi_name_problem(name: &str) -> Option<&'static str> {
    let matches = if name.starts_with("iqn") {
        IQN.is_match(name)
    } else if name.starts_with("eui") {
        EUI.is_match(name)
    } else if name.starts_with("naa") {
        NAA.is_match(name)
    } else {
        return Some("must be valid format starting with iqn, eui, or naa");
    };
    (!matches).then_some("must be valid format")
}

fn iscsi(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("targetPortal", causes);
    if !source.require("iqn", causes) {
        if let Some(problem) = iscsi_name_problem(source.str("iqn")) {
            causes.push(FieldError::invalid(
                source.field("iqn"),
                source.str("iqn"),
                problem,
            ));
        }
    }
    if let Some(lun) = source.spec.get("lun").and_then(Value::as_i64) {
        if !(0..=255).contains(&lun) {
            causes.push(FieldError::invalid(
                source.field("lun"),
                lun,
                inclusive_range(0, 255),
            ));
        }
    }
    let chap = |key: &str| source.spec.get(key).and_then(Value::as_bool) == Some(true);
    if (chap("chapAuthDiscovery") || chap("chapAuthSession"))
        && object_at(source.spec, "secretRef").is_none()
    {
        causes.push(FieldError::required(source.field("secretRef"), ""));
    }
    if let Some(initiator) = source.spec.get("initiatorName").and_then(Value::as_str) {
        if let Some(problem) = iscsi_name_problem(initiator) {
            causes.push(FieldError::invalid(
                source.field("initiatorname"),
                initiator,
                problem,
            ));
        }
        if source.volume_name.len() + 1 + source.str("targetPortal").len() > 64 {
            causes.push(FieldError::invalid(
                format!("{}.name", source.volume_path),
                source.volume_name,
                "Total length of <volume name>:<iscsi.targetPortal> must be under 64 characters \
                 if iscsi.initiatorName is specified.",
            ));
        }
    }
}

fn glusterfs(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("endpoints", causes);
    source.require("path", causes);
}

fn flocker(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    let name = source.str("datasetName");
    let uuid = source.str("datasetUUID");
    if name.is_empty() && uuid.is_empty() {
        causes.push(FieldError::required(
            &source.path,
            "one of datasetName and datasetUUID is required",
        ));
    }
    if !name.is_empty() && !uuid.is_empty() {
        causes.push(FieldError::invalid(
            &source.path,
            "resource",
            "datasetName and datasetUUID can not be specified simultaneously",
        ));
    }
    if name.contains('/') {
        causes.push(FieldError::invalid(
            source.field("datasetName"),
            name,
            "must not contain '/'",
        ));
    }
}

fn claim(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("claimName", causes);
}

fn rbd(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    if array_at(source.spec, "monitors").is_empty() {
        causes.push(FieldError::required(source.field("monitors"), ""));
    }
    source.require("image", causes);
}

fn secret_ref_name(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    if let Some(secret_ref) = object_at(source.spec, "secretRef") {
        if str_at(secret_ref, "name").is_empty() {
            causes.push(FieldError::required(source.field("secretRef.name"), ""));
        }
    }
}

fn cinder(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("volumeID", causes);
    secret_ref_name(source, causes);
}

fn cephfs(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    if array_at(source.spec, "monitors").is_empty() {
        causes.push(FieldError::required(source.field("monitors"), ""));
    }
}

/// Go's `net.SplitHostPort` succeeding: `host:port` or `[host]:port`.
fn is_host_port(pair: &str) -> bool {
    if let Some(rest) = pair.strip_prefix('[') {
        return rest.split_once(']').is_some_and(|(_, after)| {
            after
                .strip_prefix(':')
                .is_some_and(|port| !port.contains([':', '[', ']']))
        });
    }
    pair.rsplit_once(':')
        .is_some_and(|(host, port)| !host.contains([':', '[', ']']) && !port.contains(['[', ']']))
}

fn quobyte(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    const REGISTRY: &str = "must be a host:port pair or multiple pairs separated by commas";
    let registry = source.str("registry");
    if registry.is_empty() {
        causes.push(FieldError::required(source.field("registry"), REGISTRY));
    } else if source.str("tenant").len() >= 65 {
        causes.push(FieldError::required(
            source.field("tenant"),
            "must be a UUID and may not exceed a length of 64 characters",
        ));
    } else {
        for pair in registry.split(',') {
            if !is_host_port(pair) {
                causes.push(FieldError::invalid(
                    source.field("registry"),
                    registry,
                    REGISTRY,
                ));
            }
        }
    }
    source.require("volume", causes);
}

/// Checks one downward API file (a `downwardAPI` volume's or projected source's item); its
/// errors are named under `path`, the source's path, as Kubernetes does.
fn downward_file(item: &Map<String, Value>, path: &str, causes: &mut Vec<FieldError>) {
    let target = str_at(item, "path");
    let target_field = format!("{path}.path");
    if target.is_empty() {
        causes.push(FieldError::required(&target_field, ""));
    }
    local_non_reserved_path(target, &target_field, causes);
    let resource_ref = object_at(item, "resourceFieldRef");
    if let Some(field_ref) = object_at(item, "fieldRef") {
        validate_field_ref(
            field_ref,
            &VOLUME_FIELD_PATHS,
            &format!("{path}.fieldRef"),
            causes,
        );
        if resource_ref.is_some() {
            causes.push(FieldError::invalid(
                path,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    } else if let Some(resource_ref) = resource_ref {
        validate_resource_field_ref(
            resource_ref,
            true,
            &format!("{path}.resourceFieldRef"),
            causes,
        );
    } else {
        causes.push(FieldError::required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        ));
    }
    file_mode(item, "mode", path, causes);
}

fn downward_api(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    file_mode(source.spec, "defaultMode", &source.path, causes);
    for item in array_at(source.spec, "items") {
        if let Some(item) = item.as_object() {
            downward_file(item, &source.path, causes);
        }
    }
}

fn fibre_channel(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    let targets = array_at(source.spec, "targetWWNs");
    let wwids = array_at(source.spec, "wwids");
    let targets_field = source.field("targetWWNs");
    if targets.is_empty() && wwids.is_empty() {
        causes.push(FieldError::required(
            &targets_field,
            "must specify either targetWWNs or wwids, but not both",
        ));
    }
    if !targets.is_empty() && !wwids.is_empty() {
        causes.push(FieldError::invalid(
            &targets_field,
            Value::Array(targets.to_vec()),
            "targetWWNs and wwids can not be specified simultaneously",
        ));
    }
    if !targets.is_empty() {
        match source.spec.get("lun").and_then(Value::as_i64) {
            None => causes.push(FieldError::required(
                source.field("lun"),
                "lun is required if targetWWNs is specified",
            )),
            Some(lun) if !(0..=255).contains(&lun) => causes.push(FieldError::invalid(
                source.field("lun"),
                lun,
                inclusive_range(0, 255),
            )),
            Some(_) => {}
        }
    }
}

fn flex_volume(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("driver", causes);
    for key in object_at(source.spec, "options")
        .into_iter()
        .flat_map(Map::keys)
    {
        let namespace = key.split_once('/').map_or(key.as_str(), |(ns, _)| ns);
        let normalized = format!(".{}", namespace.to_lowercase());
        if normalized.ends_with(".kubernetes.io") || normalized.ends_with(".k8s.io") {
            causes.push(FieldError::invalid(
                format!("{}.options[{key}]", source.path),
                key.as_str(),
                "kubernetes.io and k8s.io namespaces are reserved",
            ));
        }
    }
}

fn azure_file(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("secretName", causes);
    source.require("shareName", causes);
}

fn azure_disk(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    const CACHING: [&str; 3] = ["None", "ReadOnly", "ReadWrite"];
    const KINDS: [&str; 3] = ["Dedicated", "Managed", "Shared"];
    source.require("diskName", causes);
    source.require("diskURI", causes);
    if let Some(caching) = source.spec.get("cachingMode").and_then(Value::as_str) {
        if !CACHING.contains(&caching) {
            causes.push(FieldError::not_supported(
                source.field("cachingMode"),
                caching,
                CACHING,
            ));
        }
    }
    let uri = source.str("diskURI");
    if let Some(kind) = source.spec.get("kind").and_then(Value::as_str) {
        if !KINDS.contains(&kind) {
            causes.push(FieldError::not_supported(source.field("kind"), kind, KINDS));
        }
        if kind == "Managed" && !uri.starts_with("/subscriptions/") {
            causes.push(FieldError::not_supported(
                source.field("diskURI"),
                uri,
                ["/subscriptions/{sub-id}/resourcegroups/{group-name}/providers/microsoft.compute/disks/{disk-id}"],
            ));
        }
        if kind != "Managed" && !uri.starts_with("https://") {
            causes.push(FieldError::not_supported(
                source.field("diskURI"),
                uri,
                ["https://{account-name}.blob.core.windows.net/{container-name}/{disk-name}.vhd"],
            ));
        }
    }
}

fn storage_os(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    if !source.require("volumeName", causes) {
        let field = source.field("volumeName");
        check_dns(
            &field,
            source.str("volumeName"),
            NameRule::Dns1123Label,
            causes,
        );
    }
    let namespace = source.str("volumeNamespace");
    if !namespace.is_empty() {
        let field = source.field("volumeNamespace");
        check_dns(&field, namespace, NameRule::Dns1123Label, causes);
    }
    secret_ref_name(source, causes);
}

fn scale_io(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    source.require("gateway", causes);
    source.require("system", causes);
    source.require("volumeName", causes);
}

/// Whether `name` is a DNS-1123 subdomain, length aside.
fn is_subdomain_body(name: &str) -> bool {
    name.split('.').all(is_label_body)
}

fn csi(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    let driver = source.str("driver");
    let field = source.field("driver");
    if driver.is_empty() {
        causes.push(FieldError::required(&field, ""));
    }
    if driver.len() > 63 {
        causes.push(FieldError::too_long(&field, 63));
    }
    let lower = driver.to_lowercase();
    if lower.len() > 253 {
        causes.push(FieldError::invalid(
            &field,
            driver,
            "must be no more than 253 characters",
        ));
    }
    if !is_subdomain_body(&lower) {
        causes.push(FieldError::invalid(
            &field,
            driver,
            DNS1123_SUBDOMAIN_MESSAGE,
        ));
    }
    if let Some(secret_ref) = object_at(source.spec, "nodePublishSecretRef") {
        let name = str_at(secret_ref, "name");
        if name.is_empty() {
            causes.push(FieldError::required(
                source.field("nodePublishSecretRef.name"),
                "",
            ));
        } else {
            check_dns(
                &source.field("name"),
                name,
                NameRule::Dns1123Subdomain,
                causes,
            );
        }
    }
}

/// The access modes a claim may ask for, sorted.
const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn ephemeral(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    let template_field = source.field("volumeClaimTemplate");
    let Some(template) = object_at(source.spec, "volumeClaimTemplate") else {
        causes.push(FieldError::required(template_field, ""));
        return;
    };
    for (key, value) in object_at(template, "metadata").into_iter().flatten() {
        if !matches!(key.as_str(), "labels" | "annotations") && !value.is_null() {
            causes.push(FieldError::forbidden(
                format!("{template_field}.metadata.{key}"),
                "cannot be set",
            ));
        }
    }
    let empty = Map::new();
    let spec = object_at(template, "spec").unwrap_or(&empty);
    let spec_field = format!("{template_field}.spec");
    let modes = array_at(spec, "accessModes");
    let modes_field = format!("{spec_field}.accessModes");
    if modes.is_empty() {
        causes.push(FieldError::required(
            &modes_field,
            "at least 1 access mode is required",
        ));
    }
    let (mut once_pod, mut others) = (false, false);
    for mode in modes.iter().filter_map(Value::as_str) {
        if !ACCESS_MODES.contains(&mode) {
            causes.push(FieldError::not_supported(&modes_field, mode, ACCESS_MODES));
        } else if mode == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            others = true;
        }
    }
    if once_pod && others {
        causes.push(FieldError::forbidden(
            &modes_field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    let storage_field = format!("{spec_field}.resources[storage]");
    let storage = spec
        .get("resources")
        .and_then(|r| r.pointer("/requests/storage"));
    let text = match storage {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match text {
        None => causes.push(FieldError::required(storage_field, "")),
        Some(text) => {
            if parse_quantity(&text).is_ok_and(|q| q.is_negative() || q.is_zero()) {
                causes.push(FieldError::invalid(
                    storage_field,
                    text.as_str(),
                    "must be greater than zero",
                ));
            }
        }
    }
}

fn image(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    const PULL: [&str; 3] = ["Always", "IfNotPresent", "Never"];
    if let Some(policy) = source.spec.get("pullPolicy").and_then(Value::as_str) {
        if !PULL.contains(&policy) {
            causes.push(FieldError::not_supported(
                source.field("pullPolicy"),
                policy,
                PULL,
            ));
        }
    }
}

/// Records a projected file's `path`, pushing `conflicting duplicate paths` (naming `value`)
/// when an earlier source of the volume wrote it.
fn claim_path(
    paths: &mut BTreeSet<String>,
    path: &str,
    value: &str,
    projected: &str,
    causes: &mut Vec<FieldError>,
) {
    if !paths.insert(path.to_string()) {
        causes.push(FieldError::invalid(
            projected,
            value,
            "conflicting duplicate paths",
        ));
    }
}

fn projected(source: &Source<'_>, causes: &mut Vec<FieldError>) {
    file_mode(source.spec, "defaultMode", &source.path, causes);
    let mut paths = BTreeSet::new();
    for (i, item) in array_at(source.spec, "sources").iter().enumerate() {
        let Some(item) = item.as_object() else {
            continue;
        };
        let source_field = format!("{}.sources[{i}]", source.path);
        let mut count = 0;
        for kind in ["secret", "configMap"] {
            let Some(files) = object_at(item, kind) else {
                continue;
            };
            count += 1;
            let field = format!("{source_field}.{kind}");
            let name = str_at(files, "name");
            if name.is_empty() {
                causes.push(FieldError::required(format!("{field}.name"), ""));
            }
            for (j, file) in array_at(files, "items").iter().enumerate() {
                let empty = Map::new();
                let file = file.as_object().unwrap_or(&empty);
                key_to_path(file, &format!("{field}.items[{j}]"), causes);
                let target = str_at(file, "path");
                if !target.is_empty() {
                    claim_path(&mut paths, target, name, &source.path, causes);
                }
            }
        }
        if let Some(downward) = object_at(item, "downwardAPI") {
            count += 1;
            let field = format!("{source_field}.downwardAPI");
            for file in array_at(downward, "items")
                .iter()
                .filter_map(Value::as_object)
            {
                downward_file(file, &field, causes);
                let target = str_at(file, "path");
                if !target.is_empty() {
                    claim_path(&mut paths, target, target, &source.path, causes);
                }
            }
        }
        if let Some(token) = object_at(item, "serviceAccountToken") {
            count += 1;
            let field = format!("{source_field}.serviceAccountToken.expirationSeconds");
            let seconds = token
                .get("expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            if seconds < 600 {
                causes.push(FieldError::invalid(
                    &field,
                    seconds,
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if seconds > 1 << 32 {
                causes.push(FieldError::invalid(
                    &field,
                    seconds,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            let target = str_at(token, "path");
            if target.is_empty() {
                causes.push(FieldError::required(source.field("path"), ""));
            } else {
                local_non_reserved_path(target, &source.field("path"), causes);
            }
        }
        if let Some(bundle) = object_at(item, "clusterTrustBundle") {
            count += 1;
            let field = format!("{source_field}.clusterTrustBundle");
            let name = bundle.get("name").and_then(Value::as_str);
            let signer = bundle.get("signerName").and_then(Value::as_str);
            match (name, signer) {
                (Some(_), Some(_)) => causes.push(FieldError::invalid(
                    &field,
                    Value::Object(bundle.clone()),
                    "only one of name and signerName may be used",
                )),
                (Some(""), None) => causes.push(FieldError::required(
                    format!("{field}.name"),
                    "must be a valid object name",
                )),
                (None, Some("")) => causes.push(FieldError::required(
                    format!("{field}.signerName"),
                    "must be a valid signer name",
                )),
                (None, None) => causes.push(FieldError::required(
                    &field,
                    "either name or signerName must be specified",
                )),
                _ => {}
            }
            let target = str_at(bundle, "path");
            let target_field = format!("{field}.path");
            if target.is_empty() {
                causes.push(FieldError::required(&target_field, ""));
            }
            local_non_reserved_path(target, &target_field, causes);
            claim_path(&mut paths, target, target, &source.path, causes);
        }
        if count > 1 {
            causes.push(FieldError::forbidden(
                source_field,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}
