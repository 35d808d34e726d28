//! Discovery: `/version`, `/api`, `/api/v1`, `/apis` and `/apis/<group>/<version>`, built from
//! the kinds the registry serves at the moment of the request, as kubectl reads them.
//!
//! `/api` and `/apis` answer either the legacy documents (`APIVersions`, `APIGroupList`) or,
//! when the `Accept` header asks for it, aggregated discovery: one `APIGroupDiscoveryList`
//! (`apidiscovery.k8s.io/v2`, or `v2beta1` for clients that ask for that) describing every
//! group, version and resource at once, with verbs, short names, categories and
//! subresources. [`aggregated_version`] negotiates it as kube-apiserver does.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use axum::http::HeaderMap;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use capstan_api::kube_core::discovery::v2::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIResourceDiscovery, APISubresourceDiscovery,
    APIVersionDiscovery, GroupVersionKind as DiscoveryGvk,
};
use serde::Serialize;

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use capstan_api::k8s_openapi::apimachinery::pkg::version::Info;
use capstan_api::ResourceInfo;

/// The Kubernetes version the server reports: the object model's.
pub fn version() -> Info {
    Info {
        major: "1".into(),
        minor: "33".into(),
        git_version: "v1.33.0-capstan".into(),
        git_commit: String::new(),
        git_tree_state: "clean".into(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".into(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        emulation_major: None,
        emulation_minor: None,
        min_compatibility_major: None,
        min_compatibility_minor: None,
    }
}

/// `/api`: the core group's versions.
pub fn core_versions(server_address: &str) -> APIVersions {
    APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: server_address.into(),
        }],
    }
}

