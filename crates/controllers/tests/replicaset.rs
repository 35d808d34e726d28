//! The ReplicaSet controller end to end, over the in-process registry on the memory store,
//! with the fake scheduler and kubelet of `capstan_controller::testing`.
//!
//! Every case runs on tokio's paused clock (time moves only when every task is idle) and
//! asserts on the recorded Events and on the Pod history at every revision, not only on the
//! end state.

use capstan_api::compat;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::Deletion;
use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use capstan_api::k8s_openapi::api::core::v1::{
    Container, Event, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, OwnerReference, Time,
};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList, ObjectMeta};
use capstan_api::testing::within;
use capstan_api::{Api, Client, ResourceInfo, Result as ApiResult, WatchStream};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{
    Change, FakeKubelet, FakeScheduler, KubeletOptions, ObjectHistory,
};
use capstan_controllers::replicaset::{ReplicaSetController, COMPONENT};
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "default";

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn pod_spec() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "web".into(),
            image: Some("busybox".into()),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

fn replica_set(name: &str, replicas: i32, min_ready_seconds: Option<i32>) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: compat::value(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds,
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..LabelSelector::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec()),
            }),
        }),
        ..ReplicaSet::default()
    }
}

fn replica_sets(client: &Arc<dyn Client>) -> Api<ReplicaSet> {
    Api::namespaced(client.clone(), NS)
}

fn pods(client: &Arc<dyn Client>) -> Api<Pod> {
    Api::namespaced(client.clone(), NS)
}

async fn create_rs(client: &Arc<dyn Client>, rs: ReplicaSet) -> ReplicaSet {
    replica_sets(client)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap()
}

async fn scale(client: &Arc<dyn Client>, name: &str, replicas: i32) {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    replica_sets(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

fn controlled_by(pod: &Pod, rs: &ReplicaSet) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.uid == rs.metadata.uid.clone().unwrap()
            && r.kind == "ReplicaSet"
            && r.api_version == "apps/v1"
    })
}

fn live_owned(state: &BTreeMap<ObjectKey, Arc<Pod>>, rs: &ReplicaSet) -> usize {
    state
        .values()
        .filter(|p| controlled_by(p, rs) && p.is_active())
        .count()
}

/// A running ReplicaSet controller with its Events.
struct Running {
    events: EventBroadcaster,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(client: Arc<dyn Client>) -> Self {
        Self::start_over(client.clone(), client)
    }

    /// Informers watch through `watch_client`; writes and Events go through `client`.
    fn start_over(client: Arc<dyn Client>, watch_client: Arc<dyn Client>) -> Self {
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(10_000),
        );
        let factory = Arc::new(InformerFactory::new(
            watch_client,
            ReflectorOptions::default(),
        ));
        let controller: ReplicaSetController = capstan_controllers::replicaset::controller(
            client,
            factory,
            events.recorder(COMPONENT),
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
        Running {
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

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.events.flush().await;
    }
}

fn messages(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.message.clone().unwrap_or_default())
        .collect()
}

/// Wraps the registry: records when each Pod create starts and holds it `create_delay`, and
/// delays every watch event by `watch_lag`, as a slow informer would see it.
struct Wrapped {
    inner: Arc<dyn Client>,
    create_delay: Duration,
    watch_lag: Duration,
    starts: Mutex<Vec<Instant>>,
}

