//! The baseline checks: known privilege escalations are refused.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    containers_phrase, context, field, go_quote, join_quote, name, pluralize, sorted, text, Check,
    PodView, Violation,
};
use crate::registry::admission::pod_security::policy::Level;

/// The baseline checks.
pub(super) static CHECKS: &[Check] = &[
    Check {
        id: "appArmorProfile",
        level: Level::Baseline,
        overrides: &[],
        run: app_armor_profile,
    },
    Check {
        id: CAPABILITIES_BASELINE,
        level: Level::Baseline,
        overrides: &[],
        run: capabilities,
    },
    Check {
        id: "hostNamespaces",
        level: Level::Baseline,
        overrides: &[],
        run: host_namespaces,
    },
    Check {
        id: HOST_PATH_VOLUMES,
        level: Level::Baseline,
        overrides: &[],
        run: host_path_volumes,
    },
    Check {
        id: "hostPorts",
        level: Level::Baseline,
        overrides: &[],
        run: host_ports,
    },
    Check {
        id: "privileged",
        level: Level::Baseline,
        overrides: &[],
        run: privileged,
    },
    Check {
        id: "procMount",
        level: Level::Baseline,
        overrides: &[],
        run: proc_mount,
    },
    Check {
        id: "seLinuxOptions",
        level: Level::Baseline,
        overrides: &[],
        run: se_linux_options,
    },
    Check {
        id: SECCOMP_BASELINE,
        level: Level::Baseline,
        overrides: &[],
        run: seccomp_profile,
    },
    Check {
        id: "sysctls",
        level: Level::Baseline,
        overrides: &[],
        run: sysctls,
    },
    Check {
        id: "windowsHostProcess",
        level: Level::Baseline,
        overrides: &[],
        run: windows_host_process,
    },
];

/// The id of the baseline capabilities check, which the restricted one replaces.
pub(super) const CAPABILITIES_BASELINE: &str = "capabilities_baseline";
/// The id of the baseline seccomp check, which the restricted one replaces.
pub(super) const SECCOMP_BASELINE: &str = "seccompProfile_baseline";
/// The id of the hostPath check, which the restricted volume types check replaces.
pub(super) const HOST_PATH_VOLUMES: &str = "hostPathVolumes";

/// The capabilities a container may add at baseline (the container runtimes' default set).
pub(crate) const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The sysctls a Pod may set at baseline: namespaced and isolated from other Pods.
pub(crate) const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The SELinux types a Pod or container may set (or leave empty).
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The prefix of the deprecated per-container AppArmor annotations.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// "`pod` and `containers "a", "b"`": who set a forbidden value.
fn setters(pod: bool, containers: &[String]) -> Vec<String> {
    let mut setters = Vec::new();
    if pod {
        setters.push("pod".to_string());
    }
    if !containers.is_empty() {
        setters.push(containers_phrase(containers));
    }
    setters
}

/// AppArmor: `appArmorProfile.type` (pod or container) must be `RuntimeDefault` or
/// `Localhost`; the deprecated annotations must be empty, `runtime/default` or
/// `localhost/*`.
fn app_armor_profile(pod: &PodView<'_>) -> Option<Violation> {
    let allowed_type = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut bad_values = BTreeSet::new();
    let pod_profile = field(pod.pod_context(), "appArmorProfile");
    let pod_bad = pod_profile.is_some_and(|p| !allowed_type(text(p.get("type"))));
    if let Some(profile) = pod_profile.filter(|_| pod_bad) {
        bad_values.insert(text(profile.get("type")).to_string());
    }
    let mut bad_containers = Vec::new();
    for container in pod.containers() {
        if let Some(profile) = field(context(container), "appArmorProfile") {
            let kind = text(profile.get("type"));
            if !allowed_type(kind) {
                bad_containers.push(name(container).to_string());
                bad_values.insert(kind.to_string());
            }
        }
    }
    let mut setters = setters(pod_bad, &bad_containers);
    let forbidden_annotations: Vec<String> = pod
        .annotations()
        .filter(|(key, value)| {
            key.starts_with(APPARMOR_ANNOTATION_PREFIX)
                && !(value.is_empty()
                    || *value == "runtime/default"
                    || value.starts_with("localhost/"))
        })
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect();
    let mut values = sorted(bad_values);
    if !forbidden_annotations.is_empty() {
        setters
            .push(pluralize("annotation", "annotations", forbidden_annotations.len()).to_string());
        values.extend(forbidden_annotations);
    }
    if setters.is_empty() {
        return None;
    }
    Violation::new(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

/// Capabilities: `capabilities.add` only from the [baseline set](BASELINE_CAPABILITIES).
fn capabilities(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut added = BTreeSet::new();
    for container in pod.containers() {
        let adds = field(context(container), "capabilities")
            .and_then(|c| c.get("add"))
            .and_then(Value::as_array);
        let mut valid = true;
        for capability in adds.into_iter().flatten() {
            let capability = capability.as_str().unwrap_or("");
            if !BASELINE_CAPABILITIES.contains(&capability) {
                valid = false;
                added.insert(capability.to_string());
            }
        }
        if !valid {
            bad_containers.push(name(container).to_string());
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Violation::new(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_containers),
            join_quote(&sorted(added))
        ),
    )
}

/// Host namespaces: no `hostNetwork`, `hostPID` or `hostIPC`.
fn host_namespaces(pod: &PodView<'_>) -> Option<Violation> {
    let shared: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(flag, _)| pod.spec_flag(flag))
    .map(|(_, text)| text)
    .collect();
    if shared.is_empty() {
        return None;
    }
    Violation::new("host namespaces", shared.join(", "))
}

/// HostPath volumes: none.
fn host_path_volumes(pod: &PodView<'_>) -> Option<Violation> {
    let volumes: Vec<&str> = pod
        .spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    if volumes.is_empty() {
        return None;
    }
    Violation::new(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", volumes.len()),
            join_quote(&volumes)
        ),
    )
}

