//! The registry: typed Kubernetes objects over any [`Store`], serving the [`Client`] trait with
//! kube-apiserver's generic registry semantics.
//!
//! - **Kinds**: the built-in kinds ([`ResourceInfo::builtins`]) are served from the start;
//!   [`Registry::register`] adds custom ones. Each kind has a [`ResourceState`], where a watch
//!   cache attaches ([`ResourceState::attach_watch`]).
//! - **Storage**: JSON under [`ResourceInfo::key`] (see [`codec`]); an object's
//!   `resourceVersion` is its key's mod revision and is never stored.
//! - **Writes** go through the [admission chain](admission): mutating steps (Kubernetes'
//!   [`defaults`] first), then what the registry owns (`uid`, `creationTimestamp`,
//!   `generation`, a generated name, a Service's cluster IP), then validating steps
//!   ([validation] first), then one compare-and-swap transaction. A rejected request stores
//!   nothing.
//! - **Optimistic concurrency**: a write carrying a stale `metadata.resourceVersion` fails with
//!   [`Error::Conflict`]; a write without one is retried internally against the latest state,
//!   like kube-apiserver's `GuaranteedUpdate`.
//! - **Deletion**: preconditions, finalizers (`deletionTimestamp` first, removal once the last
//!   finalizer goes), and the `orphan`/`foregroundDeletion` finalizers of the propagation
//!   policies, left for the garbage collector.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::sync::Arc;
//! use capstan_api::{k8s_openapi::api::core::v1::ConfigMap, kube_core::params::PostParams, Api, Client};
//! use capstan_apiserver::registry::Registry;
//! use capstan_store::memory::MemoryStore;
//!
//! let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
//! let mut config = ConfigMap::default();
//! config.metadata.generate_name = Some("settings-".into());
//! let created = config_maps.create(&PostParams::default(), &config).await?;
//! assert!(created.metadata.name.unwrap().starts_with("settings-"));
//! assert!(created.metadata.uid.is_some());
//! # Ok::<(), capstan_api::Error>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

pub mod admission;
pub mod defaults;
pub mod patch;
pub mod validation;

mod list;
mod names;
mod object;
mod service_ips;
pub(crate) mod storage;

#[cfg(test)]
pub(crate) mod test_support;

use std::{collections::HashMap, fmt, net::Ipv4Addr, sync::Arc};

use async_trait::async_trait;
use capstan_api::{
    client::Deletion,
    kube_core::{
        params::{
            DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
            ValidationDirective, WatchParams,
        },
        DynamicObject, ObjectList,
    },
    Client, Error, FieldError, ResourceInfo, Result, WatchStream,
};
use capstan_store::{KeyValue, Revision, Store, StoreExt};
use parking_lot::RwLock;
use serde_json::Value;

use crate::cached_watch::CachedWatchSource;
use crate::codec;
use crate::schema::{strict_decoding_error, Keys, KindSchema, Schemas};
use crate::watch_cache::WatchCacheOptions;

pub use admission::{AdmissionChain, AdmissionPhase, AdmissionRequest, AdmissionStep, Operation};
pub use service_ips::{ServiceCidr, DEFAULT_SERVICE_CIDR};

use admission::Operation as Op;
use service_ips::{ServiceIpAllocator, Unavailable};
use storage::{store_error, write_error, Companions, WriteFailure};

/// How many times a write is retried internally on a concurrent change (or a generated name
/// or cluster IP taken meanwhile) before it gives up with [`Error::Conflict`].
const MAX_WRITE_ATTEMPTS: usize = 32;

/// The finalizer that makes the garbage collector orphan an object's dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete an object's dependents first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// A source of watch events for one kind, such as the watch cache. Attach one with
/// [`ResourceState::attach_watch`]; [`Client::watch`] on the registry then delegates to it.
///
/// Same contract as [`Client::watch`], for the kind it is attached to.
#[async_trait]
pub trait WatchSource: Send + Sync + 'static {
    /// Watches objects of the kind in `namespace` (`None`: all) matching `params`' selectors,
    /// after `resource_version`.
    async fn watch(
        &self,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream>;

    /// The same watch with each object already encoded as JSON, shared between watchers where
    /// the source can share it (the watch cache), so a server writes bytes to each connection
    /// instead of decoding and encoding per watcher.
    ///
    /// `Ok(None)`, the default: this source serves decoded objects only; use
    /// [`watch`](WatchSource::watch).
    async fn watch_encoded(
        &self,
        _namespace: Option<&str>,
        _params: &WatchParams,
        _resource_version: &str,
    ) -> Result<Option<EncodedWatchStream>> {
        Ok(None)
    }
}

