//! Unit tests of volume, mount and device validation, one rule each, with Kubernetes' texts.

use serde_json::{json, Value};

use super::*;

/// Every problem of `volumes` as `field: message`.
fn volume_problems(volumes: Value) -> Vec<String> {
    let spec = json!({ "volumes": volumes });
    let mut causes = Vec::new();
    validate_volumes(spec.as_object().unwrap(), "spec", &mut causes);
    causes.iter().map(ToString::to_string).collect()
}

/// Every problem of one container's mounts and devices, against `volumes`.
fn container_problems(volumes: Value, container: Value) -> Vec<String> {
    let spec = json!({ "volumes": volumes });
    let volumes = valid_volumes(spec.as_object().unwrap());
    let mut causes = Vec::new();
    let container = container.as_object().unwrap();
    let path = "spec.containers[0]";
    validate_volume_mounts(container, &volumes, path, &mut causes);
    validate_volume_devices(container, &volumes, path, &mut causes);
    causes.iter().map(ToString::to_string).collect()
}

#[test]
fn valid_volumes_of_every_common_source_pass() {
    let volumes = json!([
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "config", "configMap": {"name": "settings", "defaultMode": 420,
                                         "items": [{"key": "a", "path": "dir/a", "mode": 256}]}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu"}}
        ]}},
        {"name": "all", "projected": {"sources": [
            {"configMap": {"name": "a", "items": [{"key": "k", "path": "x"}]}},
            {"secret": {"name": "b", "items": [{"key": "k", "path": "y"}]}},
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
        ]}},
        {"name": "nfs", "nfs": {"server": "nfs.local", "path": "/exports"}},
        {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
    ]);
    assert_eq!(volume_problems(volumes), Vec::<String>::new());
}

#[test]
fn a_volume_without_a_source_must_specify_one() {
    assert_eq!(
        volume_problems(json!([{"name": "v"}])),
        ["spec.volumes[0]: Required value: must specify a volume type"]
    );
}

#[test]
fn a_volume_may_not_have_two_sources() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}])),
        ["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"]
    );
    assert_eq!(
        volume_problems(json!([{"name": "v", "secret": {"secretName": "s"},
                                "downwardAPI": {}, "cephfs": {"monitors": ["m"]}}])),
        [
            "spec.volumes[0].cephFS: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[0].downwarAPI: Forbidden: may not specify more than 1 volume type",
        ]
    );
}

#[test]
fn volume_names_are_unique_dns_labels() {
    let found = volume_problems(json!([
        {"name": "a", "emptyDir": {}},
        {"name": "a", "emptyDir": {}},
        {"name": "Bad_Name", "emptyDir": {}},
        {"emptyDir": {}},
    ]));
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0], r#"spec.volumes[1].name: Duplicate value: "a""#);
    assert!(found[1].starts_with(
        r#"spec.volumes[2].name: Invalid value: "Bad_Name": a lowercase RFC 1123 label"#
    ));
    assert_eq!(found[2], "spec.volumes[3].name: Required value");
}

#[test]
fn config_map_and_secret_items_need_relative_paths_and_valid_modes() {
    let found = volume_problems(json!([
        {"name": "c", "configMap": {"name": "", "defaultMode": 1024,
                                    "items": [{"key": "", "path": "/etc/x"},
                                              {"key": "k", "path": "a/../b", "mode": -1}]}},
        {"name": "s", "secret": {"items": [{"key": "k", "path": "..x"}]}},
    ]));
    assert_eq!(
        found,
        [
            "spec.volumes[0].configMap.name: Required value",
            "spec.volumes[0].configMap.defaultMode: Invalid value: 1024: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[0].configMap.items[0].key: Required value",
            r#"spec.volumes[0].configMap.items[0].path: Invalid value: "/etc/x": must be a relative path"#,
            r#"spec.volumes[0].configMap.items[1].path: Invalid value: "a/../b": must not contain '..'"#,
            "spec.volumes[0].configMap.items[1].mode: Invalid value: -1: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[1].secret.secretName: Required value",
            r#"spec.volumes[1].secret.items[0].path: Invalid value: "..x": must not start with '..'"#,
        ]
    );
}

#[test]
fn empty_dir_size_limits_may_not_be_negative() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "emptyDir": {"sizeLimit": "-1Gi"}}])),
        ["spec.volumes[0].emptyDir.sizeLimit: Forbidden: SizeLimit field must be a valid resource quantity"]
    );
}

