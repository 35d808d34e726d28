//! Unit tests of the rules the registry owns, whatever the admission chain.

use capstan_api::kube_core::params::{DeleteParams, Preconditions, PropagationPolicy};
use capstan_store::memory::MemoryStore;
use serde_json::json;

use super::create::prepare_create;
use super::delete::{check_preconditions, finalizers_for};
use super::rules::pin_namespace;
use super::update::{check_identity, prepare_update, tracked_content_changed};
use super::*;
use crate::registry::test_support::{within, LIMIT};

fn state(group: &str, kind: &str) -> ResourceState {
    ResourceState::new(ResourceInfo::builtin(group, kind).unwrap())
}

fn widget() -> ResourceState {
    ResourceState::new(ResourceInfo::new(
        "example.com",
        "v1",
        "Widget",
        "widgets",
        true,
    ))
}

#[test]
fn propagation_policies_set_the_garbage_collector_finalizers() {
    let object = json!({"metadata": {"finalizers": ["example.com/keep", "orphan"]}});
    let with = |policy: Option<PropagationPolicy>| finalizers_for(policy.as_ref(), &object);
    assert_eq!(with(None), ["example.com/keep", "orphan"]);
    assert_eq!(
        with(Some(PropagationPolicy::Foreground)),
        ["example.com/keep", "foregroundDeletion"]
    );
    assert_eq!(
        with(Some(PropagationPolicy::Orphan)),
        ["example.com/keep", "orphan"]
    );
    assert_eq!(
        with(Some(PropagationPolicy::Background)),
        ["example.com/keep"]
    );
}

#[test]
fn generation_tracks_everything_but_metadata_and_a_status_subresource() {
    let deployments = ResourceInfo::builtin("apps", "Deployment").unwrap();
    let before = json!({"metadata": {"labels": {}}, "spec": {"replicas": 1}, "status": {"a": 1}});
    let relabelled = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"replicas": 1}});
    assert!(!tracked_content_changed(&deployments, &before, &relabelled));
    let scaled = json!({"metadata": {}, "spec": {"replicas": 2}, "status": {"a": 1}});
    assert!(tracked_content_changed(&deployments, &before, &scaled));

    let config_maps = ResourceInfo::builtin("", "ConfigMap").unwrap();
    let data = json!({"metadata": {}, "data": {"a": "1"}});
    let changed = json!({"metadata": {}, "data": {"a": "2"}});
    assert!(tracked_content_changed(&config_maps, &data, &changed));
}

#[test]
fn a_create_owns_uid_timestamps_generation_and_the_deletion_fields() {
    let mut object = json!({"metadata": {
        "name": "web", "uid": "forged", "generation": 9, "resourceVersion": "3",
        "deletionTimestamp": "2001-01-01T00:00:00Z", "deletionGracePeriodSeconds": 5,
    }, "spec": {}});
    prepare_create(&state("apps", "Deployment"), &mut object);
    let metadata = object::metadata(&object).unwrap();
    assert_ne!(metadata["uid"], "forged");
    assert_eq!(metadata["generation"], 1);
    assert!(metadata.get("creationTimestamp").is_some());
    for gone in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        assert!(metadata.get(gone).is_none(), "{gone}");
    }

    let mut config = json!({"metadata": {"name": "c", "generation": 4}, "data": {}});
    prepare_create(&state("", "ConfigMap"), &mut config);
    assert!(
        object::generation(&config).is_none(),
        "no spec, no generation"
    );
    let mut custom = json!({"metadata": {"name": "w"}, "size": 1});
    prepare_create(&widget(), &mut custom);
    assert_eq!(object::generation(&custom), Some(1), "custom kinds always");
}

#[test]
fn a_status_update_keeps_everything_but_status() {
    let current = json!({
        "metadata": {"name": "web", "uid": "u", "generation": 3, "labels": {"a": "b"}},
        "spec": {"replicas": 1}, "status": {"replicas": 0},
    });
    let mut updated = json!({
        "metadata": {"name": "web", "labels": {}}, "spec": {"replicas": 7},
        "status": {"replicas": 1},
    });
    prepare_update(
        &state("apps", "Deployment"),
        &current,
        &mut updated,
        Subresource::Status,
    )
    .unwrap();
    let mut expected = current.clone();
    expected["status"] = json!({"replicas": 1});
    assert_eq!(updated, expected);
}

