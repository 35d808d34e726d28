//! Issuing a certificate for a PKCS#10 request with the cluster CA: the signers' rules and the
//! certificate itself.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber, SigningKey as _,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::pem::{certificates_from_pem, provider};

/// Kubernetes' signer of client certificates for the API server.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Kubernetes' signer of kubelets' client certificates for the API server.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long an issued certificate is valid when the request names no
/// `spec.expirationSeconds`, and at most (kube-controller-manager's
/// `--cluster-signing-duration` default).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How far before now an issued certificate starts being valid, for clocks running behind
/// (Kubernetes' signer backdates by five minutes).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The usages the client signers issue.
const CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// Why a signing CA could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningCaError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The certificate or key is not usable: not PEM, not a CA, not the certificate's key.
    #[error("the signing CA is unusable: {0}")]
    Invalid(String),
}

/// Why a request was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request breaks the signer's rules or cannot be read; it will never be signed
    /// (Kubernetes sets the `Failed` condition, reason `SignerValidationFailure`).
    #[error("{0}")]
    Refused(String),
    /// The certificate could not be built or signed.
    #[error("signing the certificate: {0}")]
    Signing(#[from] rcgen::Error),
}

/// A CA that signs requests (kube-controller-manager's `--cluster-signing-cert-file` and
/// `--cluster-signing-key-file`): its certificate and its private key (PKCS#8).
///
/// Cheap to clone; the key is shared and never printed.
#[derive(Clone)]
pub struct SigningCa {
    inner: Arc<Inner>,
}

