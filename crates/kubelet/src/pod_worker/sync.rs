//! One sync of a Pod: reading the runtime's state, taking the next steps, and writing the
//! Pod's status when it changed.

use capstan_api::kube_core::ResourceExt;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::api::core::v1::{Container, HostIP, PodIP, PodStatus};
use capstan_api::kube_core::params::PostParams;
use capstan_controller::retry::retry_on_error;
use capstan_runtime as rt;

use super::{spec_hash, PodWorker, ProbeKind, CONTAINER_HASH_LABEL};
use crate::error::{KubeletError, Result};
use crate::status::{self, Observed, RestartPolicy};

/// How soon a failed volume set-up is tried again.
const VOLUME_RETRY: Duration = Duration::from_secs(2);
use crate::time::time;

/// The Pod's ephemeral containers as the containers the kubelet runs: the same fields
/// without `targetContainerName`.
///
/// The target's process namespace is not joined: the runtime SPI offers no per-container
/// namespace target (CRI's `NamespaceMode::TARGET`), so an ephemeral container sees the
/// processes its sandbox shows (the pod-wide namespace on runtimes that share one).
pub(super) fn ephemeral_containers(
    spec: &capstan_api::k8s_openapi::api::core::v1::PodSpec,
) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|ephemeral| {
            let mut value = serde_json::to_value(ephemeral).ok()?;
            value.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(value).ok()
        })
        .collect()
}

