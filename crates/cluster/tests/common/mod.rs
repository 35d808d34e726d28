//! The seeds' scenarios, written once against the API and run on both clusters: the
//! embedded one (`embedded_scenarios.rs`) and one process per component on real parts
//! (`real_cluster.rs`). What differs between the two (how a node is lost, how a leader
//! crashes, how a Service is seen to follow its Pods) is passed in.

#![allow(dead_code, unreachable_pub)]

use capstan_api::compat::Maybe;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::NodeExt;
use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use capstan_api::k8s_openapi::api::coordination::v1::Lease;
use capstan_api::k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use capstan_api::k8s_openapi::NamespaceResourceScope;
use capstan_api::kube_core::params::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use capstan_api::{Api, Client};
use capstan_controller::testing::{Change, ObjectHistory};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;

fn manifest_text(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the seed manifest is expected at {} ({e}), in the repository's examples/manifests",
            path.display()
        )
    })
}

/// The documents of a seed manifest whose kind is `kind`, parsed as `K`.
pub fn documents<K: DeserializeOwned>(name: &str, kind: &str) -> Vec<K> {
    let text = manifest_text(name);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("valid YAML"))
        .filter(|value| value.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|value| serde_yaml_ng::from_value(value).expect("a valid manifest"))
        .collect()
}

/// The API of a running cluster, with waits that poll it as kubectl would.
pub struct Scenario {
    pub client: Arc<dyn Client>,
}

