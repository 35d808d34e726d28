//! How the API server reaches a node's kubelet: which of the Node's addresses, which port and
//! scheme, with which credential, within which timeouts (kube-apiserver's `--kubelet-*` flags).
//!
//! [`KubeletClientConfig`] is the setting ([`ApiServerOptions::kubelet_client`]); a
//! [`KubeletClient`] built from it finds a Node's [`KubeletLocation`] and sends requests there,
//! each on a connection of its own (so an upgraded exec stream owns its connection).
//!
//! [`ApiServerOptions::kubelet_client`]: crate::http::ApiServerOptions::kubelet_client

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::{Api, Client};
use hyper::body::Incoming;

use crate::http::layers::{StaticTokens, UserInfo, SUPERUSER_GROUP};

/// The user the API server's own kubelet credential authenticates as, as kubeadm names the
/// client certificate it gives kube-apiserver for kubelets.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Opens a TCP connection to a kubelet at `(host, port)`: for servers that reach their nodes
/// some other way than from their own network namespace (see
/// [`KubeletClientConfig::dialer`]). The connect timeout is applied around it.
pub type KubeletDialer = Arc<
    dyn Fn(
            String,
            u16,
        ) -> futures::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>
        + Send
        + Sync,
>;

/// The port a Node whose status names none is reached on (the kubelet's default).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// How the API server reaches kubelets.
///
/// Built by whoever assembles the server (the cluster crate's `serve`), set with
/// [`ApiServerOptions::kubelet_client`](crate::http::ApiServerOptions::kubelet_client). The
/// default reaches kubelets over plain HTTP without a credential.
#[derive(Clone)]
pub struct KubeletClientConfig {
    /// Which of a Node's `status.addresses` to dial, by type, first match wins
    /// (`--kubelet-preferred-address-types`). Default: `InternalIP`, `ExternalIP`, `Hostname`.
    pub preferred_address_types: Vec<String>,
    /// `http` (the default) or `https` (feature `tls`; see the `tls` field). Without the
    /// feature, and for any other scheme, requests fail with [`KubeletError::Scheme`].
    pub scheme: String,
    /// The port for Nodes whose `status.daemonEndpoints.kubeletEndpoint.port` is unset.
    pub default_port: u16,
    /// The bearer token presented to kubelets (`--kubelet-client-token`-like). The server's
    /// authenticator maps it to [`KUBELET_CLIENT_USER`] in `system:masters`, so kubelets'
    /// TokenReview and SubjectAccessReview accept it.
    pub token: Option<String>,
    /// How long dialling a kubelet may take.
    pub connect_timeout: Duration,
    /// How long a kubelet may take to answer a request's headers (streams then last as long
    /// as they last).
    pub response_timeout: Duration,
    /// How long the metrics API waits for each node's `/stats/summary`.
    pub stats_timeout: Duration,
    /// How connections to kubelets are opened; `None` (the default) connects from the
    /// server's own network namespace. A cluster whose nodes live in another namespace
    /// (the multi-process cluster's LAN) dials from there.
    pub dialer: Option<KubeletDialer>,
    /// For `https`: the client certificate presented to kubelets and the CA their serving
    /// certificates must chain to (feature `tls`). Without a CA, as kube-apiserver without
    /// `--kubelet-certificate-authority`, kubelets' certificates are not verified.
    #[cfg(feature = "tls")]
    pub tls: KubeletClientTls,
}

impl Default for KubeletClientConfig {
    fn default() -> Self {
        KubeletClientConfig {
            preferred_address_types: ["InternalIP", "ExternalIP", "Hostname"]
                .map(String::from)
                .to_vec(),
            scheme: "http".into(),
            default_port: DEFAULT_KUBELET_PORT,
            token: None,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            stats_timeout: Duration::from_secs(5),
            dialer: None,
            #[cfg(feature = "tls")]
            tls: KubeletClientTls::default(),
        }
    }
}

