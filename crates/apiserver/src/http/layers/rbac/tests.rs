//! Tests of RBAC decisions against a registry holding the RBAC objects.

use std::collections::BTreeMap;

use capstan_api::k8s_openapi::api::rbac::v1::AggregationRule;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::Api;
use capstan_store::memory::MemoryStore;

use capstan_api::k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};

use super::subjects::subject_keys;
use super::*;
use crate::http::layers::ResourceAttributes;
use crate::http::layers::UserInfo;
use crate::registry::Registry;

const SYNC: Duration = Duration::from_secs(10);

use capstan_api::testing::within;

/// How long one test may take.
const LIMIT: Duration = Duration::from_secs(30);

/// A registry over a memory store, and helpers to write RBAC objects into it.
struct Cluster {
    client: Arc<dyn Client>,
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(String::from),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        ..Default::default()
    }
}

fn named(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
    rule.resource_names = Some(strings(names));
    rule
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        non_resource_urls: Some(strings(urls)),
        ..Default::default()
    }
}

fn user(name: &str) -> Subject {
    Subject {
        kind: "User".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

fn group(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        ..user(name)
    }
}

fn service_account(namespace: Option<&str>, name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        api_group: Some(String::new()),
        name: name.into(),
        namespace: namespace.map(String::from),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: capstan_api::compat::value(String::from("rbac.authorization.k8s.io")),
        kind: kind.into(),
        name: name.into(),
    }
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            client: Arc::new(Registry::new(Arc::new(MemoryStore::new()))),
        }
    }

    async fn role(&self, namespace: &str, name: &str, rules: Vec<PolicyRule>) {
        crate::testing::create_namespace(&*self.client, namespace).await;
        let role = Role {
            metadata: meta(Some(namespace), name),
            rules: Some(rules),
        };
        Api::<Role>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &role)
            .await
            .expect("create the role");
    }

    async fn cluster_role(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        selectors: Option<Vec<BTreeMap<String, String>>>,
        rules: Vec<PolicyRule>,
    ) {
        let mut metadata = meta(None, name);
        metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let role = ClusterRole {
            metadata,
            rules: Some(rules),
            aggregation_rule: selectors.map(|selectors| AggregationRule {
                cluster_role_selectors: Some(
                    selectors
                        .into_iter()
                        .map(|labels| LabelSelector {
                            match_labels: Some(labels),
                            match_expressions: None,
                        })
                        .collect(),
                ),
            }),
        };
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .expect("create the cluster role");
    }

    async fn role_binding(
        &self,
        namespace: &str,
        name: &str,
        role_ref: RoleRef,
        subjects: Vec<Subject>,
    ) {
        crate::testing::create_namespace(&*self.client, namespace).await;
        let binding = RoleBinding {
            metadata: meta(Some(namespace), name),
            role_ref,
            subjects: Some(subjects),
        };
        Api::<RoleBinding>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create the role binding");
    }

    async fn cluster_role_binding(&self, name: &str, role: &str, subjects: Vec<Subject>) {
        let binding = ClusterRoleBinding {
            metadata: meta(None, name),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        };
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create the cluster role binding");
    }

    async fn authorizer(&self) -> RbacAuthorizer {
        RbacAuthorizer::new(self.client.clone(), SYNC)
            .await
            .expect("the RBAC cache syncs")
    }
}

