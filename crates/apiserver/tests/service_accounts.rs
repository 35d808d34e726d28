//! Service accounts over HTTP with the real kubectl: TokenRequest (`kubectl create token`),
//! the tokens as bearer credentials (`kubectl auth whoami`), their refusal once the account or
//! the bound Pod is gone, the ServiceAccount admission's projected volume, and the issuer's
//! OpenID documents.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::DynamicObject;
use capstan_api::testing::within;
use capstan_api::{Client, ResourceInfo};
use capstan_apiserver::http::layers::ApiServerOptions;
use capstan_apiserver::http::router;
use capstan_apiserver::registry::Registry;
use capstan_apiserver::serviceaccount::{
    ServiceAccountAdmission, ServiceAccountKeys, ServiceAccountTokens, TokenIssuer, DEFAULT_ISSUER,
    TOKEN_MOUNT_PATH,
};
use capstan_store::memory::MemoryStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::kubectl::Kubectl;
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_secs(120);

/// A server whose registry runs the ServiceAccount admission and issues and authenticates
/// service account tokens, with the `default` account of `default` created.
async fn server() -> (Kubectl, Arc<Registry>, Router) {
    let store: Arc<dyn capstan_store::Store> = Arc::new(MemoryStore::new());
    let registry =
        Arc::new(Registry::new(store.clone()).add_admission(ServiceAccountAdmission::new(store)));
    let issuer = TokenIssuer::new(ServiceAccountKeys::generate().unwrap());
    let options = ApiServerOptions::default()
        .service_account_tokens(ServiceAccountTokens::new(issuer, registry.clone()));
    let kubectl = Kubectl::serve_with(registry.clone(), options.clone()).await;
    // The same server in process, for requests with bearer tokens: kubectl sends none over
    // plain HTTP.
    let app = options.apply(router(registry.clone(), kubectl.address().to_string()));
    create(
        &registry,
        "ServiceAccount",
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    (kubectl, registry, app)
}

async fn create(registry: &Arc<Registry>, kind: &str, object: Value) -> Value {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let created = registry
        .create(
            &ResourceInfo::builtin("", kind).unwrap(),
            Some("default"),
            object,
            &PostParams::default(),
        )
        .await
        .unwrap();
    serde_json::to_value(created).unwrap()
}

/// The claims of a JWT, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `kubectl auth whoami` as `token` would ask it: the SelfSubjectReview, or the refusal's
/// status code and message.
async fn whoami(app: &Router, token: &str) -> Result<Value, (StatusCode, String)> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
                .to_string(),
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status == StatusCode::CREATED {
        Ok(body)
    } else {
        Err((
            status,
            body["message"].as_str().unwrap_or_default().to_string(),
        ))
    }
}

