//! PodTemplates: the pod spec defaults and validation of their `template`.

use capstan_api::FieldError;
use serde_json::Value;

use super::KindStrategy;
use crate::registry::{
    defaults::{default_template, RestartPolicy},
    validation::{validate_template, PodContext},
};

/// The rules of `v1` PodTemplates.
pub(crate) struct PodTemplateStrategy;

impl KindStrategy for PodTemplateStrategy {
    fn apply_defaults(&self, pod_template: &mut Value) {
        default_template(pod_template, "template", RestartPolicy::Always);
    }

    fn validate(&self, pod_template: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        if let Some(template) = pod_template.get("template").and_then(Value::as_object) {
            validate_template(template, "template", PodContext::Pod, causes);
        }
    }
}