struct Inner {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    /// The CA's notAfter, in seconds since the epoch.
    not_after: i64,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa")
            .field("not_after", &self.inner.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SigningCa {
    /// The CA of `cert` (PEM, the first certificate is the CA) and `key` (PEM, PKCS#8).
    ///
    /// Errors: [`SigningCaError::Invalid`] for malformed PEM, a certificate that is not a CA,
    /// or a key that is not the certificate's.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, SigningCaError> {
        let invalid = |reason: String| SigningCaError::Invalid(reason);
        let der = certificates_from_pem(cert, "signing CA certificate")
            .map_err(|e| invalid(e.to_string()))?
            .remove(0);
        let key_pem = std::str::from_utf8(key)
            .map_err(|_| invalid("the signing CA key is not PEM".into()))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(format!("the key is not a PKCS#8 key that can sign: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(invalid("the certificate is not a CA".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(invalid("the key is not the CA certificate's".into()));
        }
        let not_after = parsed.validity().not_after.timestamp();
        let cert_pem = pem("CERTIFICATE", &der);
        Ok(SigningCa {
            inner: Arc::new(Inner {
                cert_pem,
                cert_der: der.to_vec(),
                key,
                not_after,
            }),
        })
    }

    /// [`from_pem`](Self::from_pem) with the PEM read from files.
    ///
    /// Errors: [`SigningCaError::Io`], or as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, SigningCaError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| SigningCaError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?)
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.inner.cert_pem
    }

    /// When the CA expires, in seconds since the epoch.
    pub fn not_after(&self) -> i64 {
        self.inner.not_after
    }

    /// A certificate (PEM) for the PKCS#10 request `request_der` under `signer_name`, with
    /// `usages` (Kubernetes' names), valid from five minutes before `now` for `expiration`
    /// (default and at most [`DEFAULT_VALIDITY`]), never past the CA. Subject, subject
    /// alternative names and public key are the request's, byte for byte.
    ///
    /// Errors: [`SignError::Refused`] when the request breaks the signer's rules (see
    /// [`check_request`]) or its signature does not verify; [`SignError::Signing`].
    pub fn sign(
        &self,
        signer_name: &str,
        request_der: &[u8],
        usages: &[&str],
        expiration: Option<Duration>,
        now: SystemTime,
    ) -> Result<String, SignError> {
        let (_, request) = X509CertificationRequest::from_der(request_der)
            .map_err(|e| SignError::Refused(format!("unable to parse csr: {e}")))?;
        request
            .verify_signature()
            .map_err(|_| SignError::Refused("the request's signature is invalid".into()))?;
        let names = subject_alt_names(&request)?;
        check_request(signer_name, &request, &names, usages)?;

        let info = &request.certification_request_info;
        let mut params = CertificateParams::default();
        // A placeholder subject and key, replaced by the request's own bytes below.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "placeholder");
        params.subject_alt_names = names;
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = usages.iter().filter_map(|u| key_usage(u)).collect();
        params.extended_key_usages = usages
            .iter()
            .filter_map(|u| extended_key_usage(u))
            .collect();
        let validity = expiration.unwrap_or(DEFAULT_VALIDITY).min(DEFAULT_VALIDITY);
        let not_after = unix_seconds(now + validity).min(self.inner.not_after);
        set_validity(&mut params, unix_seconds(now - BACKDATE), not_after);
        params.serial_number = Some(random_serial()?);
        let issuer =
            Issuer::from_ca_cert_der(&self.inner.cert_der.as_slice().into(), &self.inner.key)?;
        let template = params.signed_by(&self.inner.key, &issuer)?;
        let der = replace_subject_and_key(
            template.der(),
            info.subject.as_raw(),
            info.subject_pki.raw,
            &self.inner.key,
        )?;
        Ok(pem("CERTIFICATE", &der))
    }
}

/// The signer's rules for a request, as Kubernetes' csrsigning controller checks them:
///
/// - [`KUBE_APISERVER_CLIENT`]: usages among `digital signature`, `key encipherment` and
///   `client auth`, with `client auth`.
/// - [`KUBE_APISERVER_CLIENT_KUBELET`]: the same usages; the subject's organization is
///   exactly `system:nodes`, its common name starts with `system:node:`, and there are no
///   subject alternative names.
///
/// Errors: [`SignError::Refused`] naming the broken rule, or for any other signer.
pub fn check_request(
    signer_name: &str,
    request: &X509CertificationRequest<'_>,
    names: &[SanType],
    usages: &[&str],
) -> Result<(), SignError> {
    if signer_name != KUBE_APISERVER_CLIENT && signer_name != KUBE_APISERVER_CLIENT_KUBELET {
        return Err(SignError::Refused(format!(
            "{signer_name} is not a signer of this server"
        )));
    }
    if let Some(usage) = usages.iter().find(|u| !CLIENT_USAGES.contains(u)) {
        return Err(SignError::Refused(format!(
            "invalid usage for client certificate: {usage}"
        )));
    }
    if !usages.contains(&"client auth") {
        return Err(SignError::Refused(
            "missing required usages: client auth".into(),
        ));
    }
    if signer_name == KUBE_APISERVER_CLIENT_KUBELET {
        let subject = &request.certification_request_info.subject;
        let organizations: Vec<&str> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .collect();
        if organizations != ["system:nodes"] {
            return Err(SignError::Refused(
                "subject organization is not system:nodes".into(),
            ));
        }
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default();
        if !common_name.starts_with("system:node:") {
            return Err(SignError::Refused(
                "subject common name does not begin with system:node:".into(),
            ));
        }
        if !names.is_empty() {
            return Err(SignError::Refused(
                "DNS, email, IP or URI subjectAltNames are not allowed".into(),
            ));
        }
    }
    Ok(())
}

/// The DNS, IP, email and URI subject alternative names the request asks for.
fn subject_alt_names(request: &X509CertificationRequest<'_>) -> Result<Vec<SanType>, SignError> {
    let refused = |e: rcgen::Error| SignError::Refused(format!("invalid subjectAltName: {e}"));
    let mut names = Vec::new();
    for extension in request.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = extension else {
            continue;
        };
        for name in &san.general_names {
            names.push(match name {
                GeneralName::DNSName(dns) => SanType::DnsName((*dns).try_into().map_err(refused)?),
                GeneralName::RFC822Name(email) => {
                    SanType::Rfc822Name((*email).try_into().map_err(refused)?)
                }
                GeneralName::URI(uri) => SanType::URI((*uri).try_into().map_err(refused)?),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => SanType::IpAddress(IpAddr::from(
                        <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                    )),
                    16 => SanType::IpAddress(IpAddr::from(
                        <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                    )),
                    _ => return Err(SignError::Refused("invalid IP subjectAltName".into())),
                },
                _ => continue,
            });
        }
    }
    Ok(names)
}

