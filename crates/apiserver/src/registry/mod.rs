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
//! - **Kinds' own rules** (defaults, validation, what the status subresource may change, a
//!   Service's cluster IP, a Pod's graceful deletion) sit in one strategy per kind, in
//!   `kinds/`, looked up by group and kind; the registry keeps what every kind shares.
//! - **Optimistic concurrency**: a write carrying a stale `metadata.resourceVersion` fails with
//!   [`Error::Conflict`]; a write without one is retried internally against the latest state,
//!   like kube-apiserver's `GuaranteedUpdate`.
//! - **Deletion**: preconditions, finalizers (`deletionTimestamp` first, removal once the last
//!   finalizer goes), and the `orphan`/`foregroundDeletion` finalizers of the propagation
//!   policies, left for the garbage collector.
//!
//!
//! The module's files: this one holds the kinds' state, the registry and its [`Client`]
//! implementation; `create.rs`, `update.rs` (update, status, patches), `delete.rs` and
//! `list.rs` the verbs; `rules.rs` what the registry owns whatever the kind; `kinds/` the
//! per-kind strategies; [`defaults`], [`validation`] and [`admission`] the admission steps;
//! `service_ips.rs` the cluster IP allocator; `storage.rs`, `object.rs`, `names.rs` and
//! [`patch`] the helpers underneath.
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
pub mod apply;
pub mod bootstrap;
pub mod defaults;
pub mod patch;
pub mod validation;

mod create;
mod delete;
mod ephemeral;
mod eviction;
mod kinds;
mod list;
mod names;
mod object;
mod rules;
mod service_ips;
pub(crate) mod storage;
mod typed;
mod update;

#[cfg(test)]
pub(crate) mod test_support;

use std::{collections::HashMap, fmt, sync::Arc};

use async_trait::async_trait;
use capstan_api::{
    client::Deletion,
    kube_core::{
        params::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
        DynamicObject, ObjectList,
    },
    Client, Error, ResourceInfo, Result, WatchStream,
};
use capstan_store::{KeyValue, Store, StoreExt};
use parking_lot::RwLock;
use serde_json::Value;

use crate::codec;
use crate::schema::{strict_decoding_error, Keys, KindSchema, Schemas};
use crate::watch_cache::{CachedWatchSource, WatchCacheOptions};

pub use admission::{AdmissionChain, AdmissionPhase, AdmissionRequest, AdmissionStep, Operation};
pub(crate) use eviction::success_status as eviction_success_status;
pub use eviction::{
    EvictionError, BUDGET_REFUSAL, DISRUPTION_BUDGET_CAUSE, MAX_DISRUPTED_POD_SIZE,
    MULTIPLE_BUDGETS,
};
pub use service_ips::{ServiceCidr, DEFAULT_SERVICE_CIDR};

