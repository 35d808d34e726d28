//! Unit tests of kinds, their descriptions and their storage keys.

use super::*;
use crate::error::Error;
use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::{CronJob, Job},
        certificates::v1::CertificateSigningRequest,
        coordination::v1::Lease,
        core::v1::{
            ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
            PersistentVolumeClaim, Pod, PodTemplate, ReplicationController, ResourceQuota, Secret,
            Service, ServiceAccount,
        },
        discovery::v1::EndpointSlice,
        events::v1::Event as EventsEvent,
        networking::v1::{Ingress, IngressClass, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
        scheduling::v1::PriorityClass,
        storage::v1::StorageClass,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube_core::{discovery::ApiResource, GroupVersionKind};

fn key_of(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    ResourceInfo::builtin(group, kind)
        .unwrap()
        .key(namespace, name)
        .unwrap()
}

#[test]
fn built_in_table_agrees_with_k8s_openapi_for_every_kind() {
    fn check<K: Resource>() {
        let info = ResourceInfo::of::<K>();
        let builtin = ResourceInfo::builtin(info.group(), info.kind())
            .unwrap_or_else(|| panic!("{} missing from the table", info.qualified_kind()));
        assert_eq!(info, builtin);
    }
    check::<Pod>();
    check::<Node>();
    check::<Service>();
    check::<Endpoints>();
    check::<Namespace>();
    check::<Event>();
    check::<ConfigMap>();
    check::<Secret>();
    check::<ServiceAccount>();
    check::<ReplicationController>();
    check::<PersistentVolume>();
    check::<PersistentVolumeClaim>();
    check::<LimitRange>();
    check::<ResourceQuota>();
    check::<PodTemplate>();
    check::<Deployment>();
    check::<ReplicaSet>();
    check::<DaemonSet>();
    check::<StatefulSet>();
    check::<ControllerRevision>();
    check::<Job>();
    check::<CronJob>();
    check::<Lease>();
    check::<EndpointSlice>();
    check::<EventsEvent>();
    check::<Ingress>();
    check::<NetworkPolicy>();
    check::<IngressClass>();
    check::<PodDisruptionBudget>();
    check::<Role>();
    check::<RoleBinding>();
    check::<ClusterRole>();
    check::<ClusterRoleBinding>();
    check::<PriorityClass>();
    check::<StorageClass>();
    check::<CustomResourceDefinition>();
    check::<HorizontalPodAutoscaler>();
    check::<CertificateSigningRequest>();
    // autoscaling/v1 HorizontalPodAutoscalers: a second version of a kind, after the
    // preferred one, sharing its storage.
    let v1 = ResourceInfo::of::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>();
    let served = ResourceInfo::builtins()
        .find(|info| info.group() == "autoscaling" && info.version() == "v1")
        .expect("autoscaling/v1 is served");
    assert_eq!(served, v1);
    assert_eq!(
        served.storage_resource(),
        HorizontalPodAutoscaler::info().storage_resource()
    );
    assert_eq!(ResourceInfo::builtins().count(), 39);
}

#[test]
fn pod_info_comes_from_the_built_in_table() {
    let pod = Pod::info();
    assert_eq!(pod.api_version(), "v1");
    assert_eq!(pod.qualified_resource(), "pods");
    assert_eq!(pod.qualified_kind(), "Pod");
    assert_eq!(pod.singular(), "pod");
    assert_eq!(pod.short_names(), ["po"]);
    assert!(pod.namespaced());
    assert_eq!(
        pod.subresources(),
        Subresources {
            status: true,
            scale: false
        }
    );
    assert!(pod.supports_field_label("spec.nodeName"));
    assert!(pod.supports_field_label("metadata.namespace"));
    assert!(!pod.supports_field_label("spec.replicas"));
    assert_eq!(pod.storage_prefix(), "/registry/pods/");
}

#[test]
fn deployment_is_qualified_by_its_group_and_scales() {
    let deployment = Deployment::info();
    assert_eq!(deployment.api_version(), "apps/v1");
    assert_eq!(deployment.qualified_resource(), "deployments.apps");
    assert_eq!(deployment.qualified_kind(), "Deployment.apps");
    assert_eq!(deployment.short_names(), ["deploy"]);
    assert!(deployment.subresources().scale);
    assert_eq!(
        deployment.to_api_resource(),
        ApiResource::erase::<Deployment>(&())
    );
    assert_eq!(
        deployment.group_version_kind(),
        GroupVersionKind::gvk("apps", "v1", "Deployment")
    );
}

#[test]
fn scale_subresource_is_served_by_exactly_the_four_scalable_kinds() {
    let mut scalable: Vec<String> = ResourceInfo::builtins()
        .filter(|info| info.subresources().scale)
        .map(|info| info.kind().to_string())
        .collect();
    scalable.sort();
    assert_eq!(
        scalable,
        [
            "Deployment",
            "ReplicaSet",
            "ReplicationController",
            "StatefulSet"
        ]
    );
}

#[test]
fn built_in_groups_store_under_the_plain_resource_name() {
    assert_eq!(
        key_of("", "Pod", Some("default"), "web"),
        "/registry/pods/default/web"
    );
    assert_eq!(
        key_of("apps", "Deployment", Some("prod"), "api"),
        "/registry/deployments/prod/api"
    );
    assert_eq!(
        key_of("rbac.authorization.k8s.io", "ClusterRole", None, "admin"),
        "/registry/clusterroles/admin"
    );
    assert_eq!(
        key_of("coordination.k8s.io", "Lease", Some("kube-system"), "lock"),
        "/registry/leases/kube-system/lock"
    );
    assert_eq!(
        key_of("", "Namespace", None, "default"),
        "/registry/namespaces/default"
    );
}

#[test]
fn kube_apiserver_renames_are_kept() {
    assert_eq!(key_of("", "Node", None, "n1"), "/registry/minions/n1");
    assert_eq!(
        key_of("", "Service", Some("default"), "kubernetes"),
        "/registry/services/specs/default/kubernetes"
    );
    assert_eq!(
        key_of("", "Endpoints", Some("default"), "kubernetes"),
        "/registry/services/endpoints/default/kubernetes"
    );
    assert_eq!(
        key_of("", "ReplicationController", Some("default"), "rc"),
        "/registry/controllers/default/rc"
    );
    assert_eq!(
        key_of("networking.k8s.io", "Ingress", Some("default"), "web"),
        "/registry/ingress/default/web"
    );
    assert_eq!(
        ResourceInfo::new("extensions", "v1beta1", "Ingress", "ingresses", true).storage_prefix(),
        "/registry/ingress/"
    );
}

#[test]
fn both_event_groups_share_the_core_event_prefix() {
    let core = ResourceInfo::builtin("", "Event").unwrap();
    let events = ResourceInfo::builtin("events.k8s.io", "Event").unwrap();
    assert_eq!(core.storage_prefix(), "/registry/events/");
    assert_eq!(events.storage_prefix(), core.storage_prefix());
    assert_eq!(events.field_labels(), core.field_labels());
}

#[test]
fn aggregated_and_custom_groups_store_under_their_group() {
    assert_eq!(
        key_of(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            None,
            "widgets.example.com"
        ),
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
    );
    let api_service = ResourceInfo::new(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        false,
    );
    assert_eq!(
        api_service.key(None, "v1.apps").unwrap(),
        "/registry/apiregistration.k8s.io/apiservices/v1.apps"
    );
    let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
    assert_eq!(
        widget.key(Some("default"), "w1").unwrap(),
        "/registry/example.com/widgets/default/w1"
    );
}

#[test]
fn custom_kinds_get_defaults_that_builders_override() {
    let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
    assert_eq!(widget.singular(), "widget");
    assert!(widget.short_names().is_empty());
    assert_eq!(
        widget.subresources(),
        Subresources {
            status: true,
            scale: false
        }
    );
    assert!(widget.field_labels().is_empty());

    let widget = widget
        .with_short_names(["wd"])
        .with_singular("widgetto")
        .with_subresources(Subresources {
            status: false,
            scale: true,
        })
        .with_field_labels(["spec.size"]);
    assert_eq!(widget.short_names(), ["wd"]);
    assert_eq!(widget.singular(), "widgetto");
    assert!(widget.subresources().scale && !widget.subresources().status);
    assert!(widget.supports_field_label("spec.size"));
}

#[test]
fn namespaced_kind_without_namespace_is_a_bad_request() {
    let error = Pod::info().key(None, "web").unwrap_err();
    assert_eq!(error.code(), 400);
    assert!(
        error.to_string().contains("namespace is required"),
        "{error}"
    );
}

#[test]
fn cluster_scoped_kind_with_namespace_is_a_bad_request() {
    let error = Node::info().key(Some("default"), "n1").unwrap_err();
    assert!(matches!(error, Error::BadRequest { .. }));
    assert!(Node::info().namespace_prefix("default").is_err());
}

#[test]
fn names_that_would_break_the_key_are_rejected() {
    let pod = Pod::info();
    for name in ["", ".", "..", "a/b", "a%2Fb"] {
        let error = pod.key(Some("default"), name).unwrap_err();
        assert!(
            matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata.name")
        );
    }
    for namespace in ["", ".", "..", "a/b"] {
        let error = pod.key(Some(namespace), "web").unwrap_err();
        assert!(
            matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata.namespace")
        );
    }
    assert_eq!(
        pod.key(Some("default"), "a/b").unwrap_err().to_string(),
        r#"metadata.name: "a/b": may not contain '/'"#
    );
}

#[test]
fn parse_key_inverts_key() {
    let pod = Pod::info();
    let key = pod.key(Some("default"), "web").unwrap();
    assert_eq!(
        pod.parse_key(&key),
        Some((Some("default".into()), "web".into()))
    );
    assert_eq!(
        pod.namespace_prefix("default").unwrap(),
        "/registry/pods/default/"
    );

    let node = Node::info();
    let key = node.key(None, "n1").unwrap();
    assert_eq!(node.parse_key(&key), Some((None, "n1".into())));

    assert_eq!(pod.parse_key("/registry/pods/default"), None);
    assert_eq!(pod.parse_key("/registry/pods/default/a/b"), None);
    assert_eq!(pod.parse_key("/registry/minions/n1"), None);
    assert_eq!(node.parse_key("/registry/minions/"), None);
    assert_eq!(
        Service::info().parse_key("/registry/services/endpoints/default/kubernetes"),
        None
    );
}