impl Scenario {
    pub fn api<K>(&self) -> Api<K>
    where
        K: capstan_api::Resource<Scope = NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn pods(&self, selector: &str) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    /// Waits until the live Pods of `selector` are `count`, all Running with `image`.
    pub async fn running(&self, selector: &str, count: usize, image: &str) -> Vec<Pod> {
        loop {
            let live: Vec<Pod> = self
                .pods(selector)
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if live.len() == count
                && live
                    .iter()
                    .all(|p| phase(p) == "Running" && image_of(p) == image)
            {
                return live;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no Pod of `selector` is left but the `count` live ones.
    pub async fn gone_but(&self, selector: &str, count: usize) {
        while self.pods(selector).await.len() != count {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Events of `default` in the order they were last written.
    pub async fn events(&self) -> Vec<Event> {
        let mut events = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        events.sort_by_key(|e| {
            e.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        });
        events
    }

    /// Waits until `done` holds for the Events, and returns them.
    pub async fn events_until(&self, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        loop {
            let events = self.events().await;
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The holder of Lease `lease` in `kube-system`, once there is one.
    pub async fn leader(&self, lease: &str) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-system");
        loop {
            if let Some(holder) = leases
                .get_opt(lease)
                .await
                .unwrap()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty())
            {
                return holder;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn image_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers[0].image.as_deref())
        .unwrap_or_default()
}

pub fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

pub fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// `(reason, Kind/name, message)` of each Event.
pub fn chain(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                format!(
                    "{}/{}",
                    e.involved_object.kind.as_deref().unwrap_or_default(),
                    e.involved_object.name.as_deref().unwrap_or_default()
                ),
                e.message.clone().unwrap_or_default(),
            )
        })
        .collect()
}

pub fn count(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|(r, _, _)| r == reason).count()
}

/// seeds/000: `newkubia` with 5 replicas scaled to 3 gives the exact Event chain.
pub async fn newkubia_five_to_three(s: &Scenario) {
    let deployment = &documents::<Deployment>("newkubia-deployment.yaml", "Deployment")[0];
    s.api::<Deployment>()
        .create(&PostParams::default(), deployment)
        .await
        .unwrap();
    let first = s.running("app=newkubia", 5, "luksa/kubia:v2").await;
    s.api::<Deployment>()
        .patch(
            "newkubia",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let kept = s.running("app=newkubia", 3, "luksa/kubia:v2").await;
    s.gone_but("app=newkubia", 3).await;
    let removed: BTreeSet<String> = first
        .iter()
        .map(|p| name(&p.metadata))
        .filter(|n| !kept.iter().any(|k| &name(&k.metadata) == n))
        .collect();
    assert_eq!(removed.len(), 2);
    // On three nodes the scheduler's default topology spread puts at most two of the five
    // on a node.
    let mut spread = BTreeMap::<String, usize>::new();
    for p in &first {
        *spread.entry(node_of(p).to_owned()).or_default() += 1;
    }
    assert!(
        spread.len() == 3 && spread.values().all(|&n| n <= 2),
        "five replicas spread over three nodes: {spread:?}"
    );

    let events = s
        .events_until(|events| {
            let c = chain(events);
            count(&c, "Killing") == 2 && count(&c, "Started") == 5
        })
        .await;
    let c = chain(&events);
    let rs = first[0].metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    // The Deployment controller: up to 5, then down to 3, in that order.
    let scaling: Vec<&str> = c
        .iter()
        .filter(|(r, _, _)| r == "ScalingReplicaSet")
        .map(|(_, o, m)| {
            assert_eq!(o, "Deployment/newkubia");
            m.as_str()
        })
        .collect();
    assert_eq!(
        scaling,
        [
            format!("Scaled up replica set {rs} from 0 to 5"),
            format!("Scaled down replica set {rs} from 5 to 3"),
        ]
    );
    // The ReplicaSet controller: five creates, then the two deletes.
    let rs_events: Vec<(&str, &str)> = c
        .iter()
        .filter(|(_, o, _)| o == &format!("ReplicaSet/{rs}"))
        .map(|(r, _, m)| (r.as_str(), m.as_str()))
        .collect();
    assert_eq!(rs_events.len(), 7, "{rs_events:?}");
    assert!(rs_events[..5].iter().all(|(r, _)| *r == "SuccessfulCreate"));
    let deleted: BTreeSet<String> = rs_events[5..]
        .iter()
        .map(|(r, m)| {
            assert_eq!(*r, "SuccessfulDelete");
            m.trim_start_matches("Deleted pod: ").to_string()
        })
        .collect();
    assert_eq!(deleted, removed);
    // Each Pod: Scheduled, then the kubelet's Created and Started; the removed ones Killing.
    for pod in &first {
        let pod_name = name(&pod.metadata);
        let object = format!("Pod/{pod_name}");
        let reasons: Vec<&str> = c
            .iter()
            .filter(|(_, o, _)| o == &object)
            .map(|(r, _, _)| r.as_str())
            .filter(|r| *r != "Pulling" && *r != "Pulled")
            .collect();
        let scheduled = format!(
            "Successfully assigned default/{pod_name} to {}",
            node_of(pod)
        );
        assert!(
            c.iter()
                .any(|(r, o, m)| r == "Scheduled" && o == &object && m == &scheduled),
            "{c:?}"
        );
        // The kubelet's Events; a FailedScheduling before the Scheduled one is the
        // scheduler retrying (a node still tainted not-ready), as Kubernetes may.
        let kubelet: Vec<&str> = reasons
            .into_iter()
            .filter(|r| *r != "Scheduled" && *r != "FailedScheduling")
            .collect();
        if removed.contains(&pod_name) {
            assert_eq!(kubelet, ["Created", "Started", "Killing"], "{pod_name}");
        } else {
            assert_eq!(kubelet, ["Created", "Started"], "{pod_name}");
        }
    }
}

/// seeds/003: the `nginx` Deployment makes a ReplicaSet and a Pod, with `ScalingReplicaSet`,
/// `SuccessfulCreate` and `Scheduled`. Returns the ReplicaSet's and the Pod's names.
pub async fn nginx_deployment(s: &Scenario) -> (String, String) {
    let deployment = &documents::<Deployment>("nginx-run.yaml", "Deployment")[0];
    s.api::<Deployment>()
        .create(&PostParams::default(), deployment)
        .await
        .unwrap();
    let pods = s.running("run=nginx", 1, "nginx").await;
    let pod = name(&pods[0].metadata);
    let rs = pods[0].metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    assert!(pod.starts_with(&format!("{rs}-")), "{pod} of {rs}");
    let events = s
        .events_until(|events| count(&chain(events), "Scheduled") == 1)
        .await;
    let c = chain(&events);
    for (reason, object, message) in [
        (
            "ScalingReplicaSet",
            "Deployment/nginx".to_string(),
            format!("Scaled up replica set {rs} from 0 to 1"),
        ),
        (
            "SuccessfulCreate",
            format!("ReplicaSet/{rs}"),
            format!("Created pod: {pod}"),
        ),
        (
            "Scheduled",
            format!("Pod/{pod}"),
            format!(
                "Successfully assigned default/{pod} to {}",
                node_of(&pods[0])
            ),
        ),
    ] {
        assert!(
            c.iter()
                .any(|(r, o, m)| r == reason && o == &object && m == &message),
            "{reason} {object} {message:?} in {c:#?}"
        );
    }
    (rs, pod)
}

/// The keys seeds/003 shows under `/registry` for the `nginx` Deployment `rs` and `pod`.
pub fn assert_registry_keys(keys: &[String], rs: &str, pod: &str) {
    for key in [
        "/registry/deployments/default/nginx".to_string(),
        format!("/registry/replicasets/default/{rs}"),
        format!("/registry/pods/default/{pod}"),
        "/registry/minions/node01".to_string(),
        "/registry/leases/kube-node-lease/node01".to_string(),
    ] {
        assert!(keys.contains(&key), "{key} in {keys:#?}");
    }
    assert!(keys
        .iter()
        .any(|k| k.starts_with("/registry/events/default/nginx")));
}

/// seeds/002: `nodeName` skips the scheduler; a `nodeSelector` waits until node02 has the
/// label, then lands there.
pub async fn node_name_and_selector(s: &Scenario) {
    let pods = s.api::<Pod>();
    let pinned = &documents::<Pod>("pod-nodename.yaml", "Pod")[0];
    pods.create(&PostParams::default(), pinned).await.unwrap();
    let running = s.running("app=nginx", 1, "nginx:1.15").await;
    assert_eq!(node_of(&running[0]), "node01");
    let events = s
        .events_until(|events| count(&chain(events), "Started") == 1)
        .await;
    assert_eq!(
        count(&chain(&events), "Scheduled"),
        0,
        "{:?}",
        chain(&events)
    );
    pods.delete("pod-example", &DeleteParams::default())
        .await
        .unwrap();
    s.gone_but("app=nginx", 0).await;

    let selecting = &documents::<Pod>("pod-nodeselector.yaml", "Pod")[0];
    pods.create(&PostParams::default(), selecting)
        .await
        .unwrap();
    // Kubernetes' wording: every node is counted under the reason it was refused for.
    s.events_until(|events| {
        chain(events).iter().any(|(r, o, m)| {
            r == "FailedScheduling"
                && o == "Pod/pod-example"
                && m.starts_with(
                    "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector",
                )
        })
    })
    .await;
    assert_eq!(phase(&pods.get("pod-example").await.unwrap()), "Pending");
    Api::<Node>::all(s.client.clone())
        .patch(
            "node02",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"cz": "bob"}}})),
        )
        .await
        .unwrap();
    let running = s.running("app=nginx", 1, "nginx:1.14").await;
    assert_eq!(node_of(&running[0]), "node02");
}

