//! The Endpoints and EndpointSlice controllers end to end, over the in-process registry on the
//! memory store. Pods are created by the tests and their status (IP, readiness) written
//! through the status subresource, as a kubelet would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::compat::MaybeList;
use capstan_api::k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointSubset, Endpoints, Pod, PodCondition,
    PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::kube_core::params::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::runtime::ControllerMetrics;
use capstan_controller::testing::{Change, ObjectHistory};
use capstan_controllers::endpoints::slices::{
    EndpointSliceController, LABEL_MANAGED_BY as SLICE_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY,
};
use capstan_controllers::endpoints::{EndpointsController, LABEL_MANAGED_BY};
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "default";

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

/// Both controllers, running over one informer factory until dropped or stopped.
struct Controllers {
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    endpoints_metrics: Arc<ControllerMetrics>,
    _events: EventBroadcaster,
}

impl Controllers {
    fn start(client: &Arc<dyn Client>, max_per_slice: usize) -> Self {
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let events = EventBroadcaster::new(client.clone(), EventOptions::default());
        let endpoints: EndpointsController = capstan_controllers::endpoints::controller(
            client.clone(),
            factory.clone(),
            events.recorder(capstan_controllers::endpoints::COMPONENT),
        );
        let endpoints_metrics = endpoints.metrics();
        let slices: EndpointSliceController = capstan_controllers::endpoints::slices::controller(
            client.clone(),
            factory,
            events.recorder(capstan_controllers::endpoints::slices::COMPONENT),
        )
        .map_reconciler(|reconciler| reconciler.max_endpoints_per_slice(max_per_slice));
        let (stop_a, stopped_a) = oneshot::channel::<()>();
        let (stop_b, stopped_b) = oneshot::channel::<()>();
        let tasks = vec![
            tokio::spawn(async move {
                endpoints
                    .run(async move {
                        let _ = stopped_a.await;
                    })
                    .await
                    .unwrap();
            }),
            tokio::spawn(async move {
                slices
                    .run(async move {
                        let _ = stopped_b.await;
                    })
                    .await
                    .unwrap();
            }),
        ];
        Controllers {
            stops: vec![stop_a, stop_b],
            tasks,
            endpoints_metrics,
            _events: events,
        }
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

fn labels(app: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("app".to_string(), app.to_string())]))
}

fn pods(client: &Arc<dyn Client>) -> Api<Pod> {
    Api::namespaced(client.clone(), NS)
}

/// Creates a Pod labelled `app: <app>` on `node-1` whose container port `http` is
/// `http_port`, then reports it running with `ip`, ready or not.
async fn create_pod(
    client: &Arc<dyn Client>,
    name: &str,
    app: &str,
    ip: &str,
    ready: bool,
    http_port: i32,
) -> Pod {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels(app),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("nginx".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: http_port,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    };
    let mut pod = pods(client)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(ip.into()),
        conditions: Some(vec![ready_condition(ready)]),
        ..PodStatus::default()
    });
    pods(client)
        .update_status(&PostParams::default(), &pod)
        .await
        .unwrap()
}

fn ready_condition(ready: bool) -> PodCondition {
    PodCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        ..PodCondition::default()
    }
}

