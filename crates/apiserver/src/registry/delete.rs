//! `delete`: preconditions, finalizers and the garbage collector's propagation policies, the
//! kind's graceful deletion, and the final removal.

use capstan_api::{
    client::Deletion,
    kube_core::params::{DeleteParams, PropagationPolicy},
    Error, ResourceInfo, Result,
};
use capstan_store::Revision;
use serde_json::Value;

use super::{
    admission::{AdmissionRequest, Operation as Op},
    codec, names, object,
    rules::conflict,
    service_ips::{self, ServiceIpAllocator},
    storage::{self, write_error, Companions, WriteFailure},
    Registry, ResourceState, FOREGROUND_FINALIZER, MAX_WRITE_ATTEMPTS, ORPHAN_FINALIZER,
};

impl Registry {
    /// Deletes `name`: checks preconditions, runs validating admission, then either marks the
    /// object as being deleted (finalizers left, a grace period from the kind's strategy, or
    /// what the strategy holds it with: a Namespace's `spec.finalizers`, which also turns it
    /// `Terminating`) or removes it with what it holds (a Service's cluster IP record).
    pub(super) async fn delete_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deletion<Value>> {
        let info = &state.info;
        let key = info.key(namespace, name)?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let kv = self.read(info, &key, name).await?;
            let mut current = codec::decode(&kv)?;
            object::set_types(info, &mut current);
            check_preconditions(info, name, params, &current, kv.mod_revision)?;
            let request = AdmissionRequest {
                operation: Op::Delete,
                subresource: None,
                resource: info,
                namespace,
                name,
                old_object: Some(&current),
                dry_run: params.dry_run,
            };
            self.admission.validate(&request, &current).await?;

            let finalizers = finalizers_for(params.propagation_policy.as_ref(), &current);
            let grace = state.strategy().graceful_deletion_seconds(&current, params);
            let grace_left = match object::metadata(&current)
                .and_then(|m| m.get("deletionGracePeriodSeconds"))
                .and_then(Value::as_i64)
            {
                Some(left) if object::is_deleting(&current) => left,
                _ => 0,
            };
            let held = state.strategy().holds_deletion(&current);
            if !finalizers.is_empty() || grace > 0 || grace_left > 0 || held {
                let mut pending = current.clone();
                object::set_finalizers(&mut pending, &finalizers);
                let deadline = |pending: &mut Value, grace: i64| {
                    object::set_meta(
                        pending,
                        "deletionTimestamp",
                        Some(names::in_seconds(grace).into()),
                    );
                    object::set_meta(pending, "deletionGracePeriodSeconds", Some(grace.into()));
                };
                if !object::is_deleting(&pending) {
                    if let Some(generation) = object::generation(&pending) {
                        object::set_meta(&mut pending, "generation", Some((generation + 1).into()));
                    }
                    deadline(&mut pending, grace);
                    state.strategy().prepare_deletion(&mut pending);
                } else if grace < grace_left {
                    // A shorter grace period cuts the wait (the kubelet's final delete: 0).
                    deadline(&mut pending, grace);
                }
                if finalizers.is_empty() && object::grace_is_over(&pending) && !held {
                    // Nothing holds it any more: delete below.
                    current = pending;
                } else {
                    if pending == current || params.dry_run {
                        return Ok(Deletion::Pending(pending));
                    }
                    let bytes = codec::encode(&pending)?;
                    let companions = Companions::default();
                    match storage::update(&*self.store, &key, bytes, kv.mod_revision, &companions)
                        .await
                    {
                        Ok(kv) => {
                            let mut stored = codec::decode(&kv)?;
                            object::set_types(info, &mut stored);
                            return Ok(Deletion::Pending(stored));
                        }
                        Err(WriteFailure::Stale) => continue,
                        Err(failure) => return Err(write_error(failure, info, name)),
                    }
                }
            }

            if params.dry_run {
                return Ok(Deletion::Deleted(current));
            }
            let held_ip = state
                .strategy()
                .holds_cluster_ip()
                .then(|| service_ips::cluster_ip(&current))
                .flatten();
            let companions = Companions {
                creates: Vec::new(),
                deletes: held_ip.map(ServiceIpAllocator::key).into_iter().collect(),
            };
            match storage::delete(&*self.store, &key, kv.mod_revision, &companions).await {
                Ok(revision) => {
                    if let Some(ip) = held_ip {
                        self.service_ips.release(ip);
                    }
                    codec::set_resource_version(&mut current, revision);
                    return Ok(Deletion::Deleted(current));
                }
                Err(WriteFailure::Stale) => continue,
                Err(failure) => return Err(write_error(failure, info, name)),
            }
        }
        Err(conflict(info, name))
    }
}

/// Checks a delete's preconditions against the stored object.
///
/// Errors: [`Error::Conflict`] with Kubernetes' precondition message.
pub(super) fn check_preconditions(
    info: &ResourceInfo,
    name: &str,
    params: &DeleteParams,
    current: &Value,
    revision: Revision,
) -> Result<()> {
    let Some(preconditions) = &params.preconditions else {
        return Ok(());
    };
    let failed = |message: String| Error::Conflict {
        resource: info.qualified_resource(),
        name: name.to_string(),
        message,
    };
    if let Some(uid) = &preconditions.uid {
        let actual = object::meta_str(current, "uid").unwrap_or_default();
        if uid != actual {
            return Err(failed(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
            )));
        }
    }
    if let Some(resource_version) = &preconditions.resource_version {
        let actual = codec::resource_version(revision);
        if *resource_version != actual {
            return Err(failed(format!(
                "Precondition failed: ResourceVersion in precondition: {resource_version}, \
                 ResourceVersion in object meta: {actual}"
            )));
        }
    }
    Ok(())
}

/// The finalizers an object keeps through a delete with `policy`, as kube-apiserver's
/// `deletionFinalizersForGarbageCollection`: `Orphan` adds `orphan`, `Foreground` adds
/// `foregroundDeletion`, `Background` removes both, no policy leaves them as they are.
pub(super) fn finalizers_for(policy: Option<&PropagationPolicy>, object: &Value) -> Vec<String> {
    let mut finalizers = object::finalizers(object);
    let (wanted, unwanted): (&[&str], &[&str]) = match policy {
        None => (&[], &[]),
        Some(PropagationPolicy::Orphan) => (&[ORPHAN_FINALIZER], &[FOREGROUND_FINALIZER]),
        Some(PropagationPolicy::Foreground) => (&[FOREGROUND_FINALIZER], &[ORPHAN_FINALIZER]),
        Some(PropagationPolicy::Background) => (&[], &[ORPHAN_FINALIZER, FOREGROUND_FINALIZER]),
    };
    finalizers.retain(|f| !unwanted.contains(&f.as_str()));
    for finalizer in wanted {
        if !finalizers.iter().any(|f| f == finalizer) {
            finalizers.push(finalizer.to_string());
        }
    }
    finalizers
}
