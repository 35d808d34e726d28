#![doc = include_str!("README.md")]

mod attach;
mod behaviour;
mod builder;
mod builtins;
mod fs;
mod httpd;
mod ids;
mod logs;
mod main_process;
#[cfg(test)]
mod main_process_tests;
mod pipe;
mod ports;
mod process;
mod shell;
mod state;
#[cfg(test)]
mod streaming_tests;
mod tar;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::{Result, RuntimeError};
use crate::streaming::{
    AttachRequest, ContainerStats, DuplexStream, ProcessIo, StreamingExecRequest,
};
use crate::types::*;
use crate::{ContainerRuntime, LogStream};
use attach::AttachTarget;
use ids::hex256;
use logs::Follower;
use process::ProcessBase;
use state::{ContainerRecord, SandboxRecord, State, Stop};

/// Exit code of a container killed with SIGKILL (128 + 9).
pub const SIGKILL_EXIT_CODE: i32 = 137;

pub use attach::StdinHandler;
pub use behaviour::{ExecHandler, ExecOutcome, FakeRegistry, ImageBehaviour, ScriptedLine};
pub use builder::FakeRuntimeBuilder;
pub use fs::{normalize_path, FileInfo, FileKind, FileView, FsError, ImageFile};
pub use ports::{echo_server, http_server, port_handler, PortHandler};
pub use process::{FakeProcess, StreamExecHandler, Terminal};
pub use state::FakeMetrics;

/// The `PATH` of a fake container's processes (busybox's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One node's fake container runtime. Cheap to clone (clones are the same runtime).
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_name: String,
    node_hash: u64,
    clock: Arc<dyn Clock>,
    registry: FakeRegistry,
    allow_unknown_pulls: bool,
    pod_ip_prefix: String,
    /// Containers run their command line ([`FakeRuntimeBuilder::run_commands`]).
    run_commands: bool,
    state: Mutex<State>,
    /// Bumped on every change, for log followers.
    changed: watch::Sender<u64>,
}

impl FakeRuntime {
    /// The node name the runtime was built with.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The runtime's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The registry it pulls from.
    pub fn registry(&self) -> &FakeRegistry {
        &self.inner.registry
    }

