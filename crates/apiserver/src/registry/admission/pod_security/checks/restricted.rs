//! The restricted checks: the baseline plus current Pod hardening practice.

use std::collections::BTreeSet;

use serde_json::Value;

use super::baseline::{valid_seccomp, CAPABILITIES_BASELINE, HOST_PATH_VOLUMES, SECCOMP_BASELINE};
use super::{
    containers_phrase, context, field, join_quote, name, pluralize, sorted, text, Check, PodView,
    Violation,
};
use crate::registry::admission::pod_security::policy::Level;

/// The restricted checks.
pub(super) static CHECKS: &[Check] = &[
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        overrides: &[],
        run: allow_privilege_escalation,
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        overrides: &[CAPABILITIES_BASELINE],
        run: capabilities,
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        overrides: &[HOST_PATH_VOLUMES],
        run: volume_types,
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        overrides: &[],
        run: run_as_non_root,
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        overrides: &[],
        run: run_as_user,
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        overrides: &[SECCOMP_BASELINE],
        run: seccomp_profile,
    },
];

/// The volume sources a restricted Pod may use.
pub(crate) const ALLOWED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The volume sources refused at restricted, in the order Kubernetes names a volume's type.
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// Privilege escalation: every container sets `allowPrivilegeEscalation: false` (Windows
/// Pods are exempt).
fn allow_privilege_escalation(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| {
            field(context(c), "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false)
        })
        .map(|c| name(c).to_string())
        .collect();
    if bad.is_empty() {
        return None;
    }
    Violation::new(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

/// Capabilities: every container drops `ALL` and adds at most `NET_BIND_SERVICE` (Windows
/// Pods are exempt).
fn capabilities(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let mut missing_drop_all = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for container in pod.containers() {
        let Some(capabilities) = field(context(container), "capabilities") else {
            missing_drop_all.push(name(container).to_string());
            continue;
        };
        let list = |key: &str| -> Vec<&str> {
            capabilities
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or(""))
                .collect()
        };
        if !list("drop").contains(&"ALL") {
            missing_drop_all.push(name(container).to_string());
        }
        let mut added_forbidden = false;
        for capability in list("add") {
            if capability != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden.insert(capability.to_string());
            }
        }
        if added_forbidden {
            adding.push(name(container).to_string());
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&sorted(forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    Violation::new("unrestricted capabilities", details.join("; "))
}

/// Volume types: only the [allowed sources](ALLOWED_VOLUME_SOURCES).
fn volume_types(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_volumes = Vec::new();
    let mut bad_types = BTreeSet::new();
    for volume in pod
        .spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let has = |source: &str| volume.get(source).is_some_and(|s| !s.is_null());
        if ALLOWED_VOLUME_SOURCES.iter().any(|s| has(s)) {
            continue;
        }
        bad_volumes.push(name(volume).to_string());
        let kind = RESTRICTED_VOLUME_SOURCES
            .iter()
            .find(|s| has(s))
            .copied()
            .unwrap_or("unknown");
        bad_types.insert(kind.to_string());
    }
    if bad_volumes.is_empty() {
        return None;
    }
    Violation::new(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad_volumes.len()),
            join_quote(&bad_volumes),
            pluralize("uses", "use", bad_volumes.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                bad_types.len()
            ),
            join_quote(&sorted(bad_types))
        ),
    )
}

/// Who explicitly set a forbidden value: `pod`, `container "a"`, joined by ` and `.
fn setters(pod: bool, containers: &[String]) -> String {
    let mut setters = Vec::new();
    if pod {
        setters.push("pod".to_string());
    }
    if !containers.is_empty() {
        setters.push(containers_phrase(containers));
    }
    setters.join(" and ")
}

/// Non-root: `runAsNonRoot: true` on the Pod (containers may not set it false) or on every
/// container.
fn run_as_non_root(pod: &PodView<'_>) -> Option<Violation> {
    let pod_value = field(pod.pod_context(), "runAsNonRoot").and_then(Value::as_bool);
    let pod_bad = pod_value == Some(false);
    let pod_non_root = pod_value == Some(true);
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match field(context(container), "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(container).to_string()),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(container).to_string()),
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        return Violation::new(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_bad, &explicit)
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    Violation::new(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

/// Non-zero user: `runAsUser` (Pod or container) is never 0.
fn run_as_user(pod: &PodView<'_>) -> Option<Violation> {
    let root =
        |context: Option<&Value>| field(context, "runAsUser").and_then(Value::as_i64) == Some(0);
    let pod_bad = root(pod.pod_context());
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| root(context(c)))
        .map(|c| name(c).to_string())
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    Violation::new(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters(pod_bad, &bad)),
    )
}

/// Seccomp: `RuntimeDefault` or `Localhost` on the Pod or every container; `Unconfined`
/// nowhere (Windows Pods are exempt).
fn seccomp_profile(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let mut bad_values = BTreeSet::new();
    let mut pod_bad = false;
    let mut pod_set = false;
    if let Some(profile) = field(pod.pod_context(), "seccompProfile") {
        let kind = text(profile.get("type"));
        if valid_seccomp(kind) {
            pod_set = true;
        } else {
            pod_bad = true;
            bad_values.insert(kind.to_string());
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match field(context(container), "seccompProfile") {
            Some(profile) => {
                let kind = text(profile.get("type"));
                if !valid_seccomp(kind) {
                    explicit.push(name(container).to_string());
                    bad_values.insert(kind.to_string());
                }
            }
            None if !pod_set => implicit.push(name(container).to_string()),
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        return Violation::new(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod_bad, &explicit),
                join_quote(&sorted(bad_values))
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    Violation::new(
        "seccompProfile",
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&implicit)
        ),
    )
}
