//! The `pods/eviction` subresource: kube-apiserver's `EvictionREST`, a delete of a Pod that
//! first asks its PodDisruptionBudget.
//!
//! [`Registry::evict`] is what `POST .../pods/{name}/eviction` runs (kubectl drain, the
//! node lifecycle controller's users, `kubectl evict` plugins):
//!
//! - a Pod that already stopped counting (`Pending`, `Succeeded`, `Failed`, or being deleted)
//!   is deleted without looking at any budget; a Pod still running is deleted with its
//!   `resourceVersion` as a precondition (unless the caller gave one), so it cannot have
//!   become Ready meanwhile;
//! - otherwise the PodDisruptionBudgets of the Pod's namespace whose selector matches it are
//!   found (an empty or missing selector matches nothing). More than one is a 500 (Kubernetes'
//!   `This pod has more than one PodDisruptionBudget, ...`); none deletes the Pod;
//! - a Pod that is not Ready costs the budget nothing when the budget is met already
//!   (`currentHealthy >= desiredHealthy > 0`) or its `unhealthyPodEvictionPolicy` is
//!   `AlwaysAllow`: it is deleted with its `resourceVersion` as precondition, and a conflict
//!   there answers 429;
//! - otherwise the budget is checked and decremented: a status not yet computed for the
//!   budget's generation (`observedGeneration < generation`) and a budget without
//!   `disruptionsAllowed` answer 429 with Kubernetes' message and a `DisruptionBudget` cause;
//!   else `disruptionsAllowed` goes down by one and the Pod is recorded in
//!   `status.disruptedPods` (a status update carrying the budget's `resourceVersion`, retried
//!   from a fresh read on conflict, 20 times as Kubernetes' `EvictionsRetry`), and only then
//!   is the Pod deleted with the eviction's `deleteOptions` (grace period, preconditions,
//!   propagation policy).
//!
//! Dry run (`?dryRun=All` or `deleteOptions.dryRun`) checks everything and writes nothing.

use std::time::Duration;

use capstan_api::compat::{self, Maybe};
use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::{Pod, PodCondition};
use capstan_api::k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy,
};
use capstan_api::kube_core::response::{Status, StatusCause, StatusDetails, StatusSummary};
use capstan_api::kube_core::DynamicObject;
use capstan_api::{selector, Client, Error, ResourceInfo};
use serde_json::Value;

use super::Registry;

/// Kubernetes' `MaxDisruptedPodSize`: past this many unconfirmed evictions in a budget's
/// `status.disruptedPods`, evictions are refused until the disruption controller catches up.
pub const MAX_DISRUPTED_POD_SIZE: usize = 2000;

/// The message of a refusal by a disruption budget (429).
pub const BUDGET_REFUSAL: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// The message of an eviction of a Pod two budgets select (500).
pub const MULTIPLE_BUDGETS: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// The `StatusCause` type that names the budget of a refusal.
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// How many times a budget update or a delete is tried on conflicts (Kubernetes'
/// `EvictionsRetry`: 20 steps, 500 ms apart).
const EVICTION_ATTEMPTS: usize = 20;
const EVICTION_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Why an eviction did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    /// The request, a read or a write failed as the API error says (404 for a missing Pod,
    /// 400 for a malformed Eviction, 409 for a failed precondition the caller set, ...).
    #[error(transparent)]
    Api(#[from] Error),
    /// 429 `TooManyRequests`: the Pod's budget allows no disruption now, or its status is not
    /// current yet. Retryable: clients (kubectl drain) try again after a few seconds.
    #[error("{BUDGET_REFUSAL}")]
    DisruptionBudget {
        /// The cause's message, naming the budget (`The disruption budget web needs 2
        /// healthy pods and has 2 currently`).
        cause: String,
        /// The `retryAfterSeconds` Kubernetes suggests (0 or 10).
        retry_after_seconds: u32,
    },
    /// 500: two or more budgets select the Pod, which eviction does not support. Not
    /// retryable until the budgets change.
    #[error("{MULTIPLE_BUDGETS}")]
    MultipleBudgets,
}

impl EvictionError {
    /// The HTTP status code Kubernetes answers with.
    pub fn code(&self) -> u16 {
        match self {
            EvictionError::Api(error) => error.code(),
            EvictionError::DisruptionBudget { .. } => 429,
            EvictionError::MultipleBudgets => 500,
        }
    }

