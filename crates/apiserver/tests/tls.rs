//! HTTPS and mutual TLS (feature `tls`): the API server with a serving certificate and a client
//! CA, driven by raw HTTP/1.1 over rustls, by `RemoteClient`, and by the real `kubectl`.
//! Every certificate is made with rcgen when the test runs; every test is bounded by a timeout.
//!
//! A client certificate that does not chain to the client CA fails the TLS handshake: the
//! client gets an alert, never an HTTP answer.

#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{ObjectMeta, WatchEvent};
use capstan_api::testing::within;
use capstan_api::{Api, Client, Error};
use capstan_apiserver::http::layers::{
    ApiServerOptions, Limits, Rule, StaticPolicy, StaticTokens, UserInfo,
};
use capstan_apiserver::http::tls::TlsConfig;
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::remote::RemoteClient;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate authority made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate with its private key, both PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "capstan-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for user `cn` in groups `orgs`.
    fn client(&self, cn: &str, orgs: &[&str]) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }
}

/// One test's PKI: the CA that signs the serving certificate (which clients trust), the client
/// CA the server trusts, and a CA nobody trusts.
struct Pki {
    serving_ca: Ca,
    serving: Issued,
    client_ca: Ca,
    stranger_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let serving_ca = Ca::new("serving-ca");
        let serving = serving_ca.server();
        Pki {
            serving_ca,
            serving,
            client_ca: Ca::new("client-ca"),
            stranger_ca: Ca::new("client-ca"),
        }
    }

    /// Serving certificate and client CA.
    fn tls(&self) -> TlsConfig {
        TlsConfig::from_pem(self.serving.cert.as_bytes(), self.serving.key.as_bytes())
            .unwrap()
            .with_client_ca_pem(self.client_ca.pem.as_bytes())
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and raw HTTPS

async fn server(options: ApiServerOptions) -> ApiServer {
    ApiServer::bind_with(
        capstan_apiserver::testing::registry(),
        "127.0.0.1:0".parse().unwrap(),
        options,
    )
    .await
    .expect("bind a loopback port")
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";

/// alice may list config maps; group `devs` may create them; every authenticated user may
/// read discovery.
fn policy() -> StaticPolicy {
    StaticPolicy::new([
        Rule::new()
            .users(["alice"])
            .verbs(["list"])
            .api_groups([""])
            .resources(["configmaps"]),
        Rule::new()
            .user_groups(["devs"])
            .verbs(["create"])
            .api_groups([""])
            .resources(["configmaps"]),
        Rule::new()
            .user_groups(["system:authenticated"])
            .verbs(["get"])
            .paths(["/api", "/api/*", "/apis", "/apis/*"]),
    ])
}

/// A rustls client trusting `ca_pem`, presenting `identity` if any, speaking HTTP/1.1.
fn client_config(ca_pem: &str, identity: Option<&Issued>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(issued.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// An HTTP response, read to its end.
#[derive(Debug)]
struct Reply {
    code: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is JSON ({e}): {}", self.body))
    }

    /// Asserts a Kubernetes `Status` with `code` and `reason`, and returns its message.
    fn status(&self, code: u16, reason: &str) -> String {
        assert_eq!(self.code, code, "{self:?}");
        let status = self.json();
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["reason"], reason, "{status}");
        status["message"].as_str().unwrap_or_default().to_string()
    }
}

/// Sends one HTTP/1.1 request over TLS (`Connection: close`) and reads the whole answer.
/// Errors: the handshake or the exchange failed.
async fn https(
    address: SocketAddr,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let tcp = TcpStream::connect(address).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no HTTP answer: {text:?}"),
        )
    })?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Reply { code, body })
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn config_map_json(name: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        .to_string()
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("value".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("capstan-tls-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Identity from client certificates

#[tokio::test]
async fn a_client_certificate_signed_by_the_client_ca_names_its_common_name_and_organizations() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(
            ApiServerOptions::default()
                .tls(pki.tls())
                .authorizer(policy()),
        )
        .await;
        assert!(
            server.url().starts_with("https://127.0.0.1:"),
            "{}",
            server.url()
        );
        let address = server.address();

        // alice (group devs): her name lets her list, her group lets her create.
        let alice = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &["devs"])),
        );
        let created = https(
            address,
            alice.clone(),
            "POST",
            CONFIG_MAPS,
            &[],
            &config_map_json("mine"),
        )
        .await
        .unwrap();
        assert_eq!(created.code, 201, "{created:?}");
        let listed = https(address, alice, "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap();
        assert_eq!(listed.code, 200, "{listed:?}");
        assert_eq!(listed.json()["items"][0]["metadata"]["name"], "mine");

        // carol is in devs too but is not alice: she may create, not list.
        let carol = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("carol", &["devs"])),
        );
        let created = https(
            address,
            carol.clone(),
            "POST",
            CONFIG_MAPS,
            &[],
            &config_map_json("hers"),
        )
        .await
        .unwrap();
        assert_eq!(created.code, 201, "{created:?}");
        let message = https(address, carol, "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap()
            .status(403, "Forbidden");
        assert!(
            message.contains(r#"User "carol" cannot list resource "configmaps""#),
            "{message}"
        );

        // bob, in ops, may do neither.
        let bob = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("bob", &["ops"])),
        );
        let message = https(address, bob.clone(), "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap()
            .status(403, "Forbidden");
        assert!(message.contains(r#"User "bob""#), "{message}");
        https(
            address,
            bob,
            "POST",
            CONFIG_MAPS,
            &[],
            &config_map_json("his"),
        )
        .await
        .unwrap()
        .status(403, "Forbidden");
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake_and_the_server_keeps_serving() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls())).await;
        let address = server.address();

        // Same subject, same CA name, different key: not signed by the client CA.
        let stranger = client_config(
            &pki.serving_ca.pem,
            Some(&pki.stranger_ca.client("alice", &["devs"])),
        );
        let refused = https(address, stranger, "GET", CONFIG_MAPS, &[], "").await;
        let error = refused.expect_err("no HTTP answer to an untrusted client certificate");
        assert!(
            error.to_string().contains("alert")
                || error.kind() == std::io::ErrorKind::UnexpectedEof
                || error.kind() == std::io::ErrorKind::ConnectionReset,
            "a TLS alert: {error}"
        );
        // A CA with another name too: the server does not know the issuer.
        let unknown_ca = Ca::new("somebody-else");
        let unknown = client_config(&pki.serving_ca.pem, Some(&unknown_ca.client("alice", &[])));
        let error = https(address, unknown, "GET", CONFIG_MAPS, &[], "")
            .await
            .expect_err("no HTTP answer to an unknown issuer");
        assert!(
            error.to_string().contains("alert")
                || error.kind() == std::io::ErrorKind::UnexpectedEof
                || error.kind() == std::io::ErrorKind::ConnectionReset,
            "a TLS alert: {error}"
        );

        // The remote client sees the same refusal as an error, not as a user.
        let dir = TempDir::new("stranger");
        let path = dir.path("kubeconfig");
        let stranger = pki.stranger_ca.client("alice", &[]);
        server
            .kubeconfig()
            .certificate_authority(&pki.serving_ca.pem)
            .client_certificate(&stranger.cert, &stranger.key)
            .write(&path)
            .unwrap();
        let client: Arc<dyn Client> = Arc::new(RemoteClient::from_kubeconfig(&path).unwrap());
        let error = Api::<ConfigMap>::namespaced(client, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::ServiceUnavailable { .. }),
            "{error:?}"
        );

        // A trusted client is still served.
        let alice = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &[])),
        );
        let listed = https(address, alice, "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap();
        assert_eq!(listed.code, 200, "{listed:?}");
    })
    .await;
}

