//! The kubelet's API over HTTPS (feature `tls`), as the kubelet serves it on 10250.
//!
//! [`KubeletTls`] says which serving certificate to use and which CA signs client
//! certificates:
//!
//! - [`KubeletTls::from_pem`] / [`KubeletTls::from_pem_files`]: a given certificate chain and
//!   key (`--tls-cert-file`, `--tls-private-key-file`).
//! - [`KubeletTls::self_signed`]: none given, so one is made when the server starts, as the
//!   kubelet does: a CA `<node>-ca@<time>` and a certificate `<node>@<time>` signed by it
//!   (chain: certificate, then CA), valid one year, for the node's name and its addresses.
//!   [`KubeletTls::self_signed_in`] keeps them as `kubelet.crt` and `kubelet.key` in a
//!   directory (`--cert-dir`) and reuses them on the next start when both can be read.
//! - [`KubeletTls::with_client_ca_pem`] / [`KubeletTls::with_client_ca_file`]
//!   (`--client-ca-file`): client certificates are requested, and one that chains to the
//!   bundle authenticates its connection's requests ([`auth::x509`](super::auth::X509Authenticator):
//!   CN = user, O = groups), before any bearer token. Without a client CA, no certificate is
//!   requested and only bearer tokens authenticate.
//!
//! Authorization stays the configured [`KubeletAuthorizer`](super::auth::KubeletAuthorizer)
//! (`SubjectAccessReview` by default) for both kinds of credential, and there is no anonymous
//! access. The TLS handshake must complete within [`HANDSHAKE_TIMEOUT`]; a plain-HTTP
//! request is answered `400` with Go's `Client sent an HTTP request to an HTTPS server.`
//! Connections speak HTTP/1.1 (or HTTP/2 when the client offers it in
//! ALPN); exec, attach and port-forward upgrade over the TLS stream.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use super::auth::x509::CertificateUser;
use super::auth::X509Authenticator;

/// How long a client has for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the self-signed certificate (and its CA) are valid, as the kubelet's.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back the self-signed certificate's validity starts (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);

/// The rustls crypto provider of the kubelet's TLS: `ring`, whatever the process default.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates its ring provider (no post-quantum key exchange); ring is
    // kept so that the default build needs only a C compiler, not aws-lc's CMake.
    Arc::new(rustls::crypto::ring::default_provider())
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

fn certificates(pem: &[u8], what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the {what} is not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid(format!("the {what} holds no PEM CERTIFICATE")));
    }
    Ok(certificates)
}

fn private_key(pem: &[u8], what: &str) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            invalid(format!("the {what} holds no PEM private key"))
        }
        e => invalid(format!("the {what} is not valid PEM: {e}")),
    })
}

/// Where the serving certificate comes from.
#[derive(Clone)]
enum Serving {
    /// Given: a chain (leaf first) and its key.
    Given {
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
    },
    /// Generated at start, and kept in the directory if there is one.
    SelfSigned { cert_dir: Option<PathBuf> },
}

/// The kubelet API's TLS: a serving certificate (given or self-signed) and optionally the CA
/// bundle of client certificates. Set with
/// [`KubeletConfig::server_tls`](crate::KubeletConfig::server_tls). Cheap to clone; the key
/// is never printed.
#[derive(Clone)]
pub struct KubeletTls {
    serving: Serving,
    client_ca: Option<X509Authenticator>,
}

impl std::fmt::Debug for KubeletTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serving = match &self.serving {
            Serving::Given { chain, .. } => format!("given ({} certificates)", chain.len()),
            Serving::SelfSigned { cert_dir } => format!("self-signed ({cert_dir:?})"),
        };
        f.debug_struct("KubeletTls")
            .field("serving", &serving)
            .field("client_ca", &self.client_ca.is_some())
            .finish()
    }
}

impl KubeletTls {
    /// A serving certificate made when the server starts, for the node's name and addresses,
    /// kept in memory only. No client CA.
    pub fn self_signed() -> Self {
        KubeletTls {
            serving: Serving::SelfSigned { cert_dir: None },
            client_ca: None,
        }
    }

    /// As [`self_signed`](Self::self_signed), kept as `kubelet.crt` and `kubelet.key` in
    /// `cert_dir` (created if missing) and reused from there when both files can be read
    /// (the kubelet's `--cert-dir`).
    pub fn self_signed_in(cert_dir: impl Into<PathBuf>) -> Self {
        KubeletTls {
            serving: Serving::SelfSigned {
                cert_dir: Some(cert_dir.into()),
            },
            client_ca: None,
        }
    }

