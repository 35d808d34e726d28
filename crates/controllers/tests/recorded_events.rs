//! Events the built-in controllers record reach the API once per action: a single scale-up
//! is one `SuccessfulCreate` Event with count 1, and a Job's finish is recorded once even
//! when writing it conflicts and the sync is retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::Deletion;
use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use capstan_api::k8s_openapi::api::batch::v1::Job;
use capstan_api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList};
use capstan_api::testing::{eventually, within};
use capstan_api::{Api, Client, Error, Resource, ResourceInfo, Result, WatchStream};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions};
use capstan_controllers::manager::ControllerManager;
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);
const NS: &str = "default";

fn template(app: &str, restart_policy: &str) -> serde_json::Value {
    json!({
        "metadata": { "labels": { "app": app } },
        "spec": { "restartPolicy": restart_policy, "containers": [{ "name": "c", "image": "nginx" }] }
    })
}

async fn events(client: &Arc<dyn Client>) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

fn with_reason<'a>(events: &'a [Event], reason: &str, object: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(object)
        })
        .collect()
}

#[tokio::test]
async fn a_single_scale_up_records_one_successful_create_event_with_count_one() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = capstan_apiserver::testing::client();
        let nodes = vec!["node-1".to_string()];
        let _scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let _kubelet = FakeKubelet::start(client.clone(), nodes, KubeletOptions::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let manager = tokio::spawn(ControllerManager::new(client.clone()).with_builtins().run(
            async move {
                let _ = stopped.await;
            },
        ));
        let web: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                      "template": template("web", "Always") }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &web)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        eventually(LIMIT, "web's Pod running", || async {
            pods.list(&ListParams::default()).await.is_ok_and(|list| {
                list.items.len() == 1
                    && list.items[0]
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        == Some("Running")
            })
        })
        .await;
        // Let every controller settle (status writes, resyncs), then stop and flush.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop.send(());
        manager.await.unwrap().unwrap();

        let all = events(&client).await;
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .remove(0);
        let rs_name = rs.metadata.name.unwrap();
        let created = with_reason(&all, "SuccessfulCreate", &rs_name);
        assert_eq!(created.len(), 1, "{created:#?}");
        assert_eq!(created[0].count, Some(1), "{created:#?}");
        let scaled = with_reason(&all, "ScalingReplicaSet", "web");
        assert_eq!(scaled.len(), 1, "{scaled:#?}");
        assert_eq!(scaled[0].count, Some(1), "{scaled:#?}");
    })
    .await;
}

/// The registry, except that the first `conflicts` status writes of a Job that finish it
/// (carry a `Complete` condition) fail with 409, as they do when the Job cache is stale.
struct ConflictingFinish {
    inner: Arc<dyn Client>,
    conflicts: AtomicUsize,
}

#[async_trait]
impl Client for ConflictingFinish {
    async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<DynamicObject> {
        self.inner.get(r, ns, name).await
    }
    async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        self.inner.list(r, ns, p).await
    }
    async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        self.inner.create(r, ns, o, p).await
    }
    async fn update(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        self.inner.update(r, ns, o, p).await
    }
    async fn update_status(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        let finishing = r.kind() == "Job"
            && o.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"));
        let conflict = finishing
            && self
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if conflict {
            return Err(Error::Conflict {
                resource: r.qualified_resource(),
                name: o.metadata.name.clone().unwrap_or_default(),
                message: Error::OBJECT_MODIFIED.into(),
            });
        }
        self.inner.update_status(r, ns, o, p).await
    }
    async fn patch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        p: &PatchParams,
    ) -> Result<DynamicObject> {
        self.inner.patch(r, ns, name, patch, p).await
    }
    async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        p: &DeleteParams,
    ) -> Result<Deletion> {
        self.inner.delete(r, ns, name, p).await
    }
    async fn watch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &WatchParams,
        rv: &str,
    ) -> Result<WatchStream> {
        self.inner.watch(r, ns, p, rv).await
    }
}

#[tokio::test]
async fn a_job_finish_whose_status_write_conflicts_is_recorded_once() {
    within(LIMIT, async {
        let registry: Arc<dyn Client> = capstan_apiserver::testing::client();
        let client: Arc<dyn Client> = Arc::new(ConflictingFinish {
            inner: registry.clone(),
            conflicts: AtomicUsize::new(3),
        });
        let nodes = vec!["node-1".to_string()];
        let _scheduler = FakeScheduler::start(registry.clone(), nodes.clone());
        let _kubelet = FakeKubelet::start(registry.clone(), nodes, KubeletOptions::default());
        let broadcaster = EventBroadcaster::new(registry.clone(), EventOptions::default());
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let controller = capstan_controllers::job::controller(
            client.clone(),
            factory,
            broadcaster.recorder(capstan_controllers::job::COMPONENT),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));

        let once: Job = serde_json::from_value(json!({
            "metadata": { "name": "once" },
            "spec": { "template": template("once", "Never") }
        }))
        .unwrap();
        let jobs: Api<Job> = Api::namespaced(registry.clone(), NS);
        jobs.create(&PostParams::default(), &once).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(registry.clone(), NS);
        eventually(LIMIT, "the Job complete", || async {
            for mut pod in pods.list(&ListParams::default()).await.unwrap().items {
                let status = pod.status.get_or_insert_with(Default::default);
                if status.phase.as_deref() == Some("Running") {
                    status.phase = Some("Succeeded".into());
                    let _ = pods.update_status(&PostParams::default(), &pod).await;
                }
            }
            jobs.get("once").await.is_ok_and(|job| {
                job.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Complete")
            })
        })
        .await;
        let _ = stop.send(());
        task.await.unwrap().unwrap();
        broadcaster.flush().await;

        let all = events(&registry).await;
        let completed = with_reason(&all, "Completed", "once");
        assert_eq!(completed.len(), 1, "{completed:#?}");
        assert_eq!(completed[0].count, Some(1), "{completed:#?}");
        assert_eq!(Job::info().kind(), "Job");
    })
    .await;
}
