//! Client certificates as credentials (the kubelet's `--client-ca-file`, Kubernetes' x509
//! authenticator).
//!
//! Over HTTPS with a client CA, the TLS server asks every client for a certificate but lets
//! the handshake go on whatever it sends (Go's `tls.RequestClientCert`, as the kubelet
//! configures it). [`X509Authenticator`] then checks the chain the client sent against the
//! CA bundle, once per connection: a chain that verifies (unexpired, for client
//! authentication, signed by a CA of the bundle) names the user, its subject's common name
//! (CN) as the user name and its organizations (O) as the groups, plus
//! `system:authenticated`. The user reaches each
//! request of the connection as a [`CertificateUser`] extension, which the middleware takes
//! before looking at a bearer token. A certificate that does not verify authenticates
//! nobody: the request falls back to its bearer token, and without one is answered `401`.

use super::User;

/// The user a verified client certificate names, in the extensions of every request of the
/// connection it came on. Only the TLS server inserts it, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateUser(pub(crate) User);

#[cfg(feature = "tls")]
pub use verify::{X509Authenticator, X509Error};

#[cfg(feature = "tls")]
mod verify {
    use std::sync::Arc;

    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
    use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

    use super::User;

    /// The group of every authenticated user.
    const AUTHENTICATED_GROUP: &str = "system:authenticated";

    /// Why a client certificate authenticates nobody.
    #[derive(Debug, Clone, thiserror::Error)]
    pub enum X509Error {
        /// The client sent no certificate.
        #[error("no client certificate")]
        NoCertificate,
        /// The chain does not verify against the client CA bundle (unknown issuer,
        /// expired, not for client authentication, ...).
        #[error("verifying certificate: {0}")]
        Unverified(String),
        /// The certificate cannot be read, or its subject has no common name.
        #[error("{0}")]
        Subject(String),
        /// The CA bundle is unusable (no certificate, not a trust anchor).
        #[error("the client CA bundle is unusable: {0}")]
        Bundle(String),
    }

    /// Verifies client certificate chains against a CA bundle and names their users (CN =
    /// user, O = groups). Cheap to clone; shared by every connection of the server.
    #[derive(Clone)]
    pub struct X509Authenticator {
        verifier: Arc<dyn ClientCertVerifier>,
    }

    impl std::fmt::Debug for X509Authenticator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("X509Authenticator").finish_non_exhaustive()
        }
    }

    impl X509Authenticator {
        /// Trusts the CA certificates `bundle` (DER).
        ///
        /// Errors: [`X509Error::Bundle`] when the bundle is empty or a certificate is not a
        /// usable trust anchor.
        pub fn new(bundle: &[CertificateDer<'static>]) -> Result<Self, X509Error> {
            if bundle.is_empty() {
                return Err(X509Error::Bundle("no certificate".into()));
            }
            let mut roots = rustls::RootCertStore::empty();
            for certificate in bundle {
                roots
                    .add(certificate.clone())
                    .map_err(|e| X509Error::Bundle(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crate::server::tls::provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| X509Error::Bundle(e.to_string()))?;
            Ok(X509Authenticator { verifier })
        }

        /// The user of `chain` (leaf first) as the client sent it.
        ///
        /// Errors: [`X509Error::NoCertificate`] for an empty chain,
        /// [`X509Error::Unverified`] when it does not chain to the bundle (or has expired,
        /// or is not for client authentication), [`X509Error::Subject`] when the leaf has no
        /// common name.
        pub fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Result<User, X509Error> {
            let (leaf, intermediates) = chain.split_first().ok_or(X509Error::NoCertificate)?;
            self.verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .map_err(|e| X509Error::Unverified(e.to_string()))?;
            user_of(leaf)
        }

        /// The TLS server's verifier: asks for a certificate (hinting the bundle's subjects)
        /// and checks that the client holds its key, but accepts any chain, so that this
        /// authenticator decides per connection and an unknown certificate is answered
        /// `401` rather than a TLS alert.
        pub(crate) fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
            Arc::new(RequestClientCert(self.verifier.clone()))
        }
    }

    /// CN as the name, every O as a group (Kubernetes' `CommonNameUserConversion`).
    fn user_of(leaf: &CertificateDer<'_>) -> Result<User, X509Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| X509Error::Subject(format!("unreadable certificate: {e}")))?;
        let subject = parsed.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(X509Error::Subject(
                "common name of the certificate should not be empty".into(),
            ));
        }
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_string)
            .collect();
        // As the kubelet's authenticator chain adds it to every authenticated user.
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        Ok(User {
            name,
            groups,
            ..User::default()
        })
    }

    /// Go's `tls.RequestClientCert`: a certificate is asked for, never required, and any
    /// chain passes the handshake (the authenticator verifies it). Signatures are still
    /// checked, so a client cannot present a certificate whose key it does not hold.
    #[derive(Debug)]
    struct RequestClientCert(Arc<dyn ClientCertVerifier>);

    impl ClientCertVerifier for RequestClientCert {
        fn offer_client_auth(&self) -> bool {
            true
        }

        fn client_auth_mandatory(&self) -> bool {
            false
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.0.root_hint_subjects()
        }

        fn verify_client_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _now: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            Ok(ClientCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };

        fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            (cert.der().clone(), Issuer::new(params, key))
        }

        fn client(
            issuer: &Issuer<'static, KeyPair>,
            cn: &str,
            orgs: &[&str],
        ) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            if !cn.is_empty() {
                params.distinguished_name.push(DnType::CommonName, cn);
            }
            for org in orgs {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, *org);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.signed_by(&key, issuer).unwrap().der().clone()
        }

        #[test]
        fn a_certificate_signed_by_the_bundle_names_its_cn_and_organizations() {
            let (ca_der, issuer) = ca("client-ca");
            let authenticator = X509Authenticator::new(&[ca_der]).unwrap();
            let cert = client(&issuer, "alice", &["dev"]);
            let user = authenticator.authenticate(&[cert]).unwrap();
            assert_eq!(user.name, "alice");
            assert_eq!(user.groups, ["dev", "system:authenticated"]);
        }

        #[test]
        fn an_unknown_issuer_no_chain_or_no_common_name_authenticates_nobody() {
            let (ca_der, issuer) = ca("client-ca");
            let (_, other) = ca("other-ca");
            let authenticator = X509Authenticator::new(&[ca_der]).unwrap();
            let stranger = client(&other, "mallory", &[]);
            assert!(matches!(
                authenticator.authenticate(&[stranger]),
                Err(X509Error::Unverified(_))
            ));
            assert!(matches!(
                authenticator.authenticate(&[]),
                Err(X509Error::NoCertificate)
            ));
            let nameless = client(&issuer, "", &["dev"]);
            let error = authenticator.authenticate(&[nameless]).unwrap_err();
            assert!(error.to_string().contains("common name"), "{error}");
            assert!(matches!(
                X509Authenticator::new(&[]),
                Err(X509Error::Bundle(_))
            ));
        }
    }
}
