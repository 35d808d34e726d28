//! One program through the `Store` trait, on the in-memory store or on a real etcd.
//!
//! ```text
//! cargo run --example store_etcd -- --store memory
//! cargo run --features etcd --example store_etcd -- --store etcd=http://127.0.0.1:2379
//! ```
//!
//! It creates keys, updates one with compare-and-swap while a stale writer loses, lists a
//! prefix, watches from a past revision, compacts, and shows that the compacted revision is
//! gone for reads and watches. Revisions are printed relative to the one the program starts
//! at, so both backends print exactly the same lines on stdout (the backend's name goes to
//! stderr). Every outcome is checked: the program fails if a backend behaves otherwise.
//!
//! Keys live under a prefix unique to the run, so it can run again and again on one etcd.
//! Compaction, however, is global in etcd: run it against a throwaway etcd, not a cluster's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use capstan::store::memory::MemoryStore;
use capstan::store::{Error, EventKind, Range, Revision, Store, StoreExt, WatchRequest};
use futures::StreamExt;

const USAGE: &str = "usage: store_etcd --store memory | --store etcd=<endpoint>[,<endpoint>...]";

/// Which backend to run on.
enum Backend {
    Memory,
    Etcd(Vec<String>),
}

fn parse_args(args: &[String]) -> anyhow::Result<Backend> {
    let value = match args {
        [flag, value] if flag == "--store" => value.as_str(),
        [flag] if flag.starts_with("--store=") => &flag["--store=".len()..],
        _ => bail!("{USAGE}"),
    };
    match value.split_once('=') {
        None if value == "memory" => Ok(Backend::Memory),
        Some(("etcd", endpoints)) => {
            let endpoints: Vec<String> = endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            ensure!(
                !endpoints.is_empty(),
                "--store etcd= needs at least one endpoint\n{USAGE}"
            );
            Ok(Backend::Etcd(endpoints))
        }
        _ => bail!("unknown store {value:?}\n{USAGE}"),
    }
}

#[cfg(feature = "etcd")]
async fn connect_etcd(endpoints: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    let store = capstan::store::etcd::EtcdStore::connect(endpoints)
        .await
        .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_endpoints: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    bail!(
        "this build has no etcd backend: rebuild with `--features etcd`, e.g. \
         cargo run --features etcd --example store_etcd -- --store etcd=http://127.0.0.1:2379"
    )
}

/// Prints revisions relative to the one the run started at.
struct Rev(Revision);

impl Rev {
    fn show(&self, revision: Revision) -> String {
        format!("r+{}", revision - self.0)
    }
}

