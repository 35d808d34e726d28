//! HTTPS for the API server (feature `tls`): a serving certificate, and optionally a client CA
//! for mutual TLS, as kube-apiserver's `--tls-cert-file`, `--tls-private-key-file` and
//! `--client-ca-file`.
//!
//! [`TlsConfig`] holds the PEM material and builds the [`rustls::ServerConfig`] (TLS 1.2 and
//! 1.3 on the `ring` provider, ALPN `h2` and `http/1.1`). Give it to
//! [`ApiServerOptions::tls`](super::ApiServerOptions::tls) and
//! [`ApiServer::bind_with`](super::ApiServer::bind_with) serves HTTPS:
//!
//! - The handshake runs in the connection's own task, and the handshake plus the first bytes of
//!   the first request must arrive within the header-read timeout, so slow or silent clients
//!   cannot pin connections.
//! - With a client CA, client certificates are requested but optional, as in Kubernetes. A
//!   certificate that does not chain to the client CA (or has expired, or is not for client
//!   authentication) fails the handshake: the client sees a TLS alert, never an HTTP answer. A
//!   verified chain reaches every request of the connection as a [`PeerCertificates`]
//!   extension, which [`X509ClientCerts`](super::layers::X509ClientCerts) turns into the user.
//! - A plain-HTTP request on the TLS port is answered `400 Bad Request` in plain text and the
//!   connection is closed, as Go's servers do.
//!
//! Without certificate files, [`selfsigned`] generates a CA and a serving certificate signed by
//! it and keeps them in a directory, as kube-apiserver does in its `--cert-dir`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_apiserver::http::{tls::TlsConfig, ApiServer, ApiServerOptions};
//! use capstan_apiserver::registry::Registry;
//! use capstan_store::memory::MemoryStore;
//!
//! # async fn run() -> std::io::Result<()> {
//! let tls = TlsConfig::from_pem_files("apiserver.crt", "apiserver.key")?
//!     .with_client_ca_file("client-ca.crt")?;
//! let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let options = ApiServerOptions::default().tls(tls);
//! let server = ApiServer::bind_with(registry, "127.0.0.1:6443".parse().unwrap(), options).await?;
//! assert!(server.url().starts_with("https://"));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::pem::{certificates_from_pem, private_key_from_pem, provider};

pub mod selfsigned;

/// The protocols offered in ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client gets on the TLS port (Go's servers say the same).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The API server's TLS material: a serving certificate chain with its private key, and
/// optionally the CA bundle that client certificates must chain to.
///
/// Cheap to clone; the key is shared and never printed.
#[derive(Clone)]
pub struct TlsConfig {
    cert_chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_ca: Vec<CertificateDer<'static>>,
    /// The CA that signs approved CertificateSigningRequests, if any.
    signing_ca: Option<crate::certificates::SigningCa>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_chain", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("client_ca", &self.client_ca.len())
            .field("signing_ca", &self.signing_ca.is_some())
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading the {what} {}: {e}", path.display()),
        )
    })
}

