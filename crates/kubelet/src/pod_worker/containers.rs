//! The Pod's containers: pulling images, creating and starting containers, and restarting
//! exited ones with the crash-loop back-off.

use capstan_api::kube_core::ResourceExt;
use std::collections::HashMap;
use std::time::SystemTime;

use capstan_api::k8s_openapi::api::core::v1::Container;
use capstan_runtime as rt;

use super::{
    go_duration, pod_label, spec_hash, PodWorker, Sandbox, CONTAINER_HASH_LABEL,
    CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL,
};
use crate::error::{KubeletError, Result};
use crate::status::Observed;

impl PodWorker {
    pub(super) async fn observe(&self, sandbox: &Sandbox) -> Result<HashMap<String, Observed>> {
        let runtime = &self.ctx.runtime;
        let mut listed = runtime
            .list_containers(rt::ContainerFilter::all().pod_sandbox(&sandbox.id))
            .await
            .map_err(|e| KubeletError::runtime("listing the pod's containers", e))?;
        listed.sort_by_key(|c| std::cmp::Reverse(c.metadata.attempt));
        let mut observed: HashMap<String, Observed> = HashMap::new();
        for container in listed {
            let entry = observed.entry(container.metadata.name.clone()).or_default();
            let slot = if entry.latest.is_none() {
                &mut entry.latest
            } else if entry.previous.is_none() {
                &mut entry.previous
            } else {
                continue;
            };
            match runtime.container_status(&container.id).await {
                Ok(status) => *slot = Some(status),
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Err(KubeletError::runtime("reading a container's status", error))
                }
            }
        }
        Ok(observed)
    }

    /// Ensures the image and creates and starts attempt `attempt` of `container`. On failure
    /// returns the waiting reason and message (and records the Events).
    pub(super) async fn start_container(
        &mut self,
        sandbox: &Sandbox,
        container: &Container,
        attempt: u32,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<(String, String)> {
        let pod = self.pod.clone();
        let image = container.image.clone().unwrap_or_default();
        let spec = rt::ImageSpec::new(image.clone());
        let runtime = self.ctx.runtime.clone();
        match runtime.image_status(&spec).await {
            Ok(Some(_)) => self.ctx.normal(
                &pod,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            Ok(None) => {
                if let Some((failed_at, error)) = self.pull_failures.get(&image).cloned() {
                    if let Some(until) = self.pulls.held_until(&image, failed_at, now) {
                        *wake = (*wake).min(until);
                        self.ctx.normal(
                            &pod,
                            "BackOff",
                            format!("Back-off pulling image \"{image}\""),
                        );
                        self.ctx
                            .warning(&pod, "Failed", "Error: ImagePullBackOff".to_string());
                        let _ = error;
                        return Some((
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image \"{image}\""),
                        ));
                    }
                }
                self.ctx
                    .normal(&pod, "Pulling", format!("Pulling image \"{image}\""));
                let pull_started = self.ctx.clock.now();
                match runtime.pull_image(&spec).await {
                    Ok(_) => {
                        let size = runtime
                            .image_status(&spec)
                            .await
                            .ok()
                            .flatten()
                            .map_or(0, |i| i.size);
                        self.pull_failures.remove(&image);
                        self.pulls.reset(&image);
                        let took = go_duration(
                            self.ctx
                                .clock
                                .now()
                                .duration_since(pull_started)
                                .unwrap_or_default(),
                        );
                        self.ctx.normal(
                            &pod,
                            "Pulled",
                            format!(
                                "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."
                            ),
                        );
                    }
                    Err(error) => {
                        let message = format!("Failed to pull image \"{image}\": {error}");
                        self.ctx.warning(&pod, "Failed", message.clone());
                        self.ctx
                            .warning(&pod, "Failed", "Error: ErrImagePull".to_string());
                        let failed_at = now;
                        self.pulls.next(&image, failed_at);
                        self.pull_failures
                            .insert(image.clone(), (failed_at, error.to_string()));
                        if let Some(delay) = self.pulls.delay(&image) {
                            *wake = (*wake).min(failed_at + delay);
                        }
                        return Some(("ErrImagePull".into(), message));
                    }
                }
            }
            Err(error) => {
                return Some(("ImageInspectError".into(), error.to_string()));
            }
        }
        let uid = self.uid();
        let mut config = rt::ContainerConfig::new(&container.name, &image)
            .attempt(attempt)
            .command(container.command.clone().unwrap_or_default())
            .args(container.args.clone().unwrap_or_default())
            .label(POD_UID_LABEL, &uid)
            .label(POD_NAME_LABEL, pod.name_any())
            .label(POD_NAMESPACE_LABEL, pod.namespace().unwrap_or_default())
            .label(CONTAINER_NAME_LABEL, &container.name)
            .label(CONTAINER_HASH_LABEL, spec_hash(container));
        if let Some(dir) = &container.working_dir {
            config = config.working_dir(dir);
        }
        // Requests and limits as cgroup settings and the OOM score adjustment.
        config.resources = crate::resources::container_resources(
            &pod,
            container,
            self.ctx.admission.memory_capacity(),
        );
        // A stdin (and TTY) as the spec asks, for `kubectl attach` and `kubectl debug -it`.
        config.stdin = container.stdin.unwrap_or(false);
        config.tty = container.tty.unwrap_or(false);
        // The environment (`env`, `envFrom`, the Services' variables) and the expanded
        // `command` and `args`; a missing ConfigMap or Secret holds the container back.
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links);
        let services = (self.ctx.service_env)
            .variables(&pod.namespace().unwrap_or_default(), links.unwrap_or(true))
            .await;
        let inputs = crate::env::EnvInputs {
            client: &self.ctx.client,
            node_name: &self.ctx.node_name,
            host_ip: self.ctx.host_ip.as_deref(),
            pod_ips: &sandbox.ips,
            services: &services,
        };
        match crate::env::resolve(&inputs, &pod, container).await {
            Ok(resolved) => {
                for message in resolved.warnings {
                    self.ctx
                        .warning(&pod, crate::env::INVALID_NAMES_REASON, message);
                }
                config.command = resolved.command;
                config.args = resolved.args;
                for (name, value) in resolved.vars {
                    config = config.env(name, value);
                }
            }
            Err(error) => {
                self.ctx.warning(&pod, "Failed", format!("Error: {error}"));
                return Some(("CreateContainerConfigError".into(), error.to_string()));
            }
        }
        if let Some(volumes) = &self.volumes {
            match volumes.mounts(&pod, container) {
                Ok(mounts) => config.mounts.extend(mounts),
                Err(error) => {
                    self.ctx.warning(&pod, "Failed", format!("Error: {error}"));
                    return Some(("CreateContainerConfigError".into(), error.to_string()));
                }
            }
        }
        let id = match runtime
            .create_container(&sandbox.id, config, &sandbox.config)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                self.ctx.warning(&pod, "Failed", format!("Error: {error}"));
                return Some(("CreateContainerError".into(), error.to_string()));
            }
        };
        self.ctx.normal(
            &pod,
            "Created",
            format!("Created container: {}", container.name),
        );
        if let Err(error) = runtime.start_container(&id).await {
            self.ctx.warning(
                &pod,
                "Failed",
                format!(
                    "Error: failed to start container \"{}\": {error}",
                    container.name
                ),
            );
            return Some(("RunContainerError".into(), error.to_string()));
        }
        self.ctx.normal(
            &pod,
            "Started",
            format!("Started container {}", container.name),
        );
        // Look again at once: the status is written from what the runtime then reports.
        *wake = now;
        // Keep only the newest dead attempt besides this one.
        if attempt >= 2 {
            if let Ok(old) = runtime
                .list_containers(
                    rt::ContainerFilter::all()
                        .pod_sandbox(&sandbox.id)
                        .label(CONTAINER_NAME_LABEL, &container.name),
                )
                .await
            {
                for c in old.iter().filter(|c| c.metadata.attempt + 1 < attempt) {
                    let _ = runtime.remove_container(&c.id).await;
                }
            }
        }
        None
    }

    /// Restarts an exited container unless it is backed off; returns the waiting reason while
    /// backed off or when the start failed.
    pub(super) async fn restart(
        &mut self,
        sandbox: &Sandbox,
        container: &Container,
        exited: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<(String, String)> {
        let pod = self.pod.clone();
        let key = container.name.clone();
        let failed_at = exited.finished_at.unwrap_or(now);
        if let Some(until) = self.restarts.held_until(&key, failed_at, now) {
            *wake = (*wake).min(until);
            let delay = self.restarts.delay(&key).unwrap_or_default();
            self.ctx.warning(
                &pod,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    container.name,
                    pod_label(&pod)
                ),
            );
            return Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    container.name,
                    pod_label(&pod)
                ),
            ));
        }
        self.restarts.next(&key, failed_at);
        self.kill_restarts.remove(&container.name);
        self.start_container(sandbox, container, exited.metadata.attempt + 1, now, wake)
            .await
    }
}
