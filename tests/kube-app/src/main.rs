//! A kube-rs application that also depends on Capstan: both see the same Kubernetes types.
//!
//! Started with no arguments it runs Capstan's API server in process on a loopback port,
//! then lists and creates objects through kube-rs' `Client` against it and reads them back
//! through Capstan's own `Api`, so one `Pod` type serves both libraries.

use std::sync::Arc;

use anyhow::Context as _;
use capstan::apiserver::http::ApiServer;
use capstan::apiserver::registry::Registry;
use capstan::store::memory::MemoryStore;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
    let server = ApiServer::bind(registry.clone(), "127.0.0.1:0".parse()?)
        .await
        .context("starting Capstan's API server")?;
    let config = kube::Config::new(server.url().parse()?);
    let client = kube::Client::try_from(config)?;

    let kube_api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some("from-kube-rs".into());
    config_map.data = Some([("greeting".to_string(), "hello".to_string())].into());
    kube_api.create(&PostParams::default(), &config_map).await?;
    let listed = kube_api.list(&ListParams::default()).await?;

    let capstan_api: capstan::api::Api<ConfigMap> =
        capstan::api::Api::namespaced(registry as Arc<dyn capstan::api::Client>, "default");
    let read: ConfigMap = capstan_api.get("from-kube-rs").await?;
    anyhow::ensure!(
        read.data == config_map.data,
        "Capstan read back {:?}, kube-rs wrote {:?}",
        read.data,
        config_map.data
    );
    println!(
        "kube-rs listed {} ConfigMap(s); Capstan read back from-kube-rs with the same type",
        listed.items.len()
    );
    Ok(())
}