#[tokio::test]
async fn without_a_client_certificate_or_a_token_a_tls_request_is_unauthorized() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls())).await;
        let address = server.address();
        let nobody = client_config(&pki.serving_ca.pem, None);
        let message = https(address, nobody.clone(), "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap()
            .status(401, "Unauthorized");
        assert_eq!(message, "Unauthorized");
        https(address, nobody.clone(), "GET", "/api", &[], "")
            .await
            .unwrap()
            .status(401, "Unauthorized");
        // Health stays open, as over HTTP.
        let health = https(address, nobody, "GET", "/healthz", &[], "")
            .await
            .unwrap();
        assert_eq!((health.code, health.body.as_str()), (200, "ok"));
    })
    .await;
}

#[tokio::test]
async fn anonymous_requests_over_tls_are_served_only_when_turned_on() {
    within(DEADLINE, async {
        let pki = Pki::new();
        // TLS without a client CA: a server-authenticated HTTPS endpoint.
        let serving_only =
            TlsConfig::from_pem(pki.serving.cert.as_bytes(), pki.serving.key.as_bytes()).unwrap();
        assert!(!serving_only.verifies_client_certificates());
        let options = ApiServerOptions::default().tls(serving_only.clone());
        assert!(!options.allows_anonymous());
        let closed = server(options).await;
        let nobody = client_config(&pki.serving_ca.pem, None);
        https(
            closed.address(),
            nobody.clone(),
            "GET",
            CONFIG_MAPS,
            &[],
            "",
        )
        .await
        .unwrap()
        .status(401, "Unauthorized");

        let open = server(
            ApiServerOptions::default()
                .tls(serving_only)
                .anonymous(true),
        )
        .await;
        let reply = https(open.address(), nobody, "GET", CONFIG_MAPS, &[], "")
            .await
            .unwrap();
        assert_eq!(reply.code, 200, "{reply:?}");
    })
    .await;
}