#[test]
fn host_paths_need_a_path_and_a_known_type() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "hostPath": {"type": "Directory"}}])),
        ["spec.volumes[0].hostPath.path: Required value"]
    );
    assert_eq!(
        volume_problems(json!([{"name": "v", "hostPath": {"path": "/a/../b", "type": "Dir"}}])),
        [
            r#"spec.volumes[0].hostPath.path: Invalid value: "/a/../b": must not contain '..'"#,
            r#"spec.volumes[0].hostPath.type: Unsupported value: "Dir": supported values: "", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket""#,
        ]
    );
}

#[test]
fn claims_need_a_claim_name() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "persistentVolumeClaim": {"readOnly": true}}])),
        ["spec.volumes[0].persistentVolumeClaim.claimName: Required value"]
    );
}

#[test]
fn downward_api_files_are_named_under_the_source() {
    let found = volume_problems(json!([{"name": "v", "downwardAPI": {"items": [
        {"path": "a", "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
        {"path": "b"},
    ]}}]));
    assert_eq!(
        found,
        [
            r#"spec.volumes[0].downwardAPI.fieldRef.fieldPath: Unsupported value: "spec.nodeName": supported values: "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid""#,
            "spec.volumes[0].downwardAPI: Required value: one of fieldRef and resourceFieldRef is required",
        ]
    );
}

#[test]
fn projected_sources_are_one_kind_each_with_distinct_paths() {
    let found = volume_problems(json!([{"name": "v", "projected": {"sources": [
        {"configMap": {"name": "a", "items": [{"key": "k", "path": "same"}]},
         "secret": {"name": "b", "items": [{"key": "k", "path": "same"}]}},
        {"serviceAccountToken": {"path": "t", "expirationSeconds": 60}},
    ]}}]));
    assert_eq!(
        found,
        [
            r#"spec.volumes[0].projected: Invalid value: "a": conflicting duplicate paths"#,
            "spec.volumes[0].projected.sources[0]: Forbidden: may not specify more than 1 volume type per source",
            "spec.volumes[0].projected.sources[1].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
        ]
    );
}

#[test]
fn nfs_paths_are_absolute() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "nfs": {"server": "s", "path": "exports"}}])),
        [r#"spec.volumes[0].nfs.path: Invalid value: "exports": must be an absolute path"#]
    );
}

