//! Kubernetes' `PodSecurity` admission plugin (Pod Security Admission), as a validating step
//! of the registry's chain.
//!
//! A namespace chooses its policy with labels: `pod-security.kubernetes.io/enforce`, `audit`
//! and `warn`, each `privileged`, `baseline` or `restricted`, and each with a `-version`
//! label (`latest` or `v1.<minor>`; every version is evaluated with the latest checks). Then:
//!
//! - a Pod create (or an update changing images or adding ephemeral containers, such as
//!   `kubectl debug`) violating the **enforce** level is refused with 403 (`pods "web" is
//!   forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false
//!   (container "web" must set securityContext.allowPrivilegeEscalation=false), ...`);
//! - Pods and the Pod templates of workloads (Deployments, ReplicaSets, StatefulSets,
//!   DaemonSets, Jobs, CronJobs, ReplicationControllers, PodTemplates) violating the **warn**
//!   level are admitted with a warning (`would violate PodSecurity "baseline:latest": host
//!   namespaces (hostNetwork=true)`), which the HTTP server returns as a `Warning` header;
//!   templates are never enforced;
//! - **audit** violations are logged (target `capstan::audit`, with the
//!   `pod-security.kubernetes.io/audit-violations` annotation Kubernetes would record);
//! - labelling a namespace with a stricter enforce level checks its existing Pods (up to
//!   3000, for at most a second) and warns about those that would be refused (`existing pods
//!   in namespace "ns" violate the new PodSecurity enforce level "restricted:latest"`, then one
//!   warning per distinct set of violations, naming a Pod); invalid labels are refused with
//!   422.
//!
//! The checks are in [`checks`] (`baseline` and `restricted`), the labels' resolution in
//! [`policy`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capstan_api::{Error, FieldError, ResourceInfo, Result};
use capstan_store::{Range, Store, StoreExt};
use serde_json::Value;

use super::warnings;
use super::{AdmissionPhase, AdmissionRequest, AdmissionStep, Operation};
use crate::codec;
use crate::registry::object;

pub mod checks;
pub mod policy;

pub use checks::{evaluate, Evaluation, Violation};
pub use policy::{
    Level, LevelVersion, Policy, PolicyError, Version, AUDIT_LEVEL_LABEL, AUDIT_VERSION_LABEL,
    ENFORCE_LEVEL_LABEL, ENFORCE_VERSION_LABEL, LABEL_PREFIX, WARN_LEVEL_LABEL, WARN_VERSION_LABEL,
};

/// At most this many existing Pods are checked when a namespace's enforce level changes.
pub const NAMESPACE_MAX_PODS_TO_CHECK: usize = 3000;
/// Checking a namespace's existing Pods stops after this long.
pub const NAMESPACE_POD_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The Pod subresources whose writes are not Pod specs to evaluate.
const IGNORED_POD_SUBRESOURCES: &[&str] = &[
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// Kubernetes' `PodSecurity` admission plugin; see the [module](self).
///
/// It is an option of the registry: `registry.add_admission(PodSecurityAdmission::new(store))`
/// (with the registry's own store), on in every cluster as in Kubernetes since 1.25. Nothing is
/// exempt by default (not even `kube-system`), and namespaces without labels are
/// `privileged`, so it changes nothing until a namespace is labelled.
///
/// Each Pod or workload write costs one point read of its namespace; changing a namespace's
/// enforce level costs one read of its Pods.
pub struct PodSecurityAdmission {
    store: Arc<dyn Store>,
    defaults: Policy,
    exempt_namespaces: BTreeSet<String>,
    exempt_runtime_classes: BTreeSet<String>,
}

impl std::fmt::Debug for PodSecurityAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSecurityAdmission")
            .field("defaults", &self.defaults)
            .field("exempt_namespaces", &self.exempt_namespaces)
            .field("exempt_runtime_classes", &self.exempt_runtime_classes)
            .finish_non_exhaustive()
    }
}

impl PodSecurityAdmission {
    /// The step, reading namespaces and Pods from `store` (the registry's own), with
    /// Kubernetes' default configuration: `privileged:latest` for unlabelled modes, no
    /// exemptions.
    pub fn new(store: Arc<dyn Store>) -> Self {
        PodSecurityAdmission {
            store,
            defaults: Policy::default(),
            exempt_namespaces: BTreeSet::new(),
            exempt_runtime_classes: BTreeSet::new(),
        }
    }

    /// The policy of modes a namespace does not label (the `defaults` of Kubernetes'
    /// `PodSecurityConfiguration`).
    #[must_use]
    pub fn with_defaults(mut self, defaults: Policy) -> Self {
        self.defaults = defaults;
        self
    }

