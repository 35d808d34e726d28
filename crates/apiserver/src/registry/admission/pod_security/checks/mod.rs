//! The Pod Security Standards' checks, on a Pod's (or a Pod template's) metadata and spec in
//! their JSON form, with Kubernetes' messages.
//!
//! Each check is one function returning `None` (allowed) or a [`Violation`]. A level runs its
//! checks in Kubernetes' order: the baseline checks sorted by id, then (for `restricted`) the
//! restricted ones sorted by id, a restricted check replacing the baseline checks it
//! overrides (`capabilities_restricted` replaces `capabilities_baseline`,
//! `seccompProfile_restricted` replaces `seccompProfile_baseline`, `restrictedVolumes`
//! replaces `hostPathVolumes`). The checks are those of the latest policy of the API version
//! served (v1.33).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::policy::Level;

mod baseline;
mod restricted;

/// One check that failed: `reason` is short (`host namespaces`), `detail` names what failed
/// (`hostNetwork=true`) and may be empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What is forbidden, e.g. `allowPrivilegeEscalation != false`.
    pub reason: String,
    /// Which fields or containers, e.g. `container "c" must set
    /// securityContext.allowPrivilegeEscalation=false`; empty when there is nothing to add.
    pub detail: String,
}

impl Violation {
    fn new(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
        Some(Violation {
            reason: reason.into(),
            detail: detail.into(),
        })
    }
}

/// The outcome of evaluating one Pod at one level: every failed check, in check order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// The failed checks; empty when the Pod is allowed.
    pub violations: Vec<Violation>,
}

impl Evaluation {
    /// Whether every check passed.
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The reasons joined by `, `: `host namespaces, privileged`.
    pub fn forbidden_reason(&self) -> String {
        self.violations
            .iter()
            .map(|v| v.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The reasons with their details in parentheses, joined by `, `: `host namespaces
    /// (hostNetwork=true), privileged (container "c" must not set
    /// securityContext.privileged=true)`.
    pub fn forbidden_detail(&self) -> String {
        self.violations
            .iter()
            .map(|v| {
                if v.detail.is_empty() {
                    v.reason.clone()
                } else {
                    format!("{} ({})", v.reason, v.detail)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A Pod's (or Pod template's) `metadata` and `spec`, as the checks read them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PodView<'a> {
    metadata: &'a Value,
    spec: &'a Value,
}

impl<'a> PodView<'a> {
    pub(crate) fn new(metadata: &'a Value, spec: &'a Value) -> Self {
        PodView { metadata, spec }
    }

    /// Every container: init containers, containers, then ephemeral containers.
    fn containers(&self) -> impl Iterator<Item = &'a Value> {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |list| {
                spec.get(list)
                    .and_then(Value::as_array)
                    .map(|v| v.as_slice())
                    .unwrap_or_default()
            })
    }

    /// `spec.securityContext`.
    fn pod_context(&self) -> Option<&'a Value> {
        self.spec.get("securityContext").filter(|v| v.is_object())
    }

    /// `spec.<field>` as a boolean (absent is false).
    fn spec_flag(&self, field: &str) -> bool {
        self.spec.get(field).and_then(Value::as_bool) == Some(true)
    }

    /// `metadata.annotations`, sorted by key.
    fn annotations(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .metadata
            .get("annotations")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        pairs.sort_unstable();
        pairs.into_iter()
    }

    /// `spec.os.name == "windows"`: the restricted checks that Windows cannot honour skip it.
    fn is_windows(&self) -> bool {
        self.spec
            .get("os")
            .and_then(|os| os.get("name"))
            .and_then(Value::as_str)
            == Some("windows")
    }
}

/// A container's name.
fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// A container's `securityContext`.
fn context(container: &Value) -> Option<&Value> {
    container.get("securityContext").filter(|v| v.is_object())
}

/// `context.<field>`, when set (not null).
fn field<'a>(context: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    context.and_then(|c| c.get(field)).filter(|v| !v.is_null())
}

/// A string's value, or empty.
fn text(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap_or("")
}

/// `"a", "b"`: each item quoted, as Kubernetes lists names.
fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let inner: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("\"{}\"", inner.join("\", \""))
}

fn pluralize(singular: &'static str, plural: &'static str, count: usize) -> &'static str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase<S: AsRef<str>>(names: &[S]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// A sorted, de-duplicated list of strings (Kubernetes' `sets.String.List()`).
fn sorted(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().collect()
}

/// A Go `%q` rendering of `text`: quoted, with quotes, backslashes and control characters
/// escaped.
fn go_quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

/// One check of the standards.
pub(crate) struct Check {
    /// Kubernetes' check id, which orders checks within a level.
    pub(crate) id: &'static str,
    /// `Baseline` or `Restricted`.
    pub(crate) level: Level,
    /// The baseline checks this (restricted) check replaces.
    pub(crate) overrides: &'static [&'static str],
    /// The check itself.
    pub(crate) run: fn(&PodView<'_>) -> Option<Violation>,
}

/// Every check, in no particular order.
fn all_checks() -> impl Iterator<Item = &'static Check> {
    baseline::CHECKS.iter().chain(restricted::CHECKS.iter())
}

/// The checks of `level`, in the order Kubernetes runs them.
pub(crate) fn checks_for(level: Level) -> &'static [&'static Check] {
    static BASELINE: OnceLock<Vec<&'static Check>> = OnceLock::new();
    static RESTRICTED: OnceLock<Vec<&'static Check>> = OnceLock::new();
    let ordered = |wanted: &[Level]| {
        let overridden: BTreeSet<&str> = all_checks()
            .filter(|c| wanted.contains(&c.level))
            .flat_map(|c| c.overrides.iter().copied())
            .collect();
        let mut baseline: Vec<&'static Check> = all_checks()
            .filter(|c| c.level == Level::Baseline && !overridden.contains(c.id))
            .collect();
        let mut restricted: Vec<&'static Check> = all_checks()
            .filter(|c| c.level == Level::Restricted && wanted.contains(&Level::Restricted))
            .collect();
        baseline.sort_by_key(|c| c.id);
        restricted.sort_by_key(|c| c.id);
        baseline.extend(restricted);
        baseline
    };
    match level {
        Level::Privileged => &[],
        Level::Baseline => BASELINE.get_or_init(|| ordered(&[Level::Baseline])),
        Level::Restricted => {
            RESTRICTED.get_or_init(|| ordered(&[Level::Baseline, Level::Restricted]))
        }
    }
}

/// Evaluates a Pod (its `metadata` and `spec`, or a template's) at `level`: every check of
/// the level, in Kubernetes' order. `privileged` allows everything.
pub fn evaluate(level: Level, metadata: &Value, spec: &Value) -> Evaluation {
    let pod = PodView::new(metadata, spec);
    Evaluation {
        violations: checks_for(level)
            .iter()
            .filter_map(|check| (check.run)(&pod))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
