//! `ObjectHistory` keeps recording when its watch's resourceVersion expires: it lists again
//! and reports what changed meanwhile, as a reflector does, instead of retrying the expired
//! watch forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::Deletion;
use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList};
use capstan_api::testing::within;
use capstan_api::{Api, Client, Error, ResourceInfo, Result, WatchStream};
use capstan_controller::testing::{Change, ObjectHistory};
use capstan_watch::ObjectKey;

/// The registry, except that the first watch finds its history gone: meanwhile `a` changed,
/// `b` was deleted and `c` created, and the watch answers 410.
struct ExpiringWatch {
    inner: Arc<dyn Client>,
    expired: AtomicBool,
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some([("v".to_string(), value.to_string())].into());
    cm
}

#[async_trait]
impl Client for ExpiringWatch {
    async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<DynamicObject> {
        self.inner.get(r, ns, name).await
    }
    async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        self.inner.list(r, ns, p).await
    }
    async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        self.inner.create(r, ns, o, p).await
    }
    async fn update(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        self.inner.update(r, ns, o, p).await
    }
    async fn update_status(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        o: DynamicObject,
        p: &PostParams,
    ) -> Result<DynamicObject> {
        self.inner.update_status(r, ns, o, p).await
    }
    async fn patch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        p: &PatchParams,
    ) -> Result<DynamicObject> {
        self.inner.patch(r, ns, name, patch, p).await
    }
    async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        p: &DeleteParams,
    ) -> Result<Deletion> {
        self.inner.delete(r, ns, name, p).await
    }
    async fn watch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        p: &WatchParams,
        rv: &str,
    ) -> Result<WatchStream> {
        if !self.expired.swap(true, Ordering::SeqCst) {
            let api = Api::<ConfigMap>::namespaced(self.inner.clone(), "default");
            let mut a = api.get("a").await?;
            a.data = config_map("a", "2").data;
            api.update(&PostParams::default(), &a).await?;
            api.delete("b", &DeleteParams::default()).await?;
            api.create(&PostParams::default(), &config_map("c", "1"))
                .await?;
            return Err(Error::Gone {
                message: format!("too old resource version: {rv} (999)"),
            });
        }
        self.inner.watch(r, ns, p, rv).await
    }
}

#[tokio::test]
async fn an_expired_watch_makes_the_history_relist_and_report_what_changed() {
    within(Duration::from_secs(20), async {
        let registry = capstan_apiserver::testing::client();
        let api = Api::<ConfigMap>::namespaced(registry.clone(), "default");
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &config_map(name, "1"))
                .await
                .unwrap();
        }
        let client: Arc<dyn Client> = Arc::new(ExpiringWatch {
            inner: registry,
            expired: AtomicBool::new(false),
        });
        let history = ObjectHistory::<ConfigMap>::record(client);
        let key = |name: &str| ObjectKey {
            namespace: Some("default".into()),
            name: name.into(),
        };
        history
            .wait_until(|state| {
                state.len() == 2
                    && state.contains_key(&key("c"))
                    && state.get(&key("a")).and_then(|a| a.data.clone())
                        == config_map("a", "2").data
            })
            .await;
        let changes: Vec<(Change, String)> = history
            .revisions()
            .iter()
            .map(|r| (r.change, r.object.metadata.name.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            changes,
            [
                (Change::Added, "a".to_string()),
                (Change::Added, "b".to_string()),
                (Change::Deleted, "b".to_string()),
                (Change::Modified, "a".to_string()),
                (Change::Added, "c".to_string()),
            ]
        );
    })
    .await;
}
