//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records who owns which fields, in Kubernetes' encoding (`FieldsV1`, see
//! [`fieldpath`]): an apply (`PATCH` with `application/apply-patch+yaml`,
//! [`Patch::Apply`](capstan_api::kube_core::params::Patch::Apply)) makes its manager's `Apply`
//! entry own exactly the fields of the applied configuration; any other write (create, update,
//! merge, strategic or JSON patch, status update) gives its manager's `Update` entry the fields
//! it set or changed and takes them from everyone else. The manager is the request's
//! `fieldManager` (the HTTP layer derives one from the `User-Agent` when it is missing, as
//! kube-apiserver does).
//!
//! An apply merges the configuration into the live object by the kind's
//! [`StructuralSchema`] ([`schema`] says where list and map semantics come from), fails with
//! [`Error::ApplyConflict`] (409) when it would change a field another manager owns (unless
//! forced, which takes the field over), and removes the fields its manager applied before
//! and no longer applies when nobody else owns them. Applying to a missing object creates it.
//! Everything else (admission, validation, `dryRun`, `resourceVersion` preconditions,
//! `fieldValidation`) is the registry's ordinary write path.
//!
//! **Custom kinds' schemas**: a kind without a schema merges with objects granular and lists
//! atomic. [`ResourceState::set_apply_schema`] plugs in a CRD's structural schema
//! ([`StructuralSchema::from_openapi`] of its `openAPIV3Schema`), whose own
//! `x-kubernetes-list-type`s then apply.
//!
//! The files: [`fieldpath`] (paths, sets, `FieldsV1`), [`schema`] (list and map semantics),
//! `merge.rs` (walking objects by schema) and `managed.rs` (entries, apply, conflicts).

pub mod fieldpath;
pub mod schema;

mod managed;
mod merge;

use std::sync::Arc;

use capstan_api::{
    kube_core::params::{PatchParams, ValidationDirective},
    Error, FieldError, Result,
};
use capstan_store::StoreExt;
use serde_json::Value;

pub use managed::{Applier, Entry, Operation};
pub use schema::StructuralSchema;

use super::{
    codec, names, object,
    update::{Subresource, UpdateTarget},
    Registry, ResourceState,
};
use crate::schema::strict_decoding_error;

/// How a write records ownership.
#[derive(Clone, Copy, Debug)]
pub(in crate::registry) enum Tracking<'a> {
    /// An `Update` by this manager (none: record no entry, but still take the changed fields
    /// from their owners).
    Update(Option<&'a str>),
    /// The object's entries were computed by [`managed::apply`] already; only ownership of
    /// fields that no longer exist (after admission) is dropped.
    Applied,
}

impl ResourceState {
    /// The schema server-side apply merges this kind by: the one set with
    /// [`set_apply_schema`](Self::set_apply_schema), else the built-in kind's, else the deduced
    /// one (objects granular, lists atomic).
    pub fn apply_schema(&self) -> Arc<StructuralSchema> {
        if let Some(schema) = self.apply_schema.read().clone() {
            return schema;
        }
        match self.builtin {
            true => StructuralSchema::builtin(&self.info).unwrap_or_else(StructuralSchema::deduced),
            false => StructuralSchema::deduced(),
        }
    }

    /// Makes server-side apply merge this kind by `schema` (a CRD's structural schema, with
    /// its own list types); `None` goes back to the default.
    pub fn set_apply_schema(&self, schema: Option<Arc<StructuralSchema>>) {
        *self.apply_schema.write() = schema;
    }
}

/// Records ownership for one write of `after` (coming from `before`, `None` for a create);
/// see [`Tracking`].
pub(in crate::registry) fn track(
    state: &ResourceState,
    before: Option<&Value>,
    after: &mut Value,
    tracking: Tracking<'_>,
    subresource: Subresource,
) {
    let has_entries = |object: Option<&Value>| {
        object.is_some_and(|object| object.pointer("/metadata/managedFields").is_some())
    };
    // A write without a manager over an object nobody owns records nothing: skip the walk.
    if matches!(tracking, Tracking::Update(None))
        && !has_entries(before)
        && !has_entries(Some(after))
    {
        return;
    }
    let schema = state.apply_schema();
    let subresource = (subresource == Subresource::Status).then_some("status");
    let manager = match tracking {
        Tracking::Update(manager) => manager,
        Tracking::Applied => {
            let entries = managed::read(after);
            let mut kept = after.clone();
            managed::write(&mut kept, &entries);
            managed::record_update(&schema, Some(&kept), after, None, "", subresource, "");
            return;
        }
    };
    managed::record_update(
        &schema,
        before,
        after,
        manager,
        &state.info.api_version(),
        subresource,
        &names::now(),
    );
}

