//! A `Client` wrapper that injects faults into the in-process registry, shared by the leader
//! election and event recorder tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use async_trait::async_trait;
use capstan_api::{
    client::Deletion,
    kube_core::{
        params::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
        DynamicObject, ObjectList,
    },
    Client, Error, ResourceInfo, Result, WatchStream,
};
use parking_lot::Mutex;
use tokio::time::Instant;

/// How a [`FaultyClient`] answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Passes every call through.
    Healthy,
    /// Fails every call with 503.
    Failing,
    /// Never answers.
    Hanging,
    /// Fails each call with 503 with this probability.
    Flaky(f64),
}

/// Wraps a client; see [`Mode`].
pub struct FaultyClient {
    inner: Arc<dyn Client>,
    mode: Mutex<Mode>,
    rng: Mutex<fastrand::Rng>,
    calls: AtomicU64,
    failures: AtomicU64,
    last_ok_write_start: Mutex<Option<Instant>>,
}

impl FaultyClient {
    pub fn new(inner: Arc<dyn Client>, seed: u64) -> Arc<Self> {
        Arc::new(FaultyClient {
            inner,
            mode: Mutex::new(Mode::Healthy),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_ok_write_start: Mutex::new(None),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    /// Calls made, failed or not.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls failed on purpose.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// When the last successful create or update was sent.
    pub fn last_ok_write_start(&self) -> Option<Instant> {
        *self.last_ok_write_start.lock()
    }

    async fn gate(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock();
        let fail = match mode {
            Mode::Healthy => false,
            Mode::Failing => true,
            Mode::Hanging => return futures::future::pending().await,
            Mode::Flaky(p) => self.rng.lock().f64() < p,
        };
        if fail {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(Error::ServiceUnavailable {
                message: "injected fault".into(),
            });
        }
        Ok(())
    }

    fn wrote(&self, start: Instant) {
        let mut last = self.last_ok_write_start.lock();
        *last = Some(last.map_or(start, |last| last.max(start)));
    }
}

#[async_trait]
impl Client for FaultyClient {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject> {
        self.gate().await?;
        self.inner.get(resource, namespace, name).await
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        self.gate().await?;
        self.inner.list(resource, namespace, params).await
    }

    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let start = Instant::now();
        self.gate().await?;
        let created = self
            .inner
            .create(resource, namespace, object, params)
            .await?;
        self.wrote(start);
        Ok(created)
    }

    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let start = Instant::now();
        self.gate().await?;
        let updated = self
            .inner
            .update(resource, namespace, object, params)
            .await?;
        self.wrote(start);
        Ok(updated)
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        self.gate().await?;
        self.inner
            .update_status(resource, namespace, object, params)
            .await
    }

    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.gate().await?;
        self.inner
            .patch(resource, namespace, name, patch, params)
            .await
    }

    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deletion> {
        self.gate().await?;
        self.inner.delete(resource, namespace, name, params).await
    }

    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream> {
        self.gate().await?;
        self.inner
            .watch(resource, namespace, params, resource_version)
            .await
    }
}
