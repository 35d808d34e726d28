//! Discovery: `/version`, `/api`, `/api/v1`, `/apis` and `/apis/<group>/<version>`, built from
//! the kinds the registry serves, as kubectl reads them.

use std::collections::BTreeMap;

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
            .map(|(group, versions)| {
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
            verbs: [
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
            .filter(|verb| {
                *verb != "deletecollection" || super::rest::supports_delete_collection(resource)
            })
            .map(String::from)
            .collect(),
            short_names: (!resource.short_names().is_empty())
                .then(|| resource.short_names().to_vec()),
            categories: (resource.group().is_empty() || resource.group() == "apps")
                .then(|| vec!["all".to_string()])
                .filter(|_| {
                    matches!(
                        resource.kind(),
                        "Pod"
                            | "Service"
                            | "Deployment"
                            | "ReplicaSet"
                            | "DaemonSet"
                            | "StatefulSet"
                    )
                }),
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
                    verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                    short_names: None,
                    categories: None,
                    group: (name == "scale").then(|| "autoscaling".to_string()),
                    version: (name == "scale").then(|| "v1".to_string()),
                    storage_version_hash: None,
                });
            }
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
