//! Random operation sequences run against `store::memory` and against a reference model
//! that keeps a full snapshot per revision: both must agree on every result, every error and
//! every watch event.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{
    memory::MemoryStore, Error, Event, EventKind, KeyValue, Range, Revision, Store, StoreExt,
    WatchRequest,
};
use futures::StreamExt;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Create(u8, u8),
    /// Update guarded by the key's current mod revision minus `stale` (0: fresh).
    Update(u8, u8, i64),
    Put(u8, u8),
    Delete(u8, Option<i64>),
    Get(u8),
    /// Range over every key, `back` revisions before the current one, with a limit.
    Range {
        back: i64,
        limit: usize,
    },
    /// Compact `back` revisions before the current one.
    Compact(i64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..5_u8, any::<u8>()).prop_map(|(k, v)| Action::Create(k, v)),
        3 => (0..5_u8, any::<u8>(), prop_oneof![Just(0_i64), 1..3_i64]).prop_map(|(k, v, s)| Action::Update(k, v, s)),
        2 => (0..5_u8, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
        2 => (0..5_u8, proptest::option::of(0..2_i64)).prop_map(|(k, s)| Action::Delete(k, s)),
        1 => (0..5_u8).prop_map(Action::Get),
        2 => (0..6_i64, 0..4_usize).prop_map(|(back, limit)| Action::Range { back, limit }),
        1 => (0..6_i64).prop_map(Action::Compact),
    ]
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("/k/{k}"))
}

/// The reference: every revision's whole state, and the event log.
struct Model {
    revision: Revision,
    compacted: Revision,
    snapshots: BTreeMap<Revision, BTreeMap<Bytes, KeyValue>>,
    events: Vec<Event>,
}

impl Model {
    fn new() -> Self {
        Model {
            revision: 1,
            compacted: 0,
            snapshots: BTreeMap::from([(1, BTreeMap::new())]),
            events: Vec::new(),
        }
    }

    fn at(&self, revision: Revision) -> &BTreeMap<Bytes, KeyValue> {
        self.snapshots.range(..=revision).next_back().unwrap().1
    }

    fn current(&self) -> &BTreeMap<Bytes, KeyValue> {
        self.at(self.revision)
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) -> KeyValue {
        let next = self.revision + 1;
        let mut state = self.current().clone();
        let prev = state.get(&key).cloned();
        let (kv, kind) = match value {
            Some(value) => {
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: prev.as_ref().map_or(next, |p| p.create_revision),
                    mod_revision: next,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                };
                state.insert(key, kv.clone());
                (kv, EventKind::Put)
            }
            None => {
                state.remove(&key);
                let tombstone = KeyValue {
                    key,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: next,
                    version: 0,
                };
                (tombstone, EventKind::Delete)
            }
        };
        self.events.push(Event {
            kind,
            kv: kv.clone(),
            prev,
        });
        self.snapshots.insert(next, state);
        self.revision = next;
        kv
    }
}

