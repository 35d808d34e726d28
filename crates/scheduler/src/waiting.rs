//! Pods held at Permit: a Permit plugin that answers `Wait` parks the pod here until every
//! waiting plugin allows it, one rejects it, or the longest wait runs out.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::framework::Status;

struct Waiting {
    node: String,
    pending: HashSet<String>,
    done: oneshot::Sender<Status>,
}

/// The pods waiting at Permit, by `namespace/name`. Shared between the scheduler and the
/// Permit plugins that decide later (give the plugin's factory a clone of the `Arc` the
/// scheduler uses: [`Scheduler::with_waiting_pods`](crate::Scheduler::with_waiting_pods)).
#[derive(Default)]
pub struct WaitingPods {
    inner: Mutex<HashMap<String, Waiting>>,
}

impl std::fmt::Debug for WaitingPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingPods")
            .field("pods", &self.inner.lock().len())
            .finish()
    }
}

impl WaitingPods {
    /// No pod waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// The waiting pods' keys.
    pub fn keys(&self) -> Vec<String> {
        self.inner.lock().keys().cloned().collect()
    }

    /// The node a waiting pod is assumed onto.
    pub fn node_of(&self, key: &str) -> Option<String> {
        self.inner.lock().get(key).map(|w| w.node.clone())
    }

    /// The plugins a waiting pod still waits for.
    pub fn pending_plugins(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .lock()
            .get(key)
            .map(|w| w.pending.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `plugin` allows the pod; once every waiting plugin has, it is bound. `false` when the
    /// pod is not waiting. Idempotent.
    pub fn allow(&self, key: &str, plugin: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some(w) = inner.get_mut(key) else {
            return false;
        };
        w.pending.remove(plugin);
        if w.pending.is_empty() {
            let w = inner.remove(key).expect("present");
            let _ = w.done.send(Status::success());
        }
        true
    }

    /// `plugin` rejects the pod: it is unreserved and retried. `false` when it is not waiting.
    pub fn reject(&self, key: &str, plugin: &str, reason: impl Into<String>) -> bool {
        let Some(w) = self.inner.lock().remove(key) else {
            return false;
        };
        let s = Status::unschedulable(reason.into()).with_plugin(plugin.to_owned());
        let _ = w.done.send(s);
        true
    }

    /// Parks `key` until `plugins` all allow it; the receiver gets the outcome.
    pub(crate) fn add(
        &self,
        key: String,
        node: String,
        plugins: Vec<String>,
    ) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.inner.lock().insert(
            key,
            Waiting {
                node,
                pending: plugins.into_iter().collect(),
                done: tx,
            },
        );
        rx
    }

    /// Forgets `key` (its wait timed out).
    pub(crate) fn remove(&self, key: &str) {
        self.inner.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_proceeds_once_every_waiting_plugin_allows_it() {
        let w = WaitingPods::new();
        let mut rx = w.add("ns/p".into(), "n1".into(), vec!["A".into(), "B".into()]);
        assert_eq!(w.pending_plugins("ns/p"), ["A", "B"]);
        assert!(w.allow("ns/p", "A"));
        assert!(rx.try_recv().is_err(), "B has not allowed yet");
        assert!(w.allow("ns/p", "B"));
        assert!(rx.try_recv().unwrap().is_success());
        assert!(w.keys().is_empty());
        assert!(!w.allow("ns/p", "A"), "no longer waiting");
    }

    #[test]
    fn one_rejection_ends_the_wait_naming_the_plugin() {
        let w = WaitingPods::new();
        let mut rx = w.add("ns/p".into(), "n1".into(), vec!["A".into(), "B".into()]);
        assert_eq!(w.node_of("ns/p").as_deref(), Some("n1"));
        assert!(w.reject("ns/p", "B", "gang incomplete"));
        let s = rx.try_recv().unwrap();
        assert!(s.is_rejected());
        assert_eq!(s.plugin(), Some("B"));
        assert!(!w.reject("ns/p", "A", "again"));
    }
}
