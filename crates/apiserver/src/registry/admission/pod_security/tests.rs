//! The admission step through a registry: enforce, warn, templates, namespace labels.

use std::sync::Arc;

use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::kube_core::DynamicObject;
use capstan_api::{Client, Error, ResourceInfo};
use capstan_store::memory::MemoryStore;
use serde_json::{json, Value};

use super::*;
use crate::registry::test_support::{within, LIMIT};
use crate::registry::Registry;

fn registry_with(step: impl FnOnce(Arc<dyn Store>) -> PodSecurityAdmission) -> Registry {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Registry::new(store.clone()).add_admission(step(store))
}

fn registry() -> Registry {
    registry_with(PodSecurityAdmission::new)
}

fn info(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo::builtin(group, kind).unwrap()
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

async fn namespace(registry: &Registry, name: &str, labels: Value) -> Result<DynamicObject> {
    let object = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    });
    registry
        .create(
            &info("", "Namespace"),
            None,
            dynamic(object),
            &PostParams::default(),
        )
        .await
}

async fn label(registry: &Registry, name: &str, labels: Value) -> Result<DynamicObject> {
    let patch = Patch::Merge(json!({"metadata": {"labels": labels}}));
    registry
        .patch(
            &info("", "Namespace"),
            None,
            name,
            &patch,
            &PatchParams::default(),
        )
        .await
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn plain(name: &str) -> Value {
    pod(
        name,
        json!({"containers": [{"name": name, "image": "busybox"}]}),
    )
}

fn compliant(name: &str) -> Value {
    pod(
        name,
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": name, "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        }),
    )
}

async fn create_pod(registry: &Registry, namespace: &str, pod: Value) -> Result<DynamicObject> {
    registry
        .create(
            &info("", "Pod"),
            Some(namespace),
            dynamic(pod),
            &PostParams::default(),
        )
        .await
}

