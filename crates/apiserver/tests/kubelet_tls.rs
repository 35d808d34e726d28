//! The API server reaching kubelets over HTTPS (feature `tls`): a stand-in kubelet that
//! serves TLS and requires a client certificate signed by its client CA, reached with the
//! server's kubelet client certificate for logs and for an exec upgrade spliced over TLS;
//! kubelets' serving certificates verified against `--kubelet-certificate-authority` when one
//! is set, and not at all without.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, Response, StatusCode};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_apiserver::http::layers::{ApiServerOptions, StaticTokens, UserInfo};
use capstan_apiserver::http::pod_streams::KubeletClientConfig;
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);
const KUBELET_TOKEN: &str = "kubelet-secret";
const LOG: &str = "/api/v1/namespaces/default/pods";

/// A CA: its PEM and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn issue(
    ca: &Ca,
    cn: &str,
    org: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// One request the HTTPS stand-in saw: the path, `Authorization`, and the client
/// certificate of its connection (DER).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    client_certificate: Option<Vec<u8>>,
}

/// A kubelet stand-in over TLS that requires a client certificate signed by the client CA.
struct HttpsKubelet {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsKubelet {
    async fn start(serving_cert: &str, serving_key: &str, client_ca: &str) -> HttpsKubelet {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain = CertificateDer::pem_slice_iter(serving_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(serving_key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| leaf.to_vec());
                    let service = hyper::service::service_fn(move |request| {
                        let seen = seen.clone();
                        let peer = peer.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(request, seen, peer)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        HttpsKubelet {
            address,
            seen,
            task,
        }
    }

    fn last(&self, prefix: &str) -> Seen {
        let seen = self.seen.lock();
        seen.iter()
            .rev()
            .find(|s| s.path.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no request to {prefix} in {seen:?}"))
    }
}

/// Logs say `line 1`, `line 2`; exec upgrades greet, then echo.
fn handle(
    mut request: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    peer: Option<Vec<u8>>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    seen.lock().push(Seen {
        path: path.clone(),
        authorization: request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        client_certificate: peer,
    });
    if path.starts_with("/containerLogs/") {
        return Response::new(Body::from("line 1\nline 2\n"));
    }
    if path.starts_with("/exec/") && request.headers().contains_key(header::UPGRADE) {
        let protocol = request.headers()[header::UPGRADE].clone();
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            if io.write_all(b"kubelet says hi\n").await.is_err() {
                return;
            }
            let mut buffer = [0u8; 1024];
            while let Ok(n) = io.read(&mut buffer).await {
                if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, protocol)
            .body(Body::empty())
            .unwrap();
    }
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from("404 page not found\n"))
        .unwrap()
}

/// Node `n1` at 127.0.0.1 on `port`, and Pod `default/web` (container `app`) on it.
async fn seeded(port: u16) -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    let client = registry.clone() as Arc<dyn Client>;
    let nodes = Api::<Node>::cluster(client.clone());
    let created = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut node: Value = serde_json::to_value(created).unwrap();
    node["status"] = json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    });
    nodes
        .update_status(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client, "default");
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:1.36"}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut pod: Value = serde_json::to_value(created).unwrap();
    pod["status"] = json!({"phase": "Running"});
    pods.update_status(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    registry
}

async fn serve(registry: Arc<Registry>, kubelet_client: KubeletClientConfig) -> ApiServer {
    let options = ApiServerOptions::default()
        .authenticator(
            StaticTokens::new().with("caller-token", UserInfo::new("caller", ["system:masters"])),
        )
        .kubelet_client(kubelet_client);
    ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// `GET path` as the caller: the status and the body.
async fn get(address: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "capstan")
        .header("authorization", "Bearer caller-token")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads from `stream` until `received` holds `expected` bytes.
async fn read_exactly(stream: &mut TcpStream, mut received: Vec<u8>, expected: usize) -> Vec<u8> {
    let mut buffer = [0u8; 1024];
    while received.len() < expected {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed early: {received:?}");
        received.extend_from_slice(&buffer[..n]);
    }
    received
}

/// The material of one test: the kubelet's serving CA and certificate, the client CA and the
/// server's kubelet client certificate.
struct Pki {
    serving_ca: Ca,
    serving: (String, String),
    client_ca: Ca,
    client: (String, String, Vec<u8>),
}

fn pki() -> Pki {
    let serving_ca = ca("kubelet-serving-ca");
    let (cert, key, _) = issue(
        &serving_ca,
        "n1",
        None,
        &["127.0.0.1", "n1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client_ca = ca("client-ca");
    let client = issue(
        &client_ca,
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        serving_ca,
        serving: (cert, key),
        client_ca,
        client,
    }
}

#[tokio::test]
async fn logs_and_an_exec_upgrade_reach_an_https_kubelet_with_the_client_certificate() {
    within(LIMIT, async {
        let pki = pki();
        let kubelet = HttpsKubelet::start(&pki.serving.0, &pki.serving.1, &pki.client_ca.pem).await;
        let config = KubeletClientConfig::with_token(KUBELET_TOKEN)
            .with_client_certificate_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
            .unwrap()
            .with_certificate_authority_pem(pki.serving_ca.pem.as_bytes())
            .unwrap();
        assert_eq!(config.scheme, "https");
        assert!(config.tls.has_client_certificate() && config.tls.verifies_kubelets());
        let server = serve(seeded(kubelet.address.port()).await, config).await;

        let (status, body) = get(server.address(), &format!("{LOG}/web/log")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "line 1\nline 2\n");
        let seen = kubelet.last("/containerLogs");
        assert_eq!(seen.path, "/containerLogs/default/web/app");
        assert_eq!(seen.client_certificate.as_deref(), Some(&pki.client.2[..]));
        assert_eq!(seen.authorization.as_deref(), Some("Bearer kubelet-secret"));

        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        let request = format!(
            "POST {LOG}/web/exec?command=sh&stdin=true&stdout=true HTTP/1.1\r\nHost: capstan\r\n\
             Authorization: Bearer caller-token\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let end = loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before a response head: {received:?}");
            received.extend_from_slice(&buffer[..n]);
        };
        let head = String::from_utf8_lossy(&received[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let rest = received[end + 4..].to_vec();
        assert_eq!(
            read_exactly(&mut stream, rest, 16).await,
            b"kubelet says hi\n"
        );
        stream.write_all(b"ping over tls\n").await.unwrap();
        assert_eq!(
            read_exactly(&mut stream, Vec::new(), 14).await,
            b"ping over tls\n"
        );
        let seen = kubelet.last("/exec");
        assert_eq!(seen.path, "/exec/default/web/app");
        assert_eq!(seen.client_certificate.as_deref(), Some(&pki.client.2[..]));
    })
    .await;
}

#[tokio::test]
async fn without_a_ca_kubelets_are_not_verified_and_with_another_ca_they_are_refused() {
    within(LIMIT, async {
        let pki = pki();
        let kubelet = HttpsKubelet::start(&pki.serving.0, &pki.serving.1, &pki.client_ca.pem).await;
        let port = kubelet.address.port();

        let unverified = KubeletClientConfig::default()
            .with_client_certificate_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
            .unwrap();
        assert!(!unverified.tls.verifies_kubelets());
        let server = serve(seeded(port).await, unverified).await;
        let (status, body) = get(server.address(), &format!("{LOG}/web/log")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(kubelet.last("/containerLogs").authorization, None);

        let other = ca("someone-else");
        let wrong_ca = KubeletClientConfig::default()
            .with_client_certificate_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
            .unwrap()
            .with_certificate_authority_pem(other.pem.as_bytes())
            .unwrap();
        let server = serve(seeded(port).await, wrong_ca).await;
        let (status, body) = get(server.address(), &format!("{LOG}/web/log")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let message: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            message["message"],
            format!(
                "Get \"https://127.0.0.1:{port}/containerLogs/default/web/app\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
            )
        );

        // No client certificate: the kubelet refuses the handshake.
        let anonymous = KubeletClientConfig::default()
            .with_certificate_authority_pem(pki.serving_ca.pem.as_bytes())
            .unwrap();
        let server = serve(seeded(port).await, anonymous).await;
        let (status, body) = get(server.address(), &format!("{LOG}/web/log")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    })
    .await;
}

#[test]
fn bad_kubelet_client_material_is_refused_when_configured() {
    let pki = pki();
    let error = KubeletClientConfig::default()
        .with_client_certificate_pem(pki.client.0.as_bytes(), b"no key here")
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    let error = KubeletClientConfig::default()
        .with_certificate_authority_pem(b"")
        .unwrap_err();
    assert!(error.to_string().contains("no PEM CERTIFICATE"), "{error}");
    let error = KubeletClientConfig::default()
        .with_client_certificate_files("/nonexistent/crt", "/nonexistent/key")
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(!format!("{:?}", KubeletClientConfig::default()).contains("PRIVATE"));
}
