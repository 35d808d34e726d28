//! Namespaces: names are DNS-1123 labels; `status.phase: Active`, the
//! `kubernetes.io/metadata.name` label and the `kubernetes` finalizer by default.
//!
//! Their lifecycle, as kube-apiserver's namespace registry and `NamespaceLifecycle` admission
//! plugin keep it:
//!
//! - a delete sets `deletionTimestamp` and `status.phase: Terminating`, and keeps the object
//!   while `spec.finalizers` (the namespace controller's `kubernetes`) or `metadata.finalizers`
//!   hold anything; it is removed once both are empty;
//! - an update of the object itself may remove entries of `spec.finalizers` (what the
//!   `finalize` subresource does) but never add any;
//! - [`NamespaceLifecycle`]: no new content in a missing (404) or terminating (403)
//!   namespace, and the system namespaces may not be deleted (403).

use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::{
    kube_core::{params::PostParams, DynamicObject},
    Client, Error, ResourceInfo, Result,
};
use capstan_store::{Store, StoreExt};
use serde_json::{json, Map, Value};

use super::KindStrategy;
use crate::codec;
use crate::registry::{
    admission::{AdmissionPhase, AdmissionRequest, AdmissionStep, Operation},
    defaults::{ensure_map, set_default},
    names, object,
    storage::{self, store_error, Companions, WriteFailure},
    validation::NameRule,
    Registry,
};

/// The finalizer the namespace controller removes once a namespace's content is gone.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// The phase of a namespace being deleted.
pub const TERMINATING: &str = "Terminating";

/// The namespaces every API server has from the start and never deletes.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The rules of `v1` Namespaces.
pub(crate) struct NamespaceStrategy;

impl KindStrategy for NamespaceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn apply_defaults(&self, namespace: &mut Value) {
        default_namespace(namespace);
    }

    fn prepare_main_update(&self, _info: &ResourceInfo, current: &Value, updated: &mut Value) {
        if let Some(root) = updated.as_object_mut() {
            match current.get("status") {
                Some(status) => root.insert("status".into(), status.clone()),
                None => root.remove("status"),
            };
        }
        // Entries may be removed (finalize), never added.
        let kept: Vec<Value> = spec_finalizers(current)
            .into_iter()
            .filter(|f| spec_finalizers(updated).contains(f))
            .map(Value::String)
            .collect();
        let spec = object::at_mut(updated, "spec");
        if kept.is_empty() {
            spec.remove("finalizers");
        } else {
            spec.insert("finalizers".into(), Value::Array(kept));
        }
    }

    fn holds_deletion(&self, namespace: &Value) -> bool {
        !spec_finalizers(namespace).is_empty()
    }

    fn prepare_deletion(&self, namespace: &mut Value) {
        object::at_mut(namespace, "status").insert("phase".into(), TERMINATING.into());
    }
}

/// `spec.finalizers`, in order; non-string entries are skipped.
pub(crate) fn spec_finalizers(namespace: &Value) -> Vec<String> {
    object::at(namespace, "spec.finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn default_namespace(namespace: &mut Value) {
    if let Some(name) = object::name(namespace).map(str::to_string) {
        let metadata = object::metadata_mut(namespace);
        let labels = ensure_map(
            metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new())),
        );
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    set_default(
        object::at_mut(namespace, "spec"),
        "finalizers",
        json!([KUBERNETES_FINALIZER]),
    );
    set_default(object::at_mut(namespace, "status"), "phase", "Active");
}

/// A system namespace as a create through the registry stores it.
fn system_namespace(name: &str) -> Value {
    let mut namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": names::new_uid(),
            "creationTimestamp": names::now(),
        },
    });
    default_namespace(&mut namespace);
    namespace
}

fn namespaces() -> ResourceInfo {
    ResourceInfo::builtin("", "Namespace").expect("Namespace is a built-in kind")
}

/// Creates the [`SYSTEM_NAMESPACES`] missing from `store`; idempotent, and safe to race with
/// other registries on the same store (one create wins, the others find it there).
///
/// Errors: the store's, as typed errors.
pub(crate) async fn ensure_system_namespaces(store: &dyn Store) -> Result<()> {
    for name in SYSTEM_NAMESPACES {
        ensure_system_namespace(store, name).await?;
    }
    Ok(())
}

