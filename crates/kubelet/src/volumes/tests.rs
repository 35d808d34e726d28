use super::*;
use capstan_api::kube_core::params::PostParams;
use capstan_apiserver::registry::Registry;
use capstan_store::memory::MemoryStore;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Issues `token-<n>` valid for the asked lifetime, counting requests.
struct CountingTokens {
    issued: AtomicUsize,
    now: SystemTime,
}

#[async_trait]
impl TokenSource for CountingTokens {
    async fn token(
        &self,
        pod: &Pod,
        service_account: &str,
        audiences: &[String],
        expiration: Duration,
    ) -> Result<IssuedToken, VolumeError> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(IssuedToken {
            token: format!(
                "token-{n}-{}-{service_account}-{}",
                pod.name_any(),
                audiences.join(",")
            ),
            expires: self.now + expiration,
        })
    }
}

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn service_account_pod() -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1",
                     "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "builder",
            "containers": [{"name": "app", "image": "nginx", "volumeMounts": [
                {"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "settings", "mountPath": "/etc/app/mode", "subPath": "mode"},
            ]}],
            "volumes": [
                {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "settings", "configMap": {"name": "settings"}},
            ],
        },
    }))
}

async fn manager(name: &str) -> (VolumeManager, Arc<dyn Client>, Arc<CountingTokens>, PathBuf) {
    let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
    let root = std::env::temp_dir().join(format!("capstan-volumes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let tokens = Arc::new(CountingTokens {
        issued: AtomicUsize::new(0),
        now: SystemTime::now(),
    });
    let manager = VolumeManager::new(root.clone(), client.clone(), Some(tokens.clone()));
    (manager, client, tokens, root)
}

async fn create_config_map(client: &Arc<dyn Client>, name: &str, data: serde_json::Value) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    }))
    .unwrap();
    api.create(&PostParams::default(), &config_map)
        .await
        .unwrap();
}

use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::Api;

#[tokio::test]
async fn the_service_account_volume_holds_the_token_the_ca_and_the_namespace() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (manager, client, tokens, root) = manager("sa").await;
        create_config_map(
            &client,
            "kube-root-ca.crt",
            serde_json::json!({"ca.crt": "PEM"}),
        )
        .await;
        create_config_map(&client, "settings", serde_json::json!({"mode": "fast"})).await;
        let pod = service_account_pod();
        let now = SystemTime::now();
        let volumes = manager.set_up(&pod, now).await.unwrap();
        let dir = volumes.path("kube-api-access-abcde").unwrap();
        assert!(dir.ends_with("pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-abcde"));
        assert_eq!(
            std::fs::read_to_string(dir.join("token")).unwrap(),
            "token-1-web-builder-"
        );
        assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).unwrap(), "PEM");
        assert_eq!(
            std::fs::read_to_string(dir.join("namespace")).unwrap(),
            "default"
        );

        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = volumes.mounts(&pod, container).unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].container_path,
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert!(mounts[0].readonly);
        assert!(!mounts[1].readonly, "emptyDir is writable");
        assert!(mounts[2]
            .host_path
            .ends_with("kubernetes.io~configmap/settings/mode"));
        assert_eq!(
            std::fs::read_to_string(&mounts[2].host_path).unwrap(),
            "fast"
        );

        // The token is due again at 80% of its life, not before.
        assert!(!manager.needs_refresh("uid-1", now + Duration::from_secs(2800)));
        assert!(manager.needs_refresh("uid-1", now + Duration::from_secs(2900)));
        manager
            .set_up(&pod, now + Duration::from_secs(2900))
            .await
            .unwrap();
        assert_eq!(tokens.issued.load(Ordering::SeqCst), 2);
        assert!(std::fs::read_to_string(dir.join("token"))
            .unwrap()
            .starts_with("token-2-"));

        manager.tear_down("uid-1");
        assert!(!root.join("pods/uid-1").exists());
        let _ = std::fs::remove_dir_all(&root);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_missing_config_map_fails_the_mount_unless_optional() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (manager, _client, _tokens, root) = manager("missing").await;
        let mut pod = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-2"},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "cfg", "configMap": {"name": "absent"}}]},
        }));
        let error = manager.set_up(&pod, SystemTime::now()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found"
        );
        pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
            .config_map
            .as_mut()
            .unwrap()
            .optional = Some(true);
        let volumes = manager.set_up(&pod, SystemTime::now()).await.unwrap();
        assert!(volumes.path("cfg").unwrap().is_dir());
        let _ = std::fs::remove_dir_all(&root);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_mount_of_an_undefined_volume_or_an_escaping_sub_path_is_refused() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (manager, _client, _tokens, root) = manager("invalid").await;
        let pod = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-3"},
            "spec": {"containers": [
                {"name": "a", "image": "i", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
                {"name": "b", "image": "i", "volumeMounts": [{"name": "tmp", "mountPath": "/x", "subPath": "../../etc"}]},
            ], "volumes": [{"name": "tmp", "emptyDir": {}}]},
        }));
        let volumes = manager.set_up(&pod, SystemTime::now()).await.unwrap();
        let containers = &pod.spec.as_ref().unwrap().containers;
        assert!(volumes.mounts(&pod, &containers[0]).unwrap_err().to_string().contains("not defined"));
        assert!(volumes.mounts(&pod, &containers[1]).unwrap_err().to_string().contains("subPath"));
        let _ = std::fs::remove_dir_all(&root);
    })
    .await
    .expect("in time");
}

#[test]
fn downward_api_fields_read_the_pod() {
    let pod = pod(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                     "labels": {"b": "2", "a": "1"}, "annotations": {"note": "x\"y"}},
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "node-1"},
    }));
    assert_eq!(sources::field_value(&pod, "metadata.name").unwrap(), "p");
    assert_eq!(
        sources::field_value(&pod, "metadata.labels").unwrap(),
        "a=\"1\"\nb=\"2\""
    );
    assert_eq!(
        sources::field_value(&pod, "metadata.labels['b']").unwrap(),
        "2"
    );
    assert_eq!(
        sources::field_value(&pod, "metadata.annotations").unwrap(),
        "note=\"x\\\"y\""
    );
    assert_eq!(
        sources::field_value(&pod, "spec.nodeName").unwrap(),
        "node-1"
    );
    assert!(sources::field_value(&pod, "spec.bogus").is_err());
}
