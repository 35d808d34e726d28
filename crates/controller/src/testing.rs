//! Fakes for testing controllers: use them in your own unit tests, over any [`Client`]
//! (typically the in-process registry on the memory store).
//!
//! - [`FakeScheduler`]: binds every Pod without `spec.nodeName` to one of a set of Node
//!   names, round-robin, by patching `spec.nodeName`.
//! - [`FakeKubelet`]: for every Pod bound to one of its nodes, after a configurable delay,
//!   reports it `Running` with a `Ready` condition (`True`, or `False` when configured not
//!   ready), a `podIP`, a `hostIP` and a `startTime`, through the status subresource. When
//!   such a Pod is deleted (gracefully: the API server sets its `deletionTimestamp`), it
//!   records `Killing` ("Stopping container `<name>`") per container, as the kubelet does, and
//!   after a configurable delay deletes the Pod for good (grace period 0).
//! - [`FakeNodes`]: registers Node objects (Ready, with capacity and addresses) and renews
//!   their Leases in `kube-node-lease` every 10 s, as kubelets do, so the node lifecycle
//!   controller sees healthy nodes; [`FakeNodes::stop_heartbeats`] makes them go silent.
//! - [`ObjectHistory`]: records every watch event of one kind with its resourceVersion, so a
//!   test can assert an invariant at *every* revision it observed, not just at the end.
//! - [`EventLog`]: records every `core/v1` Event, so a test can assert what was reported
//!   ([`EventLog::with_reason`]) or wait for it ([`EventLog::wait_for`]).
//!
//! Each runs as a tokio task over its own informer or watch and stops when dropped or
//! [stopped](FakeScheduler::stop). None of them knows the controller under test: they only
//! talk to the API, as the real components do.

use capstan_api::kube_core::ResourceExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use capstan_api::k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Event, Node, Pod, PodCondition,
    PodStatus,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    MicroTime, ObjectMeta, OwnerReference, Time,
};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchParams,
};
use capstan_api::kube_core::WatchEvent;
use capstan_api::{Api, Client, Resource};
use capstan_watch::{Delta, ObjectKey, ReflectorOptions, SharedInformer, Watch};

use crate::events::EventRecorder;
use crate::retry::retry_on_conflict;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn pod_informer(client: &Arc<dyn Client>) -> SharedInformer<Pod> {
    let source: Arc<dyn Watch<Pod>> = Arc::new(Api::<Pod>::all(client.clone()));
    SharedInformer::spawn(source, ReflectorOptions::default())
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// A simulated scheduler: binds unscheduled Pods to its nodes, round-robin. See the
/// [module docs](self).
#[derive(Debug)]
pub struct FakeScheduler {
    task: JoinHandle<()>,
    bound: Arc<AtomicUsize>,
}

impl FakeScheduler {
    /// Starts binding Pods of every namespace through `client` to `nodes` (at least one).
    ///
    /// # Panics
    ///
    /// With no node, or outside a tokio runtime.
    pub fn start(client: Arc<dyn Client>, nodes: Vec<String>) -> Self {
        assert!(!nodes.is_empty(), "a scheduler needs nodes");
        let bound = Arc::new(AtomicUsize::new(0));
        let counter = bound.clone();
        let task = tokio::spawn(async move {
            let informer = pod_informer(&client);
            let mut deltas = informer.subscribe();
            let mut next = 0usize;
            let mut done: HashSet<String> = HashSet::new();
            while let Some(delta) = deltas.recv().await {
                let pod = match &delta {
                    Delta::Added(pod) | Delta::Updated { new: pod, .. } => pod.clone(),
                    Delta::Deleted(pod) => {
                        done.remove(pod.metadata.uid.as_deref().unwrap_or_default());
                        continue;
                    }
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if node_of(&pod).is_some()
                    || pod.metadata.deletion_timestamp.is_some()
                    || done.contains(&uid)
                {
                    continue;
                }
                let node = nodes[next % nodes.len()].clone();
                next += 1;
                let namespace = pod.namespace().unwrap_or_default();
                let name = pod.name_any();
                let patch = serde_json::json!({
                    "metadata": {"uid": uid},
                    "spec": {"nodeName": node},
                });
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                match pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        done.insert(uid);
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => {
                        tracing::debug!(pod = %name, %error, "fake scheduler: bind failed")
                    }
                }
            }
        });
        FakeScheduler { task, bound }
    }

    /// How many Pods it has bound.
    pub fn bound(&self) -> usize {
        self.bound.load(Ordering::SeqCst)
    }

    /// Stops binding.
    pub fn stop(self) {}
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`FakeKubelet`] behaves.
#[derive(Clone)]
pub struct KubeletOptions {
    /// How long after a Pod is bound it reports it running.
    pub startup_delay: Duration,
    /// Whether the Pods it runs become ready (`Ready: True`) or stay not ready.
    pub ready: bool,
    /// How long stopping a deleted Pod's containers takes before the final delete.
    pub shutdown_delay: Duration,
    /// Where `Killing` events go (component `kubelet`, host the Pod's node); none if unset.
    pub events: Option<EventRecorder>,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            startup_delay: Duration::from_millis(100),
            ready: true,
            shutdown_delay: Duration::from_millis(50),
            events: None,
        }
    }
}

