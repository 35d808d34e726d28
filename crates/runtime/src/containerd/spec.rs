//! The OCI runtime spec (`config.json`) of a container: process from the image config and the
//! container config, default mounts, the pod's shared namespaces, and secure defaults close to
//! containerd's (default capability set, `noNewPrivileges`, masked and read-only paths).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Result, RuntimeError};
use crate::types::{ContainerConfig, LinuxContainerResources, MountPropagation, PodSandboxConfig};

/// The capabilities a container gets unless it is privileged (containerd's default set).
pub(super) const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for privileged containers.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an OCI image config a container's process comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(super) struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub(super) entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub(super) cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub(super) env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub(super) working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub(super) user: Option<String>,
}

/// Paths of the pod's shared namespaces, empty for one the container does not join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PodNamespacePaths {
    pub(super) network: String,
    pub(super) ipc: String,
    pub(super) uts: String,
    /// The directory with the pod's `hostname`, `hosts` and `resolv.conf` (empty: none).
    pub(super) etc_dir: String,
}

/// The process's arguments as CRI builds them: `command` replaces the entrypoint and drops
/// the image's `Cmd`; `args` replaces `Cmd`.
pub(super) fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let (mut first, rest) = if config.command.is_empty() {
        (
            entrypoint,
            if config.args.is_empty() {
                cmd
            } else {
                config.args.clone()
            },
        )
    } else {
        (config.command.clone(), config.args.clone())
    };
    first.extend(rest);
    first
}

/// The uid and gid to run as: the security context's, else the image's numeric `User`.
/// `InvalidArgument` for a user name (images here carry numeric users only) or a root user
/// under `runAsNonRoot`.
pub(super) fn process_user(config: &ContainerConfig, image: &ImageConfig) -> Result<(u32, u32)> {
    let image_user = image.user.clone().unwrap_or_default();
    let (image_uid, image_gid) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (image_user, None),
    };
    let parse = |what: &str, value: &str| {
        value.parse::<u32>().map_err(|_| {
            RuntimeError::InvalidArgument(format!(
                "image {what} {value:?} is not numeric; set runAsUser/runAsGroup"
            ))
        })
    };
    let id = |value: i64, what: &str| {
        u32::try_from(value)
            .map_err(|_| RuntimeError::InvalidArgument(format!("{what} {value} is out of range")))
    };
    let security = &config.security_context;
    let uid = match security.run_as_user {
        Some(uid) => id(uid, "runAsUser")?,
        None if image_uid.is_empty() => 0,
        None => parse("user", &image_uid)?,
    };
    let gid = match (security.run_as_group, image_gid) {
        (Some(gid), _) => id(gid, "runAsGroup")?,
        (None, Some(g)) if security.run_as_user.is_none() => parse("group", &g)?,
        _ => 0,
    };
    if security.run_as_non_root && uid == 0 {
        return Err(RuntimeError::InvalidArgument(
            "runAsNonRoot is set but the container would run as root (uid 0)".into(),
        ));
    }
    Ok((uid, gid))
}

/// The environment: the image's, overridden by the container's, with `PATH` and `HOSTNAME`.
fn process_env(config: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    };
    let (path_key, path_value) = DEFAULT_PATH.split_once('=').unwrap_or_default();
    set(path_key, path_value);
    if !hostname.is_empty() {
        set("HOSTNAME", hostname);
    }
    for variable in image.env.iter().flatten() {
        let (key, value) = variable.split_once('=').unwrap_or((variable, ""));
        set(key, value);
    }
    for variable in &config.envs {
        set(&variable.key, &variable.value);
    }
    // As CRI does for a container on a terminal.
    if config.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn capabilities(config: &ContainerConfig) -> Result<Vec<String>> {
    let security = &config.security_context;
    if security.privileged {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let normalise = |name: &str| {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if full == "CAP_ALL" || ALL_CAPABILITIES.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(RuntimeError::InvalidArgument(format!(
                "unknown capability {name:?}"
            )))
        }
    };
    let add = security
        .add_capabilities
        .iter()
        .map(|c| normalise(c))
        .collect::<Result<Vec<_>>>()?;
    let drop = security
        .drop_capabilities
        .iter()
        .map(|c| normalise(c))
        .collect::<Result<Vec<_>>>()?;
    let mut caps: Vec<String> = if add.iter().any(|c| c == "CAP_ALL") {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .chain(add)
            .collect()
    };
    if drop.iter().any(|c| c == "CAP_ALL") {
        caps.clear();
    }
    caps.retain(|c| !drop.contains(c));
    caps.sort();
    caps.dedup();
    Ok(caps)
}

