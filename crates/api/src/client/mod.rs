//! The [`Client`] trait every Capstan component talks to, and the typed [`Api`] handle.
//!
//! [`Client`] is object-safe and works on [`DynamicObject`]s described by a
//! [`ResourceInfo`]; it is the seam between controllers and whatever serves the API. The
//! in-process registry and the remote HTTP client implement it in other crates.
//!
//! [`Api<K>`] wraps an `Arc<dyn Client>` for one kind and one namespace (or all), converting
//! between `K` and [`DynamicObject`] through serde, in the style of kube-rs' `Api`.

use kube_core::ResourceExt;
use std::{fmt, marker::PhantomData, sync::Arc};

use async_trait::async_trait;
use futures::{stream::BoxStream, StreamExt};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube_core::{
    params::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
    DynamicObject, ObjectList, TypeMeta, WatchEvent,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    error::{Error, Result},
    resource::{Resource, ResourceInfo},
};

/// A stream of watch events for dynamic objects; see [`Client::watch`].
pub type WatchStream = BoxStream<'static, Result<WatchEvent<DynamicObject>>>;

/// What a delete did.
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion<T = DynamicObject> {
    /// The object is gone; this was its last state.
    Deleted(T),
    /// Finalizers remain: the object now has a `deletionTimestamp` and will be removed once
    /// they are cleared. This is its current state.
    Pending(T),
}

impl<T> Deletion<T> {
    /// The object, whichever way the delete went.
    pub fn into_inner(self) -> T {
        match self {
            Deletion::Deleted(object) | Deletion::Pending(object) => object,
        }
    }

    /// Whether the object still exists, waiting for finalizers.
    pub fn is_pending(&self) -> bool {
        matches!(self, Deletion::Pending(_))
    }

    /// Converts the object, keeping the outcome.
    pub fn try_map<U>(self, f: impl FnOnce(T) -> Result<U>) -> Result<Deletion<U>> {
        Ok(match self {
            Deletion::Deleted(object) => Deletion::Deleted(f(object)?),
            Deletion::Pending(object) => Deletion::Pending(f(object)?),
        })
    }
}

