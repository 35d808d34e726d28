//! Field selectors: `metadata.name=web,spec.nodeName!=,status.phase==Running`.
//!
//! The grammar is apimachinery's `fields.ParseSelector`: comma-separated terms
//! `<field><op><value>` with `op` one of `=`, `==` (both "equals") and `!=`. In values, `\,`,
//! `\=` and `\\` stand for `,`, `=` and `\`; any other escape, or an unescaped `,` or `=`, is an
//! error. Empty terms are skipped, so the empty string selects everything.
//!
//! A kind supports `metadata.name`, `metadata.namespace` and its
//! [`field_labels`](crate::ResourceInfo::field_labels);
//! [`FieldSelector::validate_for`] checks that before a list or watch uses the selector.

use kube_core::ResourceExt;
use std::{fmt, str::FromStr};

use kube_core::DynamicObject;
use serde_json::Value;

use crate::{
    error::{Error, Result},
    resource::ResourceInfo,
    selector::SelectorError,
};

/// How a [`FieldRequirement`] compares the field with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `=` or `==`: the field equals the value.
    Equal,
    /// `!=`: the field differs from the value.
    NotEqual,
}

/// One `field=value` or `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// Dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped; empty matches a missing field.
    pub value: String,
}

impl FieldRequirement {
    /// Whether the field's rendered value satisfies this requirement.
    pub fn matches_value(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equal => actual == self.value,
            FieldOperator::NotEqual => actual != self.value,
        }
    }
}

