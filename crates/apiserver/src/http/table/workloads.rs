//! The printers of the workload kinds: `apps` (Deployment, ReplicaSet, DaemonSet,
//! StatefulSet, ControllerRevision), `batch` (Job, CronJob), ReplicationController,
//! HorizontalPodAutoscaler and PodDisruptionBudget, after Kubernetes' own.

use serde_json::{json, Value};

use super::core::desired_current_ready;
use super::format::{
    age, containers_and_images, human_duration, int, label_selector, labels, seconds,
    selector_string, string, text,
};
use super::ColumnSpec;

type Found = Option<(&'static [ColumnSpec], fn(&Value, i64) -> Vec<Value>)>;

/// The printer of workload `kind` of `group`.
pub(super) fn printer(group: &str, kind: &str) -> Found {
    Some(match (group, kind) {
        ("apps", "Deployment") => (DEPLOYMENT, deployment),
        ("apps", "ReplicaSet") => (REPLICA_SET, replica_set),
        ("", "ReplicationController") => (REPLICA_SET, replication_controller),
        ("apps", "DaemonSet") => (DAEMON_SET, daemon_set),
        ("apps", "StatefulSet") => (STATEFUL_SET, stateful_set),
        ("apps", "ControllerRevision") => (CONTROLLER_REVISION, controller_revision),
        ("batch", "Job") => (JOB, job),
        ("batch", "CronJob") => (CRON_JOB, cron_job),
        ("autoscaling", "HorizontalPodAutoscaler") => (HPA, horizontal_pod_autoscaler),
        ("policy", "PodDisruptionBudget") => (PDB, pod_disruption_budget),
        _ => return None,
    })
}

fn name(object: &Value) -> Value {
    string(&object["metadata"]["name"])
}

fn created(object: &Value, now: i64) -> Value {
    json!(age(&object["metadata"]["creationTimestamp"], now))
}

const DEPLOYMENT: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Up-to-date", "string", 0),
    ("Available", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

fn deployment(deployment: &Value, now: i64) -> Vec<Value> {
    let (spec, status) = (&deployment["spec"], &deployment["status"]);
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    vec![
        name(deployment),
        json!(format!(
            "{}/{}",
            status["readyReplicas"].as_i64().unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(0)
        )),
        int(&status["updatedReplicas"]),
        int(&status["availableReplicas"]),
        created(deployment, now),
        containers,
        images,
        // A Deployment prints its selector as a selector, not a formatted one: empty when it
        // selects everything, `<invalid>` when it cannot be converted.
        json!(selector_string(&spec["selector"]).unwrap_or_else(|| "<invalid>".into())),
    ]
}

const REPLICA_SET: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

fn replica_set(set: &Value, now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(&set["spec"]["template"]["spec"]);
    let mut cells = vec![name(set)];
    cells.extend(desired_current_ready(set));
    cells.extend([
        created(set, now),
        containers,
        images,
        json!(label_selector(&set["spec"]["selector"])),
    ]);
    cells
}

/// A ReplicationController: a ReplicaSet's columns, its selector a plain label set.
fn replication_controller(controller: &Value, now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(&controller["spec"]["template"]["spec"]);
    let mut cells = vec![name(controller)];
    cells.extend(desired_current_ready(controller));
    cells.extend([
        created(controller, now),
        containers,
        images,
        json!(labels(&controller["spec"]["selector"])),
    ]);
    cells
}

const DAEMON_SET: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Node Selector", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

fn daemon_set(set: &Value, now: i64) -> Vec<Value> {
    let (spec, status) = (&set["spec"], &set["status"]);
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    vec![
        name(set),
        int(&status["desiredNumberScheduled"]),
        int(&status["currentNumberScheduled"]),
        int(&status["numberReady"]),
        int(&status["updatedNumberScheduled"]),
        int(&status["numberAvailable"]),
        json!(labels(&spec["template"]["spec"]["nodeSelector"])),
        created(set, now),
        containers,
        images,
        json!(label_selector(&spec["selector"])),
    ]
}

const STATEFUL_SET: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
];

fn stateful_set(set: &Value, now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(&set["spec"]["template"]["spec"]);
    vec![
        name(set),
        json!(format!(
            "{}/{}",
            set["status"]["readyReplicas"].as_i64().unwrap_or(0),
            set["spec"]["replicas"].as_i64().unwrap_or(0)
        )),
        created(set, now),
        containers,
        images,
    ]
}

const CONTROLLER_REVISION: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Controller", "string", 0),
    ("Revision", "string", 0),
    ("Age", "string", 0),
];