/// `/apis`: every named group with its versions.
pub fn groups(resources: &[ResourceInfo]) -> APIGroupList {
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for resource in resources.iter().filter(|r| !r.group().is_empty()) {
        let group = versions.entry(resource.group()).or_default();
        if !group.contains(&resource.version()) {
            group.push(resource.version());
        }
    }
    APIGroupList {
        groups: versions
            .into_iter()
            .map(|(group, mut versions)| {
                versions.sort_by(|a, b| compare_versions(a, b));
                let versions: Vec<GroupVersionForDiscovery> = versions
                    .into_iter()
                    .map(|version| GroupVersionForDiscovery {
                        group_version: format!("{group}/{version}"),
                        version: version.into(),
                    })
                    .collect();
                APIGroup {
                    name: group.into(),
                    preferred_version: versions.first().cloned(),
                    versions,
                    server_address_by_client_cidrs: None,
                }
            })
            .collect(),
    }
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources of one group version, `None` if the
/// registry serves none.
pub fn resources(all: &[ResourceInfo], group: &str, version: &str) -> Option<APIResourceList> {
    let mut list: Vec<APIResource> = Vec::new();
    for resource in all
        .iter()
        .filter(|r| r.group() == group && r.version() == version)
    {
        list.push(APIResource {
            name: resource.plural().into(),
            singular_name: resource.singular().into(),
            namespaced: resource.namespaced(),
            kind: resource.kind().into(),
            verbs: verbs(resource),
            short_names: (!resource.short_names().is_empty())
                .then(|| resource.short_names().to_vec()),
            categories: (!resource.categories().is_empty()).then(|| resource.categories().to_vec()),
            group: None,
            version: None,
            storage_version_hash: None,
        });
        let subresources = resource.subresources();
        for (enabled, name, kind) in [
            (subresources.status, "status", resource.kind()),
            (subresources.scale, "scale", "Scale"),
        ] {
            if enabled {
                list.push(APIResource {
                    name: format!("{}/{name}", resource.plural()),
                    singular_name: String::new(),
                    namespaced: resource.namespaced(),
                    kind: kind.into(),
                    verbs: subresource_verbs(),
                    short_names: None,
                    categories: None,
                    group: (name == "scale").then(|| "autoscaling".to_string()),
                    version: (name == "scale").then(|| "v1".to_string()),
                    storage_version_hash: None,
                });
            }
        }
        for pod_subresource in pod_subresources(resource) {
            list.push(APIResource {
                name: format!("{}/{}", resource.plural(), pod_subresource.name),
                singular_name: String::new(),
                namespaced: true,
                kind: pod_subresource.kind.into(),
                verbs: pod_subresource.verbs(),
                short_names: None,
                categories: None,
                group: (!pod_subresource.group.is_empty())
                    .then(|| pod_subresource.group.to_string()),
                version: (!pod_subresource.group.is_empty())
                    .then(|| pod_subresource.version.to_string()),
                storage_version_hash: None,
            });
        }
    }
    (!list.is_empty()).then(|| APIResourceList {
        group_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        resources: list,
    })
}

/// The verbs a kind serves: every verb, but `deletecollection` where kube-apiserver serves
/// none (Namespaces).
fn verbs(resource: &ResourceInfo) -> Vec<String> {
    [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    .into_iter()
    .filter(|verb| *verb != "deletecollection" || super::rest::supports_delete_collection(resource))
    .map(String::from)
    .collect()
}

/// The verbs of the `status` and `scale` subresources.
fn subresource_verbs() -> Vec<String> {
    ["get", "patch", "update"].map(String::from).to_vec()
}

/// A subresource of core Pods served besides `status` (see `rest::pods`).
struct PodSubresource {
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
}

impl PodSubresource {
    fn verbs(&self) -> Vec<String> {
        self.verbs.iter().map(|v| v.to_string()).collect()
    }
}

/// The subresources served outside the generic REST handlers: the Pod's `eviction` (a
/// `policy/v1` Eviction, `create`, which `kubectl drain` looks for) and `ephemeralcontainers`
/// (`kubectl debug`), and the ServiceAccount's `token` (a TokenRequest, `kubectl create
/// token`). None for other kinds.
fn pod_subresources(resource: &ResourceInfo) -> &'static [PodSubresource] {
    const POD: &[PodSubresource] = &[
        PodSubresource {
            name: "ephemeralcontainers",
            group: "",
            version: "v1",
            kind: "Pod",
            verbs: &["get", "patch", "update"],
        },
        PodSubresource {
            name: "eviction",
            group: "policy",
            version: "v1",
            kind: "Eviction",
            verbs: &["create"],
        },
    ];
    const SERVICE_ACCOUNT: &[PodSubresource] = &[PodSubresource {
        name: "token",
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenRequest",
        verbs: &["create"],
    }];
    match (resource.group(), resource.kind()) {
        ("", "Pod") => POD,
        ("", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => &[],
    }
}

/// Kubernetes' order of API versions (`CompareKubeAwareVersionStrings`): GA before beta before
/// alpha, higher numbers first within each, and versions of another form last, by name.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    /// (stability rank: 0 GA, 1 beta, 2 alpha, 3 other; major; minor).
    fn key(version: &str) -> (u8, u64, u64) {
        let Some(rest) = version.strip_prefix('v') else {
            return (3, 0, 0);
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(major) = rest[..digits].parse::<u64>() else {
            return (3, 0, 0);
        };
        let suffix = &rest[digits..];
        let (rank, minor) = if suffix.is_empty() {
            (0, 0)
        } else if let Some(n) = suffix.strip_prefix("beta") {
            (1, n.parse().unwrap_or(u64::MAX))
        } else if let Some(n) = suffix.strip_prefix("alpha") {
            (2, n.parse().unwrap_or(u64::MAX))
        } else {
            return (3, 0, 0);
        };
        if minor == u64::MAX {
            return (3, 0, 0);
        }
        (rank, major, minor)
    }
    let (ka, kb) = (key(a), key(b));
    ka.0.cmp(&kb.0)
        .then(kb.1.cmp(&ka.1))
        .then(kb.2.cmp(&ka.2))
        .then_with(|| if ka.0 == 3 { a.cmp(b) } else { Ordering::Equal })
}

/// The group of aggregated discovery.
pub const AGGREGATED_DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";

/// The kind of the aggregated discovery document.
pub const AGGREGATED_DISCOVERY_KIND: &str = "APIGroupDiscoveryList";

/// The version of aggregated discovery the `Accept` header asks for (`v2` or `v2beta1`), or
/// `None` for the legacy documents.
///
/// As kube-apiserver negotiates it: the media types are tried in order of preference; the
/// first JSON one asking for `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io` in a served
/// version wins, a plain one means the legacy document, and one asking for anything else is
/// skipped.
pub fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    for range in super::negotiation::accepted_media_ranges(headers) {
        let (group, version, kind) = range.transformation()?;
        if !range.accepts_json()
            || group != AGGREGATED_DISCOVERY_GROUP
            || kind != AGGREGATED_DISCOVERY_KIND
        {
            continue;
        }
        match version {
            "v2" => return Some("v2"),
            "v2beta1" => return Some("v2beta1"),
            _ => continue,
        }
    }
    None
}

/// The `Content-Type` of an aggregated discovery document of `version`, with the parameters
/// naming it, as kube-apiserver writes it (clients check them).
pub fn aggregated_content_type(version: &str) -> String {
    format!(
        "application/json;g={AGGREGATED_DISCOVERY_GROUP};v={version};as={AGGREGATED_DISCOVERY_KIND}"
    )
}

/// An `APIGroupDiscoveryList` with its `kind` and `apiVersion`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedDiscovery {
    /// `APIGroupDiscoveryList`.
    pub kind: &'static str,
    /// `apidiscovery.k8s.io/v2` or `apidiscovery.k8s.io/v2beta1`.
    pub api_version: String,
    /// The groups.
    #[serde(flatten)]
    pub list: APIGroupDiscoveryList,
}

