//! A controller for a kind of your own, on Capstan's fake backends: the guide
//! `docs/custom-controller.md` walks through it.
//!
//! ```text
//! cargo run --example custom_controller
//! ```
//!
//! `Website` (`example.com/v1`) asks for a web page. Its reconciler keeps one ConfigMap per
//! Website holding the page (owned by the Website, so the garbage collector can delete it
//! with its owner), records an Event when it writes, and reports `status.observedGeneration`
//! and the ConfigMap's name. Everything runs in process: the API server's registry over the
//! in-memory store, which is also what the tests at the bottom use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan::api::k8s_openapi::api::core::v1::ConfigMap;
use capstan::api::kube_core::params::{ListParams, PostParams};
use capstan::api::kube_core::ObjectMeta;
use capstan::api::{Api, Client, Resource};
use capstan::controller::events::{EventBroadcaster, EventOptions, EventRecorder};
use capstan::controller::runtime::{
    controller_reference, Action, Context, Controller, Reconciler, ShutdownHandle,
};
use serde::{Deserialize, Serialize};

/// The custom kind: a web page to serve.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Website {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What the user asks for.
    #[serde(default)]
    pub spec: WebsiteSpec,
    /// What the controller reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WebsiteStatus>,
}

/// The desired state of a [`Website`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WebsiteSpec {
    /// The page's title.
    pub title: String,
    /// The page's body, as HTML.
    pub body: String,
}

/// The observed state of a [`Website`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteStatus {
    /// The generation the controller last acted on.
    pub observed_generation: Option<i64>,
    /// The ConfigMap holding the page.
    pub config_map: Option<String>,
}

capstan::api::resource!(
    Website,
    group = "example.com",
    version = "v1",
    kind = "Website",
    plural = "websites",
    scope = Namespaced
);

/// Why a reconcile failed: the API said no. Every failure is retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("reconciling a website: {0}")]
pub struct WebsiteError(#[from] capstan::api::Error);

/// The reconciler: what it needs to act, nothing more.
pub struct WebsiteReconciler {
    client: Arc<dyn Client>,
    events: EventRecorder,
}

/// The page a Website asks for.
fn render(spec: &WebsiteSpec) -> String {
    format!(
        "<html><head><title>{}</title></head><body>{}</body></html>",
        spec.title, spec.body
    )
}

#[async_trait::async_trait]
impl Reconciler<Website> for WebsiteReconciler {
    type Error = WebsiteError;

    /// Level-based and idempotent: read what is, compare with what should be, write only the
    /// difference. Running it twice on the same state writes nothing the second time.
    async fn reconcile(
        &self,
        website: Arc<Website>,
        ctx: &Context,
    ) -> Result<Action, WebsiteError> {
        let key = ctx.key();
        let namespace = key.namespace.clone().unwrap_or_default();
        let name = format!("{}-page", key.name);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let page = BTreeMap::from([("index.html".to_string(), render(&website.spec))]);

        match config_maps.get_opt(&name).await? {
            None => {
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        owner_references: Some(vec![controller_reference(&*website)]),
                        ..ObjectMeta::default()
                    },
                    data: Some(page),
                    ..ConfigMap::default()
                };
                config_maps
                    .create(&PostParams::default(), &config_map)
                    .await?;
                self.events
                    .normal(&*website, "Created", format!("Created ConfigMap {name}"));
            }
            Some(mut current) if current.data.as_ref() != Some(&page) => {
                current.data = Some(page);
                config_maps.update(&PostParams::default(), &current).await?;
                self.events
                    .normal(&*website, "Updated", format!("Updated ConfigMap {name}"));
            }
            Some(_) => {}
        }

        let status = WebsiteStatus {
            observed_generation: website.metadata.generation,
            config_map: Some(name),
        };
        if website.status.as_ref() != Some(&status) {
            let websites: Api<Website> = Api::namespaced(self.client.clone(), &namespace);
            let mut updated = (*website).clone();
            updated.status = Some(status);
            websites
                .update_status(&PostParams::default(), &updated)
                .await?;
        }
        // Nothing to poll: a change to the Website or its ConfigMap wakes the controller.
        Ok(Action::await_change())
    }
}

/// The fake cluster: the registry over the in-memory store, serving `Website` too.
pub fn fake_api() -> Arc<dyn Client> {
    let registry = capstan::apiserver::testing::registry();
    registry.register(Website::info());
    registry
}

/// Starts the Website controller on `client`; returns its shutdown handle and task.
pub fn start(
    client: Arc<dyn Client>,
    events: &EventBroadcaster,
) -> (
    ShutdownHandle,
    tokio::task::JoinHandle<Result<(), capstan::controller::runtime::ControllerError>>,
) {
    let controller = Controller::<Website>::from_client(client.clone())
        .named("website-controller")
        .owns::<ConfigMap>();
    let shutdown = controller.shutdown_handle();
    let reconciler = WebsiteReconciler {
        client,
        events: events.recorder("website-controller"),
    };
    (shutdown, tokio::spawn(controller.run(reconciler)))
}