/// A request for `resource` (`pods` or `pods/status`) in `group`, in `namespace` (or
/// cluster-wide), for the object `name` (or the collection).
fn request(
    who: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Attributes {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    Attributes {
        user: who.clone(),
        verb: verb.into(),
        resource: Some(ResourceAttributes {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource,
            namespace: namespace.map(String::from),
            name: name.map(String::from),
        }),
        path: "/api/v1/...".into(),
    }
}

fn pods(who: &UserInfo, verb: &str, namespace: Option<&str>) -> Attributes {
    let name = match verb {
        "list" | "watch" | "create" | "deletecollection" => None,
        _ => Some("web"),
    };
    request(who, verb, "", "pods", namespace, name)
}

fn path(who: &UserInfo, verb: &str, path: &str) -> Attributes {
    Attributes {
        user: who.clone(),
        verb: verb.into(),
        resource: None,
        path: path.into(),
    }
}

fn alice() -> UserInfo {
    UserInfo::new("alice", ["system:authenticated"])
}

async fn allowed(authorizer: &RbacAuthorizer, attributes: &Attributes) -> bool {
    authorizer.authorize(attributes).await == Decision::Allow
}

#[tokio::test]
async fn nothing_is_allowed_without_a_binding_and_the_reason_names_the_missing_permission() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .role("team", "reader", vec![rule(&["get"], &[""], &["pods"])])
            .await;
        let rbac = cluster.authorizer().await;
        let Decision::Deny(reason) = rbac.authorize(&pods(&alice(), "list", Some("team"))).await
        else {
            panic!("an unbound role grants nothing");
        };
        assert_eq!(
            reason,
            r#"RBAC: no role bound to the user grants "list" on "pods" in the namespace "team""#
        );
        let deployment = request(
            &alice(),
            "get",
            "apps",
            "deployments/scale",
            None,
            Some("w"),
        );
        let Decision::Deny(reason) = rbac.authorize(&deployment).await else {
            panic!("denied");
        };
        assert!(
            reason.ends_with(r#""get" on "deployments/scale.apps" named "w" at the cluster scope"#),
            "{reason}"
        );
        let Decision::Deny(reason) = rbac.authorize(&path(&alice(), "get", "/apis")).await else {
            panic!("denied");
        };
        assert!(reason.ends_with(r#""get" on the path "/apis""#), "{reason}");
    })
    .await;
}

#[tokio::test]
async fn a_role_binding_grants_its_role_only_in_its_own_namespace() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        let read = vec![rule(&["get", "list"], &[""], &["pods"])];
        cluster.role("team", "reader", read.clone()).await;
        cluster.role("other", "reader", read).await;
        cluster
            .role_binding(
                "team",
                "alice-reads",
                role_ref("Role", "reader"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let alice = alice();
        assert!(allowed(&rbac, &pods(&alice, "get", Some("team"))).await);
        assert!(allowed(&rbac, &pods(&alice, "list", Some("team"))).await);
        assert!(!allowed(&rbac, &pods(&alice, "create", Some("team"))).await);
        assert!(!allowed(&rbac, &pods(&alice, "get", Some("other"))).await);
        assert!(
            !allowed(&rbac, &pods(&alice, "list", None)).await,
            "not across namespaces"
        );
        assert!(
            !allowed(
                &rbac,
                &pods(
                    &UserInfo::new("bob", Vec::<String>::new()),
                    "get",
                    Some("team")
                )
            )
            .await
        );
    })
    .await;
}

#[tokio::test]
async fn a_role_binding_to_a_cluster_role_grants_it_only_in_the_binding_namespace() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .cluster_role(
                "pod-reader",
                &[],
                None,
                vec![rule(&["get"], &[""], &["pods", "nodes"])],
            )
            .await;
        cluster
            .role_binding(
                "team",
                "alice-reads",
                role_ref("ClusterRole", "pod-reader"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let alice = alice();
        assert!(allowed(&rbac, &pods(&alice, "get", Some("team"))).await);
        assert!(!allowed(&rbac, &pods(&alice, "get", Some("default"))).await);
        let node = request(&alice, "get", "", "nodes", None, Some("n1"));
        assert!(
            !allowed(&rbac, &node).await,
            "cluster-scoped resources need a ClusterRoleBinding"
        );
    })
    .await;
}