/// `linux.resources` of the spec: the device rule, then what `resources` sets, as
/// containerd's CRI plugin writes it (a zero is left out; the swap limit equals the memory
/// limit when the host accounts swap, so a container does not swap instead of hitting its
/// limit).
pub(super) fn linux_resources(
    resources: &LinuxContainerResources,
    privileged: bool,
    swap_accounted: bool,
) -> Value {
    let mut out = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
    let mut cpu = serde_json::Map::new();
    if resources.cpu_shares != 0 {
        cpu.insert("shares".into(), json!(resources.cpu_shares));
    }
    if resources.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(resources.cpu_quota));
    }
    if resources.cpu_period != 0 {
        cpu.insert("period".into(), json!(resources.cpu_period));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    let limit = resources.memory_limit_in_bytes;
    if limit != 0 {
        out["memory"] = if swap_accounted {
            json!({"limit": limit, "swap": limit})
        } else {
            json!({"limit": limit})
        };
    }
    if let Some(pids) = resources.pids_limit {
        out["pids"] = json!({"limit": pids});
    }
    out
}

/// The container's OCI runtime spec. `cgroups_path` is where runc puts its cgroup.
pub(super) fn container_spec(
    config: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    image: &ImageConfig,
    namespaces: &PodNamespacePaths,
    cgroups_path: &str,
) -> Result<Value> {
    let args = process_args(config, image);
    if args.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "no command: neither the container nor its image sets one".into(),
        ));
    }
    let (uid, gid) = process_user(config, image)?;
    let caps = capabilities(config)?;
    let security = &config.security_context;
    let privileged = security.privileged;
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let sys_options = if privileged {
        json!(["nosuid", "noexec", "nodev", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
    ];
    if !namespaces.etc_dir.is_empty() {
        let access = if security.readonly_rootfs { "ro" } else { "rw" };
        for name in ["hostname", "hosts", "resolv.conf"] {
            mounts.push(json!({
                "destination": format!("/etc/{name}"),
                "type": "bind",
                "source": format!("{}/{name}", namespaces.etc_dir),
                "options": ["rbind", "rprivate", access],
            }));
        }
    }
    for mount in &config.mounts {
        if !mount.container_path.starts_with('/') {
            return Err(RuntimeError::InvalidArgument(format!(
                "mount path {:?} is not absolute",
                mount.container_path
            )));
        }
        let propagation = match mount.propagation {
            MountPropagation::Private => "rprivate",
            MountPropagation::HostToContainer => "rslave",
            MountPropagation::Bidirectional => "rshared",
        };
        let access = if mount.readonly { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": mount.container_path,
            "type": "bind",
            "source": mount.host_path,
            "options": ["rbind", propagation, access],
        }));
    }
    let mut linux_namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    for (kind, path) in [
        ("network", &namespaces.network),
        ("ipc", &namespaces.ipc),
        ("uts", &namespaces.uts),
    ] {
        if !path.is_empty() {
            linux_namespaces.push(json!({"type": kind, "path": path}));
        }
    }
    let mut linux = json!({
        "namespaces": linux_namespaces,
        "cgroupsPath": cgroups_path,
        "resources": linux_resources(
            &config.resources,
            privileged,
            super::stats::swap_accounted(),
        ),
    });
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": process_env(config, image, &sandbox.hostname),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": !privileged,
            "oomScoreAdj": config.resources.oom_score_adj,
        },
        "root": {"path": "rootfs", "readonly": security.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PodSandboxMetadata, SecurityContext};

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: Some(vec!["/bin/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            env: Some(vec!["A=image".into(), "B=image".into()]),
            working_dir: Some("/app".into()),
            user: Some("1000:2000".into()),
        }
    }

    fn sandbox() -> PodSandboxConfig {
        PodSandboxConfig::new(PodSandboxMetadata::new("p", "default", "u"))
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_replace_cmd() {
        let config = ContainerConfig::new("c", "i");
        assert_eq!(process_args(&config, &image()), ["/bin/entry", "serve"]);
        let config = ContainerConfig::new("c", "i").args(["x"]);
        assert_eq!(process_args(&config, &image()), ["/bin/entry", "x"]);
        let config = ContainerConfig::new("c", "i").command(["sh"]);
        assert_eq!(process_args(&config, &image()), ["sh"]);
    }

    #[test]
    fn the_security_context_overrides_the_image_user_and_refuses_root_when_asked() {
        let mut config = ContainerConfig::new("c", "i");
        assert_eq!(process_user(&config, &image()).unwrap(), (1000, 2000));
        config.security_context.run_as_user = Some(42);
        assert_eq!(process_user(&config, &image()).unwrap(), (42, 0));
        config.security_context = SecurityContext {
            run_as_non_root: true,
            ..Default::default()
        };
        assert_eq!(process_user(&config, &ImageConfig::default()).ok(), None);
        let named = ImageConfig {
            user: Some("nginx".into()),
            ..Default::default()
        };
        assert!(matches!(
            process_user(&ContainerConfig::new("c", "i"), &named),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }

    #[test]
    fn defaults_are_confined_and_privileged_lifts_the_confinement() {
        let namespaces = PodNamespacePaths {
            network: "/run/ns/net".into(),
            ipc: "/run/ns/ipc".into(),
            uts: String::new(),
            etc_dir: "/run/pod".into(),
        };
        let mut config = ContainerConfig::new("c", "i").env("B", "container");
        let spec =
            container_spec(&config, &sandbox(), &image(), &namespaces, "/capstan/x").unwrap();
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["cwd"], "/app");
        let hosts = json!({"destination": "/etc/hosts", "type": "bind", "source": "/run/pod/hosts", "options": ["rbind", "rprivate", "rw"]});
        assert!(spec["mounts"].as_array().unwrap().contains(&hosts));
        let env: Vec<&str> = spec["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"A=image") && env.contains(&"B=container") && env.contains(&"HOSTNAME=p")
        );
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(spec["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        let joined: Vec<&Value> = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n.get("path").is_some())
            .collect();
        assert_eq!(
            joined,
            [
                &json!({"type": "network", "path": "/run/ns/net"}),
                &json!({"type": "ipc", "path": "/run/ns/ipc"})
            ]
        );

        config.security_context.add_capabilities = vec!["NET_ADMIN".into()];
        config.security_context.drop_capabilities = vec!["kill".into(), "CAP_CHOWN".into()];
        let spec =
            container_spec(&config, &sandbox(), &image(), &namespaces, "/capstan/x").unwrap();
        let caps = spec["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&json!("CAP_KILL")) && !caps.contains(&json!("CAP_CHOWN")));

        config.security_context.privileged = true;
        let spec =
            container_spec(&config, &sandbox(), &image(), &namespaces, "/capstan/x").unwrap();
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(spec["linux"].get("maskedPaths").is_none());
        assert!(spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_SYS_ADMIN")));
    }

    #[test]
    fn a_container_on_a_terminal_gets_one_with_term_set_unless_it_sets_term() {
        let namespaces = PodNamespacePaths::default();
        let plain = ContainerConfig::new("c", "i");
        let spec = container_spec(&plain, &sandbox(), &image(), &namespaces, "/x").unwrap();
        assert_eq!(spec["process"]["terminal"], false);
        assert!(!spec["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
        let mut tty = ContainerConfig::new("c", "i");
        tty.tty = true;
        let spec = container_spec(&tty, &sandbox(), &image(), &namespaces, "/x").unwrap();
        assert_eq!(spec["process"]["terminal"], true);
        assert!(spec["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
        let tty = tty.env("TERM", "vt100");
        let spec = container_spec(&tty, &sandbox(), &image(), &namespaces, "/x").unwrap();
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("TERM=vt100")) && !env.contains(&json!("TERM=xterm")));
    }

    #[test]
    fn resources_become_cgroup_settings_and_the_oom_score_adjustment() {
        let none = linux_resources(&LinuxContainerResources::default(), false, true);
        assert_eq!(
            none,
            json!({"devices": [{"allow": false, "access": "rwm"}]})
        );
        let resources = LinuxContainerResources::default()
            .cpu(512, 50_000, 100_000)
            .memory_limit(20 << 20)
            .oom_score_adj(-997)
            .pids_limit(64);
        let set = linux_resources(&resources, false, true);
        assert_eq!(
            set["cpu"],
            json!({"shares": 512, "quota": 50_000, "period": 100_000})
        );
        assert_eq!(set["memory"], json!({"limit": 20 << 20, "swap": 20 << 20}));
        assert_eq!(set["pids"], json!({"limit": 64}));
        let no_swap = linux_resources(&resources, false, false);
        assert_eq!(no_swap["memory"], json!({"limit": 20 << 20}));
        // Shares without a quota: no CPU limit, only the weight and the period.
        let burstable = LinuxContainerResources::default().cpu(2, 0, 100_000);
        assert_eq!(
            linux_resources(&burstable, false, true)["cpu"],
            json!({"shares": 2, "period": 100_000})
        );
        let config = ContainerConfig::new("c", "i").resources(resources);
        let spec = container_spec(
            &config,
            &sandbox(),
            &image(),
            &PodNamespacePaths::default(),
            "/x",
        )
        .unwrap();
        assert_eq!(spec["process"]["oomScoreAdj"], -997);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 64);
    }

    #[test]
    fn bad_input_is_an_invalid_argument() {
        let none = ImageConfig::default();
        let namespaces = PodNamespacePaths::default();
        let config = ContainerConfig::new("c", "i");
        assert!(matches!(
            container_spec(&config, &sandbox(), &none, &namespaces, "/x"),
            Err(RuntimeError::InvalidArgument(_))
        ));
        let mut config = ContainerConfig::new("c", "i").command(["sh"]);
        config.security_context.add_capabilities = vec!["NOT_A_CAP".into()];
        assert!(matches!(
            container_spec(&config, &sandbox(), &none, &namespaces, "/x"),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }
}
