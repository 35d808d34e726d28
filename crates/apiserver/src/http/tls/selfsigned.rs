//! Self-signed serving certificates for the API server (feature `tls`), kept in a directory as
//! kube-apiserver keeps them in its `--cert-dir` when no `--tls-cert-file` is given.
//!
//! [`CertDir::load_or_generate`] makes sure the directory holds a CA and a serving certificate
//! signed by it that covers every name of a [`ServingNames`], and returns them
//! ([`SelfSigned`]): the serving chain and key for [`TlsConfig`], and the CA for kubeconfigs'
//! `certificate-authority-data`. The files, all PEM:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | the CA (ECDSA P-256, ten years, path length 0) |
//! | `apiserver.crt`, `apiserver.key` | the serving certificate then the CA (as kube-apiserver writes it), and the serving key (ECDSA P-256, one year, `serverAuth`) |
//! | `admin.token` | a random bearer token ([`CertDir::load_or_generate_token`]) |
//!
//! Keys and the token are written readable by their owner only (on Unix). What is there is
//! reused, as kube-apiserver reuses its generated pair, so a restart keeps kubeconfigs and
//! running clients valid:
//!
//! - the CA is reused while it stays valid for at least a day ([`RENEW_BEFORE`]); once it
//!   expires, a new CA and a new serving certificate replace the old ones. A CA of one's own,
//!   its key in PKCS#8, can be put there to sign the serving certificate.
//! - the serving certificate is reused while it verifies against the CA for every name asked
//!   for (as clients verify it: chain, validity, `serverAuth`, subject alternative names) and
//!   stays valid for at least a day; otherwise the kept CA signs a new one, so clients that
//!   trust the CA keep working after, say, a new listen address.
//!
//! A file that cannot be parsed, a CA certificate that is not a CA or whose key does not match,
//! a serving key that does not match, or half a pair (a certificate without its key) is an
//! error rather than replaced: the directory may hold something else than what was expected.
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use capstan_apiserver::http::tls::selfsigned::{CertDir, ServingNames};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = CertDir::new("/var/run/capstan");
//! let certs = dir.load_or_generate(&ServingNames::kubernetes(Ipv4Addr::LOCALHOST.into()))?;
//! let tls = certs.tls_config()?; // for ApiServerOptions::tls
//! let token = dir.load_or_generate_token()?;
//! // Kubeconfig::new(url).certificate_authority(certs.ca_pem()).token(token)
//! # Ok(()) }
//! ```

use std::fmt;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::TlsConfig;
use crate::pem::{certificates_from_pem, provider};

/// The CA certificate's file name in the directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key's file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// The serving certificate chain's file name (kube-apiserver's `apiserver.crt`).
pub const SERVING_CERT_FILE: &str = "apiserver.crt";
/// The serving key's file name (kube-apiserver's `apiserver.key`).
pub const SERVING_KEY_FILE: &str = "apiserver.key";
/// The generated admin token's file name.
pub const TOKEN_FILE: &str = "admin.token";

/// Certificates that expire sooner than this are replaced rather than reused.
pub const RENEW_BEFORE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long a generated serving certificate is valid (never past its CA).
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How far before now generated certificates start being valid, for clocks running behind.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The DNS names every API server certificate covers: `localhost` and the names of the
/// `kubernetes` Service in the `default` namespace of the `cluster.local` domain.
pub const KUBERNETES_DNS_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Why the self-signed material could not be read, generated or written.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// A file or the directory could not be read, written or created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `reading`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// One file of a certificate and key pair exists and the other does not. Nothing is
    /// generated over half a pair.
    #[error(
        "{present} exists but {missing} does not: a certificate and its key are kept as a pair \
         (remove {present} to have both generated)"
    )]
    IncompletePair {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// A file exists but does not hold what it should: not PEM, no certificate, not a CA, a
    /// key that is not PKCS#8 or does not belong to its certificate, an empty token.
    #[error("{path}: {reason} (remove it to have it generated)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A name asked for cannot go in a certificate (not a valid DNS name).
    #[error("{name:?} cannot be a certificate's subject alternative name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why not.
        reason: String,
    },
    /// rcgen refused to generate a key or sign a certificate.
    #[error("generating the {what}: {source}")]
    Generate {
        /// What was being generated, e.g. `serving certificate`.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// The operating system's secure random number generator failed.
    #[error("the system's secure random number generator failed")]
    Random,
    /// A certificate just generated does not verify for the names it was made for (a bug,
    /// or a clock far off).
    #[error("the generated serving certificate does not verify: {reason}")]
    Unverifiable {
        /// The verifier's error.
        reason: String,
    },
}