impl std::fmt::Debug for KubeletClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("KubeletClientConfig");
        debug
            .field("preferred_address_types", &self.preferred_address_types)
            .field("scheme", &self.scheme)
            .field("default_port", &self.default_port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("stats_timeout", &self.stats_timeout)
            .field("dialer", &self.dialer.as_ref().map(|_| "<custom>"));
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

impl KubeletClientConfig {
    /// The defaults, presenting `token` to kubelets.
    pub fn with_token(token: impl Into<String>) -> Self {
        KubeletClientConfig {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// The defaults, presenting a fresh random token (244 random bits) to kubelets: for a
    /// server that makes up its own kubelet credential each time it starts.
    pub fn with_generated_token() -> Self {
        Self::with_token(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Reaches kubelets over `https`, presenting the client certificate chain `certificate`
    /// (PEM, leaf first) with its `key` (PEM) (feature `tls`; kube-apiserver's
    /// `--kubelet-client-certificate` and `--kubelet-client-key`). Kubelets whose client CA
    /// signed it authenticate the server as its CN, in its O groups. The token, if any, is
    /// still sent.
    ///
    /// Errors: [`std::io::ErrorKind::InvalidData`] for malformed PEM, no certificate, no key,
    /// or a key rustls cannot use.
    #[cfg(feature = "tls")]
    pub fn with_client_certificate_pem(
        mut self,
        certificate: &[u8],
        key: &[u8],
    ) -> std::io::Result<Self> {
        self.tls = self.tls.with_client_certificate_pem(certificate, key)?;
        self.scheme = "https".into();
        Ok(self)
    }

    /// [`with_client_certificate_pem`](Self::with_client_certificate_pem) read from files.
    ///
    /// Errors: a file cannot be read, or as
    /// [`with_client_certificate_pem`](Self::with_client_certificate_pem).
    #[cfg(feature = "tls")]
    pub fn with_client_certificate_files(
        self,
        certificate: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> std::io::Result<Self> {
        let certificate = tls::read(certificate.as_ref(), "kubelet client certificate")?;
        let key = tls::read(key.as_ref(), "kubelet client key")?;
        self.with_client_certificate_pem(&certificate, &key)
    }

    /// Reaches kubelets over `https` and verifies their serving certificates against the CA
    /// certificates of `bundle` (PEM) and the address dialled (feature `tls`;
    /// `--kubelet-certificate-authority`).
    ///
    /// Errors: [`std::io::ErrorKind::InvalidData`] for malformed PEM, no certificate, or a
    /// certificate that is not a usable trust anchor.
    #[cfg(feature = "tls")]
    pub fn with_certificate_authority_pem(mut self, bundle: &[u8]) -> std::io::Result<Self> {
        self.tls = self.tls.with_certificate_authority_pem(bundle)?;
        self.scheme = "https".into();
        Ok(self)
    }

    /// [`with_certificate_authority_pem`](Self::with_certificate_authority_pem) read from a
    /// file.
    ///
    /// Errors: the file cannot be read, or as
    /// [`with_certificate_authority_pem`](Self::with_certificate_authority_pem).
    #[cfg(feature = "tls")]
    pub fn with_certificate_authority_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> std::io::Result<Self> {
        let bundle = tls::read(path.as_ref(), "kubelet certificate authority")?;
        self.with_certificate_authority_pem(&bundle)
    }

    /// The user the token authenticates as: [`KUBELET_CLIENT_USER`] in `system:masters`.
    pub fn user() -> UserInfo {
        UserInfo::new(KUBELET_CLIENT_USER, [SUPERUSER_GROUP])
    }

    /// The authenticator that knows the token (none without one). `ApiServerOptions` adds
    /// it to its chain by itself; this is for servers assembled layer by layer.
    pub fn authenticator(&self) -> Option<StaticTokens> {
        self.token
            .as_ref()
            .map(|token| StaticTokens::new().with(token.clone(), Self::user()))
    }
}

/// Why a kubelet could not be reached. Each variant's text is kube-apiserver's.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The Node could not be read (404 when it does not exist).
    #[error(transparent)]
    Api(#[from] capstan_api::Error),
    /// The Node has no address of a preferred type.
    #[error("no preferred addresses found; known addresses: [{}]", .known.join(" "))]
    NoAddress {
        /// The Node's addresses as Go prints them, `{InternalIP 10.0.0.1}`.
        known: Vec<String>,
    },
    /// The configured scheme is not one this build dials.
    #[error("unsupported kubelet scheme {scheme:?}")]
    Scheme {
        /// The scheme.
        scheme: String,
    },
    /// Dialling failed: `dial tcp <address>: <reason>`.
    #[error("dial tcp {address}: {reason}")]
    Dial {
        /// `host:port`.
        address: String,
        /// Go's words: `connect: connection refused`, `i/o timeout`, ...
        reason: String,
    },
    /// The kubelet's HTTP exchange failed after the connection was made.
    #[error("{message}")]
    Exchange {
        /// What failed.
        message: String,
    },
}

impl KubeletError {
    /// Go's `net/http` client error around this one: `Get "<url>": <error>`.
    pub fn for_request(&self, method: &str, url: &str) -> String {
        let mut method = method.to_ascii_lowercase();
        if let Some(first) = method.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        format!("{method} {url:?}: {self}")
    }
}

/// Where one Node's kubelet listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletLocation {
    /// `http` or `https`.
    pub scheme: String,
    /// The chosen address (an IP or a host name).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl KubeletLocation {
    /// `host:port`, with an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The absolute URL of `path_and_query` on this kubelet.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{path_and_query}", self.scheme, self.authority())
    }
}

/// Reaches kubelets as a [`KubeletClientConfig`] says. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct KubeletClient {
    config: Arc<KubeletClientConfig>,
}

impl KubeletClient {
    /// A client with `config`.
    pub fn new(config: KubeletClientConfig) -> Self {
        KubeletClient {
            config: Arc::new(config),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &KubeletClientConfig {
        &self.config
    }

    /// Where `node`'s kubelet listens: its first address of a preferred type, and the port
    /// of `status.daemonEndpoints.kubeletEndpoint` (else the default port).
    ///
    /// Errors: [`KubeletError::NoAddress`].
    pub fn location(&self, node: &Node) -> Result<KubeletLocation, KubeletError> {
        let status = node.status.as_ref();
        let addresses = status
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        let host = self
            .config
            .preferred_address_types
            .iter()
            .find_map(|wanted| {
                addresses
                    .iter()
                    .find(|a| &a.type_ == wanted && !a.address.is_empty())
            })
            .map(|a| a.address.clone())
            .ok_or_else(|| KubeletError::NoAddress {
                known: addresses
                    .iter()
                    .map(|a| format!("{{{} {}}}", a.type_, a.address))
                    .collect(),
            })?;
        let port = status
            .and_then(|s| s.daemon_endpoints.as_ref())
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port)
            .filter(|port| *port > 0)
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or(self.config.default_port);
        Ok(KubeletLocation {
            scheme: self.config.scheme.clone(),
            host,
            port,
        })
    }

    /// Reads Node `name` through `client` and returns its kubelet's location.
    ///
    /// Errors: [`KubeletError::Api`] (404 `nodes "n" not found`), [`KubeletError::NoAddress`].
    pub async fn node_location(
        &self,
        client: Arc<dyn Client>,
        name: &str,
    ) -> Result<KubeletLocation, KubeletError> {
        let node = Api::<Node>::cluster(client).get(name).await?;
        self.location(&node)
    }

    /// Sends `request` (origin-form URI: path and query) to the kubelet at `location` on a
    /// new connection, with the `Host` header and the configured bearer token set (replacing
    /// any `Authorization` the request carried). The connection serves upgrades: on a 101
    /// answer, `hyper::upgrade::on` the response to get the stream.
    ///
    /// Errors: [`KubeletError::Scheme`], [`KubeletError::Dial`] (refused, unreachable or
    /// past the connect timeout), [`KubeletError::Exchange`] (the kubelet closed the
    /// connection or did not answer within the response timeout).
    pub async fn send(
        &self,
        location: &KubeletLocation,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, KubeletError> {
        self.exchange(location, request, true).await
    }

    /// As [`send`](Self::send), without the kubelet credential: for another port of the node
    /// (`nodes/{name}:{port}/proxy`), which must not see the server's kubelet token.
    ///
    /// Errors: as [`send`](Self::send).
    pub async fn send_without_credential(
        &self,
        location: &KubeletLocation,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, KubeletError> {
        self.exchange(location, request, false).await
    }

    /// Connects to the kubelet at `location`, through the configured dialer if any.
    async fn dial(&self, location: &KubeletLocation) -> std::io::Result<tokio::net::TcpStream> {
        match &self.config.dialer {
            Some(dialer) => dialer(location.host.clone(), location.port).await,
            None => tokio::net::TcpStream::connect((location.host.as_str(), location.port)).await,
        }
    }

    async fn exchange(
        &self,
        location: &KubeletLocation,
        mut request: Request<Body>,
        credential: bool,
    ) -> Result<Response<Incoming>, KubeletError> {
        let https = match location.scheme.as_str() {
            "http" => false,
            #[cfg(feature = "tls")]
            "https" => true,
            _ => {
                return Err(KubeletError::Scheme {
                    scheme: location.scheme.clone(),
                })
            }
        };
        let authority = location.authority();
        let stream =
            match tokio::time::timeout(self.config.connect_timeout, self.dial(location)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    return Err(KubeletError::Dial {
                        address: authority,
                        reason: dial_reason(&error),
                    })
                }
                Err(_) => {
                    return Err(KubeletError::Dial {
                        address: authority,
                        reason: "i/o timeout".into(),
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        let mut sender = if https {
            #[cfg(feature = "tls")]
            {
                let stream = self
                    .config
                    .tls
                    .connect(location, stream, self.config.connect_timeout)
                    .await?;
                http1(stream).await?
            }
            #[cfg(not(feature = "tls"))]
            unreachable!("https is refused above without the tls feature")
        } else {
            http1(stream).await?
        };
        let headers = request.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&authority) {
            headers.insert(header::HOST, host);
        }
        headers.remove(header::AUTHORIZATION);
        if let Some(token) = self.config.token.as_ref().filter(|_| credential) {
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        match tokio::time::timeout(self.config.response_timeout, sender.send_request(request)).await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(KubeletError::Exchange {
                message: exchange_reason(&error),
            }),
            Err(_) => Err(KubeletError::Exchange {
                message: "net/http: timeout awaiting response headers".into(),
            }),
        }
    }
}

/// An HTTP/1.1 connection over `stream`, driven (with upgrades) by a task of its own.
async fn http1<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Body>, KubeletError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| KubeletError::Exchange {
                message: e.to_string(),
            })?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!("kubelet connection ended: {error}");
        }
    });
    Ok(sender)
}

#[cfg(feature = "tls")]
pub use tls::KubeletClientTls;

/// TLS toward kubelets (feature `tls`).
#[cfg(feature = "tls")]
mod tls {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    use super::{KubeletError, KubeletLocation};
    use crate::pem::{certificates_from_pem, private_key_from_pem, provider, AnyServerCertificate};

    pub(super) fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading the {what} {}: {e}", path.display()),
            )
        })
    }

    fn invalid(message: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, message.into())
    }

    /// The client side of `https` to kubelets: an optional client certificate and an
    /// optional CA bundle. Built with [`KubeletClientConfig`](super::KubeletClientConfig)'s
    /// `with_client_certificate_*` and `with_certificate_authority_*`. The default presents
    /// no certificate and verifies none. Cheap to clone; the key is never printed.
    #[derive(Clone, Default)]
    pub struct KubeletClientTls {
        identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
        roots: Vec<CertificateDer<'static>>,
    }

    impl std::fmt::Debug for KubeletClientTls {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("KubeletClientTls")
                .field("client_certificate", &self.identity.is_some())
                .field("certificate_authorities", &self.roots.len())
                .finish()
        }
    }

    impl KubeletClientTls {
        /// Presents `certificate` (PEM chain, leaf first) with `key` (PEM).
        ///
        /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, no key,
        /// or a key that rustls cannot use with the certificate.
        pub fn with_client_certificate_pem(
            mut self,
            certificate: &[u8],
            key: &[u8],
        ) -> io::Result<Self> {
            let chain = certificates_from_pem(certificate, "kubelet client certificate")?;
            let key = private_key_from_pem(key, "kubelet client key")?;
            self.identity = Some((chain, Arc::new(key)));
            self.client_config()?;
            Ok(self)
        }

        /// Verifies kubelets' serving certificates against `bundle` (PEM).
        ///
        /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, or one
        /// that is not a usable trust anchor.
        pub fn with_certificate_authority_pem(mut self, bundle: &[u8]) -> io::Result<Self> {
            self.roots = certificates_from_pem(bundle, "kubelet certificate authority")?;
            self.client_config()?;
            Ok(self)
        }

        /// Whether a client certificate is presented.
        pub fn has_client_certificate(&self) -> bool {
            self.identity.is_some()
        }

        /// Whether kubelets' serving certificates are verified (a CA is set).
        pub fn verifies_kubelets(&self) -> bool {
            !self.roots.is_empty()
        }

        /// TLS 1.2 and 1.3 on `ring`, ALPN `http/1.1` (the exchange is HTTP/1.1, so that
        /// upgrades work).
        fn client_config(&self) -> io::Result<rustls::ClientConfig> {
            let provider = provider();
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?;
            let builder = if self.roots.is_empty() {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
            } else {
                let mut roots = rustls::RootCertStore::empty();
                for root in &self.roots {
                    roots.add(root.clone()).map_err(|e| {
                        invalid(format!("a kubelet certificate authority is unusable: {e}"))
                    })?;
                }
                builder.with_root_certificates(roots)
            };
            let mut config = match &self.identity {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| {
                        invalid(format!(
                            "the kubelet client certificate or key is unusable: {e}"
                        ))
                    })?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(config)
        }

        /// The TLS handshake on `stream` with the kubelet at `location`, within `timeout`.
        ///
        /// Errors: [`KubeletError::Exchange`] with Go's words (`tls: ...`,
        /// `net/http: TLS handshake timeout`).
        pub(super) async fn connect(
            &self,
            location: &KubeletLocation,
            stream: tokio::net::TcpStream,
            timeout: Duration,
        ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, KubeletError> {
            let exchange = |message: String| KubeletError::Exchange { message };
            let config = self.client_config().map_err(|e| exchange(e.to_string()))?;
            let name = ServerName::try_from(location.host.clone()).map_err(|e| {
                exchange(format!("tls: invalid server name {:?}: {e}", location.host))
            })?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(error)) => Err(exchange(tls_reason(&error))),
                Err(_) => Err(exchange("net/http: TLS handshake timeout".into())),
            }
        }
    }

    /// Go's words for a failed handshake, where they are known.
    fn tls_reason(error: &io::Error) -> String {
        let unknown_issuer = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                )
            });
        if unknown_issuer {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into()
        } else {
            format!("tls: {error}")
        }
    }
}