impl std::fmt::Debug for KubeletOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletOptions")
            .field("startup_delay", &self.startup_delay)
            .field("ready", &self.ready)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("events", &self.events.is_some())
            .finish()
    }
}

/// How often kubelets renew their node Lease (`nodeLeaseDurationSeconds` 40, renewed every
/// quarter of it).
pub const NODE_LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Simulated node registration and heartbeats; see the [module docs](self).
#[derive(Debug)]
pub struct FakeNodes {
    task: JoinHandle<()>,
}

impl FakeNodes {
    /// Creates a Ready Node for each name (4 CPUs, 8 GiB, 110 Pods; an InternalIP of
    /// `192.168.0.<n>`), then renews each node's Lease every
    /// [`NODE_LEASE_RENEW_INTERVAL`] until stopped. Nodes that already exist are kept.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(client: Arc<dyn Client>, nodes: Vec<String>) -> Self {
        let task = tokio::spawn(async move {
            let node_api: Api<Node> = Api::all(client.clone());
            let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
            for (index, name) in nodes.iter().enumerate() {
                let node: Node = match serde_json::from_value(fake_node(name, index)) {
                    Ok(node) => node,
                    Err(error) => {
                        tracing::warn!(%name, %error, "fake nodes: a node that does not decode");
                        continue;
                    }
                };
                match node_api.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(error) if error.is_already_exists() => {}
                    Err(error) => tracing::warn!(%name, %error, "fake nodes: registering failed"),
                }
            }
            loop {
                for name in &nodes {
                    renew_lease(&leases, &node_api, name).await;
                }
                tokio::time::sleep(NODE_LEASE_RENEW_INTERVAL).await;
            }
        });
        FakeNodes { task }
    }

    /// Stops renewing the Leases: the nodes go silent, as if their kubelets died.
    pub fn stop_heartbeats(self) {}
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fake_node(name: &str, index: usize) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let resources = serde_json::json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
            },
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": format!("192.168.{}.{}", index / 250, index % 250 + 2)},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "nodeInfo": {
                "architecture": std::env::consts::ARCH,
                "bootID": "", "machineID": "", "systemUUID": "",
                "containerRuntimeVersion": "fake://0.1.0",
                "kernelVersion": "", "kubeProxyVersion": "",
                "kubeletVersion": "v1.33.0-capstan-fake",
                "operatingSystem": "linux",
                "osImage": "Capstan fake node",
            },
        },
    })
}