/// The names a serving certificate must cover: DNS names and IP addresses, in its subject
/// alternative names. Duplicates are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingNames {
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl ServingNames {
    /// No names.
    pub fn new() -> Self {
        Self::default()
    }

    /// The names kube-apiserver's certificates carry, for an API server listening on
    /// `listen`: `listen` itself unless it is unspecified (`0.0.0.0`, `::`), `127.0.0.1`,
    /// `::1` and [`KUBERNETES_DNS_NAMES`]. Add the `kubernetes` Service's ClusterIP with
    /// [`ip`](Self::ip).
    pub fn kubernetes(listen: IpAddr) -> Self {
        let mut names = Self::new();
        if !listen.is_unspecified() {
            names = names.ip(listen);
        }
        names = names
            .ip(Ipv4Addr::LOCALHOST.into())
            .ip(Ipv6Addr::LOCALHOST.into());
        for name in KUBERNETES_DNS_NAMES {
            names = names.dns_name(name);
        }
        names
    }

    /// Adds an IP address.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
        self
    }

    /// Adds a DNS name (lower-cased, as names compare without case).
    pub fn dns_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        if !self.dns_names.contains(&name) {
            self.dns_names.push(name);
        }
        self
    }

    /// The DNS names, in the order added.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The IP addresses, in the order added.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Every name as rustls verifies a server for it.
    fn server_names(&self) -> Result<Vec<ServerName<'static>>, SelfSignedError> {
        let mut names: Vec<ServerName<'static>> =
            self.ips.iter().map(|ip| ServerName::from(*ip)).collect();
        for name in &self.dns_names {
            let server_name =
                ServerName::try_from(name.clone()).map_err(|e| SelfSignedError::InvalidName {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            names.push(server_name);
        }
        Ok(names)
    }

    fn subject_alt_names(&self) -> Result<Vec<SanType>, SelfSignedError> {
        let mut sans: Vec<SanType> = self.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in &self.dns_names {
            let dns = name.clone().try_into().map_err(|e: rcgen::Error| {
                SelfSignedError::InvalidName {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            sans.push(SanType::DnsName(dns));
        }
        Ok(sans)
    }
}

/// Where [`SelfSigned`] material came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Both the CA and the serving certificate were generated now.
    Generated,
    /// The CA was reused; the serving certificate was generated now and signed by it.
    Reissued,
    /// Both were reused as they were.
    Reused,
}

/// A CA and a serving certificate signed by it, with the serving key.
#[derive(Clone)]
pub struct SelfSigned {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
    origin: Origin,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("origin", &self.origin)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SelfSigned {
    /// The CA certificate (PEM), for clients to trust (`certificate-authority-data`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The serving certificate then the CA (PEM), as served.
    pub fn cert_chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The serving certificate's private key (PEM, PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Whether it was generated, reissued or reused.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The server's TLS configuration serving this certificate (no client certificates).
    ///
    /// Errors: as [`TlsConfig::from_pem`] (rustls refuses the material).
    pub fn tls_config(&self) -> io::Result<TlsConfig> {
        TlsConfig::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

/// A CA and a serving certificate for `names`, generated in memory (nothing is written).
///
/// Errors: [`SelfSignedError::InvalidName`], [`SelfSignedError::Generate`],
/// [`SelfSignedError::Random`].
pub fn generate(names: &ServingNames) -> Result<SelfSigned, SelfSignedError> {
    let ca = Ca::generate()?;
    let (chain_pem, key_pem) = ca.issue(names)?;
    Ok(SelfSigned {
        ca_pem: ca.cert_pem,
        chain_pem,
        key_pem,
        origin: Origin::Generated,
    })
}

/// A random bearer token: 256 bits from the system's secure random number generator, in
/// unpadded URL-safe base64 (43 characters).
///
/// Errors: [`SelfSignedError::Random`].
pub fn random_token() -> Result<String, SelfSignedError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn fill_random(bytes: &mut [u8]) -> Result<(), SelfSignedError> {
    provider()
        .secure_random
        .fill(bytes)
        .map_err(|_| SelfSignedError::Random)
}

/// The directory holding the self-signed material (kube-apiserver's `--cert-dir`); see the
/// [module](self) documentation for its files and when they are reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// The directory `dir` (created when something is first written to it).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of `file` in the directory, e.g. [`CA_CERT_FILE`].
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA and a serving certificate covering `names`: reused from the directory when they
    /// fit, else generated (or, with a kept CA, reissued) and written there. See the
    /// [module](self) documentation.
    ///
    /// Errors: [`SelfSignedError::Io`] (the directory cannot be read or written),
    /// [`SelfSignedError::IncompletePair`], [`SelfSignedError::Invalid`] (a file there cannot
    /// be used and is left alone), and those of [`generate`].
    pub fn load_or_generate(&self, names: &ServingNames) -> Result<SelfSigned, SelfSignedError> {
        let server_names = names.server_names()?;
        let ca_files = (self.file(CA_CERT_FILE), self.file(CA_KEY_FILE));
        let serving_files = (self.file(SERVING_CERT_FILE), self.file(SERVING_KEY_FILE));
        let kept_ca = match read_pair(&ca_files.0, &ca_files.1)? {
            Some((cert, key)) => {
                let ca = Ca::load(&ca_files.0, cert, &ca_files.1, key)?;
                if ca.fits() {
                    Some(ca)
                } else {
                    tracing::info!(
                        ca = %ca_files.0.display(),
                        "the CA expires soon or has expired; generating a new one"
                    );
                    None
                }
            }
            None => None,
        };
        // Read before anything is written, so half a serving pair is refused either way.
        let kept_serving = read_pair(&serving_files.0, &serving_files.1)?;
        let ca_reused = kept_ca.is_some();
        let ca = match kept_ca {
            Some(ca) => ca,
            None => {
                let ca = Ca::generate()?;
                self.create_dir()?;
                write_file(&ca_files.1, ca.key.serialize_pem().as_bytes(), true)?;
                write_file(&ca_files.0, ca.cert_pem.as_bytes(), false)?;
                ca
            }
        };
        if ca_reused {
            if let Some((chain, key)) = kept_serving {
                let chain = utf8(&serving_files.0, chain)?;
                let key = utf8(&serving_files.1, key)?;
                TlsConfig::from_pem(chain.as_bytes(), key.as_bytes()).map_err(|e| {
                    SelfSignedError::Invalid {
                        path: serving_files.0.clone(),
                        reason: e.to_string(),
                    }
                })?;
                match serving_fits(&ca, &serving_files.0, chain.as_bytes(), &server_names)? {
                    Ok(()) => {
                        return Ok(SelfSigned {
                            ca_pem: ca.cert_pem,
                            chain_pem: chain,
                            key_pem: key,
                            origin: Origin::Reused,
                        })
                    }
                    Err(reason) => tracing::info!(
                        certificate = %serving_files.0.display(),
                        "reissuing the serving certificate: {reason}"
                    ),
                }
            }
        }
        let (chain_pem, key_pem) = ca.issue(names)?;
        self.create_dir()?;
        write_file(&serving_files.1, key_pem.as_bytes(), true)?;
        write_file(&serving_files.0, chain_pem.as_bytes(), false)?;
        Ok(SelfSigned {
            ca_pem: ca.cert_pem,
            chain_pem,
            key_pem,
            origin: if ca_reused {
                Origin::Reissued
            } else {
                Origin::Generated
            },
        })
    }

    /// The bearer token kept in [`TOKEN_FILE`], or a [`random_token`] written there first.
    ///
    /// Errors: [`SelfSignedError::Io`], [`SelfSignedError::Invalid`] (the file holds no
    /// token), [`SelfSignedError::Random`].
    pub fn load_or_generate_token(&self) -> Result<String, SelfSignedError> {
        let path = self.file(TOKEN_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let token = utf8(&path, bytes)?.trim().to_string();
                if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(SelfSignedError::Invalid {
                        path,
                        reason: "it does not hold one token on one line".into(),
                    });
                }
                Ok(token)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = random_token()?;
                self.create_dir()?;
                write_file(&path, format!("{token}\n").as_bytes(), true)?;
                Ok(token)
            }
            Err(source) => Err(SelfSignedError::Io {
                action: "reading",
                path,
                source,
            }),
        }
    }

    fn create_dir(&self) -> Result<(), SelfSignedError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SelfSignedError::Io {
            action: "creating",
            path: self.dir.clone(),
            source,
        })
    }
}