async fn run(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let prefix = format!("/capstan-example/{}-{nonce}/", std::process::id());
    let key = |name: &str| format!("{prefix}{name}");
    let rev = Rev(store.current_revision().await?);

    // 1. Create, and a second create of the same key.
    let settings = key("configmaps/default/settings");
    let created = store.create(settings.clone(), r#"{"mode":"fast"}"#).await?;
    println!(
        "create configmaps/default/settings: at {} (version {})",
        rev.show(created.mod_revision),
        created.version
    );
    match store.create(settings.clone(), "{}").await {
        Err(Error::AlreadyExists { current, .. }) => println!(
            "create it again: AlreadyExists, it holds {} from {}",
            String::from_utf8_lossy(&current.value),
            rev.show(current.mod_revision)
        ),
        other => bail!("a second create should be AlreadyExists, got {other:?}"),
    }

    // 2. Two writers read the same revision; the first to write wins, the other is stale.
    let read = store
        .get(settings.clone())
        .await?
        .context("settings exists")?;
    let winner = store
        .update(settings.clone(), r#"{"mode":"safe"}"#, read.mod_revision)
        .await?;
    println!(
        "writer A updates from {}: ok at {} (version {})",
        rev.show(read.mod_revision),
        rev.show(winner.mod_revision),
        winner.version
    );
    match store
        .update(settings.clone(), r#"{"mode":"turbo"}"#, read.mod_revision)
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => println!(
            "writer B updates from {}: Conflict, the key is at {} now",
            rev.show(expected),
            rev.show(actual)
        ),
        other => bail!("the stale writer should conflict, got {other:?}"),
    }
    let value = store
        .get(settings.clone())
        .await?
        .context("settings exists")?;
    ensure!(
        value.value == r#"{"mode":"safe"}"#,
        "the stale write changed the value"
    );

    // 3. More keys, and a list of one prefix.
    store.create(key("configmaps/default/flags"), "{}").await?;
    store
        .create(key("configmaps/kube-system/dns"), "{}")
        .await?;
    store.create(key("secrets/default/token"), "{}").await?;
    let listed = store
        .range(Range::prefix(key("configmaps/default/")))
        .await?;
    let names: Vec<String> = listed
        .kvs
        .iter()
        .map(|kv| {
            String::from_utf8_lossy(&kv.key)
                .trim_start_matches(&prefix)
                .to_string()
        })
        .collect();
    println!(
        "list configmaps/default/: {names:?} ({} keys)",
        listed.count
    );
    ensure!(
        names.len() == 2,
        "the prefix holds two keys, listed {names:?}"
    );
    let deleted = store.delete(key("configmaps/default/flags"), None).await?;
    println!(
        "delete configmaps/default/flags (created at {})",
        rev.show(deleted.create_revision)
    );
    let last = store.current_revision().await?;

    // 4. Watch configmaps/ from writer A's revision: the past is replayed, in order.
    let mut events = store
        .watch(WatchRequest::prefix(key("configmaps/")).from_revision(winner.mod_revision))
        .await?;
    println!("watch configmaps/ from {}:", rev.show(winner.mod_revision));
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .context("the watch replays every event")?
            .context("the watch stays open")??;
        let kind = match event.kind {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
            EventKind::Progress => continue,
        };
        let name = String::from_utf8_lossy(&event.kv.key)
            .trim_start_matches(&prefix)
            .to_string();
        println!("  {} {kind} {name}", rev.show(event.revision()));
        if event.revision() >= last {
            break;
        }
    }
    drop(events);

    // 5. Compact up to the current revision: older revisions are gone, current values stay.
    store.compact(last).await?;
    println!("compact at {}", rev.show(last));
    match store
        .range(Range::key(settings.clone()).at_revision(winner.mod_revision))
        .await
    {
        Err(Error::Compacted { requested, .. }) => {
            println!("read settings at {}: Compacted", rev.show(requested))
        }
        other => bail!("a read before the compaction point should be Compacted, got {other:?}"),
    }
    let watched = match store
        .watch(WatchRequest::prefix(key("configmaps/")).from_revision(winner.mod_revision))
        .await
    {
        Err(error) => Err(error),
        // A backend may also report it as the stream's first item.
        Ok(mut stream) => {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Err(error))) => Err(error),
                other => Ok(format!("{other:?}")),
            }
        }
    };
    match watched {
        Err(Error::Compacted { .. }) => println!(
            "watch configmaps/ from {}: Compacted, relist and watch from {} on",
            rev.show(winner.mod_revision),
            rev.show(last + 1)
        ),
        other => bail!("a watch before the compaction point should be Compacted, got {other:?}"),
    }
    let current = store
        .get(settings)
        .await?
        .context("settings survives compaction")?;
    println!(
        "read settings now: {} (version {})",
        String::from_utf8_lossy(&current.value),
        current.version
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store: Arc<dyn Store> = match parse_args(&args)? {
        Backend::Memory => {
            eprintln!("store: memory");
            Arc::new(MemoryStore::new())
        }
        Backend::Etcd(endpoints) => {
            eprintln!("store: etcd at {}", endpoints.join(","));
            connect_etcd(&endpoints).await?
        }
    };
    run(store).await
}
