//! Container stats (CRI's `ContainerStats`), read from the container's cgroup: the path is
//! the `linux.cgroupsPath` of its OCI spec (runc's cgroupfs layout), under cgroup v2's unified
//! hierarchy or cgroup v1's `cpuacct` and `memory` controllers.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::status::observe;
use super::{internal, ContainerdRuntime};
use crate::error::{Result, RuntimeError};
use crate::streaming::ContainerStats;
use crate::types::ContainerState;

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub(super) async fn container_stats(
    runtime: &ContainerdRuntime,
    id: &str,
) -> Result<ContainerStats> {
    let object = runtime
        .get_object(id, "container")
        .await?
        .ok_or_else(|| RuntimeError::not_found("container", id))?;
    let task = runtime.get_task(id).await?;
    let timestamp = SystemTime::now();
    let mut stats = ContainerStats {
        container_id: id.to_string(),
        timestamp,
        cpu_usage_core_nanoseconds: 0,
        cpu_usage_nano_cores: None,
        memory_working_set_bytes: 0,
        memory_usage_bytes: 0,
    };
    if observe(&object.labels, task.as_ref()).state != ContainerState::Running {
        return Ok(stats);
    }
    let spec: serde_json::Value = serde_json::from_slice(
        &object
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default(),
    )
    .map_err(|e| internal("decoding a container spec", e))?;
    let Some(cgroup) = spec["linux"]["cgroupsPath"].as_str() else {
        return Ok(stats);
    };
    match read_usage(Path::new(CGROUP_ROOT), cgroup) {
        Ok(usage) => {
            stats.cpu_usage_core_nanoseconds = usage.cpu_nanoseconds;
            stats.memory_usage_bytes = usage.memory;
            stats.memory_working_set_bytes = usage.memory.saturating_sub(usage.inactive_file);
            Ok(stats)
        }
        // The container exited meanwhile and runc removed its cgroup.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(stats),
        Err(e) => Err(internal(&format!("reading the cgroup {cgroup}"), e)),
    }
}

/// A cgroup's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    cpu_nanoseconds: u64,
    memory: u64,
    inactive_file: u64,
}

/// Reads the cgroup at `cgroup` (relative to the hierarchy's root) under `root`: cgroup v2
/// when `root` is the unified hierarchy (it has `cgroup.controllers`), else v1.
fn read_usage(root: &Path, cgroup: &str) -> io::Result<Usage> {
    let relative = cgroup.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(relative);
        Ok(Usage {
            cpu_nanoseconds: stat_field(&dir.join("cpu.stat"), "usage_usec")?.saturating_mul(1000),
            memory: read_number(&dir.join("memory.current"))?,
            inactive_file: stat_field(&dir.join("memory.stat"), "inactive_file")?,
        })
    } else {
        let controller = |name: &str| -> PathBuf { root.join(name).join(relative) };
        Ok(Usage {
            cpu_nanoseconds: read_number(&controller("cpuacct").join("cpuacct.usage"))?,
            memory: read_number(&controller("memory").join("memory.usage_in_bytes"))?,
            inactive_file: stat_field(
                &controller("memory").join("memory.stat"),
                "total_inactive_file",
            )?,
        })
    }
}

/// How many processes of the cgroup at `cgroup` the kernel's OOM killer killed: cgroup v2's
/// `memory.events` or v1's `memory.oom_control`, both `oom_kill`.
fn oom_kills(root: &Path, cgroup: &str) -> io::Result<u64> {
    let relative = cgroup.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        stat_field(&root.join(relative).join("memory.events"), "oom_kill")
    } else {
        stat_field(
            &root
                .join("memory")
                .join(relative)
                .join("memory.oom_control"),
            "oom_kill",
        )
    }
}

/// Whether the OOM killer killed a process of the container's cgroup (`cgroup` is its
/// spec's `linux.cgroupsPath`). Read after its task stopped and before the task is deleted
/// (runc removes the cgroup then); a cgroup that is gone or unreadable reads as no kill.
pub(super) fn oom_killed(cgroup: &str) -> bool {
    oom_kills(Path::new(CGROUP_ROOT), cgroup).is_ok_and(|kills| kills > 0)
}

/// The `linux.cgroupsPath` of a container object's OCI spec.
pub(super) fn cgroup_of(object: &containerd_client::services::v1::Container) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&object.spec.as_ref()?.value).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// Whether the host accounts swap per cgroup (v1's `memory.memsw.*`, v2's
/// `memory.swap.max` beside this process's cgroup), so a swap limit can be set.
pub(super) fn swap_accounted() -> bool {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        own.lines()
            .find_map(|line| line.strip_prefix("0::"))
            .is_some_and(|path| {
                root.join(path.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            })
    } else {
        root.join("memory/memory.memsw.limit_in_bytes").exists()
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn read_number(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| invalid(path, "not a number"))
}

/// The value of `key` in a flat-keyed file (`key value` per line); 0 when the key is absent.
fn stat_field(path: &Path, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            if k == key {
                return v.trim().parse().map_err(|_| invalid(path, key));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capstan-stats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_figures_come_from_cpu_stat_and_memory_files() {
        let root = scratch("v2");
        write(root.join("cgroup.controllers"), "cpu memory\n");
        let dir = root.join("capstan/abc");
        write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n");
        write(dir.join("memory.current"), "4096000\n");
        write(dir.join("memory.stat"), "anon 100\ninactive_file 96000\n");
        let usage = read_usage(&root, "/capstan/abc").unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_nanoseconds: 1_500_000,
                memory: 4_096_000,
                inactive_file: 96_000
            }
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn oom_kills_come_from_memory_events_or_the_v1_oom_control() {
        let root = scratch("oom-v2");
        write(root.join("cgroup.controllers"), "cpu memory\n");
        write(
            root.join("capstan/abc/memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(
            root.join("capstan/calm/memory.events"),
            "max 0\noom 0\noom_kill 0\n",
        );
        assert_eq!(oom_kills(&root, "/capstan/abc").unwrap(), 1);
        assert_eq!(oom_kills(&root, "/capstan/calm").unwrap(), 0);
        std::fs::remove_dir_all(root).unwrap();

        let root = scratch("oom-v1");
        write(
            root.join("memory/capstan/abc/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        assert_eq!(oom_kills(&root, "/capstan/abc").unwrap(), 2);
        assert_eq!(
            oom_kills(&root, "/capstan/gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cgroup_v1_figures_come_from_cpuacct_and_memory_controllers() {
        let root = scratch("v1");
        write(
            root.join("cpuacct/capstan/abc/cpuacct.usage"),
            "123456789\n",
        );
        write(
            root.join("memory/capstan/abc/memory.usage_in_bytes"),
            "8192\n",
        );
        write(
            root.join("memory/capstan/abc/memory.stat"),
            "cache 10\ninactive_file 1\ntotal_inactive_file 4096\n",
        );
        let usage = read_usage(&root, "/capstan/abc").unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_nanoseconds: 123_456_789,
                memory: 8192,
                inactive_file: 4096
            }
        );
        assert_eq!(
            read_usage(&root, "/capstan/gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