    /// The `Status` body Kubernetes answers with.
    pub fn to_status(&self) -> Status {
        match self {
            EvictionError::Api(error) => error.to_status(),
            EvictionError::DisruptionBudget {
                cause,
                retry_after_seconds,
            } => Status {
                status: Some(StatusSummary::Failure),
                code: 429,
                message: BUDGET_REFUSAL.to_string(),
                reason: "TooManyRequests".to_string(),
                metadata: None,
                details: Some(StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: vec![StatusCause {
                        reason: DISRUPTION_BUDGET_CAUSE.to_string(),
                        message: cause.clone(),
                        field: String::new(),
                    }],
                    retry_after_seconds: *retry_after_seconds,
                }),
            },
            EvictionError::MultipleBudgets => Status {
                status: Some(StatusSummary::Failure),
                code: 500,
                message: MULTIPLE_BUDGETS.to_string(),
                reason: String::new(),
                metadata: None,
                details: None,
            },
        }
    }
}

impl EvictionError {
    /// The same refusal as an API error, for clients that speak [`Error`] only (the
    /// `DisruptionBudget` cause is not kept): [`Error::TooManyRequests`] for a budget's
    /// refusal, [`Error::Internal`] for several budgets.
    pub fn into_api_error(self) -> Error {
        match self {
            EvictionError::Api(error) => error,
            EvictionError::DisruptionBudget {
                retry_after_seconds,
                ..
            } => Error::TooManyRequests {
                message: BUDGET_REFUSAL.to_string(),
                retry_after_seconds: Some(retry_after_seconds),
            },
            EvictionError::MultipleBudgets => Error::Internal {
                message: MULTIPLE_BUDGETS.to_string(),
            },
        }
    }
}

/// The answer of a successful eviction: a `Success` Status, as kube-apiserver answers with
/// 201.
pub(crate) fn success_status() -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    })
}

/// Kubernetes' `createTooManyRequestsError`: a budget whose status is not current.
fn still_processing(budget: &str) -> EvictionError {
    EvictionError::DisruptionBudget {
        cause: format!("The disruption budget {budget} is still being processed by the server."),
        retry_after_seconds: 10,
    }
}

/// What an Eviction body asks: the `deleteOptions` it carries.
#[derive(Debug)]
struct EvictionRequest {
    dry_run: bool,
    params: DeleteParams,
}

/// Reads an Eviction (`policy/v1` or `policy/v1beta1`, as JSON) addressed to `name`.
fn read_eviction(
    name: &str,
    eviction: &Value,
    query_dry_run: bool,
) -> Result<EvictionRequest, Error> {
    if !eviction.is_object() {
        return Err(Error::bad_request("the request body must be a JSON object"));
    }
    if let Some(kind) = eviction.get("kind").and_then(Value::as_str) {
        if kind != "Eviction" {
            return Err(Error::bad_request(format!("not a Eviction object: {kind}")));
        }
    }
    if let Some(version) = eviction.get("apiVersion").and_then(Value::as_str) {
        if !matches!(version, "policy/v1" | "policy/v1beta1") {
            return Err(Error::bad_request(format!(
                "Eviction of {version} is not accepted: use policy/v1 or policy/v1beta1"
            )));
        }
    }
    let named = eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if named != name {
        return Err(Error::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or(Value::Null);
    let body_dry_run = match options.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Array(values)) => {
            let mut all = false;
            for value in values {
                match value.as_str() {
                    Some("All") => all = true,
                    other => {
                        return Err(Error::Invalid {
                            kind: "DeleteOptions".into(),
                            name: String::new(),
                            causes: vec![capstan_api::FieldError::not_supported(
                                "dryRun",
                                other.unwrap_or_default(),
                                ["All"],
                            )],
                        })
                    }
                }
            }
            all
        }
        Some(_) => {
            return Err(Error::bad_field(
                "deleteOptions.dryRun",
                "dryRun must be a list of strings",
            ))
        }
    };
    let propagation_policy = match options.get("propagationPolicy").and_then(Value::as_str) {
        None => None,
        Some("Orphan") => Some(PropagationPolicy::Orphan),
        Some("Background") => Some(PropagationPolicy::Background),
        Some("Foreground") => Some(PropagationPolicy::Foreground),
        Some(other) => {
            return Err(Error::bad_field(
                "deleteOptions.propagationPolicy",
                format!("unsupported value {other:?}"),
            ))
        }
    };
    let preconditions = options
        .get("preconditions")
        .filter(|p| p.is_object())
        .map(|p| Preconditions {
            uid: p.get("uid").and_then(Value::as_str).map(String::from),
            resource_version: p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
        });
    let grace_period_seconds = match options.get("gracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or_else(|| {
                    Error::bad_field(
                        "deleteOptions.gracePeriodSeconds",
                        "gracePeriodSeconds must be an integer",
                    )
                })?
                .clamp(0, i64::from(u32::MAX)) as u32,
        ),
    };
    let dry_run = query_dry_run || body_dry_run;
    Ok(EvictionRequest {
        dry_run,
        params: DeleteParams {
            dry_run,
            grace_period_seconds,
            propagation_policy,
            preconditions,
        },
    })
}

