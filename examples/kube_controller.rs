//! docs/kube-rs.md's program: a kube-rs `Controller` over a custom resource, `Website`
//! (`example.com/v1`), that keeps one Deployment per Website and reports its ready replicas
//! in the Website's status.
//!
//! `cargo run --example kube_controller --features kube` runs it against the cluster kube
//! finds (`$KUBECONFIG`, `~/.kube/config` or in-cluster). Its tests run it in process on
//! Capstan (`cargo test --example kube_controller --features kube`): the custom resource, the
//! built-in Deployment and ReplicaSet controllers, the fake scheduler and kubelets, all
//! through a `kube::Client` with no socket. A last test runs Capstan's own ReplicaSet
//! controller, scheduler and kubelets over `KubeClient`, as they would run against a real
//! cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A website: `replicas` Pods serving `image`.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Website",
    namespaced,
    status = "WebsiteStatus",
    shortname = "web"
)]
pub struct WebsiteSpec {
    /// How many Pods serve the site.
    pub replicas: i32,
    /// The container image serving it.
    pub image: String,
}

/// What the controller observed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteStatus {
    /// Pods of the site that are ready.
    pub ready_replicas: i32,
}

/// Why a reconcile failed; the error policy retries every failure.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A request to the API server failed.
    #[error("the API server refused a request: {0}")]
    Kube(#[from] kube::Error),
    /// A Website without a namespace (the kind is namespaced, so the API never sends one).
    #[error("the Website {0} has no namespace")]
    NoNamespace(String),
}

/// What every reconcile shares.
pub struct Context {
    /// The client the controller writes with.
    pub client: kube::Client,
}

/// The Deployment serving `website`, owned by it (so it is garbage-collected with it, and
/// its changes wake the controller through `owns`).
fn deployment_for(website: &Website) -> Deployment {
    let name = website.name_any();
    let labels = serde_json::json!({"app": name});
    let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": website.spec.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": website.spec.image}]},
            },
        },
    }))
    .expect("a valid Deployment");
    deployment.metadata.owner_references = website.controller_owner_ref(&()).map(|r| vec![r]);
    deployment
}

