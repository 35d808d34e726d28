//! [`KubeClient`]: Capstan's [`Client`] over a [`kube::Client`].
//!
//! It builds the same requests as [`RemoteClient`](crate::remote::RemoteClient) (paths, query
//! strings, `DeleteOptions` bodies, patch content types; see `remote::url`) and reads the
//! answers the same way (a `Status` body becomes the typed [`Error`], a watch body is split
//! into events as it arrives, an `ERROR` event ends the stream with its error), so a component
//! behaves the same over either. Only the transport differs: kube's tower stack, with its
//! configuration (kubeconfig or in-cluster), authentication (tokens, client certificates,
//! exec plugins, refreshes) and TLS.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList};
use capstan_api::{Client, Deletion, Error, ResourceInfo, Result, WatchStream};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;

use crate::remote::{self, url};

const USER_AGENT: &str = concat!("capstan/", env!("CARGO_PKG_VERSION"));

/// A request body and its media type.
type Payload = (&'static str, Vec<u8>);

/// Capstan's [`Client`] over a [`kube::Client`]: Capstan's components against any cluster
/// kube-rs reaches.
///
/// Every verb of the trait is one HTTP request (`delete_collection` too). Errors: a non-2xx
/// answer is its `Status` as the typed [`Error`] (404 [`Error::NotFound`], 409
/// [`Error::Conflict`] or [`Error::AlreadyExists`] by reason, 410 [`Error::Gone`] or
/// [`Error::Expired`], 422 [`Error::Invalid`] with its causes, ...), as
/// [`Error::from_status`] reads it; a request kube cannot send (no connection, TLS or
/// authentication failure) is [`Error::ServiceUnavailable`], which is retryable. Watches
/// stream as they arrive; a 410 before the stream starts is `Err(`[`Error::Gone`]`)` and one
/// inside it an `Err` item, after which the stream ends, as Capstan's reflector expects.
///
/// Clones share kube's client (one connection pool, one request queue).
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    timeout: Option<Duration>,
}

impl fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClient")
            .field("default_namespace", &self.client.default_namespace())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl From<kube::Client> for KubeClient {
    fn from(client: kube::Client) -> Self {
        KubeClient::new(client)
    }
}

impl KubeClient {
    /// Serves the [`Client`] trait over `client` (from `kube::Client::try_default`,
    /// `kube::Client::try_from(config)`, or [`kube_bridge::client`](super::client) in
    /// process).
    pub fn new(client: kube::Client) -> Self {
        KubeClient {
            client,
            timeout: None,
        }
    }