/// A CA that can sign: its certificate (PEM and DER) and key.
struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// Seconds since the epoch.
    not_after: i64,
}

impl Ca {
    fn generate() -> Result<Ca, SelfSignedError> {
        let key = KeyPair::generate().map_err(generate_error("CA key"))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let serial = random_serial()?;
        // The serial makes the name unique: clients tell CAs apart by name first.
        let unique: String = serial.to_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name =
            common_name(format!("capstan-ca@{}-{unique}", unix_seconds(now)));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let not_after = now + CA_VALIDITY;
        set_validity(&mut params, now - BACKDATE, not_after);
        params.serial_number = Some(serial);
        let cert = params
            .self_signed(&key)
            .map_err(generate_error("CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
            not_after: unix_seconds(not_after),
        })
    }

    /// The CA of `cert` and `key`, checked: one CA certificate, and its key (PKCS#8).
    fn load(
        cert_path: &Path,
        cert: Vec<u8>,
        key_path: &Path,
        key: Vec<u8>,
    ) -> Result<Ca, SelfSignedError> {
        let invalid = |path: &Path, reason: String| SelfSignedError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let cert_pem = utf8(cert_path, cert)?;
        let key_pem = utf8(key_path, key)?;
        let der = certificates_from_pem(cert_pem.as_bytes(), "CA certificate")
            .map_err(|e| invalid(cert_path, e.to_string()))?
            .remove(0);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                key_path,
                format!("not a PKCS#8 private key rcgen can sign with: {e}"),
            )
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(cert_path, format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(invalid(
                cert_path,
                "not a CA certificate (no basicConstraints CA:TRUE)".into(),
            ));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(invalid(
                key_path,
                format!("not the key of {}", cert_path.display()),
            ));
        }
        let not_after = parsed.validity().not_after.timestamp();
        let not_before = parsed.validity().not_before.timestamp();
        if not_before > unix_seconds(SystemTime::now()) {
            return Err(invalid(cert_path, "not valid yet".into()));
        }
        Ok(Ca {
            cert_pem,
            cert_der: der,
            key,
            not_after,
        })
    }

    /// Whether it stays valid long enough to keep.
    fn fits(&self) -> bool {
        self.not_after > unix_seconds(SystemTime::now() + RENEW_BEFORE)
    }

    /// A new serving key and certificate for `names`, signed by this CA: the chain (serving
    /// certificate then CA) and the key, in PEM.
    fn issue(&self, names: &ServingNames) -> Result<(String, String), SelfSignedError> {
        let server_names = names.server_names()?;
        let key = KeyPair::generate().map_err(generate_error("serving key"))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(format!("capstan-apiserver@{}", unix_seconds(now)));
        params.subject_alt_names = names.subject_alt_names()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = unix_seconds(now + SERVING_VALIDITY).min(self.not_after);
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
        set_validity(&mut params, now - BACKDATE, not_after);
        params.serial_number = Some(random_serial()?);
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(generate_error("serving certificate's issuer"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate_error("serving certificate"))?;
        let chain_pem = format!("{}{}", cert.pem(), self.cert_pem);
        verify(&self.cert_der, chain_pem.as_bytes(), &server_names)
            .map_err(|reason| SelfSignedError::Unverifiable { reason })?;
        Ok((chain_pem, key.serialize_pem()))
    }
}