    /// Makes every call fail with `Unavailable(reason)` (a crashed runtime) until called
    /// with `None`. State is kept.
    pub fn set_unavailable(&self, reason: Option<&str>) {
        self.inner.state.lock().unavailable = reason.map(str::to_string);
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Kills a running container from outside, as the OOM killer would: it exits now with
    /// `exit_code`, `reason` (for example `OOMKilled`) and `message`. Returns whether it was
    /// running.
    pub fn kill_container(&self, id: &str, exit_code: i32, reason: &str, message: &str) -> bool {
        let now = self.inner.clock.now();
        let mut state = self.inner.state.lock();
        let Some(record) = state.containers.get_mut(id) else {
            return false;
        };
        if record.observe(now).state != ContainerState::Running {
            return false;
        }
        record.stopped = Some(Stop {
            at: now,
            exit_code,
            reason: reason.to_string(),
            message: message.to_string(),
        });
        drop(state);
        self.notify();
        true
    }

    /// What the runtime was asked to do so far.
    pub fn metrics(&self) -> FakeMetrics {
        self.inner.state.lock().metrics
    }

    /// A container's files (see [`FileView`]): what its processes see, for tests to look at
    /// or prepare. Available from creation to removal, whatever the container's state.
    /// `NotFound` for a missing container.
    pub fn files(&self, container_id: &str) -> Result<FileView> {
        let mut state = self.lock()?;
        state.file_view(container_id)
    }

    /// Reads a file in a container (bind mounts read the host). `NotFound` for a missing
    /// container (kind `"container"`) or file (kind `"file"`), `FailedPrecondition` with the
    /// error text for anything else (a directory, ...).
    pub fn read_file(&self, container_id: &str, path: &str) -> Result<Bytes> {
        let files = self.files(container_id)?;
        files.read(path).map_err(|e| file_error(path, e))
    }

    /// Creates or replaces a file in a container; its directory must exist. Errors as for
    /// [`FakeRuntime::read_file`] (a read-only mount is `FailedPrecondition`).
    pub fn write_file(
        &self,
        container_id: &str,
        path: &str,
        contents: impl Into<Bytes>,
    ) -> Result<()> {
        let files = self.files(container_id)?;
        files.write(path, contents).map_err(|e| file_error(path, e))
    }

    /// Makes a running container's main process write `text` (one log line per line of it)
    /// to `stream` now: followers, attached sessions and later reads of the log see it.
    /// `NotFound` for a missing container, `FailedPrecondition` if it is not running.
    pub fn write_log(
        &self,
        container_id: &str,
        stream: OutputStream,
        text: impl Into<Bytes>,
    ) -> Result<()> {
        let text: Bytes = text.into();
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let record = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| RuntimeError::not_found("container", container_id))?;
        if record.observe(now).state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container not running ({container_id})"
            )));
        }
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        for line in body.split(|&b| b == b'\n') {
            record.written_log.push(LogEntry {
                timestamp: now,
                stream,
                line: text.slice_ref(line),
            });
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// Sets a container's resource usage from now on (see [`ImageBehaviour::usage`]): the
    /// cumulative CPU time keeps what was used so far. Memory above the container's limit
    /// ([`LinuxContainerResources::memory_limit_in_bytes`], when set) kills a running
    /// container now, as the OOM killer would: exit code 137, reason `OOMKilled`.
    /// `NotFound` for a missing container.
    pub fn set_usage(
        &self,
        container_id: &str,
        cpu_millicores: u64,
        memory_bytes: u64,
    ) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let record = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| RuntimeError::not_found("container", container_id))?;
        record.set_usage(now, cpu_millicores, memory_bytes);
        let killed = record.enforce_memory_limit(now);
        drop(state);
        if killed {
            self.notify();
        }
        Ok(())
    }

    /// The resources container `container_id` was created with (as the kubelet computed
    /// them). `NotFound` for a missing container.
    pub fn container_resources(&self, container_id: &str) -> Result<LinuxContainerResources> {
        let state = self.lock()?;
        state
            .containers
            .get(container_id)
            .map(|record| record.config.resources)
            .ok_or_else(|| RuntimeError::not_found("container", container_id))
    }

    /// What a process started in a running container begins with. `NotFound` for a missing
    /// container, `FailedPrecondition` for one that is not running.
    fn process_base(&self, state: &mut State, id: &str) -> Result<ProcessBase> {
        let now = self.inner.clock.now();
        let record = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if record.observe(now).state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container not running ({id})"
            )));
        }
        let hostname = state.hostname(id);
        let files = state.file_view(id)?;
        let sandbox_id = state.containers[id].sandbox_id.clone();
        let listeners = state
            .sandboxes
            .get_mut(&sandbox_id)
            .map(|s| s.listeners.get_or_insert_with(Default::default).clone())
            .unwrap_or_default();
        let record = &state.containers[id];
        let mut env = vec![
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ("HOSTNAME".to_string(), hostname.clone()),
        ];
        for kv in &record.config.envs {
            env.retain(|(k, _)| *k != kv.key);
            env.push((kv.key.clone(), kv.value.clone()));
        }
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push(("HOME".to_string(), "/root".to_string()));
        }
        let cwd = match record.config.working_dir.as_str() {
            "" => "/".to_string(),
            dir => normalize_path("/", dir),
        };
        Ok(ProcessBase {
            env,
            cwd,
            hostname,
            files,
            behaviour: record.behaviour.clone(),
            listeners,
        })
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Locks the state, failing if the runtime is marked unavailable.
    fn lock(&self) -> Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.inner.state.lock();
        if let Some(reason) = &state.unavailable {
            return Err(RuntimeError::Unavailable(reason.clone()));
        }
        Ok(state)
    }

    fn next_id(&self, state: &mut State) -> (u64, String) {
        state.seq += 1;
        let seq = state.seq;
        (seq, hex256(self.inner.node_hash, &seq.to_le_bytes(), seq))
    }
}

