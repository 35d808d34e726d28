//! Tests of generating, keeping and reusing the self-signed material.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::UnixTime;
use x509_parser::extensions::GeneralName;

use super::*;
use crate::pem::certificates_from_pem;

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
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
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
    for name in
        KUBERNETES_DNS_NAMES
            .iter()
            .copied()
            .chain(["192.0.2.7", "127.0.0.1", "::1", "10.96.0.1"])
    {
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
