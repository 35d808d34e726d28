//! What the cache holds and hands out: objects decoded once, watchers' filters, watch
//! requests, events, and the stored changes a watcher's events come from.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use capstan_api::kube_core::Selector;
use capstan_api::{selector, FieldSelector, ResourceInfo};
use capstan_store::Revision;
use serde_json::Value;

use crate::codec;

/// An object as the cache holds it: decoded once, with what filters need and its JSON.
#[derive(Debug)]
pub struct CachedObject {
    /// The storage key.
    pub key: Bytes,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The values of the kind's field labels (and `metadata.name`, `metadata.namespace`).
    pub(super) fields: Vec<(String, String)>,
    /// The object's JSON, with `metadata.resourceVersion` set.
    pub json: Bytes,
    /// The object's resourceVersion.
    pub revision: Revision,
}

impl CachedObject {
    pub(super) fn new(
        resource: &ResourceInfo,
        key: Bytes,
        mut object: Value,
        revision: Revision,
    ) -> Self {
        crate::registry::to_served(resource, &mut object);
        codec::set_resource_version(&mut object, revision);
        let metadata = &object["metadata"];
        let namespace = metadata["namespace"].as_str().map(String::from);
        let labels = metadata["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let fields = ["metadata.name", "metadata.namespace"]
            .into_iter()
            .map(String::from)
            .chain(resource.field_labels().iter().cloned())
            .map(|label| {
                let value = capstan_api::field::field_value(&object, &label);
                (label, value)
            })
            .collect();
        // Encoded once, in Go struct order, and shared by every watcher.
        let json = Bytes::from(crate::protobuf::struct_order::to_vec(&object));
        CachedObject {
            key,
            namespace,
            labels,
            fields,
            json,
            revision,
        }
    }

    /// This object's content at another resourceVersion (a deletion's).
    pub(super) fn at_revision(&self, resource: &ResourceInfo, revision: Revision) -> Option<Self> {
        let object: Value = serde_json::from_slice(&self.json).ok()?;
        Some(CachedObject::new(
            resource,
            self.key.clone(),
            object,
            revision,
        ))
    }

    pub(super) fn field(&self, label: &str) -> &str {
        self.fields
            .iter()
            .find(|(name, _)| name == label)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// What a watcher selects.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// Only objects in this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    pub labels: Selector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// Whether `object` passes the filter.
    pub fn matches(&self, object: &CachedObject) -> bool {
        if let Some(namespace) = &self.namespace {
            if object.namespace.as_deref() != Some(namespace.as_str()) {
                return false;
            }
        }
        selector::matches(&self.labels, Some(&object.labels))
            && self
                .fields
                .requirements()
                .iter()
                .all(|requirement| requirement.matches_value(object.field(&requirement.field)))
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic `Added` events for every current object, then changes (resourceVersion ""
    /// or "0").
    Snapshot,
    /// Changes after this resourceVersion.
    After(Revision),
}

/// A watch on the cache.
#[derive(Debug, Clone)]
pub struct CacheWatchRequest {
    /// What the watcher selects.
    pub filter: WatchFilter,
    /// Where it starts.
    pub start: WatchStart,
    /// Whether it wants periodic bookmarks.
    pub bookmarks: bool,
    /// Whether it wants a bookmark marking the end of its snapshot's events.
    pub initial_events_end: bool,
}

/// The type of a [`CacheEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEventType {
    /// The object started to exist, or to match the watcher's filter.
    Added,
    /// The object changed and still matches.
    Modified,
    /// The object was deleted, or stopped matching.
    Deleted,
    /// No object changed; the watcher is up to date as of `revision`.
    Bookmark,
}

/// One event delivered to a watcher. `object` is shared with every other watcher.
#[derive(Debug, Clone)]
pub struct CacheEvent {
    /// What happened.
    pub kind: CacheEventType,
    /// The event's resourceVersion.
    pub revision: Revision,
    /// The object's JSON (for a bookmark, a minimal object carrying the resourceVersion).
    pub object: Bytes,
}

/// One change of the store, as the cache holds it.
pub(super) struct StoredChange {
    pub(super) revision: Revision,
    /// For a put: the new object. For a delete: the last content, at the delete's revision.
    pub(super) object: Arc<CachedObject>,
    /// For a put of an existing key: the previous object.
    pub(super) prev: Option<Arc<CachedObject>>,
    pub(super) deleted: bool,
    /// `prev` at this change's revision, encoded when a watcher first needs it.
    pub(super) prev_at_change: OnceLock<Option<Bytes>>,
}

impl StoredChange {
    /// What a watcher with `filter` sees of this change, if anything.
    pub(super) fn for_watcher(
        &self,
        resource: &ResourceInfo,
        filter: &WatchFilter,
    ) -> Option<CacheEvent> {
        let event = |kind, object: &Bytes| CacheEvent {
            kind,
            revision: self.revision,
            object: object.clone(),
        };
        if self.deleted {
            return filter
                .matches(&self.object)
                .then(|| event(CacheEventType::Deleted, &self.object.json));
        }
        let now = filter.matches(&self.object);
        let before = self.prev.as_ref().is_some_and(|prev| filter.matches(prev));
        match (before, now) {
            (false, true) => Some(event(CacheEventType::Added, &self.object.json)),
            (true, true) => Some(event(CacheEventType::Modified, &self.object.json)),
            (true, false) => {
                let bytes = self.prev_at_change.get_or_init(|| {
                    let prev = self.prev.as_ref()?;
                    Some(prev.at_revision(resource, self.revision)?.json)
                });
                bytes
                    .as_ref()
                    .map(|bytes| event(CacheEventType::Deleted, bytes))
            }
            (false, false) => None,
        }
    }
}
