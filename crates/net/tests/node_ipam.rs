//! The node IPAM controller against the in-process API server (registry over the memory
//! store): distinct CIDRs, restarts, release on deletion, exhaustion.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use capstan_api::client::Deletion;
use capstan_api::k8s_openapi::api::core::v1::{Event, Node, NodeSpec};
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList, ObjectMeta};
use capstan_api::testing::within;
use capstan_api::{Api, Client, ResourceInfo, WatchStream};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controllers::manager::ControllerManager;
use capstan_net::ipam::controller::{reasons, NodeIpamController, COMPONENT};
use capstan_net::ipam::ClusterCidr;
use capstan_net::IpNet;
use capstan_watch::{InformerFactory, ReflectorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(60);

async fn create_node(client: &Arc<dyn Client>, name: &str, pod_cidr: Option<&str>) -> Node {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: pod_cidr.map(str::to_owned),
            pod_cidrs: pod_cidr.map(|c| vec![c.to_owned()]),
            ..NodeSpec::default()
        }),
        status: None,
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap()
}

async fn delete_node(client: &Arc<dyn Client>, name: &str) {
    Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref()?.pod_cidr.clone()
}

/// Polls until `node` has a podCIDR, and checks `podCIDRs` agrees.
async fn wait_for_cidr(client: &Arc<dyn Client>, name: &str) -> IpNet {
    let api = Api::<Node>::all(client.clone());
    loop {
        let node = api.get(name).await.unwrap();
        if let Some(cidr) = pod_cidr(&node) {
            let spec = node.spec.unwrap();
            assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]), "node {name}");
            return cidr.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until an Event with `reason` is recorded on Node `name`.
async fn wait_for_event(client: &Arc<dyn Client>, name: &str, reason: &str) -> Event {
    let api = Api::<Event>::namespaced(client.clone(), "default");
    loop {
        let events = api.list(&ListParams::default()).await.unwrap();
        if let Some(event) = events.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some("Node")
                && e.reason.as_deref() == Some(reason)
        }) {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One running controller with its own informers and event broadcaster.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    events: EventBroadcaster,
}

impl Running {
    fn start(client: &Arc<dyn Client>, cluster: &str, mask: u8) -> Self {
        Running::start_with(client, client.clone(), cluster, mask)
    }

