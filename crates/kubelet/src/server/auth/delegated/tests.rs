//! The delegated authenticator and authorizer against a scripted API server.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use capstan_api::client::WatchStream;
use capstan_api::kube_core::params::{DeleteParams, ListParams, Patch, PatchParams, WatchParams};
use capstan_api::kube_core::{DynamicObject, ObjectList};
use capstan_api::{Deletion, Error, ResourceInfo, Result};
use http::Method;

use super::*;

/// Answers reviews: token `good` is alice (group `devs`); alice may `get` `stats` only.
/// Everything else fails.
#[derive(Default)]
struct Reviewer {
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
    seen: Mutex<Vec<serde_json::Value>>,
}

fn unsupported() -> Error {
    Error::internal("not supported by the test double")
}

#[async_trait]
impl Client for Reviewer {
    async fn get(&self, _: &ResourceInfo, _: Option<&str>, _: &str) -> Result<DynamicObject> {
        Err(unsupported())
    }
    async fn list(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        Err(unsupported())
    }
    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        _: &PostParams,
    ) -> Result<DynamicObject> {
        assert_eq!(namespace, None);
        let mut value = serde_json::to_value(&object).unwrap();
        self.seen.lock().push(value.clone());
        match (resource.group(), resource.plural()) {
            ("authentication.k8s.io", "tokenreviews") => {
                self.token_reviews.fetch_add(1, Ordering::SeqCst);
                value["status"] = if value["spec"]["token"] == "good" {
                    serde_json::json!({"authenticated": true, "user": {
                        "username": "alice", "uid": "u-1", "groups": ["devs"]}})
                } else {
                    serde_json::json!({"authenticated": false, "error": "invalid token"})
                };
            }
            ("authorization.k8s.io", "subjectaccessreviews") => {
                self.access_reviews.fetch_add(1, Ordering::SeqCst);
                let spec = &value["spec"];
                let attributes = &spec["resourceAttributes"];
                let allowed = spec["user"] == "alice"
                    && attributes["verb"] == "get"
                    && attributes["subresource"] == "stats"
                    && attributes["resource"] == "nodes";
                value["status"] = serde_json::json!({"allowed": allowed});
            }
            _ => return Err(unsupported()),
        }
        Ok(serde_json::from_value(value).unwrap())
    }
    async fn update(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: DynamicObject,
        _: &PostParams,
    ) -> Result<DynamicObject> {
        Err(unsupported())
    }
    async fn update_status(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: DynamicObject,
        _: &PostParams,
    ) -> Result<DynamicObject> {
        Err(unsupported())
    }
    async fn patch(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: &str,
        _: &Patch<serde_json::Value>,
        _: &PatchParams,
    ) -> Result<DynamicObject> {
        Err(unsupported())
    }
    async fn delete(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: &str,
        _: &DeleteParams,
    ) -> Result<Deletion> {
        Err(unsupported())
    }
    async fn watch(
        &self,
        _: &ResourceInfo,
        _: Option<&str>,
        _: &WatchParams,
        _: &str,
    ) -> Result<WatchStream> {
        Err(unsupported())
    }
}

#[tokio::test]
async fn tokens_are_reviewed_once_and_the_answer_is_cached() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let reviewer = Arc::new(Reviewer::default());
        let auth = DelegatedAuth::new(reviewer.clone(), CacheTtls::default());
        let alice = auth.authenticate("good").await.unwrap().expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u-1");
        assert_eq!(alice.groups, vec!["devs".to_string()]);
        assert_eq!(auth.authenticate("good").await.unwrap(), Some(alice));
        assert_eq!(auth.authenticate("bad").await.unwrap(), None);
        assert_eq!(auth.authenticate("bad").await.unwrap(), None);
        assert_eq!(reviewer.token_reviews.load(Ordering::SeqCst), 2);
        let sent = reviewer.seen.lock()[0].clone();
        assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(sent["kind"], "TokenReview");
        assert_eq!(sent["spec"]["token"], "good");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn access_reviews_name_the_node_subresource_and_are_cached_per_decision() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let reviewer = Arc::new(Reviewer::default());
        let auth = DelegatedAuth::new(reviewer.clone(), CacheTtls::default());
        let alice = User::new("alice").group("devs");
        let stats = Attributes::of(&Method::GET, "/stats/summary", "node-1");
        let exec = Attributes::of(&Method::POST, "/exec/ns/p/c", "node-1");
        assert!(auth.authorize(&alice, &stats).await.unwrap());
        assert!(!auth.authorize(&alice, &exec).await.unwrap());
        assert!(auth.authorize(&alice, &stats).await.unwrap());
        assert!(!auth.authorize(&alice, &exec).await.unwrap());
        assert_eq!(reviewer.access_reviews.load(Ordering::SeqCst), 2);
        let sent = reviewer.seen.lock()[1].clone();
        assert_eq!(sent["kind"], "SubjectAccessReview");
        assert_eq!(sent["spec"]["user"], "alice");
        assert_eq!(sent["spec"]["groups"], serde_json::json!(["devs"]));
        let attributes = &sent["spec"]["resourceAttributes"];
        assert_eq!(attributes["verb"], "create");
        assert_eq!(attributes["resource"], "nodes");
        assert_eq!(attributes["subresource"], "proxy");
        assert_eq!(attributes["name"], "node-1");
        assert_eq!(attributes["version"], "v1");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_zero_time_to_live_asks_every_time() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let reviewer = Arc::new(Reviewer::default());
        let ttls = CacheTtls {
            authentication: Duration::ZERO,
            authorized: Duration::ZERO,
            unauthorized: Duration::ZERO,
        };
        let auth = DelegatedAuth::new(reviewer.clone(), ttls);
        auth.authenticate("good").await.unwrap();
        auth.authenticate("good").await.unwrap();
        assert_eq!(reviewer.token_reviews.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("in time");
}
