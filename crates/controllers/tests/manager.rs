//! The controller manager: controllers run together, by one replica at a time under leader
//! election, and a failing controller is named. Paused clock, in-process registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::EventOptions;
use capstan_controller::leader::{LeaderElectionConfig, LeaderElector, RunOutcome};
use capstan_controller::runtime::{reconciler_fn, Action, Context, Controller, ControllerError};
use capstan_controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions, ObjectHistory};
use capstan_controllers::manager::{ControllerManager, ManagerError, BUILTIN_CONTROLLERS};
use capstan_watch::ObjectKey;
use parking_lot::Mutex;
use tokio::time::Instant;

fn elector(client: &Arc<dyn Client>, identity: &str) -> LeaderElector {
    LeaderElector::new(
        Api::namespaced(client.clone(), "kube-system"),
        "kube-controller-manager",
        identity,
        LeaderElectionConfig::default(),
    )
    .unwrap()
}

/// Who reconciled, from when to when.
#[derive(Clone, Debug)]
struct Acting {
    identity: String,
    from: Instant,
    to: Instant,
}

/// A manager whose one controller reconciles ConfigMaps slowly (2 s each, every 3 s) and
/// logs every reconcile's interval under `identity`.
fn logging_manager(
    client: &Arc<dyn Client>,
    identity: &str,
    log: Arc<Mutex<Vec<Acting>>>,
) -> ControllerManager {
    let who = identity.to_string();
    ControllerManager::new(client.clone())
        .leader_election(elector(client, identity))
        .add("slow-config-maps", move |ctx| {
            let (who, log) = (who.clone(), log.clone());
            let reconciler = reconciler_fn(move |_: Arc<ConfigMap>, _: Context| {
                let (who, log) = (who.clone(), log.clone());
                async move {
                    let from = Instant::now();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    log.lock().push(Acting {
                        identity: who,
                        from,
                        to: Instant::now(),
                    });
                    Ok::<_, String>(Action::requeue(Duration::from_secs(3)))
                }
            });
            Controller::<ConfigMap>::new(ctx.factory)
                .graceful_shutdown_on(ctx.shutdown)
                .run(reconciler)
        })
}

