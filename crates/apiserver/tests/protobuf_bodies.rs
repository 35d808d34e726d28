//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`, what kubectl 1.32+ sends
//! for its typed commands): each built-in kind built with Kubernetes' own messages (k8s-pb),
//! posted in Kubernetes' envelope, is stored exactly as the same object posted as JSON;
//! `DeleteOptions` bodies steer deletes; malformed bodies are refused with 400 and store
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use capstan_api::testing::within;
use capstan_apiserver::protobuf::envelope::wrap;
use capstan_apiserver::{http::router, registry::Registry};
use capstan_store::memory::MemoryStore;
use http_body_util::BodyExt;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::{apps, batch};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The API groups' kinds, RBAC and CustomResourceDefinitions.
#[path = "protobuf_bodies/group_kinds.rs"]
mod group_kinds;

/// How long any one case may take.
const LIMIT: Duration = Duration::from_secs(30);

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn app() -> (Arc<Registry>, axum::Router) {
    let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
    let app = router(registry.clone(), "127.0.0.1:0".into());
    (registry, app)
}

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    send(app, Method::GET, uri, "application/json", Vec::new()).await
}

/// The object without what differs between two creations: name, uid, timestamps set by the
/// server, resourceVersion, and allocated cluster IPs.
fn comparable(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "name",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "managedFields",
        ] {
            meta.remove(key);
        }
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove("kubernetes.io/metadata.name");
        }
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    object
}

fn objects_path(api_version: &str, plural: &str, namespaced: bool) -> String {
    let prefix = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    if namespaced {
        format!("{prefix}/namespaces/default/{plural}")
    } else {
        format!("{prefix}/{plural}")
    }
}

/// Posts `build("from-pb")`'s message in the envelope and `build("from-json")`'s JSON, and
/// asserts both are created and stored identically.
async fn same_as_json<M: Message>(
    api_version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    build: impl Fn(&str) -> (M, Value),
) {
    let (_registry, app) = app();
    let path = objects_path(api_version, plural, namespaced);
    let (message, _) = build("from-pb");
    let (_, mut json) = build("from-json");
    json["apiVersion"] = api_version.into();
    json["kind"] = kind.into();
    let body = wrap(api_version, kind, &message.encode_to_vec());
    let (code, created) = send(&app, Method::POST, &path, PROTOBUF, body).await;
    assert_eq!(code, StatusCode::CREATED, "{kind} from protobuf: {created}");
    let (code, created) = send(
        &app,
        Method::POST,
        &path,
        "application/json",
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{kind} from JSON: {created}");
    let (_, from_pb) = get(&app, &format!("{path}/from-pb")).await;
    let (_, from_json) = get(&app, &format!("{path}/from-json")).await;
    assert_eq!(from_pb["metadata"]["name"], "from-pb");
    assert_eq!(comparable(from_pb), comparable(from_json), "{kind}");
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        labels: labels(),
        annotations: BTreeMap::from([("note".to_string(), "from a test".to_string())]),
        // Go's zero time, as kubectl's marshaller writes an unset creationTimestamp.
        creation_timestamp: Some(meta::Time {
            seconds: Some(-62_135_596_800),
            nanos: Some(0),
        }),
        ..Default::default()
    })
}

fn meta_json(name: &str) -> Value {
    json!({"name": name, "labels": {"app": "web"}, "annotations": {"note": "from a test"}})
}

fn quantity(text: &str) -> Quantity {
    Quantity { string: s(text) }
}

fn selector() -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector {
        match_labels: labels(),
        ..Default::default()
    })
}