/// Renews (or creates) the node's Lease, owned by its Node as the kubelet makes it.
async fn renew_lease(leases: &Api<Lease>, nodes: &Api<Node>, name: &str) {
    let now = MicroTime(Timestamp::now());
    match leases.get_opt(name).await {
        Ok(Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            if let Err(error) = leases.update(&PostParams::default(), &lease).await {
                tracing::debug!(%name, %error, "fake nodes: renewing the lease failed");
            }
        }
        Ok(None) => {
            let owner = nodes.get_opt(name).await.ok().flatten();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    owner_references: owner.map(|node| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.to_string(),
                            uid: node.metadata.uid.unwrap_or_default(),
                            ..OwnerReference::default()
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_string()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            if let Err(error) = leases.create(&PostParams::default(), &lease).await {
                tracing::debug!(%name, %error, "fake nodes: creating the lease failed");
            }
        }
        Err(error) => tracing::debug!(%name, %error, "fake nodes: reading the lease failed"),
    }
}

/// A simulated kubelet for a set of nodes; see the [module docs](self).
#[derive(Debug)]
pub struct FakeKubelet {
    task: JoinHandle<()>,
    started: Arc<AtomicUsize>,
}

impl FakeKubelet {
    /// Starts running the Pods bound to `nodes`, reporting through `client`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(client: Arc<dyn Client>, nodes: Vec<String>, options: KubeletOptions) -> Self {
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let task = tokio::spawn(async move {
            let informer = pod_informer(&client);
            let mut deltas = informer.subscribe();
            let nodes: HashSet<String> = nodes.into_iter().collect();
            let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
            let mut stopping: HashSet<String> = HashSet::new();
            let mut starters = tokio::task::JoinSet::new();
            let next_ip = Arc::new(AtomicUsize::new(1));
            while let Some(delta) = deltas.recv().await {
                let pod = match &delta {
                    Delta::Added(pod) | Delta::Updated { new: pod, .. } => pod.clone(),
                    Delta::Deleted(_) => continue,
                };
                let Some(node) = node_of(&pod).filter(|n| nodes.contains(*n)) else {
                    continue;
                };
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() {
                    if stopping.insert(uid.clone()) {
                        starters.spawn(terminate(
                            client.clone(),
                            pod.clone(),
                            node.to_string(),
                            options.clone(),
                        ));
                    }
                    continue;
                }
                if phase == Some("Running")
                    || pod.metadata.deletion_timestamp.is_some()
                    || !in_flight.lock().insert(uid.clone())
                {
                    continue;
                }
                let (client, options, node) = (client.clone(), options.clone(), node.to_string());
                let (counter, next_ip) = (counter.clone(), next_ip.clone());
                starters.spawn(async move {
                    tokio::time::sleep(options.startup_delay).await;
                    let namespace = pod.namespace().unwrap_or_default();
                    let name = pod.name_any();
                    let pods: Api<Pod> = Api::namespaced(client, &namespace);
                    let ip = next_ip.fetch_add(1, Ordering::SeqCst);
                    // Gone, replaced, failed or written: the Pod is done with either way.
                    let _ = retry_on_conflict(5, |_| async {
                        let Ok(Some(mut current)) = pods.get_opt(&name).await else {
                            return Ok(());
                        };
                        if current.metadata.uid.as_deref() != Some(&uid)
                            || current.metadata.deletion_timestamp.is_some()
                        {
                            return Ok(());
                        }
                        let now = Time(Timestamp::now());
                        let status = if options.ready { "True" } else { "False" };
                        current.status = Some(PodStatus {
                            phase: Some("Running".into()),
                            conditions: Some(
                                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                                    .into_iter()
                                    .map(|type_| PodCondition {
                                        type_: type_.into(),
                                        status: if matches!(type_, "Ready" | "ContainersReady") {
                                            status.into()
                                        } else {
                                            "True".into()
                                        },
                                        last_transition_time: Some(now.clone()),
                                        ..PodCondition::default()
                                    })
                                    .collect(),
                            ),
                            pod_ip: Some(format!("10.244.{}.{}", ip / 250, ip % 250 + 2)),
                            host_ip: Some(format!("192.168.0.{}", node.len() % 250)),
                            container_statuses: Some(running_containers(
                                &current,
                                options.ready,
                                &now,
                            )),
                            start_time: Some(now),
                            ..current.status.clone().unwrap_or_default()
                        });
                        pods.update_status(&PostParams::default(), &current).await?;
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await;
                });
            }
        });
        FakeKubelet { task, started }
    }

    /// How many Pods it has reported running.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Stops the kubelet; Pods keep their last status.
    pub fn stop(self) {}
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The status of every container of `pod`, running since `now` (ready or not), as a kubelet
/// reports it.
fn running_containers(pod: &Pod, ready: bool, now: &Time) -> Vec<ContainerStatus> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| ContainerStatus {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            image_id: format!("fake://{}", container.image.as_deref().unwrap_or_default()),
            container_id: Some(format!("fake://{uid}/{}", container.name)),
            ready,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now.clone()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        })
        .collect()
}

/// Stops a deleted Pod's containers (records `Killing` for each), then deletes it with grace
/// period 0 and its uid as a precondition, as the kubelet finishes a graceful deletion.
async fn terminate(client: Arc<dyn Client>, pod: Arc<Pod>, node: String, options: KubeletOptions) {
    if let Some(events) = &options.events {
        let events = events.clone().with_host(node);
        for container in pod.spec.iter().flat_map(|spec| &spec.containers) {
            events.normal(
                &*pod,
                "Killing",
                format!("Stopping container {}", container.name),
            );
        }
    }
    tokio::time::sleep(options.shutdown_delay).await;
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    // NotFound or a Conflict (another Pod by that name now): nothing of ours is left.
    let _ = pods.delete(&name, &params).await;
}

/// What happened to an object at one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// Created (or present in the first list).
    Added,
    /// Changed.
    Modified,
    /// Deleted; the object is its final state.
    Deleted,
}

