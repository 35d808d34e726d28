//! TLS for HTTPS probes: rustls on ring, without certificate verification, as the kubelet's
//! prober (`InsecureSkipVerify`). The handshake signatures are still checked, so the peer
//! holds the key of the certificate it shows, whatever that certificate is.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Accepts any certificate; checks handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
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

/// The probes' client configuration, built once: ALPN offers `h2` then `http/1.1`, as Go's
/// transport with HTTP/2 configured.
fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // rustls 0.23.48 deprecates its ring provider (no post-quantum key exchange);
            // ring is kept so that the default build needs only a C compiler.
            #[allow(deprecated)]
            let provider = Arc::new(ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// Runs the TLS handshake over `stream`, with SNI for `host` when it is a name (none for an
/// address). Returns the stream and whether the server chose HTTP/2.
pub(super) async fn connect(
    stream: TcpStream,
    host: &str,
) -> Result<(TlsStream<TcpStream>, bool), String> {
    let config = config()?;
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("tls: invalid server name {name:?}: {e}"))?;
    let stream = TlsConnector::from(config)
        .connect(server_name, stream)
        .await
        .map_err(|e| format!("tls: {}", super::conn::os_text(&e)))?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    Ok((stream, h2))
}