fn controller_revision(revision: &Value, now: i64) -> Vec<Value> {
    let controller = revision["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|owner| owner["controller"] == true)
        .map(|owner| {
            let api_version = text(&owner["apiVersion"]);
            let kind = text(&owner["kind"]).to_lowercase();
            match api_version.split_once('/') {
                Some((group, _)) => format!("{kind}.{group}/{}", text(&owner["name"])),
                None => format!("{kind}/{}", text(&owner["name"])),
            }
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        name(revision),
        json!(controller),
        int(&revision["revision"]),
        created(revision, now),
    ]
}

const JOB: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Completions", "string", 0),
    ("Duration", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

/// A Job's state by its conditions, in Kubernetes' precedence: `Complete`, `Failed`,
/// `Terminating`, `Suspended`, `FailureTarget`, `SuccessCriteriaMet`, else `Running`. The
/// first condition of a type decides whether the Job has it.
fn job_status(job: &Value) -> &'static str {
    let conditions = job["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |kind: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == kind)
            .is_some_and(|c| c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !job["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn job(job: &Value, now: i64) -> Vec<Value> {
    let (spec, status) = (&job["spec"], &job["status"]);
    let succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let completions = match spec["completions"].as_i64() {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match spec["parallelism"].as_i64().unwrap_or(0) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        seconds(&status["startTime"]),
        seconds(&status["completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    vec![
        name(job),
        json!(job_status(job)),
        json!(completions),
        json!(duration),
        created(job, now),
        containers,
        images,
        json!(label_selector(&spec["selector"])),
    ]
}

const CRON_JOB: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Schedule", "string", 0),
    ("Timezone", "string", 0),
    ("Suspend", "boolean", 0),
    ("Active", "integer", 0),
    ("Last Schedule", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

fn cron_job(cron_job: &Value, now: i64) -> Vec<Value> {
    let (spec, status) = (&cron_job["spec"], &cron_job["status"]);
    let job_spec = &spec["jobTemplate"]["spec"];
    let (containers, images) = containers_and_images(&job_spec["template"]["spec"]);
    let last_schedule = match &status["lastScheduleTime"] {
        Value::Null => "<none>".to_string(),
        time => age(time, now),
    };
    vec![
        name(cron_job),
        string(&spec["schedule"]),
        match &spec["timeZone"] {
            Value::Null => json!("<none>"),
            zone => string(zone),
        },
        super::format::bool_text(&spec["suspend"]),
        json!(status["active"].as_array().map_or(0, Vec::len)),
        json!(last_schedule),
        created(cron_job, now),
        containers,
        images,
        json!(label_selector(&job_spec["selector"])),
    ]
}

const HPA: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Reference", "string", 0),
    ("Targets", "string", 0),
    ("MinPods", "string", 0),
    ("MaxPods", "string", 0),
    ("Replicas", "string", 0),
    ("Age", "string", 0),
];

/// A metric target of an `autoscaling/v2` HPA against its current value, as kubectl prints
/// it: `cpu: 50%/80%`, `cpu: <unknown>/80%`, `200m/1` (pods), `2/1 (avg)` (object).
fn hpa_metric(spec: &Value, current: &Value) -> String {
    let quantity_or_unknown = |value: &Value| match text(value) {
        v if v.is_empty() => "<unknown>".to_string(),
        v => v,
    };
    let resource = |source: &str| {
        let target = &spec[source]["target"];
        let current = &current[source]["current"];
        let name = text(&spec[source]["name"]);
        if !target["averageValue"].is_null() {
            format!(
                "{name}: {}/{}",
                quantity_or_unknown(&current["averageValue"]),
                text(&target["averageValue"])
            )
        } else {
            let current = match current["averageUtilization"].as_i64() {
                Some(percent) => format!("{percent}%"),
                None => "<unknown>".into(),
            };
            let target = match target["averageUtilization"].as_i64() {
                Some(percent) => format!("{percent}%"),
                None => "<auto>".into(),
            };
            format!("{name}: {current}/{target}")
        }
    };
    let value_or_average = |source: &str| {
        let target = &spec[source]["target"];
        let current = &current[source]["current"];
        if !target["averageValue"].is_null() {
            format!(
                "{}/{} (avg)",
                quantity_or_unknown(&current["averageValue"]),
                text(&target["averageValue"])
            )
        } else {
            format!(
                "{}/{}",
                quantity_or_unknown(&current["value"]),
                text(&target["value"])
            )
        }
    };
    match spec["type"].as_str().unwrap_or_default() {
        "Resource" => resource("resource"),
        "ContainerResource" => resource("containerResource"),
        "Pods" => format!(
            "{}/{}",
            quantity_or_unknown(&current["pods"]["current"]["averageValue"]),
            text(&spec["pods"]["target"]["averageValue"])
        ),
        "Object" => value_or_average("object"),
        "External" => value_or_average("external"),
        _ => "<unknown type>".to_string(),
    }
}

/// The metrics of an HPA and their current values; for an `autoscaling/v1` one, its CPU
/// target and current utilization as the `Resource` metric they convert to.
fn hpa_metrics(spec: &Value, status: &Value) -> (Vec<Value>, Vec<Value>) {
    let specs = spec["metrics"].as_array().cloned().unwrap_or_default();
    let statuses = status["currentMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match &spec["targetCPUUtilizationPercentage"] {
        Value::Number(target) if specs.is_empty() => {
            let target = json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}});
            let current = match &status["currentCPUUtilizationPercentage"] {
                Value::Number(current) => vec![json!({"type": "Resource", "resource": {
                    "name": "cpu", "current": {"averageUtilization": current}}})],
                _ => statuses,
            };
            (vec![target], current)
        }
        _ => (specs, statuses),
    }
}

fn horizontal_pod_autoscaler(hpa: &Value, now: i64) -> Vec<Value> {
    let (spec, status) = (&hpa["spec"], &hpa["status"]);
    let (specs, statuses) = hpa_metrics(spec, status);
    let targets: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, metric)| hpa_metric(metric, statuses.get(i).unwrap_or(&Value::Null)))
        .collect();
    let targets = match targets.len() {
        0 => "<none>".to_string(),
        n if n <= 2 => targets.join(", "),
        n => format!("{} + {} more...", targets[..2].join(", "), n - 2),
    };
    let reference = format!(
        "{}/{}",
        text(&spec["scaleTargetRef"]["kind"]),
        text(&spec["scaleTargetRef"]["name"])
    );
    let min_pods = match spec["minReplicas"].as_i64() {
        Some(min) => min.to_string(),
        None => "<unset>".to_string(),
    };
    vec![
        name(hpa),
        json!(reference),
        json!(targets),
        json!(min_pods),
        int(&spec["maxReplicas"]),
        int(&status["currentReplicas"]),
        created(hpa, now),
    ]
}

const PDB: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Min Available", "string", 0),
    ("Max Unavailable", "string", 0),
    ("Allowed Disruptions", "integer", 0),
    ("Age", "string", 0),
];

fn pod_disruption_budget(budget: &Value, now: i64) -> Vec<Value> {
    let bound = |value: &Value| match value {
        Value::Null => "N/A".to_string(),
        value => text(value),
    };
    vec![
        name(budget),
        json!(bound(&budget["spec"]["minAvailable"])),
        json!(bound(&budget["spec"]["maxUnavailable"])),
        int(&budget["status"]["disruptionsAllowed"]),
        created(budget, now),
    ]
}