async fn ensure_system_namespace(store: &dyn Store, name: &str) -> Result<()> {
    let info = namespaces();
    let key = info.key(None, name)?;
    let bytes = codec::encode(&system_namespace(name))?;
    match storage::create(store, &key, bytes, &Companions::default()).await {
        Ok(_) | Err(WriteFailure::Exists) => Ok(()),
        Err(failure) => Err(storage::write_error(failure, &info, name)),
    }
}

/// Kubernetes' `NamespaceLifecycle` admission plugin, a validating step of the registry's
/// built-in chain ([`AdmissionChain::builtin_over`](crate::registry::AdmissionChain::builtin_over)):
///
/// - a create of a namespaced object in a namespace that does not exist is
///   [`Error::NotFound`] (`namespaces "foo" not found`), except in a [system
///   namespace](SYSTEM_NAMESPACES): the missing system namespaces are all created then (so
///   every registry has them, with or without an HTTP server);
/// - a create in a namespace being deleted is [`Error::Forbidden`] (`... is forbidden: unable
///   to create new content in namespace foo because it is being terminated`); updates and
///   deletes there go through;
/// - deleting a system namespace is [`Error::Forbidden`] (`namespaces "default" is forbidden:
///   this namespace may not be deleted`), and deleting a namespace already terminating with
///   `spec.finalizers` left is [`Error::Conflict`] (`The system is ensuring all content is
///   removed from this namespace. ...`).
///
/// Each create costs one point read of the namespace's key in the store (no list).
pub struct NamespaceLifecycle {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for NamespaceLifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceLifecycle").finish_non_exhaustive()
    }
}

impl NamespaceLifecycle {
    /// The step, reading namespaces from `store` (the registry's own).
    pub fn new(store: Arc<dyn Store>) -> Self {
        NamespaceLifecycle { store }
    }