#[test]
fn an_update_keeps_system_fields_and_bumps_generation_on_spec_changes() {
    let current = json!({
        "metadata": {"name": "web", "uid": "u", "generation": 3,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"replicas": 1}, "status": {"replicas": 1},
    });
    let mut updated = json!({
        "metadata": {"name": "web", "generation": 10, "creationTimestamp": "1999-01-01T00:00:00Z",
                     "deletionTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"replicas": 2}, "status": {"replicas": 9},
    });
    prepare_update(
        &state("apps", "Deployment"),
        &current,
        &mut updated,
        Subresource::Main,
    )
    .unwrap();
    assert_eq!(
        updated["metadata"],
        json!({"name": "web", "uid": "u", "generation": 4,
               "creationTimestamp": "2024-01-01T00:00:00Z"})
    );
    assert_eq!(updated["status"], json!({"replicas": 1}));
}

#[test]
fn namespaces_are_checked_against_the_call_and_filled_in() {
    let pods = ResourceInfo::builtin("", "Pod").unwrap();
    let mut pod = json!({"metadata": {"name": "p"}});
    pin_namespace(&pods, Some("default"), &mut pod).unwrap();
    assert_eq!(pod["metadata"]["namespace"], "default");
    let mut elsewhere = json!({"metadata": {"namespace": "other"}});
    let error = pin_namespace(&pods, Some("default"), &mut elsewhere).unwrap_err();
    assert!(
        matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata.namespace")
    );
    assert_eq!(
        pin_namespace(&pods, None, &mut json!({}))
            .unwrap_err()
            .code(),
        400
    );
    let nodes = ResourceInfo::builtin("", "Node").unwrap();
    assert!(pin_namespace(&nodes, Some("default"), &mut json!({})).is_err());
    assert!(pin_namespace(&nodes, None, &mut json!({"metadata": {"namespace": "x"}})).is_err());
}

#[test]
fn an_update_must_address_its_own_object() {
    let pods = ResourceInfo::builtin("", "Pod").unwrap();
    let mut renamed = json!({"metadata": {"name": "other"}});
    let error = check_identity(&pods, Some("default"), "web", &mut renamed).unwrap_err();
    assert!(
        error.to_string().contains("does not match the name"),
        "{error}"
    );
    let mut nameless = json!({"metadata": {}});
    check_identity(&pods, Some("default"), "web", &mut nameless).unwrap();
    assert_eq!(nameless["metadata"]["name"], "web");
}

#[test]
fn preconditions_compare_uid_and_resource_version() {
    let pods = ResourceInfo::builtin("", "Pod").unwrap();
    let object = json!({"metadata": {"uid": "u1"}});
    let params = |uid: Option<&str>, rv: Option<&str>| {
        DeleteParams::default().preconditions(Preconditions {
            uid: uid.map(str::to_string),
            resource_version: rv.map(str::to_string),
        })
    };
    assert!(check_preconditions(&pods, "p", &params(Some("u1"), Some("7")), &object, 7).is_ok());
    let error = check_preconditions(&pods, "p", &params(None, Some("6")), &object, 7).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Operation cannot be fulfilled on pods \"p\": Precondition failed: ResourceVersion in \
         precondition: 6, ResourceVersion in object meta: 7"
    );
    assert!(
        check_preconditions(&pods, "p", &params(Some("u2"), None), &object, 7)
            .unwrap_err()
            .is_conflict()
    );
}

#[tokio::test]
async fn registering_a_kind_replaces_its_state_with_a_fresh_watch_cache() {
    within(LIMIT, async {
        let registry = Registry::new(Arc::new(MemoryStore::new()));
        let info = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        let first = registry.register(info.clone());
        assert!(registry.resources().contains(&info));
        let first_source = first.watch_source().expect("every kind gets a watch cache");
        let second = registry.register(info.clone().with_short_names(["wd"]));
        let second_source = second.watch_source().expect("and so does its replacement");
        assert!(!Arc::ptr_eq(&first_source, &second_source));
        assert_eq!(
            registry.resource_state(&info).unwrap().info().short_names(),
            ["wd"]
        );
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(
            registry.resources().len(),
            ResourceInfo::builtins().count() + 1
        );
    })
    .await;
}

#[tokio::test]
async fn a_dry_run_service_create_keeps_no_address() {
    within(LIMIT, async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let registry =
            Registry::new(store.clone()).with_service_cidr("10.0.0.0/30".parse().unwrap());
        let services = ResourceInfo::builtin("", "Service").unwrap();
        let state = registry.resource_state(&services).unwrap();
        let service = || json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        // A /30 has exactly one address to hand out: a leak would make the real create fail.
        let dry = registry
            .create_object(&state, Some("default"), service(), true)
            .await
            .unwrap();
        assert_eq!(dry["spec"]["clusterIP"], "10.0.0.2");
        let real = registry
            .create_object(&state, Some("default"), service(), false)
            .await
            .unwrap();
        assert_eq!(real["spec"]["clusterIP"], "10.0.0.2");
    })
    .await;
}
