//! PEM decoding and the rustls crypto provider (feature `tls`), shared by the HTTPS server
//! ([`http::tls`](crate::http)) and the HTTPS client ([`remote`](crate::remote)).

use std::io;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