impl TlsConfig {
    /// A serving certificate chain (leaf first, PEM `CERTIFICATE` blocks) and its private key
    /// (PEM, PKCS#8, PKCS#1 or SEC1), without client certificates.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, no key, or a
    /// key that does not belong to the leaf certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let config = TlsConfig {
            cert_chain: certificates_from_pem(cert_chain, "serving certificate")?,
            key: Arc::new(private_key_from_pem(key, "serving key")?),
            client_ca: Vec::new(),
            signing_ca: None,
        };
        config.server_config()?;
        Ok(config)
    }

    /// [`from_pem`](Self::from_pem) with the PEM read from files.
    ///
    /// Errors: a file cannot be read, or as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_pem(
            &read(cert_chain.as_ref(), "serving certificate")?,
            &read(key.as_ref(), "serving key")?,
        )
    }

    /// Requests client certificates, which must chain to one of the CA certificates in
    /// `bundle` (PEM). Clients without a certificate are still served; they authenticate some
    /// other way or are anonymous. Replaces any earlier bundle.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, or a
    /// certificate that is not a usable trust anchor.
    pub fn with_client_ca_pem(mut self, bundle: &[u8]) -> io::Result<Self> {
        self.client_ca = certificates_from_pem(bundle, "client CA bundle")?;
        self.server_config()?;
        Ok(self)
    }

    /// [`with_client_ca_pem`](Self::with_client_ca_pem) with the bundle read from a file
    /// (kube-apiserver's `--client-ca-file`).
    ///
    /// Errors: the file cannot be read, or as [`with_client_ca_pem`](Self::with_client_ca_pem).
    pub fn with_client_ca_file(self, path: impl AsRef<Path>) -> io::Result<Self> {
        let bundle = read(path.as_ref(), "client CA bundle")?;
        self.with_client_ca_pem(&bundle)
    }

    /// Whether client certificates are requested and verified (a client CA is set).
    pub fn verifies_client_certificates(&self) -> bool {
        !self.client_ca.is_empty()
    }

    /// Signs approved CertificateSigningRequests with `ca` while the server runs (see
    /// [`crate::certificates`]). Replaces any earlier signing CA.
    pub fn with_signing_ca(mut self, ca: crate::certificates::SigningCa) -> Self {
        self.signing_ca = Some(ca);
        self
    }

    /// [`with_signing_ca`](Self::with_signing_ca) with the CA certificate and its PKCS#8 key
    /// read from PEM files (kube-controller-manager's `--cluster-signing-cert-file` and
    /// `--cluster-signing-key-file`).
    ///
    /// Errors: a file cannot be read; [`io::ErrorKind::InvalidData`] when the certificate is
    /// not a CA or the key is not its own.
    pub fn with_signing_ca_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<Self> {
        use crate::certificates::{SigningCa, SigningCaError};
        let ca = SigningCa::from_pem_files(cert, key).map_err(|e| match e {
            SigningCaError::Io { path, source } => io::Error::new(
                source.kind(),
                format!("reading the signing CA {}: {source}", path.display()),
            ),
            error @ SigningCaError::Invalid(_) => invalid(error.to_string()),
        })?;
        Ok(self.with_signing_ca(ca))
    }

    /// The CA that signs approved CertificateSigningRequests, if any.
    pub fn signing_ca(&self) -> Option<&crate::certificates::SigningCa> {
        self.signing_ca.as_ref()
    }

    /// The rustls server configuration: TLS 1.2 and 1.3 on `ring`, ALPN `h2` then
    /// `http/1.1`, and with a client CA, optional client certificates verified against it.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] when rustls refuses the material.
    pub fn server_config(&self) -> io::Result<rustls::ServerConfig> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?;
        let builder = if self.client_ca.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in &self.client_ca {
                roots
                    .add(certificate.clone())
                    .map_err(|e| invalid(format!("a client CA certificate is unusable: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid(format!("the client CA bundle is unusable: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| invalid(format!("the serving certificate or key is unusable: {e}")))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The verified client certificate chain of the connection a request arrived on, leaf first.
///
/// The TLS server puts it in the extensions of every request on a connection whose client
/// presented a certificate that chained to the client CA; requests on other connections have
/// none. [`X509ClientCerts`](super::layers::X509ClientCerts) reads it. Only the server inserts
/// it, after verification, so handlers may trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificates(Arc<[CertificateDer<'static>]>);

impl PeerCertificates {
    /// A chain, leaf first. `None` when it is empty.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Option<Self> {
        (!chain.is_empty()).then(|| PeerCertificates(chain.into()))
    }

    /// The client's own certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.0[0]
    }

    /// The whole chain the client sent, leaf first (DER).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.0
    }
}

/// Serves one HTTPS connection: answers plain HTTP with 400, does the handshake, then serves
/// HTTP/1.1 or HTTP/2 with the peer's verified certificates in every request's extensions.
///
/// Everything up to the first bytes of the first request must arrive within
/// `header_read_timeout`.
pub(super) async fn connection(
    stream: TcpStream,
    app: Router,
    header_read_timeout: Duration,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let _ = stream.set_nodelay(true);
    let started = tokio::time::timeout(header_read_timeout, start(stream, acceptor)).await;
    let (stream, first, peer) = match started {
        Ok(Ok(Some(started))) => started,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!("TLS connection refused: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS connection dropped: no request within {header_read_timeout:?}");
            return;
        }
    };
    let mut extensions = axum::http::Extensions::new();
    if let Some(peer) = peer {
        extensions.insert(peer);
    }
    let io = hyper_util::rt::TokioIo::new(Replay { first, stream });
    super::serve_io(io, app, extensions, header_read_timeout).await;
}

type Started = (
    tokio_rustls::server::TlsStream<TcpStream>,
    Bytes,
    Option<PeerCertificates>,
);

/// The handshake and the first plaintext bytes. `Ok(None)`: the client went away, or spoke
/// plain HTTP and was answered.
async fn start(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
) -> io::Result<Option<Started>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            let mut stream = stream;
            // Best effort: the client may already be gone.
            let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.shutdown().await;
        }
        return Ok(None);
    }
    let mut tls = acceptor.accept(stream).await?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| PeerCertificates::new(chain.to_vec()));
    let mut buffer = vec![0u8; 4096];
    let n = tls.read(&mut buffer).await?;
    if n == 0 {
        return Ok(None);
    }
    buffer.truncate(n);
    Ok(Some((tls, Bytes::from(buffer), peer)))
}

/// A stream whose first bytes were already read: they are read again first.
struct Replay<S> {
    first: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.first.has_remaining() {
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..n]);
            this.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_serving_certificate_and_its_key_make_a_config_offering_h2_and_http1() {
        let (cert, key) = self_signed();
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(!tls.verifies_client_certificates());
        let config = tls.server_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let tls = tls.with_client_ca_pem(cert.as_bytes()).unwrap();
        assert!(tls.verifies_client_certificates());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_of_another_certificate_or_missing_pem_is_invalid_data() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let mismatched = TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert_eq!(
            mismatched.kind(),
            io::ErrorKind::InvalidData,
            "{mismatched}"
        );
        let no_key = TlsConfig::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(
            no_key.to_string().contains("no PEM private key"),
            "{no_key}"
        );
        let no_cert = TlsConfig::from_pem(b"", other_key.as_bytes()).unwrap_err();
        assert!(
            no_cert.to_string().contains("no PEM CERTIFICATE"),
            "{no_cert}"
        );
        let missing =
            TlsConfig::from_pem_files("/nonexistent/cert", "/nonexistent/key").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