#[tokio::test]
async fn a_bearer_token_over_tls_still_authenticates_beside_client_certificates() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let tokens = StaticTokens::new().with("alice-token", UserInfo::new("alice", ["devs"]));
        let options = ApiServerOptions::default()
            .tls(pki.tls())
            .authenticator(tokens)
            .authorizer(policy());
        let server = server(options).await;
        let address = server.address();
        let nobody = client_config(&pki.serving_ca.pem, None);
        let listed = https(
            address,
            nobody.clone(),
            "GET",
            CONFIG_MAPS,
            &[("Authorization", "Bearer alice-token")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(listed.code, 200, "{listed:?}");
        https(
            address,
            nobody,
            "GET",
            CONFIG_MAPS,
            &[("Authorization", "Bearer wrong")],
            "",
        )
        .await
        .unwrap()
        .status(401, "Unauthorized");

        // A valid certificate wins over a stale token, as in Kubernetes.
        let alice = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &[])),
        );
        let listed = https(
            address,
            alice,
            "GET",
            CONFIG_MAPS,
            &[("Authorization", "Bearer stale")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(listed.code, 200, "{listed:?}");

        // And the remote client's token works over TLS.
        let client = RemoteClient::new(&server.url())
            .unwrap()
            .with_certificate_authority(&pki.serving_ca.pem)
            .unwrap()
            .with_token("alice-token");
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(client), "default");
        assert!(api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The transport

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_and_the_server_keeps_serving() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls())).await;
        let address = server.address();
        let mut plain = TcpStream::connect(address).await.unwrap();
        plain
            .write_all(format!("GET {CONFIG_MAPS} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("Client sent an HTTP request to an HTTPS server."),
            "{answer}"
        );

        // Garbage that is neither TLS nor HTTP is just closed.
        let mut garbage = TcpStream::connect(address).await.unwrap();
        garbage.write_all(&[0u8; 16]).await.unwrap();
        let mut rest = Vec::new();
        let _ = garbage.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");

        let alice = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &[])),
        );
        let health = https(address, alice, "GET", "/healthz", &[], "")
            .await
            .unwrap();
        assert_eq!(health.code, 200);
    })
    .await;
}

#[tokio::test]
async fn silent_clients_before_and_after_the_handshake_are_dropped_at_the_header_timeout() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = server(ApiServerOptions::default().tls(pki.tls()).limits(limits)).await;
        let address = server.address();

        // Connects and sends nothing.
        let mut silent = TcpStream::connect(address).await.unwrap();
        // Completes the handshake and sends no request.
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &[])),
        )));
        let tcp = TcpStream::connect(address).await.unwrap();
        let mut idle = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();

        let started = Instant::now();
        let mut rest = Vec::new();
        let silent_end =
            tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
        assert!(
            matches!(silent_end, Ok(Ok(0)) | Ok(Err(_))),
            "{silent_end:?}"
        );
        let idle_end =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(matches!(idle_end, Ok(Ok(_)) | Ok(Err(_))), "{idle_end:?}");
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );

        let alice = client_config(
            &pki.serving_ca.pem,
            Some(&pki.client_ca.client("alice", &[])),
        );
        assert_eq!(
            https(address, alice, "GET", "/healthz", &[], "")
                .await
                .unwrap()
                .code,
            200
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// RemoteClient

#[tokio::test]
async fn a_remote_client_from_a_tls_kubeconfig_with_a_client_certificate_does_crud_and_watches() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(
            ApiServerOptions::default()
                .tls(pki.tls())
                .authorizer(StaticPolicy::new([Rule::new()
                    .user_groups(["admins"])
                    .verbs(["*"])
                    .resources(["*"])])),
        )
        .await;
        let dir = TempDir::new("remote");
        let path = dir.path("kubeconfig");
        let admin = pki.client_ca.client("root", &["admins"]);
        server
            .kubeconfig()
            .certificate_authority(&pki.serving_ca.pem)
            .client_certificate(&admin.cert, &admin.key)
            .write(&path)
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the kubeconfig holds a key: {mode:o}");
        }
        let client = RemoteClient::from_kubeconfig(&path).unwrap();
        assert_eq!(client.base_url(), server.url());
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(client), "default");

        let list = api.list(&ListParams::default()).await.unwrap();
        let mut events = api
            .watch(
                &WatchParams::default(),
                list.metadata.resource_version.as_deref().unwrap(),
            )
            .await
            .unwrap()
            .boxed();

        let created = api
            .create(&PostParams::default(), &config_map("settings", "1"))
            .await
            .unwrap();
        let mut changed = created.clone();
        changed.data = Some([("value".to_string(), "2".to_string())].into());
        let replaced = api.update(&PostParams::default(), &changed).await.unwrap();
        assert_eq!(replaced.data.unwrap()["value"], "2");
        let patched = api
            .patch(
                "settings",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"value": "3"}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.data.unwrap()["value"], "3");
        assert_eq!(
            api.get("settings").await.unwrap().data.unwrap()["value"],
            "3"
        );
        api.delete("settings", &DeleteParams::default())
            .await
            .unwrap();
        assert!(api.get("settings").await.unwrap_err().is_not_found());

        let mut seen = Vec::new();
        while seen.len() < 4 {
            match events.next().await.expect("the watch goes on").unwrap() {
                WatchEvent::Added(cm) => seen.push(("added", cm.data.unwrap()["value"].clone())),
                WatchEvent::Modified(cm) => {
                    seen.push(("modified", cm.data.unwrap()["value"].clone()))
                }
                WatchEvent::Deleted(cm) => {
                    seen.push(("deleted", cm.data.unwrap()["value"].clone()))
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("{e:?}"),
            }
        }
        let seen: Vec<(&str, &str)> = seen.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("added", "1"),
                ("modified", "2"),
                ("modified", "3"),
                ("deleted", "3")
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_remote_client_refuses_a_server_whose_certificate_its_ca_did_not_sign() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls()).anonymous(true)).await;
        let wrong_ca = RemoteClient::new(&server.url())
            .unwrap()
            .with_certificate_authority(&pki.client_ca.pem)
            .unwrap();
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(wrong_ca), "default");
        let error = api.list(&ListParams::default()).await.unwrap_err();
        assert!(
            matches!(error, Error::ServiceUnavailable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("certificate"), "{error}");

        // Skipping verification is possible, but only when asked for.
        let insecure = RemoteClient::new(&server.url())
            .unwrap()
            .with_insecure_skip_tls_verify()
            .unwrap();
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(insecure), "default");
        assert!(api.list(&ListParams::default()).await.is_ok());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// kubectl