    /// A serving certificate chain (leaf first, PEM) and its private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1). No client CA.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, no key, or a
    /// key that is not the certificate's.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let tls = KubeletTls {
            serving: Serving::Given {
                chain: certificates(cert_chain, "serving certificate")?,
                key: Arc::new(private_key(key, "serving key")?),
            },
            client_ca: None,
        };
        if let Serving::Given { chain, key } = &tls.serving {
            tls.server_config(chain.clone(), key.clone_key())?;
        }
        Ok(tls)
    }

    /// [`from_pem`](Self::from_pem) read from files (`--tls-cert-file`,
    /// `--tls-private-key-file`).
    ///
    /// Errors: a file cannot be read, or as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_pem(
            &read(cert_chain.as_ref(), "serving certificate")?,
            &read(key.as_ref(), "serving key")?,
        )
    }

    /// Requests client certificates and authenticates those that chain to a CA of `bundle`
    /// (PEM). Clients without one still authenticate with a bearer token. Replaces any
    /// earlier bundle.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM, no certificate, or a
    /// certificate that is not a usable trust anchor.
    pub fn with_client_ca_pem(mut self, bundle: &[u8]) -> io::Result<Self> {
        let bundle = certificates(bundle, "client CA bundle")?;
        self.client_ca = Some(X509Authenticator::new(&bundle).map_err(|e| invalid(e.to_string()))?);
        Ok(self)
    }

    /// [`with_client_ca_pem`](Self::with_client_ca_pem) read from a file
    /// (`--client-ca-file`).
    ///
    /// Errors: the file cannot be read, or as [`with_client_ca_pem`](Self::with_client_ca_pem).
    pub fn with_client_ca_file(self, path: impl AsRef<Path>) -> io::Result<Self> {
        let bundle = read(path.as_ref(), "client CA bundle")?;
        self.with_client_ca_pem(&bundle)
    }

    /// Whether client certificates are requested and authenticated.
    pub fn authenticates_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The serving chain and key: the given ones, or the self-signed ones for `node_name`
    /// and `hosts` (read from, or written to, the directory).
    fn serving(
        &self,
        node_name: &str,
        hosts: &[String],
    ) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        match &self.serving {
            Serving::Given { chain, key } => Ok((chain.clone(), key.clone_key())),
            Serving::SelfSigned { cert_dir: None } => {
                let (cert, key) = self_signed_pem(node_name, hosts)?;
                Ok((
                    certificates(cert.as_bytes(), "serving certificate")?,
                    private_key(key.as_bytes(), "serving key")?,
                ))
            }
            Serving::SelfSigned {
                cert_dir: Some(dir),
            } => {
                let cert_path = dir.join("kubelet.crt");
                let key_path = dir.join("kubelet.key");
                let existing = std::fs::read(&cert_path)
                    .ok()
                    .zip(std::fs::read(&key_path).ok());
                if let Some((cert, key)) = existing {
                    if let (Ok(chain), Ok(key)) = (
                        certificates(&cert, "serving certificate"),
                        private_key(&key, "serving key"),
                    ) {
                        return Ok((chain, key));
                    }
                }
                let (cert, key) = self_signed_pem(node_name, hosts)?;
                std::fs::create_dir_all(dir)?;
                std::fs::write(&cert_path, &cert)?;
                write_private(&key_path, key.as_bytes())?;
                Ok((
                    certificates(cert.as_bytes(), "serving certificate")?,
                    private_key(key.as_bytes(), "serving key")?,
                ))
            }
        }
    }

    /// The rustls configuration: TLS 1.2 and 1.3 on `ring`, ALPN `h2` and `http/1.1`, and
    /// with a client CA, client certificates requested (never required).
    fn server_config(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?;
        let builder = match &self.client_ca {
            Some(authenticator) => {
                builder.with_client_cert_verifier(authenticator.handshake_verifier())
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("the serving certificate or key is unusable: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Writes `bytes` readable by the owner only (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    io::Write::write_all(&mut options.open(path)?, bytes)
}

/// A CA and a serving certificate signed by it for `host` and `hosts` (IPs as IP SANs, the
/// rest as DNS SANs), as PEM: the chain (certificate, CA) and the certificate's key.
fn self_signed_pem(host: &str, hosts: &[String]) -> io::Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let failed = |e: rcgen::Error| invalid(format!("generating the serving certificate: {e}"));
    let now = SystemTime::now();
    let stamp = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let seconds = |time: SystemTime| {
        Duration::from_secs(
            time.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
    };
    let not_before = epoch + seconds(now - BACKDATE);
    let not_after = epoch + seconds(now + SELF_SIGNED_VALIDITY);

    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{host}@{stamp}"));
    let mut names: Vec<&str> = vec![host];
    names.extend(hosts.iter().map(String::as_str));
    let mut seen = std::collections::HashSet::new();
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        if !seen.insert(name) {
            continue;
        }
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into().map_err(failed)?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

/// What the accept loop needs: the acceptor and the client certificate authenticator.
pub(crate) struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    x509: Option<X509Authenticator>,
}

impl TlsServer {
    /// Resolves `tls` for node `node_name` with `hosts` (its addresses).
    ///
    /// Errors: generating or keeping the self-signed certificate failed, or rustls refused
    /// the material.
    pub(crate) fn new(tls: &KubeletTls, node_name: &str, hosts: &[String]) -> io::Result<Self> {
        let (chain, key) = tls.serving(node_name, hosts)?;
        let config = tls.server_config(chain, key)?;
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            x509: tls.client_ca.clone(),
        })
    }

    /// Accepts connections on `listener` and serves `app` on each, until the task is aborted.
    pub(crate) async fn serve(self, listener: tokio::net::TcpListener, app: Router) {
        let server = Arc::new(self);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "kubelet API: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(server.clone().connection(stream, app.clone()));
        }
    }

    /// One connection: the handshake, the client certificate's user, then HTTP with
    /// upgrades.
    async fn connection(self: Arc<Self>, stream: TcpStream, app: Router) {
        let _ = stream.set_nodelay(true);
        let Some(stream) = refuse_plain_http(stream).await else {
            return;
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, "kubelet API: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("kubelet API: TLS handshake timed out");
                return;
            }
        };
        let user = match (&self.x509, tls.get_ref().1.peer_certificates()) {
            (Some(x509), Some(chain)) if !chain.is_empty() => match x509.authenticate(chain) {
                Ok(user) => Some(CertificateUser(user)),
                Err(error) => {
                    tracing::debug!(%error, "kubelet API: client certificate not accepted");
                    None
                }
            },
            _ => None,
        };
        let service =
            tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                if let Some(user) = &user {
                    request.extensions_mut().insert(user.clone());
                }
                tower::ServiceExt::oneshot(app.clone(), request)
            });
        let builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let io = hyper_util::rt::TokioIo::new(tls);
        let service = hyper_util::service::TowerToHyperService::new(service);
        if let Err(error) = builder.serve_connection_with_upgrades(io, service).await {
            tracing::debug!(%error, "kubelet API: connection ended");
        }
    }
}

