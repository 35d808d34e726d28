//! The kinds a `CustomResourceDefinition` serves, read from the CRD itself as kube-apiserver's
//! discovery reads it: the one place the controllers turn a CRD into [`ResourceInfo`]s (the
//! namespace controller's discovery and the garbage collector's monitors both use it).
//!
//! A CRD serves nothing until it is `Established`: before that its endpoints answer 404.
//! Once established, it serves one kind per version marked `served`, under the names of
//! `status.acceptedNames` (the names the API server accepted; `spec.names` when none are
//! reported), in its `spec.scope`.

use capstan_api::kube_core::params::ListParams;
use capstan_api::kube_core::DynamicObject;
use capstan_api::{Client, Error, ResourceInfo};
use serde_json::Value;

/// The `CustomResourceDefinition` kind itself (`apiextensions.k8s.io/v1`).
pub fn custom_resource_definitions() -> ResourceInfo {
    ResourceInfo::builtin("apiextensions.k8s.io", "CustomResourceDefinition")
        .expect("CustomResourceDefinition is a built-in kind")
}

/// What one established CRD serves.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedCustomKinds {
    /// One kind per served version, in the CRD's order of versions.
    pub versions: Vec<ResourceInfo>,
    /// The version to read the kind through: the storage version when it is served, else
    /// the first served one. Every version shows the same objects.
    pub preferred: ResourceInfo,
}

impl ServedCustomKinds {
    /// What `crd` serves now; `None` when it is not `Established`, serves no version, or
    /// lacks its group or names.
    pub fn of(crd: &DynamicObject) -> Option<Self> {
        Self::from_json(&crd.data)
    }

    /// [`of`](Self::of), on the CRD's JSON (the fields besides `metadata`, or the whole
    /// object).
    pub fn from_json(crd: &Value) -> Option<Self> {
        if !is_established(crd) {
            return None;
        }
        let spec = &crd["spec"];
        let group = spec["group"].as_str().filter(|g| !g.is_empty())?;
        let accepted = &crd["status"]["acceptedNames"];
        let names = if accepted["plural"].as_str().is_some_and(|p| !p.is_empty()) {
            accepted
        } else {
            &spec["names"]
        };
        let kind = names["kind"].as_str().filter(|k| !k.is_empty())?;
        let plural = names["plural"].as_str().filter(|p| !p.is_empty())?;
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let mut versions = Vec::new();
        let mut storage = None;
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() != Some(true) {
                continue;
            }
            let Some(name) = version["name"].as_str().filter(|n| !n.is_empty()) else {
                continue;
            };
            let info = ResourceInfo::new(group, name, kind, plural, namespaced);
            if version["storage"].as_bool() == Some(true) {
                storage = Some(info.clone());
            }
            versions.push(info);
        }
        let preferred = storage.or_else(|| versions.first().cloned())?;
        Some(ServedCustomKinds {
            versions,
            preferred,
        })
    }
}

/// Whether `crd` (its JSON) has the condition `Established` with status `True`.
pub fn is_established(crd: &Value) -> bool {
    crd["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

/// What every established CRD serves now, listed through `client`, by CRD name (sorted).
///
/// Errors: the API's, for the list of CRDs.
pub async fn list_served_custom_kinds(
    client: &dyn Client,
) -> Result<Vec<(String, ServedCustomKinds)>, Error> {
    let list = client
        .list(&custom_resource_definitions(), None, &ListParams::default())
        .await?;
    let mut served: Vec<(String, ServedCustomKinds)> = list
        .items
        .iter()
        .filter_map(|crd| {
            let kinds = ServedCustomKinds::of(crd)?;
            Some((crd.metadata.name.clone().unwrap_or_default(), kinds))
        })
        .collect();
    served.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(served)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition(established: bool, versions: Value) -> Value {
        json!({
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": versions,
            },
            "status": {"conditions": [{
                "type": "Established",
                "status": if established { "True" } else { "False" },
            }]},
        })
    }

    #[test]
    fn a_definition_serves_nothing_until_it_is_established() {
        let versions = json!([{"name": "v1", "served": true, "storage": true}]);
        assert_eq!(
            ServedCustomKinds::from_json(&definition(false, versions.clone())),
            None
        );
        let served = ServedCustomKinds::from_json(&definition(true, versions)).unwrap();
        assert_eq!(served.versions.len(), 1);
        assert_eq!(served.preferred.api_version(), "example.com/v1");
        assert!(served.preferred.namespaced());
    }

    #[test]
    fn only_served_versions_are_kinds_and_the_storage_version_is_preferred() {
        let versions = json!([
            {"name": "v1alpha1", "served": false, "storage": false},
            {"name": "v1beta1", "served": true, "storage": false},
            {"name": "v1", "served": true, "storage": true},
        ]);
        let served = ServedCustomKinds::from_json(&definition(true, versions)).unwrap();
        let names: Vec<&str> = served.versions.iter().map(|v| v.version()).collect();
        assert_eq!(names, ["v1beta1", "v1"]);
        assert_eq!(served.preferred.version(), "v1");
    }

    #[test]
    fn without_a_served_storage_version_the_first_served_one_is_preferred() {
        let versions = json!([
            {"name": "v1beta1", "served": true, "storage": false},
            {"name": "v1", "served": false, "storage": true},
        ]);
        let served = ServedCustomKinds::from_json(&definition(true, versions)).unwrap();
        assert_eq!(served.preferred.version(), "v1beta1");
    }

    #[test]
    fn accepted_names_win_over_requested_ones() {
        let mut crd = definition(
            true,
            json!([{"name": "v1", "served": true, "storage": true}]),
        );
        crd["spec"]["names"]["plural"] = json!("gadgets");
        crd["status"]["acceptedNames"] = json!({"kind": "Widget", "plural": "widgets"});
        let served = ServedCustomKinds::from_json(&crd).unwrap();
        assert_eq!(served.preferred.plural(), "widgets");
    }

    #[test]
    fn a_definition_without_served_versions_serves_nothing() {
        let versions = json!([{"name": "v1", "served": false, "storage": true}]);
        assert_eq!(
            ServedCustomKinds::from_json(&definition(true, versions)),
            None
        );
    }
}
