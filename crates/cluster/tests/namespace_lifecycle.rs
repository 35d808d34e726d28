//! The embedded cluster's namespaces: the system namespaces and the `kubernetes` Service exist
//! from the start, and deleting a namespace with Pods and ConfigMaps in it takes its content
//! with it (the namespace controller) before the Namespace goes.

use std::path::PathBuf;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::testing::{eventually, within};
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
async fn a_deleted_namespace_takes_its_pods_and_config_maps_with_it() {
    within(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-namespaces-{nonce}"));
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

        let namespaces: Api<Namespace> = Api::all(client.clone());
        for system in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(
                namespaces.get_opt(system).await.unwrap().is_some(),
                "{system}"
            );
        }
        let kubernetes = Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await
            .unwrap();
        assert_eq!(
            kubernetes.spec.unwrap().cluster_ip.as_deref(),
            Some("10.96.0.1")
        );

        let pp = PostParams::default();
        let team: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
        namespaces.create(&pp, &team).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
        let configs: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
        for i in 0..5 {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("web-{i}")},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            }))
            .unwrap();
            pods.create(&pp, &pod).await.unwrap();
            let config: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("settings-{i}")}}))
                    .unwrap();
            configs.create(&pp, &config).await.unwrap();
        }

        namespaces
            .delete("team", &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            Duration::from_secs(90),
            "the namespace and its content gone",
            || async { namespaces.get_opt("team").await.is_ok_and(|n| n.is_none()) },
        )
        .await;
        let all_pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(
            all_pods
                .items
                .iter()
                .all(|p| p.metadata.namespace.as_deref() != Some("team")),
            "no Pod of team is left"
        );
        let all_configs = Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(all_configs
            .items
            .iter()
            .all(|c| c.metadata.namespace.as_deref() != Some("team")));
        cluster.shutdown().await;
    })
    .await;
}