/// Level-based: makes the Deployment match the Website, then copies its ready replicas into
/// the Website's status.
pub async fn reconcile(
    website: Arc<Website>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = website
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(website.name_any()))?;
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let wanted = deployment_for(&website);
    let name = website.name_any();
    let deployment = match deployments.get_opt(&name).await? {
        None => deployments.create(&PostParams::default(), &wanted).await?,
        Some(current) if current.spec != wanted.spec => {
            let patch = serde_json::json!({"spec": wanted.spec});
            deployments
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?
        }
        Some(current) => current,
    };
    let status = WebsiteStatus {
        ready_replicas: deployment
            .status
            .and_then(|status| status.ready_replicas)
            .unwrap_or(0),
    };
    if website.status.as_ref() != Some(&status) {
        // A replace of the status subresource, carrying the resourceVersion read: a Website
        // changed since is a 409, and the error policy retries with the new one.
        let websites: Api<Website> = Api::namespaced(context.client.clone(), &namespace);
        let mut observed = (*website).clone();
        observed.status = Some(status);
        websites
            .replace_status(&name, &PostParams::default(), &observed)
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Retries a failed reconcile after a second.
pub fn error_policy(_: Arc<Website>, error: &ReconcileError, _: Arc<Context>) -> Action {
    eprintln!("reconcile failed: {error}");
    Action::requeue(Duration::from_secs(1))
}

/// Creates the Website CRD unless it exists.
///
/// Errors: the API server's, other than the CRD existing already.
pub async fn install_crd(client: kube::Client) -> Result<(), kube::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    match crds.create(&PostParams::default(), &Website::crd()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Runs the controller in every namespace until the process is stopped.
pub async fn run(client: kube::Client) {
    let context = Arc::new(Context {
        client: client.clone(),
    });
    Controller::new(
        Api::<Website>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, context)
    .for_each(|outcome| async move {
        if let Ok((website, _)) = outcome {
            println!("reconciled {website}");
        }
    })
    .await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    install_crd(client.clone()).await?;
    run(client).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan::api::ResourceInfo;
    use capstan::apiserver::kube_bridge::{self, KubeClient};
    use capstan::apiserver::registry::Registry;
    use capstan::testing::{eventually, within, FakeCluster};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;

    const LIMIT: Duration = Duration::from_secs(30);

    /// Installs the CRD through kube-rs and waits until its kind is served (the API server's
    /// CRD controller registers it once the CRD is Established).
    async fn install_and_serve_crd(client: kube::Client, registry: &Registry) {
        install_crd(client.clone()).await.unwrap();
        let kind = ResourceInfo::new("example.com", "v1", "Website", "websites", true);
        eventually(
            Duration::from_secs(5),
            "the Website CRD to be served",
            || async { registry.resource_state(&kind).is_ok() },
        )
        .await;
    }

    fn website(name: &str, replicas: i32) -> Website {
        let mut website = Website::new(
            name,
            WebsiteSpec {
                replicas,
                image: "nginx".into(),
            },
        );
        website.metadata.namespace = Some("default".into());
        website
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_website_gets_a_deployment_whose_pods_run() {
        within(LIMIT, async {
            let cluster = FakeCluster::start().await;
            let client = kube_bridge::client(cluster.registry().clone());
            install_and_serve_crd(client.clone(), cluster.registry()).await;
            let controller = tokio::spawn(run(client.clone()));

            let websites: Api<Website> = Api::default_namespaced(client.clone());
            websites
                .create(&PostParams::default(), &website("blog", 2))
                .await
                .unwrap();

            let pods: Api<Pod> = Api::default_namespaced(client.clone());
            eventually(LIMIT, "two running Pods of blog", || async {
                let Ok(list) = pods.list(&ListParams::default().labels("app=blog")).await else {
                    return false;
                };
                let running = list.items.iter().filter(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
                running.count() == 2
            })
            .await;
            eventually(
                LIMIT,
                "blog's status to count two ready replicas",
                || async {
                    websites
                        .get_status("blog")
                        .await
                        .is_ok_and(|w| w.status.is_some_and(|s| s.ready_replicas == 2))
                },
            )
            .await;

            // Scaling the Website scales its Deployment.
            let patch = serde_json::json!({"spec": {"replicas": 3}});
            websites
                .patch("blog", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
            let deployments: Api<Deployment> = Api::default_namespaced(client);
            eventually(
                LIMIT,
                "blog's Deployment to ask for three replicas",
                || async {
                    deployments
                        .get("blog")
                        .await
                        .is_ok_and(|d| serde_json::json!(d)["spec"]["replicas"] == 3)
                },
            )
            .await;
            controller.abort();
        })
        .await;
    }

    /// Capstan's own ReplicaSet controller, scheduler and kubelets over `KubeClient`, as
    /// against a real cluster: here kube's client is the in-process bridge.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn capstan_components_run_over_kube_client() {
        use capstan::controller::events::{EventBroadcaster, EventOptions};
        use capstan::controller::testing::{FakeKubelet, FakeNodes, FakeScheduler};
        use capstan::watch::{InformerFactory, ReflectorOptions};
        use k8s_openapi::api::apps::v1::ReplicaSet;

        within(LIMIT, async {
            let registry = capstan::testing::registry();
            let client: Arc<dyn capstan::api::Client> =
                Arc::new(KubeClient::new(kube_bridge::client(registry)));
            let nodes = vec!["node-1".to_string()];
            let _nodes = FakeNodes::start(client.clone(), nodes.clone());
            let _scheduler = FakeScheduler::start(client.clone(), nodes.clone());
            let _kubelet = FakeKubelet::start(client.clone(), nodes, Default::default());
            let factory = Arc::new(InformerFactory::new(
                client.clone(),
                ReflectorOptions::default(),
            ));
            let events = EventBroadcaster::new(client.clone(), EventOptions::default());
            let controller = capstan::controllers::replicaset::controller(
                client.clone(),
                factory,
                events.recorder(capstan::controllers::replicaset::NAME),
            );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(controller.run(async {
                let _ = stopped.await;
            }));

            let replica_sets: capstan::api::Api<ReplicaSet> =
                capstan::api::Api::namespaced(client.clone(), "default");
            let replica_set: ReplicaSet = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                    },
                },
            }))
            .unwrap();
            replica_sets
                .create(&Default::default(), &replica_set)
                .await
                .unwrap();
            eventually(LIMIT, "web's two Pods ready in its status", || async {
                replica_sets
                    .get("web")
                    .await
                    .is_ok_and(|rs| rs.status.and_then(|s| s.ready_replicas) == Some(2))
            })
            .await;
            let pods: capstan::api::Api<Pod> = capstan::api::Api::namespaced(client, "default");
            let listed = pods.list(&Default::default()).await.unwrap();
            assert!(listed.items.iter().all(|pod| pod
                .spec
                .as_ref()
                .is_some_and(|spec| spec.node_name.as_deref() == Some("node-1"))));
            let _ = stop.send(());
            running.await.unwrap().unwrap();
        })
        .await;
    }
}
