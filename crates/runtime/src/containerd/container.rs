//! Containers: creating one (a snapshot and a containerd object with its OCI spec), starting
//! its task, stopping and removing it, and reporting its status; the container calls of
//! [`ContainerRuntime`](crate::ContainerRuntime).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::types::Mount as RootfsMount;
use prost_types::Any;

use super::spec::{self, PodNamespacePaths};
use super::status::{nanos_label, observe, Observed};
use super::{
    internal, is_not_found, map_status, new_id, record_any, record_of, to_time, ContainerRecord,
    ContainerdRuntime, EXTENSION, LABEL_EXIT_CODE, LABEL_FINISHED, LABEL_KIND, LABEL_MESSAGE,
    LABEL_REASON, LABEL_SANDBOX, LABEL_STARTED, SIGKILL, SPEC_TYPE_URL,
};
use crate::error::{Result, RuntimeError};
use crate::types::*;

impl ContainerdRuntime {
    fn container_view(
        object: &api::Container,
        record: &ContainerRecord,
        task: Option<&containerd_client::types::v1::Process>,
    ) -> (Container, Observed) {
        let observed = observe(&object.labels, task);
        (
            Container {
                id: object.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: record.config.metadata.clone(),
                image: record.config.image.clone(),
                image_ref: record.image_ref.clone(),
                state: observed.state,
                created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            },
            observed,
        )
    }
}

pub(super) async fn create_container(
    runtime: &ContainerdRuntime,
    pod_sandbox_id: &str,
    config: ContainerConfig,
    sandbox_config: &PodSandboxConfig,
) -> Result<String> {
    if config.metadata.name.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "a container needs a name".into(),
        ));
    }
    if config.log_path.starts_with('/') || config.log_path.split('/').any(|p| p == "..") {
        return Err(RuntimeError::InvalidArgument(format!(
            "log path {:?} must be relative to the sandbox's log directory",
            config.log_path
        )));
    }
    let lock = runtime
        .inner
        .sandbox_locks
        .lock()
        .entry(pod_sandbox_id.to_string())
        .or_default()
        .clone();
    let _guard = lock.lock().await;
    let (object, sandbox) = runtime
        .sandbox(pod_sandbox_id)
        .await?
        .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
    if ContainerdRuntime::sandbox_state(&object) != PodSandboxState::Ready {
        return Err(RuntimeError::FailedPrecondition(format!(
            "sandbox {pod_sandbox_id} is not ready"
        )));
    }
    for existing in runtime.containers_of(pod_sandbox_id).await? {
        let record: ContainerRecord = record_of(&existing)?;
        if record.config.metadata == config.metadata {
            return Err(RuntimeError::AlreadyExists {
                kind: "container",
                name: format!("{}_{}", config.metadata.name, config.metadata.attempt),
                id: existing.id,
            });
        }
    }
    let image = runtime
        .find_image(&config.image.image)
        .await?
        .ok_or_else(|| RuntimeError::ImageNotFound {
            image: config.image.image.clone(),
        })?;
    let id = new_id()?;
    // The sandbox's own record is authoritative; the caller's copy fills a gap.
    let parent = [&sandbox.config.cgroup_parent, &sandbox_config.cgroup_parent]
        .into_iter()
        .find(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| runtime.inner.config.cgroup_parent.clone());
    let cgroups_path = format!("{}/{id}", parent.trim_end_matches('/'));
    let paths = PodNamespacePaths {
        network: sandbox.network_namespace_path.clone(),
        ipc: sandbox.ipc_namespace_path.clone(),
        uts: sandbox.uts_namespace_path.clone(),
        etc_dir: sandbox.dir.clone(),
    };
    let spec = spec::container_spec(
        &config,
        &sandbox.config,
        &image.config,
        &paths,
        &cgroups_path,
    )?;
    let log_path = Path::new(&sandbox.config.log_directory)
        .join(&config.log_path)
        .to_string_lossy()
        .into_owned();
    let record = ContainerRecord {
        sandbox_id: pod_sandbox_id.to_string(),
        config: config.clone(),
        image_ref: image.image.id.clone(),
        log_path,
    };
    let normalized = normalize_image_ref(&config.image.image);
    let snapshotter = runtime.inner.config.snapshotter.clone();
    runtime
        .with_lease(|lease| async move {
            runtime
                .inner
                .client
                .snapshots()
                .prepare(runtime.leased(
                    snap::PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: id.clone(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    &lease,
                )?)
                .await
                .map_err(|s| map_status(s, "container", &id))?;
            let object = api::Container {
                id: id.clone(),
                labels: [
                    (LABEL_KIND.to_string(), "container".to_string()),
                    (LABEL_SANDBOX.to_string(), pod_sandbox_id.to_string()),
                ]
                .into(),
                image: normalized,
                runtime: Some(api::container::Runtime {
                    name: runtime.inner.config.runtime.clone(),
                    options: None,
                }),
                spec: Some(Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec).map_err(|e| internal("encoding a spec", e))?,
                }),
                snapshotter,
                snapshot_key: id.clone(),
                extensions: [(EXTENSION.to_string(), record_any(&record)?)].into(),
                ..Default::default()
            };
            if let Err(s) = runtime
                .inner
                .client
                .containers()
                .create(runtime.leased(
                    api::CreateContainerRequest {
                        container: Some(object),
                    },
                    &lease,
                )?)
                .await
            {
                let _ = runtime.remove_snapshot(&id).await;
                return Err(map_status(s, "container", &id));
            }
            Ok(id)
        })
        .await
}

