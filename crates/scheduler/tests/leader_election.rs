//! Two scheduler replicas under leader election: one schedules at a time, and the standby
//! takes over when the leader dies. Paused clock, in-process registry.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions, EventRecorder};
use capstan_controller::leader::{LeaderElectionConfig, LeaderElector};
use capstan_scheduler::{default_framework, Scheduler};
use serde_json::json;

/// Runs a replica named `identity` for ever: stands for every term with a new scheduler.
fn replica(
    client: Arc<dyn Client>,
    recorder: EventRecorder,
    identity: &'static str,
) -> tokio::task::JoinHandle<()> {
    let elector = LeaderElector::new(
        Api::namespaced(client.clone(), "kube-system"),
        "kube-scheduler",
        identity,
        LeaderElectionConfig::default(),
    )
    .unwrap();
    tokio::spawn(async move {
        loop {
            let (client, recorder) = (client.clone(), recorder.clone());
            Scheduler::run_leading(&elector, client.clone(), std::future::pending(), || {
                Scheduler::new(
                    client.clone(),
                    default_framework(client, recorder.clone()).unwrap(),
                    recorder,
                )
            })
            .await;
        }
    })
}

async fn create_pods(pods: &Api<Pod>, names: impl IntoIterator<Item = String>) {
    for name in names {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
}

async fn wait_bound(pods: &Api<Pod>, count: usize) {
    loop {
        let list = pods.list(&Default::default()).await.unwrap();
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        if bound == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_schedules_and_the_standby_takes_over_when_it_dies() {
    tokio::time::timeout(Duration::from_secs(600), async {
        let client = capstan_apiserver::testing::client();
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(1000),
        );
        let nodes: Api<Node> = Api::cluster(client.clone());
        let mut node: Node =
            serde_json::from_value(json!({"metadata": {"name": "node01"}})).unwrap();
        node = nodes.create(&PostParams::default(), &node).await.unwrap();
        node.status = Some(
            serde_json::from_value(
                json!({"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}),
            )
            .unwrap(),
        );
        nodes
            .update_status(&PostParams::default(), &node)
            .await
            .unwrap();

        let first = replica(client.clone(), events.recorder("first"), "first");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = replica(client.clone(), events.recorder("second"), "second");

        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        create_pods(&pods, (0..5).map(|i| format!("before-{i}"))).await;
        wait_bound(&pods, 5).await;

        // The leader dies without releasing its Lease; the standby waits for it to expire.
        first.abort();
        create_pods(&pods, (0..5).map(|i| format!("after-{i}"))).await;
        wait_bound(&pods, 10).await;
        second.abort();

        events.flush().await;
        let scheduled: Vec<(String, String)> = events
            .history()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .map(|e| {
                (
                    e.involved_object.name.unwrap_or_default(),
                    e.source.and_then(|s| s.component).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            scheduled.len(),
            10,
            "one Scheduled event per pod: {scheduled:?}"
        );
        for (pod, by) in &scheduled {
            let expected = if pod.starts_with("before-") {
                "first"
            } else {
                "second"
            };
            assert_eq!(by, expected, "{pod} was scheduled by {by}");
        }
    })
    .await
    .expect("the test timed out");
}
