//! One test (or a few) per check, with Kubernetes' texts.

use serde_json::{json, Value};

use super::*;

/// The violations of a Pod with `spec` (and `metadata`) at `level`, as `reason (detail)`.
fn detail_with(level: Level, metadata: Value, spec: Value) -> String {
    evaluate(level, &metadata, &spec).forbidden_detail()
}

fn detail(level: Level, spec: Value) -> String {
    detail_with(level, json!({}), spec)
}

/// A container that meets the restricted level.
fn hardened(name: &str) -> Value {
    json!({
        "name": name,
        "image": "busybox",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// `hardened("c")` with `patch` merged into its security context.
fn hardened_with(patch: Value) -> Value {
    let mut container = hardened("c");
    for (key, value) in patch.as_object().unwrap() {
        container["securityContext"][key] = value.clone();
    }
    container
}

#[test]
fn a_plain_container_fails_restricted_with_kubernetes_message_in_check_order() {
    let spec = json!({"containers": [{"name": "x", "image": "busybox"}]});
    assert_eq!(
        detail(Level::Restricted, spec.clone()),
        "allowPrivilegeEscalation != false (container \"x\" must set \
         securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \
         \"x\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod \
         or container \"x\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or \
         container \"x\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \
         \"Localhost\")"
    );
    assert!(evaluate(Level::Baseline, &json!({}), &spec).allowed());
    assert!(evaluate(Level::Privileged, &json!({}), &json!({"hostNetwork": true})).allowed());
}

#[test]
fn a_hardened_pod_meets_restricted() {
    let spec = json!({
        "containers": [hardened("a")],
        "initContainers": [hardened("init")],
        "volumes": [{"name": "token", "projected": {"sources": []}}, {"name": "tmp", "emptyDir": {}}],
    });
    assert_eq!(detail(Level::Restricted, spec), "");
}

#[test]
fn restricted_ignores_the_baseline_checks_it_overrides() {
    let ids: Vec<&str> = checks_for(Level::Restricted).iter().map(|c| c.id).collect();
    assert!(!ids.contains(&"capabilities_baseline"));
    assert!(!ids.contains(&"seccompProfile_baseline"));
    assert!(!ids.contains(&"hostPathVolumes"));
    assert_eq!(ids.first(), Some(&"appArmorProfile"));
    assert_eq!(ids.last(), Some(&"seccompProfile_restricted"));
    let baseline: Vec<&str> = checks_for(Level::Baseline).iter().map(|c| c.id).collect();
    assert_eq!(
        baseline,
        [
            "appArmorProfile",
            "capabilities_baseline",
            "hostNamespaces",
            "hostPathVolumes",
            "hostPorts",
            "privileged",
            "procMount",
            "seLinuxOptions",
            "seccompProfile_baseline",
            "sysctls",
            "windowsHostProcess"
        ]
    );
}

#[test]
fn host_namespaces_are_refused_at_baseline() {
    let spec = json!({"hostNetwork": true, "hostPID": true, "hostIPC": false, "containers": []});
    assert_eq!(
        detail(Level::Baseline, spec),
        "host namespaces (hostNetwork=true, hostPID=true)"
    );
}

#[test]
fn privileged_containers_are_refused_at_baseline() {
    let spec = json!({"containers": [
        {"name": "a", "securityContext": {"privileged": true}},
        {"name": "b", "securityContext": {"privileged": false}},
    ], "initContainers": [{"name": "i", "securityContext": {"privileged": true}}]});
    assert_eq!(
        detail(Level::Baseline, spec),
        "privileged (containers \"i\", \"a\" must not set securityContext.privileged=true)"
    );
}

#[test]
fn only_the_default_capabilities_may_be_added_at_baseline() {
    let spec = json!({"containers": [
        {"name": "a", "securityContext": {"capabilities": {"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]}}},
        {"name": "b", "securityContext": {"capabilities": {"add": ["KILL"]}}},
    ]});
    assert_eq!(
        detail(Level::Baseline, spec),
        "non-default capabilities (container \"a\" must not include \"NET_RAW\", \"SYS_ADMIN\" \
         in securityContext.capabilities.add)"
    );
}

#[test]
fn host_path_volumes_are_refused_at_baseline() {
    let spec = json!({"volumes": [
        {"name": "root", "hostPath": {"path": "/"}},
        {"name": "data", "emptyDir": {}},
    ]});
    assert_eq!(
        detail(Level::Baseline, spec),
        "hostPath volumes (volume \"root\")"
    );
}

#[test]
fn host_ports_are_refused_at_baseline() {
    let spec = json!({"containers": [
        {"name": "web", "ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 8443, "hostPort": 10443}]},
        {"name": "ok", "ports": [{"containerPort": 9090}]},
    ]});
    assert_eq!(
        detail(Level::Baseline, spec),
        "hostPort (container \"web\" uses hostPorts 10443, 80)"
    );
}

#[test]
fn app_armor_profiles_other_than_runtime_default_or_localhost_are_refused() {
    let spec = json!({
        "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
        "containers": [{"name": "a", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}],
    });
    let metadata = json!({"annotations": {
        "container.apparmor.security.beta.kubernetes.io/a": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
    }});
    assert_eq!(
        detail_with(Level::Baseline, metadata, spec),
        "forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to \
         \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/a=\"unconfined\"\")"
    );
}

#[test]
fn se_linux_types_users_and_roles_are_limited() {
    let spec = json!({
        "securityContext": {"seLinuxOptions": {"type": "container_engine_t"}},
        "containers": [{"name": "a", "securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root", "role": "sysadm_r"}}}],
    });
    assert_eq!(
        detail(Level::Baseline, spec),
        "seLinuxOptions (container \"a\" set forbidden securityContext.seLinuxOptions: type \
         \"spc_t\"; user may not be set; role may not be set)"
    );
}

#[test]
fn proc_mount_must_be_default() {
    let spec = json!({"containers": [
        {"name": "a", "securityContext": {"procMount": "Unmasked"}},
        {"name": "b", "securityContext": {"procMount": "Default"}},
    ]});
    assert_eq!(
        detail(Level::Baseline, spec),
        "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")"
    );
}

#[test]
fn seccomp_unconfined_is_refused_at_baseline_but_unset_is_allowed() {
    let spec = json!({
        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
        "containers": [{"name": "a"}],
    });
    assert_eq!(
        detail(Level::Baseline, spec),
        "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
    );
    assert_eq!(
        detail(Level::Baseline, json!({"containers": [{"name": "a"}]})),
        ""
    );
}

#[test]
fn only_safe_sysctls_are_allowed() {
    let spec = json!({"securityContext": {"sysctls": [
        {"name": "net.ipv4.tcp_keepalive_time", "value": "60"},
        {"name": "kernel.msgmax", "value": "1"},
        {"name": "net.core.somaxconn", "value": "1024"},
    ]}});
    assert_eq!(
        detail(Level::Baseline, spec),
        "forbidden sysctls (kernel.msgmax, net.core.somaxconn)"
    );
}

#[test]
fn windows_host_process_is_refused() {
    let spec = json!({
        "securityContext": {"windowsOptions": {"hostProcess": true}},
        "containers": [{"name": "a", "securityContext": {"windowsOptions": {"hostProcess": true}}}],
    });
    assert_eq!(
        detail(Level::Baseline, spec),
        "hostProcess (pod and container \"a\" must not set \
         securityContext.windowsOptions.hostProcess=true)"
    );
}

#[test]
fn restricted_requires_allow_privilege_escalation_false() {
    let spec = json!({"containers": [hardened_with(json!({"allowPrivilegeEscalation": true}))]});
    assert_eq!(
        detail(Level::Restricted, spec),
        "allowPrivilegeEscalation != false (container \"c\" must set \
         securityContext.allowPrivilegeEscalation=false)"
    );
}

#[test]
fn restricted_requires_dropping_all_and_adding_only_net_bind_service() {
    let spec = json!({"containers": [hardened_with(
        json!({"capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE", "CHOWN"]}})
    )]});
    assert_eq!(
        detail(Level::Restricted, spec),
        "unrestricted capabilities (container \"c\" must set \
         securityContext.capabilities.drop=[\"ALL\"]; container \"c\" must not include \"CHOWN\" \
         in securityContext.capabilities.add)"
    );
    let fine = json!({"containers": [hardened_with(
        json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})
    )]});
    assert_eq!(detail(Level::Restricted, fine), "");
}