/// Runs the real `kubectl` (from the PATH, as `tests/kubectl.rs` does) with `kubeconfig`.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run scripts/test")
        })
}

fn stdout_of(output: &std::process::Output, args: &[&str]) -> String {
    assert!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_a_client_certificate_lists_namespaces_and_applies_a_manifest() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls())).await;
        let dir = TempDir::new("kubectl");
        let kubeconfig = dir.path("kubeconfig");
        let admin = pki.client_ca.client("kubectl-admin", &["system:masters"]);
        server
            .kubeconfig()
            .certificate_authority(&pki.serving_ca.pem)
            .client_certificate(&admin.cert, &admin.key)
            .write(&kubeconfig)
            .unwrap();

        let args = ["get", "ns", "-o", "name"];
        stdout_of(&kubectl(&kubeconfig, &args).await, &args);

        let manifest = dir.path("cm.yaml");
        std::fs::write(
            &manifest,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: over-tls\ndata:\n  a: b\n",
        )
        .unwrap();
        let args = ["apply", "-f", manifest.to_str().unwrap()];
        let applied = stdout_of(&kubectl(&kubeconfig, &args).await, &args);
        assert!(applied.contains("configmap/over-tls created"), "{applied}");
        let args = ["get", "configmap", "over-tls", "-o", "jsonpath={.data.a}"];
        assert_eq!(stdout_of(&kubectl(&kubeconfig, &args).await, &args), "b");

        // With a token the server does not know instead of its certificate, kubectl is
        // unauthorized. (With no credentials at all, kubectl would prompt for a password.)
        let unknown = dir.path("unknown-token");
        server
            .kubeconfig()
            .certificate_authority(&pki.serving_ca.pem)
            .token("nobody-knows-this")
            .write(&unknown)
            .unwrap();
        let output = kubectl(&unknown, &["get", "configmaps"]).await;
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("Unauthorized"), "{stderr}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_a_certificate_from_another_ca_fails() {
    within(DEADLINE, async {
        let pki = Pki::new();
        let server = server(ApiServerOptions::default().tls(pki.tls())).await;
        let dir = TempDir::new("kubectl-stranger");
        let kubeconfig = dir.path("kubeconfig");
        let stranger = pki.stranger_ca.client("kubectl-admin", &["system:masters"]);
        server
            .kubeconfig()
            .certificate_authority(&pki.serving_ca.pem)
            .client_certificate(&stranger.cert, &stranger.key)
            .write(&kubeconfig)
            .unwrap();
        let output = kubectl(&kubeconfig, &["get", "ns", "--request-timeout=10s"]).await;
        assert!(!output.status.success(), "kubectl should have failed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Go names the server's TLS alert, e.g. "remote error: tls: error decrypting message".
        assert!(
            stderr.contains("remote error: tls"),
            "a TLS refusal: {stderr}"
        );
    })
    .await;
}