#[tokio::test(start_paused = true)]
async fn two_managers_never_act_at_once_and_the_standby_takes_over_when_the_leader_dies() {
    within(Duration::from_secs(3600), async {
        let client = capstan_apiserver::testing::client();
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for name in ["a", "b", "c"] {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name.into());
            config_maps
                .create(&PostParams::default(), &cm)
                .await
                .unwrap();
        }
        let log: Arc<Mutex<Vec<Acting>>> = Arc::default();
        let first = tokio::spawn(
            logging_manager(&client, "first", log.clone()).run(std::future::pending()),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = tokio::spawn(
            logging_manager(&client, "second", log.clone()).run(std::future::pending()),
        );

        // The first leads for a minute, then dies without a word.
        tokio::time::sleep(Duration::from_secs(60)).await;
        first.abort();
        let died = Instant::now();
        tokio::time::sleep(Duration::from_secs(60)).await;
        second.abort();

        let log = log.lock().clone();
        let by = |who: &str| log.iter().filter(|a| a.identity == who).count();
        assert!(by("first") > 10, "the first leader acted: {log:?}");
        assert!(by("second") > 10, "the standby took over: {log:?}");
        assert!(
            log.iter()
                .filter(|a| a.identity == "second")
                .all(|a| a.from > died),
            "the standby never acted while the first led"
        );
        for a in &log {
            for b in &log {
                if a.identity != b.identity {
                    assert!(a.to <= b.from || b.to <= a.from, "overlap: {a:?} and {b:?}");
                }
            }
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_keeps_running_the_built_in_controllers_without_duplicating_pods() {
    within(Duration::from_secs(3600), async {
        let client = capstan_apiserver::testing::client();
        let nodes = vec!["node01".to_string(), "node02".to_string()];
        let _scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let _kubelet = FakeKubelet::start(client.clone(), nodes, KubeletOptions::default());
        let pods = Arc::new(ObjectHistory::<Pod>::record(client.clone()));
        let builtins = |identity: &str| {
            ControllerManager::new(client.clone())
                .with_builtins()
                .event_options(EventOptions::default())
                .leader_election(elector(&client, identity))
        };
        let first = tokio::spawn(builtins("first").run(std::future::pending()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = tokio::spawn(builtins("second").run(std::future::pending()));

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let manifest = include_str!("../../../examples/manifests/newkubia-deployment.yaml");
        let deployment: Deployment = serde_yaml_ng::from_str(manifest).unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        let running = |count: usize| {
            let pods = pods.clone();
            async move {
                pods.wait_until(|live: &BTreeMap<ObjectKey, Arc<Pod>>| {
                    live.values()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        })
                        .count()
                        == count
                })
                .await
            }
        };
        running(5).await;

        first.abort();
        deployments
            .patch(
                "newkubia",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
            )
            .await
            .unwrap();
        running(3).await;
        let after_scale = pods.current();

        // The garbage collector (a built-in too) takes the ReplicaSet and its Pods with the
        // Deployment.
        deployments
            .delete("newkubia", &Default::default())
            .await
            .unwrap();
        pods.wait_until(|live: &BTreeMap<ObjectKey, Arc<Pod>>| live.is_empty())
            .await;
        second.abort();

        let most = pods
            .states()
            .iter()
            .map(|(_, live)| {
                live.values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count()
            })
            .max()
            .unwrap();
        assert_eq!(
            most, 5,
            "never more pods than replicas, across the failover"
        );
        assert_eq!(
            after_scale
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count(),
            3
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_controller_stops_the_others_and_is_named() {
    within(Duration::from_secs(60), async {
        let client = capstan_apiserver::testing::client();
        let manager =
            ControllerManager::new(client.clone())
                .with_builtins()
                .add("broken", |_| async {
                    Err(ControllerError::ZeroConcurrency {
                        controller: "broken".into(),
                    })
                });
        let mut names = BUILTIN_CONTROLLERS.to_vec();
        names.push("broken");
        assert_eq!(manager.controller_names(), names);
        match manager.run(std::future::pending()).await {
            Err(ManagerError::Controller { name, .. }) => assert_eq!(name, "broken"),
            other => panic!("expected the broken controller's failure, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn without_leader_election_a_shutdown_stops_every_controller() {
    within(Duration::from_secs(60), async {
        let client = capstan_apiserver::testing::client();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let manager = tokio::spawn(ControllerManager::new(client.clone()).with_builtins().run(
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.send(()).unwrap();
        let outcome = manager.await.unwrap().unwrap();
        assert_eq!(outcome, RunOutcome::Shutdown);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_disabled_controller_does_not_run_and_an_unknown_one_is_refused() {
    within(Duration::from_secs(120), async {
        let client = capstan_apiserver::testing::client();
        let probe_started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = probe_started.clone();
        // Everything but the Deployment controller, named by its old alias.
        let manager = ControllerManager::new(client.clone())
            .with_builtins()
            .add("probe", move |ctx| {
                let started = started.clone();
                async move {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    ctx.shutdown.await;
                    Ok(())
                }
            })
            .controllers("*,-deployment".parse().unwrap());
        let enabled = manager.enabled_controller_names().unwrap();
        assert!(!enabled.contains(&"deployment-controller"), "{enabled:?}");
        assert!(enabled.contains(&"replicaset-controller"), "{enabled:?}");
        assert!(enabled.contains(&"probe"), "{enabled:?}");

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(manager.run(async move {
            let _ = stopped.await;
        }));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let manifest = include_str!("../../../examples/manifests/newkubia-deployment.yaml");
        let deployment: Deployment = serde_yaml_ng::from_str(manifest).unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;

        let replica_sets: Api<capstan_api::k8s_openapi::api::apps::v1::ReplicaSet> =
            Api::namespaced(client.clone(), "default");
        let listed = replica_sets
            .list(&capstan_api::kube_core::params::ListParams::default())
            .await
            .unwrap();
        assert!(
            probe_started.load(std::sync::atomic::Ordering::SeqCst),
            "the enabled controllers ran"
        );
        assert!(
            listed.items.is_empty(),
            "no Deployment controller made a ReplicaSet"
        );
        stop.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), RunOutcome::Shutdown);

        // A name no controller has stops the manager before anything starts.
        let unknown = ControllerManager::new(client.clone())
            .with_builtins()
            .controllers("*,-jobs".parse().unwrap());
        match unknown.run(std::future::pending()).await {
            Err(ManagerError::Selection(error)) => {
                let message = error.to_string();
                assert!(message.contains("\"jobs\""), "{message}");
                assert!(message.contains("job-controller"), "{message}");
            }
            other => panic!("expected the unknown name to be refused, got {other:?}"),
        }
    })
    .await;
}