/// seeds/001: a rolling update v1 → v2 within maxSurge 1 / maxUnavailable 1, a rollback to
/// revision 1 (which becomes revision 3); after each, `service_follows` must see Service `web`
/// reach exactly the new Pods.
pub async fn rolling_update(
    s: &Scenario,
    service_follows: impl Fn(Vec<Pod>) -> BoxFuture<'static, ()>,
) {
    let deployment = &documents::<Deployment>("rolling-update.yaml", "Deployment")[0];
    let service = &documents::<Service>("rolling-update.yaml", "Service")[0];
    s.api::<Deployment>()
        .create(&PostParams::default(), deployment)
        .await
        .unwrap();
    s.api::<Service>()
        .create(&PostParams::default(), service)
        .await
        .unwrap();
    let v1 = s.running("app=web", 3, "web:v1").await;
    service_follows(v1).await;

    // v1 -> v2 with maxSurge 1, maxUnavailable 1: never more than 4 Pods, never fewer
    // than 2 available, sampled throughout.
    let watcher = {
        let pods = s.api::<Pod>();
        tokio::spawn(async move {
            let (mut most, mut fewest_ready) = (0usize, usize::MAX);
            loop {
                let all = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .unwrap()
                    .items;
                let live: Vec<&Pod> = all
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let ready = live.iter().filter(|p| phase(p) == "Running").count();
                most = most.max(live.len());
                fewest_ready = fewest_ready.min(ready);
                let done = live.len() == 3
                    && live
                        .iter()
                        .all(|p| image_of(p) == "web:v2" && phase(p) == "Running");
                if done {
                    return (most, fewest_ready);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    s.api::<Deployment>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({
                "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:v2"}]}}}
            })),
        )
        .await
        .unwrap();
    let (most, fewest_ready) = watcher.await.unwrap();
    assert!(most <= 4, "at most 3 + maxSurge Pods, saw {most}");
    assert!(
        fewest_ready >= 2,
        "at least 3 - maxUnavailable Running, saw {fewest_ready}"
    );
    let v2 = s.running("app=web", 3, "web:v2").await;
    s.gone_but("app=web", 3).await;
    service_follows(v2).await;

    // Roll back, as `kubectl rollout undo` does: the template of revision 1 comes back
    // and becomes revision 3.
    let sets = s
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    let revision = |rs: &ReplicaSet| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .cloned()
            .unwrap_or_default()
    };
    let first = sets
        .iter()
        .find(|rs| revision(rs) == "1")
        .expect("revision 1");
    let mut template = first.spec.opt().unwrap().template.clone().unwrap();
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove("pod-template-hash");
    s.api::<Deployment>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"template": template}})),
        )
        .await
        .unwrap();
    let back = s.running("app=web", 3, "web:v1").await;
    s.gone_but("app=web", 3).await;
    let first_name = name(&first.metadata);
    loop {
        let rs = s.api::<ReplicaSet>().get(&first_name).await.unwrap();
        if revision(&rs) == "3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service_follows(back).await;
}

