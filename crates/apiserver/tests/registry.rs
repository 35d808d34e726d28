//! The registry's contract, end to end through the `Client` trait and typed `Api<K>` handles.
//!
//! Every case in [`cases`] is an `async fn(Arc<dyn Store>)`, so the same bodies run on any
//! backend: [`registry_tests!`] turns them into `#[tokio::test]`s for a store constructor.
//! They run on the in-memory store and, with the `etcd` feature, on the real etcd named by
//! `CAPSTAN_ETCD_ENDPOINTS`.

use std::{sync::Arc, time::Duration};

use capstan_store::{memory::MemoryStore, Store};

/// Expands to one `#[tokio::test]` per case, each with a fresh store from `$store` (an async
/// block returning `Arc<dyn Store>`) and a 30 s deadline.
macro_rules! registry_tests {
    (serial $store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let _one_at_a_time = crate::etcd::SERIAL.lock().await;
                let store: Arc<dyn Store> = $store.await;
                tokio::time::timeout(Duration::from_secs(30), crate::cases::$case(store))
                    .await
                    .expect("the case took longer than 30 s");
            }
        )*
    };
    ($store:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store: Arc<dyn Store> = $store.await;
                tokio::time::timeout(Duration::from_secs(30), crate::cases::$case(store))
                    .await
                    .expect("the case took longer than 30 s");
            }
        )*
    };
}

/// Invokes `$then!($($args)*; <every case>)`: one list of cases for every backend.
macro_rules! with_every_case {
    ($then:ident!($($args:tt)*)) => {
        $then!($($args)*;
        resource_version_is_the_stores_mod_revision_and_a_stale_update_is_a_conflict,
        an_update_without_a_resource_version_is_applied_to_the_latest_state,
        concurrent_patches_without_resource_versions_all_apply,
        an_update_that_changes_nothing_keeps_the_resource_version,
        an_update_of_a_missing_object_is_not_found,
        generation_bumps_on_spec_changes_only,
        update_status_changes_status_only_and_never_generation,
        update_ignores_status_for_kinds_with_a_status_subresource,
        update_status_of_a_kind_without_the_subresource_is_not_found,
        generate_name_produces_unique_names,
        uid_and_creation_timestamp_are_set_on_create_and_preserved_on_update,
        another_uid_on_update_is_invalid,
        delete_with_finalizers_sets_deletion_timestamp_and_removing_the_last_finalizer_deletes,
        a_running_pod_is_deleted_gracefully_and_gone_after_the_kubelets_final_delete,
        a_graceful_pod_with_a_finalizer_waits_for_both,
        an_object_being_deleted_cannot_gain_finalizers,
        delete_preconditions_on_uid_and_resource_version_give_conflict,
        propagation_policies_add_the_garbage_collector_finalizers,
        delete_returns_the_last_state_at_the_delete_revision,
        deployment_defaults_match_kubernetes,
        pod_template_defaults_match_kubernetes,
        service_cluster_ips_are_unique_freed_on_delete_and_rebuilt_after_a_restart,
        a_requested_cluster_ip_is_honoured_once_and_must_be_in_range,
        headless_and_external_name_services_hold_no_cluster_ip,
        a_cluster_ip_is_immutable,
        two_registries_on_one_store_never_share_a_cluster_ip,
        addresses_of_services_stored_without_records_stay_taken,
        object_names_must_be_dns_subdomains,
        service_and_namespace_names_must_be_dns_labels,
        a_name_or_generate_name_is_required,
        label_keys_and_values_must_be_valid,
        negative_replicas_are_invalid,
        workloads_need_a_selector,
        the_selector_must_match_the_template_labels,
        the_selector_is_immutable,
        a_pod_needs_a_container,
        container_names_must_be_unique_labels,
        containers_need_an_image,
        service_ports_must_be_in_range,
        service_port_names_must_be_unique,
        max_surge_and_max_unavailable_may_not_both_be_zero,
        a_job_template_needs_a_restart_policy_other_than_always,
        malformed_bodies_are_bad_requests,
        a_user_admission_step_can_mutate,
        a_user_admission_step_can_reject,
        every_rejected_request_leaves_the_store_unchanged,
        a_dry_run_stores_nothing,
        list_with_label_and_field_selectors_and_paging_returns_every_match_once,
        list_across_namespaces_and_of_cluster_scoped_kinds,
        list_at_an_exact_resource_version_reads_the_past,
        an_expired_continue_token_gives_410_expired_after_compaction,
        malformed_list_requests_are_bad_requests,
        merge_patch_of_a_deployment,
        strategic_merge_patch_of_a_deployment,
        unknown_fields_are_never_stored_and_a_strict_patch_with_them_changes_nothing,
        delete_collection_pages_through_every_match_and_leaves_pending_ones_pending,
        a_patch_with_a_stale_resource_version_is_a_conflict,
        unsupported_patches_are_rejected,
        json_patches_apply_in_order_and_a_failing_operation_changes_nothing,
        a_custom_kind_works_end_to_end,
        unknown_kinds_are_not_found,
        watch_is_served_by_an_attached_watch_source,
            );
    };
}

mod memory {
    use super::*;

    with_every_case!(registry_tests!(async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    }));
}

/// The same cases against the real etcd named by `CAPSTAN_ETCD_ENDPOINTS`. They share one
/// etcd, so they run one at a time, each on a wiped `/registry/`.
#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use capstan_store::{etcd::EtcdStore, Range, StoreExt};

    pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    pub(crate) async fn wiped_etcd() -> Arc<dyn Store> {
        let store = EtcdStore::from_env().await.unwrap_or_else(|e| {
            panic!(
                "the etcd registry tests need a real etcd ({e}): run `scripts/test`, which \
                 installs and starts one and exports CAPSTAN_ETCD_ENDPOINTS"
            )
        });
        for kv in store.range(Range::prefix("/registry/")).await.unwrap().kvs {
            let _ = store.delete(kv.key, None).await;
        }
        Arc::new(store)
    }

    with_every_case!(registry_tests!(serial crate::etcd::wiped_etcd()));
}

mod cases {
    use capstan_api::compat::Maybe;
    use std::{
        collections::BTreeSet,
        net::Ipv4Addr,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };

