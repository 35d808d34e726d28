//! A [`ProxyBackend`] that programs nothing: it records the state it is given, how often and
//! how (full or partial) it was synced, and can be told to fail, for tests of whatever drives
//! a backend.
//!
//! It checks the contract as a real backend would: it validates the state, and a partial sync
//! before any successful full one (or right after a failed one) is recorded as a
//! [`FakeProxyBackend::contract_violations`] entry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Changes, ProxyBackend, ProxyError, ProxyState, Result};

/// One recorded sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSync {
    /// What the sync was told had changed.
    pub changes: Changes,
    /// How many Service ports the state held.
    pub service_ports: usize,
}

#[derive(Default)]
struct Inner {
    history: Vec<RecordedSync>,
    failures: VecDeque<ProxyError>,
    in_step: bool,
    violations: Vec<String>,
    cleanups: usize,
}

/// The fake backend. Clones share their records.
#[derive(Clone)]
pub struct FakeProxyBackend {
    inner: Arc<Mutex<Inner>>,
    state: watch::Sender<ProxyState>,
}

impl std::fmt::Debug for FakeProxyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProxyBackend")
            .field("syncs", &self.inner.lock().history.len())
            .finish()
    }
}

impl Default for FakeProxyBackend {
    fn default() -> Self {
        FakeProxyBackend::new()
    }
}

impl FakeProxyBackend {
    /// A backend with an empty dataplane.
    pub fn new() -> Self {
        FakeProxyBackend {
            inner: Arc::default(),
            state: watch::Sender::new(ProxyState::new()),
        }
    }

    /// The state of the last successful sync (empty after [`ProxyBackend::cleanup`]).
    pub fn state(&self) -> ProxyState {
        self.state.borrow().clone()
    }

    /// Waits until the programmed state satisfies `predicate`, and returns it.
    pub async fn wait_for(&self, mut predicate: impl FnMut(&ProxyState) -> bool) -> ProxyState {
        let mut changes = self.state.subscribe();
        let state = changes
            .wait_for(|state| predicate(state))
            .await
            .expect("the sender lives in self");
        state.clone()
    }

    /// Every successful sync, oldest first.
    pub fn history(&self) -> Vec<RecordedSync> {
        self.inner.lock().history.clone()
    }

    /// The number of successful syncs.
    pub fn syncs(&self) -> usize {
        self.inner.lock().history.len()
    }

    /// The number of successful full syncs.
    pub fn full_syncs(&self) -> usize {
        self.inner
            .lock()
            .history
            .iter()
            .filter(|sync| sync.changes.is_full())
            .count()
    }

    /// The number of successful partial syncs.
    pub fn partial_syncs(&self) -> usize {
        self.syncs() - self.full_syncs()
    }

    /// The number of cleanups.
    pub fn cleanups(&self) -> usize {
        self.inner.lock().cleanups
    }

    /// Makes the next sync fail with `error` (queued: several calls fail several syncs).
    pub fn fail_next_sync(&self, error: ProxyError) {
        self.inner.lock().failures.push_back(error);
    }

    /// Partial syncs that the contract forbids (none before a full one succeeded), described.
    pub fn contract_violations(&self) -> Vec<String> {
        self.inner.lock().violations.clone()
    }

    /// Waits `period` at a time until `syncs() >= count`. For tests, under a timeout.
    pub async fn wait_for_syncs(&self, count: usize, period: Duration) {
        while self.syncs() < count {
            tokio::time::sleep(period).await;
        }
    }
}

#[async_trait]
impl ProxyBackend for FakeProxyBackend {
    fn name(&self) -> &str {
        "fake"
    }

    async fn sync(&self, state: &ProxyState, changes: &Changes) -> Result<()> {
        {
            let mut inner = self.inner.lock();
            if let Some(error) = inner.failures.pop_front() {
                inner.in_step = false;
                return Err(error);
            }
            if let Err(error) = state.validate() {
                inner.in_step = false;
                return Err(error);
            }
            if !changes.is_full() && !inner.in_step {
                let number = inner.history.len() + 1;
                inner.violations.push(format!(
                    "sync {number} is partial without a full sync before it"
                ));
            }
            inner.in_step = true;
            inner.history.push(RecordedSync {
                changes: changes.clone(),
                service_ports: state.len(),
            });
        }
        self.state.send_replace(state.clone());
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        {
            let mut inner = self.inner.lock();
            inner.cleanups += 1;
            inner.in_step = false;
        }
        self.state.send_replace(ProxyState::new());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::sample_state;

    #[tokio::test]
    async fn the_fake_records_syncs_and_fails_when_told() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let fake = FakeProxyBackend::new();
            fake.fail_next_sync(ProxyError::CommandFailed {
                command: "x".into(),
                status: "exit status: 1".into(),
                stderr: "busy".into(),
            });
            assert!(fake.sync(&sample_state(), &Changes::Full).await.is_err());
            assert_eq!(fake.syncs(), 0);
            fake.sync(&sample_state(), &Changes::Full).await.unwrap();
            fake.sync(&sample_state(), &Changes::Partial(Default::default()))
                .await
                .unwrap();
            assert_eq!((fake.full_syncs(), fake.partial_syncs()), (1, 1));
            assert_eq!(fake.state(), sample_state());
            assert!(fake.contract_violations().is_empty());
            fake.cleanup().await.unwrap();
            assert!(fake.state().is_empty());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_partial_sync_first_is_a_contract_violation_and_bad_state_changes_nothing() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let fake = FakeProxyBackend::new();
            fake.sync(&sample_state(), &Changes::Partial(Default::default()))
                .await
                .unwrap();
            assert_eq!(fake.contract_violations().len(), 1);
            let mut bad = sample_state();
            bad.services.values_mut().next().unwrap().port = 0;
            let error = fake.sync(&bad, &Changes::Full).await.unwrap_err();
            assert!(matches!(error, ProxyError::InvalidState { .. }));
            assert_eq!(fake.state(), sample_state());
        })
        .await
        .unwrap();
    }
}