fn run(actions: Vec<Action>, watch_from_back: i64) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = MemoryStore::new();
        let mut model = Model::new();
        for action in actions {
            match action {
                Action::Create(k, v) => {
                    let got = store.create(key(k), vec![v]).await;
                    match model.current().get(&key(k)).cloned() {
                        Some(current) => prop_assert_eq!(
                            got.unwrap_err(),
                            Error::AlreadyExists {
                                key: key(k),
                                current: Box::new(current)
                            }
                        ),
                        None => {
                            let want = model.write(key(k), Some(Bytes::from(vec![v])));
                            prop_assert_eq!(got.unwrap(), want);
                        }
                    }
                }
                Action::Update(k, v, stale) => {
                    let current = model.current().get(&key(k)).cloned();
                    let expected =
                        current.as_ref().map_or(model.revision, |c| c.mod_revision) - stale;
                    let got = store.update(key(k), vec![v], expected).await;
                    match current {
                        _ if expected <= 0 => prop_assert!(
                            matches!(got, Err(Error::InvalidRequest { .. })),
                            "{:?}",
                            got
                        ),
                        None => prop_assert_eq!(got.unwrap_err(), Error::NotFound { key: key(k) }),
                        Some(c) if c.mod_revision != expected => prop_assert_eq!(
                            got.unwrap_err(),
                            Error::Conflict {
                                key: key(k),
                                expected,
                                actual: c.mod_revision
                            }
                        ),
                        Some(_) => {
                            let want = model.write(key(k), Some(Bytes::from(vec![v])));
                            prop_assert_eq!(got.unwrap(), want);
                        }
                    }
                }
                Action::Put(k, v) => {
                    let got = store.put(key(k), vec![v]).await.unwrap();
                    prop_assert_eq!(got, model.write(key(k), Some(Bytes::from(vec![v]))));
                }
                Action::Delete(k, stale) => {
                    let current = model.current().get(&key(k)).cloned();
                    let expected = stale
                        .map(|s| current.as_ref().map_or(model.revision, |c| c.mod_revision) - s);
                    let got = store.delete(key(k), expected).await;
                    match (current, expected) {
                        (None, _) => {
                            prop_assert_eq!(got.unwrap_err(), Error::NotFound { key: key(k) })
                        }
                        (Some(c), Some(e)) if c.mod_revision != e => prop_assert_eq!(
                            got.unwrap_err(),
                            Error::Conflict {
                                key: key(k),
                                expected: e,
                                actual: c.mod_revision
                            }
                        ),
                        (Some(c), _) => {
                            prop_assert_eq!(got.unwrap(), c);
                            model.write(key(k), None);
                        }
                    }
                }
                Action::Get(k) => {
                    let got = store.get(key(k)).await.unwrap();
                    prop_assert_eq!(got, model.current().get(&key(k)).cloned());
                }
                Action::Range { back, limit } => {
                    let at = model.revision - back;
                    let got = store
                        .range(Range::prefix("/k/").limit(limit).at_revision(at))
                        .await;
                    if at <= 0 {
                        prop_assert!(
                            matches!(got, Err(Error::InvalidRequest { .. })),
                            "{:?}",
                            got
                        );
                    } else if at < model.compacted {
                        prop_assert_eq!(
                            got.unwrap_err(),
                            Error::Compacted {
                                requested: at,
                                compacted: Some(model.compacted)
                            }
                        );
                    } else {
                        let all: Vec<KeyValue> = model.at(at).values().cloned().collect();
                        let got = got.unwrap();
                        let want: Vec<KeyValue> = if limit == 0 {
                            all.clone()
                        } else {
                            all.iter().take(limit).cloned().collect()
                        };
                        prop_assert_eq!(got.kvs, want.clone());
                        prop_assert_eq!(got.count, all.len() as i64);
                        prop_assert_eq!(got.more, want.len() < all.len());
                        prop_assert_eq!(got.revision, at);
                    }
                }
                Action::Compact(back) => {
                    let at = model.revision - back;
                    let got = store.compact(at).await;
                    if at <= model.compacted {
                        prop_assert_eq!(
                            got.unwrap_err(),
                            Error::Compacted {
                                requested: at,
                                compacted: Some(model.compacted)
                            }
                        );
                    } else {
                        got.unwrap();
                        model.compacted = at;
                    }
                }
            }
            prop_assert_eq!(store.current_revision().await.unwrap(), model.revision);
        }

        // A watch from a retained revision replays exactly the model's events from there on.
        let from = (model.revision + 1 - watch_from_back)
            .max(model.compacted)
            .max(1);
        let want: Vec<Event> = model
            .events
            .iter()
            .filter(|e| e.revision() >= from)
            .cloned()
            .collect();
        let mut watch = store
            .watch(
                WatchRequest::prefix("/k/")
                    .from_revision(from)
                    .with_prev_kv(),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .expect("the watch delivers the replayed events")
                .expect("stream open")
                .expect("event");
            got.push(event);
        }
        prop_assert_eq!(got, want);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_store_agrees_with_a_snapshot_model(
        actions in proptest::collection::vec(action(), 1..60),
        watch_from_back in 0..20_i64,
    ) {
        run(actions, watch_from_back)?;
    }
}