/// One watch event whose object is JSON already; see [`WatchSource::watch_encoded`].
#[derive(Debug, Clone)]
pub struct EncodedWatchEvent {
    /// The event's `type`: `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`.
    pub event_type: &'static str,
    /// The object's JSON, as the event's `object`.
    pub object: bytes::Bytes,
}

/// A stream of [`EncodedWatchEvent`]s; an error ends it, as in [`Client::watch`].
pub type EncodedWatchStream = futures::stream::BoxStream<'static, Result<EncodedWatchEvent>>;

/// What the registry knows about one served kind: its description and, once attached, its
/// watch source.
pub struct ResourceState {
    info: ResourceInfo,
    builtin: bool,
    schema: Option<KindSchema<'static>>,
    watch: RwLock<Option<Arc<dyn WatchSource>>>,
}

impl fmt::Debug for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceState")
            .field("resource", &self.info.qualified_resource())
            .field("builtin", &self.builtin)
            .field("watch_attached", &self.watch.read().is_some())
            .finish()
    }
}

impl ResourceState {
    fn new(info: ResourceInfo) -> Self {
        let builtin = ResourceInfo::builtin(info.group(), info.kind()).is_some();
        let schema = builtin.then(|| Schemas::builtin().of(&info)).flatten();
        ResourceState {
            info,
            builtin,
            schema,
            watch: RwLock::new(None),
        }
    }

    /// The kind's description, as registered.
    pub fn info(&self) -> &ResourceInfo {
        &self.info
    }

    /// Whether this is a Kubernetes built-in kind (with defaults, validation and strategic
    /// merge patch), rather than a custom one.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Makes `source` serve watches of this kind, replacing any earlier one.
    pub fn attach_watch(&self, source: Arc<dyn WatchSource>) {
        *self.watch.write() = Some(source);
    }

    /// The attached watch source, if any.
    pub fn watch_source(&self) -> Option<Arc<dyn WatchSource>> {
        self.watch.read().clone()
    }

    /// Drops the fields the kind's schema does not know (built-in kinds only, as Kubernetes'
    /// decoder does), returning their paths.
    fn prune(&self, object: &mut Value) -> Vec<String> {
        match &self.schema {
            Some(schema) => schema.prune(object, Keys::Object),
            None => Vec::new(),
        }
    }

    /// A patch's result with unknown fields dropped; under `strict`, refused with
    /// [`Error::BadRequest`] instead when it has any.
    fn prune_patched(&self, mut patched: Value, strict: bool) -> Result<Value> {
        let unknown = self.prune(&mut patched);
        if strict && !unknown.is_empty() {
            return Err(strict_decoding_error(&self.info, &unknown));
        }
        Ok(patched)
    }

    fn is_service(&self) -> bool {
        self.info.group().is_empty() && self.info.kind() == "Service"
    }
}

/// Which part of an object an update writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subresource {
    /// The object; `status` is kept from the stored object when the kind has a status
    /// subresource.
    Main,
    /// Only `status`.
    Status,
}

/// The target and rules of one update.
struct UpdateTarget<'a> {
    state: &'a ResourceState,
    namespace: Option<&'a str>,
    name: &'a str,
    /// The client's `resourceVersion`: the write must be based on exactly that revision.
    precondition: Option<Revision>,
    subresource: Subresource,
    dry_run: bool,
}

/// The Kubernetes object registry over a [`Store`]; see the [module docs](self).
///
/// Implements [`Client`], so `Arc::new(registry)` serves every typed
/// [`Api<K>`](capstan_api::Api). All methods are safe to call concurrently; several registries
/// may share one store.
pub struct Registry {
    store: Arc<dyn Store>,
    kinds: RwLock<HashMap<(String, String, String), Arc<ResourceState>>>,
    admission: AdmissionChain,
    service_ips: ServiceIpAllocator,
    watch_cache: WatchCacheOptions,
}