pub(super) async fn start_container(runtime: &ContainerdRuntime, id: &str) -> Result<()> {
    let object = runtime
        .get_object(id, "container")
        .await?
        .ok_or_else(|| RuntimeError::not_found("container", id))?;
    if object.labels.contains_key(LABEL_STARTED)
        || object.labels.contains_key(LABEL_EXIT_CODE)
        || runtime.get_task(id).await?.is_some()
    {
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {id} was already started"
        )));
    }
    let record: ContainerRecord = record_of(&object)?;
    let mounts: Vec<RootfsMount> = runtime
        .inner
        .client
        .snapshots()
        .mounts(runtime.request(snap::MountsRequest {
            snapshotter: runtime.inner.config.snapshotter.clone(),
            key: id.into(),
        }))
        .await
        .map_err(|s| map_status(s, "container", id))?
        .into_inner()
        .mounts;
    let io = runtime.attach(id, &record, true)?;
    // Taken before the start call, so a process exiting at once never appears to have
    // finished before it started.
    let mut now = SystemTime::now();
    let started = async {
        runtime
            .inner
            .client
            .tasks()
            .create(runtime.request(api::CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
                terminal: io.terminal,
                ..Default::default()
            }))
            .await?;
        now = SystemTime::now();
        runtime
            .inner
            .client
            .tasks()
            .start(runtime.request(api::StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
    }
    .await;
    if let Err(s) = started {
        // As CRI does: the container is exited with code 128 and the failure as message.
        let _ = runtime.kill(id, "", SIGKILL).await;
        {
            let lock = runtime.task_lock(id);
            let _serialised = lock.lock().await;
            let _ = runtime.delete_task_locked(id).await;
        }
        runtime.detach(id);
        runtime
            .set_labels(
                id,
                &[
                    (LABEL_STARTED, nanos_label(now)),
                    (LABEL_FINISHED, nanos_label(now)),
                    (LABEL_EXIT_CODE, "128".into()),
                    (LABEL_REASON, "StartError".into()),
                    (LABEL_MESSAGE, s.message().chars().take(1000).collect()),
                ],
            )
            .await?;
        return Err(map_status(s, "container", id));
    }
    runtime
        .set_labels(id, &[(LABEL_STARTED, nanos_label(now))])
        .await?;
    runtime.watch_exit(id);
    Ok(())
}

pub(super) async fn stop_container(
    runtime: &ContainerdRuntime,
    id: &str,
    grace_period: Duration,
) -> Result<()> {
    if runtime.get_object(id, "container").await?.is_none() {
        return Ok(());
    }
    runtime.stop_task(id, grace_period).await
}

pub(super) async fn remove_container(runtime: &ContainerdRuntime, id: &str) -> Result<()> {
    if runtime.get_object(id, "container").await?.is_none() {
        return Ok(());
    }
    runtime.stop_task(id, Duration::ZERO).await?;
    {
        let lock = runtime.task_lock(id);
        let _serialised = lock.lock().await;
        runtime.delete_task_locked(id).await?;
    }
    runtime.detach(id);
    runtime.inner.draining.lock().remove(id);
    runtime.inner.task_locks.lock().remove(id);
    match runtime
        .inner
        .client
        .containers()
        .delete(runtime.request(api::DeleteContainerRequest { id: id.into() }))
        .await
    {
        Ok(_) => {}
        Err(s) if is_not_found(&s) => {}
        Err(s) => return Err(map_status(s, "container", id)),
    }
    runtime.remove_snapshot(id).await?;
    let dir = runtime.container_dir(id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal(&dir.display().to_string(), e)),
    }
}

pub(super) async fn container_status(
    runtime: &ContainerdRuntime,
    id: &str,
) -> Result<ContainerStatus> {
    let mut object = runtime
        .get_object(id, "container")
        .await?
        .ok_or_else(|| RuntimeError::not_found("container", id))?;
    let mut task = runtime.get_task(id).await?;
    // A stopped task whose exit the watcher has not recorded yet: record it now, so the
    // reason (`OOMKilled` needs the task's cgroup) does not depend on who looks first.
    if task
        .as_ref()
        .is_some_and(|t| t.status == super::task_status::STOPPED)
        && !object.labels.contains_key(LABEL_EXIT_CODE)
    {
        runtime.finish(id).await?;
        object = runtime
            .get_object(id, "container")
            .await?
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        task = runtime.get_task(id).await?;
    }
    let record: ContainerRecord = record_of(&object)?;
    let (container, observed) = ContainerdRuntime::container_view(&object, &record, task.as_ref());
    Ok(ContainerStatus {
        id: container.id,
        metadata: container.metadata,
        state: observed.state,
        created_at: container.created_at,
        started_at: observed.started_at,
        finished_at: observed.finished_at,
        exit_code: observed.exit_code,
        image: container.image,
        image_ref: container.image_ref,
        reason: observed.reason,
        message: observed.message,
        labels: container.labels,
        annotations: container.annotations,
        mounts: record.config.mounts.clone(),
        log_path: record.log_path.clone(),
    })
}

pub(super) async fn list_containers(
    runtime: &ContainerdRuntime,
    filter: ContainerFilter,
) -> Result<Vec<Container>> {
    let tasks = runtime.list_tasks().await?;
    let mut out = Vec::new();
    for object in runtime.list_objects("container").await? {
        let record: ContainerRecord = record_of(&object)?;
        let (container, _) =
            ContainerdRuntime::container_view(&object, &record, tasks.get(&object.id));
        if filter.matches(&container) {
            out.push(container);
        }
    }
    Ok(out)
}
