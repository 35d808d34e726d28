//! The disruption controller's arithmetic, as pure functions of a budget, its Pods and the
//! Pods' controllers: Kubernetes' `getExpectedPodCount`, `buildDisruptedPodMap`,
//! `countHealthyPods`, the status and its `DisruptionAllowed` condition.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_api::compat::{self, Maybe};
use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::reasons;

/// How long an eviction's entry in `status.disruptedPods` keeps its Pod out of the healthy
/// count while the Pod is not yet being deleted (Kubernetes' `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// The condition type the controller maintains.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// A count of a budget's status (an `i32`, optional under newer Kubernetes versions).
pub(super) fn int(field: &impl Maybe<i32>) -> i32 {
    field.opt().copied().unwrap_or(0)
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an integer as is, a percentage of `total`
/// rounded up (or down).
///
/// Errors: a string that is not a whole percentage (`invalid value for IntOrString: ...`).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(value) => Ok(*value),
        IntOrString::String(text) => {
            let Some(number) = text.strip_suffix('%') else {
                return Err(
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .into(),
                );
            };
            let percent: i64 = number
                .parse()
                .map_err(|_| format!("invalid value for IntOrString: invalid value {text:?}"))?;
            let product = percent * i64::from(total);
            let scaled = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(scaled).map_err(|_| format!("invalid value for IntOrString: {text:?}"))
        }
    }
}

/// What a budget needs: the Pods it expects and how many of them must be healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    /// `status.expectedPods`.
    pub expected: i32,
    /// `status.desiredHealthy`.
    pub desired_healthy: i32,
    /// The selected Pods without a controller, which a percentage or `maxUnavailable` cannot
    /// account for.
    pub unmanaged: Vec<String>,
}

/// Kubernetes' `getExpectedPodCount`. `scale` gives the total scale of the Pods'
/// controllers (with the unmanaged Pods' names); it is only asked for `maxUnavailable` and
/// percentage `minAvailable` budgets.
///
/// Errors: what `scale` fails with (no controller found), or a malformed percentage.
pub fn expectation(
    pdb: &PodDisruptionBudget,
    pods: usize,
    scale: impl FnOnce() -> Result<(i32, Vec<String>), String>,
) -> Result<Expectation, String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max_unavailable) = &spec.max_unavailable {
        let (expected, unmanaged) = scale()?;
        let max_unavailable = scaled_value(max_unavailable, expected, true)?;
        return Ok(Expectation {
            expected,
            desired_healthy: (expected - max_unavailable).max(0),
            unmanaged,
        });
    }
    match &spec.min_available {
        Some(IntOrString::Int(min)) => Ok(Expectation {
            expected: i32::try_from(pods).unwrap_or(i32::MAX),
            desired_healthy: *min,
            unmanaged: Vec::new(),
        }),
        Some(percent @ IntOrString::String(_)) => {
            let (expected, unmanaged) = scale()?;
            Ok(Expectation {
                expected,
                desired_healthy: scaled_value(percent, expected, true)?,
                unmanaged,
            })
        }
        None => Ok(Expectation::default()),
    }
}

/// What [`disrupted_pods`] keeps and drops.
#[derive(Debug, Default, PartialEq)]
pub struct DisruptedPods {
    /// The entries still current.
    pub kept: BTreeMap<String, Time>,
    /// When the earliest kept entry expires: the budget is synced again then.
    pub recheck: Option<Timestamp>,
    /// The Pods whose entry expired without their deletion (`NotDeleted` Events).
    pub expired: Vec<String>,
}

fn expiry(time: &Time) -> Timestamp {
    time.0
        .checked_add(SignedDuration::from_secs(DELETION_TIMEOUT.as_secs() as i64))
        .unwrap_or(time.0)
}

/// Kubernetes' `buildDisruptedPodMap`: the budget's `disruptedPods` entries of Pods that
/// exist and are not being deleted yet, unless older than [`DELETION_TIMEOUT`].
pub fn disrupted_pods(pdb: &PodDisruptionBudget, pods: &[&Pod], now: Timestamp) -> DisruptedPods {
    let mut result = DisruptedPods::default();
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return result;
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(time) = recorded.get(&name) else {
            continue;
        };
        let expected_deletion = expiry(time);
        if expected_deletion < now {
            result.expired.push(name);
        } else {
            if result.recheck.is_none_or(|r| expected_deletion < r) {
                result.recheck = Some(expected_deletion);
            }
            result.kept.insert(name, time.clone());
        }
    }
    result
}