/// A file error as a runtime error.
fn file_error(path: &str, e: FsError) -> RuntimeError {
    match e {
        FsError::NotFound => RuntimeError::not_found("file", path),
        other => RuntimeError::FailedPrecondition(format!("{path}: {other}")),
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let _state = self.lock()?;
        Ok(RuntimeVersion {
            runtime_name: "fake".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        let meta = &config.metadata;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "sandbox metadata needs a name, a namespace and a uid".into(),
            ));
        }
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        if let Some(existing) = state.sandbox_names.get(meta) {
            return Err(RuntimeError::AlreadyExists {
                kind: "sandbox",
                name: format!(
                    "{}_{}_{}_{}",
                    meta.name, meta.namespace, meta.uid, meta.attempt
                ),
                id: existing.clone(),
            });
        }
        let host_network = config.namespace_options.network == NamespaceMode::Node;
        let ip = if host_network {
            None
        } else {
            Some(state.alloc_ip().ok_or_else(|| {
                RuntimeError::Internal(format!(
                    "no free pod IP left in {}.0/24",
                    self.inner.pod_ip_prefix
                ))
            })?)
        };
        let (seq, id) = self.next_id(&mut state);
        let netns = if host_network {
            String::new()
        } else {
            format!("/var/run/netns/cni-{}", &id[..16])
        };
        state.sandbox_names.insert(meta.clone(), id.clone());
        state.sandboxes.insert(
            id.clone(),
            SandboxRecord {
                seq,
                config,
                created_at: now,
                ready: true,
                ip,
                netns,
                containers: BTreeSet::new(),
                names: HashMap::new(),
                listeners: None,
            },
        );
        state.metrics.sandboxes_run += 1;
        drop(state);
        self.notify();
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let changed = self.lock()?.stop_sandbox(id, now);
        if changed {
            self.notify();
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        if !state.sandboxes.contains_key(id) {
            return Ok(());
        }
        state.stop_sandbox(id, now);
        let containers: Vec<String> = state.sandboxes[id].containers.iter().cloned().collect();
        for c in containers {
            state.remove_container(&c, now);
        }
        if let Some(sandbox) = state.sandboxes.remove(id) {
            state.sandbox_names.remove(&sandbox.config.metadata);
            state.metrics.sandboxes_removed += 1;
        }
        drop(state);
        self.notify();
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let state = self.lock()?;
        let sandbox = state
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", id))?;
        Ok(PodSandboxStatus {
            id: id.to_string(),
            metadata: sandbox.config.metadata.clone(),
            state: if sandbox.ready {
                PodSandboxState::Ready
            } else {
                PodSandboxState::NotReady
            },
            created_at: sandbox.created_at,
            network: PodSandboxNetworkStatus {
                ip: sandbox
                    .ip
                    .map(|ip| format!("{}.{ip}", self.inner.pod_ip_prefix))
                    .unwrap_or_default(),
                additional_ips: Vec::new(),
            },
            network_namespace_path: sandbox.netns.clone(),
            namespace_options: sandbox.config.namespace_options,
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
        })
    }

    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        let state = self.lock()?;
        let mut out: Vec<(u64, PodSandbox)> = state
            .sandboxes
            .iter()
            .map(|(id, s)| {
                (
                    s.seq,
                    PodSandbox {
                        id: id.clone(),
                        metadata: s.config.metadata.clone(),
                        state: if s.ready {
                            PodSandboxState::Ready
                        } else {
                            PodSandboxState::NotReady
                        },
                        created_at: s.created_at,
                        labels: s.config.labels.clone(),
                        annotations: s.config.annotations.clone(),
                    },
                )
            })
            .filter(|(_, s)| filter.matches(s))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        _sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        if config.metadata.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container metadata needs a name".into(),
            ));
        }
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let sandbox = state
            .sandboxes
            .get(pod_sandbox_id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
        if !sandbox.ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "sandbox {pod_sandbox_id} is not ready"
            )));
        }
        if let Some(existing) = sandbox.names.get(&config.metadata) {
            return Err(RuntimeError::AlreadyExists {
                kind: "container",
                name: format!(
                    "{}_{}_{}",
                    config.metadata.name, sandbox.config.metadata.name, config.metadata.attempt
                ),
                id: existing.clone(),
            });
        }
        let log_path = match (
            sandbox.config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            (_, "") => String::new(),
            ("", path) => path.to_string(),
            (dir, path) => format!("{}/{path}", dir.trim_end_matches('/')),
        };
        let image =
            state
                .find_image(&config.image.image)
                .ok_or_else(|| RuntimeError::ImageNotFound {
                    image: config.image.image.clone(),
                })?;
        let (image_ref, behaviour) = (image.image.id.clone(), image.behaviour.clone());
        let (seq, id) = self.next_id(&mut state);
        let sandbox = state
            .sandboxes
            .get_mut(pod_sandbox_id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
        sandbox.containers.insert(id.clone());
        sandbox.names.insert(config.metadata.clone(), id.clone());
        state.containers.insert(
            id.clone(),
            ContainerRecord {
                seq,
                sandbox_id: pod_sandbox_id.to_string(),
                config,
                image_ref,
                behaviour,
                created_at: now,
                log_path,
                start_requested: None,
                stopped: None,
                files: None,
                written_log: Vec::new(),
                usage: None,
                main: None,
            },
        );
        state.metrics.containers_created += 1;
        drop(state);
        self.notify();
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let record = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if record.start_requested.is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} was already started"
            )));
        }
        record.start_requested = Some(now);
        let started = main_process::on_start(record, now, self.inner.run_commands);
        state.metrics.containers_started += 1;
        drop(state);
        self.notify();
        if let Some((argv, stdin)) = started? {
            main_process::spawn(self.clone(), id.to_string(), argv, stdin);
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let stopped = state
            .containers
            .get_mut(id)
            .is_some_and(|record| record.stop(now, grace_period));
        if stopped {
            state.metrics.containers_stopped += 1;
            drop(state);
            self.notify();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let removed = self.lock()?.remove_container(id, now);
        if removed {
            self.notify();
        }
        Ok(())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let now = self.inner.clock.now();
        let state = self.lock()?;
        let record = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        let observed = record.observe(now);
        Ok(ContainerStatus {
            id: id.to_string(),
            metadata: record.config.metadata.clone(),
            state: observed.state,
            created_at: record.created_at,
            started_at: observed.started_at,
            finished_at: observed.finished_at,
            exit_code: observed.exit_code,
            image: record.config.image.clone(),
            image_ref: record.image_ref.clone(),
            reason: observed.reason,
            message: observed.message,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            mounts: record.config.mounts.clone(),
            log_path: record.log_path.clone(),
        })
    }

    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>> {
        let now = self.inner.clock.now();
        let state = self.lock()?;
        let mut out: Vec<(u64, Container)> = state
            .containers
            .iter()
            .filter(|(_, c)| {
                filter
                    .pod_sandbox_id
                    .as_deref()
                    .is_none_or(|p| c.sandbox_id == p)
            })
            .map(|(id, c)| (c.seq, c.to_container(id, now)))
            .filter(|(_, c)| filter.matches(c))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let now = self.inner.clock.now();
        let lines = {
            let state = self.lock()?;
            state
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::not_found("container", id))?
                .log(now)
        };
        let mut lines: Vec<LogEntry> = lines
            .into_iter()
            .filter(|l| options.since.is_none_or(|s| l.timestamp >= s))
            .collect();
        let written = lines.len();
        if let Some(tail) = options.tail {
            lines.drain(..lines.len().saturating_sub(tail));
        }
        let first = futures::stream::iter(lines.into_iter().map(Ok));
        if !options.follow {
            return Ok(Box::pin(first));
        }
        let follower = Follower {
            runtime: self.clone(),
            id: id.to_string(),
            since: options.since,
            emitted: written,
            pending: VecDeque::new(),
        };
        let rest = futures::stream::unfold(follower, |mut f| async move {
            f.next().await.map(|entry| (entry, f))
        });
        Ok(Box::pin(futures::StreamExt::chain(first, rest)))
    }

    async fn exec(&self, request: StreamingExecRequest) -> Result<ProcessIo> {
        if request.cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec needs a command".into()));
        }
        if request.stdio.tty && request.stdio.stderr {
            return Err(RuntimeError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let base = {
            let mut state = self.lock()?;
            let base = self.process_base(&mut state, &request.container_id)?;
            state.metrics.execs += 1;
            base
        };
        Ok(process::start_exec(
            self.clone(),
            request.container_id,
            base,
            request.cmd,
            request.stdio,
        ))
    }

    async fn attach(&self, request: AttachRequest) -> Result<ProcessIo> {
        if request.stdio.tty && request.stdio.stderr {
            return Err(RuntimeError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let now = self.inner.clock.now();
        let target = {
            let state = self.lock()?;
            let id = &request.container_id;
            let record = state
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::not_found("container", id))?;
            if record.observe(now).state != ContainerState::Running {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "container not running ({id})"
                )));
            }
            AttachTarget {
                id: id.clone(),
                written: record.log(now).len(),
                stdin_open: record.config.stdin,
                tty: record.config.tty,
                handler: record.behaviour.stdin_handler.clone(),
                main_stdin: record.main.as_ref().and_then(|m| m.stdin.clone()),
                main_output: record
                    .main
                    .as_ref()
                    .and_then(|m| m.output.as_ref())
                    .map(|output| output.subscribe()),
            }
        };
        Ok(attach::start_attach(self.clone(), target, request.stdio))
    }

    async fn port_forward(&self, pod_sandbox_id: &str, port: u16) -> Result<DuplexStream> {
        let now = self.inner.clock.now();
        let (handler, gone) = {
            let state = self.lock()?;
            let sandbox = state
                .sandboxes
                .get(pod_sandbox_id)
                .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
            if !sandbox.ready {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "sandbox {pod_sandbox_id} is not ready"
                )));
            }
            // A process's port first, then one the image scripts for a running container;
            // the connection is reset when the listener goes away.
            let process = sandbox.listeners.as_ref().and_then(|l| l.get(port));
            let listening = process.or_else(|| {
                sandbox.containers.iter().find_map(|id| {
                    let record = state.containers.get(id)?;
                    let handler = record.behaviour.ports.get(&port)?;
                    let (runtime, id) = (self.clone(), id.clone());
                    let gone: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                        process::until_not_running(&runtime, &id).await;
                    });
                    (record.observe(now).state == ContainerState::Running)
                        .then(|| (handler.clone(), gone))
                })
            });
            listening.ok_or_else(|| {
                RuntimeError::Unavailable(format!(
                    "failed to connect to localhost:{port} inside namespace \"{pod_sandbox_id}\", \
                     IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused \
                     IPv6 dial tcp6 [::1]:{port}: connect: connection refused"
                ))
            })?
        };
        let (client, server) = tokio::io::duplex(pipe::PIPE_CAPACITY);
        tokio::spawn(futures::future::select(handler(server), gone));
        Ok(Box::new(client))
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let now = self.inner.clock.now();
        let state = self.lock()?;
        let usage = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?
            .usage_at(now);
        Ok(ContainerStats {
            container_id: id.to_string(),
            timestamp: now,
            cpu_usage_core_nanoseconds: usage.cpu_nanos,
            cpu_usage_nano_cores: Some(usage.cpu_millicores.saturating_mul(1_000_000)),
            memory_working_set_bytes: usage.memory_bytes,
            memory_usage_bytes: usage.memory_bytes,
        })
    }

    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse> {
        let Some(command) = request.cmd.first() else {
            return Err(RuntimeError::InvalidArgument("exec needs a command".into()));
        };
        let now = self.inner.clock.now();
        let behaviour = {
            let mut state = self.lock()?;
            let record = state
                .containers
                .get(&request.container_id)
                .ok_or_else(|| RuntimeError::not_found("container", &request.container_id))?;
            let observed = record.observe(now);
            if observed.state != ContainerState::Running {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "container {} is not running ({:?})",
                    request.container_id, observed.state
                )));
            }
            let behaviour = record.behaviour.clone();
            state.metrics.execs += 1;
            behaviour
        };
        let outcome = match behaviour.exec.get(command) {
            Some(handler) => handler(&request.cmd),
            None => {
                // Streaming handlers and built-in commands, with no stdin.
                let base = {
                    let mut state = self.lock()?;
                    self.process_base(&mut state, &request.container_id)?
                };
                let (code, stdout, stderr) = process::run_collected(
                    self,
                    &request.container_id,
                    base,
                    request.cmd.clone(),
                    request.timeout,
                )
                .await?;
                return Ok(ExecResponse::new(code).stdout(stdout).stderr(stderr));
            }
        };
        match request.timeout {
            Some(timeout) if outcome.duration > timeout => Err(RuntimeError::Timeout(timeout)),
            _ => Ok(outcome.response),
        }
    }

    async fn pull_image(&self, image: &ImageSpec) -> Result<String> {
        let reference = normalize_image_ref(&image.image);
        if image.image.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "empty image reference".into(),
            ));
        }
        drop(self.lock()?);
        let served = self.inner.registry.get(&reference);
        let behaviour = match served {
            Some(behaviour) => match &behaviour.pull_error {
                Some(reason) => Err(reason.clone()),
                None => Ok(behaviour),
            },
            None if self.inner.allow_unknown_pulls => Ok(Arc::default()),
            None => Err(format!(
                "failed to resolve reference {reference:?}: {reference}: not found"
            )),
        };
        let mut state = self.lock()?;
        match behaviour {
            Ok(behaviour) => {
                let image = state.add_image(&reference, None, behaviour);
                state.metrics.images_pulled += 1;
                Ok(image.id)
            }
            Err(reason) => {
                state.metrics.image_pull_failures += 1;
                Err(RuntimeError::ImagePullFailed {
                    image: image.image.clone(),
                    reason,
                })
            }
        }
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        let state = self.lock()?;
        Ok(state.find_image(&image.image).map(|r| r.image.clone()))
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let state = self.lock()?;
        Ok(state.images.values().map(|r| r.image.clone()).collect())
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        let mut state = self.lock()?;
        let Some(id) = state.find_image(&image.image).map(|r| r.image.id.clone()) else {
            return Ok(());
        };
        if let Some(record) = state.images.remove(&id) {
            for tag in record.image.repo_tags {
                state.image_refs.remove(&tag);
            }
        }
        Ok(())
    }

    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>> {
        let indexed = crate::oci::read_index(&archive)?;
        let mut state = self.lock()?;
        Ok(indexed
            .into_iter()
            .map(|i| {
                let reference = normalize_image_ref(&i.name);
                let behaviour = self.inner.registry.get(&reference).unwrap_or_default();
                state.add_image(&reference, Some(i.digest), behaviour)
            })
            .collect())
    }
}
