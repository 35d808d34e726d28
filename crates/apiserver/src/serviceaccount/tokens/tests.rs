use super::*;
use crate::registry::test_support::{within, LIMIT};
use crate::serviceaccount::{ServiceAccountKeys, DEFAULT_ISSUER};
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::kube_core::DynamicObject;

struct Fixture {
    client: Arc<dyn Client>,
    tokens: ServiceAccountTokens,
}

async fn create(
    client: &Arc<dyn Client>,
    kind: &str,
    namespace: Option<&str>,
    object: Value,
) -> Value {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let created = client
        .create(&info(kind), namespace, object, &PostParams::default())
        .await
        .unwrap();
    serde_json::to_value(created).unwrap()
}

async fn fixture() -> Fixture {
    let client = crate::testing::client();
    create(
        &client,
        "ServiceAccount",
        Some("default"),
        json!({"metadata": {"name": "builder"}}),
    )
    .await;
    let issuer = TokenIssuer::new(ServiceAccountKeys::generate().unwrap())
        .max_expiration(Duration::from_secs(48 * 3600));
    let tokens = ServiceAccountTokens::new(issuer, client.clone());
    Fixture { client, tokens }
}

async fn pod(client: &Arc<dyn Client>, name: &str, account: &str) -> Value {
    create(
        client,
        "Pod",
        Some("default"),
        json!({"metadata": {"name": name}, "spec": {
            "serviceAccountName": account,
            "containers": [{"name": "app", "image": "nginx"}]}}),
    )
    .await
}

#[tokio::test]
async fn a_token_request_gets_a_token_for_the_api_audience_lasting_an_hour() {
    within(LIMIT, async {
        let f = fixture().await;
        let now = SystemTime::now();
        let answer = f
            .tokens
            .create_token_at("default", "builder", json!({}), now)
            .await
            .unwrap();
        assert_eq!(answer["kind"], "TokenRequest");
        assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(answer["metadata"]["name"], "builder");
        assert_eq!(answer["spec"]["audiences"], json!([DEFAULT_ISSUER]));
        assert_eq!(answer["spec"]["expirationSeconds"], 3600);
        assert_eq!(
            answer["status"]["expirationTimestamp"],
            format_rfc3339(now + Duration::from_secs(3600))
        );
        let token = answer["status"]["token"].as_str().unwrap();
        let user = f.tokens.authenticate_at(token, now).await.unwrap().unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:builder");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:default"]
        );
        let account = f
            .client
            .get(&info("ServiceAccount"), Some("default"), "builder")
            .await
            .unwrap();
        assert_eq!(Some(user.uid), account.metadata.uid);
        assert!(user.extra[crate::serviceaccount::extra::CREDENTIAL_ID][0].starts_with("JTI="));
    })
    .await;
}

#[tokio::test]
async fn expiration_seconds_under_ten_minutes_is_invalid_and_long_ones_are_capped() {
    within(LIMIT, async {
        let f = fixture().await;
        let error = f
            .tokens
            .create_token(
                "default",
                "builder",
                json!({"spec": {"expirationSeconds": 300}}),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), 422);
        assert_eq!(
            error.to_string(),
            "TokenRequest.authentication.k8s.io \"builder\" is invalid: spec.expirationSeconds: \
             Invalid value: 300: may not specify a duration less than 10 minutes"
        );
        let error = f
            .tokens
            .create_token(
                "default",
                "builder",
                json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}}),
            )
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("larger than 2^32 seconds"),
            "{error}"
        );
        let capped = f
            .tokens
            .create_token(
                "default",
                "builder",
                json!({"spec": {"expirationSeconds": 7 * 24 * 3600, "audiences": ["vault"]}}),
            )
            .await
            .unwrap();
        assert_eq!(capped["spec"]["expirationSeconds"], 48 * 3600);
        assert_eq!(capped["spec"]["audiences"], json!(["vault"]));
    })
    .await;
}

#[tokio::test]
async fn a_missing_account_is_not_found() {
    within(LIMIT, async {
        let f = fixture().await;
        let error = f
            .tokens
            .create_token("default", "nobody", json!({}))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "serviceaccounts \"nobody\" not found");
    })
    .await;
}

