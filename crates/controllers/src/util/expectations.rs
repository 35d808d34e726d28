//! Expectations: what a controller waits to see in its Pod informer before it acts on an
//! owner again (Kubernetes' `UIDTrackingControllerExpectations` in `controller_utils.go`).
//!
//! The ReplicaSet, DaemonSet and Job controllers record what they create and delete, and
//! observe the Pod feed before their owner's key is queued, so a lagging cache never makes
//! them create or delete twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::Resource;
use capstan_controller::runtime::controller_owner_key;
use capstan_watch::{Delta, ObjectKey};
use parking_lot::Mutex;
use tokio::time::Instant;

/// How long unobserved expectations hold an owner back (Kubernetes' `ExpectationsTimeout`).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<ObjectKey>,
    set_at: Instant,
}

/// What a controller is waiting to see in its informer before it acts on an owner again:
/// Kubernetes' `UIDTrackingControllerExpectations`. Creations are counted; deletions are
/// tracked by Pod key, so observing the same deletion twice (the `deletionTimestamp`
/// update, then the delete) counts once.
///
/// An owner whose record is absent, fully observed, or older than the TTL is *satisfied*:
/// the controller may act on it.
#[derive(Debug)]
pub struct Expectations {
    ttl: Duration,
    records: Mutex<HashMap<ObjectKey, Expectation>>,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new(EXPECTATIONS_TTL)
    }
}

impl Expectations {
    /// Empty expectations expiring after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Expectations {
            ttl,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the controller may act on `owner`: nothing pending, or the record expired.
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        match self.records.lock().get(owner) {
            None => true,
            Some(record) => {
                (record.adds <= 0 && record.deletes.is_empty())
                    || record.set_at.elapsed() > self.ttl
            }
        }
    }

    /// When the pending record of `owner` expires, if it is pending.
    pub fn expires_in(&self, owner: &ObjectKey) -> Option<Duration> {
        let records = self.records.lock();
        let record = records.get(owner)?;
        if record.adds <= 0 && record.deletes.is_empty() {
            return None;
        }
        Some(self.ttl.saturating_sub(record.set_at.elapsed()))
    }

    /// Expects `adds` creations and the deletion of `deletes`, replacing any earlier record.
    pub fn expect(
        &self,
        owner: &ObjectKey,
        adds: usize,
        deletes: impl IntoIterator<Item = ObjectKey>,
    ) {
        self.records.lock().insert(
            owner.clone(),
            Expectation {
                adds: adds as i64,
                deletes: deletes.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// One creation for `owner` was observed (or will never happen: it failed).
    pub fn creation_observed(&self, owner: &ObjectKey) {
        if let Some(record) = self.records.lock().get_mut(owner) {
            record.adds -= 1;
        }
    }

    /// The deletion of `pod` for `owner` was observed (or will never be: it failed).
    pub fn deletion_observed(&self, owner: &ObjectKey, pod: &ObjectKey) {
        if let Some(record) = self.records.lock().get_mut(owner) {
            record.deletes.remove(pod);
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.records.lock().remove(owner);
    }

    /// The creations and deletions still pending for `owner`.
    pub fn pending(&self, owner: &ObjectKey) -> (i64, usize) {
        self.records
            .lock()
            .get(owner)
            .map_or((0, 0), |r| (r.adds.max(0), r.deletes.len()))
    }

    /// Applies one Pod informer change for owners of kind `K` (ReplicaSet, DaemonSet, Job),
    /// as Kubernetes' Pod event handlers do.
    pub fn observe<K: Resource>(&self, delta: &Delta<Pod>) {
        let owner = |pod: &Pod| controller_owner_key::<K, Pod>(pod);
        match delta {
            Delta::Added(pod) => {
                if let Some(owner) = owner(pod) {
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.deletion_observed(&owner, &ObjectKey::of(pod.as_ref()));
                    } else {
                        self.creation_observed(&owner);
                    }
                }
            }
            Delta::Updated { old, new } => {
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    for owner in owner(old).into_iter().chain(owner(new)) {
                        self.deletion_observed(&owner, &ObjectKey::of(new.as_ref()));
                    }
                }
            }
            Delta::Deleted(pod) => {
                if let Some(owner) = owner(pod) {
                    self.deletion_observed(&owner, &ObjectKey::of(pod.as_ref()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expectations_hold_until_observed_or_expired() {
        let expectations = Expectations::new(Duration::from_secs(60));
        let rs = ObjectKey::namespaced("ns", "web");
        assert!(expectations.satisfied(&rs));
        expectations.expect(&rs, 2, [ObjectKey::namespaced("ns", "web-a")]);
        assert!(!expectations.satisfied(&rs));
        expectations.creation_observed(&rs);
        expectations.creation_observed(&rs);
        assert!(!expectations.satisfied(&rs));
        expectations.deletion_observed(&rs, &ObjectKey::namespaced("ns", "web-a"));
        expectations.deletion_observed(&rs, &ObjectKey::namespaced("ns", "web-a"));
        assert!(expectations.satisfied(&rs));

        expectations.expect(&rs, 1, []);
        assert!(!expectations.satisfied(&rs));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(expectations.satisfied(&rs));
    }
}
