//! The [`Client`] over HTTP: any component can run in its own process against a remote API
//! server.
//!
//! [`RemoteClient`] speaks Kubernetes' REST conventions to any server that does (Capstan's
//! [`http`](crate::http) server, or kube-apiserver): `/api/v1` and
//! `/apis/<group>/<version>` paths, JSON bodies, query parameters from kube-core's params,
//! `DeleteOptions` bodies, merge and strategic merge patch content types, and watches as
//! newline-delimited `WatchEvent`s read as they arrive. Errors come back as the server's
//! `Status` turned into the typed [`Error`] by [`Error::from_status`], so a 409 is
//! [`Error::Conflict`] and a 410 [`Error::Gone`] exactly as in process; a server that cannot
//! be reached is [`Error::ServiceUnavailable`] (retryable).
//!
//! It is cheap to clone (clones share one connection pool) and, behind an `Arc<dyn Client>`,
//! serves [`Api<K>`](capstan_api::Api) and therefore informers, exactly like the in-process
//! registry.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::{k8s_openapi::api::core::v1::Pod, kube_core::params::ListParams, Api};
//! use capstan_apiserver::remote::RemoteClient;
//!
//! # async fn run() -> capstan_api::Result<()> {
//! let client = RemoteClient::new("http://127.0.0.1:6443")?.with_token("my-token");
//! // Or: RemoteClient::from_kubeconfig("kubeconfig")?
//! let pods: Api<Pod> = Api::namespaced(Arc::new(client), "default");
//! for pod in pods.list(&ListParams::default().labels("app=web")).await? {
//!     println!("{}", pod.metadata.name.unwrap_or_default());
//! }
//! # Ok(()) }
//! ```
//!
//! With the `tls` feature, `https` servers are supported: the client trusts only the CAs it is
//! given (`certificate-authority(-data)` in a kubeconfig, or
//! `RemoteClient::with_certificate_authority`), never the system's, and may present a client
//! certificate (`client-certificate(-data)` and `client-key(-data)`, or
//! `RemoteClient::with_client_certificate`); bearer tokens work as over HTTP. It offers HTTP/2
//! and HTTP/1.1 in ALPN. A server whose certificate does not verify fails every call with
//! [`Error::ServiceUnavailable`] naming the TLS error. Without the feature, an `https` server is
//! refused with [`Error::BadRequest`].

mod kubeconfig;
#[cfg(feature = "tls")]
mod tls;
pub(crate) mod url;
pub(crate) mod watch;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList, Status, TypeMeta};
use capstan_api::{Client, Deletion, Error, ResourceInfo, Result, WatchStream};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// How long establishing a TCP connection may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const USER_AGENT: &str = concat!("capstan/", env!("CARGO_PKG_VERSION"));

#[cfg(feature = "tls")]
type Connector = tls::Connector;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

type Http = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// A hyper client over `connector`, with an idle pool.
fn http_client(connector: Connector) -> Http {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// TCP connections with the connect timeout, for `http` and (under TLS) `https` URLs.
fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    // The TLS connector wraps it for https URLs.
    #[cfg(feature = "tls")]
    connector.enforce_http(false);
    connector
}

/// A [`Client`] talking to a remote API server over HTTP.
///
/// Build it from a base URL ([`RemoteClient::new`]) or a kubeconfig
/// ([`RemoteClient::from_kubeconfig`]). Clones share the connection pool.
#[derive(Clone)]
pub struct RemoteClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: Http,
    /// `http://host:port` plus any path prefix, without a trailing slash.
    base: String,
    authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
    namespace: Option<String>,
    #[cfg(feature = "tls")]
    tls: tls::Settings,
}

impl fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RemoteClient");
        debug
            .field("base_url", &self.inner.base)
            .field(
                "token",
                &self.inner.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.inner.timeout)
            .field("default_namespace", &self.inner.namespace);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.inner.tls);
        debug.finish()
    }
}

