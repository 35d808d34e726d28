use std::time::Duration;

use capstan_api::kube_core::params::DeleteParams;
use capstan_api::testing::{eventually_some, within};
use capstan_watch::ReflectorOptions;

use super::*;

const LIMIT: Duration = Duration::from_secs(30);

fn factory(client: &Arc<dyn Client>) -> Arc<InformerFactory> {
    Arc::new(InformerFactory::new(
        client.clone(),
        ReflectorOptions::default(),
    ))
}

async fn get(client: &Arc<dyn Client>, kind: &str, namespace: &str, name: &str) -> Option<Value> {
    match client.get(&builtin(kind), Some(namespace), name).await {
        Ok(object) => Some(serde_json::to_value(object).unwrap()),
        Err(error) if error.is_not_found() => None,
        Err(error) => panic!("reading {kind} {namespace}/{name}: {error}"),
    }
}

async fn delete(client: &Arc<dyn Client>, kind: &str, namespace: Option<&str>, name: &str) {
    client
        .delete(&builtin(kind), namespace, name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn every_active_namespace_gets_a_default_account_again_after_a_deletion() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        capstan_apiserver::testing::create_namespace(&*client, "team").await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(controller(factory(&client), client.clone()).run(async {
            let _ = stopped.await;
        }));
        let first = eventually_some(LIMIT, "the default account", || async {
            get(&client, "ServiceAccount", "team", "default").await
        })
        .await;
        // A namespace created later gets one too.
        capstan_apiserver::testing::create_namespace(&*client, "later").await;
        eventually_some(LIMIT, "the object to appear as expected", || async {
            get(&client, "ServiceAccount", "later", "default").await
        })
        .await;
        delete(&client, "ServiceAccount", Some("team"), "default").await;
        let again = eventually_some(LIMIT, "the object to appear as expected", || async {
            get(&client, "ServiceAccount", "team", "default")
                .await
                .filter(|account| account["metadata"]["uid"] != first["metadata"]["uid"])
        })
        .await;
        assert_eq!(again["metadata"]["name"], "default");
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_terminating_namespace_gets_no_account() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        capstan_apiserver::testing::create_namespace(&*client, "team").await;
        // The `kubernetes` finalizer keeps it terminating: no namespace controller runs here.
        delete(&client, "Namespace", None, "team").await;
        let reconciler = ServiceAccountsReconciler::new(client.clone());
        let namespace: Namespace = serde_json::from_value(
            serde_json::to_value(
                client
                    .get(&builtin("Namespace"), None, "team")
                    .await
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(!is_active(&namespace));
        let action = reconciler
            .reconcile(
                Arc::new(namespace),
                &Context::new(NAME, ObjectKey::cluster("team")),
            )
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());
        assert!(get(&client, "ServiceAccount", "team", "default")
            .await
            .is_none());
        // Creating there directly is refused, and the reconciler takes that as nothing to do.
        reconciler.ensure_default("team").await.unwrap();
        assert!(get(&client, "ServiceAccount", "team", "default")
            .await
            .is_none());
    })
    .await;
}

#[tokio::test]
async fn the_root_ca_is_published_in_every_namespace_and_put_back_when_changed() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        capstan_apiserver::testing::create_namespace(&*client, "team").await;
        let bundle = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(
            root_ca_publisher(factory(&client), client.clone(), bundle).run(async {
                let _ = stopped.await;
            }),
        );
        let published = eventually_some(LIMIT, "the object to appear as expected", || async {
            get(&client, "ConfigMap", "team", ROOT_CA_CONFIG_MAP).await
        })
        .await;
        assert_eq!(published["data"], json!({ROOT_CA_KEY: bundle}));
        assert_eq!(
            published["metadata"]["annotations"][DESCRIPTION_ANNOTATION],
            ROOT_CA_DESCRIPTION
        );
        // A namespace created later gets it too.
        capstan_apiserver::testing::create_namespace(&*client, "later").await;
        eventually_some(LIMIT, "the later namespace's bundle", || async {
            get(&client, "ConfigMap", "later", ROOT_CA_CONFIG_MAP).await
        })
        .await;
        // An edit is put back.
        let mut edited = published.clone();
        edited["data"] = json!({ROOT_CA_KEY: "tampered"});
        client
            .update(
                &builtin("ConfigMap"),
                Some("team"),
                dynamic(edited).unwrap(),
                &PostParams::default(),
            )
            .await
            .unwrap();
        eventually_some(LIMIT, "the object to appear as expected", || async {
            get(&client, "ConfigMap", "team", ROOT_CA_CONFIG_MAP)
                .await
                .filter(|cm| cm["data"][ROOT_CA_KEY] == bundle)
        })
        .await;
        // A deletion too.
        delete(&client, "ConfigMap", Some("team"), ROOT_CA_CONFIG_MAP).await;
        eventually_some(LIMIT, "the object to appear as expected", || async {
            get(&client, "ConfigMap", "team", ROOT_CA_CONFIG_MAP).await
        })
        .await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn without_a_ca_the_bundle_is_empty() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        capstan_apiserver::testing::create_namespace(&*client, "team").await;
        let reconciler = RootCaReconciler::new(client.clone(), "");
        reconciler.publish("team").await.unwrap();
        // Idempotent: a second pass writes nothing.
        let first = get(&client, "ConfigMap", "team", ROOT_CA_CONFIG_MAP)
            .await
            .unwrap();
        reconciler.publish("team").await.unwrap();
        let second = get(&client, "ConfigMap", "team", ROOT_CA_CONFIG_MAP)
            .await
            .unwrap();
        assert_eq!(first["data"], json!({ROOT_CA_KEY: ""}));
        assert_eq!(
            first["metadata"]["resourceVersion"],
            second["metadata"]["resourceVersion"]
        );
    })
    .await;
}
