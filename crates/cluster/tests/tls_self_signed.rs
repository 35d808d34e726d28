//! HTTPS with no certificate files given (feature `tls`): `--tls` / `--cert-dir` generate a CA,
//! a serving certificate and an admin token in the certificate directory, the kubeconfig
//! carries the CA and the token, and every client (the cluster's own components, the
//! `RemoteClient`, kubectl) verifies the server through it. A second start reuses them.
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client`; `scripts/test` installs it when
//! missing).

#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::kube_core::params::ListParams;
use capstan_api::{Api, Client, Error};
use capstan_apiserver::http::tls::selfsigned::{
    self, ServingNames, CA_CERT_FILE, CA_KEY_FILE, SERVING_CERT_FILE, SERVING_KEY_FILE, TOKEN_FILE,
};
use capstan_apiserver::remote::RemoteClient;
use capstan_cluster::apiserver::serve;
use capstan_cluster::cli::{ClusterArgs, DEFAULT_CERT_DIR};
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use clap::Parser;

const TIMEOUT: Duration = Duration::from_secs(150);

/// The certificate and key files generated in the cert dir.
const PAIRS: [&str; 4] = [
    CA_CERT_FILE,
    CA_KEY_FILE,
    SERVING_CERT_FILE,
    SERVING_KEY_FILE,
];

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-tls-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cluster's command line, as `cargo run --example cluster -- <args>` parses it.
fn args(args: &[&str]) -> ClusterArgs {
    ClusterArgs::try_parse_from(std::iter::once("cluster").chain(args.iter().copied()))
        .expect("the flags parse")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn kubeconfig(path: &Path) -> serde_json::Value {
    serde_yaml_ng::from_slice(&read(path)).expect("the kubeconfig is YAML")
}

fn base64(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    // A small standard-alphabet encoder, so the test does not lean on the code it checks.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char
                );
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn nodes(client: impl Client + 'static) -> capstan_api::Result<usize> {
    let nodes: Api<Node> = Api::all(Arc::new(client) as Arc<dyn Client>);
    Ok(nodes.list(&ListParams::default()).await?.items.len())
}

#[test]
fn tls_turns_https_on_with_a_default_cert_dir_and_cert_dir_implies_it() {
    assert_eq!(args(&[]).serve.config().cert_dir, None);
    assert_eq!(
        args(&["--tls"]).serve.config().cert_dir,
        Some(PathBuf::from(DEFAULT_CERT_DIR))
    );
    assert_eq!(
        args(&["--cert-dir", "/tmp/x"]).serve.config().cert_dir,
        Some(PathBuf::from("/tmp/x"))
    );
    let files = args(&[
        "--tls-cert-file",
        "a.crt",
        "--tls-private-key-file",
        "a.key",
    ]);
    let config = files.serve.config();
    assert_eq!(
        config.tls,
        Some((PathBuf::from("a.crt"), PathBuf::from("a.key")))
    );
    assert_eq!(config.cert_dir, Some(PathBuf::from(DEFAULT_CERT_DIR)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_and_no_files_is_verified_through_its_kubeconfig_and_restarts_on_them() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = TempDir::new();
        let certs = dir.0.join("certs");
        let kubeconfig_path = dir.0.join("kubeconfig");
        let args = args(&[
            "--tls",
            "--cert-dir",
            certs.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            kubeconfig_path.to_str().unwrap(),
            "--nodes",
            "1",
        ]);
        let listen: SocketAddr = args.serve.listen;
        let mut config = ClusterConfig::fake(listen, kubeconfig_path.clone(), args.nodes);
        config.apiserver = args.serve.config();
        config.state_dir = dir.0.join("nodes");
        let cluster = EmbeddedCluster::start(config.clone())
            .await
            .expect("the cluster starts over HTTPS with generated certificates");
        assert!(
            cluster.url().starts_with("https://127.0.0.1:"),
            "{}",
            cluster.url()
        );
        // The kubelet, the proxy, the controller manager and the scheduler all reach the API
        // server through the kubeconfig: the node becoming Ready (and untainted by the node
        // lifecycle controller) shows they verified it and authenticated.
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .await
            .expect("the node becomes Ready");

        for file in PAIRS.iter().chain([&TOKEN_FILE]) {
            assert!(certs.join(file).is_file(), "{file} is in the cert dir");
        }
        let ca = read(&certs.join(CA_CERT_FILE));
        let token = String::from_utf8(read(&certs.join(TOKEN_FILE)))
            .unwrap()
            .trim()
            .to_string();
        let written = kubeconfig(&kubeconfig_path);
        let cluster_entry = &written["clusters"][0]["cluster"];
        assert_eq!(cluster_entry["server"], cluster.url().as_str());
        assert_eq!(
            cluster_entry["certificate-authority-data"],
            base64(&ca).as_str()
        );
        assert!(cluster_entry.get("insecure-skip-tls-verify").is_none());
        assert_eq!(written["users"][0]["user"]["token"], token.as_str());

        // The crate's client, from the kubeconfig alone, verifying the server.
        let client = RemoteClient::from_kubeconfig(&kubeconfig_path).unwrap();
        assert_eq!(nodes(client).await.unwrap(), 1);

        // A client trusting another CA is refused by the TLS handshake, token or not.
        let other = selfsigned::generate(&ServingNames::kubernetes(listen.ip())).unwrap();
        let untrusting = RemoteClient::new(&cluster.url())
            .unwrap()
            .with_certificate_authority(other.ca_pem())
            .unwrap()
            .with_token(&token);
        let refused = nodes(untrusting).await.unwrap_err();
        assert!(
            matches!(refused, Error::ServiceUnavailable { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().to_lowercase().contains("certificate"),
            "{refused}"
        );
        // The right CA without the token: authenticated nobody, refused with 401.
        let anonymous = RemoteClient::new(&cluster.url())
            .unwrap()
            .with_certificate_authority(&ca)
            .unwrap();
        let unauthorized = nodes(anonymous).await.unwrap_err();
        assert!(
            matches!(unauthorized, Error::Unauthorized { .. }),
            "{unauthorized:?}"
        );

        // kubectl, through the written kubeconfig, with full verification.
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig_path)
            .args(["get", "ns"])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run \
                     scripts/test"
                )
            });
        assert!(
            output.status.success(),
            "kubectl get ns failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig_path)
            .args(["get", "nodes", "-o", "name"])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl get nodes failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "node/node01"
        );

        let files: Vec<Vec<u8>> = PAIRS.iter().map(|file| read(&certs.join(file))).collect();
        cluster.shutdown().await;

        // A second start on the same directory reuses the CA, the serving certificate and the
        // token: a client holding the first kubeconfig's CA and token still gets in.
        let restarted = serve(&config.apiserver)
            .await
            .expect("the API server restarts");
        assert_eq!(restarted.token(), Some(token.as_str()));
        assert_eq!(restarted.certificate_authority(), Some(ca.as_slice()));
        for (file, before) in PAIRS.iter().zip(&files) {
            assert_eq!(
                &read(&certs.join(file)),
                before,
                "{file} is reused as it was"
            );
        }
        let again = RemoteClient::new(&restarted.url())
            .unwrap()
            .with_certificate_authority(&ca)
            .unwrap()
            .with_token(&token);
        assert_eq!(nodes(again).await.unwrap(), 0, "a new in-memory store");
    })
    .await
    .expect("the test finishes in time");
}
