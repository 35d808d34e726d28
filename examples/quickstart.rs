//! A tour of what Capstan has so far: Kubernetes objects in a store with etcd semantics.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! It reads the `newkubia` Deployment of seeds/000 (5 replicas), stores it and five Pods
//! under kube-apiserver's key layout in the in-memory store, scales the Deployment from 5 to
//! 3 with compare-and-swap (and shows a stale write losing with 409-style Conflict), selects
//! Pods by label and field selectors, and prints the watch stream and the key listing that
//! `etcdctl watch` and `etcdctl get /registry --prefix --keys-only` would show.
//!
//! Built with `--features etcd` and run with `CAPSTAN_ETCD_ENDPOINTS` set, the same tour
//! runs against that etcd instead.

use capstan::api::kube_core::ResourceExt;
use capstan_api::compat::Maybe;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use capstan::api::k8s_openapi::api::apps::v1::Deployment;
use capstan::api::k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use capstan::api::kube_core::ObjectMeta;
use capstan::api::{parse_label_selector, selector, FieldSelector, Resource};
use capstan::store::{EventKind, Range, Store, StoreExt, WatchRequest};
use futures::StreamExt;

const MANIFEST: &str = include_str!("manifests/newkubia-deployment.yaml");

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let store = open_store().await?;
    let start = store.current_revision().await? + 1;
    let mut watch = store
        .watch(WatchRequest::prefix("/registry/").from_revision(start))
        .await?;

    // The Deployment from the manifest, at kube-apiserver's key.
    let deployment: Deployment =
        serde_yaml_ng::from_str(MANIFEST).context("parsing the newkubia manifest")?;
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let key = Deployment::info().key(Some(&namespace), &name)?;
    let created = store
        .create(key.clone(), serde_json::to_vec(&deployment)?)
        .await?;
    println!(
        "created {key} at revision {} with {} replicas",
        created.mod_revision,
        replicas(&created.value)?
    );

    // Five Pods, two of them already bound to a node.
    for i in 0..5 {
        let pod = pod(
            &format!("newkubia-6c9b8d7f5-{i}"),
            (i < 2).then_some("node01"),
        );
        let key = Pod::info().key(Some("default"), pod.metadata.name.as_deref().unwrap())?;
        store.create(key, serde_json::to_vec(&pod)?).await?;
    }

    // Scale 5 -> 3 with compare-and-swap: read, change, write if nobody wrote in between.
    let current = store
        .get(key.clone())
        .await?
        .context("the deployment exists")?;
    let mut scaled: Deployment = serde_json::from_slice(&current.value)?;
    scaled.spec.or_default_mut().replicas = Some(3);
    let updated = store
        .update(
            key.clone(),
            serde_json::to_vec(&scaled)?,
            current.mod_revision,
        )
        .await?;
    println!(
        "scaled {name} to {} replicas at revision {} (version {})",
        replicas(&updated.value)?,
        updated.mod_revision,
        updated.version
    );
    match store
        .update(key.clone(), serde_json::to_vec(&deployment)?, current.mod_revision)
        .await
    {
        Err(capstan::store::Error::Conflict {
            expected, actual, ..
        }) => println!(
            "a stale writer expecting revision {expected} lost to revision {actual}: nothing changed"
        ),
        other => anyhow::bail!("the stale write should conflict, got {other:?}"),
    }

    // Selectors, as `kubectl get pods -l app=newkubia --field-selector spec.nodeName=` uses.
    let labels = parse_label_selector("app=newkubia,tier notin (db)")?;
    let fields: FieldSelector = "spec.nodeName=".parse()?;
    fields.validate_for(&Pod::info())?;
    let pods = store
        .range(Range::prefix(Pod::info().storage_prefix()))
        .await?;
    let mut unscheduled = Vec::new();
    for kv in &pods.kvs {
        let object: serde_json::Value = serde_json::from_slice(&kv.value)?;
        let pod: Pod = serde_json::from_value(object.clone())?;
        if selector::matches(&labels, pod.metadata.labels.as_ref()) && fields.matches(&object) {
            unscheduled.push(pod.metadata.name.unwrap_or_default());
        }
    }
    println!("pods matching app=newkubia and spec.nodeName= (unscheduled): {unscheduled:?}");

    // What a watcher of /registry saw, in order.
    println!("\nwatch /registry/ from revision {start}:");
    let last = store.current_revision().await?;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .context("the watch delivers every event")?
            .context("the watch is open")??;
        let kind = match event.kind {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
            EventKind::Progress => continue,
        };
        println!(
            "  {kind:<6} rev={:<4} {}",
            event.revision(),
            String::from_utf8_lossy(&event.kv.key)
        );
        if event.revision() >= last {
            break;
        }
    }

    // etcdctl get /registry --prefix --keys-only
    println!("\nkeys under /registry:");
    for kv in store.range(Range::prefix("/registry/")).await?.kvs {
        println!("  {}", String::from_utf8_lossy(&kv.key));
    }
    Ok(())
}

async fn open_store() -> anyhow::Result<Arc<dyn Store>> {
    #[cfg(feature = "etcd")]
    if let Some(endpoints) = capstan::store::etcd::endpoints_from_env() {
        println!("store: etcd at {endpoints:?}");
        let store = capstan::store::etcd::EtcdStore::connect(&endpoints).await?;
        // Never write into an etcd that may belong to a real cluster.
        let existing = store.range(Range::prefix("/registry/").limit(1)).await?;
        anyhow::ensure!(
            existing.count == 0,
            "etcd at {endpoints:?} already holds {} keys under /registry; the quickstart only \
             writes into an empty one (start a throwaway etcd)",
            existing.count
        );
        return Ok(Arc::new(store));
    }
    println!("store: in memory");
    Ok(Arc::new(capstan::store::memory::MemoryStore::new()))
}

fn pod(name: &str, node: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".into(), "newkubia".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            containers: vec![Container {
                name: "newkubia".into(),
                image: Some("luksa/kubia:v2".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn replicas(value: &[u8]) -> anyhow::Result<i32> {
    let deployment: Deployment = serde_json::from_slice(value)?;
    Ok(deployment
        .spec
        .into_opt()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1))
}
