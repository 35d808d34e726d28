//! A deleted Pod: stopping its containers gracefully, tearing its sandbox down and deleting
//! the Pod for good.

use capstan_api::kube_core::ResourceExt;
use std::time::Duration;

use capstan_api::kube_core::params::{DeleteParams, Preconditions};
use capstan_runtime as rt;

use super::PodWorker;
use crate::error::{KubeletError, Result};

impl PodWorker {
    /// Stops the Pod: `Killing` per running container, stop with the grace period, network
    /// `del`, sandbox stop and remove, then (unless `gone`) the final delete with grace 0.
    pub(super) async fn terminate(&mut self, gone: bool) -> Result<()> {
        let pod = self.pod.clone();
        let grace = if gone {
            0
        } else {
            pod.metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0) as u64
        };
        let runtime = self.ctx.runtime.clone();
        let sandboxes = self.sandboxes().await?;
        for sandbox in &sandboxes {
            let containers = runtime
                .list_containers(rt::ContainerFilter::all().pod_sandbox(&sandbox.id))
                .await
                .map_err(|e| KubeletError::runtime("listing containers to stop", e))?;
            for container in containers.iter().filter(|c| {
                matches!(
                    c.state,
                    rt::ContainerState::Running | rt::ContainerState::Created
                )
            }) {
                if !gone {
                    self.ctx.normal(
                        &pod,
                        "Killing",
                        format!("Stopping container {}", container.metadata.name),
                    );
                }
                runtime
                    .stop_container(&container.id, Duration::from_secs(grace))
                    .await
                    .map_err(|e| KubeletError::runtime("stopping a container", e))?;
            }
        }
        for sandbox in &sandboxes {
            self.release_sandbox(&sandbox.id).await?;
        }
        self.sandbox = None;
        if let Some(volumes) = &self.ctx.volumes {
            volumes.tear_down(&self.uid());
            self.volumes = None;
        }
        if gone {
            return Ok(());
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.name_any();
        match self.api().delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() || error.is_conflict() => Ok(()),
            Err(error) => Err(KubeletError::api("deleting the stopped pod", error)),
        }
    }
}