/// Kubernetes' `countHealthyPods`: Ready Pods neither being deleted nor recently evicted.
pub fn count_healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let healthy = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            disrupted.get(name).is_none_or(|time| expiry(time) <= now)
        })
        .filter(|pod| pod.is_ready())
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// Kubernetes' `UpdateDisruptionAllowedCondition`: `True`/`SufficientPods` while a
/// disruption is allowed, else `False`/`InsufficientPods`; the transition time moves only
/// with the status.
pub fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    if int(&status.disruptions_allowed) > 0 {
        set_condition(status, "True", reasons::SUFFICIENT_PODS, "", now);
    } else {
        set_condition(status, "False", reasons::INSUFFICIENT_PODS, "", now);
    }
}

/// Kubernetes' `SetStatusCondition` of the `DisruptionAllowed` condition.
pub(super) fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let observed = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions
        .iter_mut()
        .find(|c| compat::text(&c.type_) == DISRUPTION_ALLOWED)
    {
        Some(condition) => {
            if compat::text(&condition.status) != value {
                condition.status = compat::value(value.to_string());
                condition.last_transition_time = compat::value(Time(now));
            }
            condition.reason = compat::value(reason.to_string());
            condition.message = compat::value(message.to_string());
            condition.observed_generation = observed;
        }
        None => conditions.push(Condition {
            type_: compat::value(DISRUPTION_ALLOWED.to_string()),
            status: compat::value(value.to_string()),
            reason: compat::value(reason.to_string()),
            message: compat::value(message.to_string()),
            observed_generation: observed,
            last_transition_time: compat::value(Time(now)),
        }),
    }
}

/// Kubernetes' `ConditionsAreUpToDate`.
pub fn conditions_are_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = &pdb.status else {
        return false;
    };
    let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| compat::text(&c.type_) == DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    let (value, reason) = if int(&status.disruptions_allowed) > 0 {
        ("True", reasons::SUFFICIENT_PODS)
    } else {
        ("False", reasons::INSUFFICIENT_PODS)
    };
    compat::text(&condition.status) == value && compat::text(&condition.reason) == reason
}

/// The figures of a budget's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// `currentHealthy`.
    pub current_healthy: i32,
    /// `desiredHealthy`.
    pub desired_healthy: i32,
    /// `expectedPods`.
    pub expected: i32,
}

impl Figures {
    /// `disruptionsAllowed`: `currentHealthy - desiredHealthy`, never below 0, and 0 when no
    /// Pod is expected.
    pub fn disruptions_allowed(&self) -> i32 {
        let allowed = self.current_healthy - self.desired_healthy;
        if self.expected <= 0 || allowed <= 0 {
            0
        } else {
            allowed
        }
    }
}

/// Kubernetes' `updatePdbStatus`: the budget with its new status, or `None` when the stored
/// status says all of it already.
pub fn updated_status(
    pdb: &PodDisruptionBudget,
    figures: &Figures,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> Option<PodDisruptionBudget> {
    let allowed = figures.disruptions_allowed();
    let current = pdb.status.clone().unwrap_or_default();
    let same_disrupted = current.disrupted_pods.clone().unwrap_or_default() == disrupted;
    if int(&current.current_healthy) == figures.current_healthy
        && int(&current.desired_healthy) == figures.desired_healthy
        && int(&current.expected_pods) == figures.expected
        && int(&current.disruptions_allowed) == allowed
        && same_disrupted
        && current.observed_generation == pdb.metadata.generation
        && conditions_are_up_to_date(pdb)
    {
        return None;
    }
    let mut status = PodDisruptionBudgetStatus {
        conditions: current.conditions,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        ..PodDisruptionBudgetStatus::default()
    };
    *status.current_healthy.or_default_mut() = figures.current_healthy;
    *status.desired_healthy.or_default_mut() = figures.desired_healthy;
    *status.expected_pods.or_default_mut() = figures.expected;
    *status.disruptions_allowed.or_default_mut() = allowed;
    update_disruption_allowed_condition(&mut status, now);
    let mut updated = pdb.clone();
    updated.status = Some(status);
    Some(updated)
}

/// Kubernetes' `failSafe`: no disruption allowed, and the condition `False`/`SyncFailed`
/// with the error.
pub fn fail_safe(pdb: &PodDisruptionBudget, error: &str, now: Timestamp) -> PodDisruptionBudget {
    let mut updated = pdb.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    *status.disruptions_allowed.or_default_mut() = 0;
    set_condition(status, "False", reasons::SYNC_FAILED, error, now);
    updated
}
