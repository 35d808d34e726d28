//! The CA: generating one, loading a kept one, issuing serving certificates, and checking a
//! kept serving certificate still fits the names asked for.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::files::utf8;
use super::{
    fill_random, SelfSignedError, ServingNames, BACKDATE, CA_VALIDITY, RENEW_BEFORE,
    SERVING_VALIDITY,
};
use crate::pem::{certificates_from_pem, provider};

/// A CA that can sign: its certificate (PEM and DER) and key.
pub(super) struct Ca {
    pub(super) cert_pem: String,
    pub(super) cert_der: CertificateDer<'static>,
    pub(super) key: KeyPair,
    /// Seconds since the epoch.
    not_after: i64,
}

impl Ca {
    pub(super) fn generate() -> Result<Ca, SelfSignedError> {
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
    pub(super) fn load(
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
    pub(super) fn fits(&self) -> bool {
        self.not_after > unix_seconds(SystemTime::now() + RENEW_BEFORE)
    }

    /// A new serving key and certificate for `names`, signed by this CA: the chain (serving
    /// certificate then CA) and the key, in PEM.
    pub(super) fn issue(&self, names: &ServingNames) -> Result<(String, String), SelfSignedError> {
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
pub(super) fn serving_fits(
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
pub(super) fn verify(
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

pub(super) fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> SelfSignedError {
    move |source| SelfSignedError::Generate { what, source }
}

pub(super) fn common_name(name: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A positive 128-bit serial number.
pub(super) fn random_serial() -> Result<SerialNumber, SelfSignedError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(super) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Sets the validity of `params`, to the second.
pub(super) fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) {
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
