//! PEM decoding, the rustls crypto provider and the verifier that accepts any server
//! certificate (feature `tls`), shared by the HTTPS server
//! ([`http::tls`](crate::http)) and the HTTPS client ([`remote`](crate::remote)).

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Every `CERTIFICATE` block of `pem`, in order.
///
/// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM or no certificate at all.
pub(crate) fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the {what} is not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid(format!("the {what} holds no PEM CERTIFICATE")));
    }
    Ok(certificates)
}

/// The first private key of `pem` (PKCS#8, PKCS#1 RSA or SEC1 EC).
///
/// Errors: [`io::ErrorKind::InvalidData`] for malformed PEM or no private key.
pub(crate) fn private_key_from_pem(pem: &[u8], what: &str) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(format!("the {what} holds no PEM private key"))
        }
        e => invalid(format!("the {what} is not valid PEM: {e}")),
    })
}

/// The crypto provider every TLS configuration here uses: `ring`, whatever the process
/// default is.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates its ring provider (no post-quantum key exchange); ring is
    // kept so that the default build needs only a C compiler, not aws-lc's CMake.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (`insecure-skip-tls-verify`, or kubelets without
/// `--kubelet-certificate-authority`), still checking that the server holds the key of the
/// certificate it sent.
#[derive(Debug)]
pub(crate) struct AnyServerCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
