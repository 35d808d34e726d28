//! Resources served by handlers of their own rather than by the registry, for discovery.
//!
//! The registry's kinds reach discovery through `Registry::resources`; these do not, since
//! nothing of them is stored: the review APIs (create only), `apiservices` and
//! `componentstatuses` (read only), the `approval` subresource of
//! CertificateSigningRequests, the subresources proxied to kubelets (`pods/log`,
//! `pods/exec`, `pods/attach`, `pods/portforward`, `nodes/proxy`) and the resource metrics
//! API (`metrics.k8s.io/v1beta1`). [`extend_groups`] and [`extend_resources`] add them to what
//! discovery builds from the registry, with their own verbs; [`group_versions`] lists their
//! group versions (for `apiservices`).

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, ObjectMeta,
};
use capstan_api::kube_core::discovery::v2::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIResourceDiscovery, APISubresourceDiscovery,
    APIVersionDiscovery, GroupVersionKind,
};

/// One resource discovery lists without the registry.
#[derive(Debug, Clone, Copy)]
pub struct VirtualResource {
    /// The API group (`""`: core).
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// The resource name, `plural` or `plural/subresource`.
    pub name: &'static str,
    /// Whether it lives in namespaces.
    pub namespaced: bool,
    /// The verbs served.
    pub verbs: &'static [&'static str],
    /// Short names (`cs`).
    pub short_names: &'static [&'static str],
    /// Listed only when the registry serves the group version (a subresource of a stored
    /// kind); otherwise the group version is listed for it alone if need be.
    pub needs_registry: bool,
}

const fn review(group: &'static str, kind: &'static str, name: &'static str) -> VirtualResource {
    VirtualResource {
        group,
        version: "v1",
        kind,
        name,
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
        needs_registry: false,
    }
}

/// Every virtual resource.
pub static VIRTUAL_RESOURCES: &[VirtualResource] = &[
    review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
    ),
    review(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
    ),
    VirtualResource {
        namespaced: true,
        ..review(
            "authorization.k8s.io",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
        )
    },
    review("authentication.k8s.io", "TokenReview", "tokenreviews"),
    review(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
    ),
    VirtualResource {
        verbs: &["get", "list"],
        ..review("apiregistration.k8s.io", "APIService", "apiservices")
    },
    VirtualResource {
        verbs: &["get", "list"],
        short_names: &["cs"],
        ..review("", "ComponentStatus", "componentstatuses")
    },
    VirtualResource {
        verbs: &["get", "patch", "update"],
        needs_registry: true,
        ..review(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "certificatesigningrequests/approval",
        )
    },
    // The subresources proxied to kubelets (`http::pod_streams`).
    pod_stream("Pod", "pods/log", &["get"]),
    pod_stream("PodExecOptions", "pods/exec", &["create", "get"]),
    pod_stream("PodAttachOptions", "pods/attach", &["create", "get"]),
    pod_stream(
        "PodPortForwardOptions",
        "pods/portforward",
        &["create", "get"],
    ),
    VirtualResource {
        namespaced: false,
        ..pod_stream(
            "NodeProxyOptions",
            "nodes/proxy",
            &["create", "delete", "get", "patch", "update"],
        )
    },
    // The resource metrics API (`http::metrics_api`).
    VirtualResource {
        version: "v1beta1",
        verbs: &["get", "list"],
        ..review("metrics.k8s.io", "NodeMetrics", "nodes")
    },
    VirtualResource {
        version: "v1beta1",
        verbs: &["get", "list"],
        namespaced: true,
        ..review("metrics.k8s.io", "PodMetrics", "pods")
    },
];

/// A core subresource served by `http::pod_streams`, listed with its kind when the registry
/// serves `v1`.
const fn pod_stream(
    kind: &'static str,
    name: &'static str,
    verbs: &'static [&'static str],
) -> VirtualResource {
    VirtualResource {
        group: "",
        version: "v1",
        kind,
        name,
        namespaced: true,
        verbs,
        short_names: &[],
        needs_registry: true,
    }
}

/// The named group versions the virtual resources add by themselves (those not needing the
/// registry), as `(group, version)`, each once.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut versions: Vec<(&str, &str)> = Vec::new();
    for resource in VIRTUAL_RESOURCES.iter().filter(|r| !r.needs_registry) {
        if !versions.contains(&(resource.group, resource.version)) {
            versions.push((resource.group, resource.version));
        }
    }
    versions
}

/// Adds the named groups of the virtual resources to `/apis`' list, unless already there.
pub fn extend_groups(list: &mut APIGroupList) {
    for (group, version) in group_versions() {
        if group.is_empty() || list.groups.iter().any(|g| g.name == group) {
            continue;
        }
        let version = GroupVersionForDiscovery {
            group_version: format!("{group}/{version}"),
            version: version.into(),
        };
        list.groups.push(APIGroup {
            name: group.into(),
            preferred_version: Some(version.clone()),
            versions: vec![version],
            server_address_by_client_cidrs: None,
        });
    }
}

/// `list` (what the registry serves in `group`/`version`, if anything) with the virtual
/// resources of that group version added; `None` when neither has any.
pub fn extend_resources(
    list: Option<APIResourceList>,
    group: &str,
    version: &str,
) -> Option<APIResourceList> {
    let served_by_registry = list.is_some();
    let mut list = list.unwrap_or_else(|| APIResourceList {
        group_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        resources: Vec::new(),
    });
    for resource in VIRTUAL_RESOURCES.iter().filter(|r| {
        r.group == group && r.version == version && (served_by_registry || !r.needs_registry)
    }) {
        if list.resources.iter().any(|r| r.name == resource.name) {
            continue;
        }
        let singular = if resource.name.contains('/') {
            String::new()
        } else {
            resource.kind.to_ascii_lowercase()
        };
        list.resources.push(APIResource {
            name: resource.name.into(),
            singular_name: singular,
            namespaced: resource.namespaced,
            kind: resource.kind.into(),
            verbs: resource.verbs.iter().map(|v| v.to_string()).collect(),
            short_names: (!resource.short_names.is_empty())
                .then(|| resource.short_names.iter().map(|s| s.to_string()).collect()),
            categories: None,
            group: None,
            version: None,
            storage_version_hash: None,
        });
    }
    (!list.resources.is_empty()).then_some(list)
}

