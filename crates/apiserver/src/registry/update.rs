//! `update`, `update_status` and the patches: Kubernetes' `GuaranteedUpdate` loop, and the
//! rules of an update (identity, system fields, status subresource, `generation`).

use capstan_api::{
    kube_core::params::{Patch, PatchParams, ValidationDirective},
    Error, FieldError, ResourceInfo, Result,
};
use capstan_store::Revision;
use serde_json::Value;

use super::{
    admission::{AdmissionRequest, Operation as Op},
    apply::{self, Tracking},
    codec, object, patch,
    rules::{conflict, pin_namespace, qualify},
    service_ips::{self, IpPlan, ServiceIpAllocator},
    storage::{self, write_error, WriteFailure},
    typed, Registry, ResourceState, MAX_WRITE_ATTEMPTS,
};

/// Which part of an object an update writes; the kind's strategy decides what each may change
/// ([`prepare_main_update`](super::kinds::KindStrategy::prepare_main_update),
/// [`prepare_status_update`](super::kinds::KindStrategy::prepare_status_update)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subresource {
    /// The object; `status` is kept from the stored object when the kind has a status
    /// subresource.
    Main,
    /// Only `status`.
    Status,
    /// Only a CertificateSigningRequest's approval conditions
    /// ([`prepare_approval_update`](super::kinds::KindStrategy::prepare_approval_update)).
    Approval,
    /// Only a Pod's `spec.ephemeralContainers` (the `ephemeralcontainers` subresource,
    /// [`prepare_ephemeral_containers_update`](super::kinds::KindStrategy::prepare_ephemeral_containers_update)).
    EphemeralContainers,
}

impl Subresource {
    /// The subresource's name as admission steps see it: `status`, `ephemeralcontainers`, or
    /// `None` for the object itself (and for approvals, validated as the object).
    pub(super) fn admission_name(self) -> Option<&'static str> {
        match self {
            Subresource::Status => Some("status"),
            Subresource::EphemeralContainers => Some("ephemeralcontainers"),
            Subresource::Main | Subresource::Approval => None,
        }
    }
}

/// The target and rules of one update.
pub(super) struct UpdateTarget<'a> {
    pub(super) state: &'a ResourceState,
    pub(super) namespace: Option<&'a str>,
    pub(super) name: &'a str,
    /// The client's `resourceVersion`: the write must be based on exactly that revision.
    pub(super) precondition: Option<Revision>,
    pub(super) subresource: Subresource,
    pub(super) dry_run: bool,
    /// How the write records field ownership (`metadata.managedFields`).
    pub(super) tracking: Tracking<'a>,
}

