//! Kinds: the [`Resource`] trait, [`ResourceInfo`] and the storage key layout.
//!
//! Every k8s-openapi kind (Pod, Deployment, Node, ...) is a [`Resource`], and so is any type
//! implementing [`kube_core::Resource`] with `DynamicType = ()` and a namespace or cluster
//! scope; the [`resource!`](crate::resource!) macro writes that impl for a custom kind.
//!
//! [`ResourceInfo`] is the runtime description of a kind that registries, clients and
//! selectors share. Its storage keys follow kube-apiserver's etcd layout:
//!
//! | kind                               | key                                              |
//! |------------------------------------|--------------------------------------------------|
//! | core and other built-in groups     | `/registry/pods/<namespace>/<name>`              |
//! | cluster-scoped                     | `/registry/namespaces/<name>`                    |
//! | kube-apiserver renames             | `/registry/minions/<name>`, `/registry/services/specs/...`, `/registry/services/endpoints/...`, `/registry/controllers/...`, `/registry/ingress/...` |
//! | apiextensions, apiregistration, custom groups | `/registry/<group>/<plural>/[<namespace>/]<name>` |
//!
//! The module's files: this one holds the [`Resource`] traits and the
//! [`resource!`](crate::resource!) macro; `info` holds [`ResourceInfo`] and [`Subresources`],
//! `storage` the key layout's naming and validation rules, and `builtins` the table of
//! Kubernetes built-in kinds.

mod builtins;
mod info;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};

pub use info::{PrinterColumn, ResourceInfo, Subresources};

/// The root every storage key lives under.
pub const REGISTRY_ROOT: &str = "/registry";

/// Whether a [`kube_core::Resource::Scope`] is namespaced, known at compile time.
///
/// Implemented for [`k8s_openapi::NamespaceResourceScope`] and
/// [`k8s_openapi::ClusterResourceScope`]; a kind with any other scope is not a [`Resource`].
pub trait ResourceScope: k8s_openapi::ResourceScope {
    /// `true` when objects live in a namespace.
    const NAMESPACED: bool;
}

impl ResourceScope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ResourceScope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A kind Capstan can store and serve: a statically known [`kube_core::Resource`] that
/// serializes to and from its Kubernetes JSON form.
///
/// Implemented for every such type; do not implement it by hand. Use
/// [`resource!`](crate::resource!) to make a custom kind one.
pub trait Resource:
    kube_core::Resource<DynamicType = (), Scope: ResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's description: the [`kube_core::Resource`] statics plus the built-in table.
    fn info() -> ResourceInfo {
        ResourceInfo::new(
            &Self::group(&()),
            &Self::version(&()),
            &Self::kind(&()),
            &Self::plural(&()),
            <Self::Scope as ResourceScope>::NAMESPACED,
        )
    }
}

impl<K> Resource for K where
    K: kube_core::Resource<DynamicType = (), Scope: ResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Implements [`kube_core::Resource`] for a struct with a `metadata: ObjectMeta` field,
/// making it a Capstan [`Resource`].
///
/// `scope` is `Namespaced` or `Cluster`.
///
/// ```
/// use capstan_api::{kube_core::ObjectMeta, Resource};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct Widget {
///     metadata: ObjectMeta,
///     spec: WidgetSpec,
/// }
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct WidgetSpec {
///     size: u32,
/// }
///
/// capstan_api::resource!(Widget, group = "example.com", version = "v1", kind = "Widget", plural = "widgets", scope = Namespaced);
///
/// assert_eq!(Widget::info().api_version(), "example.com/v1");
/// ```
#[macro_export]
macro_rules! resource {
    (@scope Namespaced) => {
        $crate::k8s_openapi::NamespaceResourceScope
    };
    (@scope Cluster) => {
        $crate::k8s_openapi::ClusterResourceScope
    };
    (
        $ty:ty,
        group = $group:literal,
        version = $version:literal,
        kind = $kind:literal,
        plural = $plural:literal,
        scope = $scope:ident $(,)?
    ) => {
        impl $crate::kube_core::Resource for $ty {
            type DynamicType = ();
            type Scope = $crate::resource!(@scope $scope);

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($kind)
            }

            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($group)
            }

            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($version)
            }

            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($plural)
            }

            fn meta(&self) -> &$crate::kube_core::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut $crate::kube_core::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
