//! The credentials a Pod gets from its service account, used against the API server and the
//! kubelet, and what refuses them.

use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Node};
use capstan_api::testing::within;
use capstan_api::Api;
use serde_json::json;

use crate::support::{curl, Harness};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// POSTs a SelfSubjectReview to `server` with `token`; returns the status and the body.
async fn who_am_i(server: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        &format!("{server}/apis/authentication.k8s.io/v1/selfsubjectreviews"),
    ])
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| json!({ "raw": body })),
    )
}

fn username(review: &serde_json::Value) -> &str {
    review["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_tokens_authenticate_until_the_pod_goes_and_the_kubelet_refuses_strangers() {
    within(Duration::from_secs(170), async {
        let h = Harness::start("accounts", 1).await;
        let server = h.cluster().url();
        let created = h.kubectl(&["create", "namespace", "team"]).await;
        assert!(created.ok(), "{created:?}");
        let account = h
            .kubectl_until(&["get", "sa", "default", "-n", "team"], "default")
            .await;
        assert!(account.ok(), "kubectl get sa default: {account:?}");
        h.run_pod(
            "team",
            json!({
                "metadata": {"name": "client"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                }]},
            }),
        )
        .await;

        // The projected volume: a JWT, the CA bundle and the namespace.
        let token = h
            .kubectl(&[
                "exec",
                "-n",
                "team",
                "client",
                "--",
                "cat",
                &format!("{SA_DIR}/token"),
            ])
            .await;
        assert!(token.ok(), "{token:?}");
        let token = token.stdout.trim().to_string();
        let parts: Vec<&str> = token.split('.').collect();
        assert!(
            parts.len() == 3 && parts.iter().all(|p| !p.is_empty()),
            "a JWT: {token:?}"
        );
        let ca = h
            .kubectl(&[
                "exec",
                "-n",
                "team",
                "client",
                "--",
                "cat",
                &format!("{SA_DIR}/ca.crt"),
            ])
            .await;
        assert!(ca.ok(), "ca.crt is there: {ca:?}");
        // The namespace's `kube-root-ca.crt` (an empty bundle over plain HTTP).
        let root_ca = Api::<ConfigMap>::namespaced(h.cluster().client(), "team")
            .get("kube-root-ca.crt")
            .await
            .unwrap();
        assert_eq!(
            Some(&ca.stdout),
            root_ca.data.as_ref().and_then(|d| d.get("ca.crt")),
            "ca.crt is the namespace's root CA bundle"
        );
        let namespace = h
            .kubectl(&[
                "exec",
                "-n",
                "team",
                "client",
                "--",
                "cat",
                &format!("{SA_DIR}/namespace"),
            ])
            .await;
        assert_eq!(namespace.stdout, "team", "{namespace:?}");

        // The token is the Pod's account, bound to the Pod.
        let (status, review) = who_am_i(&server, &token).await;
        assert_eq!(status, 201, "{review}");
        assert_eq!(username(&review), "system:serviceaccount:team:default");
        assert_eq!(
            review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
            json!(["client"]),
            "{review}"
        );

        // `kubectl create token` gives a token that authenticates too.
        let minted = h
            .kubectl(&["create", "token", "default", "-n", "team"])
            .await;
        assert!(minted.ok(), "{minted:?}");
        let (status, review) = who_am_i(&server, minted.stdout.trim()).await;
        assert_eq!(status, 201, "{review}");
        assert_eq!(username(&review), "system:serviceaccount:team:default");
        let (status, _) = who_am_i(&server, "not-a-token").await;
        assert_eq!(status, 401);

        // The kubelet's API: health for everyone, the rest only with a valid token.
        let node: Node = Api::<Node>::all(h.cluster().client())
            .get("node01")
            .await
            .unwrap();
        let status = node.status.unwrap();
        let ip = status
            .addresses
            .unwrap()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .unwrap()
            .address;
        let port = status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        let kubelet = format!("http://{ip}:{port}");
        let (status, body) = curl(&[&format!("{kubelet}/healthz")]).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, body) = curl(&[&format!("{kubelet}/pods")]).await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = curl(&[
            "-H",
            "Authorization: Bearer not-a-token",
            &format!("{kubelet}/pods"),
        ])
        .await;
        assert_eq!(status, 401, "{body}");
        // The embedded cluster authorizes every authenticated caller (no RBAC), so the
        // kubelet's review of `nodes/proxy` allows a service account too.
        let (status, body) = curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{kubelet}/pods"),
        ])
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"PodList\""), "{body}");

        // Once the Pod is gone, its token is refused.
        let deleted = h.kubectl(&["delete", "pod", "client", "-n", "team"]).await;
        assert!(deleted.ok(), "{deleted:?}");
        let (status, review) = who_am_i(&server, &token).await;
        assert_eq!(status, 401, "{review}");
        h.shutdown().await;
    })
    .await;
}
