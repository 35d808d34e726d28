//! Service accounts in the embedded cluster: every namespace gets its `default` account and
//! its `kube-root-ca.crt` from the controller manager, and a Pod created in a new namespace
//! right away is admitted with the projected token volume and runs.

use std::path::PathBuf;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::testing::{eventually, eventually_some, within};
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(150);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_get_their_default_account_and_root_ca_and_pods_mount_a_token() {
    within(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-service-accounts-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _dir = TempDir(dir.clone());
        let mut config =
            ClusterConfig::fake("127.0.0.1:0".parse().unwrap(), dir.join("kubeconfig"), 1);
        config.state_dir = dir.join("nodes");
        let cluster = EmbeddedCluster::start(config)
            .await
            .expect("the cluster starts");
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .await
            .expect("the node becomes Ready");
        let client = cluster.client();
        let limit = Duration::from_secs(60);

        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let first = eventually_some(limit, "the default account", || async {
            accounts.get_opt("default").await.unwrap()
        })
        .await;
        accounts
            .delete("default", &DeleteParams::default())
            .await
            .unwrap();
        eventually(limit, "the default account, created again", || async {
            accounts
                .get_opt("default")
                .await
                .unwrap()
                .is_some_and(|account| account.metadata.uid != first.metadata.uid)
        })
        .await;
        // Plain HTTP: the bundle is empty, but the ConfigMap is there for the Pods' volumes.
        let root_ca = eventually_some(limit, "kube-root-ca.crt", || async {
            Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
                .get_opt("kube-root-ca.crt")
                .await
                .unwrap()
        })
        .await;
        assert_eq!(
            root_ca.data.unwrap().get("ca.crt").map(String::as_str),
            Some("")
        );

        // A Pod in a namespace created just before: admitted once its account exists.
        let pp = PostParams::default();
        let team: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&pp, &team)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
        }))
        .unwrap();
        let created = pods.create(&pp, &pod).await.unwrap();
        let spec = created.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        let volume = &spec.volumes.unwrap()[0];
        assert!(
            volume.name.starts_with("kube-api-access-"),
            "{}",
            volume.name
        );
        assert!(volume.projected.is_some());
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(
            mounts[0].mount_path,
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        eventually(limit, "the pod running", || async {
            pods.get("web")
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Running")
        })
        .await;

        // A Pod naming an account that does not exist is refused.
        let stranger: Pod = serde_json::from_value(json!({
            "metadata": {"name": "stranger"},
            "spec": {"serviceAccountName": "builder",
                     "containers": [{"name": "app", "image": "nginx:1.27"}]},
        }))
        .unwrap();
        let refused = pods.create(&pp, &stranger).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("error looking up service account team/builder"),
            "{refused}"
        );
        cluster.shutdown().await;
    })
    .await;
}