#[test]
fn restricted_allows_only_ephemeral_volume_types() {
    let spec = json!({
        "containers": [hardened("c")],
        "volumes": [
            {"name": "root", "hostPath": {"path": "/"}},
            {"name": "share", "nfs": {"server": "s", "path": "/"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}},
        ],
    });
    assert_eq!(
        detail(Level::Restricted, spec),
        "restricted volume types (volumes \"root\", \"share\" use restricted volume types \
         \"hostPath\", \"nfs\")"
    );
}

#[test]
fn restricted_requires_run_as_non_root_from_the_pod_or_each_container() {
    let mut container = hardened("c");
    container["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsNonRoot");
    let on_the_pod = json!({"securityContext": {"runAsNonRoot": true}, "containers": [container]});
    assert_eq!(detail(Level::Restricted, on_the_pod), "");
    let explicit = json!({
        "securityContext": {"runAsNonRoot": false},
        "containers": [hardened_with(json!({"runAsNonRoot": false}))],
    });
    assert_eq!(
        detail(Level::Restricted, explicit),
        "runAsNonRoot != true (pod and container \"c\" must not set \
         securityContext.runAsNonRoot=false)"
    );
}

#[test]
fn restricted_refuses_run_as_user_zero() {
    let spec = json!({
        "securityContext": {"runAsUser": 0},
        "containers": [hardened_with(json!({"runAsUser": 1000}))],
    });
    assert_eq!(
        detail(Level::Restricted, spec),
        "runAsUser=0 (pod must not set runAsUser=0)"
    );
}

#[test]
fn restricted_requires_a_confined_seccomp_profile() {
    let mut container = hardened("c");
    container["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("seccompProfile");
    let from_the_pod = json!({
        "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
        "containers": [container],
    });
    assert_eq!(detail(Level::Restricted, from_the_pod), "");
    let unconfined =
        json!({"containers": [hardened_with(json!({"seccompProfile": {"type": "Unconfined"}}))]});
    assert_eq!(
        detail(Level::Restricted, unconfined),
        "seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \
         \"Unconfined\")"
    );
}

#[test]
fn windows_pods_skip_the_checks_windows_cannot_honour() {
    let spec = json!({
        "os": {"name": "windows"},
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "w", "image": "nanoserver"}],
    });
    assert_eq!(detail(Level::Restricted, spec), "");
}

#[test]
fn ephemeral_containers_are_checked_too() {
    let spec = json!({
        "containers": [hardened("c")],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}],
    });
    assert_eq!(
        evaluate(Level::Baseline, &json!({}), &spec).forbidden_reason(),
        "privileged"
    );
}
