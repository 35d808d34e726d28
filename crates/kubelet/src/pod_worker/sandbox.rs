//! The Pod's sandbox: finding the one the runtime has, running a new one and attaching its
//! network, and tearing both down.

use capstan_api::kube_core::ResourceExt;
use capstan_net::Attachment;
use capstan_runtime as rt;

use super::{PodWorker, Sandbox, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL};
use crate::error::{KubeletError, Result};

impl PodWorker {
    pub(super) async fn sandboxes(&self) -> Result<Vec<rt::PodSandbox>> {
        self.ctx
            .runtime
            .list_pod_sandboxes(rt::PodSandboxFilter::all().label(POD_UID_LABEL, self.uid()))
            .await
            .map_err(|e| KubeletError::runtime("listing the pod's sandboxes", e))
    }

    pub(super) fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    pub(super) fn attachment(&self, sandbox_id: &str, netns: &str) -> Attachment {
        Attachment::new(sandbox_id, netns).pod(
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any(),
            self.uid(),
        )
    }

    /// The Pod's Ready sandbox: the one this worker runs, an adopted one, or a new one.
    /// `Ok(None)` when a new sandbox could not be set up yet (reported by an Event).
    pub(super) async fn ensure_sandbox(&mut self) -> Result<Option<Sandbox>> {
        let runtime = self.ctx.runtime.clone();
        if let Some(current) = &self.sandbox {
            // The common case: one status lookup, no listing.
            match runtime.pod_sandbox_status(&current.id).await {
                Ok(status) if status.state == rt::PodSandboxState::Ready => {
                    return Ok(self.sandbox.clone());
                }
                Ok(_) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Err(KubeletError::runtime("reading the sandbox's status", error))
                }
            }
            self.sandbox = None;
        }
        let existing = self.sandboxes().await?;
        // Adopt the newest Ready sandbox (a restarted kubelet), clean up the others.
        let ready = existing
            .iter()
            .filter(|s| s.state == rt::PodSandboxState::Ready)
            .max_by_key(|s| (s.metadata.attempt, s.created_at));
        if let Some(found) = ready {
            let status = runtime
                .pod_sandbox_status(&found.id)
                .await
                .map_err(|e| KubeletError::runtime("reading a sandbox's status", e))?;
            let known_ips: Vec<String> = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ips.as_ref())
                .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
                .unwrap_or_default();
            let mut config = rt::PodSandboxConfig::new(found.metadata.clone());
            config.labels = found.labels.clone();
            config.annotations = found.annotations.clone();
            let mut sandbox = Sandbox {
                id: found.id.clone(),
                config,
                netns: status.network_namespace_path.clone(),
                ips: known_ips,
            };
            if sandbox.ips.is_empty() && !self.host_network() {
                // The address was never recorded: attach again from scratch.
                let attachment = self.attachment(&sandbox.id, &sandbox.netns);
                let _ = self.ctx.network.del(&attachment).await;
                let result = self
                    .ctx
                    .network
                    .add(&attachment)
                    .await
                    .map_err(|e| KubeletError::network("re-attaching an adopted sandbox", e))?;
                sandbox.ips = result.pod_ips().iter().map(ToString::to_string).collect();
            }
            self.sandbox = Some(sandbox);
            return Ok(self.sandbox.clone());
        }
        let attempt = existing
            .iter()
            .map(|s| s.metadata.attempt + 1)
            .max()
            .unwrap_or(0);
        for old in &existing {
            self.release_sandbox(&old.id).await?;
        }
        self.run_sandbox(attempt).await
    }

    async fn run_sandbox(&mut self, attempt: u32) -> Result<Option<Sandbox>> {
        let pod = self.pod.clone();
        let (name, namespace, uid) = (
            pod.name_any(),
            pod.namespace().unwrap_or_default(),
            self.uid(),
        );
        let mut metadata = rt::PodSandboxMetadata::new(&name, &namespace, &uid);
        metadata.attempt = attempt;
        let mut options = rt::NamespaceOptions::default();
        if self.host_network() {
            options.network = rt::NamespaceMode::Node;
        }
        let config = rt::PodSandboxConfig::new(metadata)
            .label(POD_UID_LABEL, &uid)
            .label(POD_NAME_LABEL, &name)
            .label(POD_NAMESPACE_LABEL, &namespace)
            .log_directory(format!("/var/log/pods/{namespace}_{name}_{uid}"))
            .namespace_options(options);
        let id = match self.ctx.runtime.run_pod_sandbox(config.clone()).await {
            Ok(id) => id,
            Err(error) => {
                self.ctx.warning(
                    &pod,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {error}"),
                );
                return Err(KubeletError::runtime("running the pod sandbox", error));
            }
        };
        let status = self
            .ctx
            .runtime
            .pod_sandbox_status(&id)
            .await
            .map_err(|e| KubeletError::runtime("reading the new sandbox's status", e))?;
        let netns = status.network_namespace_path.clone();
        let ips = if self.host_network() {
            self.ctx.host_ip.clone().into_iter().collect()
        } else {
            match self.ctx.network.add(&self.attachment(&id, &netns)).await {
                Ok(result) => result.pod_ips().iter().map(ToString::to_string).collect(),
                Err(error) => {
                    self.ctx.warning(
                        &pod,
                        "FailedCreatePodSandBox",
                        format!(
                            "Failed to create pod sandbox: failed to set up sandbox container {id:?} network for pod {name:?}: networkPlugin {} failed to set up pod \"{name}_{namespace}\" network: {error}",
                            self.ctx.network.name()
                        ),
                    );
                    let _ = self.ctx.runtime.stop_pod_sandbox(&id).await;
                    let _ = self.ctx.runtime.remove_pod_sandbox(&id).await;
                    return Ok(None);
                }
            }
        };
        let sandbox = Sandbox {
            id,
            config,
            netns,
            ips,
        };
        self.sandbox = Some(sandbox.clone());
        Ok(Some(sandbox))
    }

    /// Detaches, stops and removes a sandbox (and its containers).
    pub(super) async fn release_sandbox(&self, id: &str) -> Result<()> {
        let netns = match self.ctx.runtime.pod_sandbox_status(id).await {
            Ok(status) => status.network_namespace_path,
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => return Err(KubeletError::runtime("reading a sandbox's status", error)),
        };
        if !self.host_network() {
            self.ctx
                .network
                .del(&self.attachment(id, &netns))
                .await
                .map_err(|e| KubeletError::network("detaching a sandbox", e))?;
        }
        self.ctx
            .runtime
            .stop_pod_sandbox(id)
            .await
            .map_err(|e| KubeletError::runtime("stopping a sandbox", e))?;
        self.ctx
            .runtime
            .remove_pod_sandbox(id)
            .await
            .map_err(|e| KubeletError::runtime("removing a sandbox", e))
    }
}