/// A parsed field selector: all of its requirements must hold.
///
/// `Display` writes the canonical form (`=` for equality, values escaped), which parses back
/// to the same selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the Kubernetes string form. Fails with [`SelectorError::InvalidField`] naming
    /// the term that has no operator, no field name, a bad escape or an unescaped `,`/`=`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(selector).into_iter().filter(|t| !t.is_empty()) {
            let invalid = |reason: String| SelectorError::InvalidField {
                term: term.to_string(),
                reason,
            };
            let (field, operator, raw_value) =
                split_term(term).ok_or_else(|| invalid("expected '=', '==' or '!='".into()))?;
            if field.is_empty() {
                return Err(invalid("missing field name".into()));
            }
            let value = unescape_value(raw_value).map_err(invalid)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Adds the requirement `field=value`.
    #[must_use]
    pub fn equal(self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.with(field.into(), FieldOperator::Equal, value.into())
    }

    /// Adds the requirement `field!=value`.
    #[must_use]
    pub fn not_equal(self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.with(field.into(), FieldOperator::NotEqual, value.into())
    }

    fn with(mut self, field: String, operator: FieldOperator, value: String) -> Self {
        self.requirements.push(FieldRequirement {
            field,
            operator,
            value,
        });
        self
    }

    /// The requirements, in written order.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether this selector has no requirements and so matches everything.
    pub fn selects_all(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, if the selector pins it with `=` (Kubernetes'
    /// `RequiresExactMatch`), e.g. to turn `metadata.name=web` into a single get.
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equal)
            .map(|r| r.value.as_str())
    }

    /// Checks every field against what `resource` supports.
    ///
    /// Fails with [`Error::BadRequest`] `field label not supported: <field>` for the first
    /// unsupported one.
    pub fn validate_for(&self, resource: &ResourceInfo) -> Result<()> {
        match self
            .requirements
            .iter()
            .find(|r| !resource.supports_field_label(&r.field))
        {
            Some(r) => Err(Error::bad_request(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Whether an object, in its JSON form, satisfies every requirement. Fields are read
    /// with [`field_value`].
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_value(&field_value(object, &r.field)))
    }

    /// [`matches`](Self::matches) for a [`DynamicObject`], without serializing it whole.
    pub fn matches_object(&self, object: &DynamicObject) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_value(&object_field_value(object, &r.field)))
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(selector: &str) -> Result<Self, SelectorError> {
        FieldSelector::parse(selector)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let operator = match r.operator {
                FieldOperator::Equal => "=",
                FieldOperator::NotEqual => "!=",
            };
            write!(f, "{}{operator}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

impl From<FieldSelector> for String {
    fn from(selector: FieldSelector) -> Self {
        selector.to_string()
    }
}

/// The value of the dotted `field` in an object's JSON, rendered as Kubernetes renders field
/// labels: strings as is, booleans `true`/`false`, numbers in decimal (`3`), and a missing,
/// null or non-scalar field as the empty string.
///
/// Kubernetes built-in labels that are not a literal JSON path are honoured: `source` reads
/// `source.component`; `status.successful` reads `status.succeeded`; an events.k8s.io Event
/// answers `involvedObject.*`, `reportingComponent` and `source` from `regarding.*`,
/// `reportingController` and `deprecatedSource.component`. As in Kubernetes, the typed labels
/// `spec.unschedulable` and `spec.hostNetwork` default to `false`, and `status.replicas` and
/// `status.successful` to `0`.
pub fn field_value(object: &Value, field: &str) -> String {
    if let Some(value) = scalar_at(object, field) {
        return value;
    }
    let alias = match field {
        "source" => scalar_at(object, "source.component")
            .or_else(|| scalar_at(object, "deprecatedSource.component")),
        "status.successful" => scalar_at(object, "status.succeeded"),
        "reportingComponent" => scalar_at(object, "reportingController"),
        _ => field
            .strip_prefix("involvedObject.")
            .and_then(|rest| scalar_at(object, &format!("regarding.{rest}"))),
    };
    alias.unwrap_or_else(|| {
        match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false",
            "status.replicas" | "status.successful" => "0",
            _ => "",
        }
        .to_string()
    })
}

fn object_field_value(object: &DynamicObject, field: &str) -> String {
    match field {
        "metadata.name" => object.name_any(),
        "metadata.namespace" => object.namespace().unwrap_or_default(),
        _ if field.starts_with("metadata.") => match serde_json::to_value(&object.metadata) {
            Ok(metadata) => field_value(&serde_json::json!({ "metadata": metadata }), field),
            Err(_) => String::new(),
        },
        _ => field_value(&object.data, field),
    }
}

fn scalar_at(object: &Value, path: &str) -> Option<String> {
    let value = path
        .split('.')
        .try_fold(object, |value, segment| value.get(segment))?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` win over `=` at the same position.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        [
            ("!=", FieldOperator::NotEqual),
            ("==", FieldOperator::Equal),
            ("=", FieldOperator::Equal),
        ]
        .into_iter()
        .find(|(op, _)| rest.starts_with(op))
        .map(|(op, operator)| (&term[..i], operator, &rest[op.len()..]))
    })
}

fn unescape_value(raw: &str) -> Result<String, String> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => value.push(c),
                other => return Err(format!("invalid escape sequence: \\{other}")),
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(format!("unescaped character in value: {c}")),
            other => value.push(other),
        }
    }
    if escaped {
        return Err("invalid escape sequence: \\".into());
    }
    Ok(value)
}

fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;
    use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
    use proptest::prelude::*;
    use serde_json::json;

    fn pod(name: &str, namespace: &str, node: Option<&str>, phase: &str) -> Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
            "status": { "phase": phase },
        });
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }

    fn select(selector: &str, pods: &[Value]) -> Vec<String> {
        let selector = FieldSelector::parse(selector).unwrap();
        selector.validate_for(&Pod::info()).unwrap();
        pods.iter()
            .filter(|p| selector.matches(p))
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn pods() -> Vec<Value> {
        vec![
            pod("pending", "default", None, "Pending"),
            pod("running", "default", Some("n1"), "Running"),
            pod("done", "kube-system", Some("n2"), "Succeeded"),
        ]
    }

    #[test]
    fn empty_node_name_selects_unscheduled_pods() {
        assert_eq!(select("spec.nodeName=", &pods()), ["pending"]);
        assert_eq!(select("spec.nodeName!=", &pods()), ["running", "done"]);
    }

    #[test]
    fn phase_not_running_selects_every_other_phase() {
        assert_eq!(
            select("status.phase!=Running", &pods()),
            ["pending", "done"]
        );
        assert_eq!(select("status.phase==Running", &pods()), ["running"]);
    }

    #[test]
    fn namespace_and_name_are_always_selectable() {
        assert_eq!(
            select("metadata.namespace=default", &pods()),
            ["pending", "running"]
        );
        assert_eq!(
            select("metadata.namespace=default,metadata.name=running", &pods()),
            ["running"]
        );
        assert_eq!(select("", &pods()).len(), 3);
    }

    #[test]
    fn mixed_operators_parse_into_ordered_requirements() {
        let selector =
            FieldSelector::parse("metadata.name=foo,spec.nodeName!=,status.phase==Running")
                .unwrap();
        assert_eq!(
            selector,
            FieldSelector::default()
                .equal("metadata.name", "foo")
                .not_equal("spec.nodeName", "")
                .equal("status.phase", "Running")
        );
        assert_eq!(
            selector.to_string(),
            "metadata.name=foo,spec.nodeName!=,status.phase=Running"
        );
        assert_eq!(selector.exact_match("metadata.name"), Some("foo"));
        assert_eq!(selector.exact_match("spec.nodeName"), None);
    }

    #[test]
    fn escaped_separators_are_part_of_the_value() {
        let selector = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,status.phase=x").unwrap();
        assert_eq!(selector.requirements()[0].value, r"a,b=c\d");
        assert_eq!(selector.requirements().len(), 2);
        assert_eq!(
            selector.to_string(),
            r"metadata.name=a\,b\=c\\d,status.phase=x"
        );
    }

    #[test]
    fn malformed_terms_are_rejected_naming_the_term() {
        for (input, needle) in [
            ("metadata.name", "expected '=', '==' or '!='"),
            ("=web", "missing field name"),
            (r"metadata.name=a\b", r"invalid escape sequence: \b"),
            (r"metadata.name=a\", r"invalid escape sequence: \"),
            ("metadata.name=a=b", "unescaped character in value: ="),
        ] {
            let error = FieldSelector::parse(input).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(needle), "{input}: {message}");
            assert!(matches!(error, SelectorError::InvalidField { .. }));
        }
        let error: Error = FieldSelector::parse("nope").unwrap_err().into();
        assert_eq!(error.code(), 400);
    }

    #[test]
    fn unsupported_field_labels_are_bad_requests() {
        let selector = FieldSelector::parse("metadata.name=web,spec.replicas=3").unwrap();
        let error = selector.validate_for(&Pod::info()).unwrap_err();
        assert_eq!(
            error,
            Error::bad_request("field label not supported: spec.replicas")
        );
        assert!(FieldSelector::parse("status.successful=1")
            .unwrap()
            .validate_for(&Job::info())
            .is_ok());
    }

    #[test]
    fn booleans_and_numbers_render_like_kubernetes() {
        let host_pod = json!({ "spec": { "hostNetwork": true }, "status": { "replicas": 3 } });
        assert_eq!(field_value(&host_pod, "spec.hostNetwork"), "true");
        assert_eq!(field_value(&host_pod, "status.replicas"), "3");
        assert!(FieldSelector::parse("spec.hostNetwork=true")
            .unwrap()
            .matches(&host_pod));

        let plain_pod = json!({ "spec": {} });
        assert_eq!(field_value(&plain_pod, "spec.hostNetwork"), "false");
        assert_eq!(field_value(&plain_pod, "spec.nodeName"), "");
        assert_eq!(field_value(&plain_pod, "spec"), "");
    }

    #[test]
    fn typed_labels_with_zero_values_default_like_kubernetes() {
        let node = json!({ "metadata": { "name": "n1" }, "spec": {} });
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .matches(&node));
        let job = json!({ "status": { "succeeded": 2 } });
        assert_eq!(field_value(&job, "status.successful"), "2");
        assert_eq!(field_value(&json!({}), "status.successful"), "0");
    }

    #[test]
    fn event_labels_read_both_event_shapes() {
        let core = json!({
            "involvedObject": { "kind": "Pod", "name": "web" },
            "source": { "component": "kubelet" },
            "reportingComponent": "kubelet",
            "type": "Warning",
        });
        let events_v1 = json!({
            "regarding": { "kind": "Pod", "name": "web" },
            "deprecatedSource": { "component": "kubelet" },
            "reportingController": "kubelet",
            "type": "Warning",
        });
        let selector = FieldSelector::parse(
            "involvedObject.kind=Pod,involvedObject.name=web,source=kubelet,reportingComponent=kubelet,type=Warning",
        )
        .unwrap();
        assert!(selector.matches(&core));
        assert!(selector.matches(&events_v1));
    }

    #[test]
    fn dynamic_objects_match_without_full_serialization() {
        let object: DynamicObject =
            serde_json::from_value(pod("running", "default", Some("n1"), "Running")).unwrap();
        let selector = FieldSelector::parse(
            "metadata.name=running,metadata.namespace=default,spec.nodeName=n1",
        )
        .unwrap();
        assert!(selector.matches_object(&object));
        assert!(!FieldSelector::parse("status.phase=Pending")
            .unwrap()
            .matches_object(&object));
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_selector(
            terms in prop::collection::vec(
                ("[a-z]{1,5}(\\.[a-zA-Z]{1,5}){0,2}", any::<bool>(), "[a-z,=\\\\!. ]{0,8}"),
                0..4,
            )
        ) {
            let selector = terms.into_iter().fold(FieldSelector::default(), |s, (field, equal, value)| {
                if equal { s.equal(field, value) } else { s.not_equal(field, value) }
            });
            let text = selector.to_string();
            prop_assert_eq!(FieldSelector::parse(&text).unwrap(), selector, "{}", text);
        }
    }
}
