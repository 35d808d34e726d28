//! The controller runtime end to end, over the in-process registry on the memory store.
//!
//! Timing-sensitive cases run on tokio's paused clock, where time only moves when every task
//! is idle, so delays are exact and nothing depends on the machine's load. The concurrency
//! case runs on real threads and asserts no timing at all.

use capstan_api::compat;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use capstan_api::k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, PodSpec, PodTemplateSpec, Secret,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{ObjectList, ObjectMeta};
use capstan_api::testing::within;
use capstan_api::{Api, Client, Resource, Result as ApiResult};
use capstan_controller::runtime::{
    reconciler_fn, Action, Context, Controller, ControllerError, ControllerMetrics, ObjectKey,
    Reconciler,
};
use capstan_watch::queue::ExponentialBackoff;
use capstan_watch::{EventStream, InformerFactory, ReflectorOptions, SharedInformer, Watch};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Widget {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: WidgetSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WidgetSpec {
    size: u32,
}

capstan_api::resource!(
    Widget,
    group = "example.com",
    version = "v1",
    kind = "Widget",
    plural = "widgets",
    scope = Namespaced
);

const NS: &str = "default";

/// The fake API: the registry over the memory store, serving `Widget` too.
fn client() -> Arc<dyn Client> {
    let registry = capstan_apiserver::testing::registry();
    registry.register(Widget::info());
    registry
}

fn widgets(client: &Arc<dyn Client>) -> Api<Widget> {
    Api::namespaced(client.clone(), NS)
}

async fn create_widget(client: &Arc<dyn Client>, name: &str, size: u32) -> Widget {
    let widget = Widget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: WidgetSpec { size },
    };
    widgets(client)
        .create(&PostParams::default(), &widget)
        .await
        .unwrap()
}

async fn resize_widget(client: &Arc<dyn Client>, name: &str, size: u32) {
    let patch = serde_json::json!({ "spec": { "size": size } });
    widgets(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn controlled_by(owner: &Widget, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: Some(controller),
        block_owner_deletion: None,
    }
}

fn config_map(name: &str, owners: Vec<OwnerReference>, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(owners),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("value".into(), value.into())])),
        ..ConfigMap::default()
    }
}

/// One reconcile as the recording reconciler saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    size: u32,
    retries: u32,
    at: Instant,
}

/// A reconciler that reports every call, then answers with `decide`.
fn recording<E, D>(
    decide: D,
) -> (
    impl Reconciler<Widget, Error = E>,
    mpsc::UnboundedReceiver<Seen>,
)
where
    E: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
    D: Fn(&Widget, &Context) -> Result<Action, E> + Send + Sync + 'static,
{
    let (seen, calls) = mpsc::unbounded_channel();
    let decide = Arc::new(decide);
    let reconciler = reconciler_fn(move |widget: Arc<Widget>, ctx: Context| {
        let (seen, decide) = (seen.clone(), decide.clone());
        async move {
            let _ = seen.send(Seen {
                name: widget.metadata.name.clone().unwrap(),
                size: widget.spec.size,
                retries: ctx.retries(),
                at: Instant::now(),
            });
            decide(&widget, &ctx)
        }
    });
    (reconciler, calls)
}

fn await_change(_: &Widget, _: &Context) -> Result<Action, String> {
    Ok(Action::await_change())
}

async fn next(calls: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    calls.recv().await.expect("the controller is running")
}

/// Lets `quiet` pass (on the paused clock: as soon as everything is idle) and checks that
/// nothing was reconciled meanwhile.
async fn assert_quiet(calls: &mut mpsc::UnboundedReceiver<Seen>, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    if let Ok(seen) = calls.try_recv() {
        panic!("unexpected reconcile: {seen:?}");
    }
}