fn pod_spec() -> core::PodSpec {
    core::PodSpec {
        containers: vec![core::Container {
            name: s("app"),
            image: s("nginx:1.27"),
            args: vec!["--port".into(), "8080".into()],
            ports: vec![core::ContainerPort {
                name: s("http"),
                container_port: Some(8080),
                protocol: s("TCP"),
                ..Default::default()
            }],
            env: vec![core::EnvVar {
                name: s("MODE"),
                value: s("production"),
                ..Default::default()
            }],
            resources: Some(core::ResourceRequirements {
                limits: BTreeMap::from([("memory".into(), quantity("128Mi"))]),
                requests: BTreeMap::from([
                    ("cpu".into(), quantity("100m")),
                    ("memory".into(), quantity("64Mi")),
                ]),
                ..Default::default()
            }),
            readiness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    http_get: Some(core::HttpGetAction {
                        path: s("/healthz"),
                        port: Some(IntOrString {
                            r#type: Some(1),
                            str_val: s("http"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        }],
        restart_policy: s("Always"),
        termination_grace_period_seconds: Some(0),
        node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
        ..Default::default()
    }
}

fn pod_spec_json() -> Value {
    json!({
        "containers": [{
            "name": "app",
            "image": "nginx:1.27",
            "args": ["--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "production"}],
            "resources": {
                "limits": {"memory": "128Mi"},
                "requests": {"cpu": "100m", "memory": "64Mi"},
            },
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"disk": "ssd"},
    })
}

fn template() -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta {
            labels: labels(),
            ..Default::default()
        }),
        spec: Some(pod_spec()),
    })
}

fn template_json() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec_json()})
}

fn job_template_spec(restart: &str) -> core::PodTemplateSpec {
    let mut spec = pod_spec();
    spec.restart_policy = s(restart);
    core::PodTemplateSpec {
        metadata: None,
        spec: Some(spec),
    }
}

fn job_template_json(restart: &str) -> Value {
    let mut spec = pod_spec_json();
    spec["restartPolicy"] = restart.into();
    json!({"spec": spec})
}

