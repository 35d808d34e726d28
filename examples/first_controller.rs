//! Your first controller: it labels every ConfigMap `reviewed=true`.
//! `cargo run --example first_controller`; its test: `cargo test --example first_controller`.
use std::{sync::Arc, time::Duration};

use capstan::api::k8s_openapi::api::core::v1::ConfigMap;
use capstan::api::{kube_core::params::Patch, kube_core::ResourceExt, Api, Client, Error};
use capstan::controller::runtime::{Action, Context, Controller, Reconciler};
use capstan::testing::{eventually_some, FakeCluster};

/// Labels a ConfigMap `reviewed=true` unless it already is; then it writes nothing.
struct Reviewer {
    client: Arc<dyn Client>,
}

#[async_trait::async_trait]
impl Reconciler<ConfigMap> for Reviewer {
    type Error = Error;
    async fn reconcile(&self, config_map: Arc<ConfigMap>, _: &Context) -> Result<Action, Error> {
        if !config_map.labels().contains_key("reviewed") {
            let namespace = config_map.namespace().unwrap_or_default();
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            let label = serde_json::json!({"metadata": {"labels": {"reviewed": "true"}}});
            let (name, params) = (config_map.name_any(), Default::default());
            api.patch(&name, &params, &Patch::Merge(&label)).await?;
        }
        Ok(Action::await_change())
    }
}

/// Runs the controller on `cluster`, creates the ConfigMap `settings`, awaits its label.
async fn review_settings(cluster: &FakeCluster) -> ConfigMap {
    let client = cluster.client(); // In production: any `Client`, e.g. over HTTP.
    let controller = Controller::<ConfigMap>::from_client(client.clone());
    tokio::spawn(controller.run(Reviewer { client }));
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let mut settings = ConfigMap::default();
    settings.metadata.name = Some("settings".into());
    api.create(&Default::default(), &settings).await.unwrap();
    eventually_some(Duration::from_secs(10), "settings labelled", || async {
        Some(api.get("settings").await.ok()?).filter(|s| s.labels().contains_key("reviewed"))
    })
    .await
}

#[tokio::main]
async fn main() {
    let cluster = FakeCluster::start().await;
    println!("{:?}", review_settings(&cluster).await.labels());
}

#[tokio::test]
async fn a_new_config_map_is_labelled_reviewed() {
    capstan::testing::within(Duration::from_secs(30), async {
        let cluster = FakeCluster::start().await;
        let settings = review_settings(&cluster).await;
        assert_eq!(settings.labels()["reviewed"], "true");
    })
    .await;
}