impl Registry {
    /// Kubernetes' `GuaranteedUpdate`: reads the object, computes the new one with
    /// `transform`, runs admission and the registry's rules, and writes it with
    /// compare-and-swap, retrying from a fresh read when someone else wrote first (unless the
    /// client pinned a `resourceVersion`: then that is a [`Error::Conflict`]).
    pub(super) async fn guaranteed_update<F>(
        &self,
        target: UpdateTarget<'_>,
        transform: F,
    ) -> Result<Value>
    where
        F: Fn(&Value) -> Result<Value> + Send + Sync,
    {
        let UpdateTarget {
            state,
            namespace,
            name,
            precondition,
            subresource,
            dry_run,
            tracking,
        } = target;
        let info = &state.info;
        let key = info.key(namespace, name)?;
        let strategy = state.strategy();
        let services = strategy.holds_cluster_ip() && subresource == Subresource::Main;
        if services {
            self.service_ips.ensure_loaded(&self.store, info).await?;
        }
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let kv = self.read(info, &key, name).await?;
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(conflict(info, name));
            }
            let mut current = codec::decode(&kv)?;
            strategy.to_served(&mut current);
            let mut updated = transform(&current)?;
            object::check_types(info, &mut updated)?;
            typed::decode(info, &updated)?;
            check_identity(info, namespace, name, &mut updated)?;
            let request = AdmissionRequest {
                operation: Op::Update,
                subresource: subresource.admission_name(),
                resource: info,
                namespace,
                name,
                old_object: Some(&current),
                dry_run,
            };
            self.admission.mutate(&request, &mut updated).await?;
            if self.admission.mutation_may_break_types() {
                typed::decode(info, &updated)?;
            }
            object::check_types(info, &mut updated)?;
            check_identity(info, namespace, name, &mut updated)?;
            // An apply's ownership survives the subresource's rules, which otherwise keep the
            // stored metadata (a status apply records its manager like any apply).
            let applied_fields = match tracking {
                Tracking::Applied => object::metadata(&updated)
                    .and_then(|metadata| metadata.get("managedFields"))
                    .cloned(),
                Tracking::Update(_) => None,
            };
            prepare_update(state, &current, &mut updated, subresource)?;
            if let Some(fields) = applied_fields {
                object::metadata_mut(&mut updated).insert("managedFields".into(), fields);
            }
            apply::track(state, Some(&current), &mut updated, tracking, subresource);
            let plan = if services {
                strategy.plan_cluster_ip(
                    &self.service_ips,
                    info,
                    &mut updated,
                    Some(&current),
                    name,
                )?
            } else {
                IpPlan::none()
            };
            state.validate_custom(&updated, Some(&current))?;
            self.admission.validate(&request, &updated).await?;
            codec::set_resource_version(&mut updated, kv.mod_revision);
            if updated == current {
                // Nothing changed: like Kubernetes, write nothing and keep the revision.
                return Ok(updated);
            }
            if dry_run {
                return Ok(updated);
            }
            let bytes = codec::encode(&strategy.to_stored(&updated))?;
            let finishing_deletion = object::is_deleting(&updated)
                && object::finalizers(&updated).is_empty()
                && object::grace_is_over(&updated)
                && !strategy.holds_deletion(&updated);
            // Finishing a deletion frees the Service's address with it.
            let freed_ip = match finishing_deletion && services {
                true => service_ips::cluster_ip(&current),
                false => None,
            };
            let mut companions = plan.companions(namespace, name);
            if let Some(key) = freed_ip.map(ServiceIpAllocator::key) {
                if !companions.deletes.contains(&key) {
                    companions.deletes.push(key);
                }
            }
            let result = if finishing_deletion {
                storage::delete(&*self.store, &key, kv.mod_revision, &companions)
                    .await
                    .map(|revision| (revision, None))
            } else {
                storage::update(
                    &*self.store,
                    &key,
                    bytes.clone(),
                    kv.mod_revision,
                    &companions,
                )
                .await
                .map(|kv| (kv.mod_revision, Some(kv)))
            };
            match result {
                Ok((revision, written)) => {
                    plan.commit();
                    if let Some(ip) = freed_ip {
                        self.service_ips.release(ip);
                    }
                    let mut stored = match written {
                        Some(kv) => codec::decode(&kv)?,
                        None => codec::decode_at(&bytes, revision)?,
                    };
                    strategy.to_served(&mut stored);
                    object::set_types(info, &mut stored);
                    return Ok(stored);
                }
                Err(WriteFailure::Stale) => {
                    if precondition.is_some() {
                        return Err(conflict(info, name));
                    }
                }
                Err(WriteFailure::CompanionTaken) => {
                    if let Some(error) = plan.taken_elsewhere(info, name) {
                        return Err(error);
                    }
                }
                Err(failure) => {
                    return Err(write_error(failure, info, name));
                }
            }
        }
        Err(conflict(info, name))
    }

    /// Replaces the object `object` names (its main resource or, with
    /// [`Subresource::Status`], only its status), conditionally when it carries a
    /// `resourceVersion`.
    pub(super) async fn update_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        mut object: Value,
        subresource: Subresource,
        dry_run: bool,
        field_manager: Option<&str>,
    ) -> Result<Value> {
        let info = &state.info;
        if subresource == Subresource::Status && !info.subresources().status {
            return Err(Error::NotFound {
                resource: qualify(&format!("{}/status", info.plural()), info.group()),
                name: object::name(&object).unwrap_or_default().to_string(),
            });
        }
        let name = object::name(&object)
            .ok_or_else(|| Error::bad_field("metadata.name", "name is required for an update"))?
            .to_string();
        let precondition = match object::meta_str(&object, "resourceVersion") {
            Some(rv) => codec::parse_resource_version(rv)?.filter(|&rv| rv > 0),
            None => None,
        };
        state.prune(&mut object);
        let target = UpdateTarget {
            state,
            namespace,
            name: &name,
            precondition,
            subresource,
            dry_run,
            tracking: Tracking::Update(field_manager),
        };
        self.guaranteed_update(target, |_| Ok(object.clone())).await
    }

    /// Applies a JSON, merge or strategic merge patch or a server-side apply to the object
    /// `name` (to its main resource, or to its status only with [`Subresource::Status`]),
    /// through the same update path.
    ///
    /// Errors: as an update; [`Error::NotFound`] for a status patch of a kind without a status
    /// subresource.
    pub(super) async fn patch_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<Value>,
        params: &PatchParams,
        subresource: Subresource,
    ) -> Result<Value> {
        apply::check_patch_options(params, matches!(patch, Patch::Apply(_)))?;
        if subresource == Subresource::Status && !state.info.subresources().status {
            return Err(Error::NotFound {
                resource: qualify(
                    &format!("{}/status", state.info.plural()),
                    state.info.group(),
                ),
                name: name.to_string(),
            });
        }
        let dry_run = params.dry_run;
        let strict = matches!(params.field_validation, Some(ValidationDirective::Strict));
        let manager = params.field_manager.as_deref();
        let info = &state.info;
        let (body, strategic) = match patch {
            Patch::Json(operations) => {
                return self
                    .json_patch_object(state, namespace, name, operations, params, subresource)
                    .await
            }
            Patch::Merge(body) => (body, false),
            Patch::Strategic(body) if state.builtin => (body, true),
            Patch::Strategic(_) => {
                return Err(Error::UnsupportedMediaType {
                    message: format!(
                        "strategic merge patch is not supported for {}: it has no merge keys; \
                         use a JSON merge patch (application/merge-patch+json)",
                        info.qualified_resource()
                    ),
                })
            }
            Patch::Apply(config) => {
                return self
                    .apply_object(state, namespace, name, config, params, subresource)
                    .await
            }
            _ => {
                return Err(Error::UnsupportedMediaType {
                    message: "only JSON merge and strategic merge patches are supported".into(),
                })
            }
        };
        if !body.is_object() {
            return Err(Error::bad_request("the patch must be a JSON object"));
        }
        let precondition = match object::meta_str(body, "resourceVersion") {
            Some(rv) => codec::parse_resource_version(rv)?.filter(|&rv| rv > 0),
            None => None,
        };
        let target = UpdateTarget {
            state,
            namespace,
            name,
            precondition,
            subresource,
            dry_run,
            tracking: Tracking::Update(manager),
        };
        self.guaranteed_update(target, |current| {
            let patched = if strategic {
                patch::strategic_merge_patch(info.kind(), current, body)?
            } else {
                let mut patched = current.clone();
                json_patch::merge(&mut patched, body);
                patched
            };
            state.prune_patched(patched, strict)
        })
        .await
    }

    /// An RFC 6902 JSON patch. Its operations apply in order to the current object; a
    /// failing operation (a `test` that does not hold, a path that does not exist) fails the
    /// whole patch with 422, as in Kubernetes, and writes nothing. A `test` of
    /// `/metadata/resourceVersion` makes the patch conditional.
    async fn json_patch_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
        operations: &json_patch::Patch,
        params: &PatchParams,
        subresource: Subresource,
    ) -> Result<Value> {
        let info = &state.info;
        let strict = matches!(params.field_validation, Some(ValidationDirective::Strict));
        let target = UpdateTarget {
            state,
            namespace,
            name,
            precondition: None,
            subresource,
            dry_run: params.dry_run,
            tracking: Tracking::Update(params.field_manager.as_deref()),
        };
        self.guaranteed_update(target, |current| {
            let mut patched = current.clone();
            json_patch::patch(&mut patched, &operations.0).map_err(|e| Error::Invalid {
                kind: info.qualified_kind(),
                name: name.to_string(),
                causes: vec![FieldError::invalid(
                    e.path.to_string(),
                    Value::Null,
                    format!("the JSON patch does not apply: {}", e.kind),
                )],
            })?;
            state.prune_patched(patched, strict)
        })
        .await
    }
}