/// One watch event, as [`ObjectHistory`] recorded it.
#[derive(Clone, Debug)]
pub struct Revision<K> {
    /// The object's resourceVersion after the change.
    pub resource_version: String,
    /// What happened.
    pub change: Change,
    /// The object after the change (its final state for a deletion).
    pub object: Arc<K>,
}

/// Every watch event of the kind `K`, in order, from the moment it starts; see the
/// [module docs](self).
#[derive(Debug)]
pub struct ObjectHistory<K: Resource> {
    revisions: Arc<Mutex<Vec<Revision<K>>>>,
    count: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl<K: Resource> ObjectHistory<K> {
    /// Starts recording `K` in every namespace through `client`: the current objects (as
    /// `Added`), then every change. Resumes a watch that ends from the last revision seen.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn record(client: Arc<dyn Client>) -> Self {
        let revisions: Arc<Mutex<Vec<Revision<K>>>> = Arc::default();
        let (count_tx, count) = watch::channel(0usize);
        let log = revisions.clone();
        let push = move |change: Change, object: K| {
            let mut log = log.lock();
            log.push(Revision {
                resource_version: object.meta().resource_version.clone().unwrap_or_default(),
                change,
                object: Arc::new(object),
            });
            count_tx.send_replace(log.len());
        };
        let task = spawn_recorder(client, push);
        ObjectHistory {
            revisions,
            count,
            task,
        }
    }

    /// Every event recorded so far, oldest first.
    pub fn revisions(&self) -> Vec<Revision<K>> {
        self.revisions.lock().clone()
    }

    /// The state of the kind after each recorded event: the objects that existed then, by
    /// key, with the resourceVersion of that event. An invariant that holds on each of these
    /// held at every revision the watch saw.
    pub fn states(&self) -> Vec<(String, BTreeMap<ObjectKey, Arc<K>>)> {
        let mut state = BTreeMap::new();
        let mut states = Vec::new();
        for revision in self.revisions.lock().iter() {
            let key = ObjectKey::of(revision.object.as_ref());
            match revision.change {
                Change::Deleted => {
                    state.remove(&key);
                }
                _ => {
                    state.insert(key, revision.object.clone());
                }
            }
            states.push((revision.resource_version.clone(), state.clone()));
        }
        states
    }

    /// The objects that exist according to the events recorded so far.
    pub fn current(&self) -> BTreeMap<ObjectKey, Arc<K>> {
        self.states()
            .pop()
            .map(|(_, state)| state)
            .unwrap_or_default()
    }

    /// Waits until `condition` holds on the current state (checked after every event).
    pub async fn wait_until(
        &self,
        mut condition: impl FnMut(&BTreeMap<ObjectKey, Arc<K>>) -> bool,
    ) {
        let mut count = self.count.clone();
        loop {
            if condition(&self.current()) {
                return;
            }
            if count.changed().await.is_err() {
                return;
            }
        }
    }
}

