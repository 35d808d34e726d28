//! Freshness: waiting for the informer cache to observe the controller's own last write
//! before syncing a Service again.

use super::*;

// ---------------------------------------------------------------------------------------
// Freshness: waiting for the cache to see the controller's own writes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub(super) struct PendingWrites {
    /// Objects written, with the resourceVersion the write returned.
    pub(super) written: Vec<(ObjectKey, String)>,
    /// Objects deleted, with their uid.
    pub(super) deleted: Vec<(ObjectKey, String)>,
}

/// Remembers, per Service, the controller's writes its cache has not shown yet (Kubernetes'
/// `EndpointSliceTracker`, by resourceVersion instead of generation since these kinds have
/// no spec). A reconcile computed from a cache missing one of its own writes would undo or
/// repeat it.
#[derive(Debug, Default)]
pub(crate) struct Freshness {
    pub(super) pending: Mutex<HashMap<ObjectKey, PendingWrites>>,
}

pub(super) fn revision(resource_version: &str) -> Option<u64> {
    resource_version.parse().ok()
}

impl Freshness {
    pub(crate) fn wrote<K: Resource>(&self, service: &ObjectKey, object: &K) {
        if let Some(rv) = object.meta().resource_version.clone() {
            self.pending
                .lock()
                .entry(service.clone())
                .or_default()
                .written
                .push((ObjectKey::of(object), rv));
        }
    }

    pub(crate) fn deleted<K: Resource>(&self, service: &ObjectKey, object: &K) {
        let uid = object.meta().uid.clone().unwrap_or_default();
        self.pending
            .lock()
            .entry(service.clone())
            .or_default()
            .deleted
            .push((ObjectKey::of(object), uid));
    }

    pub(crate) fn forget(&self, service: &ObjectKey) {
        self.pending.lock().remove(service);
    }

    /// Whether `cache` has not yet shown one of the writes made for `service`. Observed
    /// writes are forgotten.
    pub(crate) fn is_stale<K: Resource>(&self, service: &ObjectKey, cache: &Cache<K>) -> bool {
        let mut pending = self.pending.lock();
        let Some(writes) = pending.get_mut(service) else {
            return false;
        };
        let cache_revision = revision(&cache.resource_version());
        writes.written.retain(|(key, rv)| {
            let Some(wanted) = revision(rv) else {
                return false;
            };
            let seen = cache
                .get(key)
                .and_then(|o| o.meta().resource_version.as_deref().and_then(revision));
            // Seen itself (or a later version), or the whole cache has moved past it (it was
            // changed or deleted since by someone else).
            !(seen.is_some_and(|seen| seen >= wanted)
                || cache_revision.is_some_and(|c| c >= wanted))
        });
        writes.deleted.retain(|(key, uid)| {
            cache
                .get(key)
                .is_some_and(|o| o.meta().uid.as_deref() == Some(uid.as_str()))
        });
        let stale = !writes.written.is_empty() || !writes.deleted.is_empty();
        if !stale {
            pending.remove(service);
        }
        stale
    }
}