#[tokio::test]
async fn a_cluster_role_binding_grants_everywhere_including_cluster_scoped_resources() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .cluster_role(
                "reader",
                &[],
                None,
                vec![rule(&["get", "list"], &["*"], &["*"])],
            )
            .await;
        cluster
            .cluster_role_binding("alice-reads", "reader", vec![user("alice")])
            .await;
        let rbac = cluster.authorizer().await;
        let alice = alice();
        for namespace in [Some("team"), Some("default"), None] {
            assert!(
                allowed(&rbac, &pods(&alice, "list", namespace)).await,
                "{namespace:?}"
            );
        }
        assert!(
            allowed(
                &rbac,
                &request(&alice, "get", "", "nodes", None, Some("n1"))
            )
            .await
        );
        assert!(
            allowed(
                &rbac,
                &request(&alice, "get", "apps", "deployments", Some("x"), Some("w"))
            )
            .await
        );
        assert!(!allowed(&rbac, &pods(&alice, "delete", Some("team"))).await);
    })
    .await;
}

#[tokio::test]
async fn group_subjects_match_any_of_the_users_groups() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .role("team", "editor", vec![rule(&["*"], &[""], &["configmaps"])])
            .await;
        cluster
            .role_binding(
                "team",
                "devs-edit",
                role_ref("Role", "editor"),
                vec![group("devs")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let carol = UserInfo::new("carol", ["system:authenticated", "devs"]);
        let create = request(&carol, "create", "", "configmaps", Some("team"), None);
        assert!(allowed(&rbac, &create).await);
        let dave = UserInfo::new("dave", ["system:authenticated"]);
        let create = request(&dave, "create", "", "configmaps", Some("team"), None);
        assert!(!allowed(&rbac, &create).await);
        let devs = UserInfo::new("devs", Vec::<String>::new());
        let create = request(&devs, "create", "", "configmaps", Some("team"), None);
        assert!(
            !allowed(&rbac, &create).await,
            "a user named like the group is not in it"
        );
    })
    .await;
}

#[tokio::test]
async fn service_account_subjects_default_to_the_binding_namespace() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        let read = vec![rule(&["get"], &[""], &["secrets"])];
        cluster.role("team", "reader", read.clone()).await;
        cluster.cluster_role("secret-reader", &[], None, read).await;
        cluster
            .role_binding(
                "team",
                "builders-read",
                role_ref("Role", "reader"),
                vec![
                    service_account(None, "builder"),
                    service_account(Some("ci"), "runner"),
                ],
            )
            .await;
        // Without a namespace, a ClusterRoleBinding's service account subject is no one.
        cluster
            .cluster_role_binding(
                "nobody-reads",
                "secret-reader",
                vec![service_account(None, "builder")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let secret = |who: &str, namespace: &str| {
            request(
                &UserInfo::new(who, ["system:serviceaccounts"]),
                "get",
                "",
                "secrets",
                Some(namespace),
                Some("token"),
            )
        };
        assert!(allowed(&rbac, &secret("system:serviceaccount:team:builder", "team")).await);
        assert!(allowed(&rbac, &secret("system:serviceaccount:ci:runner", "team")).await);
        assert!(
            !allowed(
                &rbac,
                &secret("system:serviceaccount:other:builder", "team")
            )
            .await
        );
        assert!(
            !allowed(
                &rbac,
                &secret("system:serviceaccount:team:builder", "other")
            )
            .await
        );
        assert!(!allowed(&rbac, &secret("builder", "team")).await);
    })
    .await;
}

