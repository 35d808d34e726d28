//! What a fake runtime keeps: its sandboxes, containers and images, its counters
//! ([`FakeMetrics`]), and how a container's state, exit and log follow from its record and the
//! clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::fs::FileView;
use super::ids::{fnv1a, hex256};
use super::main_process::{MainProcess, SIGTERM_EXIT_CODE};
use super::ports::Listeners;
use super::{ImageBehaviour, SIGKILL_EXIT_CODE};
use crate::error::RuntimeError;
use crate::types::*;

/// Counters of what a fake runtime was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FakeMetrics {
    /// Sandboxes run.
    pub sandboxes_run: u64,
    /// Sandboxes stopped (transitions from `Ready`).
    pub sandboxes_stopped: u64,
    /// Sandboxes removed.
    pub sandboxes_removed: u64,
    /// Containers created.
    pub containers_created: u64,
    /// Containers started.
    pub containers_started: u64,
    /// Containers stopped by a call while running (explicitly or by a cascade).
    pub containers_stopped: u64,
    /// Containers removed.
    pub containers_removed: u64,
    /// Successful pulls.
    pub images_pulled: u64,
    /// Failed pulls.
    pub image_pull_failures: u64,
    /// Exec calls that reached a container.
    pub execs: u64,
}

/// The reason of a container killed for going over its memory limit.
pub(super) const OOM_KILLED: &str = "OOMKilled";

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) seq: u64,
    pub(super) unavailable: Option<String>,
    pub(super) sandboxes: HashMap<String, SandboxRecord>,
    pub(super) sandbox_names: HashMap<PodSandboxMetadata, String>,
    pub(super) containers: HashMap<String, ContainerRecord>,
    /// Image records by id.
    pub(super) images: BTreeMap<String, ImageRecord>,
    /// Image ids by normalised reference.
    pub(super) image_refs: HashMap<String, String>,
    pub(super) next_ip: u8,
    pub(super) free_ips: BTreeSet<u8>,
    pub(super) metrics: FakeMetrics,
}

#[derive(Debug)]
pub(super) struct SandboxRecord {
    pub(super) seq: u64,
    pub(super) config: PodSandboxConfig,
    pub(super) created_at: SystemTime,
    pub(super) ready: bool,
    pub(super) ip: Option<u8>,
    pub(super) netns: String,
    pub(super) containers: BTreeSet<String>,
    /// Container names (name, attempt) reserved in this sandbox.
    pub(super) names: HashMap<ContainerMetadata, String>,
    /// The ports its processes listen on (made when its first process starts).
    pub(super) listeners: Option<Listeners>,
}

#[derive(Debug)]
pub(super) struct ContainerRecord {
    pub(super) seq: u64,
    pub(super) sandbox_id: String,
    pub(super) config: ContainerConfig,
    pub(super) image_ref: String,
    pub(super) behaviour: Arc<ImageBehaviour>,
    pub(super) created_at: SystemTime,
    pub(super) log_path: String,
    pub(super) start_requested: Option<SystemTime>,
    pub(super) stopped: Option<Stop>,
    /// The container's files, built on first use.
    pub(super) files: Option<FileView>,
    /// Lines written to the log at run time (attached stdin, `FakeRuntime::write_log`).
    pub(super) written_log: Vec<LogEntry>,
    /// Usage set with `FakeRuntime::set_usage`, replacing the image's.
    pub(super) usage: Option<UsageChange>,
    /// Its command line, when it runs as the main process (`run_commands`).
    pub(super) main: Option<Box<MainProcess>>,
}

/// A change of a container's resource usage at `since`.
#[derive(Debug, Clone, Copy)]
pub(super) struct UsageChange {
    pub(super) since: SystemTime,
    /// CPU time used before `since`, in nanoseconds.
    pub(super) cpu_nanos_before: u64,
    pub(super) cpu_millicores: u64,
    pub(super) memory_bytes: u64,
}

