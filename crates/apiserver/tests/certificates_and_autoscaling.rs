//! CertificateSigningRequests (`certificates.k8s.io/v1`: validation, the `approval`
//! subresource) and HorizontalPodAutoscalers served as `autoscaling/v1` and `autoscaling/v2`
//! from one storage, through the in-process router and through the real `kubectl`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use capstan_api::testing::within;
use capstan_api::Client;
use capstan_apiserver::http::layers::ApiServerOptions;
use capstan_apiserver::http::router;
use capstan_apiserver::registry::Registry;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt;

/// Every test's deadline.
const DEADLINE: Duration = Duration::from_secs(90);

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

async fn registry() -> Arc<Registry> {
    let registry = capstan_apiserver::testing::registry();
    let client: Arc<dyn Client> = registry.clone();
    capstan_apiserver::testing::create_namespace(&*client, "default").await;
    registry
}

async fn app() -> Router {
    router(registry().await, "127.0.0.1:6443".into())
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A PEM PKCS#10 request for `common_name` (organization `devs`), from a fresh key.
fn csr_pem(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "devs");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn csr(name: &str) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem(name)),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "expirationSeconds": 86400,
            "usages": ["client auth"],
        },
    })
}

fn approval(object: &Value, type_: &str) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    object["status"] = json!({ "conditions": [{
        "type": type_, "status": "True", "reason": "KubectlApprove",
        "message": "This CSR was approved by kubectl certificate approve.",
    }] });
    object
}