impl Wrapped {
    fn new(inner: Arc<dyn Client>, create_delay: Duration, watch_lag: Duration) -> Arc<Self> {
        Arc::new(Wrapped {
            inner,
            create_delay,
            watch_lag,
            starts: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Client for Wrapped {
    async fn get(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<DynamicObject> {
        self.inner.get(r, ns, name).await
    }

    async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &ListParams,
    ) -> ApiResult<ObjectList<DynamicObject>> {
        self.inner.list(r, ns, p).await
    }

    async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> ApiResult<DynamicObject> {
        if r.kind() == "Pod" {
            self.starts.lock().push(Instant::now());
            tokio::time::sleep(self.create_delay).await;
        }
        self.inner.create(r, ns, o, p).await
    }

    async fn update(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> ApiResult<DynamicObject> {
        self.inner.update(r, ns, o, p).await
    }

    async fn update_status(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> ApiResult<DynamicObject> {
        self.inner.update_status(r, ns, o, p).await
    }

    async fn patch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        p: &PatchParams,
    ) -> ApiResult<DynamicObject> {
        self.inner.patch(r, ns, name, patch, p).await
    }

    async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        p: &DeleteParams,
    ) -> ApiResult<Deletion> {
        self.inner.delete(r, ns, name, p).await
    }

    async fn watch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &WatchParams,
        v: &str,
    ) -> ApiResult<WatchStream> {
        let lag = self.watch_lag;
        let events = self.inner.watch(r, ns, p, v).await?;
        if lag.is_zero() {
            return Ok(events);
        }
        Ok(events
            .then(move |event| async move {
                tokio::time::sleep(lag).await;
                event
            })
            .boxed())
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_set_of_five_creates_five_owned_pods_in_slow_start_batches() {
    within(Duration::from_secs(120), async {
        let api = capstan_apiserver::testing::client();
        let slow = Wrapped::new(api.clone(), Duration::from_millis(10), Duration::ZERO);
        let client: Arc<dyn Client> = slow.clone();
        let history = ObjectHistory::<Pod>::record(api.clone());
        let controller = Running::start(client.clone());
        let rs = create_rs(&api, replica_set("web", 5, None)).await;

        history
            .wait_until(|state| live_owned(state, &rs) == 5)
            .await;
        // Give a wrong duplicate every chance to appear.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let created = controller.events("SuccessfulCreate").await;
        controller.stop().await;

        // Batches of 1, 2, then the remaining 2: creates of one batch start together.
        let starts = slow.starts.lock().clone();
        let mut batches: Vec<usize> = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            if i > 0 && *start == starts[i - 1] {
                *batches.last_mut().unwrap() += 1;
            } else {
                batches.push(1);
            }
        }
        assert_eq!(batches, [1, 2, 2]);

        let pods: Vec<Arc<Pod>> = history.current().into_values().collect();
        assert_eq!(pods.len(), 5);
        for pod in &pods {
            assert!(name_of(pod).starts_with("web-"));
            assert_eq!(name_of(pod).len(), "web-".len() + 5);
            assert_eq!(pod.metadata.labels.as_ref(), Some(&labels("web")));
            let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.controller, Some(true));
            assert_eq!(owner.block_owner_deletion, Some(true));
            assert_eq!(owner.uid, rs.metadata.uid.clone().unwrap());
        }
        // Exactly one Added per Pod, never a deletion: no duplicate was ever made.
        let revisions = history.revisions();
        assert_eq!(
            revisions
                .iter()
                .filter(|r| r.change == Change::Added)
                .count(),
            5
        );
        assert!(revisions.iter().all(|r| r.change != Change::Deleted));

        assert_eq!(created.len(), 5);
        let mut named: Vec<String> = messages(&created);
        named.sort();
        let mut expected: Vec<String> = pods
            .iter()
            .map(|p| format!("Created pod: {}", name_of(p)))
            .collect();
        expected.sort();
        assert_eq!(named, expected);
        for event in &created {
            assert_eq!(event.type_.as_deref(), Some("Normal"));
            assert_eq!(event.involved_object.kind.as_deref(), Some("ReplicaSet"));
            assert_eq!(event.involved_object.name.as_deref(), Some("web"));
            assert_eq!(
                event.source.as_ref().unwrap().component.as_deref(),
                Some(COMPONENT)
            );
        }
    })
    .await;
}

/// Marks `pod` bound to `node` and running, ready since `ready_since`.
async fn run_pod(client: &Arc<dyn Client>, name: &str, node: &str, ready_since: Timestamp) {
    let patch = serde_json::json!({"spec": {"nodeName": node}});
    let mut pod = pods(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(ready_since)),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pods(client)
        .update_status(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn scaling_five_to_three_deletes_exactly_the_two_lowest_ranked_pods() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        let history = ObjectHistory::<Pod>::record(client.clone());
        let controller = Running::start(client.clone());
        let rs = create_rs(&client, replica_set("web", 5, None)).await;
        history
            .wait_until(|state| live_owned(state, &rs) == 5)
            .await;

        // Three Pods run on nodes and are ready; two stay unscheduled and pending.
        let mut names: Vec<String> = history.current().values().map(|p| name_of(p)).collect();
        names.sort();
        let now = Timestamp::now();
        for (i, name) in names[..3].iter().enumerate() {
            run_pod(&client, name, &format!("node-{i}"), now).await;
        }
        let mut doomed: Vec<String> = names[3..].to_vec();
        doomed.sort();

        let before = history.revisions().len();
        scale(&client, "web", 3).await;
        history
            .wait_until(|state| live_owned(state, &rs) == 3)
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let deleted_events = controller.events("SuccessfulDelete").await;
        let created_events = controller.events("SuccessfulCreate").await;
        controller.stop().await;

        let mut deleted: Vec<String> = history.revisions()[before..]
            .iter()
            .filter(|r| r.change == Change::Deleted)
            .map(|r| name_of(&r.object))
            .collect();
        deleted.sort();
        assert_eq!(deleted, doomed, "the unscheduled, not-ready Pods go first");
        let mut deleted_messages = messages(&deleted_events);
        deleted_messages.sort();
        assert_eq!(
            deleted_messages,
            doomed
                .iter()
                .map(|n| format!("Deleted pod: {n}"))
                .collect::<Vec<_>>()
        );
        assert_eq!(created_events.len(), 5, "nothing was created again");
        // Never fewer than three live Pods on the way down.
        for (version, state) in history.states().iter().skip(before) {
            assert!(live_owned(state, &rs) >= 3, "at {version}");
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lagging_informer_and_a_hundred_restarts_never_make_more_pods_than_replicas() {
    within(Duration::from_secs(600), async {
        let api = capstan_apiserver::testing::client();
        let lagging: Arc<dyn Client> =
            Wrapped::new(api.clone(), Duration::ZERO, Duration::from_millis(40));
        let history = ObjectHistory::<Pod>::record(api.clone());
        let rs = create_rs(&api, replica_set("web", 5, None)).await;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut created = 0;
        let mut deleted_by_us = 0;
        for round in 0..100 {
            // A fresh process: new informers (a fresh list), new expectations.
            let controller = Running::start_over(api.clone(), lagging.clone());
            tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
            if round % 3 == 0 {
                // Someone kills a Pod: the controller must replace it, through a lagging cache.
                let live: Vec<String> = history
                    .current()
                    .values()
                    .filter(|p| controlled_by(p, &rs))
                    .map(|p| name_of(p))
                    .collect();
                if let Some(victim) = live.get(rng.usize(0..live.len().max(1))) {
                    if pods(&api)
                        .delete(victim, &DeleteParams::default())
                        .await
                        .is_ok()
                    {
                        deleted_by_us += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
            }
            created += controller.events("SuccessfulCreate").await.len();
            // Killed mid-flight, not shut down.
            controller.task.abort();
            let _ = controller.task.await;
        }
        let controller = Running::start_over(api.clone(), lagging.clone());
        history
            .wait_until(|state| live_owned(state, &rs) == 5)
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        created += controller.events("SuccessfulCreate").await.len();
        controller.stop().await;

        assert!(
            deleted_by_us >= 20,
            "the chaos deleted {deleted_by_us} Pods"
        );
        let states = history.states();
        for (version, state) in &states {
            let live = live_owned(state, &rs);
            assert!(live <= 5, "{live} live Pods at resourceVersion {version}");
        }
        assert_eq!(live_owned(&states.last().unwrap().1, &rs), 5);
        let added = history
            .revisions()
            .iter()
            .filter(|r| r.change == Change::Added)
            .count();
        assert_eq!(added, 5 + deleted_by_us, "one replacement per killed Pod");
        assert_eq!(created, added, "one SuccessfulCreate per Pod");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn matching_orphans_are_adopted_and_owned_pods_that_stop_matching_are_released() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        let orphan = Pod {
            metadata: ObjectMeta {
                name: Some("stray".into()),
                labels: Some(labels("web")),
                ..ObjectMeta::default()
            },
            spec: Some(pod_spec()),
            ..Pod::default()
        };
        pods(&client)
            .create(&PostParams::default(), &orphan)
            .await
            .unwrap();
        let mut other = orphan.clone();
        other.metadata.name = Some("unrelated".into());
        other.metadata.labels = Some(labels("db"));
        pods(&client)
            .create(&PostParams::default(), &other)
            .await
            .unwrap();
        // Matching, but another controller's: neither adopted nor counted.
        let mut taken = orphan.clone();
        taken.metadata.name = Some("taken".into());
        taken.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "someone-else".into(),
            uid: "someone-else-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        pods(&client)
            .create(&PostParams::default(), &taken)
            .await
            .unwrap();

        let history = ObjectHistory::<Pod>::record(client.clone());
        let controller = Running::start(client.clone());
        let rs = create_rs(&client, replica_set("web", 2, None)).await;
        history
            .wait_until(|state| live_owned(state, &rs) == 2)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        let stray = pods(&client).get("stray").await.unwrap();
        assert!(controlled_by(&stray, &rs), "the matching orphan is adopted");
        let owner = &stray.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.block_owner_deletion, Some(true));
        let unrelated = pods(&client).get("unrelated").await.unwrap();
        assert!(unrelated.metadata.owner_references.is_none());
        let taken = pods(&client).get("taken").await.unwrap();
        assert_eq!(
            taken.metadata.owner_references.unwrap()[0].uid,
            "someone-else-uid"
        );
        assert_eq!(
            controller.events("SuccessfulCreate").await.len(),
            1,
            "one adopted, one created"
        );

        // The adopted Pod stops matching: released, and replaced.
        let patch = serde_json::json!({"metadata": {"labels": {"app": "debug"}}});
        pods(&client)
            .patch("stray", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        history
            .wait_until(|state| {
                live_owned(state, &rs) == 2
                    && state
                        .get(&ObjectKey::namespaced(NS, "stray"))
                        .is_some_and(|p| !controlled_by(p, &rs))
            })
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let released = pods(&client).get("stray").await.unwrap();
        assert!(released
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty());
        assert_eq!(controller.events("SuccessfulCreate").await.len(), 2);
        assert!(controller.events("SuccessfulDelete").await.is_empty());
        controller.stop().await;

        // Owned at most two at any revision, and the stray Pod was never deleted.
        for (version, state) in history.states() {
            assert!(live_owned(&state, &rs) <= 2, "at {version}");
        }
        assert!(history
            .revisions()
            .iter()
            .all(|r| r.change != Change::Deleted));
    })
    .await;
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32, i32, Option<i64>) {
    let status = rs.status.clone().unwrap_or_default();
    (
        status.replicas,
        status.fully_labeled_replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        status.observed_generation,
    )
}

#[tokio::test(start_paused = true)]
async fn status_counts_ready_and_available_pods_and_follows_the_generation() {
    within(Duration::from_secs(300), async {
        let client = capstan_apiserver::testing::client();
        let nodes: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
        let scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let kubelet = FakeKubelet::start(client.clone(), nodes, KubeletOptions::default());
        let sets = ObjectHistory::<ReplicaSet>::record(client.clone());
        let pod_history = ObjectHistory::<Pod>::record(client.clone());
        let controller = Running::start(client.clone());

        let web = ObjectKey::namespaced(NS, "web");
        let slow = ObjectKey::namespaced(NS, "slow");
        create_rs(&client, replica_set("web", 3, None)).await;
        // Ready, but not for an hour yet: never available within this test.
        create_rs(&client, replica_set("slow", 2, Some(3600))).await;
        sets.wait_until(|state| {
            state.get(&web).map(|rs| status_of(rs)) == Some((3, 3, 3, 3, Some(1)))
                && state.get(&slow).map(|rs| status_of(rs)) == Some((2, 2, 2, 0, Some(1)))
        })
        .await;

        scale(&client, "web", 4).await;
        sets.wait_until(|state| {
            state.get(&web).map(|rs| status_of(rs)) == Some((4, 4, 4, 4, Some(2)))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        controller.stop().await;
        assert_eq!(scheduler.bound(), 6);
        assert_eq!(kubelet.started(), 6);

        // Every Pod got an IP and a node from the fakes.
        for pod in pod_history.current().values() {
            let status = pod.status.as_ref().unwrap();
            assert_eq!(status.phase.as_deref(), Some("Running"));
            assert!(status.pod_ip.is_some() && status.start_time.is_some());
            assert!(pod.spec.as_ref().unwrap().node_name.is_some());
        }
        // At every revision: counts are ordered, and observedGeneration never runs ahead.
        let mut web_statuses = Vec::new();
        for revision in sets.revisions() {
            let rs = &revision.object;
            let (replicas, labeled, ready, available, observed) = status_of(rs);
            assert!(available <= ready && ready <= replicas && labeled <= replicas);
            assert!(observed <= rs.metadata.generation);
            if rs.metadata.name.as_deref() == Some("web") {
                web_statuses.push(status_of(rs));
            }
        }
        // Status is only written when it changes: the one revision repeating the previous
        // status is the scale itself (a spec change).
        let writes = web_statuses.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(writes <= 1, "statuses: {web_statuses:?}");
    })
    .await;
}