#[tokio::test]
async fn a_bound_pod_must_exist_run_as_the_account_and_have_the_uid_given() {
    within(LIMIT, async {
        let f = fixture().await;
        let web = pod(&f.client, "web", "builder").await;
        pod(&f.client, "other", "default").await;
        let uid = web["metadata"]["uid"].as_str().unwrap();
        let bind = |name: &str, uid: &str| {
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}}})
        };
        let missing = f
            .tokens
            .create_token("default", "builder", bind("gone", ""))
            .await
            .unwrap_err();
        assert_eq!(missing.to_string(), "pods \"gone\" not found");
        let other = f
            .tokens
            .create_token("default", "builder", bind("other", ""))
            .await
            .unwrap_err();
        assert_eq!(
            other.to_string(),
            "cannot bind token for serviceaccount \"builder\" to pod running with serviceaccount \"default\""
        );
        let stale = f
            .tokens
            .create_token("default", "builder", bind("web", "not-the-uid"))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), 409);
        assert!(stale.to_string().contains(
            "the UID in the bound object reference (not-the-uid) does not match the UID in record"
        ));
        let kind = f
            .tokens
            .create_token(
                "default",
                "builder",
                json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}}),
            )
            .await
            .unwrap_err();
        assert_eq!(kind.to_string(), "cannot bind token to object of type /v1, Kind=ConfigMap");

        let answer = f
            .tokens
            .create_token("default", "builder", bind("web", uid))
            .await
            .unwrap();
        let token = answer["status"]["token"].as_str().unwrap();
        let user = f.tokens.authenticate(token).await.unwrap().unwrap();
        assert_eq!(user.extra[crate::serviceaccount::extra::POD_NAME], ["web"]);
        assert_eq!(user.extra[crate::serviceaccount::extra::POD_UID], [uid]);
        // Once the pod is gone, so is the token.
        f.client
            .delete(&info("Pod"), Some("default"), "web", &DeleteParams::default())
            .await
            .unwrap();
        let refused = f.tokens.authenticate(token).await.unwrap_err();
        assert!(matches!(refused, TokenError::Gone { kind: "Pod", .. }), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn a_token_dies_with_its_account_even_if_one_of_the_same_name_comes_back() {
    within(LIMIT, async {
        let f = fixture().await;
        let answer = f
            .tokens
            .create_token("default", "builder", json!({}))
            .await
            .unwrap();
        let token = answer["status"]["token"].as_str().unwrap();
        f.client
            .delete(&info("ServiceAccount"), Some("default"), "builder", &DeleteParams::default())
            .await
            .unwrap();
        let gone = f.tokens.authenticate(token).await.unwrap_err();
        assert!(matches!(gone, TokenError::Gone { why, .. } if why == "not found"));
        create(&f.client, "ServiceAccount", Some("default"), json!({"metadata": {"name": "builder"}})).await;
        let replaced = f.tokens.authenticate(token).await.unwrap_err();
        assert!(
            matches!(&replaced, TokenError::Gone { why, .. } if why.contains("does not match claim")),
            "{replaced:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn other_bearer_tokens_are_left_to_other_authenticators() {
    within(LIMIT, async {
        let f = fixture().await;
        assert_eq!(
            f.tokens.authenticate("static-admin-token").await.unwrap(),
            None
        );
        // A JWT of another issuer is not ours either.
        let other =
            TokenIssuer::new(ServiceAccountKeys::generate().unwrap()).issuer("https://elsewhere");
        let foreign = other
            .sign(TokenClaims::new(
                "default",
                ObjectRef::default(),
                vec![DEFAULT_ISSUER.into()],
                SystemTime::now(),
                Duration::from_secs(600),
            ))
            .unwrap();
        assert_eq!(f.tokens.authenticate(&foreign).await.unwrap(), None);
    })
    .await;
}

#[test]
fn timestamps_round_trip_through_rfc3339() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(format_rfc3339(time), "2023-11-14T22:13:20Z");
    assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(time));
    assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456Z"), Some(time));
    assert_eq!(
        parse_rfc3339("2000-02-29T00:00:00Z")
            .map(format_rfc3339)
            .as_deref(),
        Some("2000-02-29T00:00:00Z")
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}

#[test]
fn an_object_deleted_within_the_last_minute_still_counts() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let at = |seconds_ago: u64| json!({"metadata": {"deletionTimestamp": format_rfc3339(now - Duration::from_secs(seconds_ago))}});
    assert!(!deleted_before_grace(&json!({"metadata": {}}), now));
    assert!(!deleted_before_grace(&at(30), now));
    assert!(deleted_before_grace(&at(61), now));
}