/// Adds the virtual resources to an aggregated discovery document of the core group
/// (`core`) or of the named groups: subresources join their served kind, resources their
/// group version (created when the registry serves none of it).
pub fn extend_aggregated(list: &mut APIGroupDiscoveryList, core: bool) {
    for resource in VIRTUAL_RESOURCES
        .iter()
        .filter(|r| r.group.is_empty() == core)
    {
        let group_name = (!resource.group.is_empty()).then(|| resource.group.to_string());
        let position = list
            .items
            .iter()
            .position(|g| g.metadata.as_ref().and_then(|m| m.name.clone()) == group_name);
        let group = match position {
            Some(index) => &mut list.items[index],
            None if resource.needs_registry => continue,
            None => {
                list.items.push(APIGroupDiscovery {
                    metadata: Some(ObjectMeta {
                        name: group_name,
                        ..Default::default()
                    }),
                    versions: Vec::new(),
                });
                list.items.last_mut().expect("just pushed")
            }
        };
        let version = match group
            .versions
            .iter()
            .position(|v| v.version.as_deref() == Some(resource.version))
        {
            Some(index) => &mut group.versions[index],
            None if resource.needs_registry => continue,
            None => {
                group.versions.push(APIVersionDiscovery {
                    version: Some(resource.version.into()),
                    resources: Vec::new(),
                    freshness: Some("Current".into()),
                });
                group.versions.last_mut().expect("just pushed")
            }
        };
        let kind = Some(GroupVersionKind {
            group: Some(resource.group.into()),
            version: Some(resource.version.into()),
            kind: Some(resource.kind.into()),
        });
        let verbs: Vec<String> = resource.verbs.iter().map(|v| v.to_string()).collect();
        match resource.name.split_once('/') {
            Some((plural, subresource)) => {
                if let Some(parent) = version
                    .resources
                    .iter_mut()
                    .find(|r| r.resource.as_deref() == Some(plural))
                {
                    if !parent
                        .subresources
                        .iter()
                        .any(|s| s.subresource.as_deref() == Some(subresource))
                    {
                        parent.subresources.push(APISubresourceDiscovery {
                            subresource: Some(subresource.into()),
                            response_kind: kind,
                            accepted_types: Vec::new(),
                            verbs,
                        });
                    }
                }
            }
            None if version
                .resources
                .iter()
                .any(|r| r.resource.as_deref() == Some(resource.name)) => {}
            None => version.resources.push(APIResourceDiscovery {
                resource: Some(resource.name.into()),
                response_kind: kind,
                scope: Some(
                    if resource.namespaced {
                        "Namespaced"
                    } else {
                        "Cluster"
                    }
                    .into(),
                ),
                singular_resource: Some(resource.kind.to_ascii_lowercase()),
                verbs,
                short_names: resource.short_names.iter().map(|s| s.to_string()).collect(),
                categories: Vec::new(),
                subresources: Vec::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_groups_are_added_once_with_create_only_resources() {
        let mut groups = APIGroupList { groups: Vec::new() };
        extend_groups(&mut groups);
        extend_groups(&mut groups);
        let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "authorization.k8s.io",
                "authentication.k8s.io",
                "apiregistration.k8s.io",
                "metrics.k8s.io"
            ]
        );
        let authz = extend_resources(None, "authorization.k8s.io", "v1").unwrap();
        assert_eq!(authz.resources.len(), 4);
        assert!(authz.resources.iter().all(|r| r.verbs == ["create"]));
    }

    #[test]
    fn subresources_of_stored_kinds_need_the_kind_served() {
        assert!(extend_resources(None, "certificates.k8s.io", "v1").is_none());
        let served = APIResourceList {
            group_version: "certificates.k8s.io/v1".into(),
            resources: vec![APIResource {
                name: "certificatesigningrequests".into(),
                ..Default::default()
            }],
        };
        let list = extend_resources(Some(served), "certificates.k8s.io", "v1").unwrap();
        assert_eq!(
            list.resources[1].name,
            "certificatesigningrequests/approval"
        );
    }

    #[test]
    fn aggregated_discovery_gains_the_review_groups_and_component_statuses() {
        let mut named = APIGroupDiscoveryList::default();
        extend_aggregated(&mut named, false);
        let authz = named
            .items
            .iter()
            .find(|g| g.metadata.as_ref().unwrap().name.as_deref() == Some("authorization.k8s.io"))
            .unwrap();
        assert_eq!(authz.versions[0].resources.len(), 4);
        let mut core = APIGroupDiscoveryList::default();
        extend_aggregated(&mut core, true);
        assert_eq!(
            core.items[0].versions[0].resources[0].resource.as_deref(),
            Some("componentstatuses")
        );
    }

    #[test]
    fn component_statuses_join_the_core_group_with_their_short_name() {
        let core = extend_resources(None, "", "v1").unwrap();
        assert_eq!(core.group_version, "v1");
        assert_eq!(core.resources[0].short_names, Some(vec!["cs".to_string()]));
        assert_eq!(core.resources[0].verbs, ["get", "list"]);
    }
}
