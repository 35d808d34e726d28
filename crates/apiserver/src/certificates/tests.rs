use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{json, Value};

use rustls_pki_types::pem::PemObject as _;
use x509_parser::prelude::FromDer as _;

use super::*;

/// A CA like the self-signed directory's: its certificate and key PEM.
fn ca_pem() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca() -> SigningCa {
    let (cert, key) = ca_pem();
    SigningCa::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
}

/// A PEM request for CN `common_name` in each of `organizations`, with `dns` as SANs.
fn request_pem(common_name: &str, organizations: &[&str], dns: &[&str]) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    for organization in organizations {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *organization);
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (pem, rcgen::PublicKeyData::der_bytes(&key).to_vec())
}

fn request(pem: &str, signer: &str, conditions: Value) -> Value {
    json!({
        "metadata": { "name": "r" },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer,
            "usages": ["digital signature", "client auth"],
            "expirationSeconds": 3600,
        },
        "status": { "conditions": conditions },
    })
}

fn approved() -> Value {
    json!([{ "type": "Approved", "status": "True" }])
}

fn certificate_of(status: &Value) -> Vec<u8> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(status["certificate"].as_str().unwrap())
        .unwrap();
    rustls_pki_types::CertificateDer::from_pem_slice(&pem)
        .unwrap()
        .to_vec()
}

#[test]
fn an_approved_client_request_gets_a_certificate_signed_by_the_ca_with_its_subject_and_key() {
    let (ca_cert, ca_key) = ca_pem();
    let ca = SigningCa::from_pem(ca_cert.as_bytes(), ca_key.as_bytes()).unwrap();
    let (pem, public_key) = request_pem("alice", &["devs"], &[]);
    let csr = request(&pem, KUBE_APISERVER_CLIENT, approved());
    assert_eq!(decide(&csr), Decision::Sign);
    let now = SystemTime::now();
    let status = signed_status(&ca, &csr, now).unwrap();
    let der = certificate_of(&status);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca_cert.as_bytes()).unwrap();
    let (_, ca_parsed) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    cert.verify_signature(Some(ca_parsed.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca_parsed.subject());
    assert_eq!(cert.subject().to_string(), "CN=alice, O=devs");
    // The request's subject, byte for byte.
    let request_der = request_der(&csr).unwrap();
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&request_der)
            .unwrap();
    assert_eq!(
        cert.subject().as_raw(),
        parsed.certification_request_info.subject.as_raw()
    );
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        public_key
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && !usage.key_encipherment());
    assert!(!cert.is_ca());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 300);
}

#[test]
fn the_validity_defaults_to_a_year_and_never_outlives_the_ca() {
    let ca = ca();
    let (pem, _) = request_pem("bob", &[], &["bob.example"]);
    let mut csr = request(&pem, KUBE_APISERVER_CLIENT, approved());
    csr["spec"]
        .as_object_mut()
        .unwrap()
        .remove("expirationSeconds");
    let status = signed_status(&ca, &csr, SystemTime::now()).unwrap();
    let der = certificate_of(&status);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, DEFAULT_VALIDITY.as_secs() as i64 + 300);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names.len(), 1);

    // Signed 30 years from now, the CA (valid until 4096 by rcgen's default) is not the cap;
    // a CA ending sooner is.
    let far = SystemTime::now() + Duration::from_secs(30 * 365 * 24 * 3600);
    let status = signed_status(&ca, &csr, far).unwrap();
    let der = certificate_of(&status);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.validity().not_after.timestamp() <= ca.not_after());
}

#[test]
fn requests_not_approved_denied_failed_signed_or_for_other_signers_are_skipped() {
    let (pem, _) = request_pem("carol", &[], &[]);
    let cases = [
        request(&pem, KUBE_APISERVER_CLIENT, json!([])),
        request(
            &pem,
            KUBE_APISERVER_CLIENT,
            json!([{ "type": "Denied", "status": "True" }]),
        ),
        request(
            &pem,
            KUBE_APISERVER_CLIENT,
            json!([{ "type": "Approved", "status": "True" }, { "type": "Failed", "status": "True" }]),
        ),
        request(&pem, "example.com/my-signer", approved()),
        request(&pem, "kubernetes.io/kubelet-serving", approved()),
    ];
    for csr in cases {
        assert_eq!(decide(&csr), Decision::Skip, "{csr}");
    }
    let mut signed = request(&pem, KUBE_APISERVER_CLIENT, approved());
    signed["status"]["certificate"] = json!("Y2VydA==");
    assert_eq!(decide(&signed), Decision::Skip);
}

#[test]
fn a_request_breaking_the_signers_rules_fails_instead_of_being_signed() {
    let ca = ca();
    let (pem, _) = request_pem("dave", &[], &[]);
    let mut server = request(&pem, KUBE_APISERVER_CLIENT, approved());
    server["spec"]["usages"] = json!(["server auth"]);
    let status = signed_status(&ca, &server, SystemTime::now()).unwrap();
    assert!(status.get("certificate").is_none());
    let failed = &status["conditions"][1];
    assert_eq!(failed["type"], "Failed");
    assert_eq!(failed["reason"], "SignerValidationFailure");
    assert_eq!(
        failed["message"],
        "invalid usage for client certificate: server auth"
    );

    // The kubelet signer wants system:node:<name> in system:nodes, without SANs.
    let kubelet = request(&pem, KUBE_APISERVER_CLIENT_KUBELET, approved());
    let status = signed_status(&ca, &kubelet, SystemTime::now()).unwrap();
    assert_eq!(
        status["conditions"][1]["message"],
        "subject organization is not system:nodes"
    );
    let (node, _) = request_pem("system:node:n1", &["system:nodes"], &[]);
    let kubelet = request(&node, KUBE_APISERVER_CLIENT_KUBELET, approved());
    let status = signed_status(&ca, &kubelet, SystemTime::now()).unwrap();
    assert!(status["certificate"].is_string(), "{status}");
}

#[test]
fn a_signing_ca_must_be_a_ca_with_its_own_key() {
    let (cert, key) = ca_pem();
    let (_, other_key) = ca_pem();
    assert!(matches!(
        SigningCa::from_pem(cert.as_bytes(), other_key.as_bytes()),
        Err(SigningCaError::Invalid(_))
    ));
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    assert!(
        SigningCa::from_pem(leaf.pem().as_bytes(), leaf_key.serialize_pem().as_bytes()).is_err()
    );
    assert!(SigningCa::from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
}

#[test]
fn der_lengths_round_trip_short_and_long_forms() {
    for length in [0usize, 5, 127, 128, 255, 256, 70_000] {
        let content = vec![7u8; length];
        let encoded = super::sign::tests_support::tlv(0x04, &content);
        let (element, rest) = super::sign::tests_support::element(&encoded).unwrap();
        assert!(rest.is_empty());
        assert_eq!(element, content.as_slice());
    }
}
