//! The API groups' kinds from protobuf, stored as from JSON.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use capstan_api::testing::within;
use capstan_apiserver::protobuf::envelope::wrap;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::{autoscaling, coordination, discovery, events, networking, policy, rbac};
use k8s_pb::api::{scheduling, storage};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::{app, get, meta, meta_json, s, same_as_json, selector, send, LIMIT, PROTOBUF};

#[tokio::test]
async fn group_kinds_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        same_as_json("coordination.k8s.io/v1", "Lease", "leases", true, |name| {
            let object = coordination::v1::Lease {
                metadata: meta(name),
                spec: Some(coordination::v1::LeaseSpec {
                    holder_identity: s("node-1"),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(meta::MicroTime {
                        seconds: Some(1_704_164_645),
                        nanos: Some(5_000),
                    }),
                    ..Default::default()
                }),
            };
            let json = json!({"metadata": meta_json(name), "spec": {"holderIdentity": "node-1",
                "leaseDurationSeconds": 40, "renewTime": "2024-01-02T03:04:05.000005Z"}});
            (object, json)
        })
        .await;
        same_as_json("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", true, |name| {
            let object = discovery::v1::EndpointSlice {
                metadata: meta(name),
                address_type: s("IPv4"),
                endpoints: vec![discovery::v1::Endpoint {
                    addresses: vec!["10.1.2.3".into()],
                    conditions: Some(discovery::v1::EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ports: vec![discovery::v1::EndpointPort {
                    name: s("http"),
                    port: Some(8080),
                    protocol: s("TCP"),
                    ..Default::default()
                }],
            };
            let json = json!({"metadata": meta_json(name), "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
            (object, json)
        })
        .await;
        same_as_json("events.k8s.io/v1", "Event", "events", true, |name| {
            let object = events::v1::Event {
                metadata: meta(name),
                event_time: Some(meta::MicroTime {
                    seconds: Some(1_704_164_645),
                    nanos: Some(0),
                }),
                reporting_controller: s("kubelet"),
                reporting_instance: s("node-1"),
                action: s("Start"),
                reason: s("Started"),
                regarding: Some(core::ObjectReference {
                    kind: s("Pod"),
                    name: s("web"),
                    ..Default::default()
                }),
                note: s("started"),
                r#type: s("Normal"),
                ..Default::default()
            };
            let json = json!({"metadata": meta_json(name), "eventTime": "2024-01-02T03:04:05.000000Z",
                "reportingController": "kubelet", "reportingInstance": "node-1", "action": "Start",
                "reason": "Started", "regarding": {"kind": "Pod", "name": "web"}, "note": "started",
                "type": "Normal"});
            (object, json)
        })
        .await;
        same_as_json("networking.k8s.io/v1", "Ingress", "ingresses", true, |name| {
            let object = networking::v1::Ingress {
                metadata: meta(name),
                spec: Some(networking::v1::IngressSpec {
                    rules: vec![networking::v1::IngressRule {
                        host: s("example.com"),
                        ingress_rule_value: Some(networking::v1::IngressRuleValue {
                            http: Some(networking::v1::HttpIngressRuleValue {
                                paths: vec![networking::v1::HttpIngressPath {
                                    path: s("/"),
                                    path_type: s("Prefix"),
                                    backend: Some(networking::v1::IngressBackend {
                                        service: Some(networking::v1::IngressServiceBackend {
                                            name: s("web"),
                                            port: Some(networking::v1::ServiceBackendPort {
                                                number: Some(80),
                                                ..Default::default()
                                            }),
                                        }),
                                        ..Default::default()
                                    }),
                                }],
                            }),
                        }),
                    }],
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {"rules": [{"host": "example.com",
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
            (object, json)
        })
        .await;
        same_as_json("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", true, |name| {
            let object = networking::v1::NetworkPolicy {
                metadata: meta(name),
                spec: Some(networking::v1::NetworkPolicySpec {
                    pod_selector: selector(),
                    policy_types: vec!["Ingress".into()],
                    ingress: vec![networking::v1::NetworkPolicyIngressRule {
                        ports: vec![networking::v1::NetworkPolicyPort {
                            protocol: s("TCP"),
                            port: Some(IntOrString {
                                r#type: Some(0),
                                int_val: Some(443),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}});
            (object, json)
        })
        .await;
        same_as_json("networking.k8s.io/v1", "IngressClass", "ingressclasses", false, |name| {
            let object = networking::v1::IngressClass {
                metadata: meta(name),
                spec: Some(networking::v1::IngressClassSpec {
                    controller: s("example.com/ingress"),
                    ..Default::default()
                }),
            };
            let json = json!({"metadata": meta_json(name), "spec": {"controller": "example.com/ingress"}});
            (object, json)
        })
        .await;
        same_as_json("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true, |name| {
            let object = policy::v1::PodDisruptionBudget {
                metadata: meta(name),
                spec: Some(policy::v1::PodDisruptionBudgetSpec {
                    min_available: Some(IntOrString {
                        r#type: Some(1),
                        str_val: s("50%"),
                        ..Default::default()
                    }),
                    selector: selector(),
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {"minAvailable": "50%",
                "selector": {"matchLabels": {"app": "web"}}}});
            (object, json)
        })
        .await;
        same_as_json("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", false, |name| {
            let object = scheduling::v1::PriorityClass {
                metadata: meta(name),
                value: Some(1000),
                global_default: Some(false),
                description: s("high"),
                preemption_policy: s("Never"),
            };
            let json = json!({"metadata": meta_json(name), "value": 1000, "globalDefault": false,
                "description": "high", "preemptionPolicy": "Never"});
            (object, json)
        })
        .await;
        same_as_json("storage.k8s.io/v1", "StorageClass", "storageclasses", false, |name| {
            let object = storage::v1::StorageClass {
                metadata: meta(name),
                provisioner: s("example.com/disk"),
                parameters: BTreeMap::from([("tier".into(), "gold".into())]),
                reclaim_policy: s("Delete"),
                allow_volume_expansion: Some(true),
                ..Default::default()
            };
            let json = json!({"metadata": meta_json(name), "provisioner": "example.com/disk",
                "parameters": {"tier": "gold"}, "reclaimPolicy": "Delete", "allowVolumeExpansion": true});
            (object, json)
        })
        .await;
        same_as_json("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, |name| {
            let object = autoscaling::v2::HorizontalPodAutoscaler {
                metadata: meta(name),
                spec: Some(autoscaling::v2::HorizontalPodAutoscalerSpec {
                    scale_target_ref: Some(autoscaling::v2::CrossVersionObjectReference {
                        kind: s("Deployment"),
                        name: s("web"),
                        api_version: s("apps/v1"),
                    }),
                    min_replicas: Some(1),
                    max_replicas: Some(5),
                    metrics: vec![autoscaling::v2::MetricSpec {
                        r#type: s("Resource"),
                        resource: Some(autoscaling::v2::ResourceMetricSource {
                            name: s("cpu"),
                            target: Some(autoscaling::v2::MetricTarget {
                                r#type: s("Utilization"),
                                average_utilization: Some(80),
                                ..Default::default()
                            }),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"metadata": meta_json(name), "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 1, "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
            (object, json)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn rbac_kinds_from_protobuf_are_stored_as_from_json() {
    within(LIMIT, async {
        let rule = || rbac::v1::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        };
        let rule_json = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]});
        let subject = || rbac::v1::Subject {
            kind: s("ServiceAccount"),
            name: s("builder"),
            namespace: s("default"),
            ..Default::default()
        };
        let subject_json = json!({"kind": "ServiceAccount", "name": "builder", "namespace": "default"});
        let role_ref = |kind: &str| {
            Some(rbac::v1::RoleRef {
                api_group: s("rbac.authorization.k8s.io"),
                kind: s(kind),
                name: s("reader"),
            })
        };
        let role_ref_json =
            |kind: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": "reader"});
        let group = "rbac.authorization.k8s.io/v1";
        same_as_json(group, "Role", "roles", true, |name| {
            let object = rbac::v1::Role {
                metadata: meta(name),
                rules: vec![rule()],
            };
            (object, json!({"metadata": meta_json(name), "rules": [rule_json.clone()]}))
        })
        .await;
        same_as_json(group, "ClusterRole", "clusterroles", false, |name| {
            let object = rbac::v1::ClusterRole {
                metadata: meta(name),
                rules: vec![rule()],
                aggregation_rule: None,
            };
            (object, json!({"metadata": meta_json(name), "rules": [rule_json.clone()]}))
        })
        .await;
        same_as_json(group, "RoleBinding", "rolebindings", true, |name| {
            let object = rbac::v1::RoleBinding {
                metadata: meta(name),
                subjects: vec![subject()],
                role_ref: role_ref("Role"),
            };
            let json = json!({"metadata": meta_json(name), "subjects": [subject_json.clone()],
                "roleRef": role_ref_json("Role")});
            (object, json)
        })
        .await;
        same_as_json(group, "ClusterRoleBinding", "clusterrolebindings", false, |name| {
            let object = rbac::v1::ClusterRoleBinding {
                metadata: meta(name),
                subjects: vec![subject()],
                role_ref: role_ref("ClusterRole"),
            };
            let json = json!({"metadata": meta_json(name), "subjects": [subject_json.clone()],
                "roleRef": role_ref_json("ClusterRole")});
            (object, json)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_custom_resource_definition_from_protobuf_is_stored_as_from_json() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    within(LIMIT, async {
        let crd = |plural: &str| {
            let schema = ext::JsonSchemaProps {
                r#type: s("object"),
                properties: BTreeMap::from([(
                    "spec".to_string(),
                    ext::JsonSchemaProps {
                        r#type: s("object"),
                        x_kubernetes_preserve_unknown_fields: Some(true),
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            };
            let object = ext::CustomResourceDefinition {
                metadata: Some(meta::ObjectMeta {
                    name: Some(format!("{plural}.example.com")),
                    ..Default::default()
                }),
                spec: Some(ext::CustomResourceDefinitionSpec {
                    group: s("example.com"),
                    names: Some(ext::CustomResourceDefinitionNames {
                        plural: s(plural),
                        kind: s(&format!("K{plural}")),
                        ..Default::default()
                    }),
                    scope: s("Namespaced"),
                    versions: vec![ext::CustomResourceDefinitionVersion {
                        name: s("v1"),
                        served: Some(true),
                        storage: Some(true),
                        schema: Some(ext::CustomResourceValidation {
                            open_apiv3_schema: Some(schema),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            };
            let json = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.example.com")},
                "spec": {"group": "example.com", "names": {"plural": plural, "kind": format!("K{plural}")},
                    "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}});
            (object, json)
        };
        let (_registry, app) = app();
        let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let (message, _) = crd("pbs");
        let body = wrap("apiextensions.k8s.io/v1", "CustomResourceDefinition", &message.encode_to_vec());
        let (code, created) = send(&app, Method::POST, path, PROTOBUF, body).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        let (_, json) = crd("jsons");
        let (code, created) =
            send(&app, Method::POST, path, "application/json", json.to_string().into_bytes()).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        let (_, from_pb) = get(&app, &format!("{path}/pbs.example.com")).await;
        let (_, from_json) = get(&app, &format!("{path}/jsons.example.com")).await;
        assert_eq!(
            from_pb["spec"]["versions"],
            from_json["spec"]["versions"]
        );
        assert_eq!(from_pb["spec"]["names"]["kind"], "Kpbs");
    })
    .await;
}
