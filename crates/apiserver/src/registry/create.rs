//! `create`: a new object through admission, with what the registry owns (`uid`,
//! `creationTimestamp`, `generation`, a generated name, the kind's allocations) filled in.

use capstan_api::{Error, FieldError, Result};
use serde_json::Value;

use super::{
    admission::{AdmissionRequest, Operation as Op},
    apply::{self, Tracking},
    codec, names, object,
    rules::pin_namespace,
    service_ips::IpPlan,
    storage::{self, write_error, WriteFailure},
    typed,
    update::Subresource,
    Registry, ResourceState, MAX_WRITE_ATTEMPTS,
};

impl Registry {
    /// Creates `object` in `namespace`: admission, the registry's fields, a generated name
    /// (retried when taken), the kind's allocations, then one transaction. With `dry_run`,
    /// returns what would be stored and stores nothing.
    #[cfg(test)]
    pub(super) async fn create_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        object: Value,
        dry_run: bool,
    ) -> Result<Value> {
        self.create_object_as(state, namespace, object, dry_run, Tracking::Update(None))
            .await
    }

    /// [`create_object`](Self::create_object), recording field ownership as `tracking` says.
    pub(super) async fn create_object_as(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
        tracking: Tracking<'_>,
    ) -> Result<Value> {
        let info = &state.info;
        object::check_types(info, &mut object)?;
        state.prune(&mut object);
        typed::decode(info, &object)?;
        pin_namespace(info, namespace, &mut object)?;
        if object::meta_str(&object, "resourceVersion").is_some() {
            return Err(Error::bad_field(
                "metadata.resourceVersion",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let request_name = object::name(&object).unwrap_or_default().to_string();
        let request = AdmissionRequest {
            operation: Op::Create,
            subresource: None,
            resource: info,
            namespace,
            name: &request_name,
            old_object: None,
            dry_run,
        };
        self.admission.mutate(&request, &mut object).await?;
        if self.admission.mutation_may_break_types() {
            typed::decode(info, &object)?;
        }
        object::check_types(info, &mut object)?;
        pin_namespace(info, namespace, &mut object)?;
        prepare_create(state, &mut object);
        apply::track(state, None, &mut object, tracking, Subresource::Main);

        let generate_prefix = match (
            object::name(&object),
            object::meta_str(&object, "generateName"),
        ) {
            (Some(_), _) => None,
            (None, Some(prefix)) => Some(prefix.to_string()),
            (None, None) => {
                return Err(Error::Invalid {
                    kind: info.qualified_kind(),
                    name: String::new(),
                    causes: vec![FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                })
            }
        };
        let strategy = state.strategy();
        if strategy.holds_cluster_ip() {
            self.service_ips.ensure_loaded(&self.store, info).await?;
        }

        let mut last_error = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut candidate = object.clone();
            if let Some(prefix) = &generate_prefix {
                object::set_meta(
                    &mut candidate,
                    "name",
                    Some(Value::String(names::generate_name(prefix))),
                );
            }
            let name = object::name(&candidate).unwrap_or_default().to_string();
            let key = info.key(namespace, &name)?;
            let plan = if strategy.holds_cluster_ip() {
                strategy.plan_cluster_ip(&self.service_ips, info, &mut candidate, None, &name)?
            } else {
                IpPlan::none()
            };
            let request = AdmissionRequest {
                name: &name,
                ..request
            };
            state.validate_custom(&candidate, None)?;
            self.admission.validate(&request, &candidate).await?;
            if dry_run {
                return Ok(candidate);
            }
            let bytes = codec::encode(&strategy.to_stored(&candidate))?;
            let companions = plan.companions(namespace, &name);
            match storage::create(&*self.store, &key, bytes, &companions).await {
                Ok(kv) => {
                    plan.commit();
                    let mut created = codec::decode(&kv)?;
                    strategy.to_served(&mut created);
                    object::set_types(info, &mut created);
                    return Ok(created);
                }
                Err(WriteFailure::Exists) if generate_prefix.is_some() => {
                    last_error = Some(write_error(WriteFailure::Exists, info, &name));
                }
                Err(WriteFailure::CompanionTaken) => {
                    // Another registry holds the address: it stays marked as used here.
                    if let Some(error) = plan.taken_elsewhere(info, &name) {
                        return Err(error);
                    }
                    // The next attempt picks another.
                    last_error = Some(write_error(WriteFailure::CompanionTaken, info, &name));
                }
                Err(failure) => {
                    return Err(write_error(failure, info, &name));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::internal("create made no attempt")))
    }
}

/// The fields a create never takes from the client: a fresh `uid` and `creationTimestamp`,
/// `generation: 1` (for kinds with a spec, and every custom kind), no deletion fields and no
/// `resourceVersion`.
pub(super) fn prepare_create(state: &ResourceState, object: &mut Value) {
    let tracks_generation = !state.builtin || object.get("spec").is_some();
    let metadata = object::metadata_mut(object);
    metadata.insert("uid".into(), Value::String(names::new_uid()));
    metadata.insert("creationTimestamp".into(), Value::String(names::now()));
    for field in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "generation",
        "selfLink",
    ] {
        metadata.remove(field);
    }
    if tracks_generation {
        metadata.insert("generation".into(), 1.into());
    }
}