/// Polls `check` every 20 ms until it gives a value.
async fn until<T, F: std::future::Future<Output = Option<T>>>(mut check: impl FnMut() -> F) -> T {
    loop {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn page(client: &Arc<dyn Client>, name: &str) -> Option<String> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config_map = config_maps.get_opt(name).await.ok()??;
    config_map.data?.get("index.html").cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = fake_api();
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let (shutdown, controller) = start(client.clone(), &events);
    let websites: Api<Website> = Api::namespaced(client.clone(), "default");

    let mut website = Website::default();
    website.metadata.name = Some("hello".into());
    website.spec = WebsiteSpec {
        title: "Hello".into(),
        body: "<h1>Hello from Capstan</h1>".into(),
    };
    websites.create(&PostParams::default(), &website).await?;
    let first = until(|| page(&client, "hello-page")).await;
    println!("created  hello-page: {first}");

    let mut current = websites.get("hello").await?;
    current.spec.body = "<h1>Hello again</h1>".into();
    websites.update(&PostParams::default(), &current).await?;
    let second = until(|| async {
        page(&client, "hello-page")
            .await
            .filter(|page| page.contains("again"))
    })
    .await;
    println!("updated  hello-page: {second}");

    // Someone deletes the ConfigMap: it is owned, so the Website is reconciled and it is back.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .delete("hello-page", &Default::default())
        .await?;
    let restored = until(|| page(&client, "hello-page")).await;
    println!("restored hello-page: {restored}");

    let status = until(|| async {
        let website = websites.get("hello").await.ok()?;
        website
            .status
            .filter(|s| s.observed_generation == website.metadata.generation)
    })
    .await;
    println!("status: {status:?}");

    events.flush().await;
    let api_events: Api<capstan::api::k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), "default");
    for event in api_events.list(&ListParams::default()).await?.items {
        println!(
            "event: {} {} (x{})",
            event.reason.unwrap_or_default(),
            event.message.unwrap_or_default(),
            event.count.unwrap_or(1)
        );
    }

    shutdown.shut_down();
    controller.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan::testing::within;

    /// Every test's time limit.
    const LIMIT: Duration = Duration::from_secs(30);

    fn website(name: &str, body: &str) -> Website {
        let mut website = Website::default();
        website.metadata.name = Some(name.into());
        website.spec = WebsiteSpec {
            title: name.into(),
            body: body.into(),
        };
        website
    }

    #[tokio::test]
    async fn a_website_gets_an_owned_page_that_follows_its_spec_and_comes_back_when_deleted() {
        within(LIMIT, async {
            let client = fake_api();
            let events = EventBroadcaster::new(
                client.clone(),
                EventOptions::default().history_capacity(100),
            );
            let (shutdown, controller) = start(client.clone(), &events);
            let websites: Api<Website> = Api::namespaced(client.clone(), "default");
            let created = websites
                .create(&PostParams::default(), &website("site", "one"))
                .await
                .unwrap();

            let page1 = until(|| page(&client, "site-page")).await;
            assert!(page1.contains("one"));
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
            let owner = config_maps
                .get("site-page")
                .await
                .unwrap()
                .metadata
                .owner_references;
            assert_eq!(owner.unwrap()[0].uid, created.metadata.uid.clone().unwrap());

            let mut current = websites.get("site").await.unwrap();
            current.spec.body = "two".into();
            websites
                .update(&PostParams::default(), &current)
                .await
                .unwrap();
            until(|| async {
                page(&client, "site-page")
                    .await
                    .filter(|p| p.contains("two"))
            })
            .await;

            config_maps
                .delete("site-page", &Default::default())
                .await
                .unwrap();
            until(|| page(&client, "site-page")).await;

            let status = until(|| async {
                let site = websites.get("site").await.ok()?;
                site.status
                    .filter(|s| s.observed_generation == site.metadata.generation)
            })
            .await;
            assert_eq!(status.config_map.as_deref(), Some("site-page"));

            events.flush().await;
            let reasons: Vec<String> = events
                .history()
                .into_iter()
                .filter_map(|event| event.reason)
                .collect();
            assert_eq!(reasons, ["Created", "Updated", "Created"]);

            shutdown.shut_down();
            controller.await.unwrap().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn reconciling_an_unchanged_website_twice_writes_nothing() {
        within(LIMIT, async {
            let client = fake_api();
            let events = EventBroadcaster::new(client.clone(), EventOptions::default());
            let websites: Api<Website> = Api::namespaced(client.clone(), "default");
            websites
                .create(&PostParams::default(), &website("still", "same"))
                .await
                .unwrap();
            let reconciler = WebsiteReconciler {
                client: client.clone(),
                events: events.recorder("website-controller"),
            };
            let key = capstan::controller::runtime::ObjectKey::namespaced("default", "still");
            let ctx = Context::new("website-controller", key);
            let reconcile = || async {
                let current = Arc::new(websites.get("still").await.unwrap());
                let action = reconciler.reconcile(current, &ctx).await.unwrap();
                assert!(matches!(action, Action::AwaitChange), "{action:?}");
                websites
                    .get("still")
                    .await
                    .unwrap()
                    .metadata
                    .resource_version
            };
            let first = reconcile().await;
            let second = reconcile().await;
            assert_eq!(first, second, "the second reconcile wrote nothing");
        })
        .await;
    }
}
