//! Events: one storage, two group versions.
//!
//! `core/v1` Events and `events.k8s.io/v1` Events are the same objects under
//! `/registry/events`, kept in `core/v1`'s shape (the storage shape). As kube-apiserver
//! converts between them, an `events.k8s.io/v1` read gets its own shape and a write in that
//! shape is stored in `core/v1`'s:
//!
//! | events.k8s.io/v1 | core/v1 |
//! |---|---|
//! | `regarding` | `involvedObject` |
//! | `note` | `message` |
//! | `reportingController` | `reportingComponent` (else `source.component`, on reads) |
//! | `reportingInstance` | `reportingInstance` (else `source.host`, on reads) |
//! | `deprecatedSource` | `source` |
//! | `deprecatedCount` | `count` |
//! | `deprecatedFirstTimestamp` | `firstTimestamp` |
//! | `deprecatedLastTimestamp` | `lastTimestamp` |
//!
//! `eventTime`, `series`, `action`, `related`, `reason`, `type` and `metadata` have the same
//! name and shape in both.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::KindStrategy;

/// The `events.k8s.io/v1` shape over `core/v1` storage.
pub(super) struct EventsV1Strategy;

/// Fields that only change name: (events.k8s.io/v1, core/v1).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];

impl KindStrategy for EventsV1Strategy {
    fn to_served(&self, object: &mut Value) {
        let Some(root) = object.as_object_mut() else {
            return;
        };
        for (served, stored) in RENAMED {
            if let Some(value) = root.remove(*stored) {
                root.insert((*served).to_string(), value);
            }
        }
        // Events recorded through core/v1 before the reporting fields existed name their
        // reporter in `source` only.
        fill_from_source(root, "reportingController", "component");
        fill_from_source(root, "reportingInstance", "host");
        root.insert(
            "apiVersion".into(),
            Value::String("events.k8s.io/v1".into()),
        );
    }

    fn to_stored<'a>(&self, object: &'a Value) -> Cow<'a, Value> {
        let mut stored = object.clone();
        if let Some(root) = stored.as_object_mut() {
            for (served, core) in RENAMED {
                if let Some(value) = root.remove(*served) {
                    root.insert((*core).to_string(), value);
                }
            }
            root.entry("involvedObject")
                .or_insert_with(|| Value::Object(Map::new()));
            root.insert("apiVersion".into(), Value::String("v1".into()));
        }
        Cow::Owned(stored)
    }
}

/// Sets `field` from `deprecatedSource.<from>` when it is missing or empty.
fn fill_from_source(root: &mut Map<String, Value>, field: &str, from: &str) {
    let set = root
        .get(field)
        .and_then(Value::as_str)
        .is_some_and(|value| !value.is_empty());
    if set {
        return;
    }
    let source = root
        .get("deprecatedSource")
        .and_then(|source| source.get(from))
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .map(str::to_string);
    if let Some(source) = source {
        root.insert(field.to_string(), Value::String(source));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": "web.1", "namespace": "default", "resourceVersion": "7" },
            "involvedObject": { "kind": "Pod", "namespace": "default", "name": "web", "uid": "u1" },
            "reason": "Killing",
            "message": "Stopping container web",
            "type": "Normal",
            "source": { "component": "kubelet", "host": "node-1" },
            "count": 3,
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:20Z",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": { "count": 3, "lastObservedTime": "2026-01-01T00:00:20.000000Z" },
            "action": "Stop",
            "related": { "kind": "Node", "name": "node-1" },
            "reportingComponent": "kubelet",
            "reportingInstance": "node-1"
        })
    }

    #[test]
    fn a_stored_event_is_served_in_the_events_k8s_io_shape() {
        let mut served = stored();
        EventsV1Strategy.to_served(&mut served);
        assert_eq!(
            served,
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": { "name": "web.1", "namespace": "default", "resourceVersion": "7" },
                "regarding": { "kind": "Pod", "namespace": "default", "name": "web", "uid": "u1" },
                "reason": "Killing",
                "note": "Stopping container web",
                "type": "Normal",
                "deprecatedSource": { "component": "kubelet", "host": "node-1" },
                "deprecatedCount": 3,
                "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2026-01-01T00:00:20Z",
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "series": { "count": 3, "lastObservedTime": "2026-01-01T00:00:20.000000Z" },
                "action": "Stop",
                "related": { "kind": "Node", "name": "node-1" },
                "reportingController": "kubelet",
                "reportingInstance": "node-1"
            })
        );
        let again = served.clone();
        EventsV1Strategy.to_served(&mut served);
        assert_eq!(served, again, "converting twice changes nothing");
    }

    #[test]
    fn a_written_events_k8s_io_event_is_stored_in_the_core_shape_and_back() {
        let mut served = stored();
        EventsV1Strategy.to_served(&mut served);
        let back = EventsV1Strategy.to_stored(&served).into_owned();
        assert_eq!(back, stored());
    }

    #[test]
    fn the_reporter_falls_back_to_the_source_on_reads() {
        let mut old = json!({
            "metadata": { "name": "web.1" },
            "involvedObject": { "name": "web" },
            "source": { "component": "kubelet", "host": "node-1" }
        });
        EventsV1Strategy.to_served(&mut old);
        assert_eq!(old["reportingController"], "kubelet");
        assert_eq!(old["reportingInstance"], "node-1");
        let bare = EventsV1Strategy
            .to_stored(&json!({ "metadata": { "name": "x" } }))
            .into_owned();
        assert_eq!(bare["involvedObject"], json!({}));
    }
}
