//! The DaemonSet controller end to end, over the in-process registry on the memory store,
//! with the fake kubelet of `capstan_controller::testing` (the controller binds its Pods
//! itself, so no scheduler runs).
//!
//! Every case runs on tokio's paused clock and asserts on the recorded Events and on the Pod
//! history at every revision, not only on the end state.

use capstan_api::compat::{self, Maybe};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use capstan_api::k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeSpec, Pod, PodSpec, PodTemplateSpec, Taint, Toleration,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, KubeletOptions, ObjectHistory};
use capstan_controllers::daemonset::{DaemonSetController, COMPONENT, CONTROLLER_REVISION_HASH};
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "default";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn daemon_set(
    name: &str,
    node_selector: &[(&str, &str)],
    tolerations: Vec<Toleration>,
) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: compat::value(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", name)])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", name)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some("agent:1".into()),
                        ..Container::default()
                    }],
                    node_selector: (!node_selector.is_empty()).then(|| labels(node_selector)),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

fn node(name: &str, node_labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(node_labels)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: effect.into(),
        time_added: None,
    }
}

async fn add_node(client: &Arc<dyn Client>, node: Node) {
    Api::<Node>::cluster(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn patch_node(client: &Arc<dyn Client>, name: &str, patch: serde_json::Value) {
    Api::<Node>::cluster(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn create_ds(client: &Arc<dyn Client>, ds: DaemonSet) -> DaemonSet {
    Api::<DaemonSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap()
}

fn node_names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn owned_by<'a>(
    state: &'a BTreeMap<ObjectKey, Arc<Pod>>,
    ds: &'a DaemonSet,
) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
    let uid = ds.metadata.uid.clone().unwrap();
    state.values().filter(move |p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// The active Pods of `ds`, by node.
fn active_by_node(
    state: &BTreeMap<ObjectKey, Arc<Pod>>,
    ds: &DaemonSet,
) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in owned_by(state, ds).filter(|p| p.is_active()) {
        by_node.entry(node_of(pod)).or_default().push(pod.clone());
    }
    by_node
}

/// At every recorded revision, no Node held two Pods of `ds` (terminating ones included).
fn assert_never_two_pods_on_a_node(history: &ObjectHistory<Pod>, ds: &DaemonSet) {
    for (revision, state) in history.states() {
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for pod in owned_by(&state, ds) {
            *per_node.entry(node_of(pod)).or_default() += 1;
        }
        for (node, count) in per_node {
            assert!(count <= 1, "{count} pods on {node} at revision {revision}");
        }
    }
}

/// A running DaemonSet controller with its Events.
struct Running {
    events: EventBroadcaster,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(client: Arc<dyn Client>) -> Self {
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(10_000),
        );
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let controller: DaemonSetController =
            capstan_controllers::daemonset::controller(client, factory, events.recorder(COMPONENT));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            controller
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Running {
            events,
            stop: Some(stop),
            task,
        }
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        self.events.flush().await;
        self.events
            .history()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.events.flush().await;
    }
}

fn messages(events: &[Event]) -> Vec<String> {
    let mut messages: Vec<String> = events
        .iter()
        .map(|e| e.message.clone().unwrap_or_default())
        .collect();
    messages.sort();
    messages
}

async fn status_of(
    client: &Arc<dyn Client>,
    name: &str,
) -> capstan_api::k8s_openapi::api::apps::v1::DaemonSetStatus {
    Api::<DaemonSet>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Waits until the DaemonSet's status satisfies `condition`.
async fn wait_for_status(
    history: &ObjectHistory<DaemonSet>,
    name: &str,
    condition: impl Fn(&capstan_api::k8s_openapi::api::apps::v1::DaemonSetStatus) -> bool,
) {
    history
        .wait_until(|state| {
            state
                .get(&ObjectKey::namespaced(NS, name))
                .and_then(|ds| ds.status.as_ref())
                .is_some_and(&condition)
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn three_nodes_get_one_pod_each_and_a_new_node_gets_its_own() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        for name in node_names(3) {
            add_node(&client, node(&name, &[], vec![])).await;
        }
        let _kubelet = FakeKubelet::start(client.clone(), node_names(4), KubeletOptions::default());
        let history = ObjectHistory::<Pod>::record(client.clone());
        let statuses = ObjectHistory::<DaemonSet>::record(client.clone());
        let controller = Running::start(client.clone());
        let ds = create_ds(&client, daemon_set("agent", &[], vec![])).await;

        history
            .wait_until(|state| active_by_node(state, &ds).len() == 3)
            .await;
        let by_node = active_by_node(&history.current(), &ds);
        assert_eq!(by_node.keys().cloned().collect::<Vec<_>>(), node_names(3));
        assert!(by_node.values().all(|pods| pods.len() == 1));
        wait_for_status(&statuses, "agent", |s| {
            s.desired_number_scheduled == 3 && s.number_ready == 3
        })
        .await;

        add_node(&client, node("n4", &[], vec![])).await;
        history
            .wait_until(|state| active_by_node(state, &ds).len() == 4)
            .await;
        wait_for_status(&statuses, "agent", |s| {
            s.desired_number_scheduled == 4
                && s.current_number_scheduled == 4
                && s.number_ready == 4
                && s.number_available == Some(4)
                && s.updated_number_scheduled == Some(4)
                && s.number_misscheduled == 0
        })
        .await;
        // Give a wrong duplicate every chance to appear.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let created = controller.events("SuccessfulCreate").await;
        let deleted = controller.events("SuccessfulDelete").await;
        controller.stop().await;

        assert_never_two_pods_on_a_node(&history, &ds);
        let pods: Vec<Arc<Pod>> = owned_by(&history.current(), &ds).cloned().collect();
        assert_eq!(pods.len(), 4);
        let expected: Vec<String> = {
            let mut names: Vec<String> = pods
                .iter()
                .map(|p| format!("Created pod: {}", name_of(p)))
                .collect();
            names.sort();
            names
        };
        assert_eq!(messages(&created), expected);
        assert!(deleted.is_empty());
        for event in &created {
            assert_eq!(event.involved_object.kind.as_deref(), Some("DaemonSet"));
            assert_eq!(
                event.source.as_ref().unwrap().component.as_deref(),
                Some(COMPONENT)
            );
        }
        for pod in &pods {
            assert!(name_of(pod).starts_with("agent-"));
            assert!(pod
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(CONTROLLER_REVISION_HASH));
            // Pinned to its node by affinity, as Kubernetes does, and bound directly.
            let affinity = pod.spec.as_ref().unwrap().affinity.as_ref().unwrap();
            let terms = &affinity
                .node_affinity
                .as_ref()
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .node_selector_terms;
            let field = &terms[0].match_fields.as_ref().unwrap()[0];
            assert_eq!(field.key, "metadata.name");
            assert_eq!(field.values.as_ref().unwrap(), &vec![node_of(pod)]);
        }
        let status = status_of(&client, "agent").await;
        assert_eq!(status.observed_generation, Some(1));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn relabelling_a_node_out_of_the_node_selector_deletes_its_pod() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        add_node(&client, node("n1", &[("role", "edge")], vec![])).await;
        add_node(&client, node("n2", &[("role", "edge")], vec![])).await;
        add_node(&client, node("n3", &[("role", "core")], vec![])).await;
        let _kubelet = FakeKubelet::start(client.clone(), node_names(3), KubeletOptions::default());
        let history = ObjectHistory::<Pod>::record(client.clone());
        let statuses = ObjectHistory::<DaemonSet>::record(client.clone());
        let controller = Running::start(client.clone());
        let ds = create_ds(&client, daemon_set("edge", &[("role", "edge")], vec![])).await;

        history
            .wait_until(|state| active_by_node(state, &ds).len() == 2)
            .await;
        assert_eq!(
            active_by_node(&history.current(), &ds)
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            ["n1", "n2"]
        );
        let on_n2 = active_by_node(&history.current(), &ds)["n2"][0].clone();

        patch_node(
            &client,
            "n2",
            serde_json::json!({"metadata": {"labels": {"role": "core"}}}),
        )
        .await;
        // The Pod goes entirely (the fake kubelet finishes the graceful deletion).
        history
            .wait_until(|state| !state.contains_key(&ObjectKey::of(on_n2.as_ref())))
            .await;
        wait_for_status(&statuses, "edge", |s| {
            s.desired_number_scheduled == 1
                && s.current_number_scheduled == 1
                && s.number_misscheduled == 0
        })
        .await;

        // Labelled in, a node gets a Pod.
        patch_node(
            &client,
            "n3",
            serde_json::json!({"metadata": {"labels": {"role": "edge"}}}),
        )
        .await;
        history
            .wait_until(|state| active_by_node(state, &ds).contains_key("n3"))
            .await;
        wait_for_status(&statuses, "edge", |s| {
            s.desired_number_scheduled == 2 && s.number_ready == 2
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let deleted = controller.events("SuccessfulDelete").await;
        let created = controller.events("SuccessfulCreate").await;
        controller.stop().await;

        assert_eq!(
            messages(&deleted),
            [format!("Deleted pod: {}", name_of(&on_n2))]
        );
        assert_eq!(created.len(), 3);
        assert_eq!(
            active_by_node(&history.current(), &ds)
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            ["n1", "n3"]
        );
        assert_never_two_pods_on_a_node(&history, &ds);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_tainted_node_gets_no_pod_unless_the_taint_is_tolerated() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        add_node(&client, node("n1", &[], vec![])).await;
        add_node(&client, node("n2", &[], vec![taint("dedicated", "infra", "NoSchedule")])).await;
        // A cordoned node's taint is tolerated by every DaemonSet Pod.
        add_node(&client, node("n3", &[], vec![taint("node.kubernetes.io/unschedulable", "", "NoSchedule")])).await;
        let _kubelet = FakeKubelet::start(client.clone(), node_names(3), KubeletOptions::default());
        let history = ObjectHistory::<Pod>::record(client.clone());
        let statuses = ObjectHistory::<DaemonSet>::record(client.clone());
        let controller = Running::start(client.clone());
        let plain = create_ds(&client, daemon_set("plain", &[], vec![])).await;
        let tolerant = create_ds(
            &client,
            daemon_set(
                "tolerant",
                &[],
                vec![Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Equal".into()),
                    value: Some("infra".into()),
                    // Every effect: NoSchedule and NoExecute.
                    effect: None,
                    toleration_seconds: None,
                }],
            ),
        )
        .await;

        history
            .wait_until(|state| {
                active_by_node(state, &plain).len() == 2 && active_by_node(state, &tolerant).len() == 3
            })
            .await;
        wait_for_status(&statuses, "plain", |s| s.desired_number_scheduled == 2 && s.number_ready == 2).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            active_by_node(&history.current(), &plain).keys().cloned().collect::<Vec<_>>(),
            ["n1", "n3"]
        );

        // A NoExecute taint evicts the Pods that do not tolerate it.
        patch_node(
            &client,
            "n1",
            serde_json::json!({"spec": {"taints": [{"key": "dedicated", "value": "infra", "effect": "NoExecute"}]}}),
        )
        .await;
        history
            .wait_until(|state| !active_by_node(state, &plain).contains_key("n1"))
            .await;
        wait_for_status(&statuses, "plain", |s| s.desired_number_scheduled == 1 && s.current_number_scheduled == 1).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let placement = controller.events("FailedPlacement").await;
        controller.stop().await;

        assert!(active_by_node(&history.current(), &tolerant).contains_key("n1"));
        let plain_warnings: Vec<&Event> = placement
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("plain"))
            .collect();
        assert!(!plain_warnings.is_empty());
        assert!(plain_warnings.iter().all(|e| e.type_.as_deref() == Some("Warning")));
        let first = plain_warnings[0].message.clone().unwrap();
        assert_eq!(
            first,
            "failed to place pod on \"n2\": node(s) had untolerated taint {dedicated: infra}"
        );
        // Recorded once per node and reason, not on every sync.
        assert_eq!(plain_warnings[0].count, Some(1));
        assert!(placement.iter().all(|e| e.involved_object.name.as_deref() == Some("plain")));
        assert_never_two_pods_on_a_node(&history, &plain);
        assert_never_two_pods_on_a_node(&history, &tolerant);
    })
    .await;
}

/// Rolls a template change over `nodes` nodes with `max_unavailable`, and returns the most
/// nodes that lacked a ready, up-to-date-or-old Pod at any revision during the rollout.
async fn roll(nodes: usize, max_unavailable: Option<IntOrString>) -> usize {
    let client = capstan_apiserver::testing::client();
    for name in node_names(nodes) {
        add_node(&client, node(&name, &[], vec![])).await;
    }
    let _kubelet = FakeKubelet::start(client.clone(), node_names(nodes), KubeletOptions::default());
    let history = ObjectHistory::<Pod>::record(client.clone());
    let statuses = ObjectHistory::<DaemonSet>::record(client.clone());
    let controller = Running::start(client.clone());
    let mut spec = daemon_set("agent", &[], vec![]);
    if let Some(max_unavailable) = max_unavailable.clone() {
        spec.spec.opt_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(max_unavailable),
                max_surge: None,
            }),
        });
    }
    let ds = create_ds(&client, spec).await;
    wait_for_status(&statuses, "agent", |s| s.number_ready as usize == nodes).await;
    let old_hash = history
        .current()
        .values()
        .next()
        .and_then(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(CONTROLLER_REVISION_HASH)
                .cloned()
        })
        .unwrap();
    let start = history.revisions().len();

    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}});
    Api::<DaemonSet>::namespaced(client.clone(), NS)
        .patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let updated = |pod: &Pod| {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
            != Some(&old_hash)
    };
    history
        .wait_until(|state| {
            let pods: Vec<&Arc<Pod>> = owned_by(state, &ds).collect();
            pods.len() == nodes && pods.iter().all(|p| updated(p) && p.is_ready())
        })
        .await;
    wait_for_status(&statuses, "agent", |s| {
        s.updated_number_scheduled == Some(nodes as i32)
            && s.number_available == Some(nodes as i32)
            && s.observed_generation == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deleted = controller.events("SuccessfulDelete").await;
    let created = controller.events("SuccessfulCreate").await;
    controller.stop().await;

    assert_eq!(deleted.len(), nodes, "each old pod deleted once");
    assert_eq!(created.len(), 2 * nodes);
    assert_never_two_pods_on_a_node(&history, &ds);
    let mut worst = 0;
    for (_, state) in history.states().into_iter().skip(start) {
        let serving = active_by_node(&state, &ds)
            .values()
            .filter(|pods| pods.iter().any(|p| p.is_ready()))
            .count();
        worst = worst.max(nodes - serving);
    }
    worst
}

#[tokio::test(start_paused = true)]
async fn a_template_change_rolls_pods_node_by_node_with_at_most_one_node_missing() {
    within(Duration::from_secs(300), async {
        let worst = roll(4, None).await;
        assert_eq!(worst, 1, "one node at a time, never more");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_max_unavailable_of_half_rolls_two_nodes_at_a_time_and_never_more() {
    within(Duration::from_secs(300), async {
        let worst = roll(4, Some(IntOrString::String("50%".into()))).await;
        assert_eq!(worst, 2);
    })
    .await;
}
