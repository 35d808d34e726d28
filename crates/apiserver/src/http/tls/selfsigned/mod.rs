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
//! | `ca.crt`, `ca.key` | the CA (ECDSA P-256, ten years, path length 0), which also signs approved CertificateSigningRequests ([`SelfSigned::tls_config`]) |
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
//!
//! The module's files: this one holds the names, the result and in-memory generation;
//! `cert_dir.rs` the directory and what is reused from it, `ca.rs` the CA, issuing and
//! verifying serving certificates, `files.rs` reading and writing the files.

mod ca;
mod cert_dir;
mod files;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use rcgen::SanType;
use rustls_pki_types::ServerName;

use super::TlsConfig;
use crate::pem::provider;

use ca::Ca;
pub use cert_dir::CertDir;

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
    pub(super) fn server_names(&self) -> Result<Vec<ServerName<'static>>, SelfSignedError> {
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

    pub(super) fn subject_alt_names(&self) -> Result<Vec<SanType>, SelfSignedError> {
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
    /// The CA's key (PEM, PKCS#8), which signs approved CertificateSigningRequests.
    ca_key_pem: String,
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

    /// The server's TLS configuration serving this certificate (no client certificates),
    /// with the CA as its signing CA, so approved CertificateSigningRequests are signed by
    /// it (see [`crate::certificates`]).
    ///
    /// Errors: as [`TlsConfig::from_pem`] (rustls refuses the material).
    pub fn tls_config(&self) -> io::Result<TlsConfig> {
        let tls = TlsConfig::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes())?;
        Ok(tls.with_signing_ca(self.signing_ca()?))
    }

    /// The CA with its key, to sign CertificateSigningRequests.
    ///
    /// Errors: [`io::ErrorKind::InvalidData`] when the CA cannot sign (not expected of a CA
    /// this module generated or accepted).
    pub fn signing_ca(&self) -> io::Result<crate::certificates::SigningCa> {
        crate::certificates::SigningCa::from_pem(self.ca_pem.as_bytes(), self.ca_key_pem.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
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
        ca_key_pem: ca.key.serialize_pem(),
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

pub(super) fn fill_random(bytes: &mut [u8]) -> Result<(), SelfSignedError> {
    provider()
        .secure_random
        .fill(bytes)
        .map_err(|_| SelfSignedError::Random)
}

#[cfg(test)]
mod tests;
