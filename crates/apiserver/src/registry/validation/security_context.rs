//! Security contexts of pods and containers, as Kubernetes' `validatePodSpecSecurityContext`
//! and `ValidateSecurityContext` check them: user and group IDs in range, sysctls, seccomp and
//! AppArmor profiles, `procMount`, and the privilege-escalation contradictions.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use capstan_api::FieldError;
use regex::Regex;
use serde_json::{Map, Value};

use super::volumes::local_descending_path;

/// The largest user or group ID (`math.MaxInt32`).
const MAX_ID: i64 = i32::MAX as i64;

/// A sysctl name, with `/` or `.` between segments (`SysctlContainSlashFmt`).
const SYSCTL_PATTERN: &str =
    r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

static SYSCTL: LazyLock<Regex> = LazyLock::new(|| Regex::new(SYSCTL_PATTERN).unwrap());

fn id_in_range(map: &Map<String, Value>, key: &str, path: &str, causes: &mut Vec<FieldError>) {
    if let Some(id) = map.get(key).and_then(Value::as_i64) {
        check_id(id, format!("{path}.{key}"), causes);
    }
}

fn check_id(id: i64, field: String, causes: &mut Vec<FieldError>) {
    if !(0..=MAX_ID).contains(&id) {
        causes.push(FieldError::invalid(
            field,
            id,
            format!("must be between 0 and {MAX_ID}, inclusive"),
        ));
    }
}

/// Checks a `seccompProfile` at `path` (`validateSeccompProfileField`).
fn seccomp_profile(profile: Option<&Value>, path: &str, causes: &mut Vec<FieldError>) {
    const TYPES: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];
    let Some(map) = profile.and_then(Value::as_object) else {
        return;
    };
    let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        causes.push(FieldError::required(
            format!("{path}.type"),
            "type is required when seccompProfile is set",
        ));
    } else if !TYPES.contains(&kind) {
        causes.push(FieldError::not_supported(
            format!("{path}.type"),
            kind,
            TYPES,
        ));
    }
    let localhost = map.get("localhostProfile").and_then(Value::as_str);
    let field = format!("{path}.localhostProfile");
    match (kind, localhost) {
        ("Localhost", None) => causes.push(FieldError::required(
            field,
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(profile)) => local_descending_path(profile, &field, causes),
        (_, Some(_)) => causes.push(FieldError::invalid(
            field,
            Value::Object(map.clone()),
            "can only be set when seccomp type is Localhost",
        )),
        _ => {}
    }
}

