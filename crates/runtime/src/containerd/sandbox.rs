//! Pod sandboxes: a containerd object without a task plus pinned namespaces, and the sandbox
//! calls of [`ContainerRuntime`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1 as api;
use prost_types::Any;

use super::{
    internal, is_not_found, map_status, namespaces, new_id, record_any, record_of, to_time,
    ContainerdRuntime, SandboxRecord, EXTENSION, LABEL_KIND, LABEL_SANDBOX, LABEL_STATE,
    SPEC_TYPE_URL,
};
use crate::error::{Result, RuntimeError};
use crate::types::*;
use crate::ContainerRuntime;

impl ContainerdRuntime {
    pub(super) async fn sandbox(
        &self,
        id: &str,
    ) -> Result<Option<(api::Container, SandboxRecord)>> {
        match self.get_object(id, "sandbox").await? {
            Some(object) => {
                let record = record_of(&object)?;
                Ok(Some((object, record)))
            }
            None => Ok(None),
        }
    }

    pub(super) fn sandbox_state(object: &api::Container) -> PodSandboxState {
        if object.labels.get(LABEL_STATE).map(String::as_str) == Some("ready") {
            PodSandboxState::Ready
        } else {
            PodSandboxState::NotReady
        }
    }

    pub(super) async fn containers_of(&self, sandbox_id: &str) -> Result<Vec<api::Container>> {
        Ok(self
            .list_objects("container")
            .await?
            .into_iter()
            .filter(|c| c.labels.get(LABEL_SANDBOX).map(String::as_str) == Some(sandbox_id))
            .collect())
    }
}

pub(super) async fn run_pod_sandbox(
    runtime: &ContainerdRuntime,
    config: PodSandboxConfig,
) -> Result<String> {
    let meta = &config.metadata;
    if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "a sandbox needs a name, a namespace and a uid".into(),
        ));
    }
    let _guard = runtime.inner.create_lock.lock().await;
    for object in runtime.list_objects("sandbox").await? {
        let record: SandboxRecord = record_of(&object)?;
        if record.config.metadata == config.metadata {
            return Err(RuntimeError::AlreadyExists {
                kind: "sandbox",
                name: format!(
                    "{}_{}_{}_{}",
                    meta.name, meta.namespace, meta.uid, meta.attempt
                ),
                id: object.id,
            });
        }
    }
    let id = new_id()?;
    if !config.log_directory.is_empty() {
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| internal(&config.log_directory, e))?;
    }
    let options = config.namespace_options;
    let host_network = options.network == NamespaceMode::Node;
    let wanted = namespaces::Wanted {
        network: !host_network,
        ipc: options.ipc != NamespaceMode::Node,
        uts: !host_network,
    };
    let dir = runtime.sandbox_dir(&id);
    let pinned = namespaces::create(dir.clone(), wanted, config.hostname.clone()).await?;
    if let Err(e) = namespaces::write_pod_files(&dir, &config.hostname, host_network) {
        let _ = namespaces::remove(&dir);
        return Err(e);
    }
    let record = SandboxRecord {
        config,
        dir: dir.to_string_lossy().into_owned(),
        network_namespace_path: pinned.network,
        ipc_namespace_path: pinned.ipc,
        uts_namespace_path: pinned.uts,
    };
    let object = api::Container {
        id: id.clone(),
        labels: [
            (LABEL_KIND.to_string(), "sandbox".to_string()),
            (LABEL_STATE.to_string(), "ready".to_string()),
        ]
        .into(),
        runtime: Some(api::container::Runtime {
            name: runtime.inner.config.runtime.clone(),
            options: None,
        }),
        spec: Some(Any {
            type_url: SPEC_TYPE_URL.into(),
            value: br#"{"ociVersion":"1.0.2"}"#.to_vec(),
        }),
        extensions: [(EXTENSION.to_string(), record_any(&record)?)].into(),
        ..Default::default()
    };
    if let Err(s) = runtime
        .inner
        .client
        .containers()
        .create(runtime.request(api::CreateContainerRequest {
            container: Some(object),
        }))
        .await
    {
        let _ = namespaces::remove(&runtime.sandbox_dir(&id));
        return Err(map_status(s, "sandbox", &id));
    }
    Ok(id)
}

pub(super) async fn stop_pod_sandbox(runtime: &ContainerdRuntime, id: &str) -> Result<()> {
    let Some((object, record)) = runtime.sandbox(id).await? else {
        return Ok(());
    };
    for container in runtime.containers_of(id).await? {
        runtime.stop_task(&container.id, Duration::ZERO).await?;
    }
    // Where the namespaces were pinned, even by a runtime with another state directory.
    let dir = if record.dir.is_empty() {
        runtime.sandbox_dir(id)
    } else {
        PathBuf::from(&record.dir)
    };
    namespaces::remove(&dir)?;
    if ContainerdRuntime::sandbox_state(&object) == PodSandboxState::Ready {
        runtime
            .set_labels(id, &[(LABEL_STATE, "notready".into())])
            .await?;
    }
    Ok(())
}

pub(super) async fn remove_pod_sandbox(runtime: &ContainerdRuntime, id: &str) -> Result<()> {
    if runtime.sandbox(id).await?.is_none() {
        return Ok(());
    }
    runtime.stop_pod_sandbox(id).await?;
    for container in runtime.containers_of(id).await? {
        runtime.remove_container(&container.id).await?;
    }
    match runtime
        .inner
        .client
        .containers()
        .delete(runtime.request(api::DeleteContainerRequest { id: id.into() }))
        .await
    {
        Ok(_) => {
            runtime.inner.sandbox_locks.lock().remove(id);
            Ok(())
        }
        Err(s) if is_not_found(&s) => Ok(()),
        Err(s) => Err(map_status(s, "sandbox", id)),
    }
}

pub(super) async fn pod_sandbox_status(
    runtime: &ContainerdRuntime,
    id: &str,
) -> Result<PodSandboxStatus> {
    let (object, record) = runtime
        .sandbox(id)
        .await?
        .ok_or_else(|| RuntimeError::not_found("sandbox", id))?;
    let state = ContainerdRuntime::sandbox_state(&object);
    Ok(PodSandboxStatus {
        id: object.id.clone(),
        metadata: record.config.metadata.clone(),
        state,
        created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
        network: PodSandboxNetworkStatus::default(),
        network_namespace_path: if state == PodSandboxState::Ready {
            record.network_namespace_path.clone()
        } else {
            String::new()
        },
        namespace_options: record.config.namespace_options,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
    })
}

pub(super) async fn list_pod_sandboxes(
    runtime: &ContainerdRuntime,
    filter: PodSandboxFilter,
) -> Result<Vec<PodSandbox>> {
    let mut out = Vec::new();
    for object in runtime.list_objects("sandbox").await? {
        let record: SandboxRecord = record_of(&object)?;
        let sandbox = PodSandbox {
            id: object.id.clone(),
            metadata: record.config.metadata,
            state: ContainerdRuntime::sandbox_state(&object),
            created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
            labels: record.config.labels,
            annotations: record.config.annotations,
        };
        if filter.matches(&sandbox) {
            out.push(sandbox);
        }
    }
    Ok(out)
}
