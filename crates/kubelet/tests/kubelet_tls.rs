//! The kubelet's API over HTTPS (feature `tls`): client certificates signed by the client CA
//! authenticate as their CN (authorized by a SubjectAccessReview on the API server), bearer
//! tokens still work, and anything else is `401`; a self-signed serving certificate when none
//! is given; and `kubectl logs` through an API server that reaches the kubelet over HTTPS
//! with its client certificate.
#![cfg(feature = "tls")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use capstan_api::k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use capstan_api::{Api, Client};
use capstan_apiserver::http::layers::{
    ApiServerOptions, Attributes, Authorizer, Decision, StaticTokens, UserInfo,
};
use capstan_apiserver::http::pod_streams::{KubeletClient, KubeletClientConfig, KubeletLocation};
use capstan_apiserver::http::ApiServer;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_kubelet::server::auth::{CacheTtls, DelegatedAuth, StaticAuth};
use capstan_kubelet::server::KubeletTls;
use capstan_kubelet::{Kubelet, KubeletConfig, ServerAuth};
use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
use capstan_runtime::FakeClock;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use support::*;

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

/// A certificate signed by `ca`: (certificate PEM, key PEM).
fn issue(
    ca: &Ca,
    cn: &str,
    org: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client_cert(ca: &Ca, cn: &str, org: Option<&str>) -> (String, String) {
    issue(ca, cn, org, &[], ExtendedKeyUsagePurpose::ClientAuth)
}

/// Starts a kubelet on the fake runtime over `client`, serving HTTPS on 127.0.0.1:0.
async fn start(
    client: Arc<dyn Client>,
    tls: KubeletTls,
    auth: ServerAuth,
    images: Vec<(&str, ImageBehaviour)>,
) -> (Node, SocketAddr) {
    let clock = FakeClock::new();
    let mut builder = FakeRuntime::builder().node_name(NODE).clock(clock.clone());
    for (image, behaviour) in images {
        builder = builder.image(image, behaviour);
    }
    let fake = builder.build();
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let mut node = Node {
        client,
        clock,
        runtime: Arc::new(RecordingRuntime {
            inner: fake.clone(),
            stops: Mutex::new(Vec::new()),
        }),
        fake,
        network: Arc::new(TestNetwork::default()),
        prober: Arc::new(ScriptedProber::default()),
        events,
        kubelet: None,
    };
    let config = KubeletConfig::new(NODE)
        .internal_ip("127.0.0.1")
        .server_listen("127.0.0.1:0".parse().unwrap())
        .server_auth(auth)
        .server_tls(tls);
    let kubelet = Kubelet::builder(config)
        .client(node.client.clone())
        .runtime(node.runtime.clone())
        .network(node.network.clone())
        .prober(node.prober.clone())
        .clock(Arc::new(node.clock.clone()))
        .events(node.events.recorder("kubelet"))
        .build()
        .expect("valid kubelet")
        .start();
    let address = kubelet.server_address().expect("a server");
    while !kubelet.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kubelet = Some(kubelet);
    (node, address)
}

/// `GET path` on the kubelet at `address` through the API server's kubelet client with
/// `config`: the status and the body, or the client's error.
async fn get(
    config: KubeletClientConfig,
    address: SocketAddr,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let location = KubeletLocation {
        scheme: config.scheme.clone(),
        host: address.ip().to_string(),
        port: address.port(),
    };
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = KubeletClient::new(config)
        .send(&location, request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Denies `carol` everything on nodes but `stats`; allows everything else.
struct CarolOnlyStats;

#[async_trait::async_trait]
impl Authorizer for CarolOnlyStats {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        let on_node_proxy = attributes
            .resource
            .as_ref()
            .is_some_and(|r| r.resource == "nodes" && r.subresource.as_deref() != Some("stats"));
        if attributes.user.name == "carol" && on_node_proxy {
            Decision::Deny("not for carol".into())
        } else {
            Decision::Allow
        }
    }
}

/// An API server over HTTP that knows `dave-token` and decides as [`CarolOnlyStats`], and
/// the kubelet's delegated authentication through it.
async fn delegated() -> (ApiServer, ServerAuth) {
    let tokens = StaticTokens::new()
        .with(
            "kubelet-token",
            UserInfo::new("system:node:node-1", ["system:nodes"]),
        )
        .with("dave-token", UserInfo::new("dave", ["devs"]));
    let options = ApiServerOptions {
        authenticator: Some(Arc::new(tokens)),
        authorizer: Arc::new(CarolOnlyStats),
        ..ApiServerOptions::default()
    };
    let server = ApiServer::bind_with(
        capstan_apiserver::testing::registry(),
        "127.0.0.1:0".parse().unwrap(),
        options,
    )
    .await
    .expect("an API server");
    let remote: Arc<dyn Client> = Arc::new(
        capstan_apiserver::remote::RemoteClient::new(&server.url())
            .expect("a client")
            .with_token("kubelet-token"),
    );
    let auth = Arc::new(DelegatedAuth::new(remote, CacheTtls::default()));
    let auth = ServerAuth::Custom {
        authenticator: auth.clone(),
        authorizer: auth,
    };
    (server, auth)
}

#[tokio::test]
async fn client_certificates_of_the_client_ca_authenticate_as_their_cn_and_others_get_401() {
    within(LIMIT, async {
        let serving_ca = ca("kubelet-serving-ca");
        let (cert, key) = issue(
            &serving_ca,
            NODE,
            None,
            &["127.0.0.1", NODE],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_ca = ca("client-ca");
        let tls = KubeletTls::from_pem(cert.as_bytes(), key.as_bytes())
            .unwrap()
            .with_client_ca_pem(client_ca.pem.as_bytes())
            .unwrap();
        assert!(tls.authenticates_client_certificates());
        let (_api, auth) = delegated().await;
        let client = capstan_apiserver::testing::client();
        let (_node, address) = start(client, tls, auth, vec![]).await;

        // The kubelet's serving certificate verifies against its CA.
        let verified = || {
            KubeletClientConfig::default()
                .with_certificate_authority_pem(serving_ca.pem.as_bytes())
                .unwrap()
        };
        let as_cert = |(cert, key): (String, String)| {
            verified()
                .with_client_certificate_pem(cert.as_bytes(), key.as_bytes())
                .unwrap()
        };
        let alice = as_cert(client_cert(&client_ca, "alice", Some("devs")));
        let (status, body) = get(alice, address, "/pods").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"kind\":\"PodList\""), "{body}");

        // The CN is the user the SubjectAccessReview names.
        let carol = as_cert(client_cert(&client_ca, "carol", None));
        assert_eq!(
            get(carol.clone(), address, "/pods").await.unwrap(),
            (
                StatusCode::FORBIDDEN,
                "Forbidden (user=carol, verb=get, resource=nodes, subresource=proxy)".into()
            )
        );
        assert_eq!(
            get(carol, address, "/stats/summary").await.unwrap().0,
            StatusCode::OK
        );

        // A certificate of another CA, no certificate and no token: nobody.
        let stranger = as_cert(client_cert(&ca("other-ca"), "alice", None));
        assert_eq!(
            get(stranger, address, "/pods").await.unwrap(),
            (StatusCode::UNAUTHORIZED, "Unauthorized".into())
        );
        assert_eq!(
            get(verified(), address, "/pods").await.unwrap(),
            (StatusCode::UNAUTHORIZED, "Unauthorized".into())
        );
        let unknown_token = KubeletClientConfig {
            token: Some("nobody".into()),
            ..verified()
        };
        assert_eq!(
            get(unknown_token, address, "/pods").await.unwrap().0,
            StatusCode::UNAUTHORIZED
        );

        // Without a certificate the bearer token path stays, and an unverified certificate
        // falls back to it too.
        let token = KubeletClientConfig {
            token: Some("dave-token".into()),
            ..verified()
        };
        assert_eq!(
            get(token, address, "/pods").await.unwrap().0,
            StatusCode::OK
        );
        let (cert, key) = client_cert(&ca("other-ca"), "mallory", None);
        let stranger_with_token = KubeletClientConfig {
            token: Some("dave-token".into()),
            ..verified()
        }
        .with_client_certificate_pem(cert.as_bytes(), key.as_bytes())
        .unwrap();
        assert_eq!(
            get(stranger_with_token, address, "/pods").await.unwrap().0,
            StatusCode::OK
        );
        // `/healthz` stays open; plain HTTP is answered as Go's servers answer it.
        assert_eq!(
            get(verified(), address, "/healthz").await.unwrap(),
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get(KubeletClientConfig::default(), address, "/pods")
                .await
                .unwrap(),
            (
                StatusCode::BAD_REQUEST,
                "Client sent an HTTP request to an HTTPS server.\n".into()
            )
        );
    })
    .await;
}

#[tokio::test]
async fn a_self_signed_certificate_is_served_and_the_node_reports_the_port() {
    within(LIMIT, async {
        let client_ca = ca("client-ca");
        let tls = KubeletTls::self_signed()
            .with_client_ca_pem(client_ca.pem.as_bytes())
            .unwrap();
        let auth = ServerAuth::custom(StaticAuth::new().allow("kube-apiserver-kubelet-client"));
        let client = capstan_apiserver::testing::client();
        let (node, address) = start(client.clone(), tls, auth, vec![]).await;
        let nodes = Api::<NodeObject>::cluster(client);
        let reported = eventually_port(&nodes).await;
        assert_eq!(reported, i32::from(address.port()));

        // The certificate is the node's own: verifying it against an unrelated CA fails.
        let (cert, key) = client_cert(&client_ca, "kube-apiserver-kubelet-client", None);
        let unverified = KubeletClientConfig::default()
            .with_client_certificate_pem(cert.as_bytes(), key.as_bytes())
            .unwrap();
        assert_eq!(
            get(unverified.clone(), address, "/pods").await.unwrap().0,
            StatusCode::OK
        );
        let wrong = unverified
            .with_certificate_authority_pem(ca("unrelated").pem.as_bytes())
            .unwrap();
        let refused = get(wrong, address, "/pods").await.unwrap_err();
        assert!(refused.contains("unknown authority"), "{refused}");
        drop(node);
    })
    .await;
}

/// The port the Node reports as its kubelet endpoint, once it does.
async fn eventually_port(nodes: &Api<NodeObject>) -> i32 {
    loop {
        let port = nodes
            .get(NODE)
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.daemon_endpoints)
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port)
            .filter(|p| *p > 0);
        if let Some(port) = port {
            return port;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn kubectl_logs_reaches_an_https_kubelet_through_the_api_server_s_client_certificate() {
    within(LIMIT, async {
        let client_ca = ca("client-ca");
        let (cert, key) = client_cert(
            &client_ca,
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        );
        let kubelet_client = KubeletClientConfig::default()
            .with_client_certificate_pem(cert.as_bytes(), key.as_bytes())
            .unwrap();
        let registry = capstan_apiserver::testing::registry();
        let options = ApiServerOptions::default().kubelet_client(kubelet_client);
        let server =
            ApiServer::bind_with(registry.clone(), "127.0.0.1:0".parse().unwrap(), options)
                .await
                .expect("an API server");

        // Only the API server's certificate user may use the kubelet's API.
        let auth = ServerAuth::custom(StaticAuth::new().allow("kube-apiserver-kubelet-client"));
        let tls = KubeletTls::self_signed()
            .with_client_ca_pem(client_ca.pem.as_bytes())
            .unwrap();
        let talker = ImageBehaviour::new()
            .log_line(Duration::from_secs(1), "one")
            .log_line(Duration::from_secs(2), "two");
        let (node, _) = start(registry.clone(), tls, auth, vec![("talker", talker)]).await;
        eventually_port(&Api::<NodeObject>::cluster(registry.clone())).await;
        node.create(pod("talk", &[("talk", "talker")], serde_json::json!({})))
            .await;
        node.wait_pod("talk", "running", |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                })
        })
        .await;
        node.advance(5).await;

        let dir = std::env::temp_dir().join(format!(
            "capstan-kubelet-tls-kubectl-{}-{}",
            std::process::id(),
            server.address().port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.kubeconfig().write(&kubeconfig).unwrap();
        let cache = dir.join("cache");
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["logs", "talk", "-n", NS])
                .output()
        })
        .await
        .unwrap()
        .expect("kubectl on the PATH");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "kubectl logs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "one\ntwo\n");
    })
    .await;
}