fn unauthorized<T: std::fmt::Debug>(outcome: Result<T, (StatusCode, String)>) {
    match outcome {
        Err((StatusCode::UNAUTHORIZED, message)) => assert_eq!(message, "Unauthorized"),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_create_token_gives_a_token_that_authenticates_as_the_account() {
    within(DEADLINE, async {
        let (kubectl, registry, app) = server().await;
        assert!(kubectl
            .ok(&["get", "sa", "default"])
            .await
            .contains("default"));
        let token = kubectl.ok(&["create", "token", "default"]).await;
        let token = token.trim();
        let claims = claims(token);
        assert_eq!(claims["iss"], DEFAULT_ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(claims["aud"], json!([DEFAULT_ISSUER]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        let account = registry
            .get(
                &ResourceInfo::builtin("", "ServiceAccount").unwrap(),
                Some("default"),
                "default",
            )
            .await
            .unwrap();
        assert_eq!(
            claims["kubernetes.io"],
            json!({"namespace": "default", "serviceaccount": {
                "name": "default", "uid": account.metadata.uid.clone().unwrap()}})
        );

        let review = whoami(&app, token).await.unwrap();
        let user = &review["status"]["userInfo"];
        assert_eq!(user["username"], "system:serviceaccount:default:default");
        assert_eq!(user["uid"], json!(account.metadata.uid.unwrap()));
        assert_eq!(
            user["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ])
        );
        assert_eq!(
            user["extra"]["authentication.kubernetes.io/credential-id"],
            json!([format!("JTI={}", claims["jti"].as_str().unwrap())])
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_for_another_audience_and_duration_is_issued_but_not_accepted_here() {
    within(DEADLINE, async {
        let (kubectl, _registry, app) = server().await;
        let token = kubectl
            .ok(&["create", "token", "default", "--audience=x", "--duration=10m"])
            .await;
        let claims = claims(token.trim());
        assert_eq!(claims["aud"], json!(["x"]));
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);
        unauthorized(whoami(&app, token.trim()).await);
        let short = kubectl
            .fails(&["create", "token", "default", "--duration=5m"])
            .await;
        assert!(
            short.contains(
                "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
            ),
            "{short}"
        );
        let missing = kubectl.fails(&["create", "token", "nobody"]).await;
        assert!(
            missing.contains("serviceaccounts \"nobody\" not found"),
            "{missing}"
        );
    })
    .await;
}

#[tokio::test]
async fn tokens_die_with_their_account_and_their_bound_pod() {
    within(DEADLINE, async {
        let (kubectl, registry, app) = server().await;
        create(
            &registry,
            "Pod",
            json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}),
        )
        .await;
        let bound = kubectl
            .ok(&[
                "create",
                "token",
                "default",
                "--bound-object-kind=Pod",
                "--bound-object-name=web",
            ])
            .await;
        let bound = bound.trim().to_string();
        let plain = kubectl.ok(&["create", "token", "default"]).await;
        let plain = plain.trim().to_string();
        let review = whoami(&app, &bound).await.unwrap();
        assert_eq!(
            review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
            json!(["web"])
        );
        kubectl.ok(&["delete", "pod", "web"]).await;
        unauthorized(whoami(&app, &bound).await);
        // The unbound token still works, until its account is deleted.
        whoami(&app, &plain).await.unwrap();
        kubectl.ok(&["delete", "sa", "default"]).await;
        unauthorized(whoami(&app, &plain).await);
        // An account of the same name is another account.
        kubectl.ok(&["create", "sa", "default"]).await;
        unauthorized(whoami(&app, &plain).await);
    })
    .await;
}

#[tokio::test]
async fn garbage_and_forged_tokens_are_unauthorized() {
    within(DEADLINE, async {
        let (kubectl, _registry, app) = server().await;
        unauthorized(whoami(&app, "garbage").await);
        // A token signed by another key, claiming the same issuer.
        let stranger = TokenIssuer::new(ServiceAccountKeys::generate().unwrap());
        let forged = stranger
            .sign(capstan_apiserver::serviceaccount::TokenClaims::new(
                "default",
                Default::default(),
                vec![DEFAULT_ISSUER.into()],
                std::time::SystemTime::now(),
                Duration::from_secs(600),
            ))
            .unwrap();
        unauthorized(whoami(&app, &forged).await);
        // Without a token, the plain HTTP server's anonymous access is unchanged.
        kubectl.ok(&["get", "pods"]).await;
    })
    .await;
}

#[tokio::test]
async fn admission_mounts_the_projected_token_unless_automount_is_off() {
    within(DEADLINE, async {
        let (kubectl, _registry, _app) = server().await;
        let manifest = kubectl.write(
            "pods.json",
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                 "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet"},
                 "spec": {"automountServiceAccountToken": false,
                          "containers": [{"name": "app", "image": "nginx"}]}},
            ]})
            .to_string(),
        );
        kubectl
            .ok(&["create", "-f", manifest.to_str().unwrap()])
            .await;
        let web: Value =
            serde_json::from_str(&kubectl.ok(&["get", "pod", "web", "-o", "json"]).await).unwrap();
        let spec = &web["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        let volume = &spec["volumes"][0];
        let name = volume["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == 21, "{name}");
        assert_eq!(
            volume["projected"],
            json!({
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            })
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([{"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}])
        );
        let quiet: Value =
            serde_json::from_str(&kubectl.ok(&["get", "pod", "quiet", "-o", "json"]).await)
                .unwrap();
        assert_eq!(quiet["spec"]["serviceAccountName"], "default");
        assert!(quiet["spec"].get("volumes").is_none(), "{quiet}");
        assert!(quiet["spec"]["containers"][0].get("volumeMounts").is_none());

        let manifest = kubectl.write(
            "stranger.json",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranger"},
                   "spec": {"serviceAccountName": "builder",
                            "containers": [{"name": "app", "image": "nginx"}]}})
            .to_string(),
        );
        let refused = kubectl
            .fails(&["create", "-f", manifest.to_str().unwrap()])
            .await;
        assert!(
            refused.contains(
                "pods \"stranger\" is forbidden: error looking up service account default/builder: serviceaccount \"builder\" not found"
            ),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_issuer_serves_its_openid_configuration_and_keys() {
    within(DEADLINE, async {
        let (kubectl, _registry, _app) = server().await;
        let configuration: Value = serde_json::from_str(
            &kubectl
                .ok(&["get", "--raw", "/.well-known/openid-configuration"])
                .await,
        )
        .unwrap();
        assert_eq!(configuration["issuer"], DEFAULT_ISSUER);
        assert_eq!(
            configuration["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert!(configuration["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/openid/v1/jwks"));
        let jwks: Value =
            serde_json::from_str(&kubectl.ok(&["get", "--raw", "/openid/v1/jwks"]).await).unwrap();
        let token = kubectl.ok(&["create", "token", "default"]).await;
        let header = token.trim().split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
    })
    .await;
}

#[tokio::test]
async fn without_service_account_tokens_the_token_subresource_is_not_allowed() {
    within(DEADLINE, async {
        let kubectl = Kubectl::start().await;
        let refused = kubectl.fails(&["create", "token", "default"]).await;
        assert!(
            refused.contains("not allow") || refused.contains("MethodNotAllowed"),
            "{refused}"
        );
        let missing = kubectl.fails(&["get", "--raw", "/openid/v1/jwks"]).await;
        assert!(
            missing.contains("NotFound") || missing.contains("not found"),
            "{missing}"
        );
    })
    .await;
}

/// `kubectl auth whoami` itself, over HTTPS (kubectl sends bearer tokens over TLS only).
#[cfg(feature = "tls")]
#[tokio::test]
async fn kubectl_auth_whoami_names_the_service_account_over_https() {
    use capstan_apiserver::http::tls::selfsigned::{CertDir, ServingNames};
    within(DEADLINE, async {
        let dir = std::env::temp_dir().join(format!("sa-tls-{}", std::process::id()));
        let pki = CertDir::new(&dir)
            .load_or_generate(&ServingNames::kubernetes("127.0.0.1".parse().unwrap()))
            .unwrap();
        let store: Arc<dyn capstan_store::Store> = Arc::new(MemoryStore::new());
        let registry = Arc::new(
            Registry::new(store.clone()).add_admission(ServiceAccountAdmission::new(store)),
        );
        let issuer = TokenIssuer::new(ServiceAccountKeys::generate().unwrap());
        let tokens = ServiceAccountTokens::new(issuer, registry.clone());
        let options = ApiServerOptions::default()
            .tls(pki.tls_config().unwrap())
            .service_account_tokens(tokens.clone());
        create(
            &registry,
            "ServiceAccount",
            json!({"metadata": {"name": "default"}}),
        )
        .await;
        let answer = tokens
            .create_token("default", "default", json!({}))
            .await
            .unwrap();
        let token = answer["status"]["token"].as_str().unwrap().to_string();
        let ca = pki.ca_pem().to_string();
        let kubectl = Kubectl::serve_with_kubeconfig(registry, options, |kubeconfig| {
            kubeconfig.certificate_authority(&ca).token(&token)
        })
        .await;
        let table = kubectl.ok(&["auth", "whoami"]).await;
        assert!(
            table.contains("system:serviceaccount:default:default"),
            "{table}"
        );
        assert!(table.contains("system:serviceaccounts:default"), "{table}");
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}