/// Whether the serving chain at `path` verifies against `ca` for every name and stays valid
/// long enough: `Ok(Err(reason))` when it does not.
fn serving_fits(
    ca: &Ca,
    path: &Path,
    chain_pem: &[u8],
    names: &[ServerName<'static>],
) -> Result<Result<(), String>, SelfSignedError> {
    let leaf = certificates_from_pem(chain_pem, "serving certificate")
        .map_err(|e| SelfSignedError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .remove(0);
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&leaf).map_err(|e| SelfSignedError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    if parsed.validity().not_after.timestamp() <= unix_seconds(SystemTime::now() + RENEW_BEFORE) {
        return Ok(Err("it expires soon or has expired".into()));
    }
    Ok(verify(&ca.cert_der, chain_pem, names))
}

/// Verifies the serving chain (PEM, leaf first) against the CA for each name, as a client
/// trusting only that CA does.
fn verify(
    ca: &CertificateDer<'static>,
    chain_pem: &[u8],
    names: &[ServerName<'static>],
) -> Result<(), String> {
    let chain =
        certificates_from_pem(chain_pem, "serving certificate").map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("the CA is unusable: {e}"))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("the CA is unusable: {e}"))?;
    for name in names {
        verifier
            .verify_server_cert(&chain[0], &chain[1..], name, &[], UnixTime::now())
            .map_err(|e| format!("not valid for {}: {e}", name.to_str()))?;
    }
    Ok(())
}

/// The bytes of a certificate file and of its key file.
type Pair = (Vec<u8>, Vec<u8>);

/// Both files of a pair, or `None` when neither exists.
fn read_pair(cert: &Path, key: &Path) -> Result<Option<Pair>, SelfSignedError> {
    match (read_if_exists(cert)?, read_if_exists(key)?) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(SelfSignedError::IncompletePair {
            present: cert.to_path_buf(),
            missing: key.to_path_buf(),
        }),
        (None, Some(_)) => Err(SelfSignedError::IncompletePair {
            present: key.to_path_buf(),
            missing: cert.to_path_buf(),
        }),
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, SelfSignedError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SelfSignedError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, SelfSignedError> {
    String::from_utf8(bytes).map_err(|_| SelfSignedError::Invalid {
        path: path.to_path_buf(),
        reason: "not text (PEM)".into(),
    })
}

/// Writes `bytes` at `path` through a temporary file renamed over it, so readers never see a
/// half-written file; `private` files are readable by their owner only (Unix).
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), SelfSignedError> {
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| SelfSignedError::Io {
            action,
            path,
            source,
        }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(&temporary)
        .map_err(io_error("writing", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error("writing", path))
}

fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> SelfSignedError {
    move |source| SelfSignedError::Generate { what, source }
}

fn common_name(name: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, SelfSignedError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Sets the validity of `params`, to the second.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = |time: SystemTime| {
        Duration::from_secs(
            time.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
    };
    params.not_before = epoch + since_epoch(not_before);
    params.not_after = epoch + since_epoch(not_after);
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let nonce = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            TempDir(std::env::temp_dir().join(format!("capstan-selfsigned-{nonce}-{n}")))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names() -> ServingNames {
        ServingNames::kubernetes("192.0.2.7".parse().unwrap()).ip("10.96.0.1".parse().unwrap())
    }

    /// Verifies `chain_pem` for `name` as a client trusting only `ca_pem` does.
    fn verify_as_client(ca_pem: &str, chain_pem: &str, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates_from_pem(ca_pem.as_bytes(), "CA").unwrap() {
            roots.add(ca).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = certificates_from_pem(chain_pem.as_bytes(), "chain").unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// The DNS names and IP addresses in the leaf's subject alternative names.
    fn sans(chain_pem: &str) -> (Vec<String>, Vec<IpAddr>) {
        let leaf = certificates_from_pem(chain_pem.as_bytes(), "chain")
            .unwrap()
            .remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push(name.to_string()),
                GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                }),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (dns, ips)
    }

    #[test]
    fn the_serving_certificate_chains_to_the_ca_for_every_name_and_only_those() {
        let certs = generate(&names()).unwrap();
        assert_eq!(certs.origin(), Origin::Generated);
        let (dns, ips) = sans(certs.cert_chain_pem());
        assert_eq!(dns, KUBERNETES_DNS_NAMES);
        let expected: Vec<IpAddr> = ["192.0.2.7", "127.0.0.1", "::1", "10.96.0.1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(ips, expected);
        for name in KUBERNETES_DNS_NAMES.iter().copied().chain([
            "192.0.2.7",
            "127.0.0.1",
            "::1",
            "10.96.0.1",
        ]) {
            verify_as_client(certs.ca_pem(), certs.cert_chain_pem(), name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other_name = verify_as_client(certs.ca_pem(), certs.cert_chain_pem(), "example.com");
        assert!(
            matches!(other_name, Err(rustls::Error::InvalidCertificate(_))),
            "{other_name:?}"
        );
        let other_ca = generate(&names()).unwrap();
        let untrusted = verify_as_client(other_ca.ca_pem(), certs.cert_chain_pem(), "localhost");
        assert!(
            matches!(
                untrusted,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{untrusted:?}"
        );

        let ca_der = certificates_from_pem(certs.ca_pem().as_bytes(), "CA")
            .unwrap()
            .remove(0);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.is_ca());
        let chain = certificates_from_pem(certs.cert_chain_pem().as_bytes(), "chain").unwrap();
        assert_eq!(chain.len(), 2, "the serving certificate, then the CA");
        assert_eq!(chain[1], ca_der);
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert!(!leaf.is_ca());
        assert!(
            leaf.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(leaf.validity().not_after.timestamp() <= ca.validity().not_after.timestamp());
        certs.tls_config().unwrap();
        assert!(!format!("{certs:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_second_start_reuses_the_files_and_new_names_reissue_with_the_kept_ca() {
        let dir = TempDir::new();
        let cert_dir = CertDir::new(dir.0.join("nested"));
        let first = cert_dir.load_or_generate(&names()).unwrap();
        assert_eq!(first.origin(), Origin::Generated);
        let files = [
            CA_CERT_FILE,
            CA_KEY_FILE,
            SERVING_CERT_FILE,
            SERVING_KEY_FILE,
        ];
        let written: Vec<Vec<u8>> = files
            .iter()
            .map(|file| std::fs::read(cert_dir.file(file)).unwrap())
            .collect();
        assert_eq!(written[0], first.ca_pem().as_bytes());
        assert_eq!(written[2], first.cert_chain_pem().as_bytes());
        assert_eq!(written[3], first.key_pem().as_bytes());
        #[cfg(unix)]
        for (file, mode) in [
            (CA_KEY_FILE, 0o600),
            (SERVING_KEY_FILE, 0o600),
            (CA_CERT_FILE, 0o644),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(cert_dir.file(file)).unwrap();
            assert_eq!(metadata.permissions().mode() & 0o777, mode, "{file}");
        }

        let second = cert_dir.load_or_generate(&names()).unwrap();
        assert_eq!(second.origin(), Origin::Reused);
        assert_eq!(second.ca_pem(), first.ca_pem());
        assert_eq!(second.cert_chain_pem(), first.cert_chain_pem());
        assert_eq!(second.key_pem(), first.key_pem());
        for (file, before) in files.iter().zip(&written) {
            assert_eq!(
                &std::fs::read(cert_dir.file(file)).unwrap(),
                before,
                "{file}"
            );
        }

        // A new listen address: the kept CA signs a new serving certificate.
        let more = names().ip("198.51.100.9".parse().unwrap());
        let third = cert_dir.load_or_generate(&more).unwrap();
        assert_eq!(third.origin(), Origin::Reissued);
        assert_eq!(third.ca_pem(), first.ca_pem());
        assert_ne!(third.cert_chain_pem(), first.cert_chain_pem());
        verify_as_client(first.ca_pem(), third.cert_chain_pem(), "198.51.100.9").unwrap();
        assert_eq!(
            std::fs::read_to_string(cert_dir.file(SERVING_CERT_FILE)).unwrap(),
            third.cert_chain_pem()
        );
        // Fewer names than the certificate has: still reused.
        let fourth = cert_dir.load_or_generate(&names()).unwrap();
        assert_eq!(fourth.origin(), Origin::Reused);
        assert_eq!(fourth.cert_chain_pem(), third.cert_chain_pem());
    }

    #[test]
    fn an_expired_ca_is_replaced_with_a_new_ca_and_serving_certificate() {
        let dir = TempDir::new();
        let cert_dir = CertDir::new(&dir.0);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = params.self_signed(&key).unwrap().pem();
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(cert_dir.file(CA_CERT_FILE), &expired).unwrap();
        std::fs::write(cert_dir.file(CA_KEY_FILE), key.serialize_pem()).unwrap();
        let certs = cert_dir.load_or_generate(&names()).unwrap();
        assert_eq!(certs.origin(), Origin::Generated);
        assert_ne!(certs.ca_pem(), expired);
        verify_as_client(
            certs.ca_pem(),
            certs.cert_chain_pem(),
            "kubernetes.default.svc",
        )
        .unwrap();
    }

    #[test]
    fn a_ca_of_ones_own_signs_the_serving_certificate() {
        let dir = TempDir::new();
        let cert_dir = CertDir::new(&dir.0);
        let own = generate(&ServingNames::new()).unwrap();
        let ca = Ca::generate().unwrap();
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(cert_dir.file(CA_CERT_FILE), &ca.cert_pem).unwrap();
        std::fs::write(cert_dir.file(CA_KEY_FILE), ca.key.serialize_pem()).unwrap();
        // A serving pair signed by another CA is reissued by this one.
        std::fs::write(cert_dir.file(SERVING_CERT_FILE), own.cert_chain_pem()).unwrap();
        std::fs::write(cert_dir.file(SERVING_KEY_FILE), own.key_pem()).unwrap();
        let certs = cert_dir.load_or_generate(&names()).unwrap();
        assert_eq!(certs.origin(), Origin::Reissued);
        assert_eq!(certs.ca_pem(), ca.cert_pem);
        verify_as_client(&ca.cert_pem, certs.cert_chain_pem(), "localhost").unwrap();
    }

    #[test]
    fn half_a_pair_or_an_unreadable_file_is_an_error_and_left_alone() {
        let dir = TempDir::new();
        let cert_dir = CertDir::new(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(cert_dir.file(CA_CERT_FILE), "not PEM").unwrap();
        let half = cert_dir.load_or_generate(&names()).unwrap_err();
        assert!(
            matches!(&half, SelfSignedError::IncompletePair { present, missing }
                if present.ends_with(CA_CERT_FILE) && missing.ends_with(CA_KEY_FILE)),
            "{half}"
        );
        std::fs::write(cert_dir.file(CA_KEY_FILE), "not PEM either").unwrap();
        let garbage = cert_dir.load_or_generate(&names()).unwrap_err();
        assert!(
            matches!(&garbage, SelfSignedError::Invalid { path, .. }
                if path.ends_with(CA_CERT_FILE)),
            "{garbage}"
        );
        assert!(garbage.to_string().contains("remove it"), "{garbage}");
        assert_eq!(
            std::fs::read_to_string(cert_dir.file(CA_CERT_FILE)).unwrap(),
            "not PEM"
        );

        // A CA whose key belongs to another certificate.
        let one = Ca::generate().unwrap();
        let other = Ca::generate().unwrap();
        std::fs::write(cert_dir.file(CA_CERT_FILE), &one.cert_pem).unwrap();
        std::fs::write(cert_dir.file(CA_KEY_FILE), other.key.serialize_pem()).unwrap();
        let mismatched = cert_dir.load_or_generate(&names()).unwrap_err();
        assert!(
            matches!(&mismatched, SelfSignedError::Invalid { path, .. }
                if path.ends_with(CA_KEY_FILE)),
            "{mismatched}"
        );

        // Half a serving pair is refused before anything is generated.
        let fresh = TempDir::new();
        let fresh_dir = CertDir::new(&fresh.0);
        std::fs::create_dir_all(&fresh.0).unwrap();
        std::fs::write(fresh_dir.file(SERVING_KEY_FILE), "a key").unwrap();
        let half = fresh_dir.load_or_generate(&names()).unwrap_err();
        assert!(
            matches!(&half, SelfSignedError::IncompletePair { missing, .. }
                if missing.ends_with(SERVING_CERT_FILE)),
            "{half}"
        );
        assert!(!fresh_dir.file(CA_CERT_FILE).exists());

        // A name that cannot be a DNS name.
        let bad = ServingNames::new().dns_name("not a name");
        assert!(matches!(
            generate(&bad).unwrap_err(),
            SelfSignedError::InvalidName { .. }
        ));
    }

    #[test]
    fn the_admin_token_is_random_generated_once_and_kept() {
        let dir = TempDir::new();
        let cert_dir = CertDir::new(&dir.0);
        let token = cert_dir.load_or_generate_token().unwrap();
        assert_eq!(token.len(), 43);
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(cert_dir.load_or_generate_token().unwrap(), token);
        assert_ne!(random_token().unwrap(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(cert_dir.file(TOKEN_FILE)).unwrap();
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(cert_dir.file(TOKEN_FILE), "\n").unwrap();
        assert!(matches!(
            cert_dir.load_or_generate_token().unwrap_err(),
            SelfSignedError::Invalid { .. }
        ));
    }
}