#[test]
fn ephemeral_volumes_need_a_claim_template() {
    assert_eq!(
        volume_problems(json!([{"name": "v", "ephemeral": {}}])),
        ["spec.volumes[0].ephemeral.volumeClaimTemplate: Required value"]
    );
    assert_eq!(
        volume_problems(json!([{"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}])),
        [
            "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.accessModes: Required value: at least 1 access mode is required",
            "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.resources[storage]: Required value",
        ]
    );
}

#[test]
fn iscsi_names_follow_their_format() {
    let found = volume_problems(json!([{"name": "v", "iscsi": {
        "targetPortal": "10.0.0.1:3260", "iqn": "foo", "lun": 300}}]));
    assert_eq!(
        found,
        [
            r#"spec.volumes[0].iscsi.iqn: Invalid value: "foo": must be valid format starting with iqn, eui, or naa"#,
            "spec.volumes[0].iscsi.lun: Invalid value: 300: must be between 0 and 255, inclusive",
        ]
    );
    let ok = json!([{"name": "v", "iscsi": {"targetPortal": "10.0.0.1:3260",
                                            "iqn": "iqn.2001-04.com.example:storage.disk1"}}]);
    assert!(volume_problems(ok).is_empty());
}

#[test]
fn csi_volumes_need_a_driver_name() {
    let found = volume_problems(json!([{"name": "v", "csi": {"driver": ""}}]));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], "spec.volumes[0].csi.driver: Required value");
}

#[test]
fn a_mount_of_an_undefined_volume_is_not_found() {
    assert_eq!(
        container_problems(
            json!([{"name": "data", "emptyDir": {}}]),
            json!({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}),
        ),
        [r#"spec.containers[0].volumeMounts[0].name: Not found: "x""#]
    );
}

#[test]
fn a_mount_of_an_invalid_volume_is_not_found_either() {
    assert_eq!(
        container_problems(
            json!([{"name": "data"}]),
            json!({"volumeMounts": [{"name": "data", "mountPath": "/x"}]}),
        ),
        [r#"spec.containers[0].volumeMounts[0].name: Not found: "data""#]
    );
}

#[test]
fn mount_paths_are_required_and_unique() {
    assert_eq!(
        container_problems(
            json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]),
            json!({"volumeMounts": [{"name": "a", "mountPath": "/data"},
                                    {"name": "b", "mountPath": "/data"},
                                    {"name": "", "mountPath": ""}]}),
        ),
        [
            r#"spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/data": must be unique"#,
            "spec.containers[0].volumeMounts[2].name: Required value",
            r#"spec.containers[0].volumeMounts[2].name: Not found: """#,
            "spec.containers[0].volumeMounts[2].mountPath: Required value",
        ]
    );
}

#[test]
fn sub_paths_are_relative_without_backsteps() {
    assert_eq!(
        container_problems(
            json!([{"name": "a", "emptyDir": {}}]),
            json!({"volumeMounts": [{"name": "a", "mountPath": "/d", "subPath": "../etc"},
                                    {"name": "a", "mountPath": "/e", "subPath": "x",
                                     "subPathExpr": "$(POD)"}]}),
        ),
        [
            r#"spec.containers[0].volumeMounts.subPath: Invalid value: "../etc": must not contain '..'"#,
            r#"spec.containers[0].volumeMounts[1].subPathExpr: Invalid value: "$(POD)": subPathExpr and subPath are mutually exclusive"#,
        ]
    );
}

#[test]
fn mount_propagation_is_known_and_bidirectional_only_when_privileged() {
    let volumes = json!([{"name": "a", "emptyDir": {}}]);
    assert_eq!(
        container_problems(
            volumes.clone(),
            json!({"volumeMounts": [{"name": "a", "mountPath": "/d", "mountPropagation": "Sideways"}]}),
        ),
        [
            r#"spec.containers[0].volumeMounts.mountPropagation: Unsupported value: "Sideways": supported values: "Bidirectional", "HostToContainer", "None""#
        ]
    );
    assert_eq!(
        container_problems(
            volumes.clone(),
            json!({"volumeMounts": [{"name": "a", "mountPath": "/d", "mountPropagation": "Bidirectional"}]}),
        ),
        ["spec.containers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"]
    );
    assert!(container_problems(
        volumes,
        json!({"securityContext": {"privileged": true},
               "volumeMounts": [{"name": "a", "mountPath": "/d", "mountPropagation": "Bidirectional"}]}),
    )
    .is_empty());
}

#[test]
fn devices_name_claim_volumes_not_used_by_mounts() {
    let volumes = json!([{"name": "a", "emptyDir": {}},
                         {"name": "c", "persistentVolumeClaim": {"claimName": "c"}}]);
    assert_eq!(
        container_problems(
            volumes,
            json!({"volumeMounts": [{"name": "c", "mountPath": "/dev/c"}],
                   "volumeDevices": [{"name": "a", "devicePath": "/dev/a"},
                                     {"name": "c", "devicePath": "/dev/c"}]}),
        ),
        [
            r#"spec.containers[0].volumeMounts[0].name: Invalid value: "c": must not already exist in volumeDevices"#,
            r#"spec.containers[0].volumeMounts[0].mountPath: Invalid value: "/dev/c": must not already exist as a path in volumeDevices"#,
            r#"spec.containers[0].volumeDevices[0].name: Invalid value: "a": can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode"#,
            r#"spec.containers[0].volumeDevices[1].name: Invalid value: "c": must not already exist in volumeMounts"#,
            r#"spec.containers[0].volumeDevices[1].devicePath: Invalid value: "/dev/c": must not already exist as a path in volumeMounts"#,
        ]
    );
}

/// Every field with a problem when `object` of `group`/`kind` is validated as a whole.
fn object_problems(group: &str, kind: &str, object: Value) -> Vec<String> {
    let resource = capstan_api::ResourceInfo::builtin(group, kind).unwrap();
    crate::registry::validation::validate(&resource, &object, None)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn job_templates_inside_cron_jobs_get_the_same_volume_rules() {
    let cron_job = json!({
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": "busybox",
                            "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
        }}}}},
    });
    assert_eq!(
        object_problems("batch", "CronJob", cron_job),
        [
            r#"spec.jobTemplate.spec.template.spec.containers[0].volumeMounts[0].name: Not found: "out""#
        ]
    );
}

#[test]
fn ephemeral_containers_mount_only_valid_volumes() {
    let spec = json!({"volumes": [{"name": "ok", "emptyDir": {}}, {"name": "bad"}]});
    let volumes = valid_volumes(spec.as_object().unwrap());
    assert_eq!(volumes.get("ok"), Some(&"emptyDir"));
    assert!(!volumes.contains_key("bad"));
}