impl RemoteClient {
    /// A client for the API server at `base_url`, e.g. `http://127.0.0.1:6443` (a path
    /// prefix, if any, is kept). With the `tls` feature, `https` URLs work too; such a client
    /// trusts no server until given a CA
    /// (`with_certificate_authority`).
    ///
    /// Errors: [`Error::BadRequest`] for a URL that does not parse or has no host, and, without
    /// the `tls` feature, for an `https` URL.
    pub fn new(base_url: &str) -> Result<Self> {
        let uri: http::Uri = base_url
            .parse()
            .map_err(|e| Error::bad_request(format!("invalid API server URL {base_url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            #[cfg(feature = "tls")]
            Some("https") => {}
            #[cfg(not(feature = "tls"))]
            Some("https") => {
                return Err(Error::bad_request(format!(
                    "cannot connect to {base_url}: TLS (https) needs capstan-apiserver's `tls` \
                     feature; without it, use an http:// server"
                )))
            }
            _ => {
                return Err(Error::bad_request(format!(
                    "invalid API server URL {base_url:?}: the scheme must be http or https"
                )))
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(Error::bad_request(format!(
                "invalid API server URL {base_url:?}: no host"
            )));
        };
        if uri.query().is_some() {
            return Err(Error::bad_request(format!(
                "invalid API server URL {base_url:?}: it may not have a query"
            )));
        }
        let scheme = uri.scheme_str().unwrap_or("http");
        let base = format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'));
        #[cfg(feature = "tls")]
        let tls = tls::Settings::default();
        #[cfg(feature = "tls")]
        let connector = if scheme == "https" {
            tls.connector(tcp_connector())?
        } else {
            tls::Connector::plain(tcp_connector())
        };
        #[cfg(not(feature = "tls"))]
        let connector = tcp_connector();
        Ok(RemoteClient {
            inner: Arc::new(Inner {
                http: http_client(connector),
                base,
                authorization: None,
                timeout: None,
                namespace: None,
                #[cfg(feature = "tls")]
                tls,
            }),
        })
    }

    /// Trusts the CA certificates in `pem` (PEM `CERTIFICATE` blocks) for the server's
    /// certificate, replacing those trusted before (feature `tls`). Changes nothing for an
    /// `http` server.
    ///
    /// Errors: [`Error::BadRequest`] for malformed PEM or an unusable certificate.
    #[cfg(feature = "tls")]
    pub fn with_certificate_authority(mut self, pem: impl AsRef<[u8]>) -> Result<Self> {
        let mut settings = self.inner.tls.clone();
        settings.set_certificate_authority(pem.as_ref())?;
        self.set_tls(settings)?;
        Ok(self)
    }

    /// Presents the client certificate chain in `certificate_pem` (PEM, leaf first), proving
    /// it with the private key in `key_pem` (PEM; PKCS#8, PKCS#1 or SEC1), to an `https`
    /// server (feature `tls`).
    ///
    /// Errors: [`Error::BadRequest`] for malformed PEM or a key that does not belong to the
    /// certificate.
    #[cfg(feature = "tls")]
    pub fn with_client_certificate(
        mut self,
        certificate_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self> {
        let mut settings = self.inner.tls.clone();
        settings.set_client_certificate(certificate_pem.as_ref(), key_pem.as_ref())?;
        self.set_tls(settings)?;
        Ok(self)
    }

    /// Accepts any server certificate (kubeconfig's `insecure-skip-tls-verify: true`; feature
    /// `tls`). Anyone on the path can then impersonate the server: for throwaway test servers
    /// only. Off by default.
    ///
    /// Errors: [`Error::BadRequest`] when the TLS configuration cannot be rebuilt (a client
    /// certificate rustls refuses).
    #[cfg(feature = "tls")]
    pub fn with_insecure_skip_tls_verify(mut self) -> Result<Self> {
        let mut settings = self.inner.tls.clone();
        settings.set_insecure(true);
        self.set_tls(settings)?;
        Ok(self)
    }

    /// Verifies the server's certificate for `name` instead of the URL's host (kubeconfig's
    /// `tls-server-name`; feature `tls`).
    ///
    /// Errors: [`Error::BadRequest`] for a name that is neither a DNS name nor an IP address.
    #[cfg(feature = "tls")]
    pub fn with_tls_server_name(mut self, name: &str) -> Result<Self> {
        let mut settings = self.inner.tls.clone();
        settings.set_server_name(name)?;
        self.set_tls(settings)?;
        Ok(self)
    }

    /// Replaces the TLS settings and, for an `https` server, the connection pool built on them.
    #[cfg(feature = "tls")]
    fn set_tls(&mut self, settings: tls::Settings) -> Result<()> {
        let https = self.inner.base.starts_with("https://");
        let connector = if https {
            Some(settings.connector(tcp_connector())?)
        } else {
            None
        };
        let inner = self.inner_mut();
        if let Some(connector) = connector {
            inner.http = http_client(connector);
        }
        inner.tls = settings;
        Ok(())
    }

    /// A client for the current context of the kubeconfig at `path`: its cluster's `server`
    /// and its user's `token` (or `tokenFile`); the context's namespace becomes
    /// [`default_namespace`](Self::default_namespace). With the `tls` feature, also the
    /// cluster's `certificate-authority(-data)`, `insecure-skip-tls-verify` and
    /// `tls-server-name`, and the user's `client-certificate(-data)` and `client-key(-data)`.
    ///
    /// Errors: [`Error::BadRequest`] when the file (or a file it names) cannot be read or
    /// parsed, its current context is missing or incomplete, the TLS material is unusable, an
    /// `https` cluster names no CA (and does not skip verification), or, without the `tls`
    /// feature, the server is `https`.
    pub fn from_kubeconfig(path: impl AsRef<Path>) -> Result<Self> {
        let target = kubeconfig::load(path.as_ref())?;
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut client = Self::new(&target.server)?;
        #[cfg(feature = "tls")]
        {
            let files = &target.tls;
            if client.inner.base.starts_with("https://")
                && files.certificate_authority.is_none()
                && !files.insecure_skip_tls_verify
            {
                return Err(Error::bad_request(format!(
                    "kubeconfig {}: the server {} is https, but its cluster names no \
                     certificate-authority(-data) to verify it with (the system's trusted roots \
                     are not used)",
                    path.as_ref().display(),
                    target.server
                )));
            }
            let mut settings = tls::Settings::default();
            if let Some(pem) = &files.certificate_authority {
                settings.set_certificate_authority(pem)?;
            }
            if let (Some(certificate), Some(key)) = (&files.client_certificate, &files.client_key) {
                settings.set_client_certificate(certificate, key)?;
            }
            settings.set_insecure(files.insecure_skip_tls_verify);
            if let Some(name) = &files.tls_server_name {
                settings.set_server_name(name)?;
            }
            client.set_tls(settings)?;
        }
        if let Some(token) = target.token {
            client = client.with_token(token);
        }
        if let Some(namespace) = target.namespace {
            client.inner_mut().namespace = Some(namespace);
        }
        Ok(client)
    }

    /// Sends `token` as `Authorization: Bearer <token>` on every request.
    pub fn with_token(mut self, token: impl AsRef<str>) -> Self {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.as_ref().trim())).ok();
        self.inner_mut().authorization = value.map(|mut v| {
            v.set_sensitive(true);
            v
        });
        self
    }

    /// Bounds every request except watches (whose lifetime `WatchParams::timeout` sets) by
    /// `timeout`; past it the call fails with [`Error::Timeout`]. Unbounded by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner_mut().timeout = Some(timeout);
        self
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The namespace of the kubeconfig context this client was built from, if it named one.
    pub fn default_namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Builders run before the client is shared; a clone made earlier keeps its settings.
        Arc::make_mut(&mut self.inner)
    }

    /// Sends one request; the response may have any status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Response<Incoming>> {
        let uri = format!("{}{path}", self.inner.base);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(authorization) = &self.inner.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| {
            Error::bad_request(format!("cannot build the request {method} {uri}: {e}"))
        })?;
        self.inner.http.request(request).await.map_err(|e| {
            let reason = if e.is_connect() {
                "cannot connect to the API server"
            } else {
                "the connection to the API server failed"
            };
            Error::ServiceUnavailable {
                message: format!("{reason} ({method} {uri}): {}", chain(&e)),
            }
        })
    }

    /// Sends one request and reads the whole response; a non-2xx answer is its error.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Bytes)> {
        let exchange = async {
            let response = self.send(method.clone(), &path, body).await?;
            let code = response.status();
            let bytes = read_body(response.into_body(), &method, &path).await?;
            if code.is_success() {
                Ok((code, bytes))
            } else {
                Err(error_from_response(code, &bytes))
            }
        };
        match self.inner.timeout {
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

    async fn object(
        &self,
        method: Method,
        path: String,
        body: Option<(&'static str, Vec<u8>)>,
        resource: &ResourceInfo,
    ) -> Result<DynamicObject> {
        let (_, bytes) = self.call(method, path, body).await?;
        let mut object: DynamicObject = decode(&bytes, resource)?;
        fill_types(resource, &mut object);
        Ok(object)
    }
}

async fn read_body(body: Incoming, method: &Method, path: &str) -> Result<Bytes> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| Error::ServiceUnavailable {
            message: format!(
                "reading the response to {method} {path} failed: {}",
                chain(&e)
            ),
        })
}