    /// A client for the cluster kube finds as `kube::Config::infer` does: `$KUBECONFIG` or
    /// `~/.kube/config` (its current context), else the in-cluster service account.
    ///
    /// Errors: [`Error::BadRequest`] when no configuration is found or it cannot be used
    /// (unreadable kubeconfig, missing context, unusable TLS or authentication material).
    pub async fn infer() -> Result<Self> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| Error::bad_request(format!("no usable Kubernetes configuration: {e}")))?;
        Self::try_from_config(config)
    }

    /// A client for `config`.
    ///
    /// Errors: [`Error::BadRequest`] when kube cannot build a client from it (TLS or
    /// authentication material it cannot use).
    pub fn try_from_config(config: kube::Config) -> Result<Self> {
        let client = kube::Client::try_from(config).map_err(|e| {
            Error::bad_request(format!(
                "cannot build a Kubernetes client from the configuration: {e}"
            ))
        })?;
        Ok(Self::new(client))
    }

    /// Bounds every request except watches (whose lifetime `WatchParams::timeout` sets) by
    /// `timeout`; past it the call fails with [`Error::Timeout`]. Unbounded by default
    /// (kube's own connect and read timeouts still apply).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The kube client underneath.
    pub fn kube_client(&self) -> &kube::Client {
        &self.client
    }

    /// The namespace of kube's configuration (its context's, the service account's, or
    /// `default`).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Sends one request; the response may have any status.
    async fn send(
        &self,
        method: &Method,
        path: &str,
        payload: Option<Payload>,
    ) -> Result<Response<Body>> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        let body = match payload {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| {
            Error::bad_request(format!("cannot build the request {method} {path}: {e}"))
        })?;
        self.client
            .send(request)
            .await
            .map_err(|e| Error::ServiceUnavailable {
                message: format!(
                    "the request {method} {path} could not be sent: {}",
                    remote::chain(&e)
                ),
            })
    }

    /// Sends one request and reads the whole answer; a non-2xx answer is its error.
    async fn call(
        &self,
        method: Method,
        path: String,
        payload: Option<Payload>,
    ) -> Result<(StatusCode, Bytes)> {
        let exchange = async {
            let response = self.send(&method, &path, payload).await?;
            let code = response.status();
            let bytes = read_body(response.into_body(), &method, &path).await?;
            if code.is_success() {
                Ok((code, bytes))
            } else {
                Err(remote::error_from_response(code, &bytes))
            }
        };
        match self.timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| Error::Timeout {
                        message: format!("{method} {path} did not complete within {timeout:?}"),
                    })?
            }
            None => exchange.await,
        }
    }

    /// One request whose answer is an object of `resource`.
    async fn object(
        &self,
        method: Method,
        path: String,
        payload: Option<Payload>,
        resource: &ResourceInfo,
    ) -> Result<DynamicObject> {
        let (_, bytes) = self.call(method, path, payload).await?;
        let mut object: DynamicObject = remote::decode(&bytes, resource)?;
        remote::fill_types(resource, &mut object);
        Ok(object)
    }

    /// One request whose answer is a list of `resource`.
    async fn objects(
        &self,
        method: Method,
        path: String,
        payload: Option<Payload>,
        resource: &ResourceInfo,
    ) -> Result<ObjectList<DynamicObject>> {
        let (_, bytes) = self.call(method, path, payload).await?;
        let mut list: ObjectList<DynamicObject> = remote::decode(&bytes, resource)?;
        for item in &mut list.items {
            remote::fill_types(resource, item);
        }
        Ok(list)
    }
}

async fn read_body(body: Body, method: &Method, path: &str) -> Result<Bytes> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| Error::ServiceUnavailable {
            message: format!(
                "reading the response to {method} {path} failed: {}",
                remote::chain(&e)
            ),
        })
}

/// The media type and body of `patch`: every kind Kubernetes takes, server-side apply
/// included (its YAML body written as JSON, which YAML reads).
fn patch_payload(patch: &Patch<serde_json::Value>, resource: &ResourceInfo) -> Result<Payload> {
    let (content_type, body) = match patch {
        Patch::Apply(body) => (
            "application/apply-patch+yaml",
            remote::json_body(body, resource)?,
        ),
        Patch::Merge(body) => (
            "application/merge-patch+json",
            remote::json_body(body, resource)?,
        ),
        Patch::Strategic(body) => (
            "application/strategic-merge-patch+json",
            remote::json_body(body, resource)?,
        ),
        Patch::Json(operations) => (
            "application/json-patch+json",
            remote::json_body(operations, resource)?,
        ),
        #[allow(unreachable_patterns)]
        _ => {
            return Err(Error::UnsupportedMediaType {
                message: "this kind of patch has no media type Kubernetes serves".into(),
            })
        }
    };
    Ok((content_type, body))
}

