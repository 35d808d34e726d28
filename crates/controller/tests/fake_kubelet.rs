//! The fake kubelet of `capstan_controller::testing` against the registry's graceful Pod
//! deletion: a deleted Pod it runs gets `Killing` per container, then goes for good.

use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::Api;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, KubeletOptions};

#[tokio::test(start_paused = true)]
async fn the_fake_kubelet_records_killing_per_container_then_finishes_the_graceful_deletion() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let client = capstan_apiserver::testing::client();
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

#[tokio::test(start_paused = true)]
async fn fake_nodes_register_ready_nodes_and_keep_renewing_their_leases() {
    use capstan_api::k8s_openapi::api::coordination::v1::Lease;
    use capstan_api::k8s_openapi::api::core::v1::Node;
    use capstan_controller::testing::{FakeNodes, NODE_LEASE_NAMESPACE, NODE_LEASE_RENEW_INTERVAL};

    tokio::time::timeout(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        let nodes = FakeNodes::start(client.clone(), vec!["node01".into(), "node02".into()]);
        let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
        let revision = |lease: &Lease| lease.metadata.resource_version.clone();
        let first = loop {
            if let Some(lease) = leases.get_opt("node02").await.unwrap() {
                break lease;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let node = Api::<Node>::all(client.clone())
            .get("node02")
            .await
            .unwrap();
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            first.metadata.owner_references.clone().unwrap()[0].uid,
            node.metadata.uid.unwrap()
        );

        tokio::time::sleep(NODE_LEASE_RENEW_INTERVAL + Duration::from_secs(1)).await;
        let renewed = leases.get("node02").await.unwrap();
        assert_ne!(revision(&renewed), revision(&first), "renewed every 10 s");

        nodes.stop_heartbeats();
        tokio::time::sleep(NODE_LEASE_RENEW_INTERVAL * 3).await;
        let silent = leases.get("node02").await.unwrap();
        assert_eq!(
            revision(&silent),
            revision(&renewed),
            "no renewals once stopped"
        );
    })
    .await
    .expect("the test timed out");
}