fn condition_types(object: &Value) -> Vec<String> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_request_is_validated_like_kubernetes() {
    within(DEADLINE, async {
        let app = app().await;
        let mut bad = csr("bad");
        bad["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"));
        bad["spec"]["signerName"] = json!("no-domain");
        bad["spec"]["usages"] = json!(["client auth", "flying"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        let (status, body) = send(&app, Method::POST, CSRS, Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let fields: Vec<&str> = body["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.request",
                "spec.signerName",
                "spec.expirationSeconds",
                "spec.usages[1]"
            ]
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("PEM block type must be CERTIFICATE REQUEST"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn approval_is_its_own_subresource_and_excludes_denial() {
    within(DEADLINE, async {
        let app = app().await;
        let (status, created) = send(&app, Method::POST, CSRS, Some(csr("alice"))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let path = format!("{CSRS}/alice");

        // Neither the object nor its status can approve it.
        let (status, body) = send(
            &app,
            Method::PUT,
            &path,
            Some(approval(&created, "Approved")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(condition_types(&body).is_empty());
        let (status, body) = send(
            &app,
            Method::PUT,
            &format!("{path}/status"),
            Some(approval(&created, "Approved")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(condition_types(&body).is_empty());

        let (status, approved) = send(
            &app,
            Method::PUT,
            &format!("{path}/approval"),
            Some(approval(&created, "Approved")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        assert_eq!(condition_types(&approved), ["Approved"]);
        assert_eq!(approved["spec"], created["spec"]);

        let mut both = approved.clone();
        both["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "type": "Denied", "status": "True", "reason": "KubectlDeny" }));
        let (status, body) = send(&app, Method::PUT, &format!("{path}/approval"), Some(both)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("Approved and Denied conditions are mutually exclusive"),
            "{message}"
        );

        let (status, read) = send(&app, Method::GET, &format!("{path}/approval"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(condition_types(&read), ["Approved"]);
    })
    .await;
}

const HPAS_V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
const HPAS_V2: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";

#[tokio::test]
async fn a_v1_autoscaler_reads_back_through_v2_with_a_cpu_metric() {
    within(DEADLINE, async {
        let app = app().await;
        let v1 = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "web" },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
                "minReplicas": 2,
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 80,
            },
        });
        let (status, created) = send(&app, Method::POST, HPAS_V1, Some(v1)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["apiVersion"], "autoscaling/v1");
        assert_eq!(created["spec"]["targetCPUUtilizationPercentage"], 80);

        let (status, v2) = send(&app, Method::GET, &format!("{HPAS_V2}/web"), None).await;
        assert_eq!(status, StatusCode::OK, "{v2}");
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{ "type": "Resource", "resource": { "name": "cpu",
                "target": { "type": "Utilization", "averageUtilization": 80 } } }])
        );
        assert!(v2["metadata"].get("annotations").is_none());

        let (_, list) = send(&app, Method::GET, HPAS_V1, None).await;
        assert_eq!(list["items"][0]["apiVersion"], "autoscaling/v1");
    })
    .await;
}

#[tokio::test]
async fn a_v2_autoscaler_written_back_through_v1_keeps_its_other_metrics() {
    within(DEADLINE, async {
        let app = app().await;
        let metrics = json!([
            { "type": "Pods", "pods": { "metric": { "name": "requests" },
                "target": { "type": "AverageValue", "averageValue": "10" } } },
            { "type": "Resource", "resource": { "name": "cpu",
                "target": { "type": "Utilization", "averageUtilization": 60 } } },
        ]);
        let behavior = json!({ "scaleDown": { "stabilizationWindowSeconds": 30 } });
        let v2 = json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "api" },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "api" },
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": metrics,
                "behavior": behavior,
            },
        });
        let (status, body) = send(&app, Method::POST, HPAS_V2, Some(v2)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        let (status, mut v1) = send(&app, Method::GET, &format!("{HPAS_V1}/api"), None).await;
        assert_eq!(status, StatusCode::OK, "{v1}");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(
            v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"].is_string()
        );
        v1["spec"]["maxReplicas"] = json!(6);
        let (status, body) = send(&app, Method::PUT, &format!("{HPAS_V1}/api"), Some(v1)).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let (_, back) = send(&app, Method::GET, &format!("{HPAS_V2}/api"), None).await;
        assert_eq!(back["spec"]["maxReplicas"], 6);
        assert_eq!(back["spec"]["metrics"], metrics);
        assert_eq!(
            back["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            30
        );
        assert!(back["metadata"].get("annotations").is_none(), "{back}");
    })
    .await;
}

#[tokio::test]
async fn discovery_lists_both_autoscaling_versions_with_v2_preferred() {
    within(DEADLINE, async {
        let app = app().await;
        let (status, groups) = send(&app, Method::GET, "/apis", None).await;
        assert_eq!(status, StatusCode::OK, "{groups}");
        let group = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "autoscaling")
            .unwrap()
            .clone();
        assert_eq!(group["preferredVersion"]["version"], "v2");
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v2", "v1"]);
        let (_, resources) = send(&app, Method::GET, "/apis/certificates.k8s.io/v1", None).await;
        let csr = &resources["resources"][0];
        assert_eq!(csr["name"], "certificatesigningrequests");
        assert_eq!(csr["shortNames"], json!(["csr"]));
    })
    .await;
}

#[tokio::test]
async fn kubectl_creates_approves_and_denies_requests() {
    within(DEADLINE, async {
        let registry = registry().await;
        let client: Arc<dyn Client> = registry.clone();
        let kubectl = Kubectl::serve(registry).await;
        for name in ["alice", "bob"] {
            let file = kubectl.write(&format!("{name}.json"), csr(name).to_string());
            kubectl.ok(&["create", "-f", file.to_str().unwrap()]).await;
        }
        let out = kubectl.ok(&["certificate", "approve", "alice"]).await;
        assert!(out.contains("approved"), "{out}");
        kubectl.ok(&["certificate", "deny", "bob"]).await;

        let resource =
            capstan_api::ResourceInfo::builtin("certificates.k8s.io", "CertificateSigningRequest")
                .unwrap();
        let alice = client.get(&resource, None, "alice").await.unwrap();
        let alice = serde_json::to_value(&alice).unwrap();
        assert_eq!(condition_types(&alice), ["Approved"]);
        assert_eq!(alice["status"]["conditions"][0]["reason"], "KubectlApprove");
        let bob = serde_json::to_value(client.get(&resource, None, "bob").await.unwrap()).unwrap();
        assert_eq!(condition_types(&bob), ["Denied"]);

        // kubectl refuses on its own (the server's refusal is tested through the router).
        let refused = kubectl.run(&["certificate", "deny", "alice"]).await;
        let (out, err) = (&refused.stdout, &refused.stderr);
        assert!(
            !refused.success(),
            "denying an approved request succeeded: {out}"
        );
        assert!(
            err.contains("already Approved") || err.contains("mutually exclusive"),
            "{err}"
        );

        let out = kubectl.ok(&["get", "csr"]).await;
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "AGE",
                "SIGNERNAME",
                "REQUESTOR",
                "REQUESTEDDURATION",
                "CONDITION"
            ]
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
        // Created anonymously over plain HTTP: the requestor is the anonymous user.
        let alice = rows
            .iter()
            .find(|r| r[0] == "alice")
            .expect("a row for alice");
        assert_eq!(
            alice[2..],
            [
                "kubernetes.io/kube-apiserver-client",
                "system:anonymous",
                "24h",
                "Approved"
            ]
        );
        let bob = rows.iter().find(|r| r[0] == "bob").expect("a row for bob");
        assert_eq!(bob[5], "Denied", "{out}");
    })
    .await;
}

#[tokio::test]
async fn kubectl_autoscale_posts_v1_and_reads_back_through_v2() {
    within(DEADLINE, async {
        let kubectl = Kubectl::serve(registry().await).await;
        kubectl
            .ok(&["create", "deployment", "web", "--image=nginx"])
            .await;
        kubectl
            .ok(&[
                "autoscale",
                "deployment",
                "web",
                "--min=2",
                "--max=5",
                "--cpu-percent=80",
            ])
            .await;
        let out = kubectl
            .ok(&["get", "hpa.v2.autoscaling", "web", "-o", "json"])
            .await;
        let v2: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(v2["spec"]["minReplicas"], 2);
        assert_eq!(v2["spec"]["maxReplicas"], 5);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let out = kubectl
            .ok(&[
                "get",
                "horizontalpodautoscalers.v1.autoscaling",
                "web",
                "-o",
                "json",
            ])
            .await;
        let v1: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80, "{v1}");
    })
    .await;
}

#[tokio::test]
async fn the_requesting_user_is_recorded_whatever_the_client_sent() {
    use capstan_apiserver::http::layers::{StaticTokens, UserInfo};
    within(DEADLINE, async {
        let tokens = StaticTokens::new().with("alice-token", UserInfo::new("alice", ["devs"]));
        let options = ApiServerOptions::default()
            .authenticator(tokens)
            .anonymous(false);
        let app = options.apply(router(registry().await, "127.0.0.1:6443".into()));
        let mut forged = csr("forged");
        forged["spec"]["username"] = json!("admin");
        forged["spec"]["groups"] = json!(["system:masters"]);
        forged["spec"]["uid"] = json!("0");
        forged["spec"]["extra"] = json!({ "scopes": ["everything"] });
        let request = Request::builder()
            .method(Method::POST)
            .uri(CSRS)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer alice-token")
            .body(Body::from(forged.to_string()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let created: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let spec = &created["spec"];
        assert_eq!(spec["username"], "alice");
        let groups: Vec<&str> = spec["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        assert!(groups.contains(&"devs"), "{groups:?}");
        assert!(!groups.contains(&"system:masters"), "{groups:?}");
        assert!(spec.get("uid").is_none(), "{spec}");
        assert!(spec.get("extra").is_none(), "{spec}");
    })
    .await;
}

/// Signing by the cluster CA (feature `tls`).
#[cfg(feature = "tls")]
mod signing {
    use super::*;
    use capstan_api::testing::eventually_some;
    use capstan_apiserver::certificates::{CsrSigner, SigningCa};
    use capstan_apiserver::http::layers::{StaticTokens, UserInfo, SUPERUSER_GROUP};
    use capstan_apiserver::http::tls::selfsigned::{generate, SelfSigned, ServingNames};
    use rustls_pki_types::pem::PemObject as _;
    use x509_parser::prelude::FromDer as _;

    fn self_signed() -> SelfSigned {
        generate(&ServingNames::kubernetes("127.0.0.1".parse().unwrap())).unwrap()
    }

    fn resource() -> capstan_api::ResourceInfo {
        capstan_api::ResourceInfo::builtin("certificates.k8s.io", "CertificateSigningRequest")
            .unwrap()
    }

    /// The request's `status.certificate` as DER, once it has one.
    async fn issued(client: &dyn Client, name: &str) -> Vec<u8> {
        eventually_some(
            Duration::from_secs(30),
            format!("{name} signed"),
            || async {
                let object = client.get(&resource(), None, name).await.ok()?;
                let value = serde_json::to_value(object).ok()?;
                let encoded = value["status"]["certificate"].as_str()?.to_string();
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap();
                Some(
                    rustls_pki_types::CertificateDer::from_pem_slice(&pem)
                        .unwrap()
                        .to_vec(),
                )
            },
        )
        .await
    }

    async fn certificate_field(client: &dyn Client, name: &str) -> Value {
        let object = client.get(&resource(), None, name).await.unwrap();
        serde_json::to_value(object).unwrap()["status"]["certificate"].clone()
    }

    /// The subject and public key (DER) of the request `object` carries.
    fn request_parts(object: &Value) -> (Vec<u8>, Vec<u8>) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(object["spec"]["request"].as_str().unwrap())
            .unwrap();
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(&pem).unwrap();
        let (_, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        let info = &request.certification_request_info;
        (
            info.subject.as_raw().to_vec(),
            info.subject_pki.raw.to_vec(),
        )
    }

    #[tokio::test]
    async fn an_approved_client_request_is_signed_by_the_cluster_ca_and_others_are_not() {
        within(DEADLINE, async {
            let registry = registry().await;
            let client: Arc<dyn Client> = registry.clone();
            let certificates = self_signed();
            let ca = SigningCa::from_pem(
                certificates.ca_pem().as_bytes(),
                certificates.signing_ca().unwrap().cert_pem().as_bytes(),
            );
            assert!(ca.is_err(), "a certificate is not a key");
            let _signer = CsrSigner::start(client.clone(), certificates.signing_ca().unwrap());
            let app = router(registry, "127.0.0.1:6443".into());

            let mut other = csr("carol");
            other["spec"]["signerName"] = json!("example.com/other");
            let mut created = Vec::new();
            for object in [csr("bob"), other, csr("alice")] {
                let (status, body) = send(&app, Method::POST, CSRS, Some(object)).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                created.push(body);
            }
            for (object, verdict) in created.iter().zip(["Denied", "Approved", "Approved"]) {
                let name = object["metadata"]["name"].as_str().unwrap();
                let (status, body) = send(
                    &app,
                    Method::PUT,
                    &format!("{CSRS}/{name}/approval"),
                    Some(approval(object, verdict)),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }

            let der = issued(&*client, "alice").await;
            let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
            let ca_der =
                rustls_pki_types::CertificateDer::from_pem_slice(certificates.ca_pem().as_bytes())
                    .unwrap();
            let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
            certificate
                .verify_signature(Some(ca.public_key()))
                .expect("signed by the cluster CA");
            assert_eq!(certificate.issuer(), ca.subject());
            let (subject, public_key) = request_parts(&created[2]);
            assert_eq!(certificate.subject().as_raw(), subject.as_slice());
            assert_eq!(certificate.subject().to_string(), "CN=alice, O=devs");
            assert_eq!(certificate.public_key().raw, public_key.as_slice());
            let usages = certificate.extended_key_usage().unwrap().unwrap().value;
            assert!(usages.client_auth && !usages.server_auth);
            let validity = certificate.validity();
            assert_eq!(
                validity.not_after.timestamp() - validity.not_before.timestamp(),
                86400 + 300
            );

            // Requests are handled in order: bob and carol came before alice.
            assert!(certificate_field(&*client, "bob").await.is_null());
            assert!(certificate_field(&*client, "carol").await.is_null());
        })
        .await;
    }

    #[tokio::test]
    async fn kubectl_over_tls_approves_a_request_and_gets_its_certificate() {
        within(DEADLINE, async {
            let registry = registry().await;
            let client: Arc<dyn Client> = registry.clone();
            let certificates = self_signed();
            let options = ApiServerOptions::default()
                .tls(certificates.tls_config().unwrap())
                .authenticator(
                    StaticTokens::new()
                        .with("admin-token", UserInfo::new("admin", [SUPERUSER_GROUP])),
                );
            let kubectl = Kubectl::serve_with_kubeconfig(registry, options, |kubeconfig| {
                kubeconfig
                    .certificate_authority(certificates.ca_pem())
                    .token("admin-token")
            })
            .await;

            let file = kubectl.write("dave.json", csr("dave").to_string());
            kubectl.ok(&["create", "-f", file.to_str().unwrap()]).await;
            kubectl.ok(&["certificate", "approve", "dave"]).await;
            let der = issued(&*client, "dave").await;
            let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert_eq!(certificate.subject().to_string(), "CN=dave, O=devs");

            let out = kubectl
                .ok(&["get", "csr", "dave", "-o", "jsonpath={.status.certificate}"])
                .await;
            assert!(!out.trim().is_empty());
            let out = kubectl.ok(&["get", "csr", "dave"]).await;
            let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
            assert_eq!(row[3..], ["admin", "24h", "Approved,Issued"], "{out}");
        })
        .await;
    }
}
