//! Objects that no longer decode as their kind (stored before the API server refused them,
//! or by a bug) never stop a controller: they are planted straight in the store beneath the
//! registry, some before the components start (their first list) and some after (their
//! watch), and every built-in controller, the scheduler and the kubelet keep working for
//! every other object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use capstan_api::k8s_openapi::api::batch::v1::Job;
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Pod, Service};
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::testing::{eventually, within};
use capstan_api::{Api, Client, Resource};
use capstan_apiserver::registry::Registry;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, FakeNodes, KubeletOptions};
use capstan_controllers::manager::ControllerManager;
use capstan_scheduler::{default_framework, Scheduler};
use capstan_store::memory::MemoryStore;
use capstan_store::{Store, StoreExt};
use capstan_watch::{InformerFactory, InformerMetrics, ReflectorOptions};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "default";

/// Writes `object` as the registry would store it, at the registry's key, bypassing every
/// check: the way an object stored by an older server looks today.
async fn plant(store: &Arc<MemoryStore>, kind: capstan_api::ResourceInfo, object: Value) {
    let namespace = object["metadata"]["namespace"].as_str();
    let name = object["metadata"]["name"].as_str().unwrap();
    let key = kind.key(namespace, name).unwrap();
    let mut object = object.clone();
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    store
        .put(key, serde_json::to_vec(&object).unwrap())
        .await
        .unwrap();
}

fn template(app: &str) -> Value {
    json!({
        "metadata": { "labels": { "app": app } },
        "spec": { "containers": [{ "name": "web", "image": "nginx", "ports": [{ "containerPort": 80 }] }] }
    })
}

/// A Deployment whose `spec.replicas` does not fit an `int32`.
fn huge_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "replicas": 1_099_511_627_776_i64,
            "selector": { "matchLabels": { "app": name } },
            "template": template(name),
        }
    })
}

fn huge_replica_set(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "replicas": 1_099_511_627_776_i64,
            "selector": { "matchLabels": { "app": name } },
            "template": template(name),
        }
    })
}

/// A Pod whose containers are not a list, with the label the Service below selects.
fn broken_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": NS, "labels": { "app": "web" } },
        "spec": { "containers": "nginx", "nodeName": "node-1" }
    })
}

fn broken_node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "spec": { "unschedulable": "sometimes", "taints": 7 }
    })
}

fn from_json<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap()
}

