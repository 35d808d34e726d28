//! ReplicationControllers: `replicas: 1`, a selector and labels from the template's labels;
//! counts, a selector matching the template, and a template that restarts `Always`.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, set_default, RestartPolicy},
    object,
    validation::{non_negative, validate_label_map, validate_template, PodContext},
};

/// The rules of `v1` ReplicationControllers.
pub(crate) struct ReplicationControllerStrategy;

impl KindStrategy for ReplicationControllerStrategy {
    fn apply_defaults(&self, controller: &mut Value) {
        default_replication_controller(controller);
    }

    fn validate(&self, controller: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_replication_controller(spec_of(controller), causes);
    }
}

fn default_replication_controller(controller: &mut Value) {
    let template_labels = object::at(controller, "spec.template.metadata.labels")
        .filter(|labels| labels.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    let spec = object::at_mut(controller, "spec");
    set_default(spec, "replicas", 1);
    if let Some(labels) = template_labels {
        set_default(spec, "selector", labels.clone());
        let metadata = object::metadata_mut(controller);
        set_default(metadata, "labels", labels);
    }
    default_template(controller, "spec.template", RestartPolicy::Always);
}

fn validate_replication_controller(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    non_negative(spec, "replicas", "spec", causes);
    non_negative(spec, "minReadySeconds", "spec", causes);
    validate_label_map(spec.get("selector"), "spec.selector", causes);
    if let Some(template) = spec.get("template").and_then(Value::as_object) {
        if let Some(selector) = spec.get("selector").and_then(Value::as_object) {
            let labels = template
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object);
            let matches = selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if selector.is_empty() || !matches {
                causes.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    labels.cloned().map(Value::Object).unwrap_or(Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        validate_template(
            template,
            "spec.template",
            PodContext::AlwaysRestarting,
            causes,
        );
    }
}
