//! High availability of `store::etcd`: a 3-member etcd cluster on loopback ports loses one
//! member mid-traffic. The store keeps serving, no acknowledged write is lost, and the
//! restarted member catches up.
//!
//! The test starts its own members with the `etcd` binary (`CAPSTAN_ETCD_BIN`, default
//! `etcd` on the PATH) because it must kill and restart one.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_store::etcd::EtcdStore;
use capstan_store::{Error, Range, Store, StoreExt};

const WRITERS: usize = 4;

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// Three etcd members; all are killed and their data removed on drop, even on failure.
struct Cluster {
    members: Vec<Member>,
    root: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn etcd_binary() -> String {
    std::env::var("CAPSTAN_ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

impl Cluster {
    fn start() -> Cluster {
        let root = std::env::temp_dir().join(format!("capstan-etcd-ha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("a temporary directory");
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data_dir: root.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let mut cluster = Cluster { members, root };
        for i in 0..3 {
            cluster.spawn(i, "new");
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let log = std::fs::File::create(self.root.join(format!("m{i}.log"))).unwrap();
        let member = &mut self.members[i];
        let child = Command::new(etcd_binary())
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "capstan-ha-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): {}",
                    etcd_binary(),
                    support::HOW_TO_START_ETCD
                )
            });
        member.child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn connect_when_ready(endpoints: &[String]) -> EtcdStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match EtcdStore::connect(endpoints).await {
            Ok(store) => match store.put("/ha/ready", "yes").await {
                Ok(_) => return store,
                Err(e) if Instant::now() > deadline => panic!("cluster never took writes: {e}"),
                Err(_) => {}
            },
            Err(e) if Instant::now() > deadline => panic!("cluster never answered: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates keys until told to stop; returns the acknowledged ones with their values, and how
/// many were acknowledged while the member was down.
async fn writer(
    store: EtcdStore,
    id: usize,
    stop: Arc<AtomicBool>,
    member_down: Arc<AtomicBool>,
) -> (BTreeMap<String, String>, usize) {
    let mut acked = BTreeMap::new();
    let mut acked_while_down = 0;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("/ha/w{id}/{n:06}");
        let value = format!("{id}-{n}");
        let mut retried = false;
        loop {
            match store.create(key.clone(), value.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() => {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // An earlier attempt whose answer was lost may have applied.
                Err(Error::AlreadyExists { current, .. })
                    if retried && current.value == value.as_bytes() =>
                {
                    break
                }
                Err(e) => panic!("writer {id}: unexpected error on {key}: {e}"),
            }
        }
        if member_down.load(Ordering::SeqCst) {
            acked_while_down += 1;
        }
        acked.insert(key, value);
        n += 1;
    }
    (acked, acked_while_down)
}

/// Which member leads, as the members themselves report it.
async fn leader_index(cluster: &Cluster) -> usize {
    for (i, member) in cluster.members.iter().enumerate() {
        let Ok(mut client) = etcd_client::Client::connect([&member.client_url], None).await else {
            continue;
        };
        let Ok(status) = client.status().await else {
            continue;
        };
        if status.header().map(|h| h.member_id()) == Some(status.leader()) {
            return i;
        }
    }
    panic!("no member reports itself as the leader");
}

async fn serializable_count(endpoint: &str, prefix: &str) -> Option<i64> {
    let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only()
        .with_serializable();
    Some(client.get(prefix, Some(options)).await.ok()?.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_members_loses_no_acknowledged_write() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = Cluster::start();
        let store = connect_when_ready(&cluster.endpoints()).await;

        let stop = Arc::new(AtomicBool::new(false));
        let member_down = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| tokio::spawn(writer(store.clone(), id, stop.clone(), member_down.clone())))
            .collect();

        tokio::time::sleep(Duration::from_secs(1)).await;
        // The hard case: the leader goes, and the others elect a new one mid-traffic.
        let victim = leader_index(&cluster).await;
        cluster.kill(victim);
        member_down.store(true, Ordering::SeqCst);
        // Long enough for an election plus etcd's request timeout (7 s by default), which
        // proposals caught in flight by the leader's death must wait out.
        tokio::time::sleep(Duration::from_secs(10)).await;
        member_down.store(false, Ordering::SeqCst);
        cluster.spawn(victim, "existing");
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::SeqCst);

        let mut acked = BTreeMap::new();
        let mut acked_while_down = 0;
        for writer in writers {
            let (keys, down) = writer.await.unwrap();
            acked.extend(keys);
            acked_while_down += down;
        }
        assert!(
            acked_while_down > 0,
            "the store kept serving writes while a member was down"
        );

        let stored: BTreeMap<String, String> = store
            .range(Range::prefix("/ha/w"))
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.to_vec()).unwrap(),
                    String::from_utf8(kv.value.to_vec()).unwrap(),
                )
            })
            .collect();
        for (key, value) in &acked {
            assert_eq!(
                stored.get(key),
                Some(value),
                "acknowledged write {key} is kept"
            );
        }

        // The restarted member catches up: its own (serializable) view holds every key.
        let restarted = cluster.members[victim].client_url.clone();
        let want = stored.len() as i64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = serializable_count(&restarted, "/ha/w").await;
            if seen == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted member shows {seen:?} of {want} keys"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the HA test finished in time");
}