/// Go's words for a failed dial.
fn dial_reason(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        ErrorKind::TimedOut => "i/o timeout".into(),
        ErrorKind::HostUnreachable => "connect: no route to host".into(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".into(),
        ErrorKind::AddrNotAvailable => "connect: cannot assign requested address".into(),
        _ => error.to_string(),
    }
}

/// Go's words for a kubelet closing the connection before answering.
fn exchange_reason(error: &hyper::Error) -> String {
    if error.is_incomplete_message() || error.is_canceled() {
        "EOF".into()
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{
        DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus,
    };

    fn node(addresses: &[(&str, &str)], port: Option<i32>) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: type_.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                daemon_endpoints: port.map(|port| NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_preferred_address_type_wins_whatever_the_order_of_addresses() {
        let client = KubeletClient::default();
        let location = client
            .location(&node(
                &[
                    ("Hostname", "n1"),
                    ("ExternalIP", "1.2.3.4"),
                    ("InternalIP", "10.0.0.7"),
                ],
                Some(10300),
            ))
            .unwrap();
        assert_eq!(location.authority(), "10.0.0.7:10300");
        assert_eq!(
            location.url("/stats/summary"),
            "http://10.0.0.7:10300/stats/summary"
        );
        let external = client
            .location(&node(
                &[("Hostname", "n1"), ("ExternalIP", "1.2.3.4")],
                None,
            ))
            .unwrap();
        assert_eq!(external.authority(), "1.2.3.4:10250");
    }

    #[test]
    fn a_node_without_a_preferred_address_is_an_error_naming_what_it_has() {
        let client = KubeletClient::new(KubeletClientConfig {
            preferred_address_types: vec!["InternalIP".into()],
            ..Default::default()
        });
        let error = client
            .location(&node(
                &[("Hostname", "n1"), ("InternalDNS", "n1.local")],
                None,
            ))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no preferred addresses found; known addresses: [{Hostname n1} {InternalDNS n1.local}]"
        );
    }

    #[test]
    fn ipv6_authorities_are_bracketed() {
        let location = KubeletClient::default()
            .location(&node(&[("InternalIP", "fd00::5")], Some(1)))
            .unwrap();
        assert_eq!(location.authority(), "[fd00::5]:1");
    }

    #[test]
    fn request_errors_read_like_go_clients() {
        let error = KubeletError::Dial {
            address: "127.0.0.1:1".into(),
            reason: "connect: connection refused".into(),
        };
        assert_eq!(
            error.for_request("GET", "http://127.0.0.1:1/pods"),
            r#"Get "http://127.0.0.1:1/pods": dial tcp 127.0.0.1:1: connect: connection refused"#
        );
    }

    #[test]
    fn the_token_authenticates_as_the_kubelet_client_user() {
        assert!(KubeletClientConfig::default().authenticator().is_none());
        let generated = KubeletClientConfig::with_generated_token().token.unwrap();
        assert_eq!(generated.len(), 64);
        assert_ne!(
            Some(generated),
            KubeletClientConfig::with_generated_token().token
        );
        let tokens = KubeletClientConfig::with_token("s3cret")
            .authenticator()
            .unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(KubeletClientConfig::user().name, KUBELET_CLIENT_USER);
        assert_eq!(KubeletClientConfig::user().groups, [SUPERUSER_GROUP]);
        let debug = format!("{:?}", KubeletClientConfig::with_token("s3cret"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