async fn set_ready(client: &Arc<dyn Client>, name: &str, ready: bool) {
    let mut pod = pods(client).get(name).await.unwrap();
    pod.status.as_mut().unwrap().conditions = Some(vec![ready_condition(ready)]);
    pods(client)
        .update_status(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn patch_pod(client: &Arc<dyn Client>, name: &str, patch: serde_json::Value) {
    pods(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// A Service `name` selecting `app: web`, with a named (`http` → the Pods' `http` port) and a
/// numeric (9100 → 9100) target port.
async fn create_service(client: &Arc<dyn Client>, name: &str, selector: bool) -> Service {
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels("web-service"),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: if selector { labels("web") } else { None },
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: 9100,
                    target_port: Some(IntOrString::Int(9100)),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::namespaced(NS, name)
}

fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<String> {
    addresses.iter().flatten().map(|a| a.ip.clone()).collect()
}

/// Each subset as (ready IPs, not-ready IPs, ports as `name:number`).
type SubsetView = (Vec<String>, Vec<String>, Vec<String>);

fn view(endpoints: &Endpoints) -> Vec<SubsetView> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .map(|s: &EndpointSubset| {
            (
                ips(&s.addresses),
                ips(&s.not_ready_addresses),
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port))
                    .collect(),
            )
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn subset(ready: &[&str], not_ready: &[&str], ports: &[&str]) -> SubsetView {
    (strings(ready), strings(not_ready), strings(ports))
}

const PORTS: &[&str] = &["http:8080", "metrics:9100"];

/// The slices of `service` (as the history recorded them so far).
fn slices_of(history: &ObjectHistory<EndpointSlice>, service: &str) -> Vec<Arc<EndpointSlice>> {
    history
        .current()
        .into_values()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .is_some_and(|n| n == service)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_selecting_three_pods_two_ready_gets_two_addresses_and_one_not_ready_address() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let a = create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        create_pod(&client, "web-b", "web", "10.244.0.3", true, 8080).await;
        create_pod(&client, "web-c", "web", "10.244.0.4", false, 8080).await;
        create_pod(&client, "other", "other", "10.244.0.9", true, 8080).await;
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        create_service(&client, "web", true).await;

        endpoints
            .wait_until(|state| state.contains_key(&key("web")))
            .await;
        let web = endpoints.current()[&key("web")].clone();
        assert_eq!(
            view(&web),
            [subset(
                &["10.244.0.2", "10.244.0.3"],
                &["10.244.0.4"],
                PORTS
            )]
        );
        let subsets = web.subsets.as_ref().unwrap();
        let first = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(first.node_name.as_deref(), Some("node-1"));
        let target = first.target_ref.as_ref().unwrap();
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.name.as_deref(), Some("web-a"));
        assert_eq!(target.namespace.as_deref(), Some(NS));
        assert_eq!(target.uid, a.metadata.uid);
        for port in subsets[0].ports.iter().flatten() {
            assert_eq!(port.protocol.as_deref(), Some("TCP"));
        }
        let labels = web.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_MANAGED_BY], "endpoint-controller");
        assert_eq!(labels["app"], "web-service");
        assert!(
            web.metadata.owner_references.is_none(),
            "Endpoints carry no owner"
        );
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_whose_named_port_differs_land_in_different_subsets() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        create_pod(&client, "web-b", "web", "10.244.0.3", false, 8080).await;
        create_pod(&client, "web-new", "web", "10.244.0.5", true, 9090).await;
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        create_service(&client, "web", true).await;

        endpoints
            .wait_until(|state| state.contains_key(&key("web")))
            .await;
        assert_eq!(
            view(&endpoints.current()[&key("web")]),
            // Kubernetes' RepackSubsets: one subset per distinct set of addresses, so the
            // numeric port, served by all three, has its own.
            [
                subset(&["10.244.0.2"], &["10.244.0.3"], &["http:8080"]),
                subset(&["10.244.0.5"], &[], &["http:9090"]),
                subset(
                    &["10.244.0.2", "10.244.0.5"],
                    &["10.244.0.3"],
                    &["metrics:9100"]
                ),
            ]
        );
        controllers.stop().await;
    })
    .await;
}