    async fn admit_create(&self, request: &AdmissionRequest<'_>, namespace: &str) -> Result<()> {
        let info = namespaces();
        let key = info.key(None, namespace)?;
        let stored = self
            .store
            .get(key)
            .await
            .map_err(|e| store_error(e, &info, namespace))?;
        let Some(kv) = stored else {
            if SYSTEM_NAMESPACES.contains(&namespace) {
                if !request.dry_run {
                    ensure_system_namespaces(&*self.store).await?;
                }
                return Ok(());
            }
            return Err(Error::NotFound {
                resource: info.qualified_resource(),
                name: namespace.to_string(),
            });
        };
        let current = codec::decode(&kv)?;
        let terminating = object::is_deleting(&current)
            || object::at(&current, "status.phase").and_then(Value::as_str) == Some(TERMINATING);
        if terminating {
            return Err(Error::Forbidden {
                message: format!(
                    "{} {:?} is forbidden: unable to create new content in namespace {namespace} \
                     because it is being terminated",
                    request.resource.qualified_resource(),
                    request.name
                ),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AdmissionStep for NamespaceLifecycle {
    fn name(&self) -> &str {
        "NamespaceLifecycle"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Validating
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, _object: &mut Value) -> Result<()> {
        let resource = request.resource;
        match request.operation {
            Operation::Delete
                if resource.group().is_empty()
                    && resource.kind() == "Namespace"
                    && SYSTEM_NAMESPACES.contains(&request.name) =>
            {
                Err(Error::Forbidden {
                    message: format!(
                        "{} {:?} is forbidden: this namespace may not be deleted",
                        resource.qualified_resource(),
                        request.name
                    ),
                })
            }
            Operation::Delete
                if resource.group().is_empty()
                    && resource.kind() == "Namespace"
                    && request.old_object.is_some_and(|old| {
                        object::is_deleting(old) && !spec_finalizers(old).is_empty()
                    }) =>
            {
                Err(Error::Conflict {
                    resource: resource.qualified_resource(),
                    name: request.name.to_string(),
                    message: "The system is ensuring all content is removed from this \
                              namespace.  Upon completion, this namespace will automatically \
                              be purged by the system."
                        .into(),
                })
            }
            Operation::Create if resource.namespaced() => match request.namespace {
                Some(namespace) if !namespace.is_empty() => {
                    self.admit_create(request, namespace).await
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

impl Registry {
    /// The `finalize` subresource of a Namespace (`PUT /api/v1/namespaces/{name}/finalize`):
    /// writes `namespace`'s `spec.finalizers` (absent: none) to the stored Namespace and
    /// nothing else. Entries may only be removed, as with any update of the object; once
    /// both `spec.finalizers` and `metadata.finalizers` are empty on a terminating
    /// namespace, it is removed and its last state returned. With `metadata.resourceVersion`
    /// the write is conditional; without, it is retried on concurrent changes.
    ///
    /// Errors: [`Error::BadRequest`] without a name, [`Error::NotFound`] for a missing
    /// namespace, [`Error::Conflict`] for a stale `resourceVersion`.
    pub async fn finalize_namespace(
        &self,
        namespace: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let info = namespaces();
        let name = namespace
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::bad_field("metadata.name", "name is required"))?;
        let finalizers = match namespace.data.pointer("/spec/finalizers") {
            Some(Value::Array(list)) => Value::Array(list.clone()),
            _ => Value::Array(Vec::new()),
        };
        let pinned = namespace.metadata.resource_version.clone();
        loop {
            let mut current = self.get(&info, None, &name).await?;
            if pinned.is_some() {
                current.metadata.resource_version = pinned.clone();
            }
            match current.data.get_mut("spec").and_then(Value::as_object_mut) {
                Some(spec) => {
                    spec.insert("finalizers".into(), finalizers.clone());
                }
                None => current.data["spec"] = json!({"finalizers": finalizers.clone()}),
            }
            match self.update(&info, None, current, params).await {
                Err(Error::Conflict { .. }) if pinned.is_none() => continue,
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capstan_api::{
        k8s_openapi::api::core::v1::{ConfigMap, Namespace},
        kube_core::params::{DeleteParams, PostParams},
        Api, Client, Error,
    };
    use capstan_store::memory::MemoryStore;

    use crate::registry::{
        test_support::{within, LIMIT},
        Registry,
    };

    fn client() -> Arc<dyn Client> {
        Arc::new(Registry::new(Arc::new(MemoryStore::new())))
    }

    fn config_map(name: &str) -> ConfigMap {
        let mut config = ConfigMap::default();
        config.metadata.name = Some(name.into());
        config
    }

    fn namespace(name: &str) -> Namespace {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.into());
        namespace
    }

    fn phase(namespace: &Namespace) -> Option<&str> {
        namespace.status.as_ref()?.phase.as_deref()
    }

    fn spec_finalizers(namespace: &Namespace) -> Vec<String> {
        namespace
            .spec
            .as_ref()
            .and_then(|spec| spec.finalizers.clone())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_create_in_a_missing_namespace_is_not_found_and_stores_nothing() {
        within(LIMIT, async {
            let client = client();
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "foo");
            let error = config_maps
                .create(&PostParams::default(), &config_map("settings"))
                .await
                .unwrap_err();
            assert_eq!(error.to_string(), r#"namespaces "foo" not found"#);
            assert!(matches!(error, Error::NotFound { .. }));
            Api::<Namespace>::all(client)
                .create(&PostParams::default(), &namespace("foo"))
                .await
                .unwrap();
            assert!(config_maps.get_opt("settings").await.unwrap().is_none());
            config_maps
                .create(&PostParams::default(), &config_map("settings"))
                .await
                .unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn system_namespaces_exist_on_first_use_and_may_not_be_deleted() {
        within(LIMIT, async {
            let client = client();
            Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
                .create(&PostParams::default(), &config_map("settings"))
                .await
                .unwrap();
            let namespaces: Api<Namespace> = Api::all(client);
            let system = namespaces.get("kube-system").await.unwrap();
            assert_eq!(phase(&system), Some("Active"));
            assert_eq!(spec_finalizers(&system), ["kubernetes"]);
            let error = namespaces
                .delete("default", &DeleteParams::default())
                .await
                .unwrap_err();
            assert_eq!(
                error,
                Error::Forbidden {
                    message:
                        r#"namespaces "default" is forbidden: this namespace may not be deleted"#
                            .into()
                }
            );
            assert_eq!(error.code(), 403);
        })
        .await;
    }

    #[tokio::test]
    async fn deleting_a_namespace_terminates_it_until_its_finalizers_are_gone() {
        within(LIMIT, async {
            let client = client();
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let created = namespaces
                .create(&PostParams::default(), &namespace("team"))
                .await
                .unwrap();
            assert_eq!(spec_finalizers(&created), ["kubernetes"]);
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
            config_maps
                .create(&PostParams::default(), &config_map("old"))
                .await
                .unwrap();

            let deletion = namespaces
                .delete("team", &DeleteParams::default())
                .await
                .unwrap();
            assert!(deletion.is_pending());
            let terminating = namespaces.get("team").await.unwrap();
            assert!(terminating.metadata.deletion_timestamp.is_some());
            assert_eq!(phase(&terminating), Some("Terminating"));
            let again = namespaces
                .delete("team", &DeleteParams::default())
                .await
                .unwrap_err();
            assert_eq!(again.code(), 409);
            assert!(
                again
                    .to_string()
                    .starts_with(r#"Operation cannot be fulfilled on namespaces "team": The system is ensuring all content is removed"#),
                "{again}"
            );

            let error = config_maps
                .create(&PostParams::default(), &config_map("new"))
                .await
                .unwrap_err();
            assert_eq!(
                error,
                Error::Forbidden {
                    message: "configmaps \"new\" is forbidden: unable to create new content in \
                              namespace team because it is being terminated"
                        .into()
                }
            );
            // Existing content may still be updated and deleted.
            let mut old = config_maps.get("old").await.unwrap();
            old.data = Some([("k".to_string(), "v".to_string())].into());
            config_maps
                .update(&PostParams::default(), &old)
                .await
                .unwrap();
            config_maps
                .delete("old", &DeleteParams::default())
                .await
                .unwrap();

            // An update may not add a finalizer, and keeps the status.
            let mut more = terminating.clone();
            more.spec.as_mut().unwrap().finalizers =
                Some(vec!["kubernetes".into(), "example.com/extra".into()]);
            more.status.as_mut().unwrap().phase = Some("Active".into());
            let updated = namespaces
                .update(&PostParams::default(), &more)
                .await
                .unwrap();
            assert_eq!(spec_finalizers(&updated), ["kubernetes"]);
            assert_eq!(phase(&updated), Some("Terminating"));

            // A metadata finalizer holds it after `kubernetes` is finalized away.
            let mut held = updated;
            held.metadata.finalizers = None;
            let mut finalized = held.clone();
            finalized.spec.as_mut().unwrap().finalizers = Some(Vec::new());
            namespaces
                .update(&PostParams::default(), &finalized)
                .await
                .unwrap();
            assert!(namespaces.get_opt("team").await.unwrap().is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn metadata_finalizers_keep_a_finalized_namespace_until_removed() {
        within(LIMIT, async {
            let client = client();
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let mut held = namespace("held");
            held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
            namespaces
                .create(&PostParams::default(), &held)
                .await
                .unwrap();
            namespaces
                .delete("held", &DeleteParams::default())
                .await
                .unwrap();
            let mut current = namespaces.get("held").await.unwrap();
            current.spec.as_mut().unwrap().finalizers = Some(Vec::new());
            let current = namespaces
                .update(&PostParams::default(), &current)
                .await
                .unwrap();
            assert!(spec_finalizers(&current).is_empty());
            assert_eq!(phase(&current), Some("Terminating"));
            let mut released = current;
            released.metadata.finalizers = None;
            namespaces
                .update(&PostParams::default(), &released)
                .await
                .unwrap();
            assert!(namespaces.get_opt("held").await.unwrap().is_none());
        })
        .await;
    }
}
