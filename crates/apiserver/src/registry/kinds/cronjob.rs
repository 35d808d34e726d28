//! CronJobs: `concurrencyPolicy: Allow`, `suspend: false` and history limits by default, the
//! Job defaults in the job template; a schedule, a known concurrency policy and a valid job
//! template.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{
    job::{default_job, validate_job},
    spec_of, KindStrategy,
};
use crate::registry::{defaults::set_default, object};

/// The rules of `batch/v1` CronJobs.
pub(crate) struct CronJobStrategy;

impl KindStrategy for CronJobStrategy {
    fn apply_defaults(&self, cron_job: &mut Value) {
        default_cron_job(cron_job);
    }

    fn validate(&self, cron_job: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_cron_job(spec_of(cron_job), causes);
    }
}

fn default_cron_job(cron_job: &mut Value) {
    let spec = object::at_mut(cron_job, "spec");
    set_default(spec, "concurrencyPolicy", "Allow");
    set_default(spec, "suspend", false);
    set_default(spec, "successfulJobsHistoryLimit", 3);
    set_default(spec, "failedJobsHistoryLimit", 1);
    if let Some(Value::Object(_)) = object::at(cron_job, "spec.jobTemplate") {
        default_job(cron_job, "spec.jobTemplate.spec");
    }
}

fn validate_cron_job(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if spec
        .get("schedule")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(FieldError::required("spec.schedule", ""));
    }
    if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
        if !["Allow", "Forbid", "Replace"].contains(&policy) {
            causes.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                policy,
                ["Allow", "Forbid", "Replace"],
            ));
        }
    }
    match spec
        .get("jobTemplate")
        .and_then(|t| t.get("spec"))
        .and_then(Value::as_object)
    {
        Some(job) => validate_job(job, "spec.jobTemplate.spec", causes),
        None => causes.push(FieldError::required("spec.jobTemplate.spec", "")),
    }
}