/// Kubernetes' `canIgnorePDB`: a Pod that no longer counts toward any budget.
fn can_ignore_budget(pod: &Pod) -> bool {
    matches!(pod.phase(), "Succeeded" | "Failed" | "Pending") || pod.is_terminating()
}

/// Kubernetes' `shouldEnforceResourceVersion`: whether deleting `pod` must be pinned to the
/// version read, so it cannot have become Ready meanwhile.
fn should_enforce_resource_version(pod: &Pod) -> bool {
    !(matches!(pod.phase(), "Succeeded" | "Failed") || pod.is_terminating())
}

fn with_resource_version(params: &DeleteParams, pod: &Pod) -> DeleteParams {
    let mut params = params.clone();
    let preconditions = params
        .preconditions
        .get_or_insert_with(Preconditions::default);
    preconditions.resource_version = pod.metadata.resource_version.clone();
    params
}

fn resource_version_unset(params: &DeleteParams) -> bool {
    params
        .preconditions
        .as_ref()
        .is_none_or(|p| p.resource_version.is_none())
}

/// A count of a budget's status (`i32`, optional under newer Kubernetes versions).
fn int(field: &impl Maybe<i32>) -> i32 {
    field.opt().copied().unwrap_or(0)
}

fn typed<K: serde::de::DeserializeOwned>(object: DynamicObject) -> Result<K, Error> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::internal(format!("decoding a stored object: {e}")))
}

fn dynamic<K: serde::Serialize>(object: &K) -> Result<DynamicObject, Error> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::internal(format!("encoding an object: {e}")))
}

fn pods() -> ResourceInfo {
    ResourceInfo::builtin("", "Pod").expect("Pods are a built-in kind")
}

fn budgets() -> ResourceInfo {
    ResourceInfo::builtin("policy", "PodDisruptionBudget")
        .expect("PodDisruptionBudgets are a built-in kind")
}

/// Kubernetes' `UpdateDisruptionAllowedCondition`: `DisruptionAllowed` is `True`
/// (`SufficientPods`) while the budget allows a disruption, else `False`
/// (`InsufficientPods`); the transition time moves only when the status does.
pub(crate) fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus) {
    let (value, reason) = if int(&status.disruptions_allowed) > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let observed = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(capstan_api::k8s_openapi::jiff::Timestamp::now());
    match conditions
        .iter_mut()
        .find(|c| compat::text(&c.type_) == "DisruptionAllowed")
    {
        Some(condition) => {
            if compat::text(&condition.status) != value {
                condition.status = compat::value(value.to_string());
                condition.last_transition_time = compat::value(now);
            }
            condition.reason = compat::value(reason.to_string());
            condition.message = compat::value(String::new());
            condition.observed_generation = observed;
        }
        None => conditions.push(Condition {
            type_: compat::value("DisruptionAllowed".to_string()),
            status: compat::value(value.to_string()),
            reason: compat::value(reason.to_string()),
            message: compat::value(String::new()),
            observed_generation: observed,
            last_transition_time: compat::value(now),
        }),
    }
}

/// Kubernetes' `UpdatePodCondition` with the eviction's `DisruptionTarget` condition: the
/// transition time moves only when the condition's status does.
fn set_disruption_target(pod: &mut Pod) {
    let status = pod.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(capstan_api::k8s_openapi::jiff::Timestamp::now());
    let condition = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("EvictionByEvictionAPI".into()),
        message: Some("Eviction API: evicting".into()),
        last_transition_time: Some(now),
        ..PodCondition::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            let transition = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                condition.last_transition_time.clone()
            };
            *existing = PodCondition {
                last_transition_time: transition,
                ..condition
            };
        }
        None => conditions.push(condition),
    }
}

