//! The Deployment controller end to end: the Deployment and ReplicaSet controllers with the
//! fake scheduler and kubelet of `capstan_controller::testing`, over the in-process registry
//! on the memory store.
//!
//! Every case runs on tokio's paused clock (time moves only when every task is idle; the
//! Deployment controller's clock follows it), and asserts on the recorded Events and on the
//! Pod, ReplicaSet and Deployment histories at every revision, not only on the end state.

use capstan_api::compat::{self, Maybe};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use capstan_api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions, ObjectHistory};
use capstan_controllers::deployment::{
    annotations, reasons, util, DeploymentController, POD_TEMPLATE_HASH_LABEL,
};
use capstan_controllers::replicaset::ReplicaSetController;
use capstan_watch::{InformerFactory, ObjectKey, ReflectorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "default";
const LIMIT: Duration = Duration::from_secs(300);

/// The seed manifest `newkubia-deployment.yaml`.
const NEWKUBIA: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: newkubia
  namespace: default
spec:
  replicas: 5
  selector:
    matchLabels:
      app: newkubia
  template:
    metadata:
      labels:
        app: newkubia
    spec:
      containers:
      - name: newkubia
        image: luksa/kubia:v2
        ports:
        - containerPort: 8080
"#;

/// The Deployment of the seed manifest `rolling-update.yaml`: "3 replicas updated v1 -> v2
/// one pod at a time, never fewer than 2 available and never more than 4 in total
/// (maxUnavailable 1, maxSurge 1); rollback reverses it."
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: web:v1
"#;

fn manifest(yaml: &str) -> Deployment {
    serde_yaml_ng::from_str(yaml).expect("a valid manifest")
}

/// Both controllers, the fake scheduler and kubelet, and the histories, over one registry.
struct Cluster {
    client: Arc<dyn Client>,
    events: EventBroadcaster,
    pods: ObjectHistory<Pod>,
    replica_sets: ObjectHistory<ReplicaSet>,
    deployments: ObjectHistory<Deployment>,
    kubelet: Option<FakeKubelet>,
    _scheduler: FakeScheduler,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    fn start(ready: bool) -> Self {
        let client = capstan_apiserver::testing::client();
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(10_000),
        );
        let pods = ObjectHistory::record(client.clone());
        let replica_sets = ObjectHistory::record(client.clone());
        let deployments = ObjectHistory::record(client.clone());
        let nodes: Vec<String> = (1..=3).map(|n| format!("node-{n}")).collect();
        let scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let kubelet = FakeKubelet::start(
            client.clone(),
            nodes,
            KubeletOptions {
                ready,
                events: Some(events.recorder("kubelet")),
                ..KubeletOptions::default()
            },
        );
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let (wall, origin) = (Timestamp::now(), Instant::now());
        let deployment_controller: DeploymentController =
            capstan_controllers::deployment::controller(
                client.clone(),
                factory.clone(),
                events.recorder(capstan_controllers::deployment::COMPONENT),
            )
            .map_reconciler(|reconciler| {
                reconciler.with_clock(move || wall.checked_add(origin.elapsed()).unwrap())
            });
        let rs_controller: ReplicaSetController = capstan_controllers::replicaset::controller(
            client.clone(),
            factory,
            events.recorder(capstan_controllers::replicaset::COMPONENT),
        );
        let (stop_d, stopped_d) = oneshot::channel::<()>();
        let (stop_rs, stopped_rs) = oneshot::channel::<()>();
        let tasks = vec![
            tokio::spawn(async move {
                deployment_controller
                    .run(async {
                        let _ = stopped_d.await;
                    })
                    .await
                    .unwrap();
            }),
            tokio::spawn(async move {
                rs_controller
                    .run(async {
                        let _ = stopped_rs.await;
                    })
                    .await
                    .unwrap();
            }),
        ];
        Cluster {
            client,
            events,
            pods,
            replica_sets,
            deployments,
            kubelet: Some(kubelet),
            _scheduler: scheduler,
            stops: vec![stop_d, stop_rs],
            tasks,
        }
    }

    fn api(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create(&self, d: &Deployment) -> Deployment {
        self.api().create(&PostParams::default(), d).await.unwrap()
    }

    async fn patch(&self, name: &str, patch: serde_json::Value) {
        self.api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn set_image(&self, name: &str, image: &str) {
        let d = self.api().get(name).await.unwrap();
        let mut template = d.spec.into_opt().unwrap().template;
        template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
        self.patch(name, serde_json::json!({"spec": {"template": template}}))
            .await;
    }

    /// Waits until `name` is fully rolled out on `image` with its `spec.replicas`: status
    /// up to date, and exactly that many Pods, all of that image, ready and not terminating.
    async fn wait_rolled_out(&self, name: &str, image: &str) {
        let key = ObjectKey::namespaced(NS, name);
        let replicas = loop {
            let mut found = None;
            self.deployments
                .wait_until(|state| {
                    found = state.get(&key).filter(|d| complete(d)).cloned();
                    found.is_some()
                })
                .await;
            let d = found.unwrap();
            let ok = d
                .spec
                .opt()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some(image);
            if ok {
                break d.spec.opt().unwrap().replicas.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let app = name.to_string();
        self.pods
            .wait_until(|state| {
                let mine: Vec<_> = state.values().filter(|p| app_of(p) == app).collect();
                mine.len() == replicas as usize
                    && mine
                        .iter()
                        .all(|p| p.is_active() && p.is_ready() && image_of(p) == image)
            })
            .await;
    }

    async fn deployment(&self, name: &str) -> Deployment {
        self.api().get(name).await.unwrap()
    }

    async fn replica_sets_of(&self, name: &str) -> Vec<ReplicaSet> {
        let mut list: Vec<ReplicaSet> = Api::<ReplicaSet>::namespaced(self.client.clone(), NS)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .name
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("{name}-"))
            })
            .collect();
        list.sort_by_key(util::revision);
        list
    }

    /// Every Event written so far, in order.
    async fn events(&self) -> Vec<Event> {
        self.events.flush().await;
        self.events.history()
    }

    async fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        self.events.flush().await;
    }
}