/// Access to a Kubernetes-style API, one verb per method.
///
/// Every method takes the kind (`resource`) and the namespace first. `namespace` must be
/// `Some` for a namespaced kind and `None` for a cluster-scoped one, except in
/// [`list`](Client::list) and [`watch`](Client::watch), where `None` on a namespaced kind
/// means all namespaces; otherwise the call fails with [`Error::BadRequest`]. Objects passed
/// in must carry `apiVersion` and `kind` matching `resource` and, when they set
/// `metadata.namespace`, the same namespace as the call ([`Error::BadRequest`] otherwise).
///
/// Implementations: the in-process registry (capstan's store-backed API server) and the
/// remote HTTP client, both provided by other crates.
#[async_trait]
pub trait Client: Send + Sync + 'static {
    /// Reads one object.
    ///
    /// Errors: [`Error::NotFound`] when it does not exist.
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject>;

    /// Lists objects matching the label and field selectors in `params`, a page at a time
    /// when `params.limit` is set (the returned `metadata.continue` feeds the next call).
    ///
    /// `params.resource_version` follows Kubernetes: unset means the latest state, `"0"` any
    /// state, otherwise a state at least that recent (or exactly it, with `VersionMatch::Exact`).
    /// Errors: [`Error::BadRequest`] for a malformed selector or an unsupported field label,
    /// [`Error::Expired`] for a continue token that is too old, [`Error::Gone`] for an exact
    /// `resourceVersion` that has been compacted.
    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>>;

    /// Creates an object and returns it as stored (with `uid`, `resourceVersion`,
    /// `creationTimestamp`, and a generated name when only `generateName` was set).
    ///
    /// Errors: [`Error::AlreadyExists`] when the name is taken, [`Error::Invalid`] when
    /// validation fails, [`Error::NotFound`] when the namespace does not exist
    /// (`namespaces "foo" not found`), [`Error::Forbidden`] when it is being deleted
    /// (Kubernetes' `NamespaceLifecycle`).
    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject>;

    /// Replaces an object. When the object carries `metadata.resourceVersion`, the write only
    /// succeeds if it is still current. For kinds with a status subresource, changes to
    /// `status` are ignored here; use [`update_status`](Client::update_status).
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`] for a stale `resourceVersion`,
    /// [`Error::Invalid`].
    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject>;

    /// Replaces only the `status` of an object, through the status subresource; everything
    /// else in `object` is ignored.
    ///
    /// Errors: as [`update`](Client::update), plus [`Error::NotFound`] when the kind has no
    /// status subresource.
    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject>;

    /// Patches an object and returns the result.
    ///
    /// [`Patch::Merge`] is an RFC 7386 JSON merge patch and [`Patch::Json`] an RFC 6902 JSON
    /// patch (a failing operation fails it all with [`Error::Invalid`]); both work for every
    /// kind.
    /// [`Patch::Strategic`] is Kubernetes' strategic merge patch, defined only for built-in
    /// kinds (it needs their merge keys); on a custom kind it fails with
    /// [`Error::UnsupportedMediaType`], as in Kubernetes. Implementations may also reject
    /// [`Patch::Apply`] with [`Error::UnsupportedMediaType`].
    /// Errors: [`Error::NotFound`], [`Error::Conflict`] when the patch carries a stale
    /// `metadata.resourceVersion`, [`Error::Invalid`] when the result fails validation,
    /// [`Error::BadRequest`] when the patch is malformed.
    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject>;

    /// Deletes an object, honouring the preconditions and propagation policy in `params`.
    ///
    /// Returns [`Deletion::Deleted`] when the object is gone and [`Deletion::Pending`] when
    /// finalizers keep it (it then has a `deletionTimestamp`).
    /// Errors: [`Error::NotFound`], [`Error::Conflict`] when a precondition (uid or
    /// resourceVersion) does not hold.
    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deletion>;

    /// Creates through a subresource of the object `name`, as a POST to
    /// `.../{name}/{subresource}`: `serviceaccounts/token` (a `TokenRequest`), `pods/eviction`
    /// (an `Eviction`), `pods/binding` (a `Binding`). `object` is the subresource's own kind,
    /// and so is the answer (an eviction answers a `Status`).
    ///
    /// Errors: [`Error::NotFound`] when the object does not exist, the subresource's own
    /// refusals ([`Error::TooManyRequests`] for an eviction a disruption budget forbids,
    /// [`Error::Invalid`], ...). The default answers [`Error::MethodNotAllowed`]: a client
    /// that serves no subresource creates.
    async fn create_subresource(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let _ = (namespace, name, object, params);
        Err(Error::MethodNotAllowed {
            message: format!(
                "the server does not allow this method on the requested resource ({}/{subresource})",
                resource.plural()
            ),
        })
    }

    /// Deletes every object matching the label and field selectors in `list` (in `namespace`,
    /// or across all namespaces when `None`), each as [`delete`](Client::delete) would with
    /// `params`, and returns them: gone, or pending on finalizers.
    ///
    /// The default lists every page, then deletes one object at a time; an object deleted by
    /// someone else in between is skipped. Not atomic, as in Kubernetes: on an error, the
    /// objects before it stay deleted. Implementations may do it in one request.
    /// Errors: as [`list`](Client::list) and [`delete`](Client::delete).
    async fn delete_collection(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &DeleteParams,
        list: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        let mut page = list.clone();
        let mut deleted = Vec::new();
        let metadata = loop {
            let objects = self.list(resource, namespace, &page).await?;
            for object in objects.items {
                let name = object.name_any();
                let object_namespace = object.metadata.namespace.clone();
                let scope = if resource.namespaced() {
                    object_namespace.as_deref().or(namespace)
                } else {
                    None
                };
                match self.delete(resource, scope, &name, params).await {
                    Ok(deletion) => deleted.push(deletion.into_inner()),
                    Err(Error::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            match objects.metadata.continue_.clone().filter(|t| !t.is_empty()) {
                Some(token) => page.continue_token = Some(token),
                None => break objects.metadata,
            }
        };
        Ok(ObjectList {
            types: TypeMeta {
                api_version: resource.api_version(),
                kind: format!("{}List", resource.kind()),
            },
            metadata,
            items: deleted,
        })
    }

    /// Watches for changes to objects matching the selectors in `params`, starting after
    /// `resource_version`.
    ///
    /// As in Kubernetes, `""` and `"0"` first replay the current objects as `Added` events,
    /// then stream changes; any other version streams only the changes after it. Bookmarks
    /// are sent when `params.bookmarks` is set. The stream ends when `params.timeout` expires
    /// or the server closes it; callers then re-watch from the last version seen.
    /// Errors: [`Error::Gone`] when `resource_version` has been compacted away (relist, then
    /// watch again), [`Error::BadRequest`] for a malformed selector. An error after the stream
    /// started arrives as an `Err` item, or as [`WatchEvent::Error`] carrying a Status that
    /// [`Error::from_status`] converts.
    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream>;
}

/// A typed handle on one kind in one namespace (or across all), over a shared [`Client`].
///
/// Objects are converted to and from [`DynamicObject`] through their JSON form; a conversion
/// failure is an [`Error::Internal`] naming the kind and object.
pub struct Api<K> {
    client: Arc<dyn Client>,
    resource: ResourceInfo,
    namespace: Option<String>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("resource", &self.resource.qualified_resource())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl<K: Resource<Scope = NamespaceResourceScope>> Api<K> {
    /// A handle on the namespaced kind `K` in `namespace`.
    pub fn namespaced(client: Arc<dyn Client>, namespace: &str) -> Self {
        Self::with_namespace(client, Some(namespace.to_string()))
    }
}

impl<K: Resource<Scope = ClusterResourceScope>> Api<K> {
    /// A handle on the cluster-scoped kind `K`.
    pub fn cluster(client: Arc<dyn Client>) -> Self {
        Self::with_namespace(client, None)
    }
}

impl<K: Resource> Api<K> {
    /// A handle on `K` across all namespaces, for [`list`](Self::list) and
    /// [`watch`](Self::watch). For a namespaced kind, per-object calls through it fail with
    /// [`Error::BadRequest`]; for a cluster-scoped kind it equals [`Api::cluster`].
    pub fn all(client: Arc<dyn Client>) -> Self {
        Self::with_namespace(client, None)
    }

    fn with_namespace(client: Arc<dyn Client>, namespace: Option<String>) -> Self {
        Api {
            client,
            resource: K::info(),
            namespace,
            kind: PhantomData,
        }
    }

    /// The kind this handle serves.
    pub fn resource(&self) -> &ResourceInfo {
        &self.resource
    }

    /// The namespace this handle is bound to; `None` for cluster-scoped or all namespaces.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The underlying client.
    pub fn client(&self) -> &Arc<dyn Client> {
        &self.client
    }

    /// Reads one object; see [`Client::get`].
    pub async fn get(&self, name: &str) -> Result<K> {
        let object = self
            .client
            .get(&self.resource, self.namespace(), name)
            .await?;
        self.decode(object)
    }

    /// Reads one object, mapping [`Error::NotFound`] to `None`.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(object) => Ok(Some(object)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Lists objects; see [`Client::list`].
    pub async fn list(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let list = self
            .client
            .list(&self.resource, self.namespace(), params)
            .await?;
        Ok(ObjectList {
            types: list.types,
            metadata: list.metadata,
            items: list
                .items
                .into_iter()
                .map(|object| self.decode(object))
                .collect::<Result<_>>()?,
        })
    }

    /// Lists objects like [`list`](Self::list), but decodes each item on its own: an item
    /// that does not decode as `K` is an `Err(`[`Undecodable`]`)` in its place instead of
    /// failing the whole page.
    ///
    /// This is the lossy path for informers, which must keep serving every other object when
    /// one stored object no longer fits `K` (written by an older server, a bug, a changed
    /// schema). Direct callers that want all or nothing use [`list`](Self::list).
    /// Errors: as [`Client::list`]; decoding never fails the call.
    pub async fn list_decoded(&self, params: &ListParams) -> Result<DecodedList<K>> {
        let list = self
            .client
            .list(&self.resource, self.namespace(), params)
            .await?;
        Ok(DecodedList {
            types: list.types,
            metadata: list.metadata,
            items: list
                .items
                .into_iter()
                .map(|object| decode_each(&self.resource, object))
                .collect(),
        })
    }

    /// Creates an object; see [`Client::create`].
    pub async fn create(&self, params: &PostParams, object: &K) -> Result<K> {
        let object = self.encode(object)?;
        let created = self
            .client
            .create(&self.resource, self.namespace(), object, params)
            .await?;
        self.decode(created)
    }

    /// Replaces an object, named by its `metadata.name`; see [`Client::update`].
    pub async fn update(&self, params: &PostParams, object: &K) -> Result<K> {
        let object = self.encode(object)?;
        let updated = self
            .client
            .update(&self.resource, self.namespace(), object, params)
            .await?;
        self.decode(updated)
    }

    /// Replaces an object's status; see [`Client::update_status`].
    pub async fn update_status(&self, params: &PostParams, object: &K) -> Result<K> {
        let object = self.encode(object)?;
        let updated = self
            .client
            .update_status(&self.resource, self.namespace(), object, params)
            .await?;
        self.decode(updated)
    }

    /// Creates `body` through subresource `subresource` of object `name` and decodes the
    /// answer as `T` (`serviceaccounts/token` answers a `TokenRequest`); see
    /// [`Client::create_subresource`].
    pub async fn create_subresource<B: Serialize, T: DeserializeOwned>(
        &self,
        name: &str,
        subresource: &str,
        params: &PostParams,
        body: &B,
    ) -> Result<T> {
        let object: DynamicObject = serde_json::to_value(body)
            .and_then(serde_json::from_value)
            .map_err(|e| {
                Error::internal(format!("cannot encode the {subresource} request: {e}"))
            })?;
        let answer = self
            .client
            .create_subresource(
                &self.resource,
                self.namespace(),
                name,
                subresource,
                object,
                params,
            )
            .await?;
        serde_json::to_value(answer)
            .and_then(serde_json::from_value)
            .map_err(|e| Error::internal(format!("cannot decode the {subresource} answer: {e}")))
    }

    /// Patches an object; see [`Client::patch`]. Patch types other than apply, merge and
    /// strategic fail with [`Error::UnsupportedMediaType`].
    pub async fn patch<P: Serialize>(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        let patch = self.erase_patch(patch)?;
        let patched = self
            .client
            .patch(&self.resource, self.namespace(), name, &patch, params)
            .await?;
        self.decode(patched)
    }

    /// Deletes an object; see [`Client::delete`].
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<Deletion<K>> {
        self.client
            .delete(&self.resource, self.namespace(), name, params)
            .await?
            .try_map(|object| self.decode(object))
    }

    /// Deletes every object matching `list`'s selectors; see [`Client::delete_collection`].
    pub async fn delete_collection(
        &self,
        params: &DeleteParams,
        list: &ListParams,
    ) -> Result<ObjectList<K>> {
        let deleted = self
            .client
            .delete_collection(&self.resource, self.namespace(), params, list)
            .await?;
        Ok(ObjectList {
            types: deleted.types,
            metadata: deleted.metadata,
            items: deleted
                .items
                .into_iter()
                .map(|object| self.decode(object))
                .collect::<Result<_>>()?,
        })
    }

    /// Watches objects; see [`Client::watch`]. An event whose object does not convert to `K`
    /// becomes an `Err(Error::Internal)` item.
    pub async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        let events = self
            .client
            .watch(&self.resource, self.namespace(), params, resource_version)
            .await?;
        let resource = self.resource.clone();
        Ok(events
            .map(move |event| {
                Ok(match event? {
                    WatchEvent::Added(o) => WatchEvent::Added(from_dynamic(&resource, o)?),
                    WatchEvent::Modified(o) => WatchEvent::Modified(from_dynamic(&resource, o)?),
                    WatchEvent::Deleted(o) => WatchEvent::Deleted(from_dynamic(&resource, o)?),
                    WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
                    WatchEvent::Error(status) => WatchEvent::Error(status),
                })
            })
            .boxed())
    }

    /// Watches objects like [`watch`](Self::watch), but an event whose object does not
    /// decode as `K` carries an `Err(`[`Undecodable`]`)` (with the object's namespace, name
    /// and resourceVersion) instead of ending in an error item, so the watcher can drop its
    /// stale copy and go on. Errors: as [`Client::watch`].
    pub async fn watch_decoded(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<Decoded<K>>>>> {
        let events = self
            .client
            .watch(&self.resource, self.namespace(), params, resource_version)
            .await?;
        let resource = self.resource.clone();
        Ok(events
            .map(move |event| {
                Ok(match event? {
                    WatchEvent::Added(o) => WatchEvent::Added(decode_each(&resource, o)),
                    WatchEvent::Modified(o) => WatchEvent::Modified(decode_each(&resource, o)),
                    WatchEvent::Deleted(o) => WatchEvent::Deleted(decode_each(&resource, o)),
                    WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
                    WatchEvent::Error(status) => WatchEvent::Error(status),
                })
            })
            .boxed())
    }

    fn encode(&self, object: &K) -> Result<DynamicObject> {
        to_dynamic(&self.resource, object)
    }

    fn decode(&self, object: DynamicObject) -> Result<K> {
        from_dynamic(&self.resource, object)
    }

    fn erase_patch<P: Serialize>(&self, patch: &Patch<P>) -> Result<Patch<serde_json::Value>> {
        let to_value = |body: &P| {
            serde_json::to_value(body).map_err(|e| {
                Error::internal(format!(
                    "cannot encode patch for {}: {e}",
                    self.resource.qualified_resource()
                ))
            })
        };
        Ok(match patch {
            Patch::Apply(body) => Patch::Apply(to_value(body)?),
            Patch::Merge(body) => Patch::Merge(to_value(body)?),
            Patch::Strategic(body) => Patch::Strategic(to_value(body)?),
            Patch::Json(operations) => Patch::Json(operations.clone()),
            _ => {
                return Err(Error::UnsupportedMediaType {
                    message: "only apply, JSON, merge and strategic merge patches are supported"
                        .into(),
                })
            }
        })
    }
}

/// An object a list or watch returned that does not decode as the handle's kind; see
/// [`Api::list_decoded`] and [`Api::watch_decoded`].
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    /// The object's namespace, as sent (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// The object's resourceVersion, as sent.
    pub resource_version: Option<String>,
    /// Why it did not decode: an [`Error::Internal`] naming the kind, the object and serde's
    /// message.
    pub error: Error,
}

/// One item of [`Api::list_decoded`] or one object of [`Api::watch_decoded`]: the typed
/// object, or why it is not one.
pub type Decoded<K> = std::result::Result<K, Box<Undecodable>>;

/// A list page whose items were decoded one by one; see [`Api::list_decoded`].
#[derive(Clone, Debug)]
pub struct DecodedList<K> {
    /// The list's apiVersion and kind.
    pub types: TypeMeta,
    /// The list's resourceVersion and continue token.
    pub metadata: kube_core::ListMeta,
    /// Every item, in the server's order.
    pub items: Vec<Decoded<K>>,
}

fn decode_each<K: serde::de::DeserializeOwned>(
    resource: &ResourceInfo,
    object: DynamicObject,
) -> Decoded<K> {
    let namespace = object.metadata.namespace.clone();
    let name = object.name_any();
    let resource_version = object.metadata.resource_version.clone();
    from_dynamic(resource, object).map_err(|error| {
        Box::new(Undecodable {
            namespace,
            name,
            resource_version,
            error,
        })
    })
}

/// Converts a typed object to a [`DynamicObject`], setting `apiVersion` and `kind` from
/// `resource`. Fails with [`Error::Internal`] when `object` does not serialize to a JSON object
/// with valid `metadata`.
pub fn to_dynamic<K: Serialize + kube_core::Resource>(
    resource: &ResourceInfo,
    object: &K,
) -> Result<DynamicObject> {
    let mut dynamic: DynamicObject = serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            Error::internal(format!(
                "cannot convert {} {} to a DynamicObject: {e}",
                resource.qualified_kind(),
                crate::error::quote(object.meta().name.as_deref().unwrap_or_default()),
            ))
        })?;
    dynamic.types = Some(TypeMeta {
        api_version: resource.api_version(),
        kind: resource.kind().to_string(),
    });
    Ok(dynamic)
}

/// Converts a [`DynamicObject`] to the typed `K`. Fails with [`Error::Internal`] when its
/// JSON does not deserialize as `K`.
pub fn from_dynamic<K: serde::de::DeserializeOwned>(
    resource: &ResourceInfo,
    object: DynamicObject,
) -> Result<K> {
    let name = object.name_any();
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            Error::internal(format!(
                "cannot convert {} {} from a DynamicObject: {e}",
                resource.qualified_kind(),
                crate::error::quote(&name),
            ))
        })
}

#[cfg(test)]
mod tests;