    /// Exempts every Pod and workload in `namespace` (`exemptions.namespaces`).
    #[must_use]
    pub fn exempt_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.exempt_namespaces.insert(namespace.into());
        self
    }

    /// Exempts Pods with `spec.runtimeClassName` `runtime_class`
    /// (`exemptions.runtimeClasses`).
    #[must_use]
    pub fn exempt_runtime_class(mut self, runtime_class: impl Into<String>) -> Self {
        self.exempt_runtime_classes.insert(runtime_class.into());
        self
    }

    /// The policy of namespace `namespace` and the errors of its labels; a namespace that
    /// does not exist (yet) has no labels.
    async fn namespace_policy(&self, namespace: &str) -> Result<(Policy, Vec<FieldError>)> {
        let info = ResourceInfo::builtin("", "Namespace").expect("a built-in core kind");
        let key = info.key(None, namespace)?;
        let stored =
            self.store.get(key).await.map_err(|_| {
                Error::internal(format!("failed to lookup namespace {namespace:?}"))
            })?;
        let labels = match stored {
            Some(kv) => object::labels(&codec::decode(&kv)?),
            None => BTreeMap::new(),
        };
        Ok(Policy::from_labels(&labels, &self.defaults))
    }

    async fn admit_pod(&self, request: &AdmissionRequest<'_>, pod: &Value) -> Result<()> {
        if request
            .subresource
            .is_some_and(|s| IGNORED_POD_SUBRESOURCES.contains(&s))
        {
            return Ok(());
        }
        let namespace = request.namespace.unwrap_or_default();
        if self.exempt_namespaces.contains(namespace) {
            return Ok(());
        }
        let (policy, errors) = self.namespace_policy(namespace).await?;
        if errors.is_empty() && policy.fully_privileged() {
            return Ok(());
        }
        if request.operation == Operation::Update {
            if let Some(old) = request.old_object {
                if !significant_pod_update(pod, old) {
                    return Ok(());
                }
            }
        }
        let empty = Value::Object(Default::default());
        let metadata = pod.get("metadata").unwrap_or(&empty);
        let spec = pod.get("spec").unwrap_or(&empty);
        self.evaluate_pod(request, &policy, &errors, metadata, spec, true)
    }

    async fn admit_workload(
        &self,
        request: &AdmissionRequest<'_>,
        object: &Value,
        template: &[&str],
    ) -> Result<()> {
        if request.subresource.is_some() {
            return Ok(());
        }
        let namespace = request.namespace.unwrap_or_default();
        if self.exempt_namespaces.contains(namespace) {
            return Ok(());
        }
        // Workloads are never refused: a namespace that cannot be read only skips the checks.
        let Ok((policy, errors)) = self.namespace_policy(namespace).await else {
            return Ok(());
        };
        if errors.is_empty()
            && policy.warn.level == Level::Privileged
            && policy.audit.level == Level::Privileged
        {
            return Ok(());
        }
        let Some(template) = template
            .iter()
            .try_fold(object, |value, key| value.get(key))
            .filter(|t| !t.is_null())
        else {
            return Ok(());
        };
        let empty = Value::Object(Default::default());
        let metadata = template.get("metadata").unwrap_or(&empty);
        let spec = template.get("spec").unwrap_or(&empty);
        self.evaluate_pod(request, &policy, &errors, metadata, spec, false)
    }

    /// Evaluates a Pod or template against the namespace's policy: the enforce level (for
    /// Pods) refuses, the audit level logs, the warn level warns.
    fn evaluate_pod(
        &self,
        request: &AdmissionRequest<'_>,
        policy: &Policy,
        label_errors: &[FieldError],
        metadata: &Value,
        spec: &Value,
        enforce: bool,
    ) -> Result<()> {
        let runtime_class = spec.get("runtimeClassName").and_then(Value::as_str);
        if runtime_class.is_some_and(|class| self.exempt_runtime_classes.contains(class)) {
            return Ok(());
        }
        if !label_errors.is_empty() {
            tracing::debug!(
                namespace = request.namespace.unwrap_or_default(),
                "failed to parse PodSecurity namespace labels: {}",
                label_errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut cached: Vec<(Level, Evaluation)> = Vec::new();
        let mut evaluate_at = |level: Level| -> Evaluation {
            if let Some((_, result)) = cached.iter().find(|(l, _)| *l == level) {
                return result.clone();
            }
            let result = evaluate(level, metadata, spec);
            cached.push((level, result.clone()));
            result
        };
        let mut refusal = None;
        if enforce {
            let result = evaluate_at(policy.enforce.level);
            if !result.allowed() {
                refusal = Some(forbidden(
                    request,
                    format!(
                        "violates PodSecurity {:?}: {}",
                        policy.enforce.to_string(),
                        result.forbidden_detail()
                    ),
                ));
            }
        }
        let audit = evaluate_at(policy.audit.level);
        if !audit.allowed() {
            tracing::info!(
                target: "capstan::audit",
                namespace = request.namespace.unwrap_or_default(),
                name = request.name,
                resource = %request.resource.qualified_resource(),
                "{}audit-violations: would violate PodSecurity {:?}: {}",
                LABEL_PREFIX,
                policy.audit.to_string(),
                audit.forbidden_detail()
            );
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let warn = evaluate_at(policy.warn.level);
        if !warn.allowed() {
            warnings::add(format!(
                "would violate PodSecurity {:?}: {}",
                policy.warn.to_string(),
                warn.forbidden_detail()
            ));
        }
        Ok(())
    }

    async fn admit_namespace(
        &self,
        request: &AdmissionRequest<'_>,
        namespace: &Value,
    ) -> Result<()> {
        if request.subresource.is_some() {
            return Ok(());
        }
        let labels = object::labels(namespace);
        let (new_policy, new_errors) = Policy::from_labels(&labels, &self.defaults);
        let invalid = |causes: Vec<FieldError>| Error::Invalid {
            kind: request.resource.qualified_kind(),
            name: request.name.to_string(),
            causes,
        };
        let exempt = self.exempt_namespaces.contains(request.name);
        match request.operation {
            Operation::Create => {
                if !new_errors.is_empty() {
                    return Err(invalid(new_errors));
                }
                if exempt {
                    self.warn_exempt(request.name, &new_policy, &labels);
                }
                Ok(())
            }
            Operation::Update => {
                let old_labels = request.old_object.map(object::labels).unwrap_or_default();
                let (old_policy, old_errors) = Policy::from_labels(&old_labels, &self.defaults);
                if !new_errors.is_empty() && (old_errors.is_empty() || new_errors != old_errors) {
                    return Err(invalid(new_errors));
                }
                let (new, old) = (new_policy.enforce, old_policy.enforce);
                if new == old
                    || new.level == Level::Privileged
                    || (new.version == old.version && new.level <= old.level)
                {
                    return Ok(());
                }
                if exempt {
                    self.warn_exempt(request.name, &new_policy, &labels);
                    return Ok(());
                }
                for warning in self.evaluate_pods_in_namespace(request.name, new).await {
                    warnings::add(warning);
                }
                Ok(())
            }
            Operation::Delete => Ok(()),
        }
    }

    /// Warns that an exempt namespace's labels are ignored, unless they ask for nothing more
    /// than the defaults.
    fn warn_exempt(&self, namespace: &str, policy: &Policy, labels: &BTreeMap<String, String>) {
        if policy.fully_privileged() || policy.equivalent(&self.defaults) {
            return;
        }
        let modes = [
            (
                "enforce",
                policy.enforce,
                ENFORCE_LEVEL_LABEL,
                ENFORCE_VERSION_LABEL,
            ),
            (
                "audit",
                policy.audit,
                AUDIT_LEVEL_LABEL,
                AUDIT_VERSION_LABEL,
            ),
            ("warn", policy.warn, WARN_LEVEL_LABEL, WARN_VERSION_LABEL),
        ];
        let set: Vec<String> = modes
            .iter()
            .filter(|(_, lv, level, version)| {
                lv.level != Level::Privileged
                    && (labels.contains_key(*level) || labels.contains_key(*version))
            })
            .map(|(mode, lv, _, _)| format!("{mode}={lv}"))
            .collect();
        warnings::add(format!(
            "namespace {namespace:?} is exempt from Pod Security, and the policy ({}) will be ignored",
            set.join(", ")
        ));
    }

    /// The warnings about `namespace`'s existing Pods under the new enforce level, as
    /// Kubernetes words them.
    pub async fn evaluate_pods_in_namespace(
        &self,
        namespace: &str,
        enforce: LevelVersion,
    ) -> Vec<String> {
        let deadline = Instant::now() + NAMESPACE_POD_CHECK_TIMEOUT;
        let pods = match self.list_pods(namespace).await {
            Ok(pods) => pods,
            Err(error) => {
                tracing::warn!(namespace, "failed to list pods: {error}");
                return vec![
                    "failed to list pods while checking new PodSecurity enforce level".into(),
                ];
            }
        };
        let pods = self.prioritize(pods);
        let total = pods.len();
        let mut checked = total.min(NAMESPACE_MAX_PODS_TO_CHECK);
        // Distinct reasons, in the order first seen, with the first Pod name (lexically) and
        // the count of Pods sharing them.
        let mut seen: Vec<(String, String, usize)> = Vec::new();
        for (index, pod) in pods.iter().take(NAMESPACE_MAX_PODS_TO_CHECK).enumerate() {
            let empty = Value::Object(Default::default());
            let result = evaluate(
                enforce.level,
                pod.get("metadata").unwrap_or(&empty),
                pod.get("spec").unwrap_or(&empty),
            );
            if !result.allowed() {
                let reason = result.forbidden_reason();
                let name = object::name(pod).unwrap_or_default().to_string();
                match seen.iter_mut().find(|(r, _, _)| *r == reason) {
                    Some((_, first, count)) => {
                        *count += 1;
                        if name < *first {
                            *first = name;
                        }
                    }
                    None => seen.push((reason, name, 1)),
                }
            }
            if Instant::now() >= deadline {
                checked = index + 1;
                break;
            }
        }
        let mut warnings = Vec::new();
        if checked < total {
            warnings.push(format!(
                "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
            ));
        }
        if !seen.is_empty() {
            warnings.push(format!(
                "existing pods in namespace {namespace:?} violate the new PodSecurity enforce level {:?}",
                enforce.to_string()
            ));
        }
        let mut pod_warnings: Vec<String> = seen
            .into_iter()
            .map(|(reason, first, count)| match count {
                1 => format!("{first}: {reason}"),
                2 => format!("{first} (and 1 other pod): {reason}"),
                n => format!("{first} (and {} other pods): {reason}", n - 1),
            })
            .collect();
        pod_warnings.sort();
        warnings.extend(pod_warnings);
        warnings
    }

    async fn list_pods(&self, namespace: &str) -> Result<Vec<Value>> {
        let info = ResourceInfo::builtin("", "Pod").expect("a built-in core kind");
        let prefix = info.namespace_prefix(namespace)?;
        let response = self
            .store
            .range(Range::prefix(prefix))
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        response.kvs.iter().map(codec::decode).collect()
    }

    /// Pods without an exempt runtime class, one per controller first, then the other
    /// replicas, as Kubernetes orders them so a capped check covers most workloads.
    fn prioritize(&self, pods: Vec<Value>) -> Vec<Value> {
        let mut first = Vec::new();
        let mut replicas = Vec::new();
        let mut controllers = HashSet::new();
        for pod in pods {
            let class = object::at(&pod, "spec.runtimeClassName").and_then(Value::as_str);
            if class.is_some_and(|c| self.exempt_runtime_classes.contains(c)) {
                continue;
            }
            let controller = object::metadata(&pod)
                .and_then(|m| m.get("ownerReferences"))
                .and_then(Value::as_array)
                .and_then(|owners| {
                    owners
                        .iter()
                        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
                })
                .and_then(|o| o.get("uid"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if controller.is_some_and(|uid| !controllers.insert(uid)) {
                replicas.push(pod);
            } else {
                first.push(pod);
            }
        }
        first.extend(replicas);
        first
    }
}

/// The path of the Pod template in a workload kind, if the kind has one.
fn template_path(resource: &ResourceInfo) -> Option<&'static [&'static str]> {
    match (resource.group(), resource.kind()) {
        ("", "ReplicationController") => Some(&["spec", "template"]),
        ("", "PodTemplate") => Some(&["template"]),
        ("apps", "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet") => {
            Some(&["spec", "template"])
        }
        ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Whether a Pod update changes what the policy looks at: container counts, an image, an
/// ephemeral container added or changed. Other Pod fields are immutable or irrelevant.
fn significant_pod_update(pod: &Value, old: &Value) -> bool {
    let list = |object: &'_ Value, key: &str| -> Vec<Value> {
        object::at(object, &format!("spec.{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let image = |c: &Value| c.get("image").cloned();
    for key in ["containers", "initContainers"] {
        let (new, old) = (list(pod, key), list(old, key));
        if new.len() != old.len() || new.iter().zip(&old).any(|(n, o)| image(n) != image(o)) {
            return true;
        }
    }
    let old_ephemeral = list(old, "ephemeralContainers");
    list(pod, "ephemeralContainers").iter().any(|container| {
        let name = container.get("name");
        match old_ephemeral.iter().find(|o| o.get("name") == name) {
            None => true,
            Some(old) => image(container) != image(old),
        }
    })
}

/// Kubernetes' `NewForbidden` message for the request's object.
fn forbidden(request: &AdmissionRequest<'_>, why: String) -> Error {
    let resource = request.resource.qualified_resource();
    let message = if request.name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {:?} is forbidden: {why}", request.name)
    };
    Error::Forbidden { message }
}

#[async_trait]
impl AdmissionStep for PodSecurityAdmission {
    fn name(&self) -> &str {
        "PodSecurity"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Validating
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Ok(());
        }
        let resource = request.resource;
        match (resource.group(), resource.kind()) {
            ("", "Namespace") => self.admit_namespace(request, object).await,
            ("", "Pod") => self.admit_pod(request, object).await,
            _ => match template_path(resource) {
                Some(path) => self.admit_workload(request, object, path).await,
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