fn cached_watch(
    store: &Arc<dyn Store>,
    state: &ResourceState,
    options: &WatchCacheOptions,
) -> Arc<dyn WatchSource> {
    Arc::new(CachedWatchSource::new(
        store.clone(),
        state.info.clone(),
        options.clone(),
    ))
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds.read().len())
            .field("admission", &self.admission)
            .field("service_cidr", &self.service_ips.cidr())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over `store` serving every built-in kind, with the built-in admission chain
    /// ([`AdmissionChain::builtin`]) and the default service CIDR (`10.96.0.0/12`).
    ///
    /// Every kind's watches are served by its own [`WatchCache`](crate::watch_cache::WatchCache),
    /// started on the kind's first watch ([`CachedWatchSource`]).
    ///
    /// Nothing is read from the store until the first request.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let watch_cache = WatchCacheOptions::default();
        let kinds = ResourceInfo::builtins()
            .map(|info| {
                let state = Arc::new(ResourceState::new(info));
                state.attach_watch(cached_watch(&store, &state, &watch_cache));
                (kind_key(&state.info), state)
            })
            .collect();
        Registry {
            store,
            kinds: RwLock::new(kinds),
            admission: AdmissionChain::builtin(),
            service_ips: ServiceIpAllocator::new(ServiceCidr::default()),
            watch_cache,
        }
    }

    /// Tunes the watch caches of every kind (window, watcher buffer, bookmark interval);
    /// call it before the first watch.
    #[must_use]
    pub fn with_watch_cache(mut self, options: WatchCacheOptions) -> Self {
        for state in self.kinds.read().values() {
            state.attach_watch(cached_watch(&self.store, state, &options));
        }
        self.watch_cache = options;
        self
    }

    /// Replaces the admission chain. Without [`Defaulting`](admission::Defaulting) and
    /// [`Validation`](admission::Validation) in it, built-in kinds are stored without
    /// Kubernetes' defaults and checks.
    #[must_use]
    pub fn with_admission(mut self, chain: AdmissionChain) -> Self {
        self.admission = chain;
        self
    }

    /// Appends a step to the admission chain (after the built-in step of its phase).
    #[must_use]
    pub fn add_admission(mut self, step: impl AdmissionStep) -> Self {
        self.admission.push(Arc::new(step));
        self
    }

    /// Allocates Service cluster IPs from `cidr` instead of `10.96.0.0/12`. Addresses already
    /// held by stored Services stay theirs, whatever the range.
    #[must_use]
    pub fn with_service_cidr(mut self, cidr: ServiceCidr) -> Self {
        self.service_ips = ServiceIpAllocator::new(cidr);
        self
    }

    /// Serves `resource` from now on (a custom kind, or a built-in one redescribed), with a
    /// watch cache of its own, and returns its state. Re-registering a kind replaces its
    /// description and starts a fresh watch cache; stored objects are untouched.
    pub fn register(&self, resource: ResourceInfo) -> Arc<ResourceState> {
        let state = Arc::new(ResourceState::new(resource));
        state.attach_watch(cached_watch(&self.store, &state, &self.watch_cache));
        self.kinds
            .write()
            .insert(kind_key(&state.info), state.clone());
        state
    }

    /// The state of a served kind, matched on group, version and plural.
    ///
    /// Errors: [`Error::NotFound`] (with an empty name) when the kind is not served.
    pub fn resource_state(&self, resource: &ResourceInfo) -> Result<Arc<ResourceState>> {
        self.kinds
            .read()
            .get(&kind_key(resource))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                resource: resource.qualified_resource(),
                name: String::new(),
            })
    }

    /// Every served kind, in no particular order.
    pub fn resources(&self) -> Vec<ResourceInfo> {
        self.kinds
            .read()
            .values()
            .map(|state| state.info.clone())
            .collect()
    }

    /// The store objects live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Watches `resource` as [`Client::watch`] does, with each object already encoded as JSON
    /// (shared with every other watcher when the watch cache serves the kind).
    ///
    /// `Ok(None)` when the kind's watch source serves decoded objects only (use
    /// [`Client::watch`]). Errors: as [`Client::watch`].
    pub async fn watch_encoded(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<Option<EncodedWatchStream>> {
        let state = self.resource_state(resource)?;
        match state.watch_source() {
            Some(source) => {
                source
                    .watch_encoded(namespace, params, resource_version)
                    .await
            }
            None => Ok(None),
        }
    }

    /// The admission chain every write passes.
    pub fn admission(&self) -> &AdmissionChain {
        &self.admission
    }

    /// The range Service cluster IPs come from.
    pub fn service_cidr(&self) -> ServiceCidr {
        self.service_ips.cidr()
    }

    // -----------------------------------------------------------------------------------------
    // get

    async fn get_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        let info = &state.info;
        let key = info.key(namespace, name)?;
        let kv = self.read(info, &key, name).await?;
        let mut object = codec::decode(&kv)?;
        object::set_types(info, &mut object);
        Ok(object)
    }

    /// Reads `key`. Errors: [`Error::NotFound`] when missing.
    async fn read(&self, info: &ResourceInfo, key: &str, name: &str) -> Result<KeyValue> {
        self.store
            .get(key.to_string())
            .await
            .map_err(|e| store_error(e, info, name))?
            .ok_or_else(|| not_found(info, name))
    }

    // -----------------------------------------------------------------------------------------
    // create

    async fn create_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value> {
        let info = &state.info;
        object::check_types(info, &mut object)?;
        state.prune(&mut object);
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
        object::check_types(info, &mut object)?;
        pin_namespace(info, namespace, &mut object)?;
        prepare_create(state, &mut object);

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
        if state.is_service() {
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
            let plan = if state.is_service() {
                self.plan_cluster_ip(info, &mut candidate, None, &name)?
            } else {
                IpPlan::none()
            };
            let request = AdmissionRequest {
                name: &name,
                ..request
            };
            self.admission.validate(&request, &candidate).await?;
            if dry_run {
                return Ok(candidate);
            }
            let bytes = codec::encode(&candidate)?;
            let companions = plan.companions(namespace, &name);
            match storage::create(&*self.store, &key, bytes, &companions).await {
                Ok(kv) => {
                    plan.commit();
                    let mut created = codec::decode(&kv)?;
                    object::set_types(info, &mut created);
                    return Ok(created);
                }
                Err(WriteFailure::Exists) if generate_prefix.is_some() => {
                    last_error = Some(write_error(WriteFailure::Exists, info, &name));
                }
                Err(WriteFailure::CompanionTaken) => {
                    // Another registry holds the address: it stays marked as used here.
                    let explicit = plan.explicit;
                    let ip = plan.taken_elsewhere();
                    if explicit {
                        return Err(ip_taken(info, &name, ip));
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

    // -----------------------------------------------------------------------------------------
    // update, update_status, patch

    /// Kubernetes' `GuaranteedUpdate`: reads the object, computes the new one with
    /// `transform`, runs admission and the registry's rules, and writes it with
    /// compare-and-swap, retrying from a fresh read when someone else wrote first (unless the
    /// client pinned a `resourceVersion`: then that is a [`Error::Conflict`]).
    async fn guaranteed_update<F>(&self, target: UpdateTarget<'_>, transform: F) -> Result<Value>
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
        } = target;
        let info = &state.info;
        let key = info.key(namespace, name)?;
        let services = state.is_service() && subresource == Subresource::Main;
        if services {
            self.service_ips.ensure_loaded(&self.store, info).await?;
        }
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let kv = self.read(info, &key, name).await?;
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(conflict(info, name));
            }
            let current = codec::decode(&kv)?;
            let mut updated = transform(&current)?;
            object::check_types(info, &mut updated)?;
            check_identity(info, namespace, name, &mut updated)?;
            let request = AdmissionRequest {
                operation: Op::Update,
                subresource: (subresource == Subresource::Status).then_some("status"),
                resource: info,
                namespace,
                name,
                old_object: Some(&current),
                dry_run,
            };
            self.admission.mutate(&request, &mut updated).await?;
            object::check_types(info, &mut updated)?;
            check_identity(info, namespace, name, &mut updated)?;
            prepare_update(state, &current, &mut updated, subresource)?;
            let plan = if services {
                self.plan_cluster_ip(info, &mut updated, Some(&current), name)?
            } else {
                IpPlan::none()
            };
            self.admission.validate(&request, &updated).await?;
            codec::set_resource_version(&mut updated, kv.mod_revision);
            if updated == current {
                // Nothing changed: like Kubernetes, write nothing and keep the revision.
                return Ok(updated);
            }
            if dry_run {
                return Ok(updated);
            }
            let bytes = codec::encode(&updated)?;
            let finishing_deletion = object::is_deleting(&updated)
                && object::finalizers(&updated).is_empty()
                && object::grace_is_over(&updated);
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
                    object::set_types(info, &mut stored);
                    return Ok(stored);
                }
                Err(WriteFailure::Stale) => {
                    if precondition.is_some() {
                        return Err(conflict(info, name));
                    }
                }
                Err(WriteFailure::CompanionTaken) => {
                    let explicit = plan.explicit;
                    let ip = plan.taken_elsewhere();
                    if explicit {
                        return Err(ip_taken(info, name, ip));
                    }
                }
                Err(failure) => {
                    return Err(write_error(failure, info, name));
                }
            }
        }
        Err(conflict(info, name))
    }

    async fn update_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        mut object: Value,
        subresource: Subresource,
        dry_run: bool,
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
        };
        self.guaranteed_update(target, |_| Ok(object.clone())).await
    }

    async fn patch_object(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<Value>,
        params: &PatchParams,
    ) -> Result<Value> {
        let dry_run = params.dry_run;
        let strict = matches!(params.field_validation, Some(ValidationDirective::Strict));
        let info = &state.info;
        let (body, strategic) = match patch {
            Patch::Json(operations) => {
                return self
                    .json_patch_object(state, namespace, name, operations, dry_run, strict)
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
            Patch::Apply(_) => {
                return Err(Error::UnsupportedMediaType {
                    message: "server-side apply (application/apply-patch+yaml) is not supported \
                              yet; use a JSON merge or strategic merge patch"
                        .into(),
                })
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
            subresource: Subresource::Main,
            dry_run,
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
        dry_run: bool,
        strict: bool,
    ) -> Result<Value> {
        let info = &state.info;
        let target = UpdateTarget {
            state,
            namespace,
            name,
            precondition: None,
            subresource: Subresource::Main,
            dry_run,
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

    // -----------------------------------------------------------------------------------------
    // delete

    async fn delete_object(
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
            let grace = graceful_deletion_seconds(info, &current, params);
            let grace_left = match object::metadata(&current)
                .and_then(|m| m.get("deletionGracePeriodSeconds"))
                .and_then(Value::as_i64)
            {
                Some(left) if object::is_deleting(&current) => left,
                _ => 0,
            };
            if !finalizers.is_empty() || grace > 0 || grace_left > 0 {
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
                } else if grace < grace_left {
                    // A shorter grace period cuts the wait (the kubelet's final delete: 0).
                    deadline(&mut pending, grace);
                }
                if finalizers.is_empty() && object::grace_is_over(&pending) {
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
                .is_service()
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

    // -----------------------------------------------------------------------------------------
    // Service cluster IPs

    /// Settles a Service's `spec.clusterIP` before validation: keeps the one it holds,
    /// reserves a requested or the next free address, or frees it when the Service becomes
    /// `ExternalName`. Dropping the returned plan without [`IpPlan::commit`] gives back what it
    /// reserved.
    fn plan_cluster_ip(
        &self,
        info: &ResourceInfo,
        service: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<IpPlan<'_>> {
        let invalid = |cause: FieldError| Error::Invalid {
            kind: info.qualified_kind(),
            name: name.to_string(),
            causes: vec![cause],
        };
        let old_ip = old
            .and_then(|old| object::at(old, "spec.clusterIP"))
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .map(str::to_string);
        let spec = object::at_mut(service, "spec");
        let service_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let cluster_ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .map(str::to_string);
        let first_of_list = spec
            .get("clusterIPs")
            .and_then(|ips| ips.get(0))
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .map(str::to_string);
        if let (Some(single), Some(first)) = (&cluster_ip, &first_of_list) {
            if single != first {
                return Err(invalid(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    first.as_str(),
                    "must match `clusterIP`",
                )));
            }
        }
        let requested = cluster_ip.or(first_of_list);

        if service_type == "ExternalName" {
            if requested.is_some() && requested != old_ip {
                return Err(invalid(FieldError::forbidden(
                    "spec.clusterIP",
                    "may not be set when `type` is 'ExternalName'",
                )));
            }
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(field);
            }
            return Ok(IpPlan {
                released: old_ip.and_then(|ip| ip.parse().ok()),
                ..self.ip_plan()
            });
        }
        if let Some(old_ip) = old_ip {
            if requested.as_ref().is_some_and(|ip| *ip != old_ip) {
                return Err(invalid(FieldError::invalid(
                    "spec.clusterIP",
                    requested.unwrap_or_default(),
                    "field is immutable",
                )));
            }
            set_cluster_ip(spec, &old_ip);
            return Ok(IpPlan::none());
        }
        let (address, plan) = match requested.as_deref() {
            Some("None") => ("None".to_string(), IpPlan::none()),
            None => match self.service_ips.reserve_next() {
                Ok(ip) => (
                    ip.to_string(),
                    IpPlan {
                        reserved: Some(ip),
                        ..self.ip_plan()
                    },
                ),
                Err(_) => {
                    return Err(Error::internal(format!(
                        "failed to allocate a serviceIP: range {} is full",
                        self.service_ips.cidr()
                    )))
                }
            },
            Some(wanted) => {
                match self.service_ips.reserve(wanted) {
                    Ok(ip) => (
                        ip.to_string(),
                        IpPlan {
                            reserved: Some(ip),
                            explicit: true,
                            ..IpPlan::none()
                        },
                    ),
                    Err(why) => {
                        let detail = match why {
                            Unavailable::Malformed => {
                                "must be a valid IP address, (e.g. 10.9.8.7)".to_string()
                            }
                            Unavailable::Taken => {
                                format!("failed to allocate IP {wanted}: provided IP is already allocated")
                            }
                            Unavailable::OutOfRange | Unavailable::Exhausted => format!(
                                "failed to allocate IP {wanted}: provided IP ({wanted}) is not in \
                             the valid range. The range of valid IPs is {}",
                                self.service_ips.cidr()
                            ),
                        };
                        return Err(invalid(FieldError::invalid(
                            "spec.clusterIP",
                            wanted,
                            detail,
                        )));
                    }
                }
            }
        };
        set_cluster_ip(spec, &address);
        Ok(plan)
    }

    /// An empty plan on this registry's allocator.
    fn ip_plan(&self) -> IpPlan<'_> {
        IpPlan {
            allocator: Some(&self.service_ips),
            ..IpPlan::none()
        }
    }
}

/// What a write does to cluster IP allocations. Dropped without [`commit`](Self::commit), it
/// gives back the address it reserved, so no failure path can leak one.
#[derive(Debug)]
struct IpPlan<'a> {
    allocator: Option<&'a ServiceIpAllocator>,
    /// Reserved in memory for this write; recorded in the store with it.
    reserved: Option<Ipv4Addr>,
    /// Whether the client asked for `reserved` by address.
    explicit: bool,
    /// Given up by this write; its record is deleted with it.
    released: Option<Ipv4Addr>,
}

impl IpPlan<'_> {
    /// A plan that touches no address.
    fn none() -> Self {
        IpPlan {
            allocator: None,
            reserved: None,
            explicit: false,
            released: None,
        }
    }

    /// The write was stored: keep the reserved address, free the released one.
    fn commit(mut self) {
        self.reserved = None;
        if let (Some(allocator), Some(ip)) = (self.allocator, self.released) {
            allocator.release(ip);
        }
    }

    /// The store says someone else holds the reserved address: keep it marked as used.
    fn taken_elsewhere(mut self) -> Option<Ipv4Addr> {
        self.reserved.take()
    }

    fn companions(&self, namespace: Option<&str>, name: &str) -> Companions {
        let creates = self
            .reserved
            .map(|ip| {
                let record = ServiceIpAllocator::record(ip, namespace.unwrap_or_default(), name);
                let bytes = serde_json::to_vec(&record).expect("a record serializes");
                (ServiceIpAllocator::key(ip), bytes.into())
            })
            .into_iter()
            .collect();
        let deletes = self
            .released
            .map(ServiceIpAllocator::key)
            .into_iter()
            .collect();
        Companions { creates, deletes }
    }
}

impl Drop for IpPlan<'_> {
    fn drop(&mut self) {
        if let (Some(allocator), Some(ip)) = (self.allocator, self.reserved) {
            allocator.release(ip);
        }
    }
}

