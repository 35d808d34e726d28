//! Controller references: finding a child's controlling ownerReference, and building the
//! Pod a controller creates from its template with that reference (Kubernetes'
//! `GetPodFromTemplate` and `metav1.GetControllerOf` / `IsControlledBy`).

use capstan_api::k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::Resource;
use capstan_controller::runtime::controller_reference;

/// The controlling ownerReference of `meta` (the one with `controller: true`), if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `object`'s controlling ownerReference has `uid`.
pub fn controlled_by<K: Resource>(object: &K, uid: &str) -> bool {
    controller_ref(object.meta()).is_some_and(|r| r.uid == uid)
}

/// The Pod `template` describes, controlled by `owner` (a ReplicaSet, DaemonSet, Job, ...),
/// before the API names it: `generateName` `<owner>-`, the owner's namespace, the template's
/// labels, annotations and finalizers, and the [`controller_reference`] to `owner`.
pub fn pod_for<K: Resource>(owner: &K, template: PodTemplateSpec) -> Pod {
    let meta = template.metadata.unwrap_or_default();
    let owner_meta = owner.meta();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                owner_meta.name.as_deref().unwrap_or_default()
            )),
            namespace: owner_meta.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}