/// Waits until the controller has finished at least one more reconcile than `before`, then a
/// little longer, so a write it would make has reached the history.
async fn settle(metrics: &ControllerMetrics, before: u64) {
    while metrics.reconciles() <= before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_readiness_deletion_relabelling_and_new_pods_one_revision_per_real_change()
{
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        create_pod(&client, "web-b", "web", "10.244.0.3", false, 8080).await;
        create_service(&client, "web", true).await;
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        let metrics = controllers.endpoints_metrics.clone();
        let at = |wanted: Vec<SubsetView>| {
            let endpoints = &endpoints;
            async move {
                endpoints
                    .wait_until(|state| state.get(&key("web")).is_some_and(|e| view(e) == wanted))
                    .await
            }
        };

        let first = vec![subset(&["10.244.0.2"], &["10.244.0.3"], PORTS)];
        at(first.clone()).await;

        // An unrelated change to a selected Pod: reconciled, but nothing written.
        let before = metrics.reconciles();
        patch_pod(
            &client,
            "web-a",
            serde_json::json!({"metadata": {"annotations": {"note": "unrelated"}}}),
        )
        .await;
        settle(&metrics, before).await;
        assert_eq!(
            endpoints.revisions().len(),
            1,
            "no revision for an annotation"
        );

        set_ready(&client, "web-b", true).await;
        let second = vec![subset(&["10.244.0.2", "10.244.0.3"], &[], PORTS)];
        at(second.clone()).await;

        pods(&client)
            .delete("web-a", &DeleteParams::default())
            .await
            .unwrap();
        let third = vec![subset(&["10.244.0.3"], &[], PORTS)];
        at(third.clone()).await;

        patch_pod(
            &client,
            "web-b",
            serde_json::json!({"metadata": {"labels": {"app": "elsewhere"}}}),
        )
        .await;
        let fourth: Vec<SubsetView> = Vec::new();
        at(fourth.clone()).await;

        create_pod(&client, "web-c", "web", "10.244.0.7", true, 8080).await;
        let fifth = vec![subset(&["10.244.0.7"], &[], PORTS)];
        at(fifth.clone()).await;

        // Once more an unrelated change; then the whole history, revision by revision.
        let before = metrics.reconciles();
        patch_pod(
            &client,
            "web-c",
            serde_json::json!({"metadata": {"annotations": {"note": "still unrelated"}}}),
        )
        .await;
        settle(&metrics, before).await;
        let revisions = endpoints.revisions();
        let changes: Vec<Change> = revisions.iter().map(|r| r.change).collect();
        assert_eq!(
            changes,
            [
                Change::Added,
                Change::Modified,
                Change::Modified,
                Change::Modified,
                Change::Modified
            ]
        );
        let views: Vec<Vec<SubsetView>> = revisions.iter().map(|r| view(&r.object)).collect();
        assert_eq!(views, [first, second, third, fourth, fifth]);
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_selector_keeps_its_hand_made_endpoints_and_gets_no_slices() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        create_service(&client, "manual", false).await;
        let manual = Endpoints {
            metadata: ObjectMeta {
                name: Some("manual".into()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "192.0.2.10".into(),
                    ..EndpointAddress::default()
                }]),
                ..EndpointSubset::default()
            }]),
        };
        let manual = Api::<Endpoints>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &manual)
            .await
            .unwrap();
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let slices = ObjectHistory::<EndpointSlice>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        // A Service with a selector, created after, as a barrier: once its objects exist, the
        // controllers have long seen the first one.
        create_service(&client, "web", true).await;
        endpoints
            .wait_until(|state| state.contains_key(&key("web")))
            .await;
        slices
            .wait_until(|_| !slices_of(&slices, "web").is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let now = Api::<Endpoints>::namespaced(client.clone(), NS)
            .get("manual")
            .await
            .unwrap();
        assert_eq!(
            now.metadata.resource_version,
            manual.metadata.resource_version
        );
        assert!(slices_of(&slices, "manual").is_empty());
        let manual_revisions = endpoints
            .revisions()
            .iter()
            .filter(|r| r.object.metadata.name.as_deref() == Some("manual"))
            .count();
        assert_eq!(manual_revisions, 1, "only its creation");
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_left_without_a_service_are_deleted_at_start_but_leader_records_stay() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let api = Api::<Endpoints>::namespaced(client.clone(), NS);
        for (name, leader) in [("orphan", false), ("kube-scheduler", true)] {
            let annotations = leader.then(|| {
                BTreeMap::from([(
                    "control-plane.alpha.kubernetes.io/leader".to_string(),
                    "{}".to_string(),
                )])
            });
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    annotations,
                    ..ObjectMeta::default()
                },
                subsets: None,
            };
            api.create(&PostParams::default(), &endpoints)
                .await
                .unwrap();
        }
        let history = ObjectHistory::<Endpoints>::record(client.clone());
        history.wait_until(|state| state.len() == 2).await;
        let controllers = Controllers::start(&client, 100);
        history
            .wait_until(|state| !state.contains_key(&key("orphan")))
            .await;
        assert!(history.current().contains_key(&key("kube-scheduler")));
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_service_deletes_its_endpoints_and_its_slices() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        create_pod(&client, "web-b", "web", "10.244.0.3", true, 8080).await;
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let slices = ObjectHistory::<EndpointSlice>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        create_service(&client, "web", true).await;
        endpoints
            .wait_until(|state| state.contains_key(&key("web")))
            .await;
        slices
            .wait_until(|_| {
                slices_of(&slices, "web")
                    .iter()
                    .map(|s| s.endpoints.items().len())
                    .sum::<usize>()
                    == 2
            })
            .await;

        Api::<Service>::namespaced(client.clone(), NS)
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        endpoints
            .wait_until(|state| !state.contains_key(&key("web")))
            .await;
        slices.wait_until(|state| state.is_empty()).await;
        let left = Api::<EndpointSlice>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(left.items.is_empty());
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_mirror_the_endpoints_with_the_right_labels_owner_and_conditions() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_pod(&client, "web-a", "web", "10.244.0.2", true, 8080).await;
        let b = create_pod(&client, "web-b", "web", "10.244.0.3", true, 8080).await;
        create_pod(&client, "web-c", "web", "10.244.0.4", false, 8080).await;
        let slices = ObjectHistory::<EndpointSlice>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        let service = create_service(&client, "web", true).await;
        slices
            .wait_until(|_| {
                slices_of(&slices, "web")
                    .iter()
                    .map(|s| s.endpoints.items().len())
                    .sum::<usize>()
                    == 3
            })
            .await;
        let found = slices_of(&slices, "web");
        assert_eq!(found.len(), 1);
        let slice = &found[0];
        let name = slice.metadata.name.as_deref().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[SLICE_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels["app"], "web-service");
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Service", "web", Some(true))
        );
        assert_eq!(Some(&owner.uid), service.metadata.uid.as_ref());
        assert_eq!(slice.address_type, "IPv4");
        let ports: BTreeSet<(String, i32, String)> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap(),
                    p.port.unwrap(),
                    p.protocol.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            BTreeSet::from([
                ("http".into(), 8080, "TCP".into()),
                ("metrics".into(), 9100, "TCP".into())
            ])
        );
        let mut endpoints: Vec<(String, bool, bool, bool)> = slice
            .endpoints
            .items()
            .iter()
            .map(|e| {
                let c = e.conditions.as_ref().unwrap();
                assert_eq!(e.node_name.as_deref(), Some("node-1"));
                (
                    e.addresses.join(","),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect();
        endpoints.sort();
        assert_eq!(
            endpoints,
            [
                ("10.244.0.2".to_string(), true, true, false),
                ("10.244.0.3".to_string(), true, true, false),
                ("10.244.0.4".to_string(), false, false, false),
            ]
        );
        let target = slice
            .endpoints
            .items()
            .iter()
            .find(|e| e.addresses == ["10.244.0.3"])
            .and_then(|e| e.target_ref.clone())
            .unwrap();
        assert_eq!(target.uid, b.metadata.uid);
        assert_eq!(target.kind.as_deref(), Some("Pod"));

        // The not-ready Pod turns ready: the same slice is updated in place.
        set_ready(&client, "web-c", true).await;
        slices
            .wait_until(|_| {
                slices_of(&slices, "web").iter().all(|s| {
                    s.endpoints
                        .items()
                        .iter()
                        .all(|e| e.conditions.as_ref().unwrap().ready == Some(true))
                })
            })
            .await;
        let after = slices_of(&slices, "web");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].metadata.name.as_deref(), Some(name));

        // A Pod deleted gracefully stays listed while it terminates: serving, not ready.
        pods(&client)
            .delete("web-a", &DeleteParams::default())
            .await
            .unwrap();
        let terminating = |slices: &ObjectHistory<EndpointSlice>| {
            slices_of(slices, "web")
                .iter()
                .flat_map(|s| s.endpoints.items().to_vec())
                .find(|e| e.addresses == ["10.244.0.2"])
                .and_then(|e| e.conditions)
                .map(|c| (c.ready, c.serving, c.terminating))
        };
        slices
            .wait_until(|_| terminating(&slices) == Some((Some(false), Some(true), Some(true))))
            .await;
        assert_eq!(
            slices_of(&slices, "web")[0].metadata.name.as_deref(),
            Some(name)
        );
        controllers.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_hundred_pods_split_across_slices_and_shrink_in_place() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        for i in 0..205 {
            create_pod(
                &client,
                &format!("web-{i:03}"),
                "web",
                &format!("10.244.{}.{}", i / 200, i % 200 + 2),
                true,
                8080,
            )
            .await;
        }
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let slices = ObjectHistory::<EndpointSlice>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        create_service(&client, "web", true).await;
        let total = |slices: &ObjectHistory<EndpointSlice>| -> usize {
            slices_of(slices, "web")
                .iter()
                .map(|s| s.endpoints.items().len())
                .sum()
        };
        slices.wait_until(|_| total(&slices) == 205).await;
        let found = slices_of(&slices, "web");
        let mut sizes: Vec<usize> = found.iter().map(|s| s.endpoints.items().len()).collect();
        sizes.sort();
        assert_eq!(sizes, [5, 100, 100]);
        let addresses: BTreeSet<String> = found
            .iter()
            .flat_map(|s| s.endpoints.items().iter().map(|e| e.addresses.join(",")))
            .collect();
        assert_eq!(addresses.len(), 205, "every Pod once");
        endpoints
            .wait_until(|state| {
                state
                    .get(&key("web"))
                    .is_some_and(|e| view(e).first().is_some_and(|s| s.0.len() == 205))
            })
            .await;

        // Ten Pods go (at once, as the kubelet's final delete does): they leave the slices
        // they were in, and no slice is created.
        let names: BTreeSet<String> = found
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        for i in 0..10 {
            pods(&client)
                .delete(
                    &format!("web-{i:03}"),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await
                .unwrap();
        }
        slices.wait_until(|_| total(&slices) == 195).await;
        let after: BTreeSet<String> = slices_of(&slices, "web")
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert!(after.is_subset(&names), "{after:?} within {names:?}");
        let created = slices
            .revisions()
            .iter()
            .filter(|r| r.change == Change::Added)
            .count();
        assert_eq!(created, 3, "no slice created after the first three");
        controllers.stop().await;
    })
    .await;
}