fn set_cluster_ip(spec: &mut serde_json::Map<String, Value>, address: &str) {
    spec.insert("clusterIP".into(), Value::String(address.to_string()));
    spec.insert(
        "clusterIPs".into(),
        Value::Array(vec![Value::String(address.to_string())]),
    );
    spec.entry("ipFamilies")
        .or_insert_with(|| serde_json::json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| Value::String("SingleStack".into()));
}

fn ip_taken(info: &ResourceInfo, name: &str, ip: Option<Ipv4Addr>) -> Error {
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    Error::Invalid {
        kind: info.qualified_kind(),
        name: name.to_string(),
        causes: vec![FieldError::invalid(
            "spec.clusterIP",
            ip.as_str(),
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )],
    }
}

// ---------------------------------------------------------------------------------------------
// The rules the registry itself owns, whatever the admission chain.

fn kind_key(info: &ResourceInfo) -> (String, String, String) {
    (
        info.group().to_string(),
        info.version().to_string(),
        info.plural().to_string(),
    )
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

fn not_found(info: &ResourceInfo, name: &str) -> Error {
    Error::NotFound {
        resource: info.qualified_resource(),
        name: name.to_string(),
    }
}

fn conflict(info: &ResourceInfo, name: &str) -> Error {
    Error::Conflict {
        resource: info.qualified_resource(),
        name: name.to_string(),
        message: Error::OBJECT_MODIFIED.into(),
    }
}

/// Checks the call's namespace against the kind's scope and the object's
/// `metadata.namespace`, and fills the latter in.
///
/// Errors: [`Error::BadRequest`] for a namespace on a cluster-scoped kind, none on a
/// namespaced one, or an object naming another namespace.
fn pin_namespace(info: &ResourceInfo, namespace: Option<&str>, object: &mut Value) -> Result<()> {
    match (info.namespaced(), namespace) {
        (true, None) => {
            return Err(Error::bad_field(
                "metadata.namespace",
                format!("a namespace is required for {}", info.qualified_resource()),
            ))
        }
        (false, Some(_)) => {
            return Err(Error::bad_field(
                "metadata.namespace",
                format!(
                    "{} is cluster-scoped and takes no namespace",
                    info.qualified_resource()
                ),
            ))
        }
        _ => {}
    }
    match (namespace, object::meta_str(object, "namespace")) {
        (Some(call), Some(given)) if call != given => Err(namespace_mismatch()),
        (None, Some(_)) => Err(namespace_mismatch()),
        (Some(call), None) => {
            object::set_meta(object, "namespace", Some(Value::String(call.to_string())));
            Ok(())
        }
        _ => Ok(()),
    }
}

fn namespace_mismatch() -> Error {
    Error::bad_field(
        "metadata.namespace",
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}

/// An update's object must be the one addressed: same name, same namespace.
fn check_identity(
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

/// The fields a create never takes from the client: a fresh `uid` and `creationTimestamp`,
/// `generation: 1` (for kinds with a spec, and every custom kind), no deletion fields and no
/// `resourceVersion`.
fn prepare_create(state: &ResourceState, object: &mut Value) {
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

/// Carries over what an update may not change, and applies the update rules:
///
/// - a status update keeps everything but `status`; an update of the object keeps the stored
///   `status` when the kind has a status subresource;
/// - `uid` (empty means "the same"), `creationTimestamp`, the deletion fields and `generation`
///   come from the stored object; `generation` grows by one when the tracked content changes;
/// - an object being deleted may not gain finalizers.
///
/// Errors: [`Error::Invalid`] for another `uid` or new finalizers on an object being deleted.
fn prepare_update(
    state: &ResourceState,
    current: &Value,
    updated: &mut Value,
    subresource: Subresource,
) -> Result<()> {
    let info = &state.info;
    if subresource == Subresource::Status {
        let status = updated
            .as_object_mut()
            .and_then(|root| root.remove("status"));
        let mut merged = current.clone();
        if let Some(root) = merged.as_object_mut() {
            match status {
                Some(status) => root.insert("status".into(), status),
                None => root.remove("status"),
            };
        }
        *updated = merged;
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
    if info.subresources().status {
        if let Some(root) = updated.as_object_mut() {
            match current.get("status") {
                Some(status) => root.insert("status".into(), status.clone()),
                None => root.remove("status"),
            };
        }
    }
    if let Some(generation) = object::generation(current) {
        if tracked_content_changed(info, current, updated) {
            object::set_meta(updated, "generation", Some((generation + 1).into()));
        }
    }
    Ok(())
}

/// Whether anything `metadata.generation` tracks differs: every top-level field but
/// `apiVersion`, `kind`, `metadata` and, for kinds with a status subresource, `status`.
fn tracked_content_changed(info: &ResourceInfo, before: &Value, after: &Value) -> bool {
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

/// Checks a delete's preconditions against the stored object.
///
/// Errors: [`Error::Conflict`] with Kubernetes' precondition message.
fn check_preconditions(
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
/// How long a Pod gets to terminate before it is deleted, as kube-apiserver's pod strategy
/// decides: the request's `gracePeriodSeconds`, else the Pod's
/// `spec.terminationGracePeriodSeconds` (30 by default); 0 for a Pod no node runs (unscheduled,
/// or already Succeeded or Failed), and for every other kind. With a grace period the delete
/// only sets `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds`; the kubelet
/// deletes again with 0 once the containers are stopped.
fn graceful_deletion_seconds(info: &ResourceInfo, pod: &Value, params: &DeleteParams) -> i64 {
    if !(info.group().is_empty() && info.kind() == "Pod") {
        return 0;
    }
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|node| !node.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    match params.grace_period_seconds {
        Some(seconds) => i64::from(seconds),
        None => pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
            .max(0),
    }
}

fn finalizers_for(policy: Option<&PropagationPolicy>, object: &Value) -> Vec<String> {
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

#[async_trait]
impl Client for Registry {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        object::to_dynamic(self.get_object(&state, namespace, name).await?)
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        let state = self.resource_state(resource)?;
        self.list_objects(&state, namespace, params).await
    }

    /// Creates an object; see [`Client::create`]. A client-set `resourceVersion` is a
    /// [`Error::BadRequest`]; `uid`, `creationTimestamp`, `generation` and the deletion fields
    /// are the registry's. With `generateName`, a taken name is retried with another.
    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        let object = object::from_dynamic(&state.info, object)?;
        let created = self
            .create_object(&state, namespace, object, params.dry_run)
            .await?;
        object::to_dynamic(created)
    }

    /// Replaces an object; see [`Client::update`]. Without `metadata.resourceVersion` the
    /// update is unconditional. Removing the last finalizer of an object being deleted deletes
    /// it; the returned object is then its last state.
    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        let object = object::from_dynamic(&state.info, object)?;
        let updated = self
            .update_object(&state, namespace, object, Subresource::Main, params.dry_run)
            .await?;
        object::to_dynamic(updated)
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        let object = object::from_dynamic(&state.info, object)?;
        let updated = self
            .update_object(
                &state,
                namespace,
                object,
                Subresource::Status,
                params.dry_run,
            )
            .await?;
        object::to_dynamic(updated)
    }

    /// Patches an object; see [`Client::patch`]. [`Patch::Apply`] (server-side apply) is not
    /// supported yet and fails with [`Error::UnsupportedMediaType`], as does
    /// [`Patch::Strategic`] on a custom kind. Fields the kind's schema does not know are
    /// dropped from the result, or, with `field_validation` set to `Strict`, refused with
    /// [`Error::BadRequest`] (nothing is written).
    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        let patched = self
            .patch_object(&state, namespace, name, patch, params)
            .await?;
        object::to_dynamic(patched)
    }

    /// Deletes an object; see [`Client::delete`]. `gracePeriodSeconds` is not used (every
    /// deletion is immediate once finalizers are gone); the `orphan` and `foregroundDeletion`
    /// finalizers added for the `Orphan` and `Foreground` policies are for the garbage
    /// collector to clear.
    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deletion> {
        let state = self.resource_state(resource)?;
        self.delete_object(&state, namespace, name, params)
            .await?
            .try_map(object::to_dynamic)
    }

    /// Delegates to the kind's [`WatchSource`]; fails with [`Error::MethodNotAllowed`] until
    /// one is attached.
    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream> {
        let state = self.resource_state(resource)?;
        match state.watch_source() {
            Some(source) => source.watch(namespace, params, resource_version).await,
            None => Err(Error::MethodNotAllowed {
                message: "watch is served by the watch cache, not attached yet".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