/// `error` and its sources, joined by `": "`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    resource: &ResourceInfo,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!(
            "cannot decode the API server's answer for {}: {e}",
            resource.qualified_resource()
        ))
    })
}

/// The typed error a non-2xx response stands for: its `Status` body when it has one, else
/// the HTTP code with the body as the message.
pub(crate) fn error_from_response(code: StatusCode, body: &[u8]) -> Error {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let is_status = value.as_ref().is_some_and(|v| {
        v.get("kind").and_then(|k| k.as_str()) == Some("Status")
            || v.get("status").and_then(|s| s.as_str()) == Some("Failure")
    });
    if let Some(mut status) = value
        .filter(|_| is_status)
        .and_then(|v| serde_json::from_value::<Status>(v).ok())
    {
        if status.code == 0 {
            status.code = code.as_u16();
        }
        if status.message.is_empty() {
            status.message = code.to_string();
        }
        return Error::from_status(status);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("the server answered {code}")
    } else {
        format!(
            "the server answered {code}: {}",
            text.chars().take(500).collect::<String>()
        )
    };
    Error::from_status(Status::failure(&message, "").with_code(code.as_u16()))
}

/// Sets `apiVersion` and `kind` on an object that came without them (as list items may).
pub(crate) fn fill_types(resource: &ResourceInfo, object: &mut DynamicObject) {
    if object.types.is_none() {
        object.types = Some(TypeMeta {
            api_version: resource.api_version(),
            kind: resource.kind().to_string(),
        });
    }
}

