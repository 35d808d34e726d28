//! ReplicaSets: `replicas: 1` and the pod template defaults; the workload checks.

use capstan_api::FieldError;
use serde_json::Value;

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, set_default, RestartPolicy},
    object,
    validation::{check_selector_immutable, validate_workload, Replicas},
};

/// The rules of `apps/v1` ReplicaSets.
pub(crate) struct ReplicaSetStrategy;

impl KindStrategy for ReplicaSetStrategy {
    fn apply_defaults(&self, replica_set: &mut Value) {
        set_default(object::at_mut(replica_set, "spec"), "replicas", 1);
        default_template(replica_set, "spec.template", RestartPolicy::Always);
    }

    fn validate(&self, replica_set: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        let spec = spec_of(replica_set);
        validate_workload("ReplicaSet", Replicas::Counted, spec, causes);
        check_selector_immutable(spec, old, causes);
    }
}