impl PodWorker {
    /// One pass; returns when to sync next at the latest.
    pub(super) async fn sync(&mut self) -> Result<SystemTime> {
        let now = self.ctx.clock.now();
        let mut wake = now + self.ctx.sync_period;
        if let Some(rejection) = &self.rejection {
            crate::admission::write_rejection(&self.api(), &self.pod, rejection).await?;
            self.rejection = None;
            self.finished = true;
        }
        if self.finished {
            return Ok(now + self.ctx.sync_period * 60);
        }
        let pod = self.pod.clone();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
        if self.start_time.is_none() {
            self.start_time = Some(now);
        }
        let Some(sandbox) = self.ensure_sandbox().await? else {
            let no_init = spec.init_containers.as_ref().is_none_or(Vec::is_empty);
            self.write_status(&spec, policy, &HashMap::new(), no_init, now)
                .await?;
            return Ok(wake);
        };
        let mut observed = self.observe(&sandbox).await?;
        // Volumes before any container: a container never starts without the files its
        // spec mounts. Until they are there, every container not yet created waits.
        if self.ensure_volumes(now, &mut wake).await.is_err() {
            for container in spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
            {
                let slot = observed.entry(container.name.clone()).or_default();
                if slot.latest.is_none() {
                    slot.waiting = Some(("ContainerCreating".into(), String::new()));
                }
            }
            self.write_status(&spec, policy, &observed, false, now)
                .await?;
            return Ok(wake);
        }
        let live_ids: HashSet<String> = observed
            .values()
            .filter_map(|o| o.latest.as_ref().map(|l| l.id.clone()))
            .collect();
        self.probes.retain(|(id, _), _| live_ids.contains(id));

        // Ephemeral containers first, as Kubernetes' `computePodActions` orders them, so a
        // failing init container does not keep a debugger out: each is started once, never
        // restarted (one whose start failed, such as an image pull, is tried again).
        for container in &ephemeral_containers(&spec) {
            if observed
                .get(&container.name)
                .is_some_and(|o| o.latest.is_some())
            {
                continue;
            }
            let waiting = self
                .start_container(&sandbox, container, 0, now, &mut wake)
                .await;
            observed.entry(container.name.clone()).or_default().waiting = waiting;
        }

        // Init containers, in order, each to completion.
        let mut initialized = true;
        for container in &spec.init_containers.clone().unwrap_or_default() {
            let entry = observed.get(&container.name).cloned().unwrap_or_default();
            match &entry.latest {
                None => {
                    initialized = false;
                    let waiting = self
                        .start_container(&sandbox, container, 0, now, &mut wake)
                        .await;
                    observed.entry(container.name.clone()).or_default().waiting = waiting;
                    break;
                }
                Some(l) if l.state == rt::ContainerState::Exited && l.exit_code == Some(0) => {
                    continue
                }
                Some(l) if l.state == rt::ContainerState::Exited => {
                    initialized = false;
                    if policy != RestartPolicy::Never {
                        let l = l.clone();
                        let waiting = self.restart(&sandbox, container, &l, now, &mut wake).await;
                        observed.entry(container.name.clone()).or_default().waiting = waiting;
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
            }
        }

        if initialized {
            for container in &spec.containers {
                let entry = observed.get(&container.name).cloned().unwrap_or_default();
                let waiting = match &entry.latest {
                    None => {
                        self.start_container(&sandbox, container, 0, now, &mut wake)
                            .await
                    }
                    Some(l) if l.state == rt::ContainerState::Exited => {
                        let restart = policy != RestartPolicy::Never
                            && (self.kill_restarts.contains(&container.name)
                                || policy.restarts(l.exit_code.unwrap_or_default()));
                        if restart {
                            let l = l.clone();
                            self.restart(&sandbox, container, &l, now, &mut wake).await
                        } else {
                            None
                        }
                    }
                    Some(l)
                        if l.state == rt::ContainerState::Running
                            && l.labels.get(CONTAINER_HASH_LABEL)
                                != Some(&spec_hash(container)) =>
                    {
                        // The container's definition changed (its image): replace it.
                        let l = l.clone();
                        self.ctx.normal(
                            &pod,
                            "Killing",
                            format!(
                                "Container {} definition changed, will be restarted",
                                container.name
                            ),
                        );
                        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
                        self.ctx
                            .runtime
                            .stop_container(&l.id, Duration::from_secs(grace as u64))
                            .await
                            .map_err(|e| {
                                KubeletError::runtime("stopping a changed container", e)
                            })?;
                        self.probes.retain(|(id, _), _| *id != l.id);
                        self.start_container(
                            &sandbox,
                            container,
                            l.metadata.attempt + 1,
                            now,
                            &mut wake,
                        )
                        .await
                    }
                    Some(l) if l.state == rt::ContainerState::Running => {
                        let l = l.clone();
                        let (started, ready) =
                            self.probe_running(container, &l, now, &mut wake).await;
                        let slot = observed.entry(container.name.clone()).or_default();
                        slot.started = started;
                        slot.ready = ready;
                        None
                    }
                    Some(_) => None,
                };
                if waiting.is_some() {
                    observed.entry(container.name.clone()).or_default().waiting = waiting;
                }
            }
        }
        if wake <= now {
            // Something was started or killed: sync again at once instead of writing a status
            // that is already stale.
            return Ok(wake);
        }
        let phase = self
            .write_status(&spec, policy, &observed, initialized, now)
            .await?;
        if phase == "Running" {
            if let Some(seen) = self.seen_at.take() {
                let took = now.duration_since(seen).unwrap_or_default();
                self.ctx.stats.pod_started(took);
            }
        }
        if matches!(phase, "Succeeded" | "Failed") {
            // Nothing will run again: free the network and the sandbox's resources.
            if !self.host_network() {
                self.ctx
                    .network
                    .del(&self.attachment(&sandbox.id, &sandbox.netns))
                    .await
                    .map_err(|e| KubeletError::network("detaching a finished pod", e))?;
            }
            self.ctx
                .runtime
                .stop_pod_sandbox(&sandbox.id)
                .await
                .map_err(|e| KubeletError::runtime("stopping a finished pod's sandbox", e))?;
            self.finished = true;
        }
        Ok(wake)
    }

    /// Sets the Pod's volumes up the first time, and again when a token in them is due.
    /// On failure records `FailedMount` and asks to be woken for a retry; the error's text is
    /// returned.
    async fn ensure_volumes(
        &mut self,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> std::result::Result<(), String> {
        let Some(manager) = self.ctx.volumes.clone() else {
            return Ok(());
        };
        let uid = self.uid();
        if self.volumes.is_none() || manager.needs_refresh(&uid, now) {
            match manager.set_up(&self.pod, now).await {
                Ok(volumes) => self.volumes = Some(volumes),
                Err(error) => {
                    let message = error.to_string();
                    self.ctx.warning(&self.pod, "FailedMount", message.clone());
                    *wake = (*wake).min(now + VOLUME_RETRY);
                    return Err(message);
                }
            }
        }
        if let Some(due) = manager.next_refresh(&uid) {
            *wake = (*wake).min(due);
        }
        Ok(())
    }

    /// Probes a running container; returns (started, ready).
    async fn probe_running(
        &mut self,
        container: &Container,
        running: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> (bool, bool) {
        if let Some(probe) = &container.startup_probe {
            match self
                .probe(ProbeKind::Startup, probe, container, running, now, wake)
                .await
            {
                Some(true) => {}
                Some(false) => {
                    self.kill_for_restart(container, &running.id, ProbeKind::Startup, probe)
                        .await;
                    *wake = now;
                    return (false, false);
                }
                None => return (false, false),
            }
        }
        if let Some(probe) = &container.liveness_probe {
            if self
                .probe(ProbeKind::Liveness, probe, container, running, now, wake)
                .await
                == Some(false)
            {
                self.kill_for_restart(container, &running.id, ProbeKind::Liveness, probe)
                    .await;
                *wake = now;
                return (true, false);
            }
        }
        let ready = match &container.readiness_probe {
            Some(probe) => {
                self.probe(ProbeKind::Readiness, probe, container, running, now, wake)
                    .await
                    == Some(true)
            }
            None => true,
        };
        (true, ready)
    }

    /// Computes the status and writes it if it changed; returns the phase.
    async fn write_status(
        &mut self,
        spec: &capstan_api::k8s_openapi::api::core::v1::PodSpec,
        policy: RestartPolicy,
        observed: &HashMap<String, Observed>,
        initialized: bool,
        now: SystemTime,
    ) -> Result<&'static str> {
        let runtime = self.ctx.runtime_name.as_str();
        let empty = Observed::default();
        let init: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let o = observed.get(&c.name).unwrap_or(&empty);
                let mut s = status::container_status(c, o, runtime, "PodInitializing");
                // An init container is ready once it completed.
                s.ready = s
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0);
                s
            })
            .collect();
        let default_waiting = if initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers: Vec<_> = spec
            .containers
            .iter()
            .map(|c| {
                let o = observed.get(&c.name).unwrap_or(&empty);
                status::container_status(c, o, runtime, default_waiting)
            })
            .collect();
        // Ephemeral containers are reported apart; they never count toward the phase or
        // readiness.
        let ephemeral_waiting = if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let ephemeral: Vec<_> = ephemeral_containers(spec)
            .iter()
            .map(|c| {
                let o = observed.get(&c.name).unwrap_or(&empty);
                status::ephemeral_container_status(c, o, runtime, ephemeral_waiting)
            })
            .collect();
        let phase = status::phase(policy, &init, initialized, &containers);
        let previous = self.last_status.clone();
        let conditions = status::conditions(
            phase,
            &init,
            initialized,
            &containers,
            previous.as_ref(),
            now,
        );
        let ips: Vec<String> = self
            .sandbox
            .as_ref()
            .map(|s| s.ips.clone())
            .unwrap_or_default();
        let host_ip = self.ctx.host_ip.clone();
        let status = PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: host_ip.clone(),
            host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
            pod_ip: ips.first().cloned(),
            pod_ips: (!ips.is_empty())
                .then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
            start_time: self.start_time.map(time),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: Some(containers),
            ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
            qos_class: previous
                .as_ref()
                .and_then(|p| p.qos_class.clone())
                .or_else(|| Some(crate::resources::qos_class(spec).as_str().to_string())),
            ..PodStatus::default()
        };
        if self.last_status.as_ref() == Some(&status) {
            return Ok(phase);
        }
        let api = self.api();
        let name = self.pod.name_any();
        let uid = &self.pod.metadata.uid;
        // Whether it was written (not gone, not replaced).
        let written = retry_on_error(5, KubeletError::is_conflict, |_| async {
            let mut current = match api.get_opt(&name).await {
                Ok(Some(current)) if current.metadata.uid == *uid => current,
                Ok(_) => return Ok(false),
                Err(error) => return Err(KubeletError::api("reading the pod", error)),
            };
            current.status = Some(status::merge_foreign_conditions(
                status.clone(),
                current.status.as_ref(),
            ));
            match api.update_status(&PostParams::default(), &current).await {
                Ok(_) => Ok(true),
                Err(error) if error.is_not_found() => Ok(false),
                Err(error) => Err(KubeletError::api("writing the pod status", error)),
            }
        })
        .await;
        match written {
            Ok(true) => self.last_status = Some(status),
            Ok(false) => {}
            // It changed under every write: the next sync writes again.
            Err(error) if error.is_conflict() => {}
            Err(error) => return Err(error),
        }
        Ok(phase)
    }
}