/// kube-apiserver's refusal of bad `PatchOptions`: 422 on `PatchOptions.meta.k8s.io`.
fn invalid_options(cause: FieldError) -> Error {
    Error::Invalid {
        kind: "PatchOptions.meta.k8s.io".into(),
        name: String::new(),
        causes: vec![cause],
    }
}

/// Checks a patch's options: `force` only for apply, and apply needs a `fieldManager`.
pub(in crate::registry) fn check_patch_options(params: &PatchParams, is_apply: bool) -> Result<()> {
    if params.force && !is_apply {
        return Err(invalid_options(FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    if is_apply
        && params
            .field_manager
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        return Err(invalid_options(FieldError::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    Ok(())
}

impl Registry {
    /// Server-side apply of `config` to the object `name`, creating it when it does not exist;
    /// see the [module docs](self).
    ///
    /// Errors: [`Error::BadRequest`] for a configuration that is not an object of this kind
    /// (or sets `managedFields`, or has unknown fields under `Strict`), [`Error::Invalid`] for
    /// bad options, [`Error::ApplyConflict`], and whatever the write path answers.
    pub(in crate::registry) async fn apply_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
        config: &Value,
        params: &PatchParams,
        subresource: Subresource,
    ) -> Result<Value> {
        check_patch_options(params, true)?;
        let info = &state.info;
        let manager = params.field_manager.as_deref().unwrap_or_default();
        let mut config = config.clone();
        if !config.is_object() {
            return Err(Error::bad_request(
                "the applied configuration must be an object",
            ));
        }
        let (api_version, kind) = (
            config
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            config
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if api_version != info.api_version() || kind != info.kind() {
            return Err(Error::bad_request(format!(
                "the applied configuration is a {kind:?} of {api_version:?}, not a {:?} of {:?}",
                info.kind(),
                info.api_version()
            )));
        }
        if object::metadata(&config).is_some_and(|m| m.contains_key("managedFields")) {
            return Err(Error::bad_request("metadata.managedFields must be nil"));
        }
        match object::name(&config) {
            Some(found) if found != name => {
                return Err(Error::bad_field(
                    "metadata.name",
                    format!(
                        "the name of the object ({found}) does not match the name on the URL \
                         ({name})"
                    ),
                ))
            }
            Some(_) => {}
            None => object::set_meta(&mut config, "name", Some(name.into())),
        }
        let unknown = state.prune(&mut config);
        if matches!(params.field_validation, Some(ValidationDirective::Strict))
            && !unknown.is_empty()
        {
            return Err(strict_decoding_error(info, &unknown));
        }
        if info.subresources().status && subresource == Subresource::Main {
            // The main resource's writes never change `status`: an apply does not own it.
            if let Some(map) = config.as_object_mut() {
                map.remove("status");
            }
        }
        let precondition = match object::meta_str(&config, "resourceVersion") {
            Some(rv) => codec::parse_resource_version(rv)?.filter(|&rv| rv > 0),
            None => None,
        };
        if let Some(metadata) = config.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        let schema = state.apply_schema();
        let now = names::now();
        let applier = Applier {
            manager,
            api_version: api_version_of(&config),
            force: params.force,
            now: &now,
        };
        let key = info.key(namespace, name)?;
        let exists = self.store.get(key).await.ok().flatten().is_some();
        // An apply creates a missing object; a status apply needs the object to exist.
        if !exists && precondition.is_none() && subresource == Subresource::Main {
            let created = managed::apply(&schema, None, &config, &applier)?;
            match self
                .create_object_as(state, namespace, created, params.dry_run, Tracking::Applied)
                .await
            {
                Err(error) if error.is_already_exists() => {}
                other => return other,
            }
        }
        let target = UpdateTarget {
            state,
            namespace,
            name,
            precondition,
            subresource,
            dry_run: params.dry_run,
            tracking: Tracking::Applied,
        };
        self.guaranteed_update(target, |current| {
            let mut merged = managed::apply(&schema, Some(current), &config, &applier)?;
            state.prune(&mut merged);
            Ok(merged)
        })
        .await
    }
}

fn api_version_of(config: &Value) -> &str {
    config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}