impl<K: Resource> Drop for ObjectHistory<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists then watches `K` in every namespace through `client` on a new task, calling `push`
/// with the listed objects (as `Added`) and then every change, in order. Resumes a watch that
/// ends from the last revision seen; retries failures every 50 ms.
fn spawn_recorder<K: Resource>(
    client: Arc<dyn Client>,
    mut push: impl FnMut(Change, K) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<K>::all(client);
        // What has been reported so far, so that a relist reports only what changed.
        let mut known: BTreeMap<ObjectKey, K> = BTreeMap::new();
        loop {
            // List at the start, and again when the watch's resourceVersion has expired
            // (410: the API no longer has the history from there).
            let list = loop {
                match api.list(&ListParams::default()).await {
                    Ok(list) => break list,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let mut version = list.metadata.resource_version.clone().unwrap_or_default();
            let listed: BTreeMap<ObjectKey, K> = list
                .items
                .into_iter()
                .map(|object| (ObjectKey::of(&object), object))
                .collect();
            for (key, object) in &known {
                if !listed.contains_key(key) {
                    push(Change::Deleted, object.clone());
                }
            }
            for (key, object) in &listed {
                match known.get(key) {
                    None => push(Change::Added, object.clone()),
                    Some(seen)
                        if seen.meta().resource_version != object.meta().resource_version =>
                    {
                        push(Change::Modified, object.clone())
                    }
                    Some(_) => {}
                }
            }
            known = listed;
            'watch: loop {
                let mut events = match api.watch(&WatchParams::default(), &version).await {
                    Ok(events) => events,
                    Err(error) if error.is_gone() => break 'watch,
                    Err(error) => {
                        tracing::warn!(%error, "object history: watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while let Some(event) = events.next().await {
                    let (change, object) = match event {
                        Ok(WatchEvent::Added(o)) => (Change::Added, o),
                        Ok(WatchEvent::Modified(o)) => (Change::Modified, o),
                        Ok(WatchEvent::Deleted(o)) => (Change::Deleted, o),
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(status)) if status.code == 410 => break 'watch,
                        Err(error) if error.is_gone() => break 'watch,
                        // Resume from the last version seen.
                        Ok(WatchEvent::Error(_)) | Err(_) => break,
                    };
                    if let Some(v) = object.meta().resource_version.clone() {
                        version = v;
                    }
                    let key = ObjectKey::of(&object);
                    match change {
                        Change::Deleted => known.remove(&key),
                        _ => known.insert(key, object.clone()),
                    };
                    push(change, object);
                }
            }
        }
    })
}