fn key_usage(usage: &str) -> Option<KeyUsagePurpose> {
    Some(match usage {
        "digital signature" => KeyUsagePurpose::DigitalSignature,
        "key encipherment" => KeyUsagePurpose::KeyEncipherment,
        _ => return None,
    })
}

fn extended_key_usage(usage: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match usage {
        "client auth" => ExtendedKeyUsagePurpose::ClientAuth,
        _ => return None,
    })
}

/// `template` (a certificate DER) with its subject and subject public key info replaced by
/// `subject` and `spki` (DER), signed again with `key`.
///
/// rcgen keeps one attribute per type in a name, so the request's subject (several
/// organizations are several groups) and its key (any algorithm) are copied as they are.
fn replace_subject_and_key(
    template: &[u8],
    subject: &[u8],
    spki: &[u8],
    key: &KeyPair,
) -> Result<Vec<u8>, SignError> {
    let malformed = || SignError::Signing(rcgen::Error::CouldNotParseCertificate);
    let (certificate, _) = der_element(template).ok_or_else(malformed)?;
    let mut parts = der_children(certificate.content).ok_or_else(malformed)?;
    let [tbs, algorithm, _signature] = parts.as_mut_slice() else {
        return Err(malformed());
    };
    let (tbs, _) = der_element(tbs).ok_or_else(malformed)?;
    let mut fields = der_children(tbs.content).ok_or_else(malformed)?;
    // version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if fields.len() < 7 {
        return Err(malformed());
    }
    fields[5] = subject;
    fields[6] = spki;
    let tbs = der_sequence(&fields.concat());
    let signature = key.sign(&tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&signature);
    let bit_string = der_tlv(0x03, &bits);
    Ok(der_sequence(
        &[tbs.as_slice(), algorithm, &bit_string].concat(),
    ))
}

/// One DER element: its content, and the whole element's bytes.
struct Element<'a> {
    whole: &'a [u8],
    content: &'a [u8],
}

/// The first DER element of `input` (single-byte tags, definite lengths) and what follows.
fn der_element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Element {
            whole: &input[..header + length],
            content: &rest[..length],
        },
        &rest[length..],
    ))
}

/// The whole bytes of each element of `content`, in order.
fn der_children(mut content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut children = Vec::new();
    while !content.is_empty() {
        let (element, rest) = der_element(content)?;
        children.push(element.whole);
        content = rest;
    }
    Some(children)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = content.len();
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    der_tlv(0x30, content)
}

/// `der` as a PEM block of type `label`.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A positive 128-bit serial number from the system's secure random number generator.
fn random_serial() -> Result<SerialNumber, SignError> {
    let mut bytes = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| SignError::Signing(rcgen::Error::RingUnspecified))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Sets the validity of `params` from seconds since the epoch.
fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |seconds: i64| epoch + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    params.not_before = at(not_before);
    params.not_after = at(not_after);
}

#[cfg(test)]
pub(super) mod tests_support {
    /// A DER element of `tag` holding `content`.
    pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        super::der_tlv(tag, content)
    }

    /// The content of the first DER element of `input`, and what follows.
    pub(crate) fn element(input: &[u8]) -> Option<(&[u8], &[u8])> {
        super::der_element(input).map(|(e, rest)| (e.content, rest))
    }
}
