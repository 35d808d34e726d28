//! Node registration, Lease heartbeats and node conditions.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::coordination::v1::Lease;
use capstan_api::k8s_openapi::api::core::v1::Node as ApiNode;
use capstan_api::Api;
use capstan_kubelet::{Kubelet, KubeletConfig, KubeletError};
use capstan_runtime::fake::FakeRuntime;
use support::*;

fn ready(node: &ApiNode, kind: &str) -> (String, String) {
    let c = node
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap()
        .clone();
    (c.status, c.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_registered_its_lease_renewed_and_its_conditions_follow_the_runtime() {
    within(LIMIT, async {
        let node = Node::start(vec![]).await;
        let nodes: Api<ApiNode> = Api::all(node.client.clone());
        let leases: Api<Lease> = Api::namespaced(node.client.clone(), "kube-node-lease");
        let registered = nodes.get(NODE).await.unwrap();
        let labels = registered.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], NODE);
        let status = registered.status.clone().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "110");
        let addresses = status.addresses.unwrap();
        assert_eq!(
            (addresses[0].type_.as_str(), addresses[0].address.as_str()),
            ("InternalIP", "192.168.0.10")
        );
        let kinds: Vec<String> = status
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(
            kinds,
            [
                "MemoryPressure",
                "DiskPressure",
                "PIDPressure",
                "NetworkUnavailable",
                "Ready"
            ]
        );
        assert_eq!(ready(&registered, "Ready").0, "True");
        assert!(status
            .node_info
            .unwrap()
            .container_runtime_version
            .starts_with("fake://"));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let lease = loop {
            if let Some(lease) = leases.get_opt(NODE).await.unwrap() {
                break lease;
            }
            assert!(tokio::time::Instant::now() < deadline, "no lease");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
        assert_eq!(lease.metadata.owner_references.unwrap()[0].kind, "Node");
        let first = spec.renew_time.unwrap().0;
        node.advance(10).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let renewed = leases
                .get(NODE)
                .await
                .unwrap()
                .spec
                .unwrap()
                .renew_time
                .unwrap()
                .0;
            if renewed.as_second() == first.as_second() + 10 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "lease not renewed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        node.fake.set_unavailable(Some("socket gone"));
        node.advance(10).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, message) = ready(&nodes.get(NODE).await.unwrap(), "Ready");
            if status == "False" {
                assert!(message.contains("container runtime is down"), "{message}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never NotReady");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.fake.set_unavailable(None);
        node.network.set_down(Some("no conflist"));
        node.advance(10).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let current = nodes.get(NODE).await.unwrap();
            if ready(&current, "NetworkUnavailable").0 == "True" {
                let (status, message) = ready(&current, "Ready");
                assert_eq!(status, "False");
                assert!(message.contains("no conflist"), "{message}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never NetworkUnavailable"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_kubelet_without_its_parts_or_with_a_bad_config_is_refused() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let error = Kubelet::builder(KubeletConfig::new("n1"))
            .client(client.clone())
            .runtime(Arc::new(FakeRuntime::new()))
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, KubeletError::InvalidConfig(m) if m.contains("network plugin")),
            "{error}"
        );
        let error = Kubelet::builder(KubeletConfig::new("Bad_Name"))
            .client(client)
            .runtime(Arc::new(FakeRuntime::new()))
            .network(Arc::new(TestNetwork::default()))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("node name"), "{error}");
    })
    .await;
}
