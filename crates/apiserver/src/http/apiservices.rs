//! `apiregistration.k8s.io/v1` `apiservices`: one APIService per group version served,
//! computed on each request, read only.
//!
//! kube-apiserver's aggregator keeps an APIService for every local group version (`v1.`,
//! `v1.apps`, ...), served locally (`spec.service` empty) and always `Available`. Capstan
//! serves no remote APIs, so every APIService is local; they are derived from
//! `Registry::resources` (custom kinds registered at run time included) and the
//! [`virtual_resources`](super::virtual_resources), so they are always in step with what is
//! served. Since nothing is stored, they have no resourceVersion and cannot be written; their
//! `creationTimestamp` is when this process first listed them.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_api::{Error, ResourceInfo};
use serde_json::{json, Value};

use super::componentstatuses::{table, wants_table};
use super::status::ApiError;
use super::virtual_resources;
use crate::registry::Registry;

/// kube-apiserver's priorities of its built-in groups (`groupPriorityMinimum`,
/// `versionPriority`); other groups get a CustomResourceDefinition's (1000, 100).
const PRIORITIES: &[(&str, i32, i32)] = &[
    ("", 18000, 1),
    ("apps", 17800, 15),
    ("events.k8s.io", 17750, 15),
    ("authentication.k8s.io", 17700, 15),
    ("authorization.k8s.io", 17600, 15),
    ("autoscaling", 17500, 15),
    ("batch", 17400, 15),
    ("certificates.k8s.io", 17300, 15),
    ("networking.k8s.io", 17200, 15),
    ("policy", 17100, 15),
    ("rbac.authorization.k8s.io", 17000, 15),
    ("storage.k8s.io", 16800, 15),
    ("apiextensions.k8s.io", 16700, 15),
    ("scheduling.k8s.io", 16600, 15),
    ("coordination.k8s.io", 16500, 15),
    ("discovery.k8s.io", 16200, 15),
    ("apiregistration.k8s.io", 18000, 15),
];

/// The served group versions, as `(group, version)`, sorted.
pub fn served_group_versions(resources: &[ResourceInfo]) -> BTreeSet<(String, String)> {
    let mut versions: BTreeSet<(String, String)> = resources
        .iter()
        .map(|r| (r.group().to_string(), r.version().to_string()))
        .collect();
    for (group, version) in virtual_resources::group_versions() {
        versions.insert((group.to_string(), version.to_string()));
    }
    versions
}

/// The APIService of `group`/`version`, named `<version>.<group>` (`v1.` for the core group).
pub fn api_service(group: &str, version: &str, created: &str) -> Value {
    let (group_priority, version_priority) = PRIORITIES
        .iter()
        .find(|(name, _, _)| *name == group)
        .map_or((1000, 100), |(_, g, v)| (*g, *v));
    json!({
        "kind": "APIService",
        "apiVersion": "apiregistration.k8s.io/v1",
        "metadata": {
            "name": format!("{version}.{group}"),
            "creationTimestamp": created,
            "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"},
        },
        "spec": {
            "group": group,
            "version": version,
            "groupPriorityMinimum": group_priority,
            "versionPriority": version_priority,
        },
        "status": {
            "conditions": [{
                "type": "Available",
                "status": "True",
                "lastTransitionTime": created,
                "reason": "Local",
                "message": "Local APIServices are always available",
            }],
        },
    })
}

/// When this process first listed APIServices, in seconds since the epoch: their
/// `creationTimestamp`.
fn created_seconds() -> i64 {
    static CREATED: OnceLock<i64> = OnceLock::new();
    *CREATED.get_or_init(now)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn created() -> String {
    crate::protobuf::format::rfc3339(created_seconds(), 0, 0)
}

/// Every APIService of what `registry` serves now.
pub fn api_services(registry: &Registry) -> Vec<Value> {
    served_group_versions(&registry.resources())
        .iter()
        .map(|(group, version)| api_service(group, version, &created()))
        .collect()
}

const COLUMNS: [(&str, &str, &str); 4] = [
    ("Name", "string", "Name of the APIService"),
    ("Service", "string", "The service serving it, or Local"),
    ("Available", "string", "Whether it is available"),
    ("Age", "string", "Time since it was created"),
];

fn row(service: &Value) -> Vec<Value> {
    vec![
        service["metadata"]["name"].clone(),
        "Local".into(),
        "True".into(),
        age(now() - created_seconds()).into(),
    ]
}

/// kubectl's short age of `seconds`: `45s`, `5m`, `3h`, `2d`.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The routes of `/apis/apiregistration.k8s.io/v1/apiservices[/<name>]` over `registry`.
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    let for_list = registry.clone();
    Router::new()
        .route(
            "/apis/apiregistration.k8s.io/v1/apiservices",
            get(move |request: Request| {
                let registry = for_list.clone();
                async move {
                    let services = api_services(&registry);
                    let body = if wants_table(&request) {
                        table(&COLUMNS, services.iter().map(|s| (row(s), s)).collect())
                    } else {
                        json!({
                            "kind": "APIServiceList",
                            "apiVersion": "apiregistration.k8s.io/v1",
                            "metadata": {},
                            "items": services,
                        })
                    };
                    (StatusCode::OK, Json(body)).into_response()
                }
            }),
        )
        .route(
            "/apis/apiregistration.k8s.io/v1/apiservices/{name}",
            get(move |Path(name): Path<String>, request: Request| {
                let registry = registry.clone();
                async move { get_one(&registry, name, &request) }
            }),
        )
}

fn get_one(registry: &Registry, name: String, request: &Request) -> Response {
    let found = api_services(registry)
        .into_iter()
        .find(|service| service["metadata"]["name"] == name.as_str());
    match found {
        Some(service) if wants_table(request) => (
            StatusCode::OK,
            Json(table(&COLUMNS, vec![(row(&service), &service)])),
        )
            .into_response(),
        Some(service) => (StatusCode::OK, Json(service)).into_response(),
        None => ApiError(Error::NotFound {
            resource: "apiservices.apiregistration.k8s.io".into(),
            name,
        })
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_named_groups_are_named_version_dot_group() {
        assert_eq!(api_service("", "v1", "t")["metadata"]["name"], "v1.");
        let apps = api_service("apps", "v1", "t");
        assert_eq!(apps["metadata"]["name"], "v1.apps");
        assert_eq!(apps["spec"]["groupPriorityMinimum"], 17800);
        assert_eq!(apps["status"]["conditions"][0]["type"], "Available");
        let custom = api_service("example.com", "v1alpha1", "t");
        assert_eq!(custom["spec"]["versionPriority"], 100);
    }

    #[test]
    fn every_served_group_version_and_the_virtual_ones_are_listed() {
        let registry = crate::testing::registry();
        registry.register(ResourceInfo::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
        ));
        let names: Vec<String> = api_services(&registry)
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for expected in [
            "v1.",
            "v1.apps",
            "v1.example.com",
            "v1.authorization.k8s.io",
        ] {
            assert!(
                names.contains(&expected.to_string()),
                "{expected} in {names:?}"
            );
        }
    }
}
