//! A container's state as derived from its object's labels (where this runtime records
//! starts and exits) and its containerd task, and the encoding of times in labels.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{
    task_status, to_time, LABEL_EXIT_CODE, LABEL_FINISHED, LABEL_MESSAGE, LABEL_REASON,
    LABEL_STARTED,
};
use crate::types::ContainerState;

/// A time as a label value: nanoseconds since the Unix epoch.
pub(super) fn nanos_label(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

/// A time written by [`nanos_label`]; `None` if the label is missing or malformed.
fn label_time(labels: &HashMap<String, String>, key: &str) -> Option<SystemTime> {
    let nanos: u128 = labels.get(key)?.parse().ok()?;
    let nanos = u64::try_from(nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// A container's state as derived from its labels and its task.
pub(super) struct Observed {
    pub(super) state: ContainerState,
    pub(super) started_at: Option<SystemTime>,
    pub(super) finished_at: Option<SystemTime>,
    pub(super) exit_code: Option<i32>,
    pub(super) reason: String,
    pub(super) message: String,
}

/// The CRI reason of a container whose process the OOM killer killed.
pub(super) const OOM_KILLED: &str = "OOMKilled";

/// The CRI reason of an exit with `code`.
pub(super) fn exit_reason(code: i32) -> &'static str {
    if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// A container's state from its labels and its task (`None` when it has none). A recorded
/// exit wins over what the task says.
pub(super) fn observe(
    labels: &HashMap<String, String>,
    task: Option<&containerd_client::types::v1::Process>,
) -> Observed {
    let started_at = label_time(labels, LABEL_STARTED);
    if let Some(code) = labels
        .get(LABEL_EXIT_CODE)
        .and_then(|c| c.parse::<i32>().ok())
    {
        return Observed {
            state: ContainerState::Exited,
            started_at,
            finished_at: label_time(labels, LABEL_FINISHED),
            exit_code: Some(code),
            reason: labels
                .get(LABEL_REASON)
                .cloned()
                .unwrap_or_else(|| exit_reason(code).into()),
            message: labels.get(LABEL_MESSAGE).cloned().unwrap_or_default(),
        };
    }
    let mut observed = Observed {
        state: ContainerState::Created,
        started_at,
        finished_at: None,
        exit_code: None,
        reason: String::new(),
        message: String::new(),
    };
    match task {
        Some(task) if task.status == task_status::RUNNING || task.status == task_status::PAUSED => {
            observed.state = ContainerState::Running;
        }
        Some(task) if task.status == task_status::STOPPED => {
            let code = task.exit_status as i32;
            observed.state = ContainerState::Exited;
            observed.finished_at = to_time(task.exited_at.as_ref());
            observed.exit_code = Some(code);
            observed.reason = exit_reason(code).into();
        }
        Some(task) if task.status == task_status::CREATED => {}
        None if started_at.is_some() => {
            observed.state = ContainerState::Exited;
            observed.exit_code = Some(255);
            observed.reason = "Unknown".into();
            observed.message = "the container's task is gone and its exit was not seen".into();
        }
        _ => {}
    }
    observed
}