pub(crate) use kinds::KindStrategy;
use rules::{kind_key, not_found};
use service_ips::ServiceIpAllocator;
use storage::store_error;
use update::Subresource;

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
    /// The kind's own rules (defaults, validation, status, deletion) from the built-in table.
    builtin_strategy: &'static dyn KindStrategy,
    /// A custom resource's rules (its CRD's schema), used instead of the table's.
    custom: Option<Arc<crate::apiextensions::CustomResourceStrategy>>,
    watch: RwLock<Option<Arc<dyn WatchSource>>>,
    /// The schema server-side apply merges by, when set (see [`apply`]).
    apply_schema: RwLock<Option<Arc<apply::StructuralSchema>>>,
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
        let builtin_strategy = kinds::strategy_for(&info);
        ResourceState {
            info,
            builtin,
            schema,
            builtin_strategy,
            custom: None,
            watch: RwLock::new(None),
            apply_schema: RwLock::new(None),
        }
    }

    /// The kind's rules: a custom resource's own, else the built-in table's.
    pub(crate) fn strategy(&self) -> &dyn KindStrategy {
        match &self.custom {
            Some(custom) => &**custom,
            None => self.builtin_strategy,
        }
    }

    /// A custom resource's rules, when the kind is served for a CustomResourceDefinition.
    pub fn custom_resource(&self) -> Option<&crate::apiextensions::CustomResourceStrategy> {
        self.custom.as_deref()
    }

    /// Runs a custom resource's own validation (schema, CEL rules) on a write of `object`
    /// (`old`: the stored object on an update). Nothing for other kinds, whose rules run in
    /// the [`Validation`](admission::Validation) admission step.
    ///
    /// Errors: [`Error::Invalid`] with every problem found.
    fn validate_custom(&self, object: &Value, old: Option<&Value>) -> Result<()> {
        let Some(custom) = &self.custom else {
            return Ok(());
        };
        let mut causes = Vec::new();
        custom.validate(object, old, &mut causes);
        if causes.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid {
            kind: self.info.qualified_kind(),
            name: object::name(object).unwrap_or_default().to_string(),
            causes,
        })
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
        match (&self.schema, &self.custom) {
            (Some(schema), _) => schema.prune(object, Keys::Object),
            // A custom resource is pruned and defaulted by its CRD's schema.
            (None, Some(custom)) => custom.decode(object),
            (None, None) => Vec::new(),
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

/// Converts an object read from storage to the shape `resource` serves (the kind strategy's
/// `to_served`); the watch cache calls it on every object it caches. A custom kind's objects
/// take the served version's `apiVersion` (conversion strategy `None`).
pub(crate) fn to_served(resource: &ResourceInfo, object: &mut Value) {
    kinds::strategy_for(resource).to_served(object);
    if ResourceInfo::builtin(resource.group(), resource.kind()).is_some() {
        return;
    }
    if let Some(root) = object.as_object_mut() {
        if root.get("apiVersion").and_then(Value::as_str) != Some(&resource.api_version()) {
            root.insert("apiVersion".into(), Value::String(resource.api_version()));
        }
    }
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
    /// ([`AdmissionChain::builtin_over`] the store: a create in a missing namespace is 404,
    /// and the system namespaces are created on their first use) and the default service CIDR (`10.96.0.0/12`).
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
        let admission = AdmissionChain::builtin_over(store.clone());
        Registry {
            store,
            kinds: RwLock::new(kinds),
            admission,
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

    /// Serves a custom resource version `resource` with its CRD's rules, as
    /// [`register`](Self::register) does.
    pub(crate) fn register_custom(
        &self,
        resource: ResourceInfo,
        rules: Arc<crate::apiextensions::CustomResourceStrategy>,
    ) -> Arc<ResourceState> {
        let apply_schema = rules
            .schema()
            .map(|schema| Arc::new(apply::StructuralSchema::from_openapi(schema)));
        let mut state = ResourceState::new(resource);
        state.custom = Some(rules);
        let state = Arc::new(state);
        // Server-side apply merges a custom kind's lists as its CRD schema says.
        state.set_apply_schema(apply_schema);
        state.attach_watch(cached_watch(&self.store, &state, &self.watch_cache));
        self.kinds
            .write()
            .insert(kind_key(&state.info), state.clone());
        state
    }

    /// Patches the status of the object `name` (`PATCH .../{name}/status`): a JSON, merge or
    /// strategic merge patch, or a server-side apply of the status, of which only `status`
    /// changes are kept, as [`Client::update_status`] keeps them.
    ///
    /// Errors: as [`Client::patch`]; [`Error::NotFound`] when the kind has no status
    /// subresource or the object does not exist (a status apply never creates it).
    pub async fn patch_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        let state = self.resource_state(resource)?;
        let patched = self
            .patch_object(&state, namespace, name, patch, params, Subresource::Status)
            .await?;
        object::to_dynamic(patched)
    }

    /// Stops serving `resource` (matched on group, version and plural): its paths answer 404
    /// from now on; stored objects are untouched. Returns the state it had, if it was served.
    pub fn unregister(&self, resource: &ResourceInfo) -> Option<Arc<ResourceState>> {
        self.kinds.write().remove(&kind_key(resource))
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
        state.strategy().to_served(&mut object);
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
            .create_object_as(
                &state,
                namespace,
                object,
                params.dry_run,
                apply::Tracking::Update(params.field_manager.as_deref()),
            )
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
            .update_object(
                &state,
                namespace,
                object,
                Subresource::Main,
                params.dry_run,
                params.field_manager.as_deref(),
            )
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
                params.field_manager.as_deref(),
            )
            .await?;
        object::to_dynamic(updated)
    }

    /// Patches an object; see [`Client::patch`]. [`Patch::Apply`] is server-side apply (see
    /// [`apply`]); [`Patch::Strategic`] on a custom kind fails with
    /// [`Error::UnsupportedMediaType`]. Fields the kind's schema does not know are
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
            .patch_object(&state, namespace, name, patch, params, Subresource::Main)
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
            .try_map(|mut deleted| {
                state.strategy().to_served(&mut deleted);
                object::to_dynamic(deleted)
            })
    }

    /// Creates through a subresource; see [`Client::create_subresource`]. Served here:
    /// `pods/eviction` ([`Registry::evict`]; the answer is a `Success` Status, a budget's
    /// refusal is [`Error::TooManyRequests`], two budgets an [`Error::Internal`]). Other
    /// subresources: [`Error::MethodNotAllowed`].
    async fn create_subresource(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        if subresource == "eviction" && resource.group().is_empty() && resource.kind() == "Pod" {
            let eviction = serde_json::to_value(object)
                .map_err(|e| Error::bad_request(format!("encoding the Eviction: {e}")))?;
            self.evict(
                namespace.unwrap_or_default(),
                name,
                &eviction,
                params.dry_run,
            )
            .await
            .map_err(EvictionError::into_api_error)?;
            return object::to_dynamic(eviction::success_status());
        }
        Err(Error::MethodNotAllowed {
            message: format!(
                "the server does not allow this method on the requested resource ({}/{subresource})",
                resource.plural()
            ),
        })
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
