use std::sync::Arc;

use capstan_api::{
    k8s_openapi::api::{
        core::v1::{Endpoints, Namespace, Service},
        discovery::v1::EndpointSlice,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    kube_core::params::{ListParams, PostParams},
    Api, Client,
};
use capstan_store::memory::MemoryStore;

use super::rbac::{
    cluster_role_binding_names, cluster_role_names, AUTOUPDATE_ANNOTATION, BOOTSTRAPPING_LABEL,
};
use super::*;
use crate::registry::test_support::{within, LIMIT};

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(Arc::new(MemoryStore::new())))
}

fn names<K: capstan_api::kube_core::Resource>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|item| item.meta().name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn bootstrap_creates_the_system_namespaces_and_the_default_rbac_once() {
    within(LIMIT, async {
        let registry = registry();
        registry.bootstrap().await?;
        registry.bootstrap().await?;
        let client: Arc<dyn Client> = registry.clone();
        let namespaces = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        assert_eq!(
            names(&namespaces.items),
            ["default", "kube-node-lease", "kube-public", "kube-system"]
        );
        for namespace in &namespaces.items {
            let status = namespace.status.as_ref().unwrap();
            assert_eq!(status.phase.as_deref(), Some("Active"));
            let spec = namespace.spec.as_ref().unwrap();
            assert_eq!(
                spec.finalizers.as_deref(),
                Some(&["kubernetes".to_string()][..])
            );
        }

        let roles = Api::<ClusterRole>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let mut expected: Vec<String> = cluster_role_names().map(String::from).collect();
        expected.sort();
        assert_eq!(names(&roles.items), expected);
        for name in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:discovery",
            "system:basic-user",
            "system:public-info-viewer",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:node",
            "system:node-proxier",
            "system:controller:namespace-controller",
        ] {
            assert!(expected.iter().any(|n| n == name), "{name} is bootstrapped");
        }
        let bindings = Api::<ClusterRoleBinding>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let mut expected: Vec<String> = cluster_role_binding_names().map(String::from).collect();
        expected.sort();
        assert_eq!(names(&bindings.items), expected);
        let locks = Api::<Role>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await?;
        assert_eq!(
            names(&locks.items),
            [
                "system::leader-locking-kube-controller-manager",
                "system::leader-locking-kube-scheduler"
            ]
        );
        let lock_bindings = Api::<RoleBinding>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await?;
        assert_eq!(lock_bindings.items.len(), 2);

        let metas = roles
            .items
            .iter()
            .map(|r| &r.metadata)
            .chain(bindings.items.iter().map(|b| &b.metadata))
            .chain(locks.items.iter().map(|r| &r.metadata))
            .chain(lock_bindings.items.iter().map(|b| &b.metadata));
        for meta in metas {
            let labels = meta.labels.clone().unwrap_or_default();
            let annotations = meta.annotations.clone().unwrap_or_default();
            assert_eq!(
                labels.get(BOOTSTRAPPING_LABEL.0).map(String::as_str),
                Some(BOOTSTRAPPING_LABEL.1),
                "{:?}",
                meta.name
            );
            assert_eq!(
                annotations.get(AUTOUPDATE_ANNOTATION.0).map(String::as_str),
                Some(AUTOUPDATE_ANNOTATION.1),
                "{:?}",
                meta.name
            );
        }
        Ok::<_, capstan_api::Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bootstrap_never_overwrites_a_changed_role() {
    within(LIMIT, async {
        let registry = registry();
        registry.bootstrap().await?;
        let client: Arc<dyn Client> = registry.clone();
        let roles = Api::<ClusterRole>::all(client);
        let mut view = roles.get("view").await?;
        view.rules = Some(Vec::new());
        view.aggregation_rule = None;
        roles.update(&PostParams::default(), &view).await?;
        registry.bootstrap().await?;
        let view = roles.get("view").await?;
        assert!(view.aggregation_rule.is_none(), "the changed role is kept");
        Ok::<_, capstan_api::Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_deleted_kubernetes_service_comes_back_on_the_next_reconcile() {
    within(LIMIT, async {
        let registry = registry();
        let server = "192.0.2.1:6443".parse().unwrap();
        registry.bootstrap_kubernetes_service(server).await?;
        let reconciler =
            registry.reconcile_kubernetes_service(server, std::time::Duration::from_millis(20));
        let client: Arc<dyn Client> = registry.clone();
        let services = Api::<Service>::namespaced(client.clone(), "default");
        let endpoints = Api::<Endpoints>::namespaced(client, "default");
        services.delete("kubernetes", &Default::default()).await?;
        endpoints.delete("kubernetes", &Default::default()).await?;
        let restored = loop {
            match endpoints.get("kubernetes").await {
                Ok(restored) if services.get("kubernetes").await.is_ok() => break restored,
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        assert_eq!(
            restored.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip,
            "192.0.2.1"
        );

        // Stopped, it restores nothing.
        drop(reconciler);
        services.delete("kubernetes", &Default::default()).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(services.get("kubernetes").await.is_err());
        Ok::<_, capstan_api::Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server_and_follows_it() {
    within(LIMIT, async {
        let registry = registry();
        registry
            .bootstrap_kubernetes_service("127.0.0.1:6443".parse().unwrap())
            .await?;
        let client: Arc<dyn Client> = registry.clone();
        let service = Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await?;
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("https"), 443));
        assert_eq!(
            port.target_port,
            Some(capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(6443))
        );
        let labels = service.metadata.labels.unwrap();
        assert_eq!(labels["component"], "apiserver");
        assert_eq!(labels["provider"], "kubernetes");

        // A restarted server on another address moves the endpoints, not the Service.
        registry
            .bootstrap_kubernetes_service("0.0.0.0:7443".parse().unwrap())
            .await?;
        let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await?;
        let subset = &endpoints.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "127.0.0.1");
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 7443);
        let slice = Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await?;
        assert_eq!(
            slice.metadata.labels.clone().unwrap()["kubernetes.io/service-name"],
            "kubernetes"
        );
        let slice = serde_json::to_value(&slice).unwrap();
        assert_eq!(
            slice["endpoints"][0]["addresses"],
            serde_json::json!(["127.0.0.1"])
        );
        assert_eq!(slice["ports"][0]["port"], 7443);
        let services = Api::<Service>::all(client)
            .list(&ListParams::default())
            .await?;
        assert_eq!(services.items.len(), 1);
        Ok::<_, capstan_api::Error>(())
    })
    .await
    .unwrap();
}

/// Each component's real requests, as the RBAC authorizer sees them, against its
/// bootstrap role.
#[cfg(feature = "server")]
mod authorization {
    use std::time::Duration;

    use super::*;
    use crate::http::layers::{
        rbac::RbacAuthorizer, Attributes, Authorizer, Decision, ResourceAttributes, UserInfo,
    };

    async fn authorizer() -> RbacAuthorizer {
        let registry = registry();
        registry.bootstrap().await.expect("bootstrap");
        RbacAuthorizer::new(registry, Duration::from_secs(10))
            .await
            .expect("the RBAC cache syncs")
    }

    /// `verb group/resource[/subresource] [namespace] [name]`.
    fn request(user: &UserInfo, line: &str) -> Attributes {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (group, resource) = words[1].split_once('/').unwrap();
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let field = |i: usize| words.get(i).filter(|w| **w != "-").map(|w| w.to_string());
        Attributes {
            user: user.clone(),
            verb: words[0].into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource,
                namespace: field(2),
                name: field(3),
            }),
            path: "/apis/...".into(),
        }
    }

    async fn check(rbac: &RbacAuthorizer, user: &UserInfo, lines: &[&str]) {
        for line in lines {
            let decision = rbac.authorize(&request(user, line)).await;
            assert_eq!(decision, Decision::Allow, "{} may {line}", user.name);
        }
    }

    #[tokio::test]
    async fn each_component_may_make_its_real_requests() {
        within(LIMIT, async {
            let rbac = authorizer().await;
            let scheduler = UserInfo::new("system:kube-scheduler", ["system:authenticated"]);
            check(
                &rbac,
                &scheduler,
                &[
                    "list /pods",
                    "watch /pods",
                    "list /nodes",
                    "watch /nodes",
                    "create /pods/binding team web",
                    "update /pods/status team web",
                    "patch /pods/status team web",
                    "create /events team",
                    "patch /events team ev",
                    "get coordination.k8s.io/leases kube-system kube-scheduler",
                    "update coordination.k8s.io/leases kube-system kube-scheduler",
                    "create coordination.k8s.io/leases kube-system",
                ],
            )
            .await;
            let manager = UserInfo::new("system:kube-controller-manager", ["system:authenticated"]);
            check(
                &rbac,
                &manager,
                &[
                    "list apps/replicasets",
                    "update apps/replicasets/status team web",
                    "create /pods team",
                    "delete /pods team web",
                    "patch /pods team web",
                    "create apps/replicasets team",
                    "update apps/deployments/status team web",
                    "create /endpoints team",
                    "update /endpoints team web",
                    "create discovery.k8s.io/endpointslices team",
                    "patch /nodes - node01",
                    "update /nodes/status - node01",
                    "delete batch/jobs team j",
                    "patch batch/jobs team j",
                    "list example.com/widgets",
                    "delete example.com/widgets team w",
                    "delete /configmaps doomed c",
                    "update /namespaces/finalize - doomed",
                    "update /namespaces - doomed",
                    "update /namespaces/status - doomed",
                    "get coordination.k8s.io/leases kube-system kube-controller-manager",
                    "update coordination.k8s.io/leases kube-system kube-controller-manager",
                    "create /events team",
                ],
            )
            .await;
            let node = UserInfo::new(
                "system:node:node01",
                ["system:nodes", "system:authenticated"],
            );
            check(
                &rbac,
                &node,
                &[
                    "create /nodes",
                    "patch /nodes/status - node01",
                    "update /nodes/status - node01",
                    "watch /pods",
                    "update /pods/status team web",
                    "delete /pods team web",
                    "create coordination.k8s.io/leases kube-node-lease",
                    "update coordination.k8s.io/leases kube-node-lease node01",
                    "get /configmaps team settings",
                    "get /secrets team token",
                    "create /events team",
                    // Projected service account tokens, and the kubelet API's reviews.
                    "create /serviceaccounts/token team default",
                    "create authentication.k8s.io/tokenreviews",
                    "create authorization.k8s.io/subjectaccessreviews",
                ],
            )
            .await;
            let proxy = UserInfo::new("system:kube-proxy", ["system:authenticated"]);
            check(
                &rbac,
                &proxy,
                &[
                    "list /services",
                    "watch /services",
                    "list discovery.k8s.io/endpointslices",
                    "watch /endpoints",
                    "get /nodes - node01",
                    "create /events default",
                ],
            )
            .await;
            let admin = UserInfo::new("admin", ["system:masters"]);
            check(
                &rbac,
                &admin,
                &["delete /namespaces - team", "get /secrets team s"],
            )
            .await;
            let anonymous = UserInfo::new("system:anonymous", ["system:unauthenticated"]);
            let version = Attributes {
                user: anonymous,
                verb: "get".into(),
                resource: None,
                path: "/version".into(),
            };
            assert_eq!(rbac.authorize(&version).await, Decision::Allow);
        })
        .await;
    }

    #[tokio::test]
    async fn view_reads_workloads_but_not_secrets_and_edit_and_admin_aggregate() {
        within(LIMIT, async {
            let registry = registry();
            registry.bootstrap().await.expect("bootstrap");
            let client: Arc<dyn Client> = registry.clone();
            crate::testing::create_namespace(&*client, "team").await;
            for (user, role) in [("viewer", "view"), ("editor", "edit"), ("owner", "admin")] {
                let binding: RoleBinding = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": user, "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
                }))
                .unwrap();
                Api::<RoleBinding>::namespaced(client.clone(), "team")
                    .create(&PostParams::default(), &binding)
                    .await
                    .unwrap();
            }
            let rbac = RbacAuthorizer::new(client, Duration::from_secs(10))
                .await
                .expect("synced");
            let viewer = UserInfo::new("viewer", ["system:authenticated"]);
            check(
                &rbac,
                &viewer,
                &[
                    "get /pods team web",
                    "list apps/deployments team",
                    // `kubectl top pod`, through system:aggregated-metrics-reader.
                    "list metrics.k8s.io/pods team",
                    "get metrics.k8s.io/pods team web",
                ],
            )
            .await;
            for line in ["get /secrets team token", "list /secrets team", "delete /pods team web"] {
                assert_ne!(
                    rbac.authorize(&request(&viewer, line)).await,
                    Decision::Allow,
                    "view may not {line}"
                );
            }
            let editor = UserInfo::new("editor", ["system:authenticated"]);
            check(
                &rbac,
                &editor,
                &["get /secrets team token", "create apps/deployments team", "get /pods team web"],
            )
            .await;
            assert_ne!(
                rbac.authorize(&request(&editor, "create rbac.authorization.k8s.io/roles team"))
                    .await,
                Decision::Allow
            );
            let owner = UserInfo::new("owner", ["system:authenticated"]);
            check(
                &rbac,
                &owner,
                &["create rbac.authorization.k8s.io/roles team", "get /secrets team token", "list /pods team"],
            )
            .await;
            assert_ne!(
                rbac.authorize(&request(&owner, "get /secrets other token")).await,
                Decision::Allow,
                "a RoleBinding grants its namespace only"
            );
        })
        .await;
    }
}