    /// With the controller writing through `writer` and its informers on `client`.
    fn start_with(
        client: &Arc<dyn Client>,
        writer: Arc<dyn Client>,
        cluster: &str,
        mask: u8,
    ) -> Self {
        let cidrs = ClusterCidr::new(cluster.parse().unwrap(), mask).unwrap();
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let events = EventBroadcaster::new(client.clone(), EventOptions::default());
        let controller =
            NodeIpamController::new(writer, factory, events.recorder(COMPONENT), &cidrs);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            controller
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Running {
            stop: Some(stop),
            task,
            events,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.events.flush().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_cidrs_from_the_controller_manager() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        for i in 0..6 {
            create_node(&client, &format!("node-{i}"), None).await;
        }
        let cidrs = ClusterCidr::new("10.244.0.0/16".parse().unwrap(), 24).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let manager = ControllerManager::new(client.clone()).add(COMPONENT, move |ctx| {
            NodeIpamController::new(ctx.client, ctx.factory, ctx.recorder, &cidrs).run(ctx.shutdown)
        });
        let manager = tokio::spawn(manager.run(async move {
            let _ = stopped.await;
        }));
        // Nodes registered while it runs get theirs too.
        for i in 6..10 {
            create_node(&client, &format!("node-{i}"), None).await;
        }
        let mut seen = HashSet::new();
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        for i in 0..10 {
            let cidr = wait_for_cidr(&client, &format!("node-{i}")).await;
            assert!(cluster.contains(&cidr) && cidr.prefix_len() == 24, "{cidr}");
            assert!(seen.insert(cidr), "{cidr} given twice");
        }
        let _ = stop.send(());
        manager.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_assignments_and_reports_claims_it_cannot_keep() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_node(&client, "kept", Some("10.244.0.0/24")).await;
        create_node(&client, "fresh", None).await;
        // Younger than `kept` (creation timestamps have whole seconds) and claiming the same
        // subnet; and one outside the cluster.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        create_node(&client, "duplicate", Some("10.244.0.0/24")).await;
        create_node(&client, "outside", Some("10.9.0.0/24")).await;

        let first = Running::start(&client, "10.244.0.0/16", 24);
        let fresh = wait_for_cidr(&client, "fresh").await;
        assert_ne!(fresh.to_string(), "10.244.0.0/24");
        let duplicate = wait_for_event(&client, "duplicate", reasons::POD_CIDR_REJECTED).await;
        assert_eq!(duplicate.type_.as_deref(), Some("Warning"));
        assert!(
            duplicate
                .message
                .as_deref()
                .unwrap()
                .contains("node kept holds it"),
            "{duplicate:?}"
        );
        wait_for_event(&client, "outside", reasons::POD_CIDR_REJECTED).await;
        // Later changes of the Node (heartbeats, labels) do not repeat the report.
        let nodes = Api::<Node>::all(client.clone());
        for i in 0..3 {
            let patch = serde_json::json!({"metadata": {"labels": {"beat": i.to_string()}}});
            nodes
                .patch("duplicate", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        create_node(&client, "probe", None).await;
        wait_for_cidr(&client, "probe").await;
        first.stop().await;
        let duplicate = wait_for_event(&client, "duplicate", reasons::POD_CIDR_REJECTED).await;
        assert_eq!(duplicate.count, Some(1), "{duplicate:?}");

        // A new controller rebuilds the same picture from the Nodes.
        let second = Running::start(&client, "10.244.0.0/16", 24);
        create_node(&client, "late", None).await;
        let late = wait_for_cidr(&client, "late").await;
        let api = Api::<Node>::all(client.clone());
        let nodes = api.list(&ListParams::default()).await.unwrap().items;
        let cidr_of = |name: &str| {
            nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name))
                .and_then(pod_cidr)
        };
        assert_eq!(cidr_of("kept").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(cidr_of("fresh"), Some(fresh.to_string()));
        assert_eq!(cidr_of("duplicate").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(cidr_of("outside").as_deref(), Some("10.9.0.0/24"));
        for taken in [
            "10.244.0.0/24".to_owned(),
            fresh.to_string(),
            cidr_of("probe").unwrap(),
        ] {
            assert_ne!(late.to_string(), taken);
        }

        // Deleting the holder of a contested subnet hands it to the remaining claimant, not
        // to a new Node.
        delete_node(&client, "kept").await;
        create_node(&client, "after", None).await;
        let after = wait_for_cidr(&client, "after").await;
        assert_ne!(after.to_string(), "10.244.0.0/24");
        second.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_gives_an_event_and_a_deleted_nodes_cidr_goes_to_the_next_node() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        // Two /24s in a /23.
        let running = Running::start(&client, "10.250.0.0/23", 24);
        create_node(&client, "a", None).await;
        create_node(&client, "b", None).await;
        let a = wait_for_cidr(&client, "a").await;
        let b = wait_for_cidr(&client, "b").await;
        assert_ne!(a, b);

        create_node(&client, "c", None).await;
        let event = wait_for_event(&client, "c", reasons::CIDR_NOT_AVAILABLE).await;
        assert_eq!(
            event.message.as_deref(),
            Some("Node c status is now: CIDRNotAvailable")
        );
        let api = Api::<Node>::all(client.clone());
        assert_eq!(pod_cidr(&api.get("c").await.unwrap()), None);

        // Deleting a frees its subnet, and the waiting node gets it.
        delete_node(&client, "a").await;
        assert_eq!(wait_for_cidr(&client, "c").await, a);

        // Deleting b frees its subnet for a node registered afterwards.
        delete_node(&client, "b").await;
        create_node(&client, "d", None).await;
        assert_eq!(wait_for_cidr(&client, "d").await, b);
        running.stop().await;
    })
    .await
}

/// Passes every call to the registry, but makes Node patches meet trouble: the next
/// `conflicts` ones find the Node changed just before (a label bumped), so they get 409; the
/// next `failures` ones fail with 503 without reaching the registry.
struct Interfering {
    inner: Arc<dyn Client>,
    conflicts: AtomicU32,
    failures: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Client for Interfering {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> capstan_api::Result<DynamicObject> {
        self.inner.get(resource, namespace, name).await
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> capstan_api::Result<ObjectList<DynamicObject>> {
        self.inner.list(resource, namespace, params).await
    }

    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> capstan_api::Result<DynamicObject> {
        self.inner.create(resource, namespace, object, params).await
    }

    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> capstan_api::Result<DynamicObject> {
        self.inner.update(resource, namespace, object, params).await
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> capstan_api::Result<DynamicObject> {
        self.inner
            .update_status(resource, namespace, object, params)
            .await
    }

    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> capstan_api::Result<DynamicObject> {
        if resource.kind() == "Node" {
            if take(&self.conflicts) {
                let bump = serde_json::json!({
                    "metadata": {"labels": {"bumped": uuid::Uuid::new_v4().simple().to_string()}}
                });
                self.inner
                    .patch(
                        resource,
                        None,
                        name,
                        &Patch::Merge(bump),
                        &PatchParams::default(),
                    )
                    .await?;
            } else if take(&self.failures) {
                return Err(capstan_api::Error::ServiceUnavailable {
                    message: "storage is down".into(),
                });
            }
        }
        self.inner
            .patch(resource, namespace, name, patch, params)
            .await
    }

    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> capstan_api::Result<Deletion> {
        self.inner.delete(resource, namespace, name, params).await
    }

    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> capstan_api::Result<WatchStream> {
        self.inner
            .watch(resource, namespace, params, resource_version)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_are_retried_and_a_failed_write_keeps_the_nodes_subnet() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let writer = Arc::new(Interfering {
            inner: client.clone(),
            conflicts: AtomicU32::new(2),
            failures: AtomicU32::new(0),
        });
        let running = Running::start_with(&client, writer.clone(), "10.244.0.0/16", 24);

        // Two conflicts, then the third try lands (one reconcile).
        create_node(&client, "a", None).await;
        assert_eq!(
            wait_for_cidr(&client, "a").await.to_string(),
            "10.244.0.0/24"
        );
        let a = Api::<Node>::all(client.clone()).get("a").await.unwrap();
        assert!(a.metadata.labels.unwrap().contains_key("bumped"));
        assert_eq!(writer.conflicts.load(Ordering::SeqCst), 0);

        // A failed write is reported and retried with the same subnet: the reservation is
        // kept, so the next one is not skipped.
        writer.failures.store(1, Ordering::SeqCst);
        create_node(&client, "b", None).await;
        let event = wait_for_event(&client, "b", reasons::CIDR_ASSIGNMENT_FAILED).await;
        assert!(
            event
                .message
                .as_deref()
                .unwrap()
                .contains("storage is down"),
            "{event:?}"
        );
        assert_eq!(
            wait_for_cidr(&client, "b").await.to_string(),
            "10.244.1.0/24"
        );

        // Three conflicts in a row exhaust one reconcile's tries; the retry succeeds.
        writer.conflicts.store(3, Ordering::SeqCst);
        create_node(&client, "c", None).await;
        wait_for_event(&client, "c", reasons::CIDR_ASSIGNMENT_FAILED).await;
        assert_eq!(
            wait_for_cidr(&client, "c").await.to_string(),
            "10.244.2.0/24"
        );
        running.stop().await;
    })
    .await
}