pub(crate) fn json_body<T: serde::Serialize>(
    value: &T,
    resource: &ResourceInfo,
) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::internal(format!(
            "cannot encode the request for {}: {e}",
            resource.qualified_resource()
        ))
    })
}

/// `params` as the JSON `DeleteOptions` body of a DELETE.
pub(crate) fn delete_options(params: &DeleteParams, resource: &ResourceInfo) -> Result<Vec<u8>> {
    let mut options = serde_json::to_value(params)
        .map_err(|e| Error::internal(format!("cannot encode DeleteOptions: {e}")))?;
    if let Some(fields) = options.as_object_mut() {
        fields.insert("kind".into(), "DeleteOptions".into());
        fields.insert("apiVersion".into(), "v1".into());
    }
    json_body(&options, resource)
}

/// The name of an object to replace.
pub(crate) fn name_of(object: &DynamicObject, resource: &ResourceInfo) -> Result<String> {
    object
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::bad_field(
                "metadata.name",
                format!(
                    "a name is required to replace {}",
                    resource.qualified_resource()
                ),
            )
        })
}

/// What a successful DELETE of `name` answered with `code` and `bytes` did: the object gone,
/// or still there waiting (202, or finalizers or a grace period left on what came back).
///
/// Errors: [`Error::Internal`] when the body is neither an object nor a `Status`.
pub(crate) fn deletion(
    code: StatusCode,
    bytes: &[u8],
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
) -> Result<Deletion> {
    let value: serde_json::Value = decode(bytes, resource)?;
    let object = if value.get("kind").and_then(|k| k.as_str()) == Some("Status") {
        // Some servers answer a finished delete with a Success Status naming the object.
        let mut object = DynamicObject::new(name, &resource.to_api_resource());
        object.metadata.namespace = namespace.map(String::from);
        object
    } else {
        let mut object: DynamicObject = serde_json::from_value(value).map_err(|e| {
            Error::internal(format!(
                "cannot decode the API server's answer for {}: {e}",
                resource.qualified_resource()
            ))
        })?;
        fill_types(resource, &mut object);
        object
    };
    // Kubernetes answers 200 whether the object is gone or still waiting (for finalizers,
    // or out its grace period); what is left says which.
    let held = object.metadata.deletion_timestamp.is_some()
        && (object
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
            || object
                .metadata
                .deletion_grace_period_seconds
                .is_some_and(|grace| grace > 0)
            // A Namespace waits for the finalizers of its spec too (`kubernetes`: its
            // content is being removed).
            || object.data["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty()));
    Ok(if code == StatusCode::ACCEPTED || held {
        Deletion::Pending(object)
    } else {
        Deletion::Deleted(object)
    })
}

#[async_trait]
impl Client for RemoteClient {
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
        let (_, bytes) = self.call(Method::GET, path, None).await?;
        let mut list: ObjectList<DynamicObject> = decode(&bytes, resource)?;
        for item in &mut list.items {
            fill_types(resource, item);
        }
        Ok(list)
    }

    /// One `DELETE` on the collection path, with the selectors in the query and `params` as
    /// the `DeleteOptions` body; the server answers with the deleted objects.
    async fn delete_collection(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &DeleteParams,
        list: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        url::check_scope(resource, namespace, true)?;
        let path = url::list_query(list).on(url::collection(resource, namespace));
        let body = delete_options(params, resource)?;
        let (_, bytes) = self
            .call(Method::DELETE, path, Some(("application/json", body)))
            .await?;
        let mut deleted: ObjectList<DynamicObject> = decode(&bytes, resource)?;
        for item in &mut deleted.items {
            fill_types(resource, item);
        }
        Ok(deleted)
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
        let body = json_body(&object, resource)?;
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
        let name = name_of(&object, resource)?;
        let path = url::post_query(params).on(url::object(resource, namespace, &name, None)?);
        let body = json_body(&object, resource)?;
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
        let body = json_body(&object, resource)?;
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
        let name = name_of(&object, resource)?;
        let path =
            url::post_query(params).on(url::object(resource, namespace, &name, Some("status"))?);
        let body = json_body(&object, resource)?;
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
        let json_patch;
        let (content_type, body) = match patch {
            Patch::Merge(body) => ("application/merge-patch+json", body),
            Patch::Strategic(body) => ("application/strategic-merge-patch+json", body),
            Patch::Json(operations) => {
                json_patch = serde_json::to_value(operations)
                    .map_err(|e| Error::internal(format!("cannot encode the JSON patch: {e}")))?;
                ("application/json-patch+json", &json_patch)
            }
            _ => {
                return Err(Error::UnsupportedMediaType {
                    message: "the remote client sends JSON, merge and strategic merge patches \
                              (application/json-patch+json, application/merge-patch+json, \
                              application/strategic-merge-patch+json)"
                        .into(),
                })
            }
        };
        let path = url::patch_query(params).on(url::object(resource, namespace, name, None)?);
        let body = json_body(body, resource)?;
        self.object(Method::PATCH, path, Some((content_type, body)), resource)
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
        let body = delete_options(params, resource)?;
        let (code, bytes) = self
            .call(Method::DELETE, path, Some(("application/json", body)))
            .await?;
        deletion(code, &bytes, resource, namespace, name)
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
            let response = self.send(Method::GET, &path, None).await?;
            let code = response.status();
            if code.is_success() {
                Ok(response)
            } else {
                let bytes = read_body(response.into_body(), &Method::GET, &path).await?;
                Err(error_from_response(code, &bytes))
            }
        };
        // The timeout bounds getting the response headers, not the stream itself.
        let response = match self.inner.timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, start)
                    .await
                    .map_err(|_| Error::Timeout {
                        message: format!("GET {path} did not answer within {timeout:?}"),
                    })??
            }
            None => start.await?,
        };
        Ok(watch::events(response.into_body(), resource.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "tls"))]
    fn https_servers_are_refused_without_the_tls_feature() {
        let error = RemoteClient::new("https://127.0.0.1:6443").unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    #[test]
    fn base_urls_lose_their_trailing_slash_and_keep_a_prefix() {
        assert_eq!(
            RemoteClient::new("http://h:1/").unwrap().base_url(),
            "http://h:1"
        );
        assert_eq!(
            RemoteClient::new("http://h:1/k8s/").unwrap().base_url(),
            "http://h:1/k8s"
        );
        assert!(RemoteClient::new("not a url").is_err());
        assert!(RemoteClient::new("ftp://h").is_err());
    }

    #[test]
    #[cfg(feature = "tls")]
    fn https_urls_are_kept_and_bad_tls_material_is_a_bad_request() {
        let client = RemoteClient::new("https://h:1/").unwrap();
        assert_eq!(client.base_url(), "https://h:1");
        let error = client
            .clone()
            .with_certificate_authority("not PEM")
            .unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        let error = client
            .with_client_certificate("-----BEGIN CERTIFICATE-----\n", "")
            .unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
    }

    #[test]
    fn status_bodies_become_typed_errors_and_others_use_the_code() {
        let conflict = Error::Conflict {
            resource: "configmaps".into(),
            name: "a".into(),
            message: Error::OBJECT_MODIFIED.into(),
        };
        let body = serde_json::to_vec(&crate::http::status::status_json(&conflict)).unwrap();
        assert_eq!(error_from_response(StatusCode::CONFLICT, &body), conflict);
        let plain = error_from_response(StatusCode::SERVICE_UNAVAILABLE, b"upstream down");
        assert!(
            matches!(&plain, Error::ServiceUnavailable { message } if message.contains("upstream down")),
            "{plain:?}"
        );
        let html = error_from_response(StatusCode::NOT_FOUND, b"<html>nope</html>");
        assert!(html.is_not_found(), "{html:?}");
    }

    #[test]
    fn the_token_is_not_printed() {
        let client = RemoteClient::new("http://h:1")
            .unwrap()
            .with_token("s3cret");
        assert!(!format!("{client:?}").contains("s3cret"));
    }
}