#[tokio::test]
async fn enforce_restricted_refuses_a_plain_pod_with_kubernetes_message() {
    let registry = registry();
    within(LIMIT, async {
        namespace(
            &registry,
            "team",
            json!({ENFORCE_LEVEL_LABEL: "restricted"}),
        )
        .await?;
        let error = create_pod(&registry, "team", plain("x")).await.unwrap_err();
        let Error::Forbidden { message } = error else {
            panic!("not forbidden: {error:?}")
        };
        assert_eq!(
            message,
            "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"x\" must set \
             securityContext.allowPrivilegeEscalation=false), unrestricted capabilities \
             (container \"x\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"x\" must set \
             securityContext.runAsNonRoot=true), seccompProfile (pod or container \"x\" must \
             set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        create_pod(&registry, "team", compliant("y")).await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn namespaces_without_labels_admit_anything() {
    let registry = registry();
    within(LIMIT, async {
        namespace(&registry, "open", json!({})).await?;
        let host = pod(
            "host",
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "busybox",
                "securityContext": {"privileged": true}}]}),
        );
        let ((), warnings) = warnings::record(async {
            create_pod(&registry, "open", host).await.unwrap();
        })
        .await;
        assert!(warnings.is_empty(), "{warnings:?}");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn warn_admits_with_a_warning_and_enforce_refuses_without_one() {
    let registry = registry();
    within(LIMIT, async {
        namespace(
            &registry,
            "team",
            json!({WARN_LEVEL_LABEL: "baseline", ENFORCE_LEVEL_LABEL: "baseline", ENFORCE_VERSION_LABEL: "v1.30"}),
        )
        .await?;
        let (result, warnings) = warnings::record(create_pod(
            &registry,
            "team",
            pod("h", json!({"hostPID": true, "containers": [{"name": "c", "image": "busybox"}]})),
        ))
        .await;
        let Err(Error::Forbidden { message }) = result else {
            panic!("admitted: {result:?}")
        };
        assert!(
            message.ends_with("violates PodSecurity \"baseline:v1.30\": host namespaces (hostPID=true)"),
            "{message}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");

        label(&registry, "team", json!({ENFORCE_LEVEL_LABEL: "privileged"})).await?;
        let (result, warnings) =
            warnings::record(create_pod(&registry, "team", plain("p"))).await;
        result?;
        assert!(warnings.is_empty(), "baseline allows a plain pod: {warnings:?}");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn workload_templates_are_warned_about_but_never_refused() {
    let registry = registry();
    within(LIMIT, async {
        namespace(
            &registry,
            "team",
            json!({ENFORCE_LEVEL_LABEL: "restricted", WARN_LEVEL_LABEL: "baseline"}),
        )
        .await?;
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"hostNetwork": true, "containers": [{"name": "web", "image": "nginx"}]},
                },
            },
        });
        let (result, warnings) = warnings::record(registry.create(
            &info("apps", "Deployment"),
            Some("team"),
            dynamic(deployment),
            &PostParams::default(),
        ))
        .await;
        result?;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
            ),
            "{warnings:?}"
        );
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_labels_are_refused_on_create_and_when_changed() {
    let registry = registry();
    within(LIMIT, async {
        let error = namespace(&registry, "bad", json!({ENFORCE_LEVEL_LABEL: "strict"}))
            .await
            .unwrap_err();
        assert_eq!(error.code(), 422, "{error:?}");
        let status = error.to_status();
        assert!(
            status.message.contains(
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": \
                 must be one of privileged, baseline, restricted"
            ),
            "{}",
            status.message
        );
        namespace(&registry, "good", json!({})).await?;
        let error = label(&registry, "good", json!({WARN_VERSION_LABEL: "v2.0"}))
            .await
            .unwrap_err();
        assert_eq!(error.code(), 422, "{error:?}");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stricter_enforce_level_warns_about_existing_pods() {
    let registry = registry();
    within(LIMIT, async {
        namespace(&registry, "team", json!({})).await?;
        create_pod(&registry, "team", plain("b")).await?;
        create_pod(&registry, "team", plain("a")).await?;
        create_pod(&registry, "team", compliant("c")).await?;
        create_pod(
            &registry,
            "team",
            pod(
                "h",
                json!({"hostIPC": true, "containers": [{"name": "c", "image": "busybox"}]}),
            ),
        )
        .await?;
        let (result, warnings) = warnings::record(label(
            &registry,
            "team",
            json!({ENFORCE_LEVEL_LABEL: "restricted"}),
        ))
        .await;
        result?;
        assert_eq!(
            warnings,
            [
                "existing pods in namespace \"team\" violate the new PodSecurity enforce level \
                 \"restricted:latest\"",
                "a (and 1 other pod): allowPrivilegeEscalation != false, unrestricted \
                 capabilities, runAsNonRoot != true, seccompProfile",
                "h: host namespaces, allowPrivilegeEscalation != false, unrestricted \
                 capabilities, runAsNonRoot != true, seccompProfile",
            ]
        );
        // Relaxing the level checks nothing.
        let (result, warnings) = warnings::record(label(
            &registry,
            "team",
            json!({ENFORCE_LEVEL_LABEL: "baseline"}),
        ))
        .await;
        result?;
        assert!(warnings.is_empty(), "{warnings:?}");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn exempt_namespaces_and_runtime_classes_are_not_checked() {
    let registry = registry_with(|store| {
        PodSecurityAdmission::new(store)
            .exempt_namespace("ops")
            .exempt_runtime_class("kata")
    });
    within(LIMIT, async {
        let (result, warnings) = warnings::record(namespace(
            &registry,
            "ops",
            json!({ENFORCE_LEVEL_LABEL: "restricted"}),
        ))
        .await;
        result?;
        assert_eq!(
            warnings,
            [
                "namespace \"ops\" is exempt from Pod Security, and the policy \
              (enforce=restricted:latest) will be ignored"
            ]
        );
        create_pod(&registry, "ops", plain("x")).await?;
        namespace(
            &registry,
            "team",
            json!({ENFORCE_LEVEL_LABEL: "restricted"}),
        )
        .await?;
        let mut kata = plain("k");
        kata["spec"]["runtimeClassName"] = "kata".into();
        create_pod(&registry, "team", kata).await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

#[test]
fn only_image_and_container_changes_are_significant_pod_updates() {
    let old = plain("x");
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"a": "b"});
    assert!(!significant_pod_update(&relabelled, &old));
    let mut new_image = old.clone();
    new_image["spec"]["containers"][0]["image"] = "busybox:2".into();
    assert!(significant_pod_update(&new_image, &old));
    let mut debugged = old.clone();
    debugged["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    assert!(significant_pod_update(&debugged, &old));
    assert!(!significant_pod_update(&debugged, &debugged));
}