/// A container's usage at one instant: cumulative CPU nanoseconds, CPU rate in millicores,
/// memory in bytes (all zero unless running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Usage {
    pub(super) cpu_nanos: u64,
    pub(super) cpu_millicores: u64,
    pub(super) memory_bytes: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Stop {
    pub(super) at: SystemTime,
    pub(super) exit_code: i32,
    pub(super) reason: String,
    pub(super) message: String,
}

#[derive(Debug)]
pub(super) struct ImageRecord {
    pub(super) image: Image,
    pub(super) behaviour: Arc<ImageBehaviour>,
}

/// A container's state at one instant.
#[derive(Debug)]
pub(super) struct Observed {
    pub(super) state: ContainerState,
    pub(super) started_at: Option<SystemTime>,
    pub(super) finished_at: Option<SystemTime>,
    pub(super) exit_code: Option<i32>,
    pub(super) reason: String,
    pub(super) message: String,
}

impl ContainerRecord {
    fn running_at(&self) -> Option<SystemTime> {
        self.start_requested.map(|s| s + self.behaviour.start_delay)
    }

    pub(super) fn observe(&self, now: SystemTime) -> Observed {
        let created = Observed {
            state: ContainerState::Created,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
        };
        let Some(running_at) = self.running_at() else {
            return created;
        };
        if let Some(stop) = &self.stopped {
            return Observed {
                state: ContainerState::Exited,
                started_at: (running_at <= stop.at).then_some(running_at),
                finished_at: Some(stop.at),
                exit_code: Some(stop.exit_code),
                reason: stop.reason.clone(),
                message: stop.message.clone(),
            };
        }
        if now < running_at {
            return created;
        }
        if self.usage.is_none() && self.over_memory_limit(self.behaviour.memory_bytes) {
            // The image's own use is over the limit: killed as it starts.
            return Observed {
                state: ContainerState::Exited,
                started_at: Some(running_at),
                finished_at: Some(running_at),
                exit_code: Some(SIGKILL_EXIT_CODE),
                reason: OOM_KILLED.into(),
                message: String::new(),
            };
        }
        match self.behaviour.natural_exit(running_at) {
            Some((at, code)) if now >= at => Observed {
                state: ContainerState::Exited,
                started_at: Some(running_at),
                finished_at: Some(at),
                exit_code: Some(code),
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: String::new(),
            },
            _ => Observed {
                state: ContainerState::Running,
                started_at: Some(running_at),
                ..created
            },
        }
    }

    /// Records a stop at `now` if the container is starting or running; returns whether it
    /// was.
    pub(super) fn stop(&mut self, now: SystemTime, grace: Duration) -> bool {
        if self.start_requested.is_none() {
            return false;
        }
        if self.observe(now).state == ContainerState::Exited {
            return false;
        }
        let (exit_code, how) = if grace.is_zero() {
            (SIGKILL_EXIT_CODE, "killed (grace period 0s)".to_string())
        } else {
            let code = match (self.behaviour.term_exit_code, &self.main) {
                (0, Some(_)) => SIGTERM_EXIT_CODE,
                (code, _) => code,
            };
            (code, format!("stopped with a grace period of {grace:?}"))
        };
        self.stopped = Some(Stop {
            at: now,
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: how,
        });
        true
    }

    /// The log lines written by `now`.
    pub(super) fn log(&self, now: SystemTime) -> Vec<LogEntry> {
        let Some(running_at) = self.running_at() else {
            return Vec::new();
        };
        let observed = self.observe(now);
        let until = observed.finished_at.map_or(now, |f| f.min(now));
        if observed.started_at.is_none() {
            return Vec::new();
        }
        let mut lines: Vec<LogEntry> = self
            .behaviour
            .log_lines
            .iter()
            .map(|l| (running_at + l.after, l))
            .take_while(|(at, _)| *at <= until)
            .map(|(timestamp, l)| LogEntry {
                timestamp,
                stream: l.stream,
                line: l.text.clone(),
            })
            .collect();
        if !self.written_log.is_empty() {
            lines.extend(
                self.written_log
                    .iter()
                    .filter(|l| l.timestamp <= until)
                    .cloned(),
            );
            // Stable: a scripted line comes before a written one of the same instant.
            lines.sort_by_key(|l| l.timestamp);
        }
        lines
    }

