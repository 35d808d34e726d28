//! The node lifecycle controller end to end, over the in-process registry on the memory
//! store.
//!
//! Every case runs on tokio's paused clock, with a simulated kubelet per node that renews its
//! Lease every 10 s and posts `Ready: True` when the node is not Ready. The controller stamps
//! times with `tokio_wall_clock`, so timestamps move with virtual time. Assertions are on the
//! recorded Events, and on the Node and Pod histories at every revision.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use capstan_api::k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec, PodStatus,
    Toleration,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use capstan_api::k8s_openapi::jiff::{SignedDuration, Timestamp};
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{Change, ObjectHistory};
use capstan_controllers::node_lifecycle::{
    node_ready_status, tokio_wall_clock, NodeLifecycleController, NodeLifecycleOptions, COMPONENT,
    NODE_LEASE_NAMESPACE,
};
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "default";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// A simulated kubelet's heartbeats: renews the node's Lease every 10 s and posts
/// `Ready: True` whenever the node is not Ready. Stops when dropped.
struct Kubelet {
    task: JoinHandle<()>,
    last_renew: Arc<Mutex<Option<(Instant, Timestamp)>>>,
}

impl Kubelet {
    fn start(client: Arc<dyn Client>, node: &str) -> Self {
        let last_renew: Arc<Mutex<Option<(Instant, Timestamp)>>> = Arc::default();
        let renewed = last_renew.clone();
        let node = node.to_string();
        let clock = tokio_wall_clock();
        let task = tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
            let nodes: Api<Node> = Api::all(client.clone());
            loop {
                let now = clock();
                let mut lease = leases.get_opt(&node).await.unwrap().unwrap_or(Lease {
                    metadata: ObjectMeta {
                        name: Some(node.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec::default()),
                });
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(node.clone());
                spec.lease_duration_seconds = Some(40);
                spec.renew_time = Some(MicroTime(now));
                if lease.metadata.resource_version.is_some() {
                    leases.update(&PostParams::default(), &lease).await.unwrap();
                } else {
                    leases.create(&PostParams::default(), &lease).await.unwrap();
                }
                *renewed.lock() = Some((Instant::now(), now));

                let mut current = nodes.get(&node).await.unwrap();
                if node_ready_status(&current) != Some("True") {
                    let status = current.status.get_or_insert_with(NodeStatus::default);
                    let conditions = status.conditions.get_or_insert_with(Vec::new);
                    *conditions = [
                        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                        ("PIDPressure", "False", "KubeletHasSufficientPID"),
                        ("Ready", "True", "KubeletReady"),
                    ]
                    .into_iter()
                    .map(|(type_, status, reason)| NodeCondition {
                        type_: type_.into(),
                        status: status.into(),
                        reason: Some(reason.into()),
                        last_heartbeat_time: Some(Time(now)),
                        last_transition_time: Some(Time(now)),
                        ..NodeCondition::default()
                    })
                    .collect();
                    // A conflict is retried on the next beat.
                    let _ = nodes.update_status(&PostParams::default(), &current).await;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        Kubelet { task, last_renew }
    }

    /// When it last renewed the Lease: the virtual instant and the wall time it wrote.
    fn last_renew(&self) -> (Instant, Timestamp) {
        self.last_renew.lock().expect("renewed at least once")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cluster: the registry, Node and Pod histories, and the running controller.
struct Cluster {
    client: Arc<dyn Client>,
    nodes: ObjectHistory<Node>,
    pods: ObjectHistory<Pod>,
    events: EventBroadcaster,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Cluster {
    async fn start(node_names: &[&str]) -> Self {
        let client = capstan_apiserver::testing::client();
        let nodes = ObjectHistory::<Node>::record(client.clone());
        let pods = ObjectHistory::<Pod>::record(client.clone());
        let node_api: Api<Node> = Api::all(client.clone());
        for name in node_names {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            node_api
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        }
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(10_000),
        );
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let controller = NodeLifecycleController::new(
            client.clone(),
            factory,
            events.recorder(COMPONENT),
            NodeLifecycleOptions::default().clock(tokio_wall_clock()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            controller
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Cluster {
            client,
            nodes,
            pods,
            events,
            stop: Some(stop),
            task,
        }
    }

    /// The Events written so far with `reason`, in order.
    async fn events(&self, reason: &str) -> Vec<Event> {
        self.events.flush().await;
        self.events
            .history()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits until node `name` satisfies `condition`; returns the virtual instant it did.
    async fn node_until(&self, name: &str, condition: impl Fn(&Node) -> bool) -> Instant {
        let key = ObjectKey::cluster(name);
        self.nodes
            .wait_until(|state| state.get(&key).is_some_and(|n| condition(n)))
            .await;
        Instant::now()
    }

    /// Waits until Pod `name` satisfies `condition` (`None`: it is gone).
    async fn pod_until(&self, name: &str, condition: impl Fn(Option<&Pod>) -> bool) -> Instant {
        let key = ObjectKey::namespaced(NS, name);
        self.pods
            .wait_until(|state| condition(state.get(&key).map(|p| p.as_ref())))
            .await;
        Instant::now()
    }

    /// Creates a running, ready Pod bound to `node`.
    async fn running_pod(&self, name: &str, node: &str, tolerations: Vec<Toleration>) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                tolerations: Some(tolerations),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("busybox".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let mut pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pods.update_status(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.events.flush().await;
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn taint_added(node: &Node, key: &str, effect: &str) -> Option<Option<Timestamp>> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|t| t.key == key && t.effect == effect)
        .map(|t| t.time_added.as_ref().map(|t| t.0))
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    taint_added(node, key, effect).is_some()
}

fn has_controller_taints(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")))
}

fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: seconds,
        ..Toleration::default()
    }
}

fn pod_ready(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn messages(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.message.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_lease_keeps_being_renewed_stays_ready_and_untainted() {
    within(Duration::from_secs(900), async {
        let cluster = Cluster::start(&["node-a"]).await;
        let _kubelet = Kubelet::start(cluster.client.clone(), "node-a");
        cluster
            .node_until("node-a", |n| node_ready_status(n) == Some("True"))
            .await;

        // Five minutes: many times the grace period.
        tokio::time::sleep(Duration::from_secs(300)).await;

        let revisions = cluster.nodes.revisions();
        let readied = revisions
            .iter()
            .position(|r| node_ready_status(&r.object) == Some("True"))
            .expect("the kubelet posted Ready");
        for revision in &revisions[readied..] {
            assert_eq!(node_ready_status(&revision.object), Some("True"));
            assert!(
                !has_controller_taints(&revision.object),
                "tainted at {}: {:?}",
                revision.resource_version,
                revision.object.spec
            );
        }
        assert!(cluster.events("NodeNotReady").await.is_empty());
        assert_eq!(
            messages(&cluster.events("RegisteredNode").await),
            ["Registered Node node-a in Controller"]
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_lease_stops_goes_unknown_after_the_grace_period_and_is_tainted_unreachable() {
    within(Duration::from_secs(900), async {
        let cluster = Cluster::start(&["node-a", "node-b"]).await;
        let kubelet_a = Kubelet::start(cluster.client.clone(), "node-a");
        let _kubelet_b = Kubelet::start(cluster.client.clone(), "node-b");
        cluster
            .node_until("node-a", |n| node_ready_status(n) == Some("True"))
            .await;
        tokio::time::sleep(Duration::from_secs(33)).await;

        // The kubelet of node-a dies.
        let (renewed_at, renewed_wall) = kubelet_a.last_renew();
        drop(kubelet_a);

        let unknown_at = cluster
            .node_until("node-a", |n| node_ready_status(n) == Some("Unknown"))
            .await;
        let silence = unknown_at - renewed_at;
        assert!(
            silence > Duration::from_secs(40) && silence <= Duration::from_secs(46),
            "Unknown {silence:?} after the last renewal"
        );

        // At no revision was the node Unknown before the grace period had passed.
        for revision in cluster.nodes.revisions() {
            let node = &revision.object;
            if node.metadata.name.as_deref() != Some("node-a") {
                assert_eq!(node_ready_status(node).unwrap_or("True"), "True");
                continue;
            }
            if node_ready_status(node) == Some("Unknown") {
                let ready = condition(node, "Ready").unwrap();
                let since = ready.last_transition_time.as_ref().unwrap().0;
                assert!(
                    seconds(since.duration_since(renewed_wall)) >= 39.0,
                    "Unknown from {since}, last renewal {renewed_wall}"
                );
            }
            assert!(
                !has_taint(node, UNREACHABLE, "NoExecute")
                    || node_ready_status(node) == Some("Unknown")
            );
        }

        let tainted_at = cluster
            .node_until("node-a", |n| {
                has_taint(n, UNREACHABLE, "NoExecute") && has_taint(n, UNREACHABLE, "NoSchedule")
            })
            .await;
        assert!(tainted_at - unknown_at <= Duration::from_secs(5));
        let node = cluster.nodes.current()[&ObjectKey::cluster("node-a")].clone();
        for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            let c = condition(&node, type_).unwrap();
            assert_eq!(c.status, "Unknown", "{type_}");
            assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"), "{type_}");
        }
        let ready = condition(&node, "Ready").unwrap();
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        // The heartbeat the kubelet posted is kept: the controller's write is no heartbeat.
        assert!(ready.last_heartbeat_time.is_some());
        let added = taint_added(&node, UNREACHABLE, "NoExecute")
            .unwrap()
            .expect("a NoExecute taint has timeAdded");
        assert!(seconds(added.duration_since(renewed_wall)) >= 40.0);
        assert!(!has_taint(&node, NOT_READY, "NoExecute"));

        let not_ready = cluster.events("NodeNotReady").await;
        assert_eq!(
            messages(&not_ready),
            ["Node node-a status is now: NodeNotReady"]
        );
        assert_eq!(not_ready[0].involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(
            not_ready[0].source.as_ref().unwrap().component.as_deref(),
            Some(COMPONENT)
        );

        // The healthy node was never touched.
        let node_b = cluster.nodes.current()[&ObjectKey::cluster("node-b")].clone();
        assert_eq!(node_ready_status(&node_b), Some("True"));
        assert!(!has_controller_taints(&node_b));
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pods_on_an_unreachable_node_are_evicted_unless_they_tolerate_the_taint() {
    within(Duration::from_secs(900), async {
        let cluster = Cluster::start(&["node-a", "node-b"]).await;
        let kubelet_a = Kubelet::start(cluster.client.clone(), "node-a");
        let _kubelet_b = Kubelet::start(cluster.client.clone(), "node-b");
        cluster
            .node_until("node-a", |n| node_ready_status(n) == Some("True"))
            .await;
        cluster.running_pod("plain", "node-a", Vec::new()).await;
        cluster
            .running_pod("forever", "node-a", vec![toleration(UNREACHABLE, None)])
            .await;
        cluster
            .running_pod("sixty", "node-a", vec![toleration(UNREACHABLE, Some(60))])
            .await;
        // Tolerating another taint does not help.
        cluster
            .running_pod("other", "node-a", vec![toleration(NOT_READY, None)])
            .await;
        cluster.running_pod("elsewhere", "node-b", Vec::new()).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(kubelet_a);

        let tainted_at = cluster
            .node_until("node-a", |n| has_taint(n, UNREACHABLE, "NoExecute"))
            .await;

        // Untolerated: marked for deletion at once, then, since no kubelet will finish the
        // graceful deletion, force-deleted once its 30 s grace period has passed.
        for name in ["plain", "other"] {
            let terminating_at = cluster
                .pod_until(name, |p| {
                    p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                })
                .await;
            assert!(
                terminating_at - tainted_at <= Duration::from_secs(1),
                "{name}"
            );
        }
        let gone_at = cluster.pod_until("plain", |p| p.is_none()).await;
        let waited = gone_at - tainted_at;
        assert!(
            waited >= Duration::from_secs(30) && waited <= Duration::from_secs(36),
            "force-deleted after {waited:?}"
        );

        // Tolerated for 60 s: evicted 60 s after the taint, not earlier.
        let sixty_at = cluster
            .pod_until("sixty", |p| {
                p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            })
            .await;
        let waited = sixty_at - tainted_at;
        assert!(
            waited >= Duration::from_secs(60) && waited <= Duration::from_secs(61),
            "evicted after {waited:?}"
        );
        cluster.pod_until("sixty", |p| p.is_none()).await;

        // Tolerated forever: it stays, though marked not ready.
        tokio::time::sleep(Duration::from_secs(300)).await;
        let pods = cluster.pods.current();
        let forever = &pods[&ObjectKey::namespaced(NS, "forever")];
        assert!(forever.metadata.deletion_timestamp.is_none());
        assert_eq!(pod_ready(forever).as_deref(), Some("False"));
        let elsewhere = &pods[&ObjectKey::namespaced(NS, "elsewhere")];
        assert!(elsewhere.metadata.deletion_timestamp.is_none());
        assert_eq!(pod_ready(elsewhere).as_deref(), Some("True"));
        assert!(!pods.contains_key(&ObjectKey::namespaced(NS, "plain")));
        assert!(!pods.contains_key(&ObjectKey::namespaced(NS, "other")));

        // Each eviction is recorded once, before the Pod was marked.
        let mut evictions = messages(&cluster.events("TaintManagerEviction").await);
        evictions.sort();
        assert_eq!(
            evictions,
            [
                "Marking for deletion Pod default/other",
                "Marking for deletion Pod default/plain",
                "Marking for deletion Pod default/sixty",
            ]
        );
        // Every eviction carried the DisruptionTarget condition, and no Pod of node-b was
        // ever touched.
        for revision in cluster.pods.revisions() {
            let pod = &revision.object;
            if pod.metadata.deletion_timestamp.is_some() && revision.change != Change::Deleted {
                let disruption = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"));
                assert_eq!(
                    disruption.and_then(|c| c.reason.as_deref()),
                    Some("DeletionByTaintManager")
                );
            }
            if pod.metadata.name.as_deref() == Some("elsewhere") {
                assert!(pod.metadata.deletion_timestamp.is_none());
            }
        }

        // A Pod bound to the tainted node later is evicted on its own change, well before
        // the next monitor period would look at every node (half a period away).
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let created_at = Instant::now();
        cluster.running_pod("late", "node-a", Vec::new()).await;
        // (Terminating, not gone: no kubelet finishes the deletion for 30 s.)
        let late_at = cluster
            .pod_until("late", |p| {
                p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
            })
            .await;
        assert!(
            late_at - created_at < Duration::from_secs(1),
            "evicted {:?} after its creation",
            late_at - created_at
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn renewing_the_lease_again_makes_the_node_ready_and_removes_the_taints() {
    within(Duration::from_secs(900), async {
        let cluster = Cluster::start(&["node-a", "node-b"]).await;
        let kubelet_a = Kubelet::start(cluster.client.clone(), "node-a");
        let _kubelet_b = Kubelet::start(cluster.client.clone(), "node-b");
        cluster
            .node_until("node-a", |n| node_ready_status(n) == Some("True"))
            .await;
        cluster
            .running_pod("forever", "node-a", vec![toleration(UNREACHABLE, None)])
            .await;
        drop(kubelet_a);
        cluster
            .node_until("node-a", |n| {
                has_taint(n, UNREACHABLE, "NoExecute") && has_taint(n, UNREACHABLE, "NoSchedule")
            })
            .await;

        let back_at = Instant::now();
        let _kubelet_a = Kubelet::start(cluster.client.clone(), "node-a");
        let clean_at = cluster
            .node_until("node-a", |n| {
                node_ready_status(n) == Some("True") && !has_controller_taints(n)
            })
            .await;
        assert!(clean_at - back_at <= Duration::from_secs(6));

        // It stays that way, and the tolerating Pod was never evicted.
        tokio::time::sleep(Duration::from_secs(120)).await;
        let node = cluster.nodes.current()[&ObjectKey::cluster("node-a")].clone();
        assert_eq!(node_ready_status(&node), Some("True"));
        assert!(!has_controller_taints(&node));
        let pods = cluster.pods.current();
        assert!(pods[&ObjectKey::namespaced(NS, "forever")]
            .metadata
            .deletion_timestamp
            .is_none());
        let on_nodes = cluster
            .events("NodeNotReady")
            .await
            .into_iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("Node"))
            .count();
        assert_eq!(on_nodes, 1);
        let on_pods = cluster
            .events("NodeNotReady")
            .await
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("forever"))
            .map(|e| (e.type_.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect::<Vec<_>>();
        assert_eq!(
            on_pods,
            [("Warning".to_string(), "Node is not ready".to_string())]
        );
        assert!(cluster.events("TaintManagerEviction").await.is_empty());
        cluster.stop().await;
    })
    .await;
}
