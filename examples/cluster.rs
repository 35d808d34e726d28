//! An example cluster on Capstan's embedded defaults: the API server on the in-memory store,
//! the controller manager with every built-in controller, and fake nodes (registration and
//! heartbeats) and fake kubelets standing in for real machines, scheduled by the real
//! scheduler (the default plugins, with leader election).
//!
//! ```text
//! cargo run --release --example cluster              # runs the seeds' scenario, then exits
//! cargo run --release --example cluster -- --serve   # then keeps serving, for kubectl
//! ```
//!
//! The scenario is seeds/000's: the `newkubia` Deployment with 5 replicas is created, its
//! Pods are scheduled and run, then it is scaled to 3, and the Events of that scale-down are
//! printed: `ScalingReplicaSet` from the Deployment controller, `SuccessfulDelete` from the
//! ReplicaSet controller and `Killing` from the kubelets. The API is served on
//! `127.0.0.1:6443` (`--address` to change it) and `./capstan.kubeconfig` points kubectl at
//! it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use capstan::api::k8s_openapi::api::apps::v1::Deployment;
use capstan::api::k8s_openapi::api::core::v1::{Event, Node, Pod};
use capstan::api::kube_core::params::{ListParams, Patch, PatchParams, PostParams};
use capstan::api::{Api, Client};
use capstan::apiserver::{http::ApiServer, registry::Registry};
use capstan::controller::events::{EventBroadcaster, EventOptions};
use capstan::controller::leader::{default_identity, LeaderElectionConfig, LeaderElector};
use capstan::controller::manager::ControllerManager;
use capstan::controller::testing::{FakeKubelet, FakeNodes, KubeletOptions};
use capstan::scheduler::{default_framework, Scheduler};
use capstan::store::memory::MemoryStore;

const MANIFEST: &str = include_str!("manifests/newkubia-deployment.yaml");

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.iter().any(|a| a == "--serve");
    let address = args
        .iter()
        .position(|a| a == "--address")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("127.0.0.1:6443")
        .parse()
        .context("--address takes host:port")?;

    // The control plane.
    let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
    let client: Arc<dyn Client> = registry.clone();
    let server = ApiServer::bind(registry, address)
        .await
        .with_context(|| format!("serving on {address}"))?;
    server.write_kubeconfig("capstan.kubeconfig".as_ref())?;
    let manager = ControllerManager::new(client.clone()).with_builtins();
    let controllers = tokio::spawn(manager.run(std::future::pending()));

    // The machines.
    let nodes: Vec<String> = ["node01", "node02", "node03"].map(String::from).to_vec();
    let _nodes = FakeNodes::start(client.clone(), nodes.clone());
    let scheduler_events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let _scheduler = {
        let client = client.clone();
        let recorder = scheduler_events.recorder("default-scheduler");
        let elector = LeaderElector::new(
            Api::namespaced(client.clone(), "kube-system"),
            "kube-scheduler",
            default_identity(),
            LeaderElectionConfig::default(),
        )?;
        tokio::spawn(async move {
            loop {
                let (client, recorder) = (client.clone(), recorder.clone());
                Scheduler::run_leading(&elector, client.clone(), std::future::pending(), || {
                    let framework = default_framework(client.clone(), recorder.clone())
                        .expect("the default profile builds");
                    Scheduler::new(client, framework, recorder)
                })
                .await;
            }
        })
    };
    let kubelet_events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let _kubelet = FakeKubelet::start(
        client.clone(),
        nodes,
        KubeletOptions {
            events: Some(kubelet_events.recorder("kubelet")),
            ..KubeletOptions::default()
        },
    );
    println!(
        "API server at {} (kubeconfig: ./capstan.kubeconfig)",
        server.url()
    );

    // seeds/000: newkubia with 5 replicas.
    let started = Instant::now();
    let deployment: Deployment =
        serde_yaml_ng::from_str(MANIFEST).context("parsing the newkubia manifest")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    println!("\n$ kubectl apply -f newkubia-deployment.yaml   # replicas: 5");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = wait_for_running(&pods, 5).await?;
    println!(
        "all 5 Pods Running after {:.0} ms:",
        started.elapsed().as_secs_f64() * 1000.0
    );
    print_pods(&running);

    // Scale to 3, as `kubectl scale deployment newkubia --replicas=3` does.
    println!("\n$ kubectl scale deployment newkubia --replicas=3");
    deployments
        .patch(
            "newkubia",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await?;
    let running = wait_for_running(&pods, 3).await?;
    print_pods(&running);

    println!("\n$ kubectl get events   # the scale-down");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let chain = ["ScalingReplicaSet", "SuccessfulDelete", "Killing"];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut scale_down = Vec::new();
    while Instant::now() < deadline {
        kubelet_events.flush().await;
        scale_down = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| chain.contains(&e.reason.as_deref().unwrap_or_default()))
            .filter(|e| {
                e.reason.as_deref() != Some("ScalingReplicaSet")
                    || e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("from 5 to 3"))
            })
            .collect::<Vec<_>>();
        if scale_down.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scale_down.sort_by_key(|e| {
        (
            chain.iter().position(|r| Some(*r) == e.reason.as_deref()),
            e.metadata.creation_timestamp.clone().map(|t| t.0),
        )
    });
    println!("{:<20} {:<34} MESSAGE", "REASON", "OBJECT");
    for event in &scale_down {
        let object = &event.involved_object;
        println!(
            "{:<20} {:<34} {}",
            event.reason.as_deref().unwrap_or_default(),
            format!(
                "{}/{}",
                object.kind.as_deref().unwrap_or_default().to_lowercase(),
                object.name.as_deref().unwrap_or_default()
            ),
            event.message.as_deref().unwrap_or_default()
        );
    }

    let node_count = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .len();
    println!(
        "\n{node_count} nodes, {} Pods running, {} events.",
        running.len(),
        events.list(&ListParams::default()).await?.items.len()
    );
    if serve {
        println!("Serving until Ctrl-C: kubectl --kubeconfig capstan.kubeconfig get deploy,rs,pods -o wide");
        tokio::select! {
            result = controllers => { result??; }
            _ = tokio::signal::ctrl_c() => println!("shutting down"),
        }
    } else {
        println!("Run again with --serve to keep the cluster up for kubectl.");
    }
    Ok(())
}

/// Waits until exactly `count` live Pods of newkubia run, and returns them by name.
async fn wait_for_running(pods: &Api<Pod>, count: usize) -> anyhow::Result<BTreeMap<String, Pod>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live: BTreeMap<String, Pod> = pods
            .list(&ListParams::default().labels("app=newkubia"))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect();
        let running = live
            .values()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if live.len() == count && running == count {
            return Ok(live);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "newkubia did not reach {count} running Pods within 30 s ({} live, {running} running)",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_pods(pods: &BTreeMap<String, Pod>) {
    println!("{:<26} {:<8} {:<12} NODE", "NAME", "STATUS", "IP");
    for (name, pod) in pods {
        let status = pod.status.as_ref();
        println!(
            "{:<26} {:<8} {:<12} {}",
            name,
            status.and_then(|s| s.phase.as_deref()).unwrap_or_default(),
            status.and_then(|s| s.pod_ip.as_deref()).unwrap_or_default(),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or_default()
        );
    }
}
