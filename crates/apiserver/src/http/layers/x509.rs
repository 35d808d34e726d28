//! Client certificate authentication (feature `tls`), as kube-apiserver's `--client-ca-file`.
//!
//! [`X509ClientCerts`] names the user of a request that came on a connection whose client
//! certificate the TLS server verified against its client CA: the user is the certificate
//! subject's Common Name, and its groups are the subject's Organization values, in order.

use async_trait::async_trait;
use axum::http::request::Parts;
use capstan_api::Error;

use super::authn::{Authenticator, UserInfo};
use crate::http::tls::PeerCertificates;

/// Authenticates requests by their connection's verified client certificate: user = subject
/// CN, groups = subject O values.
///
/// It reads the [`PeerCertificates`] extension, which only the TLS server sets, and only after
/// the chain verified against the client CA; it does no verification of its own. A request
/// without that extension, or whose certificate has an empty Common Name, has no credentials
/// here (`Ok(None)`), as in Kubernetes. A certificate that cannot be parsed is refused (401).
#[derive(Debug, Clone, Copy, Default)]
pub struct X509ClientCerts;

#[async_trait]
impl Authenticator for X509ClientCerts {
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error> {
        match parts.extensions.get::<PeerCertificates>() {
            None => Ok(None),
            Some(peer) => user_of_certificate(peer.leaf()),
        }
    }
}

/// The user a DER certificate names: its subject's first Common Name, with its Organization
/// values as groups. `Ok(None)` when the subject has no (or an empty) Common Name.
///
/// Errors: [`Error::Unauthorized`] when the certificate does not parse or a name is not a
/// string.
pub fn user_of_certificate(der: &[u8]) -> Result<Option<UserInfo>, Error> {
    let refused = |why: String| Error::Unauthorized {
        message: format!("Unauthorized: the client certificate {why}"),
    };
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| refused(format!("does not parse: {e}")))?;
    let subject = certificate.subject();
    let name = match subject.iter_common_name().next() {
        None => return Ok(None),
        Some(cn) => cn
            .as_str()
            .map_err(|e| refused(format!("has an unreadable common name: {e}")))?,
    };
    if name.is_empty() {
        return Ok(None);
    }
    let groups = subject
        .iter_organization()
        .map(|o| {
            o.as_str()
                .map(String::from)
                .map_err(|e| refused(format!("has an unreadable organization: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(UserInfo::new(name, groups)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn certificate(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        // rcgen keeps one value per attribute type; a second Organization goes in under its
        // OID as a custom type.
        assert!(orgs.len() <= 2, "at most two organizations");
        for (index, org) in orgs.iter().enumerate() {
            let kind = if index == 0 {
                DnType::OrganizationName
            } else {
                DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            params.distinguished_name.push(kind, *org);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_is_the_user_and_organizations_are_groups() {
        let user = user_of_certificate(&certificate(Some("alice"), &["dev", "ops"]))
            .unwrap()
            .unwrap();
        assert_eq!(user, UserInfo::new("alice", ["dev", "ops"]));
    }

    #[test]
    fn a_certificate_without_a_common_name_names_nobody() {
        assert_eq!(
            user_of_certificate(&certificate(None, &["dev"])).unwrap(),
            None
        );
        assert_eq!(
            user_of_certificate(&certificate(Some(""), &[])).unwrap(),
            None
        );
    }

    #[test]
    fn garbage_is_refused() {
        let error = user_of_certificate(b"not a certificate").unwrap_err();
        assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    }
}