/// What a plain-HTTP client gets on the TLS port (Go's servers say the same).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The stream back when it starts like TLS (a handshake record); `None` when the client went
/// away, or spoke plain HTTP and was answered `400` as Go's servers answer it.
async fn refuse_plain_http(mut stream: TcpStream) -> Option<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1..)) if first[0] == 0x16 => Some(stream),
        Ok(Ok(1..)) if first[0].is_ascii_uppercase() => {
            // Best effort: the client may already be gone.
            let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.shutdown().await;
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_names_the_node_and_its_addresses_and_is_kept_in_the_cert_dir() {
        let hosts = vec!["10.0.0.7".to_string(), "node-1.example".to_string()];
        let (chain, _) = KubeletTls::self_signed().serving("node-1", &hosts).unwrap();
        assert_eq!(chain.len(), 2, "the certificate, then its CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
        let cn = leaf.subject().iter_common_name().next().unwrap();
        assert!(cn.as_str().unwrap().starts_with("node-1@"));
        let sans = leaf.subject_alternative_name().unwrap().unwrap();
        use x509_parser::extensions::GeneralName;
        let names = &sans.value.general_names;
        assert!(names.contains(&GeneralName::DNSName("node-1")), "{names:?}");
        assert!(
            names.contains(&GeneralName::DNSName("node-1.example")),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::IPAddress(&[10, 0, 0, 7])),
            "{names:?}"
        );

        let dir = std::env::temp_dir().join(format!(
            "capstan-kubelet-tls-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let kept = KubeletTls::self_signed_in(&dir);
        let (first, _) = kept.serving("node-1", &hosts).unwrap();
        let (again, _) = kept.serving("node-1", &hosts).unwrap();
        assert_eq!(first, again, "the kept certificate is reused");
        assert!(dir.join("kubelet.crt").exists() && dir.join("kubelet.key").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn given_material_is_checked_when_configured() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["node-1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls =
            KubeletTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert!(!tls.authenticates_client_certificates());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let tls = tls.with_client_ca_pem(cert.pem().as_bytes()).unwrap();
        assert!(tls.authenticates_client_certificates());
        let other = rcgen::KeyPair::generate().unwrap();
        let mismatched =
            KubeletTls::from_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
                .unwrap_err();
        assert_eq!(mismatched.kind(), io::ErrorKind::InvalidData);
        let missing =
            KubeletTls::from_pem_files("/nonexistent/crt", "/nonexistent/key").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(KubeletTls::self_signed()
            .with_client_ca_pem(b"not pem")
            .is_err());
    }
}
