//! HTTPS for the remote client (feature `tls`): a connector for hyper-util's client that
//! speaks plain TCP to `http` URLs and rustls (on `ring`) to `https` ones, trusting the CAs it
//! is given (never the system's) and presenting a client certificate when it has one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use capstan_api::{Error, Result};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Service;

use super::CONNECT_TIMEOUT;
use crate::pem::{certificates_from_pem, private_key_from_pem, provider, AnyServerCertificate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the client trusts the server and proves who it is.
#[derive(Clone, Default)]
pub(super) struct Settings {
    /// The CAs the server's certificate must chain to.
    roots: Vec<CertificateDer<'static>>,
    /// The client certificate chain and its key.
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Accept any server certificate.
    insecure: bool,
    /// The name to verify the server's certificate for, instead of the URL's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("certificate_authorities", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .field("insecure_skip_tls_verify", &self.insecure)
            .field("tls_server_name", &self.server_name)
            .finish()
    }
}

fn bad(error: impl std::fmt::Display) -> Error {
    Error::bad_request(error.to_string())
}

impl Settings {
    /// Trusts the CA certificates of `pem`, replacing those trusted before.
    pub(super) fn set_certificate_authority(&mut self, pem: &[u8]) -> Result<()> {
        let roots = certificates_from_pem(pem, "certificate authority").map_err(bad)?;
        let mut store = rustls::RootCertStore::empty();
        for root in &roots {
            store
                .add(root.clone())
                .map_err(|e| bad(format!("a certificate authority is unusable: {e}")))?;
        }
        self.roots = roots;
        Ok(())
    }

    /// Presents the certificate chain of `certificate_pem` with the key of `key_pem`.
    pub(super) fn set_client_certificate(
        &mut self,
        certificate_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<()> {
        let chain = certificates_from_pem(certificate_pem, "client certificate").map_err(bad)?;
        let key = private_key_from_pem(key_pem, "client key").map_err(bad)?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(())
    }

    pub(super) fn set_insecure(&mut self, insecure: bool) {
        self.insecure = insecure;
    }

    pub(super) fn set_server_name(&mut self, name: &str) -> Result<()> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| bad(format!("invalid TLS server name {name:?}: {e}")))?;
        self.server_name = Some(name);
        Ok(())
    }

    fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS protocol versions: {e}")))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for root in &self.roots {
                roots
                    .add(root.clone())
                    .map_err(|e| bad(format!("a certificate authority is unusable: {e}")))?;
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| bad(format!("the client certificate or key is unusable: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A connector for `https` servers with these settings, and plain TCP for `http` ones.
    ///
    /// Errors: [`Error::BadRequest`] when rustls refuses the client certificate or key.
    pub(super) fn connector(&self, http: HttpConnector) -> Result<Connector> {
        let tls = Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(self.client_config()?)),
            server_name: self.server_name.clone(),
        };
        Ok(Connector {
            http,
            tls: Some(tls),
        })
    }
}

#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

/// hyper-util's connector: TCP, then TLS for `https` URLs.
#[derive(Clone)]
pub(super) struct Connector {
    http: HttpConnector,
    tls: Option<Tls>,
}

impl Connector {
    /// Plain TCP only; `https` URLs fail to connect.
    pub(super) fn plain(http: HttpConnector) -> Self {
        Connector { http, tls: None }
    }
}

/// The name to verify the server's certificate for: the URL's host (an IP address or a DNS
/// name; IPv6 without its brackets).
fn host_name(uri: &Uri) -> std::result::Result<ServerName<'static>, BoxError> {
    let host = uri.host().ok_or("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}").into())
}

impl Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            if uri.scheme_str() != Some("https") {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            }
            let tls = tls.ok_or("this client has no TLS settings for an https server")?;
            let name = match tls.server_name {
                Some(name) => name,
                None => host_name(&uri)?,
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connector.connect(name, tcp))
                .await
                .map_err(|_| format!("the TLS handshake took longer than {CONNECT_TIMEOUT:?}"))??;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection to the server: plain TCP or TLS over TCP.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