impl Registry {
    /// Evicts the Pod `namespace`/`name` as `POST .../pods/{name}/eviction` asks, with the
    /// Eviction body `eviction` (its JSON); see the [module docs](self). `query_dry_run` is
    /// the request's `dryRun=All`. Not idempotent: a second eviction of a deleted Pod is 404.
    ///
    /// Errors: [`EvictionError::DisruptionBudget`] (429) and
    /// [`EvictionError::MultipleBudgets`] (500) when a budget refuses;
    /// [`EvictionError::Api`] with 400 for a malformed or misaddressed Eviction, 404 for a
    /// missing Pod, 409 for a failed precondition of the caller's, 504 when the budget kept
    /// conflicting, 403 for a budget in a state Kubernetes refuses (negative
    /// `disruptionsAllowed`, too many unconfirmed disruptions).
    pub async fn evict(
        &self,
        namespace: &str,
        name: &str,
        eviction: &Value,
        query_dry_run: bool,
    ) -> Result<(), EvictionError> {
        let request = read_eviction(name, eviction, query_dry_run)?;
        let pods = pods();
        // A Pod that no longer counts is deleted without asking its budget; conflicts are
        // retried unless the caller pinned a version.
        let caller_pinned = !resource_version_unset(&request.params);
        let mut attempts = 0;
        let pod = loop {
            attempts += 1;
            let pod: Pod = typed(Client::get(self, &pods, Some(namespace), name).await?)?;
            if !can_ignore_budget(&pod) {
                break pod;
            }
            let params = if should_enforce_resource_version(&pod) && !caller_pinned {
                with_resource_version(&request.params, &pod)
            } else {
                request.params.clone()
            };
            match self
                .add_condition_and_delete(namespace, name, &params)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error)
                    if error.is_conflict() && !caller_pinned && attempts < EVICTION_ATTEMPTS =>
                {
                    tokio::time::sleep(EVICTION_RETRY_DELAY).await;
                }
                Err(error) => return Err(error.into()),
            }
        };

        let matching = self.budgets_of(&pod).await?;
        let mut pin_version = false;
        let mut budget_name = String::new();
        match matching.as_slice() {
            [] => {}
            [_, _, ..] => return Err(EvictionError::MultipleBudgets),
            [budget] => {
                budget_name = budget.metadata.name.clone().unwrap_or_default();
                let status = budget.status.clone().unwrap_or_default();
                let always_allow = budget
                    .spec
                    .as_ref()
                    .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
                    == Some("AlwaysAllow");
                let budget_met = int(&status.current_healthy) >= int(&status.desired_healthy)
                    && int(&status.desired_healthy) > 0;
                if !pod.is_ready() && (always_allow || budget_met) {
                    pin_version = true;
                } else {
                    self.check_and_decrement(namespace, name, budget.clone(), request.dry_run)
                        .await?;
                }
            }
        }

        let params = if pin_version {
            with_resource_version(&request.params, &pod)
        } else {
            request.params.clone()
        };
        match self
            .add_condition_and_delete(namespace, name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.is_conflict() && pin_version && !caller_pinned => {
                Err(still_processing(&budget_name))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Kubernetes' `addConditionAndDeletePod`: unless a dry run, the Pod first gets the
    /// `DisruptionTarget` condition (`EvictionByEvictionAPI`, `Eviction API: evicting`), on
    /// its latest version when that still meets `params`' preconditions (a caller's
    /// `resourceVersion` precondition then moves to the version this write made); then it
    /// is deleted with `params`.
    ///
    /// Errors: [`Error::Conflict`] for a failed precondition, and what the writes fail with.
    async fn add_condition_and_delete(
        &self,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(), Error> {
        let pods = pods();
        let mut params = params.clone();
        if !params.dry_run {
            let conflict = |message: String| Error::Conflict {
                resource: "pods".into(),
                name: name.to_string(),
                message,
            };
            let mut attempts = 0;
            let written = loop {
                attempts += 1;
                let mut pod: Pod = typed(Client::get(self, &pods, Some(namespace), name).await?)?;
                let preconditions = params.preconditions.clone().unwrap_or_default();
                let found_uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(uid) = preconditions
                    .uid
                    .filter(|u| !u.is_empty() && *u != found_uid)
                {
                    return Err(conflict(format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {found_uid}"
                    )));
                }
                let found_rv = pod.metadata.resource_version.clone().unwrap_or_default();
                if let Some(rv) = preconditions
                    .resource_version
                    .filter(|rv| !rv.is_empty() && *rv != found_rv)
                {
                    return Err(conflict(format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {found_rv}"
                    )));
                }
                set_disruption_target(&mut pod);
                match Client::update_status(
                    self,
                    &pods,
                    Some(namespace),
                    dynamic(&pod)?,
                    &PostParams::default(),
                )
                .await
                {
                    Ok(written) => break written,
                    Err(error) if error.is_conflict() && attempts < EVICTION_ATTEMPTS => continue,
                    Err(error) => return Err(error),
                }
            };
            if let Some(preconditions) = params.preconditions.as_mut() {
                if preconditions.resource_version.is_some() {
                    preconditions.resource_version = written.metadata.resource_version.clone();
                }
            }
        }
        Client::delete(self, &pods, Some(namespace), name, &params).await?;
        Ok(())
    }

    /// The budgets of `pod`'s namespace whose selector matches it; an empty or missing
    /// selector, or an invalid one, matches nothing.
    async fn budgets_of(&self, pod: &Pod) -> Result<Vec<PodDisruptionBudget>, Error> {
        let namespace = pod.metadata.namespace.as_deref();
        let list = Client::list(self, &budgets(), namespace, &ListParams::default()).await?;
        let mut matching = Vec::new();
        for item in list.items {
            let budget: PodDisruptionBudget = typed(item)?;
            let Some(label_selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref())
            else {
                continue;
            };
            let empty = label_selector
                .match_labels
                .as_ref()
                .is_none_or(|l| l.is_empty())
                && label_selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(|e| e.is_empty());
            if empty {
                continue;
            }
            let Ok(selector) = selector::label_selector_from(label_selector) else {
                continue;
            };
            if selector::matches(&selector, pod.metadata.labels.as_ref()) {
                matching.push(budget);
            }
        }
        Ok(matching)
    }

    /// Kubernetes' `checkAndDecrement` in its `RetryOnConflict` loop: refuses when `budget`
    /// allows nothing, else takes one disruption and records the Pod (not on a dry run).
    async fn check_and_decrement(
        &self,
        namespace: &str,
        pod_name: &str,
        mut budget: PodDisruptionBudget,
        dry_run: bool,
    ) -> Result<(), EvictionError> {
        let resource = budgets();
        let name = budget.metadata.name.clone().unwrap_or_default();
        for attempt in 0..EVICTION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(EVICTION_RETRY_DELAY).await;
                budget = typed(Client::get(self, &resource, Some(namespace), &name).await?)?;
            }
            let mut status = budget.status.clone().unwrap_or_default();
            if status.observed_generation.unwrap_or(0) < budget.metadata.generation.unwrap_or(0) {
                return Err(still_processing(&name));
            }
            if int(&status.disruptions_allowed) < 0 {
                return Err(Error::Forbidden {
                    message: format!(
                        "poddisruptionbudget.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
                    ),
                }
                .into());
            }
            if status.disrupted_pods.as_ref().map_or(0, |p| p.len()) > MAX_DISRUPTED_POD_SIZE {
                return Err(Error::Forbidden {
                    message: format!(
                        "poddisruptionbudget.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
                    ),
                }
                .into());
            }
            if int(&status.disruptions_allowed) == 0 {
                return Err(EvictionError::DisruptionBudget {
                    cause: format!(
                        "The disruption budget {name} needs {} healthy pods and has {} currently",
                        int(&status.desired_healthy),
                        int(&status.current_healthy)
                    ),
                    retry_after_seconds: 0,
                });
            }
            *status.disruptions_allowed.or_default_mut() -= 1;
            if int(&status.disruptions_allowed) == 0 {
                update_disruption_allowed_condition(&mut status);
            }
            if dry_run {
                return Ok(());
            }
            status
                .disrupted_pods
                .get_or_insert_with(Default::default)
                .insert(
                    pod_name.to_string(),
                    Time(capstan_api::k8s_openapi::jiff::Timestamp::now()),
                );
            let mut updated = budget.clone();
            updated.status = Some(status);
            match Client::update_status(
                self,
                &resource,
                Some(namespace),
                dynamic(&updated)?,
                &PostParams::default(),
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Timeout {
            message: format!("couldn't update PodDisruptionBudget \"{name}\" due to conflicts"),
        }
        .into())
    }
}

#[cfg(test)]
mod tests;
