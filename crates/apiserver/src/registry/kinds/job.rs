//! Jobs: counts, `backoffLimit: 6`, `completionMode`, `suspend` and `podReplacementPolicy` by
//! default, and a template whose restart policy is required (`OnFailure` or `Never`). CronJobs
//! share the Job spec rules.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, set_default, RestartPolicy},
    object,
    validation::{non_negative, validate_template, PodContext},
};

/// The rules of `batch/v1` Jobs.
pub(crate) struct JobStrategy;

impl KindStrategy for JobStrategy {
    fn apply_defaults(&self, job: &mut Value) {
        default_job(job, "spec");
    }

    fn validate(&self, job: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_job(spec_of(job), "spec", causes);
    }
}

/// Defaults the Job spec at `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`).
pub(super) fn default_job(object: &mut Value, path: &str) {
    let spec = object::at_mut(object, path);
    if matches!(spec.get("completions"), None | Some(Value::Null))
        && matches!(spec.get("parallelism"), None | Some(Value::Null))
    {
        spec.insert("completions".into(), 1.into());
    }
    set_default(spec, "parallelism", 1);
    set_default(spec, "backoffLimit", 6);
    set_default(spec, "completionMode", "NonIndexed");
    set_default(spec, "suspend", false);
    let replacement = if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", replacement);
    default_template(object, &format!("{path}.template"), RestartPolicy::Required);
}

/// Checks the Job spec `spec` found at `path`.
pub(super) fn validate_job(spec: &Map<String, Value>, path: &str, causes: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        non_negative(spec, key, path, causes);
    }
    match spec.get("template").and_then(Value::as_object) {
        Some(template) => validate_template(
            template,
            &format!("{path}.template"),
            PodContext::Job,
            causes,
        ),
        None => causes.push(FieldError::required(format!("{path}.template"), "")),
    }
}
