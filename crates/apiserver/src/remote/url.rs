//! Kubernetes REST paths and query strings for a [`ResourceInfo`] and kube-core's params.

use capstan_api::kube_core::params::{
    ListParams, PatchParams, PostParams, VersionMatch, WatchParams,
};
use capstan_api::{Error, ResourceInfo, Result};

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or a
/// query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks `namespace` against the kind's scope, as the registry does. `collection` calls
/// (list, watch) may leave a namespaced kind's namespace out, meaning all namespaces.
///
/// Errors: [`Error::BadRequest`] on `metadata.namespace` for a namespace on a cluster-scoped
/// kind, or none on a namespaced kind outside a collection call.
pub(crate) fn check_scope(
    resource: &ResourceInfo,
    namespace: Option<&str>,
    collection: bool,
) -> Result<()> {
    match (resource.namespaced(), namespace) {
        (true, None) if !collection => Err(Error::bad_field(
            "metadata.namespace",
            format!(
                "a namespace is required for {}",
                resource.qualified_resource()
            ),
        )),
        (false, Some(_)) => Err(Error::bad_field(
            "metadata.namespace",
            format!(
                "{} is cluster-scoped and takes no namespace",
                resource.qualified_resource()
            ),
        )),
        (true, Some("")) => Err(Error::bad_field(
            "metadata.namespace",
            "the namespace may not be empty",
        )),
        _ => Ok(()),
    }
}

/// `/api/v1[/namespaces/<ns>]/<plural>` or `/apis/<group>/<version>[/namespaces/<ns>]/<plural>`.
pub(crate) fn collection(resource: &ResourceInfo, namespace: Option<&str>) -> String {
    let mut path = if resource.group().is_empty() {
        format!("/api/{}", encode(resource.version()))
    } else {
        format!(
            "/apis/{}/{}",
            encode(resource.group()),
            encode(resource.version())
        )
    };
    if let Some(namespace) = namespace.filter(|_| resource.namespaced()) {
        path.push_str("/namespaces/");
        path.push_str(&encode(namespace));
    }
    path.push('/');
    path.push_str(&encode(resource.plural()));
    path
}

/// The path of one object, with an optional subresource.
///
/// Errors: [`Error::BadRequest`] on `metadata.name` for an empty name.
pub(crate) fn object(
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    subresource: Option<&str>,
) -> Result<String> {
    if name.is_empty() {
        return Err(Error::bad_field(
            "metadata.name",
            format!("a name is required for {}", resource.qualified_resource()),
        ));
    }
    let mut path = collection(resource, namespace);
    path.push('/');
    path.push_str(&encode(name));
    if let Some(subresource) = subresource {
        path.push('/');
        path.push_str(subresource);
    }
    Ok(path)
}

/// A query string being built: `?a=1&b=2`, values percent-encoded.
#[derive(Default)]
pub(crate) struct Query(String);

impl Query {
    pub(crate) fn push(&mut self, key: &str, value: impl AsRef<str>) -> &mut Self {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&encode(value.as_ref()));
        self
    }

    pub(crate) fn push_opt(&mut self, key: &str, value: Option<impl AsRef<str>>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, value);
        }
        self
    }

    /// `path` followed by the query string.
    pub(crate) fn on(&self, path: String) -> String {
        path + &self.0
    }
}

pub(crate) fn list_query(params: &ListParams) -> Query {
    let mut query = Query::default();
    query
        .push_opt(
            "labelSelector",
            params.label_selector.as_deref().filter(|s| !s.is_empty()),
        )
        .push_opt(
            "fieldSelector",
            params.field_selector.as_deref().filter(|s| !s.is_empty()),
        )
        .push_opt("limit", params.limit.map(|l| l.to_string()))
        .push_opt(
            "continue",
            params.continue_token.as_deref().filter(|t| !t.is_empty()),
        )
        .push_opt("resourceVersion", params.resource_version.as_deref())
        .push_opt(
            "resourceVersionMatch",
            params.version_match.as_ref().map(|m| match m {
                VersionMatch::NotOlderThan => "NotOlderThan",
                VersionMatch::Exact => "Exact",
            }),
        );
    query
}

pub(crate) fn watch_query(params: &WatchParams, resource_version: &str) -> Query {
    let mut query = Query::default();
    query
        .push("watch", "1")
        .push_opt(
            "resourceVersion",
            Some(resource_version).filter(|rv| !rv.is_empty()),
        )
        .push_opt(
            "labelSelector",
            params.label_selector.as_deref().filter(|s| !s.is_empty()),
        )
        .push_opt(
            "fieldSelector",
            params.field_selector.as_deref().filter(|s| !s.is_empty()),
        )
        .push_opt("timeoutSeconds", params.timeout.map(|t| t.to_string()))
        .push_opt("allowWatchBookmarks", params.bookmarks.then_some("true"))
        .push_opt(
            "sendInitialEvents",
            params.send_initial_events.then_some("true"),
        );
    query
}

pub(crate) fn post_query(params: &PostParams) -> Query {
    write_query(params.dry_run, params.field_manager.as_deref())
}

pub(crate) fn patch_query(params: &PatchParams) -> Query {
    let mut query = write_query(params.dry_run, params.field_manager.as_deref());
    if params.force {
        query.push("force", "true");
    }
    query.push_opt(
        "fieldValidation",
        params.field_validation.as_ref().map(|v| v.as_str()),
    );
    query
}

fn write_query(dry_run: bool, field_manager: Option<&str>) -> Query {
    let mut query = Query::default();
    query
        .push_opt("dryRun", dry_run.then_some("All"))
        .push_opt("fieldManager", field_manager);
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("app in (a, b),tier!=x"),
            "app%20in%20%28a%2C%20b%29%2Ctier%21%3Dx"
        );
        assert_eq!(encode("plain-name_1.2~"), "plain-name_1.2~");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn paths_follow_the_kubernetes_layout() {
        let pods = ResourceInfo::builtin("", "Pod").unwrap();
        assert_eq!(
            collection(&pods, Some("default")),
            "/api/v1/namespaces/default/pods"
        );
        assert_eq!(collection(&pods, None), "/api/v1/pods");
        let deployments = ResourceInfo::of::<Deployment>();
        assert_eq!(
            object(&deployments, Some("ns"), "web", Some("status")).unwrap(),
            "/apis/apps/v1/namespaces/ns/deployments/web/status"
        );
        let nodes = ResourceInfo::of::<Node>();
        assert_eq!(
            object(&nodes, None, "n1", None).unwrap(),
            "/api/v1/nodes/n1"
        );
    }

    #[test]
    fn list_params_become_query_parameters() {
        let params = ListParams {
            label_selector: Some("app=web".into()),
            limit: Some(5),
            continue_token: Some("abc=".into()),
            resource_version: Some("10".into()),
            version_match: Some(VersionMatch::Exact),
            ..Default::default()
        };
        assert_eq!(
            list_query(&params).on("/x".into()),
            "/x?labelSelector=app%3Dweb&limit=5&continue=abc%3D&resourceVersion=10&resourceVersionMatch=Exact"
        );
    }
}