/// Polls `condition` until it holds; the test's timeout bounds it.
async fn eventually(mut condition: impl FnMut() -> bool) {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A running controller: its task, shutdown handle and metrics.
struct Running {
    task: tokio::task::JoinHandle<Result<(), ControllerError>>,
    shutdown: capstan_controller::runtime::ShutdownHandle,
    metrics: Arc<ControllerMetrics>,
}

impl Running {
    fn start<R: Reconciler<Widget>>(controller: Controller<Widget>, reconciler: R) -> Self {
        Running {
            shutdown: controller.shutdown_handle(),
            metrics: controller.metrics(),
            task: tokio::spawn(controller.run(reconciler)),
        }
    }

    async fn stop(self) {
        self.shutdown.shut_down();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_created_object_is_reconciled_and_an_update_reconciles_it_again_with_its_latest_state() {
    within(Duration::from_secs(60), async {
        let client = client();
        let (reconciler, mut calls) = recording(await_change);
        let running = Running::start(Controller::from_client(client.clone()), reconciler);

        create_widget(&client, "a", 1).await;
        let first = next(&mut calls).await;
        assert_eq!((first.name.as_str(), first.size), ("a", 1));

        resize_widget(&client, "a", 2).await;
        let second = next(&mut calls).await;
        assert_eq!((second.name.as_str(), second.size), ("a", 2));

        assert_quiet(&mut calls, Duration::from_secs(5)).await;
        running.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn requeue_after_reconciles_again_later_and_await_change_does_not() {
    within(Duration::from_secs(600), async {
        let client = client();
        create_widget(&client, "periodic", 1).await;
        create_widget(&client, "waiting", 1).await;
        let (reconciler, mut calls) = recording(|widget, _| {
            Ok::<_, String>(match widget.metadata.name.as_deref() {
                Some("periodic") => Action::requeue(Duration::from_secs(30)),
                _ => Action::await_change(),
            })
        });
        let running = Running::start(Controller::from_client(client.clone()), reconciler);

        let mut first: Vec<_> = vec![next(&mut calls).await, next(&mut calls).await];
        first.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(first[0].name, "periodic");
        assert_eq!(first[1].name, "waiting");
        let start = first[0].at;

        for round in 1..=3u32 {
            let again = next(&mut calls).await;
            assert_eq!(again.name, "periodic", "await_change must not requeue");
            let elapsed = again.at - start;
            let due = Duration::from_secs(30) * round;
            assert!(
                elapsed >= due && elapsed < due + Duration::from_secs(1),
                "round {round} came after {elapsed:?}"
            );
        }
        running.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_error_backs_off_exponentially_per_key_and_success_resets_it() {
    within(Duration::from_secs(60), async {
        let client = client();
        create_widget(&client, "a", 1).await;
        // Size 1 fails four times in a row, size 2 once; "b" fails once.
        let (reconciler, mut calls) = recording(|widget, ctx| {
            let failures = match (widget.metadata.name.as_deref(), widget.spec.size) {
                (Some("a"), 1) => 4,
                _ => 1,
            };
            if ctx.retries() < failures {
                Err(format!("attempt {} failed", ctx.retries()))
            } else {
                Ok(Action::await_change())
            }
        });
        let base = Duration::from_millis(100);
        let controller = Controller::from_client(client.clone())
            .rate_limiter(ExponentialBackoff::new(base, Duration::from_secs(60)));
        let running = Running::start(controller, reconciler);

        let mut a = Vec::new();
        let mut b = Vec::new();
        while a.len() < 5 || b.len() < 2 {
            let seen = next(&mut calls).await;
            if seen.name == "a" {
                a.push(seen);
                if a.len() == 3 {
                    // A second key starts failing while "a" is deep in its backoff.
                    create_widget(&client, "b", 1).await;
                }
            } else {
                b.push(seen);
            }
        }
        let gaps = |seen: &[Seen]| -> Vec<Duration> {
            seen.windows(2)
                .map(|pair| pair[1].at - pair[0].at)
                .collect()
        };
        let assert_gaps = |seen: &[Seen], expected: &[Duration]| {
            for (gap, want) in gaps(seen).into_iter().zip(expected) {
                assert!(
                    gap >= *want && gap < *want + Duration::from_millis(50),
                    "waited {gap:?}, expected {want:?}"
                );
            }
        };
        assert_eq!(
            a.iter().map(|s| s.retries).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert_gaps(&a, &[base, base * 2, base * 4, base * 8]);
        assert_eq!(b.iter().map(|s| s.retries).collect::<Vec<_>>(), [0, 1]);
        assert_gaps(&b, &[base]);

        // "a" succeeded: its next failure starts again from the base delay.
        resize_widget(&client, "a", 2).await;
        let after_success = [next(&mut calls).await, next(&mut calls).await];
        assert!(after_success.iter().all(|s| s.name == "a" && s.size == 2));
        assert_eq!(after_success.each_ref().map(|s| s.retries), [0, 1]);
        assert_gaps(&after_success, &[base]);

        assert_quiet(&mut calls, Duration::from_secs(5)).await;
        let metrics = running.metrics.snapshot();
        assert_eq!(metrics.errors, 4 + 1 + 1);
        running.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_change_to_an_owned_child_reconciles_its_controlling_owner() {
    within(Duration::from_secs(60), async {
        let client = client();
        let (reconciler, mut calls) = recording(await_change);
        let controller = Controller::from_client(client.clone()).owns::<ConfigMap>();
        let running = Running::start(controller, reconciler);

        let owner = create_widget(&client, "owner", 1).await;
        assert_eq!(next(&mut calls).await.name, "owner");

        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let post = PostParams::default();
        config_maps
            .create(
                &post,
                &config_map("child", vec![controlled_by(&owner, true)], "1"),
            )
            .await
            .unwrap();
        assert_eq!(next(&mut calls).await.name, "owner");

        let patch = serde_json::json!({ "data": { "value": "2" } });
        config_maps
            .patch("child", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        assert_eq!(next(&mut calls).await.name, "owner");

        config_maps
            .delete("child", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(next(&mut calls).await.name, "owner");

        // Neither a reference that is not the controller, nor one in another namespace (which
        // names an "owner" that does not exist there), nor an unowned object triggers it.
        config_maps
            .create(
                &post,
                &config_map("referrer", vec![controlled_by(&owner, false)], "1"),
            )
            .await
            .unwrap();
        config_maps
            .create(&post, &config_map("unowned", Vec::new(), "1"))
            .await
            .unwrap();
        capstan_apiserver::testing::create_namespace(&*client, "elsewhere").await;
        Api::<ConfigMap>::namespaced(client.clone(), "elsewhere")
            .create(
                &post,
                &config_map("stray", vec![controlled_by(&owner, true)], "1"),
            )
            .await
            .unwrap();
        assert_quiet(&mut calls, Duration::from_secs(5)).await;
        assert_eq!(
            running.metrics.snapshot().skipped,
            1,
            "elsewhere/owner is not cached"
        );
        running.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_change_reconciles_the_built_in_replica_set_that_controls_it() {
    within(Duration::from_secs(60), async {
        let client = client();
        let (seen, mut calls) = mpsc::unbounded_channel();
        let reconciler = reconciler_fn(move |rs: Arc<ReplicaSet>, _ctx: Context| {
            let _ = seen.send(rs.metadata.name.clone().unwrap());
            async { Ok::<_, capstan_api::Error>(Action::await_change()) }
        });
        let controller = Controller::<ReplicaSet>::from_client(client.clone()).owns::<Pod>();
        let shutdown = controller.shutdown_handle();
        let task = tokio::spawn(controller.run(reconciler));

        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let pod_spec = PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        };
        let replica_set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            spec: compat::value(ReplicaSetSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod_spec.clone()),
                }),
                ..ReplicaSetSpec::default()
            }),
            ..ReplicaSet::default()
        };
        let created = Api::<ReplicaSet>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &replica_set)
            .await
            .unwrap();
        assert_eq!(calls.recv().await.unwrap(), "web");

        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-x1".into()),
                labels: Some(labels),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    uid: created.metadata.uid.clone().unwrap(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(pod_spec),
            ..Pod::default()
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(calls.recv().await.unwrap(), "web");
        pods.delete("web-x1", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(calls.recv().await.unwrap(), "web");

        shutdown.shut_down();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_watched_kind_reconciles_the_keys_its_mapper_returns_for_old_and_new_states() {
    within(Duration::from_secs(60), async {
        let client = client();
        create_widget(&client, "w1", 1).await;
        create_widget(&client, "w2", 1).await;
        let (reconciler, mut calls) = recording(await_change);
        let controller = Controller::from_client(client.clone()).watches(|secret: &Secret| {
            let meta = &secret.metadata;
            meta.labels
                .as_ref()
                .and_then(|labels| labels.get("widget"))
                .map(|name| ObjectKey::namespaced(meta.namespace.clone().unwrap(), name.clone()))
        });
        let running = Running::start(controller, reconciler);
        let mut initial = [next(&mut calls).await.name, next(&mut calls).await.name];
        initial.sort();
        assert_eq!(initial, ["w1", "w2"]);

        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("credentials".into()),
                labels: Some(BTreeMap::from([("widget".into(), "w2".into())])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        assert_eq!(next(&mut calls).await.name, "w2");

        // Moving the secret to w1 reconciles both: the one it left and the one it joined.
        let patch = serde_json::json!({ "metadata": { "labels": { "widget": "w1" } } });
        secrets
            .patch(
                "credentials",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        let mut moved = [next(&mut calls).await.name, next(&mut calls).await.name];
        moved.sort();
        assert_eq!(moved, ["w1", "w2"]);

        assert_quiet(&mut calls, Duration::from_secs(5)).await;
        running.stop().await;
    })
    .await;
}

/// Tracks reconciles in flight: overlaps of one key, and the most at once.
#[derive(Default)]
struct InFlight {
    keys: Mutex<HashSet<ObjectKey>>,
    overlapped: AtomicBool,
    most: AtomicUsize,
    done: Mutex<HashMap<ObjectKey, u32>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_is_never_reconciled_twice_at_once_while_keys_run_in_parallel_up_to_the_bound()
{
    within(Duration::from_secs(120), async {
        const BOUND: usize = 3;
        const ROUNDS: u32 = 5;
        let client = client();
        for i in 0..8 {
            create_widget(&client, &format!("w{i}"), 0).await;
        }
        let state = Arc::new(InFlight::default());
        let (count, counted) = watch::channel(0usize);
        let (finished, mut finishes) = mpsc::unbounded_channel();
        let tracker = state.clone();
        let writer = client.clone();
        let reconciler = reconciler_fn(move |widget: Arc<Widget>, ctx: Context| {
            let (state, count, mut counted, finished, writer) = (
                tracker.clone(),
                count.clone(),
                counted.clone(),
                finished.clone(),
                writer.clone(),
            );
            async move {
                let key = ctx.key().clone();
                let now = {
                    let mut keys = state.keys.lock();
                    if !keys.insert(key.clone()) {
                        state.overlapped.store(true, Ordering::SeqCst);
                    }
                    keys.len()
                };
                state.most.fetch_max(now, Ordering::SeqCst);
                count.send_modify(|most| *most = (*most).max(now));
                // Hold the slot until the bound has been reached once (or a while has passed),
                // so reaching it does not depend on how fast the machine is.
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    counted.wait_for(|most| *most >= BOUND),
                )
                .await;
                let rounds = {
                    let mut done = state.done.lock();
                    let rounds = done.entry(key.clone()).or_default();
                    *rounds += 1;
                    *rounds
                };
                if rounds < ROUNDS {
                    // Change the object mid-reconcile, as a status write would: its key is
                    // queued again at once, and must wait until this reconcile ends.
                    let size = widget.spec.size + 100;
                    resize_widget(&writer, &key.name, size).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else if rounds == ROUNDS {
                    let _ = finished.send(key.clone());
                }
                state.keys.lock().remove(&key);
                Ok::<_, String>(Action::await_change())
            }
        });
        let running = Running::start(
            Controller::from_client(client.clone()).concurrency(BOUND),
            reconciler,
        );
        // Changes to a key in flight add it again too.
        for size in 1..=20 {
            resize_widget(&client, "w0", size).await;
        }
        let mut finished_keys = HashSet::new();
        while finished_keys.len() < 8 {
            finished_keys.insert(finishes.recv().await.unwrap());
        }
        running.stop().await;

        assert!(
            !state.overlapped.load(Ordering::SeqCst),
            "a key was reconciled twice at once"
        );
        assert_eq!(state.most.load(Ordering::SeqCst), BOUND);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_reconcile_in_flight_finish_and_starts_no_new_one() {
    within(Duration::from_secs(60), async {
        let client = client();
        create_widget(&client, "a", 1).await;
        create_widget(&client, "b", 1).await;
        let (started, mut starts) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let finished = Arc::new(AtomicBool::new(false));
        let reconciler = {
            let (gate, finished) = (gate.clone(), finished.clone());
            reconciler_fn(move |widget: Arc<Widget>, ctx: Context| {
                let (started, gate, finished) = (started.clone(), gate.clone(), finished.clone());
                async move {
                    let _ = started.send(widget.metadata.name.clone().unwrap());
                    gate.notified().await;
                    assert!(ctx.is_shutting_down());
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, String>(Action::requeue(Duration::ZERO))
                }
            })
        };
        let running = Running::start(
            Controller::from_client(client.clone()).concurrency(1),
            reconciler,
        );
        let first = starts.recv().await.unwrap();

        running.shutdown.shut_down();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !running.task.is_finished(),
            "run returned with a reconcile in flight"
        );
        assert!(!finished.load(Ordering::SeqCst));

        gate.notify_one();
        running.task.await.unwrap().unwrap();
        assert!(
            finished.load(Ordering::SeqCst),
            "the reconcile in flight finished"
        );
        assert!(starts.try_recv().is_err(), "nothing started after {first}");
        assert_eq!(running.metrics.reconciles(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn metrics_count_reconciles_errors_panics_and_skipped_keys() {
    within(Duration::from_secs(60), async {
        let client = client();
        create_widget(&client, "fine", 1).await;
        create_widget(&client, "flaky", 1).await;
        create_widget(&client, "panicky", 1).await;
        let reconciler = reconciler_fn(|widget: Arc<Widget>, ctx: Context| async move {
            match (widget.metadata.name.as_deref(), ctx.retries()) {
                (Some("flaky"), retries) if retries < 2 => Err("not yet".to_string()),
                (Some("panicky"), 0) => panic!("a reconciler bug"),
                _ => Ok(Action::await_change()),
            }
        });
        let controller = Controller::from_client(client.clone()).rate_limiter(
            ExponentialBackoff::new(Duration::from_millis(10), Duration::from_secs(1)),
        );
        let metrics = controller.metrics();
        let shutdown = controller.shutdown_handle();
        let task = tokio::spawn(controller.run(reconciler));

        // fine: 1, flaky: 3 (2 errors), panicky: 2 (1 panic).
        eventually(|| metrics.reconciles() == 6).await;
        widgets(&client)
            .delete("fine", &DeleteParams::default())
            .await
            .unwrap();
        eventually(|| metrics.snapshot().skipped == 1).await;
        tokio::time::sleep(Duration::from_secs(5)).await;

        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.reconciles, 6);
        assert_eq!(snapshot.errors, 3);
        assert_eq!(snapshot.panics, 1);
        assert_eq!(snapshot.skipped, 1);
        assert_eq!(snapshot.reconcile_duration.count, 6);
        assert_eq!(snapshot.queue.retries, 3);
        assert_eq!(snapshot.queue_depth(), 0);
        assert_eq!(snapshot.queue.processing, 0);
        shutdown.shut_down();
        task.await.unwrap().unwrap();
    })
    .await;
}

/// A ConfigMap source whose list waits until `open` turns true: an informer that syncs only
/// when the test says so.
struct Gated {
    inner: Api<ConfigMap>,
    open: watch::Receiver<bool>,
}

#[async_trait]
impl Watch<ConfigMap> for Gated {
    async fn list(&self, params: &ListParams) -> ApiResult<ObjectList<ConfigMap>> {
        let _ = self.open.clone().wait_for(|open| *open).await;
        self.inner.list(params).await
    }

    async fn watch(&self, params: &WatchParams, rv: &str) -> ApiResult<EventStream<ConfigMap>> {
        self.inner.watch(params, rv).await
    }
}

fn gated_informer(
    client: &Arc<dyn Client>,
) -> (Arc<SharedInformer<ConfigMap>>, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let source = Arc::new(Gated {
        inner: Api::all(client.clone()),
        open: gate,
    });
    (
        Arc::new(SharedInformer::spawn(source, ReflectorOptions::default())),
        open,
    )
}

#[tokio::test(start_paused = true)]
async fn nothing_is_reconciled_before_every_cache_has_synced() {
    within(Duration::from_secs(60), async {
        let client = client();
        create_widget(&client, "a", 1).await;
        let (config_maps, open) = gated_informer(&client);
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let (reconciler, mut calls) = recording(await_change);
        let controller = Controller::new(factory).owns_informer(config_maps);
        let running = Running::start(controller, reconciler);

        assert_quiet(&mut calls, Duration::from_secs(10)).await;
        open.send_replace(true);
        assert_eq!(next(&mut calls).await.name, "a");
        running.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn caches_that_do_not_sync_in_time_fail_the_run_with_the_kinds_named() {
    within(Duration::from_secs(60), async {
        let client = client();
        let (config_maps, _open) = gated_informer(&client);
        let (reconciler, _calls) = recording(await_change);
        let error = Controller::<Widget>::from_client(client.clone())
            .owns_informer(config_maps)
            .sync_timeout(Duration::from_secs(10))
            .run(reconciler)
            .await
            .unwrap_err();
        match &error {
            ControllerError::CacheSyncTimeout { kinds, .. } => assert_eq!(kinds, &["ConfigMap"]),
            other => panic!("unexpected error {other}"),
        }
        assert!(error.is_retryable());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_misbuilt_controller_fails_before_starting() {
    within(Duration::from_secs(60), async {
        let client = client();
        let informer = Arc::new(SharedInformer::spawn(
            Arc::new(widgets(&client)) as Arc<dyn Watch<Widget>>,
            ReflectorOptions::default(),
        ));
        let (reconciler, _calls) = recording(await_change);
        let error = Controller::for_informer(informer.clone())
            .owns::<ConfigMap>()
            .run(reconciler)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ControllerError::NoInformerFactory { kind, .. } if kind == "ConfigMap"),
            "{error}"
        );
        assert!(!error.is_retryable());

        let (reconciler, _calls) = recording(await_change);
        let error = Controller::for_informer(informer)
            .concurrency(0)
            .run(reconciler)
            .await
            .unwrap_err();
        assert!(matches!(error, ControllerError::ZeroConcurrency { .. }));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_signal_stops_a_controller_still_waiting_for_its_caches() {
    within(Duration::from_secs(60), async {
        let client = client();
        let (config_maps, _open) = gated_informer(&client);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (reconciler, mut calls) = recording(await_change);
        create_widget(&client, "a", 1).await;
        let controller = Controller::from_client(client.clone())
            .owns_informer(config_maps)
            .graceful_shutdown_on(async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(controller.run(reconciler));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(calls.try_recv().is_err());
    })
    .await;
}
