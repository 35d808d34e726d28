//! Pure functions from what the runtime reports to a Pod's status: container statuses,
//! phase and conditions, with Kubernetes' reasons and messages.

use std::time::SystemTime;

use capstan_api::k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
};
use capstan_runtime as rt;

use crate::time::time;

/// The Pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub(crate) fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub(crate) fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// What the kubelet knows of one container of the spec at one sync.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// The newest attempt.
    pub(crate) latest: Option<rt::ContainerStatus>,
    /// The attempt before it, if still kept.
    pub(crate) previous: Option<rt::ContainerStatus>,
    /// Why it waits (`CrashLoopBackOff`, `ErrImagePull`, ...), set by this sync.
    pub(crate) waiting: Option<(String, String)>,
    /// Whether it is ready (probes).
    pub(crate) ready: bool,
    /// Whether its startup probe (if any) passed.
    pub(crate) started: bool,
}

fn terminated(status: &rt::ContainerStatus, runtime: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(format!("{runtime}://{}", status.id)),
            exit_code: status.exit_code.unwrap_or_default(),
            reason: (!status.reason.is_empty()).then(|| status.reason.clone()),
            message: (!status.message.is_empty()).then(|| status.message.clone()),
            started_at: status.started_at.map(time),
            finished_at: status.finished_at.map(time),
            signal: None,
        }),
        ..ContainerState::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }),
        ..ContainerState::default()
    }
}

/// One container's API status. `default_waiting` is the reason shown before it exists
/// (`ContainerCreating` or `PodInitializing`).
pub(crate) fn container_status(
    spec: &Container,
    observed: &Observed,
    runtime: &str,
    default_waiting: &str,
) -> ContainerStatus {
    let latest = observed.latest.as_ref();
    let (state, last_state) = match (latest, &observed.waiting) {
        (None, Some((reason, message))) => (waiting(reason, Some(message)), None),
        (None, None) => (waiting(default_waiting, None), None),
        (Some(l), Some((reason, message))) if l.state == rt::ContainerState::Exited => {
            (waiting(reason, Some(message)), Some(terminated(l, runtime)))
        }
        (Some(l), _) => {
            let last = observed.previous.as_ref().map(|p| terminated(p, runtime));
            let state = match l.state {
                rt::ContainerState::Running => ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: l.started_at.map(time),
                    }),
                    ..ContainerState::default()
                },
                rt::ContainerState::Exited => terminated(l, runtime),
                _ => waiting("ContainerCreating", None),
            };
            (state, last)
        }
    };
    let running = latest.is_some_and(|l| l.state == rt::ContainerState::Running);
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("{runtime}://{}", l.id)),
        ready: running && observed.ready,
        started: Some(running && observed.started),
        restart_count: latest.map_or(0, |l| l.metadata.attempt as i32),
        state: Some(state),
        last_state,
        ..ContainerStatus::default()
    }
}

/// One ephemeral container's API status: as [`container_status`], never ready, and
/// without a restart count (an ephemeral container is never restarted).
pub(crate) fn ephemeral_container_status(
    spec: &Container,
    observed: &Observed,
    runtime: &str,
    default_waiting: &str,
) -> ContainerStatus {
    let mut status = container_status(spec, observed, runtime, default_waiting);
    status.ready = false;
    status.started = Some(
        observed
            .latest
            .as_ref()
            .is_some_and(|l| l.state == rt::ContainerState::Running),
    );
    status.restart_count = 0;
    status.last_state = None;
    status
}

/// The Pod's phase, as Kubernetes derives it from its containers.
pub(crate) fn phase(
    policy: RestartPolicy,
    init: &[ContainerStatus],
    initialized: bool,
    containers: &[ContainerStatus],
) -> &'static str {
    let failed_init = init.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0)
    });
    if !initialized {
        return if failed_init && policy == RestartPolicy::Never {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting_first, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in containers {
        let state = status.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if status
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            // Waiting to restart: it ran before.
            stopped += 1;
        } else {
            waiting_first += 1;
        }
    }
    if waiting_first > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match policy {
        RestartPolicy::Always => "Running",
        _ if succeeded == stopped => "Succeeded",
        RestartPolicy::OnFailure => "Running",
        RestartPolicy::Never => "Failed",
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message,
        ..PodCondition::default()
    }
}

fn names(statuses: &[ContainerStatus], pick: impl Fn(&ContainerStatus) -> bool) -> Vec<String> {
    statuses
        .iter()
        .filter(|s| pick(s))
        .map(|s| s.name.clone())
        .collect()
}