/// Every `core/v1` Event of every namespace, as the API holds it, from the moment it starts;
/// see the [module docs](self).
///
/// Each Event appears once, in the order it was first seen, in its latest state (a repeat
/// aggregated into it shows as a higher `count`); Events deleted meanwhile stay in the log.
#[derive(Debug)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl EventLog {
    /// Starts recording Events through `client`: the existing ones, then every new or
    /// updated one.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn record(client: Arc<dyn Client>) -> Self {
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let (changed, changes) = watch::channel(0u64);
        let log = events.clone();
        let push = move |change: Change, event: Event| {
            if change == Change::Deleted {
                return;
            }
            let mut log = log.lock();
            let same = |seen: &&mut Event| {
                seen.metadata.namespace == event.metadata.namespace
                    && seen.metadata.name == event.metadata.name
            };
            match log.iter_mut().find(same) {
                Some(seen) => *seen = event,
                None => log.push(event),
            }
            changed.send_modify(|changes| *changes += 1);
        };
        let task = spawn_recorder(client, push);
        EventLog {
            events,
            changes,
            task,
        }
    }

    /// Every Event seen so far, in the order first seen.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// The Events seen so far with this `reason` (`Created`, `SuccessfulCreate`, ...).
    pub fn with_reason(&self, reason: &str) -> Vec<Event> {
        self.events
            .lock()
            .iter()
            .filter(|event| event.reason.as_deref() == Some(reason))
            .cloned()
            .collect()
    }

    /// Waits for an Event with this `reason` about an object named `involved` (its
    /// `involvedObject.name`; any kind and namespace) and returns it.
    ///
    /// # Panics
    ///
    /// When no such Event has been seen after `limit`: the message lists every Event seen.
    #[track_caller]
    pub fn wait_for(
        &self,
        reason: &str,
        involved: &str,
        limit: Duration,
    ) -> impl std::future::Future<Output = Event> + '_ {
        let caller = std::panic::Location::caller();
        let (reason, involved) = (reason.to_string(), involved.to_string());
        async move {
            let mut changes = self.changes.clone();
            let matching = |event: &Event| {
                event.reason.as_deref() == Some(reason.as_str())
                    && event.involved_object.name.as_deref() == Some(involved.as_str())
            };
            let waiting = async {
                loop {
                    changes.borrow_and_update();
                    if let Some(event) = self.events.lock().iter().find(|e| matching(e)) {
                        return event.clone();
                    }
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            match tokio::time::timeout(limit, waiting).await {
                Ok(event) => event,
                Err(_) => {
                    let seen: Vec<String> = self.events().iter().map(describe_event).collect();
                    panic!(
                        "no Event with reason {reason:?} about {involved:?} after {limit:?} \
                         (wait_for at {caller}); the {} seen: [{}]",
                        seen.len(),
                        seen.join(", ")
                    )
                }
            }
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One Event in a line: `Normal SuccessfulCreate ReplicaSet default/web: "Created pod ..."`.
fn describe_event(event: &Event) -> String {
    let object = &event.involved_object;
    format!(
        "{} {} {} {}/{}: {:?}",
        event.type_.as_deref().unwrap_or("?"),
        event.reason.as_deref().unwrap_or("?"),
        object.kind.as_deref().unwrap_or("?"),
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or("?"),
        event.message.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use capstan_api::testing::within;

    use super::*;
    use crate::events::{EventBroadcaster, EventOptions};

    const LIMIT: Duration = Duration::from_secs(10);

    fn pod(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod
    }

    #[tokio::test]
    async fn the_event_log_sees_recorded_events_once_each_in_their_latest_state() {
        within(LIMIT, async {
            let client = capstan_apiserver::testing::client();
            let log = EventLog::record(client.clone());
            let events = EventBroadcaster::new(client.clone(), EventOptions::default());
            let recorder = events.recorder("kubelet");
            recorder.normal(&pod("web"), "Pulled", "Pulled image nginx");
            recorder.warning(&pod("db"), "BackOff", "Back-off restarting");
            recorder.warning(&pod("db"), "BackOff", "Back-off restarting");

            let backoff = log.wait_for("BackOff", "db", LIMIT).await;
            assert_eq!(backoff.type_.as_deref(), Some("Warning"));
            let pulled = log.wait_for("Pulled", "web", LIMIT).await;
            assert_eq!(pulled.message.as_deref(), Some("Pulled image nginx"));

            events.flush().await;
            let counted = |log: &EventLog| {
                log.with_reason("BackOff")
                    .iter()
                    .map(|event| event.count)
                    .collect::<Vec<_>>()
            };
            let mut changes = log.changes.clone();
            while counted(&log) != [Some(2)] {
                changes.changed().await.unwrap();
            }
            assert_eq!(log.events().len(), 2, "{:?}", log.events());
            assert!(log.with_reason("Killing").is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn the_event_log_sees_events_that_existed_before_it_started() {
        within(LIMIT, async {
            let client = capstan_apiserver::testing::client();
            let events = EventBroadcaster::new(client.clone(), EventOptions::default());
            events.recorder("scheduler").normal(
                &pod("web"),
                "Scheduled",
                "Assigned default/web to n1",
            );
            events.flush().await;

            let log = EventLog::record(client);
            let scheduled = log.wait_for("Scheduled", "web", LIMIT).await;
            assert_eq!(scheduled.involved_object.kind.as_deref(), Some("Pod"));
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(
        expected = "no Event with reason \"Scheduled\" about \"api\" after 200ms (wait_for at crates/controller/src/testing.rs:"
    )]
    async fn waiting_for_an_event_that_never_comes_panics_with_the_limit() {
        let client = capstan_apiserver::testing::client();
        let log = EventLog::record(client);
        log.wait_for("Scheduled", "api", Duration::from_millis(200))
            .await;
    }

    #[tokio::test]
    #[should_panic(
        expected = "the 1 seen: [Normal Scheduled Pod default/web: \"Assigned default/web to n1\"]"
    )]
    async fn waiting_for_an_event_that_never_comes_lists_the_events_seen() {
        let client = capstan_apiserver::testing::client();
        let log = EventLog::record(client.clone());
        let events = EventBroadcaster::new(client, EventOptions::default());
        events
            .recorder("scheduler")
            .normal(&pod("web"), "Scheduled", "Assigned default/web to n1");
        log.wait_for("Scheduled", "web", LIMIT).await;
        log.wait_for("Scheduled", "api", Duration::from_millis(200))
            .await;
    }
}
