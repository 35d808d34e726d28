//! The `pods/ephemeralcontainers` subresource: writes of a Pod's `spec.ephemeralContainers`
//! only (what `kubectl debug` patches), validated by the Pod strategy's rules
//! (`kinds::pod::ephemeral`): containers may be added, never changed or removed.

use capstan_api::{
    kube_core::{
        params::{Patch, PatchParams, PostParams},
        DynamicObject,
    },
    Error, Result,
};
use serde_json::Value;

use super::{object, update::Subresource, Registry};

impl Registry {
    /// Replaces the ephemeral containers of the Pod `object` names
    /// (`PUT .../pods/{name}/ephemeralcontainers`): everything but
    /// `spec.ephemeralContainers` is kept from the stored Pod; conditional when `object`
    /// carries a `resourceVersion`. Returns the whole Pod.
    ///
    /// Errors: [`Error::NotFound`] for a missing Pod, [`Error::Conflict`] for a stale
    /// `resourceVersion`, [`Error::Invalid`] when a container is invalid or an existing one
    /// would change or go.
    pub async fn update_ephemeral_containers(
        &self,
        namespace: &str,
        pod: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(&pods())?;
        let pod = object::from_dynamic(&state.info, pod)?;
        let updated = self
            .update_object(
                &state,
                Some(namespace),
                pod,
                Subresource::EphemeralContainers,
                params.dry_run,
                params.field_manager.as_deref(),
            )
            .await?;
        object::to_dynamic(updated)
    }

    /// Patches the ephemeral containers of the Pod `name`
    /// (`PATCH .../pods/{name}/ephemeralcontainers`, a strategic merge patch from `kubectl
    /// debug`, or a JSON or merge patch): the patch applies to the whole Pod, and only its
    /// `spec.ephemeralContainers` is kept. Returns the whole Pod.
    ///
    /// Errors: as [`update_ephemeral_containers`](Self::update_ephemeral_containers), and as
    /// [`Client::patch`](capstan_api::Client::patch) for a malformed patch.
    pub async fn patch_ephemeral_containers(
        &self,
        namespace: &str,
        name: &str,
        patch: &Patch<Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        if matches!(patch, Patch::Apply(_)) {
            return Err(Error::UnsupportedMediaType {
                message: "server-side apply is not served for pods/ephemeralcontainers; use a \
                          strategic merge, merge or JSON patch"
                    .into(),
            });
        }
        let state = self.resource_state(&pods())?;
        let patched = self
            .patch_object(
                &state,
                Some(namespace),
                name,
                patch,
                params,
                Subresource::EphemeralContainers,
            )
            .await?;
        object::to_dynamic(patched)
    }
}

fn pods() -> capstan_api::ResourceInfo {
    capstan_api::ResourceInfo::builtin("", "Pod").expect("Pods are a built-in kind")
}