    /// The CPU rate (millicores) and memory in effect, and since when (`None`: the image's,
    /// since the start).
    fn usage_rates(&self) -> (Option<UsageChange>, u64, u64) {
        match self.usage {
            Some(change) => (Some(change), change.cpu_millicores, change.memory_bytes),
            None => (
                None,
                self.behaviour.cpu_millicores,
                self.behaviour.memory_bytes,
            ),
        }
    }

    /// CPU nanoseconds used by `now` (cumulative over the time it ran).
    fn cpu_nanos(&self, now: SystemTime) -> u64 {
        let observed = self.observe(now);
        let Some(started) = observed.started_at else {
            return self.usage.map_or(0, |u| u.cpu_nanos_before);
        };
        let end = observed.finished_at.map_or(now, |f| f.min(now));
        let (change, millicores, _) = self.usage_rates();
        let (from, before) = match change {
            Some(c) => (c.since.max(started), c.cpu_nanos_before),
            None => (started, 0),
        };
        let ran = end.duration_since(from).unwrap_or_default().as_nanos();
        let used = ran.saturating_mul(u128::from(millicores)) / 1000;
        before.saturating_add(u64::try_from(used).unwrap_or(u64::MAX))
    }

    /// The container's usage at `now`: zero unless running.
    pub(super) fn usage_at(&self, now: SystemTime) -> Usage {
        if self.observe(now).state != ContainerState::Running {
            return Usage::default();
        }
        let (_, cpu_millicores, memory_bytes) = self.usage_rates();
        Usage {
            cpu_nanos: self.cpu_nanos(now),
            cpu_millicores,
            memory_bytes,
        }
    }

    /// Whether `memory_bytes` is over the container's memory limit (if it has one).
    fn over_memory_limit(&self, memory_bytes: u64) -> bool {
        let limit = self.config.resources.memory_limit_in_bytes;
        limit > 0 && u64::try_from(limit).is_ok_and(|limit| memory_bytes > limit)
    }

    /// Kills the container at `now` (exit code 137, `OOMKilled`) if it runs and its usage is
    /// over its memory limit; returns whether it did.
    pub(super) fn enforce_memory_limit(&mut self, now: SystemTime) -> bool {
        let (_, _, memory_bytes) = self.usage_rates();
        if !self.over_memory_limit(memory_bytes)
            || self.observe(now).state != ContainerState::Running
        {
            return false;
        }
        self.stopped = Some(Stop {
            at: now,
            exit_code: SIGKILL_EXIT_CODE,
            reason: OOM_KILLED.into(),
            message: String::new(),
        });
        true
    }

    /// Changes the usage from `now` on.
    pub(super) fn set_usage(&mut self, now: SystemTime, cpu_millicores: u64, memory_bytes: u64) {
        // An exit computed from the image's behaviour (its own usage over the limit, say)
        // must not depend on the new usage: record it first.
        let observed = self.observe(now);
        if observed.state == ContainerState::Exited && self.stopped.is_none() {
            self.stopped = Some(Stop {
                at: observed.finished_at.unwrap_or(now),
                exit_code: observed.exit_code.unwrap_or_default(),
                reason: observed.reason,
                message: observed.message,
            });
        }
        let cpu_nanos_before = self.cpu_nanos(now);
        self.usage = Some(UsageChange {
            since: now,
            cpu_nanos_before,
            cpu_millicores,
            memory_bytes,
        });
    }