#[async_trait]
impl Client for KubeClient {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let path = url::object(resource, namespace, name, None)?;
        self.object(Method::GET, path, None, resource).await
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        url::check_scope(resource, namespace, true)?;
        let path = url::list_query(params).on(url::collection(resource, namespace));
        self.objects(Method::GET, path, None, resource).await
    }

    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let path = url::post_query(params).on(url::collection(resource, namespace));
        let body = remote::json_body(&object, resource)?;
        self.object(
            Method::POST,
            path,
            Some(("application/json", body)),
            resource,
        )
        .await
    }

    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let name = remote::name_of(&object, resource)?;
        let path = url::post_query(params).on(url::object(resource, namespace, &name, None)?);
        let body = remote::json_body(&object, resource)?;
        self.object(
            Method::PUT,
            path,
            Some(("application/json", body)),
            resource,
        )
        .await
    }

    async fn create_subresource(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let path =
            url::post_query(params).on(url::object(resource, namespace, name, Some(subresource))?);
        let body = remote::json_body(&object, resource)?;
        let (_, bytes) = self
            .call(Method::POST, path, Some(("application/json", body)))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!(
                "cannot decode the answer of {}/{subresource}: {e}",
                resource.qualified_resource()
            ))
        })
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let name = remote::name_of(&object, resource)?;
        let path =
            url::post_query(params).on(url::object(resource, namespace, &name, Some("status"))?);
        let body = remote::json_body(&object, resource)?;
        self.object(
            Method::PUT,
            path,
            Some(("application/json", body)),
            resource,
        )
        .await
    }

    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        url::check_scope(resource, namespace, false)?;
        let payload = patch_payload(patch, resource)?;
        let path = url::patch_query(params).on(url::object(resource, namespace, name, None)?);
        self.object(Method::PATCH, path, Some(payload), resource)
            .await
    }

    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deletion> {
        url::check_scope(resource, namespace, false)?;
        let path = url::object(resource, namespace, name, None)?;
        let body = remote::delete_options(params, resource)?;
        let (code, bytes) = self
            .call(Method::DELETE, path, Some(("application/json", body)))
            .await?;
        remote::deletion(code, &bytes, resource, namespace, name)
    }

    /// One `DELETE` on the collection path, as [`RemoteClient`](crate::remote::RemoteClient)
    /// sends it; the server answers with the deleted objects.
    async fn delete_collection(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &DeleteParams,
        list: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        url::check_scope(resource, namespace, true)?;
        let path = url::list_query(list).on(url::collection(resource, namespace));
        let body = remote::delete_options(params, resource)?;
        self.objects(
            Method::DELETE,
            path,
            Some(("application/json", body)),
            resource,
        )
        .await
    }

    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream> {
        url::check_scope(resource, namespace, true)?;
        let path =
            url::watch_query(params, resource_version).on(url::collection(resource, namespace));
        let start = async {
            let response = self.send(&Method::GET, &path, None).await?;
            let code = response.status();
            if code.is_success() {
                Ok(response)
            } else {
                let bytes = read_body(response.into_body(), &Method::GET, &path).await?;
                Err(remote::error_from_response(code, &bytes))
            }
        };
        // The timeout bounds getting the response headers, not the stream itself.
        let response = match self.timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, start)
                    .await
                    .map_err(|_| Error::Timeout {
                        message: format!("GET {path} did not answer within {timeout:?}"),
                    })??
            }
            None => start.await?,
        };
        Ok(remote::watch::events(
            response.into_body(),
            resource.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_kind_has_its_media_type() {
        let resource = ResourceInfo::builtin("", "ConfigMap").unwrap();
        let body = serde_json::json!({"data": {"a": "1"}});
        let media = |patch: Patch<serde_json::Value>| patch_payload(&patch, &resource).unwrap().0;
        assert_eq!(
            media(Patch::Apply(body.clone())),
            "application/apply-patch+yaml"
        );
        assert_eq!(
            media(Patch::Merge(body.clone())),
            "application/merge-patch+json"
        );
        assert_eq!(
            media(Patch::Strategic(body)),
            "application/strategic-merge-patch+json"
        );
        let operations = json_patch::Patch(Vec::new());
        assert_eq!(
            media(Patch::Json(operations)),
            "application/json-patch+json"
        );
    }
}
