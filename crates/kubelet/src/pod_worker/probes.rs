//! Startup, liveness and readiness probes: when each is due, running it, and what its
//! results do to the container.

use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::api::core::v1::{Container, Probe};
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_runtime as rt;

use super::{seconds, PodWorker, ProbeKind};
use crate::prober::{GrpcCheck, HttpGet, ProbeOutcome};

impl PodWorker {
    async fn run_probe(&self, probe: &Probe, container: &Container, id: &str) -> ProbeOutcome {
        let timeout = seconds(probe.timeout_seconds, 1);
        let pod_ip = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ips.first().cloned())
            .unwrap_or_default();
        let port = |port: &IntOrString| -> Option<u16> {
            match port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            }
        };
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let request = rt::ExecRequest::new(id, command.clone()).timeout(timeout);
            return match self.ctx.runtime.exec_sync(request).await {
                Ok(response) if response.exit_code == 0 => ProbeOutcome::Success,
                Ok(response) => {
                    let mut output = String::from_utf8_lossy(&response.stdout).into_owned();
                    output.push_str(&String::from_utf8_lossy(&response.stderr));
                    ProbeOutcome::Failure(output.trim_end().to_string())
                }
                Err(rt::RuntimeError::Timeout(_)) => {
                    ProbeOutcome::Failure(format!("command {command:?} timed out"))
                }
                Err(error) => ProbeOutcome::Failure(error.to_string()),
            };
        }
        if let Some(http) = &probe.http_get {
            let Some(port) = port(&http.port) else {
                return ProbeOutcome::Failure(format!("unknown port {:?}", http.port));
            };
            let target = HttpGet {
                scheme: http.scheme.clone().unwrap_or_else(|| "HTTP".into()),
                host: http
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or(pod_ip),
                port,
                // The prober adds a missing leading `/` (an empty path is `/`).
                path: http.path.clone().unwrap_or_default(),
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            };
            return self.ctx.prober.http_get(&target, timeout).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let Some(port) = port(&tcp.port) else {
                return ProbeOutcome::Failure(format!("unknown port {:?}", tcp.port));
            };
            let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
            return self.ctx.prober.tcp(&host, port, timeout).await;
        }
        if let Some(grpc) = &probe.grpc {
            let Ok(port) = u16::try_from(grpc.port) else {
                return ProbeOutcome::Failure(format!("unknown port {}", grpc.port));
            };
            let target = GrpcCheck {
                host: pod_ip,
                port,
                service: grpc.service.clone().unwrap_or_default(),
            };
            return self.ctx.prober.grpc(&target, timeout).await;
        }
        ProbeOutcome::Failure(
            "the probe has no supported handler (exec, httpGet, tcpSocket, grpc)".into(),
        )
    }

    /// Runs `kind`'s probe if it is due; returns whether it currently passes (`None` while
    /// undecided).
    pub(super) async fn probe(
        &mut self,
        kind: ProbeKind,
        probe: &Probe,
        container: &Container,
        running: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<bool> {
        let key = (running.id.clone(), kind);
        let state = self.probes.get(&key).cloned().unwrap_or_default();
        let started = running.started_at.unwrap_or(now);
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        let due = match state.last_run {
            None => started + seconds(probe.initial_delay_seconds, 0),
            Some(last) => last + period,
        };
        if now < due {
            *wake = (*wake).min(due);
            return state.passed;
        }
        let outcome = self.run_probe(probe, container, &running.id).await;
        let mut state = state;
        state.last_run = Some(now);
        *wake = (*wake).min(now + period);
        if let ProbeOutcome::Warning(message) = &outcome {
            // A warning passes (an HTTP probe that ended on a redirect), with an Event.
            let pod = self.pod.clone();
            self.ctx.warning(
                &pod,
                "ProbeWarning",
                format!("{} probe warning: {message}", kind.label()),
            );
        }
        match outcome {
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => {
                state.failures = 0;
                state.successes += 1;
                let threshold = probe.success_threshold.unwrap_or(1).max(1) as u32;
                if state.successes >= threshold {
                    state.passed = Some(true);
                }
            }
            ProbeOutcome::Failure(message) => {
                state.successes = 0;
                state.failures += 1;
                let pod = self.pod.clone();
                self.ctx.warning(
                    &pod,
                    "Unhealthy",
                    format!("{} probe failed: {message}", kind.label()),
                );
                let threshold = probe.failure_threshold.unwrap_or(3).max(1) as u32;
                if state.failures >= threshold {
                    state.passed = Some(false);
                }
            }
        }
        let passed = state.passed;
        self.probes.insert(key, state);
        passed
    }

    /// Kills a container whose liveness or startup probe failed, to be restarted.
    pub(super) async fn kill_for_restart(
        &mut self,
        container: &Container,
        id: &str,
        kind: ProbeKind,
        probe: &Probe,
    ) {
        let pod = self.pod.clone();
        let what = match kind {
            ProbeKind::Startup => "startup",
            _ => "liveness",
        };
        self.ctx.normal(
            &pod,
            "Killing",
            format!(
                "Container {} failed {what} probe, will be restarted",
                container.name
            ),
        );
        let grace = probe
            .termination_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let _ = self
            .ctx
            .runtime
            .stop_container(id, Duration::from_secs(grace))
            .await;
        self.kill_restarts.insert(container.name.clone());
        self.probes.retain(|(cid, _), _| cid != id);
    }
}