    pub(super) fn to_container(&self, id: &str, now: SystemTime) -> Container {
        Container {
            id: id.to_string(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.config.image.clone(),
            image_ref: self.image_ref.clone(),
            state: self.observe(now).state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
        }
    }
}

impl State {
    pub(super) fn add_image(
        &mut self,
        reference: &str,
        id: Option<String>,
        behaviour: Arc<ImageBehaviour>,
    ) -> Image {
        let id = id.unwrap_or_else(|| {
            let h = fnv1a(0x1b87_3593_cc9e_2d51, reference.as_bytes());
            format!(
                "sha256:{}",
                hex256(h, reference.as_bytes(), h.rotate_left(17))
            )
        });
        if let Some(old) = self.image_refs.insert(reference.to_string(), id.clone()) {
            if old != id {
                if let Some(record) = self.images.get_mut(&old) {
                    record.image.repo_tags.retain(|t| t != reference);
                    if record.image.repo_tags.is_empty() {
                        self.images.remove(&old);
                    }
                }
            }
        }
        let record = self
            .images
            .entry(id.clone())
            .or_insert_with(|| ImageRecord {
                image: Image {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                    size: behaviour.size.unwrap_or(1 << 20),
                    pinned: false,
                },
                behaviour: behaviour.clone(),
            });
        record.behaviour = behaviour;
        if !record.image.repo_tags.iter().any(|t| t == reference) {
            record.image.repo_tags.push(reference.to_string());
        }
        record.image.clone()
    }

    pub(super) fn find_image(&self, image: &str) -> Option<&ImageRecord> {
        if let Some(record) = self.images.get(image) {
            return Some(record);
        }
        let id = self.image_refs.get(&normalize_image_ref(image))?;
        self.images.get(id)
    }

    pub(super) fn alloc_ip(&mut self) -> Option<u8> {
        if let Some(ip) = self.free_ips.pop_first() {
            return Some(ip);
        }
        if self.next_ip < 2 {
            self.next_ip = 2;
        }
        if self.next_ip == 255 {
            return None;
        }
        self.next_ip += 1;
        Some(self.next_ip - 1)
    }

    /// Stops `id`'s containers and tears its network down. Returns whether it changed.
    pub(super) fn stop_sandbox(&mut self, id: &str, now: SystemTime) -> bool {
        let Some(sandbox) = self.sandboxes.get_mut(id) else {
            return false;
        };
        let containers: Vec<String> = sandbox.containers.iter().cloned().collect();
        let was_ready = std::mem::replace(&mut sandbox.ready, false);
        let ip = sandbox.ip.take();
        let mut changed = was_ready;
        for c in containers {
            if let Some(record) = self.containers.get_mut(&c) {
                if record.stop(now, Duration::ZERO) {
                    self.metrics.containers_stopped += 1;
                    changed = true;
                }
            }
        }
        if let Some(ip) = ip {
            self.free_ips.insert(ip);
        }
        if was_ready {
            self.metrics.sandboxes_stopped += 1;
        }
        changed
    }

    /// The hostname of container `id`'s sandbox (its config's, or the pod's name).
    pub(super) fn hostname(&self, id: &str) -> String {
        let Some(record) = self.containers.get(id) else {
            return String::new();
        };
        match self.sandboxes.get(&record.sandbox_id) {
            Some(s) if !s.config.hostname.is_empty() => s.config.hostname.clone(),
            Some(s) => s.config.metadata.name.clone(),
            None => String::new(),
        }
    }

    /// Container `id`'s files, built on first use. `NotFound` for a missing container.
    pub(super) fn file_view(&mut self, id: &str) -> Result<FileView, RuntimeError> {
        let hostname = self.hostname(id);
        let record = self
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        Ok(record
            .files
            .get_or_insert_with(|| {
                FileView::new(&record.behaviour.files, &record.config.mounts, &hostname)
            })
            .clone())
    }

    pub(super) fn remove_container(&mut self, id: &str, now: SystemTime) -> bool {
        let Some(mut record) = self.containers.remove(id) else {
            return false;
        };
        if record.stop(now, Duration::ZERO) {
            self.metrics.containers_stopped += 1;
        }
        if let Some(sandbox) = self.sandboxes.get_mut(&record.sandbox_id) {
            sandbox.containers.remove(id);
            sandbox.names.remove(&record.config.metadata);
        }
        self.metrics.containers_removed += 1;
        true
    }
}