fn complete(d: &Deployment) -> bool {
    let spec = d.spec.opt().unwrap();
    let status = d.status.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap();
    status.observed_generation == d.metadata.generation
        && status.updated_replicas == Some(replicas)
        && status.replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
}

fn app_of(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .cloned()
        .unwrap_or_default()
}

fn image_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn hash_of(labels: Option<&BTreeMap<String, String>>) -> String {
    labels
        .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
        .cloned()
        .unwrap_or_default()
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(key).cloned()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| compat::text(&c.type_) == type_)
        .map(|c| {
            (
                compat::text(&c.status).to_string(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn scaling_messages(events: &[Event], deployment: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reasons::SCALING_REPLICA_SET)
                && e.involved_object.name.as_deref() == Some(deployment)
        })
        .map(|e| e.message.clone().unwrap_or_default())
        .collect()
}

/// The bounds of a rolling update at every recorded Pod state from `from` on: available Pods
/// (ready, not terminating) never below `min_available`, Pods that are not terminating never
/// above `max_total`. Returns how many states were checked.
fn assert_rolling_bounds(
    pods: &ObjectHistory<Pod>,
    app: &str,
    from: usize,
    min_available: usize,
    max_total: usize,
) -> usize {
    let states = pods.states();
    for (version, state) in &states[from..] {
        let mine: Vec<_> = state
            .values()
            .filter(|p| app_of(p) == app && p.is_active())
            .collect();
        let available = mine.iter().filter(|p| p.is_ready()).count();
        assert!(
            available >= min_available,
            "at resourceVersion {version}: {available} available pods, fewer than {min_available}"
        );
        assert!(
            mine.len() <= max_total,
            "at resourceVersion {version}: {} pods, more than {max_total}",
            mine.len()
        );
    }
    states.len() - from
}

#[tokio::test(start_paused = true)]
async fn creating_newkubia_makes_one_hashed_replica_set_and_scaling_five_to_three_deletes_two_pods()
{
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let created = cluster.create(&manifest(NEWKUBIA)).await;
        cluster.wait_rolled_out("newkubia", "luksa/kubia:v2").await;

        // One ReplicaSet, named and labelled with the template's hash.
        let rs_list = cluster.replica_sets_of("newkubia").await;
        assert_eq!(rs_list.len(), 1);
        let rs = &rs_list[0];
        let hash = util::pod_template_hash(&created.spec.opt().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("newkubia-{hash}").as_str())
        );
        let rs_spec = rs.spec.opt().unwrap();
        assert_eq!(hash_of(rs.metadata.labels.as_ref()), hash);
        assert_eq!(hash_of(rs_spec.selector.match_labels.as_ref()), hash);
        let template_labels = rs_spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(hash_of(template_labels.labels.as_ref()), hash);
        assert_eq!(rs_spec.replicas, Some(5));
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Deployment", Some(true))
        );
        assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
        // Revision 1; sized for 5 replicas, 7 at most (the default maxSurge 25% rounds up).
        assert_eq!(annotation(rs, annotations::REVISION).as_deref(), Some("1"));
        assert_eq!(
            annotation(rs, annotations::DESIRED_REPLICAS).as_deref(),
            Some("5")
        );
        assert_eq!(
            annotation(rs, annotations::MAX_REPLICAS).as_deref(),
            Some("7")
        );
        let d = cluster.deployment("newkubia").await;
        let d_annotations = d.metadata.annotations.clone().unwrap();
        assert_eq!(d_annotations[annotations::REVISION], "1");
        let status = d.status.clone().unwrap();
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (Some(5), Some(5), Some(5), Some(5), Some(0))
        );
        assert_eq!(
            condition(&d, "Available"),
            Some((
                "True".into(),
                "MinimumReplicasAvailable".into(),
                "Deployment has minimum availability.".into()
            ))
        );
        let rs_name = rs.metadata.name.clone().unwrap();
        assert_eq!(
            condition(&d, "Progressing"),
            Some((
                "True".into(),
                "NewReplicaSetAvailable".into(),
                format!("ReplicaSet \"{rs_name}\" has successfully progressed.")
            ))
        );
        // Every Pod carries the hash and belongs to the ReplicaSet.
        let pods = cluster.pods.current();
        assert_eq!(pods.len(), 5);
        assert!(pods
            .values()
            .all(|p| hash_of(p.metadata.labels.as_ref()) == hash));
        let events = cluster.events().await;
        assert_eq!(
            scaling_messages(&events, "newkubia"),
            [format!("Scaled up replica set {rs_name} from 0 to 5")]
        );

        // Scale 5 -> 3: exactly ScalingReplicaSet, then the two deletions (and the kubelet
        // stopping the two containers).
        let mark = events.len();
        cluster
            .patch("newkubia", serde_json::json!({"spec": {"replicas": 3}}))
            .await;
        cluster.wait_rolled_out("newkubia", "luksa/kubia:v2").await;
        let events = cluster.events().await;
        let chain: Vec<(String, String)> = events[mark..]
            .iter()
            .map(|e| {
                (
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            chain[0],
            (
                "ScalingReplicaSet".to_string(),
                format!("Scaled down replica set {rs_name} from 5 to 3")
            ),
            "{chain:#?}"
        );
        let rest: Vec<&str> = chain[1..].iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rest.len(), 4, "{chain:#?}");
        assert_eq!(
            rest.iter().filter(|r| **r == "SuccessfulDelete").count(),
            2,
            "{chain:#?}"
        );
        assert_eq!(
            rest.iter().filter(|r| **r == "Killing").count(),
            2,
            "{chain:#?}"
        );
        // The deleted Pods are the ones the kubelet stopped.
        let deleted: BTreeSet<String> = events[mark..]
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
            .map(|e| {
                e.message
                    .clone()
                    .unwrap()
                    .trim_start_matches("Deleted pod: ")
                    .to_string()
            })
            .collect();
        let killed: BTreeSet<String> = events[mark..]
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Killing"))
            .map(|e| e.involved_object.name.clone().unwrap())
            .collect();
        assert_eq!(deleted, killed);
        let rs = &cluster.replica_sets_of("newkubia").await[0];
        assert_eq!(rs.spec.opt().unwrap().replicas, Some(3));
        assert_eq!(
            annotation(rs, annotations::DESIRED_REPLICAS).as_deref(),
            Some("3")
        );
        assert_eq!(
            annotation(rs, annotations::MAX_REPLICAS).as_deref(),
            Some("4")
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_never_has_fewer_than_two_available_or_more_than_four_pods() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let web = manifest(WEB);
        // The bounds, from the manifest: replicas - maxUnavailable and replicas + maxSurge.
        let (min_available, max_total) = (3 - 1, 3 + 1);
        cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let old = cluster.replica_sets_of("web").await.remove(0);
        let from = cluster.pods.states().len();
        let rs_from = cluster.replica_sets.states().len();

        cluster.set_image("web", "web:v2").await;
        cluster.wait_rolled_out("web", "web:v2").await;

        let checked = assert_rolling_bounds(&cluster.pods, "web", from, min_available, max_total);
        assert!(checked > 10, "only {checked} pod states recorded");
        // The controller's own intent, at every ReplicaSet revision: at most 4 replicas asked.
        for (version, state) in &cluster.replica_sets.states()[rs_from..] {
            let asked: i32 = state.values().map(|rs| util::rs_replicas(rs)).sum();
            assert!(
                asked <= max_total as i32,
                "at {version}: {asked} replicas asked"
            );
        }
        let rs_list = cluster.replica_sets_of("web").await;
        assert_eq!(rs_list.len(), 2);
        let new = &rs_list[1];
        assert_eq!(old.metadata.uid, rs_list[0].metadata.uid);
        assert_eq!(rs_list[0].spec.opt().unwrap().replicas, Some(0));
        assert_eq!(new.spec.opt().unwrap().replicas, Some(3));
        assert_eq!(annotation(new, annotations::REVISION).as_deref(), Some("2"));
        let d = cluster.deployment("web").await;
        assert_eq!(d.metadata.annotations.unwrap()[annotations::REVISION], "2");

        // The Events: the new ReplicaSet scaled up one at a time from 0, the old down to 0.
        let (old_name, new_name) = (
            old.metadata.name.unwrap(),
            new.metadata.name.clone().unwrap(),
        );
        let messages = scaling_messages(&cluster.events().await, "web");
        assert_eq!(
            messages[0],
            format!("Scaled up replica set {old_name} from 0 to 3")
        );
        assert_eq!(
            messages[1],
            format!("Scaled up replica set {new_name} from 0 to 1")
        );
        assert_eq!(
            messages[2],
            format!("Scaled down replica set {old_name} from 3 to 2")
        );
        assert!(
            messages.last().unwrap().ends_with("to 0")
                || messages.last().unwrap().ends_with("to 3")
        );
        for message in &messages[1..] {
            let up = message.starts_with(&format!("Scaled up replica set {new_name} from "));
            let down = message.starts_with(&format!("Scaled down replica set {old_name} from "));
            assert!(up || down, "{message}");
        }
        assert!(
            messages.contains(&format!("Scaled down replica set {old_name} from 1 to 0"))
                || messages.iter().any(|m| m
                    .starts_with(&format!("Scaled down replica set {old_name}"))
                    && m.ends_with("to 0"))
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn rolling_back_reuses_the_old_replica_set_under_a_new_revision() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let web = manifest(WEB);
        cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        cluster.set_image("web", "web:v2").await;
        cluster.wait_rolled_out("web", "web:v2").await;
        let before = cluster.replica_sets_of("web").await;
        let (v1, v2) = (before[0].clone(), before[1].clone());
        let from = cluster.pods.states().len();

        // `kubectl rollout undo`: the template of revision 1, without its hash label.
        let mut template = v1.spec.clone().into_opt().unwrap().template.unwrap();
        template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .remove(POD_TEMPLATE_HASH_LABEL);
        cluster
            .patch("web", serde_json::json!({"spec": {"template": template}}))
            .await;
        cluster.wait_rolled_out("web", "web:v1").await;

        assert_rolling_bounds(&cluster.pods, "web", from, 2, 4);
        let after = cluster.replica_sets_of("web").await;
        assert_eq!(after.len(), 2, "no third ReplicaSet");
        let names: BTreeSet<_> = cluster
            .replica_sets
            .revisions()
            .iter()
            .map(|r| r.object.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names.len(), 2);
        // Sorted by revision: v2 (2), then v1 again (3).
        assert_eq!(after[0].metadata.uid, v2.metadata.uid);
        assert_eq!(after[1].metadata.uid, v1.metadata.uid);
        assert_eq!(
            annotation(&after[1], annotations::REVISION).as_deref(),
            Some("3")
        );
        assert_eq!(
            annotation(&after[1], annotations::REVISION_HISTORY).as_deref(),
            Some("1")
        );
        assert_eq!(after[1].spec.opt().unwrap().replicas, Some(3));
        assert_eq!(after[0].spec.opt().unwrap().replicas, Some(0));
        let d = cluster.deployment("web").await;
        assert_eq!(
            d.metadata.annotations.clone().unwrap()[annotations::REVISION],
            "3"
        );
        let v1_name = v1.metadata.name.clone().unwrap();
        assert_eq!(
            condition(&d, "Progressing").unwrap().2,
            format!("ReplicaSet \"{v1_name}\" has successfully progressed.")
        );
        let messages = scaling_messages(&cluster.events().await, "web");
        assert!(messages.contains(&format!("Scaled up replica set {v1_name} from 0 to 1")));
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn recreate_never_runs_old_and_new_pods_at_the_same_time() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let mut web = manifest(WEB);
        web.spec.opt_mut().unwrap().strategy =
            Some(serde_json::from_value(serde_json::json!({"type": "Recreate"})).unwrap());
        cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let from = cluster.pods.states().len();
        cluster.set_image("web", "web:v2").await;
        cluster.wait_rolled_out("web", "web:v2").await;

        let mut saw_none = false;
        for (version, state) in &cluster.pods.states()[from..] {
            // Terminating Pods count: they may still run.
            let images: BTreeSet<String> = state.values().map(|p| image_of(p)).collect();
            assert!(
                images.len() <= 1,
                "at {version}: old and new pods together: {images:?}"
            );
            saw_none |= images.is_empty();
        }
        assert!(
            saw_none,
            "the old pods were all gone before the new ones came"
        );
        let rs_list = cluster.replica_sets_of("web").await;
        let (old, new) = (
            rs_list[0].metadata.name.clone().unwrap(),
            rs_list[1].metadata.name.clone().unwrap(),
        );
        let messages = scaling_messages(&cluster.events().await, "web");
        assert_eq!(
            messages,
            [
                format!("Scaled up replica set {old} from 0 to 3"),
                format!("Scaled down replica set {old} from 3 to 0"),
                format!("Scaled up replica set {new} from 0 to 3"),
            ]
        );
        // Recreate sizes for no surge.
        assert_eq!(
            annotation(&rs_list[1], annotations::MAX_REPLICAS).as_deref(),
            Some("3")
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        cluster.create(&manifest(WEB)).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let key = ObjectKey::namespaced(NS, "web");

        cluster
            .patch("web", serde_json::json!({"spec": {"paused": true}}))
            .await;
        cluster.set_image("web", "web:v2").await;
        // The controller has seen the paused change of template...
        let generation = cluster.deployment("web").await.metadata.generation;
        cluster
            .deployments
            .wait_until(|s| {
                s.get(&key).is_some_and(|d| {
                    d.status.as_ref().unwrap().observed_generation == generation
                        && condition(d, "Progressing").is_some_and(|c| c.1 == "DeploymentPaused")
                })
            })
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        // ...and rolled nothing out.
        assert_eq!(cluster.replica_sets_of("web").await.len(), 1);
        let d = cluster.deployment("web").await;
        assert_eq!(
            condition(&d, "Progressing"),
            Some((
                "Unknown".into(),
                "DeploymentPaused".into(),
                "Deployment is paused".into()
            ))
        );

        // Scaling still works while paused.
        cluster
            .patch("web", serde_json::json!({"spec": {"replicas": 5}}))
            .await;
        cluster
            .pods
            .wait_until(|s| {
                s.values()
                    .filter(|p| p.is_active() && p.is_ready() && image_of(p) == "web:v1")
                    .count()
                    == 5
            })
            .await;
        let rs_list = cluster.replica_sets_of("web").await;
        assert_eq!(rs_list.len(), 1);
        assert_eq!(rs_list[0].spec.opt().unwrap().replicas, Some(5));

        // Resumed, the rollout goes on.
        cluster
            .patch("web", serde_json::json!({"spec": {"paused": false}}))
            .await;
        cluster.wait_rolled_out("web", "web:v2").await;
        assert_eq!(cluster.replica_sets_of("web").await.len(), 2);
        let resumed = cluster.deployments.revisions().iter().any(|r| {
            condition(&r.object, "Progressing").is_some_and(|c| {
                c == (
                    "Unknown".into(),
                    "DeploymentResumed".into(),
                    "Deployment is resumed".into(),
                )
            })
        });
        assert!(resumed, "the Progressing condition said DeploymentResumed");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn revision_history_limit_keeps_only_the_newest_old_replica_sets() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let mut web = manifest(WEB);
        web.spec.opt_mut().unwrap().replicas = Some(1);
        web.spec.opt_mut().unwrap().revision_history_limit = Some(2);
        cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let mut names = vec![cluster.replica_sets_of("web").await[0]
            .metadata
            .name
            .clone()
            .unwrap()];
        for version in 2..=5 {
            let image = format!("web:v{version}");
            cluster.set_image("web", &image).await;
            cluster.wait_rolled_out("web", &image).await;
            let rs_list = cluster.replica_sets_of("web").await;
            names.push(rs_list.last().unwrap().metadata.name.clone().unwrap());
        }
        // Cleanup runs once a rollout is complete: wait for it to settle.
        cluster.replica_sets.wait_until(|s| s.len() == 3).await;
        let rs_list = cluster.replica_sets_of("web").await;
        let revisions: Vec<i64> = rs_list.iter().map(util::revision).collect();
        assert_eq!(revisions, [3, 4, 5]);
        // The oldest went first.
        let deleted: Vec<String> = cluster
            .replica_sets
            .revisions()
            .iter()
            .filter(|r| r.change == capstan_controller::testing::Change::Deleted)
            .map(|r| r.object.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(deleted, names[..2]);
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pods_that_never_become_ready_exceed_the_progress_deadline() {
    within(LIMIT, async {
        let cluster = Cluster::start(false);
        let mut web = manifest(WEB);
        web.spec.opt_mut().unwrap().progress_deadline_seconds = Some(30);
        let started = Instant::now();
        cluster.create(&web).await;
        let key = ObjectKey::namespaced(NS, "web");
        cluster
            .deployments
            .wait_until(|s| {
                s.get(&key)
                    .and_then(|d| condition(d, "Progressing"))
                    .is_some_and(|c| c.1 == "ProgressDeadlineExceeded")
            })
            .await;
        // Condition times are kept to the second, as the API stores them: the deadline is
        // measured from the last progress rounded down, so it may pass up to a second early.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(29) && elapsed <= Duration::from_secs(32),
            "timed out after {elapsed:?}"
        );
        let d = cluster.deployment("web").await;
        let rs = cluster.replica_sets_of("web").await.remove(0);
        let rs_name = rs.metadata.name.unwrap();
        assert_eq!(
            condition(&d, "Progressing"),
            Some((
                "False".into(),
                "ProgressDeadlineExceeded".into(),
                format!("ReplicaSet \"{rs_name}\" has timed out progressing.")
            ))
        );
        assert_eq!(
            condition(&d, "Available"),
            Some((
                "False".into(),
                "MinimumReplicasUnavailable".into(),
                "Deployment does not have minimum availability.".into()
            ))
        );
        let status = d.status.unwrap();
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (Some(3), Some(0), Some(0), Some(3))
        );
        // On the way: created, then progressing.
        let reasons_seen: Vec<String> = cluster
            .deployments
            .revisions()
            .iter()
            .filter_map(|r| condition(&r.object, "Progressing").map(|c| c.1))
            .collect();
        assert_eq!(
            reasons_seen.first().map(String::as_str),
            Some("NewReplicaSetCreated")
        );
        assert!(reasons_seen.iter().any(|r| r == "ReplicaSetUpdated"));
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn scaling_mid_rollout_shares_the_new_replicas_in_proportion_to_each_replica_set() {
    within(LIMIT, async {
        // Kubernetes' documented case: 10 replicas, maxSurge 3, maxUnavailable 2, a rollout
        // stuck with 8 old and 5 new Pods, then scaled to 15: 3 more old, 2 more new.
        let mut cluster = Cluster::start(true);
        let mut web = manifest(WEB);
        let spec = web.spec.opt_mut().unwrap();
        spec.replicas = Some(10);
        spec.strategy = Some(
            serde_json::from_value(serde_json::json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2},
            }))
            .unwrap(),
        );
        cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        // No kubelet from now on: the new Pods never start.
        cluster.kubelet.take().unwrap().stop();
        cluster.set_image("web", "web:v2").await;
        cluster
            .replica_sets
            .wait_until(|s| {
                let sizes: BTreeSet<i32> = s.values().map(|rs| util::rs_replicas(rs)).collect();
                s.len() == 2 && sizes == BTreeSet::from([8, 5])
            })
            .await;
        let rs_list = cluster.replica_sets_of("web").await;
        let (old, new) = (
            rs_list[0].metadata.name.clone().unwrap(),
            rs_list[1].metadata.name.clone().unwrap(),
        );
        let mark = cluster.events().await.len();

        cluster
            .patch("web", serde_json::json!({"spec": {"replicas": 15}}))
            .await;
        cluster
            .replica_sets
            .wait_until(|s| {
                let sizes: BTreeSet<i32> = s.values().map(|rs| util::rs_replicas(rs)).collect();
                sizes == BTreeSet::from([11, 7])
            })
            .await;
        let rs_list = cluster.replica_sets_of("web").await;
        assert_eq!(rs_list[0].spec.opt().unwrap().replicas, Some(11));
        assert_eq!(rs_list[1].spec.opt().unwrap().replicas, Some(7));
        for rs in &rs_list {
            assert_eq!(
                annotation(rs, annotations::DESIRED_REPLICAS).as_deref(),
                Some("15")
            );
            assert_eq!(
                annotation(rs, annotations::MAX_REPLICAS).as_deref(),
                Some("18")
            );
        }
        let events = cluster.events().await;
        let messages = scaling_messages(&events[mark..], "web");
        assert_eq!(
            messages,
            [
                format!("Scaled up replica set {old} from 8 to 11"),
                format!("Scaled up replica set {new} from 5 to 7"),
            ]
        );
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_orphaned_replica_set_of_the_template_is_adopted_instead_of_duplicated() {
    within(LIMIT, async {
        let cluster = Cluster::start(true);
        let web = manifest(WEB);
        // The Deployment was deleted with `--cascade=orphan`: its ReplicaSet and Pods remain.
        let first = cluster.create(&web).await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let orphan = cluster.replica_sets_of("web").await.remove(0);
        cluster
            .api()
            .delete("web", &Default::default())
            .await
            .unwrap();
        cluster.deployments.wait_until(|s| s.is_empty()).await;
        // What the garbage collector does when orphaning: the ownerReference goes.
        let rs_api = Api::<ReplicaSet>::namespaced(cluster.client.clone(), NS);
        rs_api
            .patch(
                orphan.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": null}})),
            )
            .await
            .unwrap();

        // A new Deployment with the same template adopts it.
        let second = cluster.create(&web).await;
        assert_ne!(first.metadata.uid, second.metadata.uid);
        cluster
            .replica_sets
            .wait_until(|s| {
                s.values().any(|rs| {
                    rs.metadata.owner_references.iter().flatten().any(|r| {
                        r.controller == Some(true) && r.uid == second.metadata.uid.clone().unwrap()
                    })
                })
            })
            .await;
        cluster.wait_rolled_out("web", "web:v1").await;
        let rs_list = cluster.replica_sets_of("web").await;
        assert_eq!(rs_list.len(), 1, "no second ReplicaSet");
        assert_eq!(rs_list[0].metadata.uid, orphan.metadata.uid);
        let messages = scaling_messages(&cluster.events().await, "web");
        assert_eq!(
            messages.len(),
            1,
            "nothing scaled after the adoption: {messages:?}"
        );
        cluster.stop().await;
    })
    .await;
}