#[tokio::test]
async fn a_pod_from_protobuf_is_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("v1", "Pod", "pods", true, |name| {
            let pod = core::Pod {
                metadata: meta(name),
                spec: Some(pod_spec()),
                status: None,
            };
            (
                pod,
                json!({"metadata": meta_json(name), "spec": pod_spec_json()}),
            )
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn workloads_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("apps/v1", "Deployment", "deployments", true, |name| {
            let object = apps::v1::Deployment {
                metadata: meta(name),
                spec: Some(apps::v1::DeploymentSpec {
                    replicas: Some(0),
                    selector: selector(),
                    template: template(),
                    strategy: Some(apps::v1::DeploymentStrategy {
                        r#type: s("RollingUpdate"),
                        rolling_update: Some(apps::v1::RollingUpdateDeployment {
                            max_unavailable: Some(IntOrString {
                                r#type: Some(0),
                                int_val: Some(0),
                                ..Default::default()
                            }),
                            max_surge: Some(IntOrString {
                                r#type: Some(1),
                                str_val: s("25%"),
                                ..Default::default()
                            }),
                        }),
                    }),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template_json(),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            }});
            (object, json)
        })
        .await;
        same_as_json("apps/v1", "ReplicaSet", "replicasets", true, |name| {
            let object = apps::v1::ReplicaSet {
                metadata: meta(name),
                spec: Some(apps::v1::ReplicaSetSpec {
                    replicas: Some(2),
                    selector: selector(),
                    template: template(),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template_json(),
            }});
            (object, json)
        })
        .await;
        same_as_json("apps/v1", "DaemonSet", "daemonsets", true, |name| {
            let object = apps::v1::DaemonSet {
                metadata: meta(name),
                spec: Some(apps::v1::DaemonSetSpec {
                    selector: selector(),
                    template: template(),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "selector": {"matchLabels": {"app": "web"}}, "template": template_json(),
            }});
            (object, json)
        })
        .await;
        same_as_json("apps/v1", "StatefulSet", "statefulsets", true, |name| {
            let object = apps::v1::StatefulSet {
                metadata: meta(name),
                spec: Some(apps::v1::StatefulSetSpec {
                    replicas: Some(1),
                    selector: selector(),
                    template: template(),
                    service_name: s("web"),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": template_json(), "serviceName": "web",
            }});
            (object, json)
        })
        .await;
        same_as_json("v1", "ReplicationController", "replicationcontrollers", true, |name| {
            let object = core::ReplicationController {
                metadata: meta(name),
                spec: Some(core::ReplicationControllerSpec {
                    replicas: Some(1),
                    selector: labels(),
                    template: template(),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "replicas": 1, "selector": {"app": "web"}, "template": template_json(),
            }});
            (object, json)
        })
        .await;
        same_as_json("v1", "PodTemplate", "podtemplates", true, |name| {
            let object = core::PodTemplate {
                metadata: meta(name),
                template: template(),
            };
            (object, json!({"metadata": meta_json(name), "template": template_json()}))
        })
        .await;
        same_as_json("apps/v1", "ControllerRevision", "controllerrevisions", true, |name| {
            let object = apps::v1::ControllerRevision {
                metadata: meta(name),
                data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
                    raw: Some(br#"{"spec":{"replicas":3}}"#.to_vec()),
                }),
                revision: Some(4),
            };
            let json = json!({"metadata": meta_json(name), "data": {"spec": {"replicas": 3}}, "revision": 4});
            (object, json)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn jobs_and_cron_jobs_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("batch/v1", "Job", "jobs", true, |name| {
            let object = batch::v1::Job {
                metadata: meta(name),
                spec: Some(batch::v1::JobSpec {
                    backoff_limit: Some(0),
                    completions: Some(3),
                    parallelism: Some(2),
                    active_deadline_seconds: Some(600),
                    template: Some(job_template_spec("Never")),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "backoffLimit": 0, "completions": 3, "parallelism": 2,
                "activeDeadlineSeconds": 600, "template": job_template_json("Never"),
            }});
            (object, json)
        })
        .await;
        same_as_json("batch/v1", "CronJob", "cronjobs", true, |name| {
            let object = batch::v1::CronJob {
                metadata: meta(name),
                spec: Some(batch::v1::CronJobSpec {
                    schedule: s("*/5 * * * *"),
                    suspend: Some(false),
                    concurrency_policy: s("Forbid"),
                    job_template: Some(batch::v1::JobTemplateSpec {
                        metadata: None,
                        spec: Some(batch::v1::JobSpec {
                            template: Some(job_template_spec("OnFailure")),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "schedule": "*/5 * * * *", "suspend": false, "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": job_template_json("OnFailure")}},
            }});
            (object, json)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn core_kinds_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("v1", "Service", "services", true, |name| {
            let object = core::Service {
                metadata: meta(name),
                spec: Some(core::ServiceSpec {
                    ports: vec![core::ServicePort {
                        name: s("http"),
                        protocol: s("TCP"),
                        port: Some(80),
                        target_port: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(8080),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    selector: labels(),
                    r#type: s("ClusterIP"),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "selector": {"app": "web"}, "type": "ClusterIP",
            }});
            (object, json)
        })
        .await;
        same_as_json("v1", "ConfigMap", "configmaps", true, |name| {
            let object = core::ConfigMap {
                metadata: meta(name),
                data: BTreeMap::from([("a".into(), "b".into()), ("empty".into(), "".into())]),
                binary_data: BTreeMap::from([("bin".into(), vec![0, 159, 255])]),
                immutable: Some(true),
            };
            let json = json!({"metadata": meta_json(name),
                "data": {"a": "b", "empty": ""}, "binaryData": {"bin": "AJ//"}, "immutable": true});
            (object, json)
        })
        .await;
        same_as_json("v1", "Secret", "secrets", true, |name| {
            let object = core::Secret {
                metadata: meta(name),
                data: BTreeMap::from([("password".into(), b"s3cr3t\n".to_vec())]),
                r#type: s("Opaque"),
                ..Default::default()
            };
            let json = json!({"metadata": meta_json(name),
                "data": {"password": "czNjcjN0Cg=="}, "type": "Opaque"});
            (object, json)
        })
        .await;
        same_as_json("v1", "ServiceAccount", "serviceaccounts", true, |name| {
            let object = core::ServiceAccount {
                metadata: meta(name),
                automount_service_account_token: Some(false),
                ..Default::default()
            };
            let json = json!({"metadata": meta_json(name), "automountServiceAccountToken": false});
            (object, json)
        })
        .await;
        same_as_json("v1", "Endpoints", "endpoints", true, |name| {
            let object = core::Endpoints {
                metadata: meta(name),
                subsets: vec![core::EndpointSubset {
                    addresses: vec![core::EndpointAddress {
                        ip: s("10.1.2.3"),
                        ..Default::default()
                    }],
                    ports: vec![core::EndpointPort {
                        port: Some(8080),
                        protocol: s("TCP"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let json = json!({"metadata": meta_json(name), "subsets": [{
                "addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]});
            (object, json)
        })
        .await;
        same_as_json("v1", "Event", "events", true, |name| {
            let object = core::Event {
                metadata: meta(name),
                involved_object: Some(core::ObjectReference {
                    kind: s("Pod"),
                    name: s("web"),
                    namespace: s("default"),
                    ..Default::default()
                }),
                reason: s("Started"),
                message: s("started"),
                r#type: s("Normal"),
                count: Some(2),
                first_timestamp: Some(meta::Time {
                    seconds: Some(1_704_164_645),
                    nanos: Some(0),
                }),
                event_time: Some(meta::MicroTime {
                    seconds: Some(1_704_164_645),
                    nanos: Some(123_456_000),
                }),
                reporting_component: s("kubelet"),
                reporting_instance: s("node-1"),
                action: s("Start"),
                ..Default::default()
            };
            let json = json!({"metadata": meta_json(name),
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
                "reason": "Started", "message": "started", "type": "Normal", "count": 2,
                "firstTimestamp": "2024-01-02T03:04:05Z", "eventTime": "2024-01-02T03:04:05.123456Z",
                "reportingComponent": "kubelet", "reportingInstance": "node-1", "action": "Start"});
            (object, json)
        })
        .await;
        same_as_json("v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, |name| {
            let object = core::PersistentVolumeClaim {
                metadata: meta(name),
                spec: Some(core::PersistentVolumeClaimSpec {
                    access_modes: vec!["ReadWriteOnce".into()],
                    resources: Some(core::VolumeResourceRequirements {
                        requests: BTreeMap::from([("storage".into(), quantity("1Gi"))]),
                        ..Default::default()
                    }),
                    storage_class_name: s("fast"),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "fast"}});
            (object, json)
        })
        .await;
        same_as_json("v1", "LimitRange", "limitranges", true, |name| {
            let object = core::LimitRange {
                metadata: meta(name),
                spec: Some(core::LimitRangeSpec {
                    limits: vec![core::LimitRangeItem {
                        r#type: s("Container"),
                        default: BTreeMap::from([("cpu".into(), quantity("500m"))]),
                        ..Default::default()
                    }],
                }),
            };
            let json = json!({"metadata": meta_json(name), "spec": {"limits": [
                {"type": "Container", "default": {"cpu": "500m"}}]}});
            (object, json)
        })
        .await;
        same_as_json("v1", "ResourceQuota", "resourcequotas", true, |name| {
            let object = core::ResourceQuota {
                metadata: meta(name),
                spec: Some(core::ResourceQuotaSpec {
                    hard: BTreeMap::from([("pods".into(), quantity("10"))]),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {"hard": {"pods": "10"}}});
            (object, json)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn cluster_scoped_core_kinds_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("v1", "Namespace", "namespaces", false, |name| {
            let object = core::Namespace {
                metadata: meta(name),
                ..Default::default()
            };
            (object, json!({"metadata": meta_json(name)}))
        })
        .await;
        same_as_json("v1", "Node", "nodes", false, |name| {
            let object = core::Node {
                metadata: meta(name),
                spec: Some(core::NodeSpec {
                    unschedulable: Some(true),
                    taints: vec![core::Taint {
                        key: s("dedicated"),
                        value: s("db"),
                        effect: s("NoSchedule"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {"unschedulable": true,
                "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
            (object, json)
        })
        .await;
        same_as_json(
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            false,
            |name| {
                let object = core::PersistentVolume {
                    metadata: meta(name),
                    spec: Some(core::PersistentVolumeSpec {
                        capacity: BTreeMap::from([("storage".into(), quantity("5Gi"))]),
                        persistent_volume_source: Some(core::PersistentVolumeSource {
                            host_path: Some(core::HostPathVolumeSource {
                                path: s("/data"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        access_modes: vec!["ReadWriteOnce".into()],
                        persistent_volume_reclaim_policy: s("Retain"),
                        ..Default::default()
                    }),
                    status: None,
                };
                let json = json!({"metadata": meta_json(name), "spec": {
                "capacity": {"storage": "5Gi"}, "hostPath": {"path": "/data"},
                "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain"}});
                (object, json)
            },
        )
        .await;
    })
    .await;
}

fn delete_options(options: meta::DeleteOptions) -> Vec<u8> {
    wrap("meta.k8s.io/v1", "DeleteOptions", &options.encode_to_vec())
}

fn config_map(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn delete_options_in_protobuf_steer_a_delete() {
    within(LIMIT, async {
        let (_registry, app) = app();
        let path = "/api/v1/namespaces/default/configmaps";
        let (code, created) = send(
            &app,
            Method::POST,
            path,
            "application/json",
            config_map("cm"),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED);
        let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

        // A stale precondition is a conflict, and nothing is deleted.
        let stale = delete_options(meta::DeleteOptions {
            preconditions: Some(meta::Preconditions {
                uid: s("not-the-uid"),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (code, status) =
            send(&app, Method::DELETE, &format!("{path}/cm"), PROTOBUF, stale).await;
        assert_eq!(code, StatusCode::CONFLICT, "{status}");
        assert_eq!(get(&app, &format!("{path}/cm")).await.0, StatusCode::OK);

        // A dry run deletes nothing.
        let dry = delete_options(meta::DeleteOptions {
            dry_run: vec!["All".into()],
            ..Default::default()
        });
        let (code, _) = send(&app, Method::DELETE, &format!("{path}/cm"), PROTOBUF, dry).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(get(&app, &format!("{path}/cm")).await.0, StatusCode::OK);

        let options = delete_options(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            propagation_policy: s("Background"),
            preconditions: Some(meta::Preconditions {
                uid: Some(uid),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (code, deleted) = send(
            &app,
            Method::DELETE,
            &format!("{path}/cm"),
            PROTOBUF,
            options,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{deleted}");
        assert_eq!(
            get(&app, &format!("{path}/cm")).await.0,
            StatusCode::NOT_FOUND
        );

        // An unknown propagation policy is refused as in JSON.
        send(
            &app,
            Method::POST,
            path,
            "application/json",
            config_map("cm2"),
        )
        .await;
        let options = delete_options(meta::DeleteOptions {
            propagation_policy: s("Sometimes"),
            ..Default::default()
        });
        let (code, status) = send(
            &app,
            Method::DELETE,
            &format!("{path}/cm2"),
            PROTOBUF,
            options,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    })
    .await;
}

/// Posts `body` as protobuf to the ConfigMaps and asserts a 400 Status naming `words`, with
/// nothing stored.
async fn refused(body: Vec<u8>, words: &[&str]) {
    let (_registry, app) = app();
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, status) = send(&app, Method::POST, path, PROTOBUF, body).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "BadRequest");
    let message = status["message"].as_str().unwrap();
    for word in words {
        assert!(message.contains(word), "{message:?} lacks {word:?}");
    }
    let (_, list) = get(&app, path).await;
    assert_eq!(list["items"], json!([]), "something was stored");
}

#[tokio::test]
async fn malformed_protobuf_bodies_are_refused_with_400_and_store_nothing() {
    within(LIMIT, async {
        let object = core::ConfigMap {
            metadata: meta("cm"),
            data: BTreeMap::from([("a".into(), "b".into())]),
            ..Default::default()
        };
        let good = wrap("v1", "ConfigMap", &object.encode_to_vec());
        refused(good[..good.len() - 3].to_vec(), &["truncated"]).await;
        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'x';
        refused(wrong_magic, &["k8s"]).await;
        refused(
            wrap("v1", "Secret", &object.encode_to_vec()),
            &["Secret", "kind"],
        )
        .await;
        refused(
            wrap("apps/v1", "ConfigMap", &object.encode_to_vec()),
            &["ConfigMap"],
        )
        .await;
        // metadata.name as a varint instead of a string.
        let bad_name = [0x0a, 0x02, 0x08, 0x01];
        refused(wrap("v1", "ConfigMap", &bad_name), &["metadata.name"]).await;
    })
    .await;
}

#[tokio::test]
async fn protobuf_patches_and_protobuf_custom_resources_stay_unsupported() {
    within(LIMIT, async {
        let (_registry, app) = app();
        let path = "/api/v1/namespaces/default/configmaps";
        send(
            &app,
            Method::POST,
            path,
            "application/json",
            config_map("cm"),
        )
        .await;
        let (code, _) = send(
            &app,
            Method::PATCH,
            &format!("{path}/cm"),
            PROTOBUF,
            b"k8s\0".to_vec(),
        )
        .await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (code, _) = send(&app, Method::POST, path, "application/cbor", b"x".to_vec()).await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    })
    .await;
}