/// Host ports: every `ports[].hostPort` unset or 0.
fn host_ports(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut ports = BTreeSet::new();
    for container in pod.containers() {
        let mut valid = true;
        for port in container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host_port = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host_port != 0 {
                valid = false;
                ports.insert(host_port.to_string());
            }
        }
        if !valid {
            bad_containers.push(name(container).to_string());
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Violation::new(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            sorted(ports).join(", ")
        ),
    )
}

/// Privileged containers: none.
fn privileged(pod: &PodView<'_>) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| field(context(c), "privileged").and_then(Value::as_bool) == Some(true))
        .map(|c| name(c).to_string())
        .collect();
    if bad.is_empty() {
        return None;
    }
    Violation::new(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

/// `/proc` mount type: unset or `Default`.
fn proc_mount(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for container in pod.containers() {
        if let Some(kind) = field(context(container), "procMount") {
            let kind = kind.as_str().unwrap_or("");
            if kind != "Default" {
                bad.push(name(container).to_string());
                types.insert(kind.to_string());
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    Violation::new(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&sorted(types))
        ),
    )
}

/// SELinux: a type from the allowed set, no user, no role.
fn se_linux_options(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_types = BTreeSet::new();
    let mut set_user = false;
    let mut set_role = false;
    let mut valid = |options: &Value| {
        let mut ok = true;
        let kind = text(options.get("type"));
        if !SELINUX_TYPES.contains(&kind) {
            ok = false;
            bad_types.insert(kind.to_string());
        }
        if !text(options.get("user")).is_empty() {
            ok = false;
            set_user = true;
        }
        if !text(options.get("role")).is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let pod_bad = field(pod.pod_context(), "seLinuxOptions").is_some_and(|o| !valid(o));
    let bad_containers: Vec<String> = pod
        .containers()
        .filter(|c| field(context(c), "seLinuxOptions").is_some_and(|o| !valid(o)))
        .map(|c| name(c).to_string())
        .collect();
    let setters = setters(pod_bad, &bad_containers);
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&sorted(bad_types))
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    Violation::new(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

/// Whether a seccomp profile type is allowed: `RuntimeDefault` or `Localhost`.
pub(super) fn valid_seccomp(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

/// Seccomp: when set (pod or container), `RuntimeDefault` or `Localhost`; `Unconfined` is
/// refused.
fn seccomp_profile(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad_values = BTreeSet::new();
    let mut bad = |profile: Option<&Value>| match profile {
        Some(profile) if !valid_seccomp(text(profile.get("type"))) => {
            bad_values.insert(text(profile.get("type")).to_string());
            true
        }
        _ => false,
    };
    let pod_bad = bad(field(pod.pod_context(), "seccompProfile"));
    let bad_containers: Vec<String> = pod
        .containers()
        .filter(|c| bad(field(context(c), "seccompProfile")))
        .map(|c| name(c).to_string())
        .collect();
    let setters = setters(pod_bad, &bad_containers);
    if setters.is_empty() {
        return None;
    }
    Violation::new(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&sorted(bad_values))
        ),
    )
}

/// Sysctls: only the [safe set](SAFE_SYSCTLS).
fn sysctls(pod: &PodView<'_>) -> Option<Violation> {
    let forbidden: Vec<&str> = field(pod.pod_context(), "sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| text(s.get("name")))
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    Violation::new("forbidden sysctls", forbidden.join(", "))
}

/// Windows host process: `windowsOptions.hostProcess` never true.
fn windows_host_process(pod: &PodView<'_>) -> Option<Violation> {
    let host_process = |context: Option<&Value>| {
        field(context, "windowsOptions")
            .and_then(|w| w.get("hostProcess"))
            .and_then(Value::as_bool)
            == Some(true)
    };
    let bad_containers: Vec<String> = pod
        .containers()
        .filter(|c| host_process(context(c)))
        .map(|c| name(c).to_string())
        .collect();
    let setters = setters(host_process(pod.pod_context()), &bad_containers);
    if setters.is_empty() {
        return None;
    }
    Violation::new(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}