/// An update's object must be the one addressed: same name, same namespace.
pub(super) fn check_identity(
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    object: &mut Value,
) -> Result<()> {
    pin_namespace(info, namespace, object)?;
    match object::name(object) {
        Some(found) if found == name => Ok(()),
        Some(found) => Err(Error::bad_field(
            "metadata.name",
            format!(
                "the name of the object ({found}) does not match the name on the request ({name})"
            ),
        )),
        None => {
            object::set_meta(object, "name", Some(Value::String(name.to_string())));
            Ok(())
        }
    }
}

/// Carries over what an update may not change, and applies the update rules:
///
/// - the kind's strategy decides what each part may change (by default a status update keeps
///   everything but `status`, and an update of the object keeps the stored `status` when the
///   kind has a status subresource);
/// - `uid` (empty means "the same"), `creationTimestamp`, the deletion fields and `generation`
///   come from the stored object; `generation` grows by one when the tracked content changes;
/// - an object being deleted may not gain finalizers.
///
/// Errors: [`Error::Invalid`] for another `uid` or new finalizers on an object being deleted.
pub(super) fn prepare_update(
    state: &ResourceState,
    current: &Value,
    updated: &mut Value,
    subresource: Subresource,
) -> Result<()> {
    let info = &state.info;
    if subresource == Subresource::Status {
        state.strategy().prepare_status_update(current, updated);
        return Ok(());
    }
    if subresource == Subresource::Approval {
        state.strategy().prepare_approval_update(current, updated);
        return Ok(());
    }
    if subresource == Subresource::EphemeralContainers {
        state
            .strategy()
            .prepare_ephemeral_containers_update(current, updated);
        return Ok(());
    }
    let invalid = |cause: FieldError| Error::Invalid {
        kind: info.qualified_kind(),
        name: object::name(current).unwrap_or_default().to_string(),
        causes: vec![cause],
    };
    let old_uid = object::meta_str(current, "uid");
    match object::meta_str(updated, "uid") {
        Some(uid) if Some(uid) != old_uid => {
            return Err(invalid(FieldError::invalid(
                "metadata.uid",
                uid,
                "field is immutable",
            )))
        }
        _ => {}
    }
    if object::is_deleting(current) {
        let before = object::finalizers(current);
        let added: Vec<String> = object::finalizers(updated)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(invalid(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new \
                     finalizers {added:?}"
                ),
            )));
        }
    }
    let old_metadata = object::metadata(current).cloned().unwrap_or_default();
    let metadata = object::metadata_mut(updated);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_metadata.get(field) {
            Some(value) => metadata.insert(field.into(), value.clone()),
            None => metadata.remove(field),
        };
    }
    state.strategy().prepare_main_update(info, current, updated);
    if let Some(generation) = object::generation(current) {
        if tracked_content_changed(info, current, updated) {
            object::set_meta(updated, "generation", Some((generation + 1).into()));
        }
    }
    Ok(())
}

/// Whether anything `metadata.generation` tracks differs: every top-level field but
/// `apiVersion`, `kind`, `metadata` and, for kinds with a status subresource, `status`.
pub(super) fn tracked_content_changed(info: &ResourceInfo, before: &Value, after: &Value) -> bool {
    let ignored = |key: &str| {
        matches!(key, "apiVersion" | "kind" | "metadata")
            || (key == "status" && info.subresources().status)
    };
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return before != after;
    };
    let keys = before.keys().chain(after.keys()).filter(|k| !ignored(k));
    keys.into_iter()
        .any(|key| before.get(key) != after.get(key))
}
