//! The fake kubelet of `capstan_controller::testing` against the registry's graceful Pod
//! deletion: a deleted Pod it runs gets `Killing` per container, then goes for good.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::{Api, Client};
use capstan_apiserver::registry::Registry;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, KubeletOptions};
use capstan_store::memory::MemoryStore;

#[tokio::test(start_paused = true)]
async fn the_fake_kubelet_records_killing_per_container_then_finishes_the_graceful_deletion() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(100),
        );
        let kubelet = FakeKubelet::start(
            client.clone(),
            vec!["node01".into()],
            KubeletOptions {
                events: Some(events.recorder("kubelet")),
                ..KubeletOptions::default()
            },
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": "node01", "containers": [
                {"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}
            ]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        while kubelet.started() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let pending = pods.delete("web", &DeleteParams::default()).await.unwrap();
        assert!(pending.is_pending(), "a running pod is deleted gracefully");
        while pods.get_opt("web").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        events.flush().await;
        let killing: Vec<(String, String)> = events
            .history()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Killing"))
            .map(|e| {
                (
                    e.message.unwrap_or_default(),
                    e.source.and_then(|s| s.host).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            killing,
            [
                ("Stopping container app".to_string(), "node01".to_string()),
                (
                    "Stopping container sidecar".to_string(),
                    "node01".to_string()
                ),
            ]
        );
    })
    .await
    .expect("the test timed out");
}