async fn finish_running_pods_of(client: &Arc<dyn Client>, app: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let listed = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await;
    for mut pod in listed.map(|list| list.items).unwrap_or_default() {
        let status = pod.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() != Some("Running") {
            continue;
        }
        status.phase = Some("Succeeded".into());
        let _ = pods.update_status(&PostParams::default(), &pod).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_component_keeps_working_beside_objects_that_do_not_decode() {
    within(LIMIT, async {
        let store = Arc::new(MemoryStore::new());
        let registry = Arc::new(Registry::new(store.clone() as Arc<dyn Store>));
        let client: Arc<dyn Client> = registry;
        // Before anything lists: found by every informer's first list.
        plant(&store, Deployment::info(), huge_deployment("old-huge")).await;
        plant(&store, ReplicaSet::info(), huge_replica_set("old-rs")).await;
        plant(&store, Pod::info(), broken_pod("old-pod")).await;
        plant(&store, Node::info(), broken_node("old-node")).await;
        // Strict reads still refuse them: direct callers see the problem.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        assert!(deployments.list(&ListParams::default()).await.is_err());

        let nodes = vec!["node-1".to_string(), "node-2".to_string()];
        let _heartbeats = FakeNodes::start(client.clone(), nodes.clone());
        let _kubelet = FakeKubelet::start(client.clone(), nodes, KubeletOptions::default());
        let events = EventBroadcaster::new(client.clone(), EventOptions::default());
        let scheduler = Scheduler::new(
            client.clone(),
            default_framework(client.clone(), events.recorder("default-scheduler")).unwrap(),
            events.recorder("default-scheduler"),
        );
        let scheduler_client = client.clone();
        let scheduling = tokio::spawn(async move {
            let informers = InformerFactory::new(scheduler_client, ReflectorOptions::default());
            scheduler.run(&informers).await;
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let manager = tokio::spawn(
            ControllerManager::new(client.clone())
                .with_builtins()
                .run(async move {
                    let _ = stopped.await;
                }),
        );

        // After they watch: arrives as a watch event.
        tokio::time::sleep(Duration::from_millis(300)).await;
        plant(&store, Deployment::info(), huge_deployment("new-huge")).await;
        plant(&store, Pod::info(), broken_pod("new-pod")).await;
        plant(&store, Node::info(), broken_node("new-node")).await;

        // Deployment → ReplicaSet → Pods, bound by the scheduler, run by the kubelet.
        let web: Deployment = from_json(json!({
            "metadata": { "name": "web", "namespace": NS },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "web" } }, "template": template("web") }
        }));
        deployments.create(&PostParams::default(), &web).await.unwrap();
        let service: Service = from_json(json!({
            "metadata": { "name": "web", "namespace": NS },
            "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 80 }] }
        }));
        Api::<Service>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &service)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
        eventually(WAIT, "web's ReplicaSet and two running, bound Pods", || async {
            let rs_ok = replica_sets
                .list_decoded(&ListParams::default())
                .await
                .is_ok_and(|list| {
                    list.items.iter().flatten().any(|rs| {
                        rs.metadata.owner_references.iter().flatten().any(|o| o.name == "web")
                    })
                });
            let running = pods
                .list_decoded(&ListParams::default().labels("app=web"))
                .await
                .map(|list| {
                    list.items
                        .iter()
                        .flatten()
                        .filter(|p| {
                            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                                && p.status.as_ref().and_then(|s| s.phase.as_deref())
                                    == Some("Running")
                        })
                        .count()
                })
                .unwrap_or(0);
            rs_ok && running == 2
        })
        .await;

        // Endpoints follow the Service's two ready Pods (the broken Pod is not one of them).
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
        eventually(WAIT, "web's Endpoints with two addresses", || async {
            endpoints.get_opt("web").await.ok().flatten().is_some_and(|e| {
                e.subsets
                    .iter()
                    .flatten()
                    .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
                    == 2
            })
        })
        .await;

        // A Job completes.
        let job: Job = from_json(json!({
            "metadata": { "name": "once", "namespace": NS },
            "spec": { "template": {
                "metadata": { "labels": { "app": "once" } },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": "busybox" }] }
            } }
        }));
        let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
        jobs.create(&PostParams::default(), &job).await.unwrap();
        eventually(WAIT, "the Job to complete", || async {
            finish_running_pods_of(&client, "once").await;
            jobs.get("once").await.is_ok_and(|job| {
                job.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
        })
        .await;

        // The garbage collector collects a dependent whose owner is deleted.
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let owner = config_maps
            .create(&PostParams::default(), &from_json(json!({ "metadata": { "name": "owner" } })))
            .await
            .unwrap();
        let dependent: ConfigMap = from_json(json!({
            "metadata": { "name": "dependent", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                "uid": owner.metadata.uid.clone().unwrap()
            }] }
        }));
        config_maps.create(&PostParams::default(), &dependent).await.unwrap();
        config_maps.delete("owner", &DeleteParams::default()).await.unwrap();
        eventually(WAIT, "the dependent ConfigMap collected", || async {
            config_maps.get_opt("dependent").await.is_ok_and(|d| d.is_none())
        })
        .await;

        // Deleting the bad Deployment and scaling the good one: the controller still acts.
        let key = Deployment::info().key(Some(NS), "old-huge").unwrap();
        store.delete(key, None).await.unwrap();
        let scale = json!({ "spec": { "replicas": 3 } });
        deployments
            .patch(
                "web",
                &Default::default(),
                &capstan_api::kube_core::params::Patch::Merge(&scale),
            )
            .await
            .unwrap();
        eventually(WAIT, "three web Pods", || async {
            pods.list_decoded(&ListParams::default().labels("app=web"))
                .await
                .is_ok_and(|list| list.items.iter().flatten().count() == 3)
        })
        .await;

        // The skipped objects were counted, per resource.
        for resource in [Deployment::info(), ReplicaSet::info(), Pod::info(), Node::info()] {
            let resource = resource.qualified_resource();
            assert!(
                InformerMetrics::decode_errors(&resource) > 0,
                "no decode error counted for {resource}"
            );
        }
        let counted: BTreeMap<String, u64> = ["deployments.apps", "pods", "nodes"]
            .iter()
            .map(|r| (r.to_string(), InformerMetrics::decode_errors(r)))
            .collect();
        assert!(counted.values().all(|n| *n > 0), "{counted:?}");

        let _ = stop.send(());
        manager.await.unwrap().unwrap();
        scheduling.abort();
    })
    .await;
}
