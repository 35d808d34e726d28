//! Eligibility: whether a DaemonSet's Pod should run on a Node (its node selector, required
//! node affinity and the taints it does not tolerate), and the tolerations every daemon Pod
//! gets.

use super::*;
use capstan_api::ext::MetaExt;

// ---------------------------------------------------------------------------------------
// Eligibility
// ---------------------------------------------------------------------------------------

pub(super) fn exists_toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    }
}

/// The tolerations Kubernetes adds to every DaemonSet Pod (`AddOrUpdateDaemonPodTolerations`):
/// not-ready and unreachable `NoExecute`; disk-, memory-, pid-pressure and unschedulable
/// `NoSchedule`; and network-unavailable `NoSchedule` when `host_network`.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut tolerations = vec![
        exists_toleration(taints::NOT_READY, "NoExecute"),
        exists_toleration(taints::UNREACHABLE, "NoExecute"),
        exists_toleration(taints::DISK_PRESSURE, "NoSchedule"),
        exists_toleration(taints::MEMORY_PRESSURE, "NoSchedule"),
        exists_toleration(taints::PID_PRESSURE, "NoSchedule"),
        exists_toleration(taints::UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        tolerations.push(exists_toleration(taints::NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    tolerations
}

/// Adds the tolerations of `wanted` that `tolerations` lacks (by key, operator and effect).
pub(super) fn add_tolerations(tolerations: &mut Vec<Toleration>, wanted: Vec<Toleration>) {
    for toleration in wanted {
        let present = tolerations.iter().any(|t| {
            t.key == toleration.key
                && t.operator == toleration.operator
                && t.effect == toleration.effect
        });
        if !present {
            tolerations.push(toleration);
        }
    }
}

pub(super) fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !taint.is_tolerated_by(tolerations)
    })
}

/// What a DaemonSet may do on a Node (Kubernetes' `NodeShouldRunDaemonPod`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// A Pod should be created there if there is none.
    pub should_run: bool,
    /// A Pod already there may stay.
    pub should_continue_running: bool,
    /// The taint that keeps a new Pod away, when that is the only obstacle.
    pub untolerated_taint: Option<Taint>,
}

/// Where the DaemonSet `ds` may run; see [`Placement`] and the [module docs](self).
pub fn node_should_run_daemon_pod(node: &Node, ds: &DaemonSet) -> Placement {
    let Some(spec) = ds.spec.opt().and_then(|s| s.template.spec.as_ref()) else {
        return Placement::default();
    };
    let node_name = node.name_str();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
        || !spec.matches_node_selector_and_affinity(node)
    {
        return Placement::default();
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    add_tolerations(
        &mut tolerations,
        default_tolerations(spec.host_network == Some(true)),
    );
    let node_taints = node.taints();
    if let Some(taint) = untolerated(node_taints, &tolerations, &["NoSchedule", "NoExecute"]) {
        let no_execute = untolerated(node_taints, &tolerations, &["NoExecute"]).is_some();
        return Placement {
            should_run: false,
            should_continue_running: !no_execute,
            untolerated_taint: Some(taint.clone()),
        };
    }
    if node.metadata.deletion_timestamp.is_some() {
        return Placement {
            should_run: false,
            should_continue_running: true,
            untolerated_taint: None,
        };
    }
    Placement {
        should_run: true,
        should_continue_running: true,
        untolerated_taint: None,
    }
}