#[tokio::test]
async fn verbs_and_api_groups_match_exactly_or_by_star() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .role(
                "team",
                "mixed",
                vec![
                    rule(&["*"], &["apps"], &["deployments"]),
                    rule(&["get"], &["*"], &["widgets"]),
                    rule(&["list"], &[""], &["services"]),
                ],
            )
            .await;
        cluster
            .role_binding(
                "team",
                "alice-mixed",
                role_ref("Role", "mixed"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let a = alice();
        let team = Some("team");
        assert!(
            allowed(
                &rbac,
                &request(&a, "delete", "apps", "deployments", team, Some("w"))
            )
            .await
        );
        assert!(
            !allowed(
                &rbac,
                &request(&a, "delete", "extensions", "deployments", team, Some("w"))
            )
            .await
        );
        assert!(
            allowed(
                &rbac,
                &request(&a, "get", "example.com", "widgets", team, Some("w"))
            )
            .await
        );
        assert!(
            !allowed(
                &rbac,
                &request(&a, "update", "example.com", "widgets", team, Some("w"))
            )
            .await
        );
        assert!(allowed(&rbac, &request(&a, "list", "", "services", team, None)).await);
        assert!(
            !allowed(&rbac, &request(&a, "list", "apps", "services", team, None)).await,
            "\"\" is only core"
        );
    })
    .await;
}

#[tokio::test]
async fn subresources_match_only_when_named_or_wildcarded() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        let roles = [
            ("plain", rule(&["*"], &["*"], &["pods"])),
            ("status", rule(&["*"], &["*"], &["pods/status"])),
            ("any-scale", rule(&["*"], &["*"], &["*/scale"])),
            ("pod-subresources", rule(&["*"], &["*"], &["pods/*"])),
            ("everything", rule(&["*"], &["*"], &["*"])),
        ];
        for (name, rule) in &roles {
            cluster.role(name, "role", vec![rule.clone()]).await;
            cluster
                .role_binding(name, "alice", role_ref("Role", "role"), vec![user("alice")])
                .await;
        }
        let rbac = cluster.authorizer().await;
        let a = alice();
        let can = |namespace: &'static str, resource: &'static str| {
            let rbac = rbac.clone();
            let attributes = request(&a, "update", "", resource, Some(namespace), Some("web"));
            async move { allowed(&rbac, &attributes).await }
        };
        assert!(can("plain", "pods").await);
        assert!(
            !can("plain", "pods/status").await,
            "pods does not grant its subresources"
        );
        assert!(can("status", "pods/status").await);
        assert!(!can("status", "pods").await);
        assert!(!can("status", "pods/log").await);
        assert!(can("any-scale", "deployments/scale").await);
        assert!(can("any-scale", "pods/scale").await);
        assert!(!can("any-scale", "deployments").await);
        assert!(!can("any-scale", "deployments/status").await);
        assert!(can("pod-subresources", "pods/log").await);
        assert!(can("pod-subresources", "pods/status").await);
        assert!(!can("pod-subresources", "pods").await);
        assert!(!can("pod-subresources", "services/status").await);
        assert!(can("everything", "pods").await);
        assert!(can("everything", "pods/exec").await);
    })
    .await;
}