/// The Pod's conditions: PodScheduled, Initialized, ContainersReady and Ready. Transition
/// times are kept from `previous` for conditions whose status did not change.
pub(crate) fn conditions(
    phase: &str,
    init: &[ContainerStatus],
    initialized: bool,
    containers: &[ContainerStatus],
    previous: Option<&PodStatus>,
    now: SystemTime,
) -> Vec<PodCondition> {
    let completed = matches!(phase, "Succeeded" | "Failed");
    let incomplete = names(init, |s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_none_or(|t| t.exit_code != 0)
    });
    let init_condition = if completed && initialized {
        condition("Initialized", true, Some("PodCompleted"), None)
    } else if initialized {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };
    let unready = names(containers, |s| !s.ready);
    let ready = |kind: &str| {
        if completed {
            condition(kind, false, Some("PodCompleted"), None)
        } else if !initialized {
            condition(
                kind,
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        } else if unready.is_empty() {
            condition(kind, true, None, None)
        } else {
            condition(
                kind,
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        }
    };
    let mut conditions = vec![
        condition("PodScheduled", true, None, None),
        init_condition,
        ready("ContainersReady"),
        ready("Ready"),
    ];
    for c in &mut conditions {
        let old = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|o| o.type_ == c.type_));
        c.last_transition_time = match old {
            Some(old) if old.status == c.status && old.last_transition_time.is_some() => {
                old.last_transition_time.clone()
            }
            _ => Some(time(now)),
        };
    }
    conditions
}

/// The Pod conditions the kubelet owns (Kubernetes' `PodConditionByKubelet`).
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

/// `status` as the kubelet computed it, plus the conditions others own that the stored
/// status holds (`DisruptionTarget` from an eviction, readiness gates), as Kubernetes'
/// status manager merges them: the kubelet never drops a condition it does not own.
pub(crate) fn merge_foreign_conditions(
    mut status: PodStatus,
    stored: Option<&PodStatus>,
) -> PodStatus {
    let foreign = stored
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()));
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    for condition in foreign {
        if !conditions.iter().any(|c| c.type_ == condition.type_) {
            conditions.push(condition.clone());
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            ..ContainerStatus::default()
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn the_phase_follows_the_restart_policy_once_every_container_stopped() {
        let done = [status("a", exited(0), None), status("b", exited(0), None)];
        let failed = [status("a", exited(0), None), status("b", exited(3), None)];
        assert_eq!(phase(RestartPolicy::Never, &[], true, &done), "Succeeded");
        assert_eq!(
            phase(RestartPolicy::OnFailure, &[], true, &done),
            "Succeeded"
        );
        assert_eq!(phase(RestartPolicy::Always, &[], true, &done), "Running");
        assert_eq!(phase(RestartPolicy::Never, &[], true, &failed), "Failed");
        assert_eq!(
            phase(RestartPolicy::OnFailure, &[], true, &failed),
            "Running"
        );
        let creating = [status("a", waiting("ContainerCreating", None), None)];
        assert_eq!(
            phase(RestartPolicy::Always, &[], true, &creating),
            "Pending"
        );
        let backing_off = [status(
            "a",
            waiting("CrashLoopBackOff", None),
            Some(exited(1)),
        )];
        assert_eq!(
            phase(RestartPolicy::Always, &[], true, &backing_off),
            "Running"
        );
    }

    #[test]
    fn conditions_the_kubelet_does_not_own_survive_its_status_writes() {
        let stored = PodStatus {
            conditions: Some(vec![
                condition("Ready", false, None, None),
                condition(
                    "DisruptionTarget",
                    true,
                    Some("EvictionByEvictionAPI"),
                    Some("Eviction API: evicting".into()),
                ),
            ]),
            ..PodStatus::default()
        };
        let computed = PodStatus {
            conditions: Some(vec![condition("Ready", true, None, None)]),
            ..PodStatus::default()
        };
        let merged = merge_foreign_conditions(computed, Some(&stored));
        let conditions = merged.conditions.unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].status, "True", "the kubelet's Ready wins");
        assert_eq!(conditions[1].type_, "DisruptionTarget");
    }

    #[test]
    fn an_ephemeral_container_is_never_ready_and_counts_no_restarts() {
        let spec = Container {
            name: "debugger".into(),
            image: Some("busybox".into()),
            ..Container::default()
        };
        let waiting_status = ephemeral_container_status(
            &spec,
            &Observed {
                waiting: Some(("ErrImagePull".into(), "no such image".into())),
                ..Observed::default()
            },
            "fake",
            "ContainerCreating",
        );
        let state = waiting_status.state.unwrap().waiting.unwrap();
        assert_eq!(state.reason.as_deref(), Some("ErrImagePull"));
        assert!(!waiting_status.ready);
        assert_eq!(waiting_status.started, Some(false));
        let created =
            ephemeral_container_status(&spec, &Observed::default(), "fake", "PodInitializing");
        assert_eq!(
            created.state.unwrap().waiting.unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_only_without_restarts() {
        let init = [status("init", exited(1), None)];
        assert_eq!(phase(RestartPolicy::Never, &init, false, &[]), "Failed");
        assert_eq!(phase(RestartPolicy::Always, &init, false, &[]), "Pending");
    }

    #[test]
    fn conditions_name_the_unready_containers_and_keep_transition_times() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let containers = [
            ContainerStatus {
                name: "a".into(),
                ready: true,
                ..ContainerStatus::default()
            },
            ContainerStatus {
                name: "b".into(),
                ..ContainerStatus::default()
            },
        ];
        let first = conditions("Running", &[], true, &containers, None, now);
        let ready = first.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        let previous = PodStatus {
            conditions: Some(first.clone()),
            ..PodStatus::default()
        };
        let later = now + std::time::Duration::from_secs(50);
        let again = conditions("Running", &[], true, &containers, Some(&previous), later);
        assert_eq!(again, first);
    }
}
