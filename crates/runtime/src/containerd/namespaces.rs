//! A pod's network, IPC and UTS namespaces, pinned by bind mounts (as `ip netns add` pins a
//! network namespace) so they outlive any process: every container of the pod joins them by
//! path, and the kubelet hands the network one's path to the CNI plugin.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Result, RuntimeError};

/// Which namespaces to create (`false`: the pod uses the node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) network: bool,
    pub(super) ipc: bool,
    pub(super) uts: bool,
}

/// The pinned files of one pod's namespaces under `dir`; empty for a namespace not created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pinned {
    pub(super) network: String,
    pub(super) ipc: String,
    pub(super) uts: String,
}

const KINDS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// Creates the wanted namespaces and pins them as `dir/net`, `dir/ipc` and `dir/uts`; the UTS
/// namespace gets `hostname`. Runs on a thread of its own that ends afterwards, so no other
/// work ever runs inside the new namespaces. On failure nothing is left behind.
pub(super) async fn create(dir: PathBuf, wanted: Wanted, hostname: String) -> Result<Pinned> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cleanup_dir = dir.clone();
    std::thread::Builder::new()
        .name("capstan-netns".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&dir, wanted, &hostname));
        })
        .map_err(|e| RuntimeError::Internal(format!("spawning the namespace thread: {e}")))?;
    let result = rx
        .await
        .map_err(|_| RuntimeError::Internal("the namespace thread panicked".into()))?;
    if result.is_err() {
        remove(&cleanup_dir)?;
    }
    result
}

fn create_on_this_thread(dir: &Path, wanted: Wanted, hostname: &str) -> Result<Pinned> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        RuntimeError::Internal(format!("pod namespaces in {}: {what}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed("creating the directory", &e))?;
    let chosen: Vec<(&str, CloneFlags)> = KINDS
        .iter()
        .copied()
        .filter(|(name, _)| match *name {
            "net" => wanted.network,
            "ipc" => wanted.ipc,
            _ => wanted.uts,
        })
        .collect();
    let mut flags = CloneFlags::empty();
    for (name, flag) in &chosen {
        std::fs::File::create(dir.join(name)).map_err(|e| failed("creating a pin file", &e))?;
        flags |= *flag;
    }
    if flags.is_empty() {
        return Ok(Pinned::default());
    }
    unshare(flags).map_err(|e| failed("unshare", &e))?;
    if wanted.uts && !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| failed("sethostname", &e))?;
    }
    let mut pinned = Pinned::default();
    for (name, _) in chosen {
        let target = dir.join(name);
        mount(
            Some(Path::new(&format!("/proc/thread-self/ns/{name}"))),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| failed("bind-mounting", &e))?;
        let path = target.to_string_lossy().into_owned();
        match name {
            "net" => pinned.network = path,
            "ipc" => pinned.ipc = path,
            _ => pinned.uts = path,
        }
    }
    Ok(pinned)
}

/// The files a pod's containers see as `/etc/<name>`, kept beside its namespaces.
pub(super) const POD_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Writes the pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` into `dir`: the
/// node's own `hosts` and `resolv.conf` with the host network, else a `hosts` naming
/// localhost and the pod, and the node's `resolv.conf` (the kubelet's DNS policy is not
/// applied yet).
pub(super) fn write_pod_files(dir: &Path, hostname: &str, host_network: bool) -> Result<()> {
    let failed = |what: &str, e: std::io::Error| {
        RuntimeError::Internal(format!("pod files in {}: {what}: {e}", dir.display()))
    };
    let hosts = if host_network {
        std::fs::read("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        )
        .into_bytes()
    };
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    for (name, data) in [
        ("hostname", format!("{hostname}\n").into_bytes()),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        std::fs::write(dir.join(name), data).map_err(|e| failed(name, e))?;
    }
    Ok(())
}

/// Unpins and deletes every namespace under `dir`, the pod's files, then `dir` itself. Idempotent: a missing
/// directory is `Ok`. A namespace lives on while a process is still inside it.
pub(super) fn remove(dir: &Path) -> Result<()> {
    for (name, _) in KINDS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(RuntimeError::Internal(format!(
                    "unmounting {}: {e}",
                    path.display()
                )))
            }
        }
        std::fs::remove_file(&path).or_else(ignore_missing)?;
    }
    for name in POD_FILES {
        std::fs::remove_file(dir.join(name)).or_else(ignore_missing)?;
    }
    std::fs::remove_dir(dir).or_else(ignore_missing)
}

fn ignore_missing(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(RuntimeError::Internal(e.to_string()))
    }
}