#[tokio::test]
async fn resource_names_restrict_by_name_and_never_match_collections() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .role(
                "team",
                "one-map",
                vec![named(rule(&["*"], &[""], &["configmaps"]), &["settings"])],
            )
            .await;
        cluster
            .role_binding(
                "team",
                "alice",
                role_ref("Role", "one-map"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let a = alice();
        let map = |verb: &str, name: Option<&str>| {
            request(&a, verb, "", "configmaps", Some("team"), name)
        };
        for verb in ["get", "update", "patch", "delete", "watch"] {
            assert!(allowed(&rbac, &map(verb, Some("settings"))).await, "{verb}");
            assert!(!allowed(&rbac, &map(verb, Some("other"))).await, "{verb}");
        }
        for verb in ["list", "watch", "create", "deletecollection"] {
            assert!(
                !allowed(&rbac, &map(verb, None)).await,
                "{verb} without a name"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn non_resource_urls_match_exactly_or_by_prefix_only_through_cluster_role_bindings() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .cluster_role(
                "discovery",
                &[],
                None,
                vec![urls(&["get"], &["/api", "/apis/*", "/healthz"])],
            )
            .await;
        cluster
            .cluster_role("metrics", &[], None, vec![urls(&["get"], &["/metrics"])])
            .await;
        cluster
            .cluster_role_binding(
                "everyone-discovers",
                "discovery",
                vec![group("system:authenticated")],
            )
            .await;
        cluster
            .role_binding(
                "team",
                "alice-metrics",
                role_ref("ClusterRole", "metrics"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let a = alice();
        assert!(allowed(&rbac, &path(&a, "get", "/api")).await);
        assert!(
            !allowed(&rbac, &path(&a, "get", "/api/v1")).await,
            "exact without a star"
        );
        assert!(allowed(&rbac, &path(&a, "get", "/apis/apps/v1")).await);
        assert!(!allowed(&rbac, &path(&a, "post", "/apis/apps/v1")).await);
        assert!(
            !allowed(&rbac, &path(&a, "get", "/apis")).await,
            "/apis/* needs the slash"
        );
        assert!(
            !allowed(&rbac, &path(&a, "get", "/metrics")).await,
            "a RoleBinding grants no URL"
        );
        // A URL rule never grants a resource request.
        assert!(!allowed(&rbac, &pods(&a, "get", Some("team"))).await);
    })
    .await;
}

#[tokio::test]
async fn aggregated_cluster_roles_include_the_rules_of_matching_cluster_roles() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        let to =
            |target: &str| BTreeMap::from([(format!("aggregate-to-{target}"), "true".to_string())]);
        cluster
            .cluster_role("admin", &[], Some(vec![to("admin")]), vec![])
            .await;
        cluster
            .cluster_role(
                "edit",
                &[("aggregate-to-admin", "true")],
                Some(vec![to("edit")]),
                vec![],
            )
            .await;
        cluster
            .cluster_role(
                "edit-pods",
                &[("aggregate-to-edit", "true")],
                None,
                vec![rule(&["*"], &[""], &["pods"])],
            )
            .await;
        cluster
            .cluster_role(
                "unrelated",
                &[("aggregate-to-nothing", "true")],
                None,
                vec![rule(&["*"], &["*"], &["*"])],
            )
            .await;
        cluster
            .role_binding(
                "team",
                "alice-admin",
                role_ref("ClusterRole", "admin"),
                vec![user("alice")],
            )
            .await;
        let rbac = cluster.authorizer().await;
        let a = alice();
        assert!(
            allowed(&rbac, &pods(&a, "delete", Some("team"))).await,
            "admin aggregates edit, which aggregates edit-pods"
        );
        assert!(!allowed(&rbac, &pods(&a, "delete", Some("default"))).await);
        assert!(
            !allowed(
                &rbac,
                &request(&a, "get", "", "secrets", Some("team"), Some("s"))
            )
            .await
        );

        // A role labelled later joins the aggregate once the informer sees it.
        cluster
            .cluster_role(
                "admin-secrets",
                &[("aggregate-to-admin", "true")],
                None,
                vec![rule(&["get"], &[""], &["secrets"])],
            )
            .await;
        eventually(
            &rbac,
            &request(&a, "get", "", "secrets", Some("team"), Some("s")),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn system_masters_may_do_anything_even_before_sync() {
    within(LIMIT, async {
        // A server that accepts connections and never answers: the informers never sync.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client =
            crate::remote::RemoteClient::new(&format!("http://{}", silent.local_addr().unwrap()))
                .unwrap();
        let rbac = RbacAuthorizer::start(Arc::new(client));
        let root = UserInfo::new("root", [SUPERUSER_GROUP]);
        assert!(allowed(&rbac, &pods(&root, "deletecollection", None)).await);
        assert!(allowed(&rbac, &path(&root, "post", "/anything")).await);

        let synced = Cluster::new().authorizer().await;
        assert!(
            allowed(
                &synced,
                &request(
                    &root,
                    "escalate",
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    None,
                    Some("x")
                )
            )
            .await
        );
    })
    .await;
}

#[tokio::test]
async fn requests_are_denied_until_the_cache_has_synced() {
    within(LIMIT, async {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client: Arc<dyn Client> = Arc::new(
            crate::remote::RemoteClient::new(&format!("http://{}", silent.local_addr().unwrap()))
                .unwrap(),
        );
        let rbac = RbacAuthorizer::start(client.clone());
        assert!(!rbac.is_synced());
        let Decision::Deny(reason) = rbac.authorize(&pods(&alice(), "get", Some("team"))).await
        else {
            panic!("an unsynced cache allows nothing");
        };
        assert!(reason.contains("RBAC cache is not yet synced"), "{reason}");
        assert!(reason.contains("clusterrolebindings"), "{reason}");

        let error = RbacAuthorizer::new(client, Duration::from_millis(100))
            .await
            .unwrap_err();
        let RbacError::NotSynced { pending, .. } = &error;
        assert_eq!(
            pending,
            &[
                "roles",
                "clusterroles",
                "rolebindings",
                "clusterrolebindings"
            ]
        );
        assert!(
            error
                .to_string()
                .starts_with("the RBAC cache did not sync within 100ms"),
            "{error}"
        );
    })
    .await;
}

#[tokio::test]
async fn bindings_to_missing_or_unsupported_roles_grant_nothing_and_say_so() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        cluster
            .role_binding("team", "dangling", role_ref("Role", "gone"), vec![user("alice")])
            .await;
        cluster
            .role_binding("team", "strange", role_ref("Pod", "web"), vec![user("alice")])
            .await;
        cluster.cluster_role_binding("dangling", "missing", vec![user("alice")]).await;
        let rbac = cluster.authorizer().await;
        let Decision::Deny(reason) = rbac.authorize(&pods(&alice(), "get", Some("team"))).await else {
            panic!("a dangling binding grants nothing");
        };
        for part in [
            r#"clusterrole.rbac.authorization.k8s.io "missing" not found"#,
            r#"role.rbac.authorization.k8s.io "gone" not found in the namespace "team""#,
            r#"rolebinding.rbac.authorization.k8s.io "strange" references unsupported role kind "Pod""#,
        ] {
            assert!(reason.contains(part), "{reason}");
        }
    })
    .await;
}

/// Polls until `attributes` is allowed, for at most five seconds.
async fn eventually(rbac: &RbacAuthorizer, attributes: &Attributes) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !allowed(rbac, attributes).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the change took effect");
}