    use async_trait::async_trait;
    use capstan_api::{
        k8s_openapi::api::{
            apps::v1::Deployment,
            batch::v1::Job,
            core::v1::{ConfigMap, Namespace, Node, Pod, Service},
        },
        kube_core::{
            params::{
                DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions,
                VersionMatch, WatchParams,
            },
            DynamicObject, ObjectMeta, WatchEvent,
        },
        Api, Client, Deletion, Error, FieldError, FieldErrorKind, Resource, ResourceInfo,
        WatchStream,
    };
    use capstan_apiserver::registry::{
        admission::{self, Operation},
        Registry, ServiceCidr, WatchSource,
    };
    use capstan_store::{Store, StoreExt};
    use futures::StreamExt;
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};

    // -----------------------------------------------------------------------------------------
    // Helpers

    fn client(store: &Arc<dyn Store>) -> Arc<dyn Client> {
        Arc::new(Registry::new(store.clone()))
    }

    fn typed<K: serde::de::DeserializeOwned>(value: Value) -> K {
        serde_json::from_value(value).expect("a valid object")
    }

    fn deployment(name: &str, spec: Value) -> Deployment {
        typed(json!({"metadata": {"name": name}, "spec": spec}))
    }

    fn web_deployment(name: &str) -> Deployment {
        deployment(
            name,
            json!({
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            }),
        )
    }

    fn config_map(name: &str, data: Value) -> ConfigMap {
        typed(json!({"metadata": {"name": name}, "data": data}))
    }

    fn service(name: &str, spec: Value) -> Service {
        typed(json!({"metadata": {"name": name}, "spec": spec}))
    }

    fn http_service(name: &str) -> Service {
        service(
            name,
            json!({"ports": [{"port": 80}], "selector": {"app": name}}),
        )
    }

    fn rv(meta: &ObjectMeta) -> i64 {
        meta.resource_version
            .as_deref()
            .expect("a resourceVersion")
            .parse()
            .expect("a number")
    }

    fn post() -> PostParams {
        PostParams::default()
    }

    /// The fields named by an `Invalid` error, in order.
    fn invalid_fields(error: Error) -> Vec<String> {
        match error {
            Error::Invalid { causes, .. } => causes.into_iter().map(|c| c.field).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn invalid_causes(error: Error) -> Vec<FieldError> {
        match error {
            Error::Invalid { causes, .. } => causes,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    async fn create_invalid<K: Resource>(api: &Api<K>, object: K) -> Vec<String> {
        invalid_fields(api.create(&post(), &object).await.unwrap_err())
    }

    // -----------------------------------------------------------------------------------------
    // resourceVersion and optimistic concurrency

    pub(crate) async fn resource_version_is_the_stores_mod_revision_and_a_stale_update_is_a_conflict(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "rv");
        capstan_apiserver::testing::create_namespace(&**api.client(), "rv").await;
        let created = api
            .create(&post(), &config_map("settings", json!({"a": "1"})))
            .await
            .unwrap();
        let key = "/registry/configmaps/rv/settings";
        let kv = store.get(key).await.unwrap().unwrap();
        assert_eq!(rv(&created.metadata), kv.mod_revision);
        let stored: Value = serde_json::from_slice(&kv.value).unwrap();
        assert!(stored["metadata"].get("resourceVersion").is_none());

        let mut first = created.clone();
        first.data = Some([("a".to_string(), "2".to_string())].into());
        let updated = api.update(&post(), &first).await.unwrap();
        assert_eq!(
            rv(&updated.metadata),
            store.get(key).await.unwrap().unwrap().mod_revision
        );
        assert!(rv(&updated.metadata) > rv(&created.metadata));

        let before = store.current_revision().await.unwrap();
        let mut stale = created;
        stale.data = Some([("a".to_string(), "3".to_string())].into());
        let error = api.update(&post(), &stale).await.unwrap_err();
        assert_eq!(
            error,
            Error::Conflict {
                resource: "configmaps".into(),
                name: "settings".into(),
                message: Error::OBJECT_MODIFIED.into(),
            }
        );
        assert_eq!(error.code(), 409);
        assert_eq!(store.current_revision().await.unwrap(), before);
        assert_eq!(api.get("settings").await.unwrap().data, updated.data);
    }

    pub(crate) async fn an_update_without_a_resource_version_is_applied_to_the_latest_state(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let created = api
            .create(&post(), &config_map("c", json!({"a": "1"})))
            .await
            .unwrap();
        api.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
        let mut blind = created;
        blind.metadata.resource_version = None;
        blind.data = Some([("c".to_string(), "3".to_string())].into());
        let updated = api.update(&post(), &blind).await.unwrap();
        assert_eq!(updated.data, blind.data);
        assert_eq!(updated.metadata.uid, blind.metadata.uid);
    }

    pub(crate) async fn concurrent_patches_without_resource_versions_all_apply(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        api.create(&post(), &config_map("shared", json!({})))
            .await
            .unwrap();
        let writers = (0..16).map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let patch = json!({"metadata": {"labels": {format!("writer-{i}"): "done"}}});
                api.patch("shared", &PatchParams::default(), &Patch::Merge(patch))
                    .await
            })
        });
        for writer in futures::future::join_all(writers).await {
            writer.unwrap().unwrap();
        }
        let labels = api.get("shared").await.unwrap().metadata.labels.unwrap();
        assert_eq!(labels.len(), 16, "{labels:?}");
    }

    pub(crate) async fn an_update_that_changes_nothing_keeps_the_resource_version(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let before = store.current_revision().await.unwrap();
        let same = api.update(&post(), &created).await.unwrap();
        assert_eq!(
            same.metadata.resource_version,
            created.metadata.resource_version
        );
        assert_eq!(store.current_revision().await.unwrap(), before);
    }

    pub(crate) async fn an_update_of_a_missing_object_is_not_found(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let error = api
            .update(&post(), &config_map("ghost", json!({})))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            Error::NotFound {
                resource: "configmaps".into(),
                name: "ghost".into()
            }
        );
        assert!(store
            .get("/registry/configmaps/default/ghost")
            .await
            .unwrap()
            .is_none());
    }

    // -----------------------------------------------------------------------------------------
    // generation and status

    pub(crate) async fn generation_bumps_on_spec_changes_only(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));

        let mut labelled = created.clone();
        labelled.metadata.labels = Some([("tier".to_string(), "front".to_string())].into());
        let labelled = api.update(&post(), &labelled).await.unwrap();
        assert_eq!(labelled.metadata.generation, Some(1), "metadata only");

        let scaled = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 5}})),
            )
            .await
            .unwrap();
        assert_eq!(scaled.metadata.generation, Some(2), "spec changed");

        let mut forged = scaled.clone();
        forged.metadata.generation = Some(40);
        let kept = api.update(&post(), &forged).await.unwrap();
        assert_eq!(kept.metadata.generation, Some(2), "clients cannot set it");

        let config: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let created = config
            .create(&post(), &config_map("no-spec", json!({"a": "1"})))
            .await
            .unwrap();
        assert_eq!(created.metadata.generation, None, "kinds without spec");
    }

    pub(crate) async fn update_status_changes_status_only_and_never_generation(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let mut change = created.clone();
        change.metadata.labels = Some([("sneaky".to_string(), "yes".to_string())].into());
        change.spec.opt_mut().unwrap().replicas = Some(9);
        change.status = Some(typed(json!({"replicas": 3, "readyReplicas": 2})));
        let updated = api.update_status(&post(), &change).await.unwrap();
        assert_eq!(updated.status.as_ref().unwrap().replicas, Some(3));
        assert_eq!(updated.status.as_ref().unwrap().ready_replicas, Some(2));
        assert_eq!(updated.spec.opt().unwrap().replicas, Some(1));
        assert_eq!(updated.metadata.labels, None);
        assert_eq!(updated.metadata.generation, Some(1));
        assert!(rv(&updated.metadata) > rv(&created.metadata));

        let mut stale = created;
        stale.status = Some(typed(json!({"replicas": 1})));
        assert!(api
            .update_status(&post(), &stale)
            .await
            .unwrap_err()
            .is_conflict());
    }

    pub(crate) async fn update_ignores_status_for_kinds_with_a_status_subresource(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut with_status = web_deployment("web");
        with_status.status = Some(typed(json!({"replicas": 7})));
        let created = api.create(&post(), &with_status).await.unwrap();
        assert_eq!(
            created.status.as_ref().unwrap().replicas,
            Some(7),
            "kept on create"
        );
        let mut change = created;
        change.status = Some(typed(json!({"replicas": 1})));
        change.spec.opt_mut().unwrap().replicas = Some(4);
        let updated = api.update(&post(), &change).await.unwrap();
        assert_eq!(updated.status.unwrap().replicas, Some(7));
        assert_eq!(updated.spec.into_opt().unwrap().replicas, Some(4));
    }

    pub(crate) async fn update_status_of_a_kind_without_the_subresource_is_not_found(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let created = api
            .create(&post(), &config_map("c", json!({})))
            .await
            .unwrap();
        let error = api.update_status(&post(), &created).await.unwrap_err();
        assert!(error.is_not_found(), "{error:?}");
        assert!(error.to_string().contains("configmaps/status"), "{error}");
    }

    // -----------------------------------------------------------------------------------------
    // Names, uid, timestamps

    pub(crate) async fn generate_name_produces_unique_names(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut names = BTreeSet::new();
        for _ in 0..50 {
            let object = ConfigMap {
                metadata: ObjectMeta {
                    generate_name: Some("web-".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            };
            let created = api.create(&post(), &object).await.unwrap();
            let name = created.metadata.name.unwrap();
            assert_eq!(name.len(), "web-".len() + 5, "{name}");
            assert!(name[4..]
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
            assert_eq!(created.metadata.generate_name.as_deref(), Some("web-"));
            assert!(names.insert(name));
        }
        assert_eq!(
            api.list(&ListParams::default()).await.unwrap().items.len(),
            50
        );
    }

    pub(crate) async fn uid_and_creation_timestamp_are_set_on_create_and_preserved_on_update(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut forged = config_map("c", json!({}));
        forged.metadata.uid = Some("forged".into());
        forged.metadata.creation_timestamp = Some(typed(json!("2001-01-01T00:00:00Z")));
        let created = api.create(&post(), &forged).await.unwrap();
        let uid = created.metadata.uid.clone().unwrap();
        assert_ne!(uid, "forged");
        assert_eq!(uid.len(), 36);
        let created_at = created.metadata.creation_timestamp.clone().unwrap();
        assert_ne!(created_at, typed(json!("2001-01-01T00:00:00Z")));

        let mut change = created.clone();
        change.metadata.uid = None;
        change.metadata.creation_timestamp = Some(typed(json!("2001-01-01T00:00:00Z")));
        change.data = Some([("x".to_string(), "y".to_string())].into());
        let updated = api.update(&post(), &change).await.unwrap();
        assert_eq!(updated.metadata.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(updated.metadata.creation_timestamp, Some(created_at));
        assert_eq!(updated.metadata.deletion_timestamp, None);

        let other: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let second = other
            .create(&post(), &config_map("d", json!({})))
            .await
            .unwrap();
        assert_ne!(second.metadata.uid.as_deref(), Some(uid.as_str()));
    }

    pub(crate) async fn another_uid_on_update_is_invalid(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut created = api
            .create(&post(), &config_map("c", json!({})))
            .await
            .unwrap();
        created.metadata.uid = Some("6a1c0f5e-0000-4000-8000-000000000000".into());
        let error = api.update(&post(), &created).await.unwrap_err();
        assert_eq!(invalid_fields(error), ["metadata.uid"]);
    }

    // -----------------------------------------------------------------------------------------
    // Deletion

    fn bound_pod(name: &str, node: Option<&str>, grace: Option<i64>) -> Pod {
        typed(json!({
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": grace,
                "containers": [{"name": "app", "image": "nginx"}],
            },
        }))
    }

    fn seconds_between(from: &str, to: &str) -> i64 {
        let parse = |t: &str| {
            t.parse::<capstan_api::k8s_openapi::jiff::Timestamp>()
                .unwrap()
        };
        parse(to).as_second() - parse(from).as_second()
    }

    pub(crate) async fn a_running_pod_is_deleted_gracefully_and_gone_after_the_kubelets_final_delete(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Pod> = Api::namespaced(client(&store), "default");
        api.create(&post(), &bound_pod("unbound", None, None))
            .await
            .unwrap();
        let gone = api
            .delete("unbound", &DeleteParams::default())
            .await
            .unwrap();
        assert!(!gone.is_pending(), "no node runs it: deleted at once");

        let created = api
            .create(&post(), &bound_pod("web", Some("node01"), None))
            .await
            .unwrap();
        let pending = api.delete("web", &DeleteParams::default()).await.unwrap();
        let Deletion::Pending(pending) = pending else {
            panic!("a pod a node runs waits for its grace period");
        };
        assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
        let created_at = created.metadata.creation_timestamp.unwrap().0.to_string();
        let deadline = pending
            .metadata
            .deletion_timestamp
            .clone()
            .unwrap()
            .0
            .to_string();
        assert!(
            (29..=32).contains(&seconds_between(&created_at, &deadline)),
            "{deadline}"
        );

        // The kubelet's status updates during the grace period do not delete it...
        let mut running = api.get("web").await.unwrap();
        running.status = Some(typed(json!({"phase": "Running"})));
        let running = api.update_status(&post(), &running).await.unwrap();
        assert!(running.metadata.deletion_timestamp.is_some());
        // ...a longer grace period does not extend it, a shorter one cuts it...
        let longer = DeleteParams {
            grace_period_seconds: Some(60),
            ..Default::default()
        };
        let again = api.delete("web", &longer).await.unwrap().into_inner();
        assert_eq!(again.metadata.deletion_grace_period_seconds, Some(30));
        let shorter = DeleteParams {
            grace_period_seconds: Some(5),
            ..Default::default()
        };
        let again = api.delete("web", &shorter).await.unwrap().into_inner();
        assert_eq!(again.metadata.deletion_grace_period_seconds, Some(5));
        // ...and the final delete with 0 removes it.
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let gone = api.delete("web", &now).await.unwrap();
        assert!(!gone.is_pending());
        assert!(api.get_opt("web").await.unwrap().is_none());

        let short = api
            .create(&post(), &bound_pod("short", Some("node01"), Some(0)))
            .await
            .unwrap();
        assert!(short.metadata.deletion_timestamp.is_none());
        let gone = api.delete("short", &DeleteParams::default()).await.unwrap();
        assert!(
            !gone.is_pending(),
            "terminationGracePeriodSeconds 0: at once"
        );
    }

    pub(crate) async fn a_graceful_pod_with_a_finalizer_waits_for_both(store: Arc<dyn Store>) {
        let api: Api<Pod> = Api::namespaced(client(&store), "default");
        let mut pod = bound_pod("held", Some("node01"), None);
        pod.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&post(), &pod).await.unwrap();
        api.delete("held", &DeleteParams::default()).await.unwrap();
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let held = api.delete("held", &now).await.unwrap();
        assert!(held.is_pending(), "the finalizer still holds it");
        assert_eq!(
            held.into_inner().metadata.deletion_grace_period_seconds,
            Some(0)
        );
        let mut held = api.get("held").await.unwrap();
        held.metadata.finalizers = None;
        api.update(&post(), &held).await.unwrap();
        assert!(api.get_opt("held").await.unwrap().is_none());

        // Removing the finalizer while the grace period runs does not delete it early.
        let mut pod = bound_pod("early", Some("node01"), None);
        pod.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&post(), &pod).await.unwrap();
        api.delete("early", &DeleteParams::default()).await.unwrap();
        let mut early = api.get("early").await.unwrap();
        early.metadata.finalizers = None;
        let early = api.update(&post(), &early).await.unwrap();
        assert!(early.metadata.deletion_timestamp.is_some());
        assert!(api.get_opt("early").await.unwrap().is_some());
    }

    pub(crate) async fn delete_with_finalizers_sets_deletion_timestamp_and_removing_the_last_finalizer_deletes(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut object = config_map("guarded", json!({}));
        object.metadata.finalizers = Some(vec!["example.com/a".into(), "example.com/b".into()]);
        api.create(&post(), &object).await.unwrap();

        let pending = api
            .delete("guarded", &DeleteParams::default())
            .await
            .unwrap();
        let Deletion::Pending(pending) = pending else {
            panic!("finalizers must keep the object");
        };
        let deleted_at = pending.metadata.deletion_timestamp.clone().unwrap();
        assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));

        let again = api
            .delete("guarded", &DeleteParams::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.metadata.deletion_timestamp, Some(deleted_at.clone()));

        let mut one_left = api.get("guarded").await.unwrap();
        one_left.metadata.finalizers = Some(vec!["example.com/b".into()]);
        one_left.metadata.deletion_timestamp = None;
        let one_left = api.update(&post(), &one_left).await.unwrap();
        assert_eq!(one_left.metadata.deletion_timestamp, Some(deleted_at));

        let last = api
            .patch(
                "guarded",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
        assert_eq!(last.metadata.finalizers, None);
        assert_eq!(
            rv(&last.metadata),
            store.current_revision().await.unwrap(),
            "the returned state is at the delete's revision"
        );
        assert!(api.get_opt("guarded").await.unwrap().is_none());
        assert!(store
            .get("/registry/configmaps/default/guarded")
            .await
            .unwrap()
            .is_none());
    }

    pub(crate) async fn an_object_being_deleted_cannot_gain_finalizers(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut object = config_map("c", json!({}));
        object.metadata.finalizers = Some(vec!["example.com/a".into()]);
        api.create(&post(), &object).await.unwrap();
        api.delete("c", &DeleteParams::default()).await.unwrap();
        let error = api
            .patch(
                "c",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"finalizers": ["example.com/a", "example.com/new"]}}),
                ),
            )
            .await
            .unwrap_err();
        let causes = invalid_causes(error);
        assert_eq!(causes[0].field, "metadata.finalizers");
        assert_eq!(causes[0].kind, FieldErrorKind::Forbidden);
    }

    pub(crate) async fn delete_preconditions_on_uid_and_resource_version_give_conflict(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let created = api
            .create(&post(), &config_map("c", json!({})))
            .await
            .unwrap();
        let with = |uid: Option<&str>, resource_version: Option<&str>| {
            DeleteParams::default().preconditions(Preconditions {
                uid: uid.map(str::to_string),
                resource_version: resource_version.map(str::to_string),
            })
        };
        let error = api
            .delete("c", &with(Some("wrong-uid"), None))
            .await
            .unwrap_err();
        assert!(error.is_conflict());
        assert!(
            error
                .to_string()
                .contains("Precondition failed: UID in precondition: wrong-uid"),
            "{error}"
        );
        let error = api.delete("c", &with(None, Some("1"))).await.unwrap_err();
        assert!(error.is_conflict());
        assert!(
            error
                .to_string()
                .contains("ResourceVersion in precondition: 1"),
            "{error}"
        );
        assert!(api.get_opt("c").await.unwrap().is_some());

        let uid = created.metadata.uid.clone();
        let version = created.metadata.resource_version.clone();
        let deleted = api
            .delete("c", &with(uid.as_deref(), version.as_deref()))
            .await
            .unwrap();
        assert!(!deleted.is_pending());
        assert!(api.get_opt("c").await.unwrap().is_none());
    }

    pub(crate) async fn propagation_policies_add_the_garbage_collector_finalizers(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        api.create(&post(), &web_deployment("orphaned"))
            .await
            .unwrap();
        let orphaned = api
            .delete("orphaned", &DeleteParams::orphan())
            .await
            .unwrap();
        let Deletion::Pending(orphaned) = orphaned else {
            panic!("the orphan finalizer keeps the object for the garbage collector");
        };
        assert_eq!(
            orphaned.metadata.finalizers,
            Some(vec!["orphan".to_string()])
        );
        assert!(orphaned.metadata.deletion_timestamp.is_some());
        assert_eq!(
            orphaned.metadata.generation,
            Some(2),
            "marking as deleting bumps it"
        );

        api.create(&post(), &web_deployment("foreground"))
            .await
            .unwrap();
        let foreground = api
            .delete("foreground", &DeleteParams::foreground())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            foreground.metadata.finalizers,
            Some(vec!["foregroundDeletion".to_string()])
        );

        // Background clears the garbage collector's finalizers, so the object goes.
        let gone = api
            .delete("foreground", &DeleteParams::background())
            .await
            .unwrap();
        assert!(!gone.is_pending());
        api.create(&post(), &web_deployment("plain")).await.unwrap();
        assert!(!api
            .delete("plain", &DeleteParams::background())
            .await
            .unwrap()
            .is_pending());
    }

    pub(crate) async fn delete_returns_the_last_state_at_the_delete_revision(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let created = api
            .create(&post(), &config_map("c", json!({"k": "v"})))
            .await
            .unwrap();
        let Deletion::Deleted(deleted) = api.delete("c", &DeleteParams::default()).await.unwrap()
        else {
            panic!("no finalizers: deleted at once");
        };
        assert_eq!(deleted.data, created.data);
        assert_eq!(
            rv(&deleted.metadata),
            store.current_revision().await.unwrap()
        );
        assert!(rv(&deleted.metadata) > rv(&created.metadata));
        assert!(api
            .delete("c", &DeleteParams::default())
            .await
            .unwrap_err()
            .is_not_found());
    }

    // -----------------------------------------------------------------------------------------
    // Defaults

    pub(crate) async fn deployment_defaults_match_kubernetes(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let object = serde_json::to_value(&created).unwrap();
        let pod = "spec.template.spec";
        let container = "spec.template.spec.containers.0";
        let table: &[(&str, Value)] = &[
            ("spec.replicas", json!(1)),
            ("spec.revisionHistoryLimit", json!(10)),
            ("spec.progressDeadlineSeconds", json!(600)),
            ("spec.strategy.type", json!("RollingUpdate")),
            ("spec.strategy.rollingUpdate.maxSurge", json!("25%")),
            ("spec.strategy.rollingUpdate.maxUnavailable", json!("25%")),
            (&format!("{pod}.restartPolicy"), json!("Always")),
            (&format!("{pod}.dnsPolicy"), json!("ClusterFirst")),
            (&format!("{pod}.schedulerName"), json!("default-scheduler")),
            (&format!("{pod}.terminationGracePeriodSeconds"), json!(30)),
            (&format!("{pod}.securityContext"), json!({})),
            (
                &format!("{container}.terminationMessagePath"),
                json!("/dev/termination-log"),
            ),
            (
                &format!("{container}.terminationMessagePolicy"),
                json!("File"),
            ),
            (
                &format!("{container}.imagePullPolicy"),
                json!("IfNotPresent"),
            ),
            (&format!("{container}.resources"), json!({})),
        ];
        for (path, expected) in table {
            let actual =
                path.split('.')
                    .try_fold(&object, |value, step| match step.parse::<usize>() {
                        Ok(index) => value.get(index),
                        Err(_) => value.get(step),
                    });
            assert_eq!(actual, Some(expected), "{path}");
        }
    }

    pub(crate) async fn pod_template_defaults_match_kubernetes(store: Arc<dyn Store>) {
        let api: Api<Pod> = Api::namespaced(client(&store), "default");
        let pod: Pod = typed(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]},
        }));
        let created = api.create(&post(), &pod).await.unwrap();
        let spec = created.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.enable_service_links, Some(true));
        let app = &spec.containers[0];
        assert_eq!(
            app.image_pull_policy.as_deref(),
            Some("Always"),
            "no tag means latest"
        );
        assert_eq!(
            app.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    }

    // -----------------------------------------------------------------------------------------
    // Services

    fn cluster_ip(service: &Service) -> Option<String> {
        service.spec.as_ref()?.cluster_ip.clone()
    }

    pub(crate) async fn service_cluster_ips_are_unique_freed_on_delete_and_rebuilt_after_a_restart(
        store: Arc<dyn Store>,
    ) {
        let cidr: ServiceCidr = "10.96.0.0/12".parse().unwrap();
        let registry = Arc::new(Registry::new(store.clone()));
        let api: Api<Service> = Api::namespaced(registry.clone(), "default");
        let mut seen = BTreeSet::new();
        for i in 0..20 {
            let created = api
                .create(&post(), &http_service(&format!("svc-{i}")))
                .await
                .unwrap();
            let ip: Ipv4Addr = cluster_ip(&created).unwrap().parse().unwrap();
            assert!(cidr.contains(ip));
            assert_ne!(
                ip,
                cidr.kubernetes_service_ip(),
                "kept for the kubernetes Service"
            );
            let spec = created.spec.unwrap();
            assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
            assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
            assert!(seen.insert(ip), "{ip} handed out twice");
            assert!(store
                .get(format!("/registry/ipaddresses/{ip}"))
                .await
                .unwrap()
                .is_some());
        }

        // Freed on delete: the address can be asked for again.
        let doomed = cluster_ip(&api.get("svc-3").await.unwrap()).unwrap();
        api.delete("svc-3", &DeleteParams::default()).await.unwrap();
        assert!(store
            .get(format!("/registry/ipaddresses/{doomed}"))
            .await
            .unwrap()
            .is_none());
        let reuse = service(
            "reuse",
            json!({"clusterIP": doomed, "ports": [{"port": 80}]}),
        );
        assert_eq!(
            cluster_ip(&api.create(&post(), &reuse).await.unwrap()),
            Some(doomed.clone())
        );

        // A new registry on the same store knows every address in use.
        drop(api);
        drop(registry);
        let restarted: Api<Service> = Api::namespaced(client(&store), "other");
        capstan_apiserver::testing::create_namespace(&**restarted.client(), "other").await;
        for i in 0..20 {
            let created = restarted
                .create(&post(), &http_service(&format!("after-{i}")))
                .await
                .unwrap();
            let ip: Ipv4Addr = cluster_ip(&created).unwrap().parse().unwrap();
            assert!(seen.insert(ip), "{ip} handed out twice after the restart");
            assert_ne!(ip.to_string(), doomed);
        }
        let error = restarted
            .create(
                &post(),
                &service(
                    "clash",
                    json!({"clusterIP": doomed, "ports": [{"port": 80}]}),
                ),
            )
            .await
            .unwrap_err();
        let causes = invalid_causes(error);
        assert_eq!(causes[0].field, "spec.clusterIP");
        assert!(causes[0]
            .detail
            .contains("provided IP is already allocated"));
    }

    pub(crate) async fn a_requested_cluster_ip_is_honoured_once_and_must_be_in_range(
        store: Arc<dyn Store>,
    ) {
        let registry =
            Registry::new(store.clone()).with_service_cidr("10.0.0.0/24".parse().unwrap());
        let api: Api<Service> = Api::namespaced(Arc::new(registry), "default");
        let kubernetes = service(
            "kubernetes",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 443, "name": "https"}]}),
        );
        let created = api.create(&post(), &kubernetes).await.unwrap();
        assert_eq!(cluster_ip(&created).as_deref(), Some("10.0.0.1"));
        let before = store.current_revision().await.unwrap();
        for (name, ip, detail) in [
            ("twin", "10.0.0.1", "provided IP is already allocated"),
            ("far", "10.1.0.1", "is not in the valid range"),
            ("junk", "not-an-ip", "must be a valid IP address"),
        ] {
            let error = api
                .create(
                    &post(),
                    &service(name, json!({"clusterIP": ip, "ports": [{"port": 80}]})),
                )
                .await
                .unwrap_err();
            let causes = invalid_causes(error);
            assert_eq!(causes[0].field, "spec.clusterIP", "{name}");
            assert!(
                causes[0].detail.contains(detail),
                "{name}: {}",
                causes[0].detail
            );
        }
        assert_eq!(store.current_revision().await.unwrap(), before);
    }

    pub(crate) async fn headless_and_external_name_services_hold_no_cluster_ip(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Service> = Api::namespaced(client(&store), "default");
        let headless = api
            .create(
                &post(),
                &service(
                    "db",
                    json!({"clusterIP": "None", "selector": {"app": "db"}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(cluster_ip(&headless).as_deref(), Some("None"));
        let external = api
            .create(
                &post(),
                &service(
                    "ext",
                    json!({"type": "ExternalName", "externalName": "example.com"}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(cluster_ip(&external), None);
        let addresses = store
            .range(capstan_store::Range::prefix("/registry/ipaddresses/"))
            .await
            .unwrap();
        assert_eq!(addresses.kvs.len(), 0);

        // Turning a ClusterIP Service into an ExternalName one frees its address.
        let web = api.create(&post(), &http_service("web")).await.unwrap();
        let ip = cluster_ip(&web).unwrap();
        let external = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"type": "ExternalName", "externalName": "x.example.com", "clusterIP": null, "clusterIPs": null}})),
            )
            .await
            .unwrap();
        assert_eq!(cluster_ip(&external), None);
        assert!(store
            .get(format!("/registry/ipaddresses/{ip}"))
            .await
            .unwrap()
            .is_none());
    }

    pub(crate) async fn a_cluster_ip_is_immutable(store: Arc<dyn Store>) {
        let api: Api<Service> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &http_service("web")).await.unwrap();
        let mut moved = created.clone();
        moved.spec.as_mut().unwrap().cluster_ip = Some("10.96.100.100".into());
        moved.spec.as_mut().unwrap().cluster_ips = None;
        let error = api.update(&post(), &moved).await.unwrap_err();
        assert_eq!(invalid_fields(error), ["spec.clusterIP"]);

        // An update that leaves the address out keeps it.
        let mut omitted = created.clone();
        omitted.spec.as_mut().unwrap().cluster_ip = None;
        omitted.spec.as_mut().unwrap().cluster_ips = None;
        omitted.spec.as_mut().unwrap().selector = Some([("app".into(), "v2".into())].into());
        let updated = api.update(&post(), &omitted).await.unwrap();
        assert_eq!(cluster_ip(&updated), cluster_ip(&created));
    }

    pub(crate) async fn two_registries_on_one_store_never_share_a_cluster_ip(
        store: Arc<dyn Store>,
    ) {
        let first: Api<Service> = Api::namespaced(client(&store), "default");
        let second: Api<Service> = Api::namespaced(client(&store), "default");
        let mut seen = BTreeSet::new();
        for i in 0..10 {
            // Each registry believes the same addresses are free; the store decides.
            for (api, who) in [(&first, "a"), (&second, "b")] {
                let created = api
                    .create(&post(), &http_service(&format!("{who}-{i}")))
                    .await
                    .unwrap();
                let ip = cluster_ip(&created).unwrap();
                assert!(seen.insert(ip.clone()), "{ip} handed out twice");
            }
        }
    }

    pub(crate) async fn addresses_of_services_stored_without_records_stay_taken(
        store: Arc<dyn Store>,
    ) {
        let legacy = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "legacy", "namespace": "default", "uid": "u"},
            "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]},
        });
        store
            .create(
                "/registry/services/specs/default/legacy",
                serde_json::to_vec(&legacy).unwrap(),
            )
            .await
            .unwrap();
        let api: Api<Service> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &http_service("new")).await.unwrap();
        assert_eq!(cluster_ip(&created).as_deref(), Some("10.96.0.3"));
        let clash = service(
            "clash",
            json!({"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}),
        );
        let error = api.create(&post(), &clash).await.unwrap_err();
        assert_eq!(invalid_fields(error), ["spec.clusterIP"]);
    }

    // -----------------------------------------------------------------------------------------
    // Validation: one rule per case, naming the field

    pub(crate) async fn object_names_must_be_dns_subdomains(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        for bad in ["Upper", "under_score", "-leading", "trailing-"] {
            let fields = create_invalid(&api, config_map(bad, json!({}))).await;
            assert_eq!(fields, ["metadata.name"], "{bad}");
        }
        let long = "a".repeat(254);
        assert_eq!(
            create_invalid(&api, config_map(&long, json!({}))).await,
            ["metadata.name"]
        );
        api.create(&post(), &config_map("dotted.name-1", json!({})))
            .await
            .unwrap();
        let slash = api
            .create(&post(), &config_map("a/b", json!({})))
            .await
            .unwrap_err();
        assert_eq!(slash.code(), 400, "a name that would break the key");
    }

    pub(crate) async fn service_and_namespace_names_must_be_dns_labels(store: Arc<dyn Store>) {
        let services: Api<Service> = Api::namespaced(client(&store), "default");
        for bad in ["a.b", "1abc"] {
            let fields = create_invalid(&services, http_service(bad)).await;
            assert_eq!(fields, ["metadata.name"], "{bad}");
        }
        let namespaces: Api<Namespace> = Api::cluster(client(&store));
        let dotted: Namespace = typed(json!({"metadata": {"name": "team.a"}}));
        assert_eq!(create_invalid(&namespaces, dotted).await, ["metadata.name"]);
        let ok: Namespace = typed(json!({"metadata": {"name": "team-a"}}));
        let created = namespaces.create(&post(), &ok).await.unwrap();
        assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    }

    pub(crate) async fn a_name_or_generate_name_is_required(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let error = api
            .create(&post(), &ConfigMap::default())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required"#
        );
    }

    pub(crate) async fn label_keys_and_values_must_be_valid(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        let mut bad_key = config_map("a", json!({}));
        bad_key.metadata.labels = Some([("bad key".to_string(), "v".to_string())].into());
        assert_eq!(create_invalid(&api, bad_key).await, ["metadata.labels"]);
        let mut bad_value = config_map("b", json!({}));
        bad_value.metadata.labels = Some([("k".to_string(), "-v".to_string())].into());
        assert_eq!(create_invalid(&api, bad_value).await, ["metadata.labels"]);
    }

    pub(crate) async fn negative_replicas_are_invalid(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().replicas = Some(-1);
        let error = api.create(&post(), &object).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#
        );
    }

    pub(crate) async fn workloads_need_a_selector(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().selector = Default::default();
        let fields = create_invalid(&api, object).await;
        assert_eq!(fields, ["spec.selector"]);
        let no_selector = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "raw"},
            "spec": {"template": {"metadata": {"labels": {"a": "b"}},
                                   "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        });
        let error = client(&store)
            .create(
                &Deployment::info(),
                Some("default"),
                typed::<DynamicObject>(no_selector),
                &post(),
            )
            .await
            .unwrap_err();
        let causes = invalid_causes(error);
        assert_eq!(causes[0].field, "spec.selector");
        assert_eq!(causes[0].kind, FieldErrorKind::Required);
    }

    pub(crate) async fn the_selector_must_match_the_template_labels(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().selector = typed(json!({"matchLabels": {"app": "other"}}));
        let causes = invalid_causes(api.create(&post(), &object).await.unwrap_err());
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].detail,
            "`selector` does not match template `labels`"
        );
    }

    pub(crate) async fn the_selector_is_immutable(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let spec = created.spec.opt_mut().unwrap();
        spec.selector = typed(json!({"matchLabels": {"app": "web", "v": "2"}}));
        spec.template.metadata.as_mut().unwrap().labels =
            Some([("app".into(), "web".into()), ("v".into(), "2".into())].into());
        let causes = invalid_causes(api.update(&post(), &created).await.unwrap_err());
        assert_eq!(causes[0].field, "spec.selector");
        assert_eq!(causes[0].detail, "field is immutable");
    }

    pub(crate) async fn a_pod_needs_a_container(store: Arc<dyn Store>) {
        let api: Api<Pod> = Api::namespaced(client(&store), "default");
        let pod: Pod = typed(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(create_invalid(&api, pod).await, ["spec.containers"]);
    }

    pub(crate) async fn container_names_must_be_unique_labels(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().template.spec = Some(typed(json!({"containers": [
            {"name": "app", "image": "a"},
            {"name": "app", "image": "b"},
            {"name": "Bad_Name", "image": "c"},
        ]})));
        let causes = invalid_causes(api.create(&post(), &object).await.unwrap_err());
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.containers[1].name",
                "spec.template.spec.containers[2].name"
            ]
        );
        assert_eq!(
            causes[0].kind,
            FieldErrorKind::Duplicate {
                value: "\"app\"".into()
            }
        );
    }

    pub(crate) async fn containers_need_an_image(store: Arc<dyn Store>) {
        let api: Api<Pod> = Api::namespaced(client(&store), "default");
        let pod: Pod = typed(json!({"metadata": {"name": "p"},
                                    "spec": {"containers": [{"name": "app"}]}}));
        assert_eq!(
            create_invalid(&api, pod).await,
            ["spec.containers[0].image"]
        );
    }

    pub(crate) async fn service_ports_must_be_in_range(store: Arc<dyn Store>) {
        let api: Api<Service> = Api::namespaced(client(&store), "default");
        let object = service(
            "web",
            json!({"ports": [{"port": 0}, {"port": 70000, "name": "b"}]}),
        );
        let fields = create_invalid(&api, object).await;
        // The target ports default to the ports, and are out of range with them.
        assert_eq!(
            fields,
            [
                "spec.ports[0].name",
                "spec.ports[0].port",
                "spec.ports[0].targetPort",
                "spec.ports[1].port",
                "spec.ports[1].targetPort"
            ]
        );
    }

    pub(crate) async fn service_port_names_must_be_unique(store: Arc<dyn Store>) {
        let api: Api<Service> = Api::namespaced(client(&store), "default");
        let object = service(
            "web",
            json!({"ports": [{"port": 80, "name": "http"}, {"port": 8080, "name": "http"}]}),
        );
        assert_eq!(create_invalid(&api, object).await, ["spec.ports[1].name"]);
    }

    pub(crate) async fn max_surge_and_max_unavailable_may_not_both_be_zero(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().strategy = Some(typed(json!({
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"},
        })));
        let causes = invalid_causes(api.create(&post(), &object).await.unwrap_err());
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].field,
            "spec.strategy.rollingUpdate.maxUnavailable"
        );
    }

    pub(crate) async fn a_job_template_needs_a_restart_policy_other_than_always(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Job> = Api::namespaced(client(&store), "default");
        let job = |policy: Value| -> Job {
            typed(
                json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                    "restartPolicy": policy, "containers": [{"name": "c", "image": "busybox"}],
                }}}}),
            )
        };
        assert_eq!(
            create_invalid(&api, job(Value::Null)).await,
            ["spec.template.spec.restartPolicy"]
        );
        assert_eq!(
            create_invalid(&api, job(json!("Always"))).await,
            ["spec.template.spec.restartPolicy"]
        );
        let created = api.create(&post(), &job(json!("Never"))).await.unwrap();
        assert_eq!(created.spec.unwrap().backoff_limit, Some(6));
    }

    pub(crate) async fn malformed_bodies_are_bad_requests(store: Arc<dyn Store>) {
        let client = client(&store);
        let config_maps = ConfigMap::info();
        let raw = |value: Value| -> DynamicObject {
            let mut object: DynamicObject = typed(json!({"metadata": {"name": "c"}}));
            object.data = value;
            object
        };
        let cases: Vec<(&str, DynamicObject, Option<&str>)> = vec![
            (
                "a body that is not an object",
                raw(json!("text")),
                Some("default"),
            ),
            (
                "another apiVersion",
                typed(json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "c"}})),
                Some("default"),
            ),
            (
                "another kind",
                typed(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}})),
                Some("default"),
            ),
            (
                "a namespace that is not the request's",
                typed(json!({"metadata": {"name": "c", "namespace": "other"}})),
                Some("default"),
            ),
            (
                "no namespace for a namespaced kind",
                typed(json!({"metadata": {"name": "c"}})),
                None,
            ),
            (
                "a resourceVersion on create",
                typed(json!({"metadata": {"name": "c", "resourceVersion": "5"}})),
                Some("default"),
            ),
        ];
        for (what, object, namespace) in cases {
            let error = client
                .create(&config_maps, namespace, object, &post())
                .await
                .unwrap_err();
            assert_eq!(error.code(), 400, "{what}: {error:?}");
        }
        let node: DynamicObject = typed(json!({"metadata": {"name": "n1"}}));
        let error = client
            .create(&Node::info(), Some("default"), node, &post())
            .await
            .unwrap_err();
        assert_eq!(error.code(), 400, "a namespace for a cluster-scoped kind");
    }

    // -----------------------------------------------------------------------------------------
    // Admission

    pub(crate) async fn a_user_admission_step_can_mutate(store: Arc<dyn Store>) {
        let registry = Registry::new(store.clone()).add_admission(admission::mutating(
            "inject-team",
            |request, object| {
                if request.operation == Operation::Create {
                    object["metadata"]["labels"]["team"] = "payments".into();
                }
                Ok(())
            },
        ));
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(registry), "default");
        let created = api
            .create(&post(), &config_map("c", json!({})))
            .await
            .unwrap();
        assert_eq!(
            created
                .metadata
                .labels
                .unwrap()
                .get("team")
                .map(String::as_str),
            Some("payments")
        );
    }

    pub(crate) async fn a_user_admission_step_can_reject(store: Arc<dyn Store>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let registry = Registry::new(store.clone()).add_admission(admission::validating(
            "no-latest",
            move |request, object| {
                counter.fetch_add(1, Ordering::SeqCst);
                let images = object["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if images
                    .iter()
                    .any(|c| c["image"].as_str().is_some_and(|i| i.ends_with(":latest")))
                {
                    return Err(Error::Forbidden {
                        message: format!("{} may not run :latest images", request.name),
                    });
                }
                Ok(())
            },
        ));
        let api: Api<Deployment> = Api::namespaced(Arc::new(registry), "default");
        let mut latest = web_deployment("web");
        latest
            .spec
            .opt_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx:latest".into());
        let error = api.create(&post(), &latest).await.unwrap_err();
        assert_eq!(
            error,
            Error::Forbidden {
                message: "web may not run :latest images".into()
            }
        );
        assert!(store
            .get("/registry/deployments/default/web")
            .await
            .unwrap()
            .is_none());
        api.create(&post(), &web_deployment("web")).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    pub(crate) async fn every_rejected_request_leaves_the_store_unchanged(store: Arc<dyn Store>) {
        // Five addresses in all: a leaked reservation would show as a full range below.
        let registry = Registry::new(store.clone())
            .with_service_cidr("10.0.0.0/29".parse().unwrap())
            .add_admission(admission::validating(
                "deny-forbidden-label",
                |_, object| match object["metadata"]["labels"]["deny"].as_str() {
                    Some(_) => Err(Error::Forbidden {
                        message: "denied".into(),
                    }),
                    None => Ok(()),
                },
            ));
        let client: Arc<dyn Client> = Arc::new(registry);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let existing = deployments
            .create(&post(), &web_deployment("existing"))
            .await
            .unwrap();
        services
            .create(&post(), &http_service("existing"))
            .await
            .unwrap();

        let mut denied = web_deployment("denied");
        denied.metadata.labels = Some([("deny".to_string(), "x".to_string())].into());
        let mut negative = web_deployment("negative");
        negative.spec.opt_mut().unwrap().replicas = Some(-3);
        let mut bad_service = http_service("bad-service");
        bad_service.spec.as_mut().unwrap().ports = Some(vec![typed(json!({"port": 0}))]);
        let mut denied_service = http_service("denied-service");
        denied_service.metadata.labels = Some([("deny".to_string(), "x".to_string())].into());
        let mut stale = existing.clone();
        stale.metadata.resource_version = Some("1".into());
        stale.spec.opt_mut().unwrap().replicas = Some(7);
        let mut deny_update = existing.clone();
        deny_update.metadata.labels = Some([("deny".to_string(), "x".to_string())].into());

        let before = store.current_revision().await.unwrap();
        let addresses_before = store
            .range(capstan_store::Range::prefix("/registry/ipaddresses/"))
            .await
            .unwrap()
            .kvs;
        let rejections: Vec<(&str, Error)> = vec![
            (
                "admission",
                deployments.create(&post(), &denied).await.unwrap_err(),
            ),
            (
                "validation",
                deployments.create(&post(), &negative).await.unwrap_err(),
            ),
            (
                "invalid service",
                services.create(&post(), &bad_service).await.unwrap_err(),
            ),
            (
                "denied service",
                services.create(&post(), &denied_service).await.unwrap_err(),
            ),
            (
                "duplicate",
                deployments
                    .create(&post(), &web_deployment("existing"))
                    .await
                    .unwrap_err(),
            ),
            (
                "stale update",
                deployments.update(&post(), &stale).await.unwrap_err(),
            ),
            (
                "denied update",
                deployments.update(&post(), &deny_update).await.unwrap_err(),
            ),
            (
                "invalid patch",
                deployments
                    .patch(
                        "existing",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": -1}})),
                    )
                    .await
                    .unwrap_err(),
            ),
            (
                "malformed patch",
                deployments
                    .patch(
                        "existing",
                        &PatchParams::default(),
                        &Patch::Merge(json!(["x"])),
                    )
                    .await
                    .unwrap_err(),
            ),
            (
                "failed precondition",
                deployments
                    .delete(
                        "existing",
                        &DeleteParams::default().preconditions(Preconditions {
                            uid: Some("nope".into()),
                            resource_version: None,
                        }),
                    )
                    .await
                    .unwrap_err(),
            ),
        ];
        for (what, error) in &rejections {
            assert!(error.code() >= 400, "{what}");
        }
        assert_eq!(store.current_revision().await.unwrap(), before);
        for name in ["denied", "negative"] {
            let key = format!("/registry/deployments/default/{name}");
            assert!(store.get(key).await.unwrap().is_none(), "{name}");
        }
        for name in ["bad-service", "denied-service"] {
            let key = format!("/registry/services/specs/default/{name}");
            assert!(store.get(key).await.unwrap().is_none(), "{name}");
        }
        let addresses_after = store
            .range(capstan_store::Range::prefix("/registry/ipaddresses/"))
            .await
            .unwrap()
            .kvs;
        assert_eq!(addresses_after, addresses_before);
        // And the addresses the rejected Services were about to get are free again.
        for i in 0..4 {
            services
                .create(&post(), &http_service(&format!("next-{i}")))
                .await
                .unwrap();
        }
        let full = services
            .create(&post(), &http_service("one-too-many"))
            .await
            .unwrap_err();
        assert!(full.to_string().contains("is full"), "{full}");
    }

    pub(crate) async fn a_dry_run_stores_nothing(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let before = store.current_revision().await.unwrap();
        let would_be = api.create(&dry, &web_deployment("web")).await.unwrap();
        assert_eq!(would_be.spec.into_opt().unwrap().replicas, Some(1));
        assert!(would_be.metadata.uid.is_some());
        assert_eq!(store.current_revision().await.unwrap(), before);
        assert!(api.get_opt("web").await.unwrap().is_none());
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let before = store.current_revision().await.unwrap();
        api.delete("web", &DeleteParams::default().dry_run())
            .await
            .unwrap();
        api.patch(
            "web",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
        assert_eq!(store.current_revision().await.unwrap(), before);
        assert_eq!(
            api.get("web").await.unwrap().metadata.resource_version,
            created.metadata.resource_version
        );
    }

    // -----------------------------------------------------------------------------------------
    // list

    pub(crate) async fn list_with_label_and_field_selectors_and_paging_returns_every_match_once(
        store: Arc<dyn Store>,
    ) {
        let client = client(&store);
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        for i in 0..30 {
            let pod: Pod = typed(json!({
                "metadata": {"name": format!("pod-{i:02}"),
                             "labels": {"app": if i % 3 == 0 { "web" } else { "db" }}},
                "spec": {"containers": [{"name": "c", "image": "i"}],
                         "nodeName": if i % 2 == 0 { "n1" } else { "n2" }},
            }));
            api.create(&post(), &pod).await.unwrap();
        }
        let expected: BTreeSet<String> = (0..30)
            .filter(|i| i % 3 == 0 && i % 2 == 0)
            .map(|i| format!("pod-{i:02}"))
            .collect();
        for limit in [1, 2, 3, 7, 100] {
            let mut params = ListParams {
                label_selector: Some("app=web".into()),
                field_selector: Some("spec.nodeName=n1".into()),
                limit: Some(limit),
                ..ListParams::default()
            };
            let mut names = Vec::new();
            let mut snapshot = None;
            loop {
                let page = api.list(&params).await.unwrap();
                assert!(page.items.len() <= limit as usize);
                snapshot.get_or_insert(page.metadata.resource_version.clone());
                assert_eq!(page.metadata.resource_version, *snapshot.as_ref().unwrap());
                names.extend(page.items.into_iter().map(|p| p.metadata.name.unwrap()));
                match page.metadata.continue_ {
                    Some(token) => params.continue_token = Some(token),
                    None => break,
                }
            }
            let unique: BTreeSet<String> = names.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                names.len(),
                "limit {limit}: duplicates {names:?}"
            );
            assert_eq!(unique, expected, "limit {limit}");
        }

        // Without selectors, pages carry the remaining count.
        let page = api.list(&ListParams::default().limit(10)).await.unwrap();
        assert_eq!(page.items.len(), 10);
        assert_eq!(page.metadata.remaining_item_count, Some(20));
        let whole = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(whole.items.len(), 30);
        assert_eq!(whole.metadata.continue_, None);
        assert_eq!(whole.types.kind, "PodList");
        assert_eq!(
            whole.metadata.resource_version,
            Some(store.current_revision().await.unwrap().to_string())
        );
        let unknown_field = api
            .list(&ListParams::default().fields("spec.replicas=1"))
            .await
            .unwrap_err();
        assert_eq!(unknown_field.code(), 400);
    }

    pub(crate) async fn list_across_namespaces_and_of_cluster_scoped_kinds(store: Arc<dyn Store>) {
        let client = client(&store);
        for namespace in ["a", "b"] {
            capstan_apiserver::testing::create_namespace(&*client, namespace).await;
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api.create(&post(), &config_map("c", json!({})))
                .await
                .unwrap();
        }
        let all: Api<ConfigMap> = Api::all(client.clone());
        let items = all.list(&ListParams::default()).await.unwrap().items;
        let namespaces: Vec<_> = items
            .iter()
            .map(|c| c.metadata.namespace.clone().unwrap())
            .collect();
        assert_eq!(namespaces, ["a", "b"]);
        let only_b = all
            .list(&ListParams::default().fields("metadata.namespace=b"))
            .await
            .unwrap();
        assert_eq!(only_b.items.len(), 1);
        let in_a: Api<ConfigMap> = Api::namespaced(client.clone(), "a");
        assert_eq!(
            in_a.list(&ListParams::default()).await.unwrap().items.len(),
            1
        );

        let nodes: Api<Node> = Api::cluster(client.clone());
        nodes
            .create(&post(), &typed(json!({"metadata": {"name": "n1"}})))
            .await
            .unwrap();
        let listed = nodes.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        let error = client
            .list(&Node::info(), Some("default"), &ListParams::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), 400);
    }

    pub(crate) async fn list_at_an_exact_resource_version_reads_the_past(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        api.create(&post(), &config_map("a", json!({})))
            .await
            .unwrap();
        let then = store.current_revision().await.unwrap();
        api.create(&post(), &config_map("b", json!({})))
            .await
            .unwrap();
        let exact = |revision: i64| ListParams {
            resource_version: Some(revision.to_string()),
            version_match: Some(VersionMatch::Exact),
            ..ListParams::default()
        };
        let past = api.list(&exact(then)).await.unwrap();
        assert_eq!(past.items.len(), 1);
        assert_eq!(past.metadata.resource_version, Some(then.to_string()));
        let at_least = api
            .list(&ListParams {
                resource_version: Some(then.to_string()),
                ..ListParams::default()
            })
            .await
            .unwrap();
        assert_eq!(at_least.items.len(), 2);

        let now = store.current_revision().await.unwrap();
        let future = api
            .list(&ListParams {
                resource_version: Some((now + 10).to_string()),
                ..ListParams::default()
            })
            .await
            .unwrap_err();
        assert_eq!(future.code(), 504);

        api.delete("a", &DeleteParams::default()).await.unwrap();
        store
            .compact(store.current_revision().await.unwrap())
            .await
            .unwrap();
        let gone = api.list(&exact(then)).await.unwrap_err();
        assert!(matches!(gone, Error::Gone { .. }), "{gone:?}");
        assert_eq!(gone.code(), 410);
    }

    pub(crate) async fn an_expired_continue_token_gives_410_expired_after_compaction(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        for i in 0..5 {
            api.create(&post(), &config_map(&format!("c{i}"), json!({})))
                .await
                .unwrap();
        }
        let first = api.list(&ListParams::default().limit(2)).await.unwrap();
        let token = first.metadata.continue_.clone().unwrap();
        // Writes after the snapshot do not show in the next page.
        api.create(&post(), &config_map("c9", json!({})))
            .await
            .unwrap();
        let second = api
            .list(&ListParams::default().limit(10).continue_token(&token))
            .await
            .unwrap();
        let names: Vec<_> = second
            .items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["c2", "c3", "c4"]);

        api.delete("c9", &DeleteParams::default()).await.unwrap();
        store
            .compact(store.current_revision().await.unwrap())
            .await
            .unwrap();
        let error = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Expired { .. }), "{error:?}");
        assert_eq!(error.code(), 410);
        assert!(error
            .to_string()
            .starts_with("The provided continue parameter is too old"));
    }

    pub(crate) async fn malformed_list_requests_are_bad_requests(store: Arc<dyn Store>) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        for params in [
            ListParams::default().labels("app in (a"),
            ListParams::default().fields("metadata.name"),
            ListParams::default().continue_token("garbage!"),
            ListParams {
                resource_version: Some("abc".into()),
                ..ListParams::default()
            },
            ListParams {
                resource_version: Some("0".into()),
                version_match: Some(VersionMatch::Exact),
                ..ListParams::default()
            },
        ] {
            let error = api.list(&params).await.unwrap_err();
            assert_eq!(error.code(), 400, "{params:?}: {error}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // patch

    pub(crate) async fn merge_patch_of_a_deployment(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let scaled = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"replicas": 3}, "metadata": {"labels": {"tier": "front"}}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(scaled.spec.opt().unwrap().replicas, Some(3));
        assert_eq!(scaled.metadata.generation, Some(2));
        assert_eq!(scaled.metadata.uid, created.metadata.uid);
        // A merge patch replaces lists whole.
        let replaced = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "other", "image": "busybox"}]}}}})),
            )
            .await
            .unwrap();
        let containers = replaced
            .spec
            .into_opt()
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers;
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].name, "other");
        assert_eq!(
            containers[0].termination_message_path.as_deref(),
            Some("/dev/termination-log"),
            "defaults apply to the patched object"
        );
    }

    pub(crate) async fn unknown_fields_are_never_stored_and_a_strict_patch_with_them_changes_nothing(
        store: Arc<dyn Store>,
    ) {
        let client = client(&store);
        let info = Deployment::info();
        let mut body = serde_json::to_value(web_deployment("web")).unwrap();
        body["spec"]["replicaz"] = json!(3);
        body["spec"]["template"]["spec"]["containers"][0]["imagePullPolic"] = json!("Always");
        body["extra"] = json!(true);
        let object: DynamicObject = serde_json::from_value(body).unwrap();
        let created = client
            .create(&info, Some("default"), object, &post())
            .await
            .unwrap();
        let stored = serde_json::to_value(&created).unwrap();
        assert!(stored.get("extra").is_none(), "{stored}");
        assert!(stored["spec"].get("replicaz").is_none(), "{stored}");
        assert!(stored["spec"]["template"]["spec"]["containers"][0]
            .get("imagePullPolic")
            .is_none());
        assert_eq!(
            stored["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.27"
        );

        let strict = PatchParams::default().validation_strict();
        for patch in [
            Patch::Merge(json!({"spec": {"replicaz": 5, "replicas": 5}})),
            Patch::Strategic(json!({"spec": {"replicaz": 5, "replicas": 5}})),
        ] {
            let error = client
                .patch(&info, Some("default"), "web", &patch, &strict)
                .await
                .unwrap_err();
            match &error {
                Error::BadRequest { message, .. } => assert!(
                    message.ends_with(r#"strict decoding error: unknown field "spec.replicaz""#),
                    "{message}"
                ),
                other => panic!("expected BadRequest, got {other:?}"),
            }
        }
        let unchanged = client.get(&info, Some("default"), "web").await.unwrap();
        assert_eq!(
            unchanged.metadata.resource_version,
            created.metadata.resource_version
        );

        // Without Strict the unknown field is dropped and the known one applied.
        let patched = client
            .patch(
                &info,
                Some("default"),
                "web",
                &Patch::Merge(json!({"spec": {"replicaz": 5, "replicas": 5}})),
                &PatchParams::default(),
            )
            .await
            .unwrap();
        let patched = serde_json::to_value(&patched).unwrap();
        assert_eq!(patched["spec"]["replicas"], 5);
        assert!(patched["spec"].get("replicaz").is_none());
    }

    pub(crate) async fn delete_collection_pages_through_every_match_and_leaves_pending_ones_pending(
        store: Arc<dyn Store>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client(&store), "default");
        for i in 0..5 {
            let mut cm = config_map(&format!("cm-{i}"), json!({}));
            cm.metadata.labels = Some([("batch".to_string(), "x".to_string())].into());
            if i == 0 {
                cm.metadata.finalizers = Some(vec!["example.com/hold".into()]);
            }
            api.create(&post(), &cm).await.unwrap();
        }
        api.create(&post(), &config_map("keep", json!({})))
            .await
            .unwrap();
        let deleted = api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("batch=x").limit(2),
            )
            .await
            .unwrap();
        assert_eq!(deleted.items.len(), 5, "every page was deleted");
        let left: Vec<_> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|cm| {
                (
                    cm.metadata.name.unwrap(),
                    cm.metadata.deletion_timestamp.is_some(),
                )
            })
            .collect();
        assert_eq!(
            left,
            [("cm-0".to_string(), true), ("keep".to_string(), false)],
            "the held one waits for its finalizer"
        );
    }

    pub(crate) async fn strategic_merge_patch_of_a_deployment(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let mut object = web_deployment("web");
        object.spec.opt_mut().unwrap().template.spec = Some(typed(json!({"containers": [
            {"name": "app", "image": "nginx:1.27", "env": [{"name": "MODE", "value": "a"}]},
            {"name": "sidecar", "image": "envoy:1"},
        ]})));
        api.create(&post(), &object).await.unwrap();
        let scaled = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"replicas": 3}})),
            )
            .await
            .unwrap();
        assert_eq!(scaled.spec.into_opt().unwrap().replicas, Some(3));

        let image = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "nginx:1.28"},
                ]}}}})),
            )
            .await
            .unwrap();
        let containers = image
            .spec
            .into_opt()
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers;
        assert_eq!(containers.len(), 2, "merged by name, not replaced");
        assert_eq!(containers[0].image.as_deref(), Some("nginx:1.28"));
        assert_eq!(containers[0].env.as_ref().unwrap()[0].name, "MODE");
        assert_eq!(containers[1].name, "sidecar");

        let removed = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "sidecar", "$patch": "delete"},
                ]}}}})),
            )
            .await
            .unwrap();
        let containers = removed
            .spec
            .into_opt()
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers;
        let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app"]);
        assert_eq!(removed.metadata.generation, Some(4));
    }

    pub(crate) async fn a_patch_with_a_stale_resource_version_is_a_conflict(store: Arc<dyn Store>) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
        let stale = json!({"metadata": {"resourceVersion": created.metadata.resource_version},
                           "spec": {"replicas": 5}});
        let error = api
            .patch("web", &PatchParams::default(), &Patch::Strategic(stale))
            .await
            .unwrap_err();
        assert!(error.is_conflict(), "{error:?}");
        assert_eq!(
            api.get("web")
                .await
                .unwrap()
                .spec
                .into_opt()
                .unwrap()
                .replicas,
            Some(2)
        );
        assert!(api
            .patch("ghost", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err()
            .is_not_found());
    }

    pub(crate) async fn json_patches_apply_in_order_and_a_failing_operation_changes_nothing(
        store: Arc<dyn Store>,
    ) {
        let api: Api<Deployment> = Api::namespaced(client(&store), "default");
        let created = api.create(&post(), &web_deployment("web")).await.unwrap();
        let ops =
            |value: Value| -> Patch<Value> { Patch::Json(serde_json::from_value(value).unwrap()) };
        let patched = api
            .patch(
                "web",
                &PatchParams::default(),
                &ops(json!([
                    {"op": "replace", "path": "/spec/replicas", "value": 4},
                    {"op": "add", "path": "/metadata/labels", "value": {"tier": "front"}},
                    {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.28"},
                ])),
            )
            .await
            .unwrap();
        let spec = patched.spec.clone().into_opt().unwrap();
        assert_eq!(spec.replicas, Some(4));
        assert_eq!(
            spec.template.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx:1.28")
        );
        assert_eq!(patched.metadata.labels.unwrap()["tier"], "front");

        // A `test` that does not hold fails the whole patch: 422, nothing written.
        let stale = created.metadata.resource_version.clone().unwrap();
        let error = api
            .patch(
                "web",
                &PatchParams::default(),
                &ops(json!([
                    {"op": "replace", "path": "/spec/replicas", "value": 9},
                    {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
                ])),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), 422, "{error:?}");
        let missing = api
            .patch(
                "web",
                &PatchParams::default(),
                &ops(json!([{"op": "remove", "path": "/spec/nothing"}])),
            )
            .await
            .unwrap_err();
        assert_eq!(missing.code(), 422, "{missing:?}");
        let unchanged = api.get("web").await.unwrap();
        assert_eq!(unchanged.spec.into_opt().unwrap().replicas, Some(4));
        assert_eq!(
            unchanged.metadata.resource_version,
            patched.metadata.resource_version
        );
    }

    pub(crate) async fn unsupported_patches_are_rejected(store: Arc<dyn Store>) {
        let client = client(&store);
        let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        api.create(&post(), &web_deployment("web")).await.unwrap();
        let apply = api
            .patch(
                "web",
                &PatchParams::apply("me"),
                &Patch::Apply(json!({"spec": {"replicas": 2}})),
            )
            .await
            .unwrap_err();
        // Server-side apply needs the configuration's apiVersion and kind.
        assert_eq!(apply.code(), 400);
        let not_an_object = api
            .patch("web", &PatchParams::default(), &Patch::Strategic(json!(3)))
            .await
            .unwrap_err();
        assert_eq!(not_an_object.code(), 400);
        let bad_directive = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"$patch": "explode"}})),
            )
            .await
            .unwrap_err();
        assert_eq!(bad_directive.code(), 400);
    }

    // -----------------------------------------------------------------------------------------
    // Custom kinds, unknown kinds, watch

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Widget {
        metadata: ObjectMeta,
        spec: WidgetSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<WidgetStatus>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct WidgetSpec {
        size: u32,
        #[serde(default)]
        colors: Vec<String>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct WidgetStatus {
        ready: bool,
    }

    capstan_api::resource!(
        Widget,
        group = "example.com",
        version = "v1",
        kind = "Widget",
        plural = "widgets",
        scope = Namespaced
    );

    pub(crate) async fn a_custom_kind_works_end_to_end(store: Arc<dyn Store>) {
        let registry = Arc::new(Registry::new(store.clone()));
        let widgets: Api<Widget> = Api::namespaced(registry.clone(), "default");
        let unregistered = widgets
            .create(&post(), &Widget::default())
            .await
            .unwrap_err();
        assert!(unregistered.is_not_found());

        let state = registry.register(Widget::info());
        assert!(!state.is_builtin());
        let widget = Widget {
            metadata: ObjectMeta {
                name: Some("w1".into()),
                ..ObjectMeta::default()
            },
            spec: WidgetSpec {
                size: 3,
                colors: vec!["red".into()],
            },
            status: None,
        };
        let created = widgets.create(&post(), &widget).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        assert!(store
            .get("/registry/example.com/widgets/default/w1")
            .await
            .unwrap()
            .is_some());
        let raw = registry
            .get(&Widget::info(), Some("default"), "w1")
            .await
            .unwrap();
        let types = raw.types.unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("example.com/v1", "Widget")
        );

        let patched = widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 5}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.spec.size, 5);
        assert_eq!(patched.spec.colors, ["red"]);
        assert_eq!(patched.metadata.generation, Some(2));

        let strategic = widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 6}})),
            )
            .await
            .unwrap_err();
        assert_eq!(strategic.code(), 415);

        let mut ready = patched.clone();
        ready.status = Some(WidgetStatus { ready: true });
        let ready = widgets.update_status(&post(), &ready).await.unwrap();
        assert_eq!(ready.status, Some(WidgetStatus { ready: true }));
        assert_eq!(ready.metadata.generation, Some(2));

        let listed = widgets.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items, vec![ready.clone()]);
        let invalid = widgets
            .create(
                &post(),
                &Widget {
                    metadata: ObjectMeta {
                        name: Some("Bad".into()),
                        ..ObjectMeta::default()
                    },
                    ..Widget::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_fields(invalid), ["metadata.name"]);
        let deleted = widgets
            .delete("w1", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(deleted.into_inner().spec.size, 5);
        assert!(widgets.get_opt("w1").await.unwrap().is_none());
    }

    pub(crate) async fn unknown_kinds_are_not_found(store: Arc<dyn Store>) {
        let client = client(&store);
        let gadgets = ResourceInfo::new("example.com", "v1", "Gadget", "gadgets", true);
        let error = client
            .list(&gadgets, Some("default"), &ListParams::default())
            .await
            .unwrap_err();
        assert_eq!(
            error,
            Error::NotFound {
                resource: "gadgets.example.com".into(),
                name: String::new()
            }
        );
        let old_version = ResourceInfo::new("apps", "v1beta1", "Deployment", "deployments", true);
        assert!(client
            .get(&old_version, Some("default"), "web")
            .await
            .unwrap_err()
            .is_not_found());
    }

    struct OneEvent;

    #[async_trait]
    impl WatchSource for OneEvent {
        async fn watch(
            &self,
            namespace: Option<&str>,
            _params: &WatchParams,
            resource_version: &str,
        ) -> capstan_api::Result<WatchStream> {
            let object: DynamicObject = typed(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": resource_version, "namespace": namespace},
            }));
            Ok(futures::stream::iter([Ok(WatchEvent::Added(object))]).boxed())
        }
    }

    pub(crate) async fn watch_is_served_by_an_attached_watch_source(store: Arc<dyn Store>) {
        let registry = Arc::new(Registry::new(store));
        let api: Api<ConfigMap> = Api::namespaced(registry.clone(), "default");
        // Every kind starts with its watch cache attached...
        assert!(api.watch(&WatchParams::default(), "0").await.is_ok());
        // ...and another source can replace it.
        registry
            .resource_state(&ConfigMap::info())
            .unwrap()
            .attach_watch(Arc::new(OneEvent));
        let mut events = api.watch(&WatchParams::default(), "42").await.unwrap();
        let Some(Ok(WatchEvent::Added(object))) = events.next().await else {
            panic!("expected one Added event");
        };
        assert_eq!(object.metadata.name.as_deref(), Some("42"));
        assert_eq!(object.metadata.namespace.as_deref(), Some("default"));
    }
}