/// Aggregated discovery of `/api` (`core`: the core group alone) or `/apis` (every named
/// group, by name, each with its versions in Kubernetes' order of preference), in `version`
/// of `apidiscovery.k8s.io`.
pub fn aggregated(resources: &[ResourceInfo], core: bool, version: &str) -> AggregatedDiscovery {
    let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<&ResourceInfo>>> = BTreeMap::new();
    for resource in resources.iter().filter(|r| r.group().is_empty() == core) {
        groups
            .entry(resource.group())
            .or_default()
            .entry(resource.version())
            .or_default()
            .push(resource);
    }
    let items = groups
        .into_iter()
        .map(|(group, versions)| {
            let mut versions: Vec<(&str, Vec<&ResourceInfo>)> = versions.into_iter().collect();
            versions.sort_by(|a, b| compare_versions(a.0, b.0));
            APIGroupDiscovery {
                metadata: Some(ObjectMeta {
                    name: (!group.is_empty()).then(|| group.to_string()),
                    ..ObjectMeta::default()
                }),
                versions: versions
                    .into_iter()
                    .map(|(version, kinds)| APIVersionDiscovery {
                        version: Some(version.to_string()),
                        resources: kinds.into_iter().map(resource_discovery).collect(),
                        freshness: Some("Current".to_string()),
                    })
                    .collect(),
            }
        })
        .collect();
    AggregatedDiscovery {
        kind: AGGREGATED_DISCOVERY_KIND,
        api_version: format!("{AGGREGATED_DISCOVERY_GROUP}/{version}"),
        list: APIGroupDiscoveryList {
            metadata: None,
            items,
        },
    }
}

fn discovery_gvk(group: &str, version: &str, kind: &str) -> Option<DiscoveryGvk> {
    Some(DiscoveryGvk {
        group: Some(group.to_string()),
        version: Some(version.to_string()),
        kind: Some(kind.to_string()),
    })
}