#[tokio::test]
async fn changes_to_roles_and_bindings_take_effect_once_the_informers_see_them() {
    within(LIMIT, async {
        let cluster = Cluster::new();
        let rbac = cluster.authorizer().await;
        let a = alice();
        let get = pods(&a, "get", Some("team"));
        assert!(!allowed(&rbac, &get).await);
        cluster
            .role_binding(
                "team",
                "alice-reads",
                role_ref("Role", "reader"),
                vec![user("alice")],
            )
            .await;
        cluster
            .role("team", "reader", vec![rule(&["get"], &[""], &["pods"])])
            .await;
        eventually(&rbac, &get).await;

        Api::<RoleBinding>::namespaced(cluster.client.clone(), "team")
            .delete("alice-reads", &DeleteParams::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while allowed(&rbac, &get).await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the deletion took effect");
    })
    .await;
}

#[test]
fn subject_index_keys_resolve_service_account_namespaces() {
    let subjects = [
        user("alice"),
        group("devs"),
        service_account(None, "builder"),
        service_account(Some("ci"), "runner"),
        Subject {
            kind: "Robot".into(),
            ..user("r2")
        },
    ];
    assert_eq!(
        subject_keys(Some(&subjects), Some("team")),
        [
            "team/group:devs",
            "team/user:alice",
            "team/user:system:serviceaccount:ci:runner",
            "team/user:system:serviceaccount:team:builder",
        ]
    );
    assert_eq!(
        subject_keys(Some(&subjects), None),
        [
            "group:devs",
            "user:alice",
            "user:system:serviceaccount:ci:runner"
        ]
    );
    assert!(subject_keys(None, None).is_empty());
}