/// A sync that read a Service just before its deletion may write its Endpoints or slices
/// after the cleanup swept them; no later sync of a deleted Service comes to remove them.
/// Such a late write (made here by hand, after the Service is gone) is swept too; what the
/// controllers did not write is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_controllers_write_for_a_service_already_deleted_is_removed() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let endpoints = ObjectHistory::<Endpoints>::record(client.clone());
        let slices = ObjectHistory::<EndpointSlice>::record(client.clone());
        let controllers = Controllers::start(&client, 100);
        // A barrier: once the Service's objects exist, the controllers are running.
        create_service(&client, "web", true).await;
        endpoints
            .wait_until(|state| state.contains_key(&key("web")))
            .await;
        let late = |name: &str, ours: bool| Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: ours.then(|| {
                    BTreeMap::from([(LABEL_MANAGED_BY.to_string(), "endpoint-controller".into())])
                }),
                ..ObjectMeta::default()
            },
            subsets: None,
        };
        let api = Api::<Endpoints>::namespaced(client.clone(), NS);
        api.create(&PostParams::default(), &late("gone", true))
            .await
            .unwrap();
        api.create(&PostParams::default(), &late("hand-made", false))
            .await
            .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "gone-abcde",
                "labels": { LABEL_SERVICE_NAME: "gone", SLICE_MANAGED_BY: MANAGED_BY },
            },
            "addressType": "IPv4",
            "endpoints": [],
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &slice)
            .await
            .unwrap();
        endpoints
            .wait_until(|state| {
                !state.contains_key(&key("gone")) && state.contains_key(&key("hand-made"))
            })
            .await;
        slices
            .wait_until(|state| !state.contains_key(&key("gone-abcde")))
            .await;
        assert!(endpoints
            .revisions()
            .iter()
            .any(|r| r.change == Change::Deleted
                && r.object.metadata.name.as_deref() == Some("gone")));
        controllers.stop().await;
    })
    .await;
}