fn resource_discovery(resource: &ResourceInfo) -> APIResourceDiscovery {
    let subresources = resource.subresources();
    let own_kind = discovery_gvk(resource.group(), resource.version(), resource.kind());
    let mut served = Vec::new();
    if subresources.status {
        served.push(APISubresourceDiscovery {
            subresource: Some("status".to_string()),
            response_kind: own_kind.clone(),
            accepted_types: Vec::new(),
            verbs: subresource_verbs(),
        });
    }
    if subresources.scale {
        served.push(APISubresourceDiscovery {
            subresource: Some("scale".to_string()),
            response_kind: discovery_gvk("autoscaling", "v1", "Scale"),
            accepted_types: Vec::new(),
            verbs: subresource_verbs(),
        });
    }
    for pod_subresource in pod_subresources(resource) {
        served.push(APISubresourceDiscovery {
            subresource: Some(pod_subresource.name.to_string()),
            response_kind: discovery_gvk(
                pod_subresource.group,
                pod_subresource.version,
                pod_subresource.kind,
            ),
            accepted_types: Vec::new(),
            verbs: pod_subresource.verbs(),
        });
    }
    APIResourceDiscovery {
        resource: Some(resource.plural().to_string()),
        response_kind: own_kind,
        scope: Some(
            if resource.namespaced() {
                "Namespaced"
            } else {
                "Cluster"
            }
            .to_string(),
        ),
        singular_resource: Some(resource.singular().to_string()),
        verbs: verbs(resource),
        short_names: resource.short_names().to_vec(),
        categories: resource.categories().to_vec(),
        subresources: served,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn versions_sort_ga_then_beta_then_alpha_then_others() {
        let mut versions = vec!["v1alpha1", "foo", "v1beta1", "v2", "v1", "v2beta2", "bar"];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            versions,
            ["v2", "v1", "v2beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }

    #[test]
    fn kube_rs_and_kubectl_accept_headers_ask_for_v2() {
        let both = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(&accept(both)), Some("v2"));
        assert_eq!(
            aggregated_version(&accept(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            )),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version(&accept("application/json")), None);
        assert_eq!(aggregated_version(&HeaderMap::new()), None);
        assert_eq!(
            aggregated_version(&accept(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            None
        );
    }

    #[test]
    fn aggregated_discovery_describes_every_resource_with_its_subresources() {
        let served: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
        let apis = serde_json::to_value(aggregated(&served, false, "v2")).unwrap();
        assert_eq!(apis["kind"], "APIGroupDiscoveryList");
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|group| group["metadata"]["name"] == "apps")
            .expect("the apps group");
        assert_eq!(apps["versions"][0]["version"], "v1");
        assert_eq!(apps["versions"][0]["freshness"], "Current");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(
            deployments["responseKind"],
            serde_json::json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["singularResource"], "deployment");
        assert_eq!(deployments["shortNames"], serde_json::json!(["deploy"]));
        assert_eq!(deployments["categories"], serde_json::json!(["all"]));
        let scale = deployments["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .expect("scale");
        assert_eq!(scale["responseKind"]["kind"], "Scale");
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
        let core = serde_json::to_value(aggregated(&served, true, "v2beta1")).unwrap();
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let namespaces = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "namespaces")
            .unwrap();
        assert_eq!(namespaces["scope"], "Cluster");
        assert!(!namespaces["verbs"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("deletecollection")));
    }

    #[test]
    fn legacy_resource_lists_carry_each_kind_categories() {
        let served: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
        let batch = resources(&served, "batch", "v1").unwrap();
        let cronjobs = batch
            .resources
            .iter()
            .find(|r| r.name == "cronjobs")
            .unwrap();
        assert_eq!(cronjobs.categories, Some(vec!["all".to_string()]));
        let core = resources(&served, "", "v1").unwrap();
        let config_maps = core
            .resources
            .iter()
            .find(|r| r.name == "configmaps")
            .unwrap();
        assert_eq!(config_maps.categories, None);
    }
}