/// Checks an `appArmorProfile` at `path` (`ValidateAppArmorProfileField`).
fn app_armor_profile(profile: Option<&Value>, path: &str, causes: &mut Vec<FieldError>) {
    const TYPES: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];
    let Some(map) = profile.and_then(Value::as_object) else {
        return;
    };
    let localhost = map.get("localhostProfile").and_then(Value::as_str);
    let field = format!("{path}.localhostProfile");
    match map.get("type").and_then(Value::as_str).unwrap_or("") {
        "Localhost" => match localhost {
            None => causes.push(FieldError::required(
                field,
                "must be set when AppArmor type is Localhost",
            )),
            Some(profile) => {
                if profile.trim() != profile {
                    causes.push(FieldError::invalid(
                        &field,
                        profile,
                        "must not be padded with whitespace",
                    ));
                } else if profile.is_empty() {
                    causes.push(FieldError::required(
                        &field,
                        "must be set when AppArmor type is Localhost",
                    ));
                }
                if profile.len() > 4095 {
                    causes.push(FieldError::too_long(&field, 4095));
                }
            }
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(profile) = localhost {
                causes.push(FieldError::invalid(
                    field,
                    profile,
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        "" => causes.push(FieldError::required(
            format!("{path}.type"),
            "type is required when appArmorProfile is set",
        )),
        other => causes.push(FieldError::not_supported(
            format!("{path}.type"),
            other,
            TYPES,
        )),
    }
}

/// The sysctl namespace a name belongs to, if it is namespaced: `net` or `ipc`.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    let name = name.replace('/', ".");
    if name.starts_with("net.") {
        Some("net")
    } else if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else {
        None
    }
}

fn enabled(spec: &Map<String, Value>, key: &str) -> bool {
    spec.get(key).and_then(Value::as_bool) == Some(true)
}

/// Checks the pod's `securityContext` (with the `hostPID`, `hostNetwork` and `hostIPC` it
/// interacts with) and, since it depends on the pod's `hostUsers`, every container's
/// `procMount`. Called once per pod spec by `pod_spec`.
pub(crate) fn validate_pod_security_context(
    spec: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let empty = Map::new();
    let context = spec
        .get("securityContext")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let field = format!("{path}.securityContext");
    id_in_range(context, "fsGroup", &field, causes);
    id_in_range(context, "runAsUser", &field, causes);
    id_in_range(context, "runAsGroup", &field, causes);
    let groups = context.get("supplementalGroups").and_then(Value::as_array);
    for (i, group) in groups.into_iter().flatten().enumerate() {
        if let Some(group) = group.as_i64() {
            check_id(group, format!("{field}.supplementalGroups[{i}]"), causes);
        }
    }
    if enabled(spec, "shareProcessNamespace") && enabled(spec, "hostPID") {
        causes.push(FieldError::invalid(
            format!("{field}.shareProcessNamespace"),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let sysctls = context.get("sysctls").and_then(Value::as_array);
    let mut names = BTreeSet::new();
    for (i, sysctl) in sysctls.into_iter().flatten().enumerate() {
        let name = sysctl.get("name").and_then(Value::as_str).unwrap_or("");
        let name_field = format!("{field}.sysctls[{i}].name");
        if name.is_empty() {
            causes.push(FieldError::required(&name_field, ""));
        } else if name.len() > 253 || !SYSCTL.is_match(name) {
            causes.push(FieldError::invalid(
                &name_field,
                name,
                format!("must have at most 253 characters and match regex {SYSCTL_PATTERN}"),
            ));
        } else if names.contains(name) {
            causes.push(FieldError::duplicate(&name_field, name));
        }
        match sysctl_namespace(name) {
            Some("net") if enabled(spec, "hostNetwork") => causes.push(FieldError::invalid(
                &name_field,
                name,
                "may not be specified when 'hostNetwork' is true",
            )),
            Some("ipc") if enabled(spec, "hostIPC") => causes.push(FieldError::invalid(
                &name_field,
                name,
                "may not be specified when 'hostIPC' is true",
            )),
            _ => {}
        }
        names.insert(name);
    }
    let enums: [(&str, &[&str]); 3] = [
        ("fsGroupChangePolicy", &["Always", "OnRootMismatch"]),
        ("supplementalGroupsPolicy", &["Merge", "Strict"]),
        ("seLinuxChangePolicy", &["MountOption", "Recursive"]),
    ];
    for (key, supported) in enums {
        if let Some(value) = context.get(key).and_then(Value::as_str) {
            if !supported.contains(&value) {
                causes.push(FieldError::not_supported(
                    format!("{field}.{key}"),
                    value,
                    supported.iter().copied(),
                ));
            }
        }
    }
    seccomp_profile(
        context.get("seccompProfile"),
        &format!("{field}.seccompProfile"),
        causes,
    );
    app_armor_profile(
        context.get("appArmorProfile"),
        &format!("{field}.appArmorProfile"),
        causes,
    );
    let host_users = spec.get("hostUsers").and_then(Value::as_bool) != Some(false);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        let list = spec.get(key).and_then(Value::as_array);
        for (i, container) in list.into_iter().flatten().enumerate() {
            let proc_mount = container.pointer("/securityContext/procMount");
            if host_users && proc_mount.and_then(Value::as_str) == Some("Unmasked") {
                causes.push(FieldError::invalid(
                    format!("{path}.{key}[{i}].securityContext.procMount"),
                    "Unmasked",
                    "`hostUsers` must be false to use `Unmasked`",
                ));
            }
        }
    }
}

/// Checks the `securityContext` of the container at `path` (`ValidateSecurityContext`, except
/// the `procMount` rule tied to the pod's `hostUsers`, which
/// [`validate_pod_security_context`] checks). Called by `pod_spec` for every container.
pub(crate) fn validate_container_security_context(
    container: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let Some(context) = container.get("securityContext").and_then(Value::as_object) else {
        return;
    };
    let field = format!("{path}.securityContext");
    id_in_range(context, "runAsUser", &field, causes);
    id_in_range(context, "runAsGroup", &field, causes);
    if let Some(mount) = context.get("procMount").and_then(Value::as_str) {
        const PROC_MOUNTS: [&str; 2] = ["Default", "Unmasked"];
        if !PROC_MOUNTS.contains(&mount) {
            causes.push(FieldError::not_supported(
                format!("{field}.procMount"),
                mount,
                PROC_MOUNTS,
            ));
        }
    }
    seccomp_profile(
        context.get("seccompProfile"),
        &format!("{field}.seccompProfile"),
        causes,
    );
    if context
        .get("allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        == Some(false)
    {
        if enabled(context, "privileged") {
            causes.push(FieldError::invalid(
                &field,
                Value::Object(context.clone()),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let added = context
            .get("capabilities")
            .and_then(|capabilities| capabilities.get("add"))
            .and_then(Value::as_array);
        for capability in added.into_iter().flatten() {
            if capability.as_str() == Some("CAP_SYS_ADMIN") {
                causes.push(FieldError::invalid(
                    &field,
                    Value::Object(context.clone()),
                    "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` \
                     CAP_SYS_ADMIN",
                ));
            }
        }
    }
    app_armor_profile(
        context.get("appArmorProfile"),
        &format!("{field}.appArmorProfile"),
        causes,
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_problems(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_pod_security_context(spec.as_object().unwrap(), "spec", &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    fn container_problems(container: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_container_security_context(container.as_object().unwrap(), "c", &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn user_and_group_ids_are_non_negative_int32s() {
        assert_eq!(
            container_problems(json!({"securityContext": {"runAsUser": -1, "runAsGroup": 1000}})),
            ["c.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"]
        );
        assert_eq!(
            pod_problems(json!({"securityContext": {"fsGroup": 2147483648_i64,
                                                     "supplementalGroups": [1, -5]}})),
            [
                "spec.securityContext.fsGroup: Invalid value: 2147483648: must be between 0 and 2147483647, inclusive",
                "spec.securityContext.supplementalGroups[1]: Invalid value: -5: must be between 0 and 2147483647, inclusive",
            ]
        );
    }

    #[test]
    fn sysctls_are_named_well_once_and_not_shared_with_the_host() {
        let spec = json!({"hostNetwork": true, "securityContext": {"sysctls": [
            {"name": "net.core.somaxconn", "value": "1"},
            {"name": "kernel.shm_rmid_forced", "value": "1"},
            {"name": "kernel.shm_rmid_forced", "value": "0"},
            {"name": "Bad!", "value": "0"},
        ]}});
        let found = pod_problems(spec);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0],
            r#"spec.securityContext.sysctls[0].name: Invalid value: "net.core.somaxconn": may not be specified when 'hostNetwork' is true"#
        );
        assert_eq!(
            found[1],
            r#"spec.securityContext.sysctls[2].name: Duplicate value: "kernel.shm_rmid_forced""#
        );
        assert!(found[2].starts_with(r#"spec.securityContext.sysctls[3].name: Invalid value: "Bad!": must have at most 253 characters"#));
    }

    #[test]
    fn share_process_namespace_conflicts_with_host_pid() {
        assert_eq!(
            pod_problems(json!({"hostPID": true, "shareProcessNamespace": true})),
            ["spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"]
        );
    }

    #[test]
    fn seccomp_profiles_need_a_known_type_and_a_local_path() {
        assert_eq!(
            container_problems(json!({"securityContext": {"seccompProfile": {"type": "Localhost"}}})),
            ["c.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"]
        );
        assert_eq!(
            container_problems(json!({"securityContext": {"seccompProfile": {"type": "Other"}}})),
            [
                r#"c.securityContext.seccompProfile.type: Unsupported value: "Other": supported values: "Localhost", "RuntimeDefault", "Unconfined""#
            ]
        );
        assert_eq!(
            container_problems(json!({"securityContext": {"seccompProfile": {
                "type": "Localhost", "localhostProfile": "../x.json"}}})),
            [
                r#"c.securityContext.seccompProfile.localhostProfile: Invalid value: "../x.json": must not contain '..'"#
            ]
        );
    }

    #[test]
    fn unmasked_proc_mount_needs_a_user_namespace() {
        let spec =
            json!({"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]});
        assert_eq!(
            pod_problems(spec),
            ["spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"]
        );
        let spec = json!({"hostUsers": false,
                          "containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]});
        assert!(pod_problems(spec).is_empty());
    }

    #[test]
    fn no_privilege_escalation_contradicts_privileged() {
        let found = container_problems(json!({"securityContext": {
            "allowPrivilegeEscalation": false, "privileged": true}}));
        assert_eq!(found.len(), 1);
        assert!(found[0]
            .ends_with("cannot set `allowPrivilegeEscalation` to false and `privileged` to true"));
    }

    #[test]
    fn app_armor_profiles_follow_their_type() {
        assert_eq!(
            container_problems(json!({"securityContext": {"appArmorProfile": {
                "type": "RuntimeDefault", "localhostProfile": "p"}}})),
            [
                r#"c.securityContext.appArmorProfile.localhostProfile: Invalid value: "p": can only be set when AppArmor type is Localhost"#
            ]
        );
        assert_eq!(
            container_problems(json!({"securityContext": {"appArmorProfile": {}}})),
            ["c.securityContext.appArmorProfile.type: Required value: type is required when appArmorProfile is set"]
        );
    }
}
