//! Kubernetes' defaulting for built-in kinds (`SetDefaults_*` of `k8s.io/kubernetes/pkg/apis`),
//! as the [`Defaulting`] admission step.
//!
//! Defaults fill only what is missing (absent or `null`); a value the client set is never
//! replaced. Custom kinds get no defaults.
//!
//! | kind | defaults |
//! |------|----------|
//! | Pod (and every pod template) | `restartPolicy: Always` (not for Job templates, where it is required), `dnsPolicy: ClusterFirst`, `schedulerName: default-scheduler`, `terminationGracePeriodSeconds: 30`, `securityContext: {}`; containers: `terminationMessagePath: /dev/termination-log`, `terminationMessagePolicy: File`, `imagePullPolicy` (`Always` for `:latest` or no tag, else `IfNotPresent`), `resources: {}`, ports `protocol: TCP`, probe timings, `fieldRef.apiVersion: v1`; volumes' `defaultMode: 420` |
//! | Pod only | `enableServiceLinks: true`, `status.phase: Pending` |
//! | Deployment | `replicas: 1`, `strategy: RollingUpdate` with `maxSurge`/`maxUnavailable` `25%`, `revisionHistoryLimit: 10`, `progressDeadlineSeconds: 600` |
//! | ReplicaSet, ReplicationController | `replicas: 1` (an RC's selector and labels also default to its template's labels) |
//! | DaemonSet | `updateStrategy: RollingUpdate` (`maxUnavailable: 1`, `maxSurge: 0`), `revisionHistoryLimit: 10` |
//! | StatefulSet | `replicas: 1`, `podManagementPolicy: OrderedReady`, `updateStrategy: RollingUpdate` (`partition: 0`), `revisionHistoryLimit: 10`, PVC retention `Retain` |
//! | Job | `parallelism`/`completions: 1`, `backoffLimit: 6`, `completionMode: NonIndexed`, `suspend: false`, `podReplacementPolicy` |
//! | CronJob | `concurrencyPolicy: Allow`, `suspend: false`, history limits 3 and 1 |
//! | Service | `type: ClusterIP`, `sessionAffinity: None`, ports `protocol: TCP` and `targetPort` = `port`, traffic policies `Cluster` (the cluster IP itself is allocated by the registry) |
//! | Namespace | `status.phase: Active`, label `kubernetes.io/metadata.name` |
//! | Secret | `type: Opaque`; `stringData` merged into `data` (base64, `stringData` wins a clash) and dropped |
//! | PersistentVolumeClaim | `volumeMode: Filesystem` |
//! | Endpoints | ports `protocol: TCP` |
//!
//! Each kind's defaults live in its strategy (`registry/kinds/`); this module holds the
//! admission step and what several kinds share: the pod template and container defaults.

use async_trait::async_trait;
use capstan_api::{ResourceInfo, Result};
use serde_json::{json, Map, Value};

use super::{
    admission::{AdmissionPhase, AdmissionRequest, AdmissionStep, Operation},
    kinds, object,
};

/// The mutating admission step applying Kubernetes' defaults to built-in kinds; see the
/// [module docs](self) for the table. Runs on creates and updates (not on status updates,
/// whose other fields the registry discards anyway). Never rejects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Defaulting;

#[async_trait]
impl AdmissionStep for Defaulting {
    fn name(&self) -> &str {
        "Defaulting"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Mutating
    }

    fn keeps_types(&self) -> bool {
        true
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        if request.operation != Operation::Delete && request.subresource.is_none() {
            apply_defaults(request.resource, object);
        }
        Ok(())
    }
}

/// Applies the defaults of `resource`'s kind to `object`, in place. A no-op for custom kinds
/// and for objects that are not JSON objects. Idempotent.
pub fn apply_defaults(resource: &ResourceInfo, object: &mut Value) {
    if !object.is_object() {
        return;
    }
    kinds::strategy_for(resource).apply_defaults(object);
}

/// Whether a pod template's `restartPolicy` gets the `Always` default.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    /// Job templates: the policy is required and left alone.
    Required,
}

/// Inserts `value` under `key` when the key is missing or `null`.
pub(crate) fn set_default(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value.into());
        }
        Some(_) => {}
    }
}

/// `object` as a map, made an empty one first when it is not an object.
pub(crate) fn ensure_map(object: &mut Value) -> &mut Map<String, Value> {
    object::ensure_object(object)
}

/// The list under `key`, if present, as mutable objects.
pub(crate) fn each_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Defaults the pod template at `path` (its metadata is left alone), if there is one.
pub(crate) fn default_template(object: &mut Value, path: &str, restart: RestartPolicy) {
    if let Some(Value::Object(_)) = object::at(object, path) {
        let template = object::at_mut(object, path);
        let spec = ensure_map(
            template
                .entry("spec")
                .or_insert_with(|| Value::Object(Map::new())),
        );
        default_pod_spec(spec, restart);
    }
}

pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>, restart: RestartPolicy) {
    if restart == RestartPolicy::Always {
        set_default(spec, "restartPolicy", "Always");
    }
    set_default(spec, "dnsPolicy", "ClusterFirst");
    set_default(spec, "schedulerName", "default-scheduler");
    set_default(spec, "terminationGracePeriodSeconds", 30);
    set_default(spec, "securityContext", json!({}));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for container in each_object(spec, key) {
            default_container(container);
        }
    }
    for volume in each_object(spec, "volumes") {
        for source in ["secret", "configMap", "projected", "downwardAPI"] {
            if let Some(Value::Object(source)) = volume.get_mut(source) {
                set_default(source, "defaultMode", 420);
            }
        }
    }
}

/// A container's defaults (also an ephemeral container's, on its own subresource).
pub(crate) fn default_container(container: &mut Map<String, Value>) {
    set_default(container, "terminationMessagePath", "/dev/termination-log");
    set_default(container, "terminationMessagePolicy", "File");
    let pull_policy = match container.get("image").and_then(Value::as_str) {
        Some(image) if image_tag(image).is_none_or(|tag| tag == "latest") => "Always",
        Some(_) => "IfNotPresent",
        None => "Always",
    };
    set_default(container, "imagePullPolicy", pull_policy);
    set_default(container, "resources", json!({}));
    for port in each_object(container, "ports") {
        set_default(port, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(probe)) = container.get_mut(probe) {
            set_default(probe, "timeoutSeconds", 1);
            set_default(probe, "periodSeconds", 10);
            set_default(probe, "successThreshold", 1);
            set_default(probe, "failureThreshold", 3);
            if let Some(Value::Object(get)) = probe.get_mut("httpGet") {
                set_default(get, "scheme", "HTTP");
            }
        }
    }
    for env in each_object(container, "env") {
        if let Some(Value::Object(field_ref)) = env
            .get_mut("valueFrom")
            .and_then(|from| from.get_mut("fieldRef"))
        {
            set_default(field_ref, "apiVersion", "v1");
        }
    }
}

/// The tag of an image reference (`nginx:1.27` → `1.27`); `None` without one. A digest
/// (`nginx@sha256:...`) counts as a tag, since it pins the image.
fn image_tag(image: &str) -> Option<&str> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, object: Value) -> Value {
        let mut object = object;
        apply_defaults(&ResourceInfo::builtin(group, kind).unwrap(), &mut object);
        object
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1.0", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
        ] {
            let pod = defaulted(
                "",
                "Pod",
                json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
            );
            assert_eq!(
                pod["spec"]["containers"][0]["imagePullPolicy"], policy,
                "{image}"
            );
        }
    }

    #[test]
    fn pod_defaults_match_kubernetes() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}}),
        );
        assert_eq!(
            pod,
            json!({
                "spec": {
                    "containers": [{
                        "name": "c", "image": "nginx:1",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "enableServiceLinks": true,
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
                "status": {"phase": "Pending"},
            })
        );
    }

    #[test]
    fn values_the_client_set_are_kept() {
        let deployment = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(deployment["spec"]["replicas"], 0);
        assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn job_templates_keep_their_restart_policy_unset() {
        let job = defaulted(
            "batch",
            "Job",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        assert!(job["spec"]["template"]["spec"]
            .get("restartPolicy")
            .is_none());
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
    }

    #[test]
    fn service_ports_get_tcp_and_a_target_port() {
        let service = defaulted(
            "",
            "Service",
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
        );
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["sessionAffinity"], "None");
        assert_eq!(
            service["spec"]["ports"],
            json!([
                {"port": 80, "protocol": "TCP", "targetPort": 80},
                {"port": 443, "protocol": "TCP", "targetPort": "https"},
            ])
        );
    }

    #[test]
    fn namespaces_are_active_and_labelled_with_their_name() {
        let namespace = defaulted("", "Namespace", json!({"metadata": {"name": "prod"}}));
        assert_eq!(namespace["status"]["phase"], "Active");
        assert_eq!(
            namespace["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "prod"
        );
    }

    #[test]
    fn defaulting_is_idempotent() {
        let once = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        let twice = defaulted("apps", "Deployment", once.clone());
        assert_eq!(once, twice);
    }

    #[test]
    fn custom_kinds_get_no_defaults() {
        let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        let mut object = json!({"spec": {}});
        apply_defaults(&widget, &mut object);
        assert_eq!(object, json!({"spec": {}}));
    }
}