/// A node lost (`stop_node` stops its kubelet): it goes NotReady and its Pods are replaced
/// on the other nodes.
pub async fn lost_node(s: &Scenario, stop_node: impl FnOnce(String) -> BoxFuture<'static, ()>) {
    let deployment = &documents::<Deployment>("newkubia-deployment.yaml", "Deployment")[0];
    s.api::<Deployment>()
        .create(&PostParams::default(), deployment)
        .await
        .unwrap();
    let before = s.running("app=newkubia", 5, "luksa/kubia:v2").await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &before {
        *per_node.entry(node_of(pod).to_string()).or_default() += 1;
    }
    let (lost, _) = per_node.iter().max_by_key(|(_, n)| **n).unwrap();
    let lost = lost.clone();
    stop_node(lost.clone()).await;

    let nodes: Api<Node> = Api::all(s.client.clone());
    loop {
        let node = nodes.get(&lost).await.unwrap();
        if !node.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Replaced: five Running again, none on the lost node, and the old ones gone.
    loop {
        let pods = s.pods("app=newkubia").await;
        let elsewhere = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| phase(p) == "Running" && node_of(p) != lost)
            .count();
        let on_lost = pods.iter().filter(|p| node_of(p) == lost).count();
        if elsewhere == 5 && on_lost == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = s.events().await;
    assert!(
        chain(&events)
            .iter()
            .any(|(r, o, _)| r == "TaintManagerEviction" && o.starts_with("Pod/newkubia-")),
        "{:?}",
        chain(&events)
    );
}

/// Both control-plane leaders crash (`kill_leaders` gets the identities holding the
/// controller-manager and scheduler Leases) in the middle of a 12-replica rollout: the
/// standbys take over and exactly twelve Pods are ever created.
pub async fn leader_failover(
    s: &Scenario,
    kill_leaders: impl FnOnce(String, String) -> BoxFuture<'static, ()>,
) {
    let manager = s.leader("kube-controller-manager").await;
    let scheduler = s.leader("kube-scheduler").await;

    let history = ObjectHistory::<Pod>::record(s.client.clone());
    let mut deployment =
        documents::<Deployment>("newkubia-deployment.yaml", "Deployment").remove(0);
    deployment.spec.opt_mut().unwrap().replicas = Some(12);
    s.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // Crash both leaders in the middle of the rollout: no Lease release.
    tokio::time::sleep(Duration::from_millis(30)).await;
    kill_leaders(manager.clone(), scheduler.clone()).await;

    let pods = s.running("app=newkubia", 12, "luksa/kubia:v2").await;
    let names: BTreeSet<String> = pods.iter().map(|p| name(&p.metadata)).collect();
    assert_eq!(names.len(), 12);
    // Nothing extra was made: exactly the wanted Pods exist, in one ReplicaSet.
    s.gone_but("app=newkubia", 12).await;
    let sets = s
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("app=newkubia"))
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 1);
    // The standbys take the Leases once they expire (the Pods may all exist before that).
    for (lease, crashed) in [
        ("kube-controller-manager", &manager),
        ("kube-scheduler", &scheduler),
    ] {
        while s.leader(lease).await == *crashed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The new leaders keep working: scale down to 4.
    s.api::<Deployment>()
        .patch(
            "newkubia",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    s.running("app=newkubia", 4, "luksa/kubia:v2").await;
    s.gone_but("app=newkubia", 4).await;
    // Exactly twelve Pods were ever created: no replica made one twice. (Events are no
    // proof here: a crashed leader loses the Events it had not written yet.)
    let ever: BTreeSet<String> = history
        .revisions()
        .iter()
        .filter(|r| r.change == Change::Added)
        .map(|r| name(&r.object.metadata))
        .collect();
    assert_eq!(ever.len(), 12, "{ever:?}");
}
