//! Capstan's object model: the vocabulary every other Capstan crate speaks.
//!
//! - **Kinds**: every k8s-openapi type (Pod, Deployment, Node, ...) is a [`Resource`]; custom
//!   kinds become one with the [`resource!`] macro. [`ResourceInfo`] describes a kind at run
//!   time: names, scope, subresources, supported field labels.
//! - **Key layout**: [`ResourceInfo::key`] maps an object to its storage key exactly as
//!   kube-apiserver lays out etcd (`/registry/pods/default/web`, `/registry/minions/n1`,
//!   `/registry/example.com/widgets/default/w1`).
//! - **Selectors**: [`parse_label_selector`] reads the Kubernetes string form into kube-core's
//!   [`Selector`](kube_core::Selector); [`FieldSelector`] parses, validates and evaluates field
//!   selectors.
//! - **Client**: the object-safe [`Client`] trait over
//!   [`DynamicObject`](kube_core::DynamicObject), with the typed [`Api<K>`](Api) handle on top.
//!   Implementations (the in-process registry, the remote HTTP client) live in other crates.
//! - **Errors**: one [`Error`] enum, one variant per Kubernetes `Status` reason, convertible to
//!   and from [`kube_core::Status`].
//! - **Helpers**: [`ext`], Kubernetes' helper functions as extension traits on the k8s-openapi
//!   types ([`PodExt::is_ready`](ext::PodExt::is_ready),
//!   [`TolerationExt::tolerates`](ext::TolerationExt::tolerates),
//!   [`NodeSelectorExt::matches`](ext::NodeSelectorExt::matches), ...), one tested
//!   implementation each.
//! - **Quantities**: [`quantity`], Kubernetes' resource quantities (`100m`, `1Gi`) parsed
//!   exactly, for the registry's validation, the scheduler and the kubelet.
//! - **Health**: [`health`], the named checks every component serves on `/healthz`, `/livez`
//!   and `/readyz`, reported in kube-apiserver's format.
//! - **Testing**: [`testing`], time limits for async tests ([`within`](testing::within),
//!   [`eventually`](testing::eventually)) with panic messages that say what hung and where.
//!
//! Wire types (params, lists, watch events, `Status`) are kube-core's, re-exported as
//! [`kube_core`] together with the matching [`k8s_openapi`].
//!
//! ```
//! use capstan_api::{
//!     field::FieldSelector, k8s_openapi::api::core::v1::Pod, kube_core::ObjectMeta,
//!     parse_label_selector, selector, Error, Resource,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! // A custom kind in one line.
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! struct Widget {
//!     metadata: ObjectMeta,
//! }
//! capstan_api::resource!(Widget, group = "example.com", version = "v1", kind = "Widget", plural = "widgets", scope = Namespaced);
//!
//! // Storage keys follow kube-apiserver.
//! assert_eq!(Pod::info().key(Some("default"), "web")?, "/registry/pods/default/web");
//! assert_eq!(
//!     Widget::info().key(Some("default"), "w1")?,
//!     "/registry/example.com/widgets/default/w1"
//! );
//!
//! // Label and field selectors.
//! let labels = parse_label_selector("app=web,!canary")?;
//! let pod_labels = [("app".to_string(), "web".to_string())].into();
//! assert!(selector::matches(&labels, Some(&pod_labels)));
//! let fields: FieldSelector = "spec.nodeName=".parse()?;
//! fields.validate_for(&Pod::info())?;
//!
//! // Errors read like Kubernetes and travel as a Status.
//! let missing = Error::NotFound { resource: "pods".into(), name: "web".into() };
//! assert_eq!(missing.to_string(), r#"pods "web" not found"#);
//! assert_eq!(Error::from_status(missing.to_status()), missing);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
pub mod compat;
pub mod error;
pub mod ext;
pub mod field;
pub mod health;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod testing;

pub use k8s_openapi;
pub use kube_core;

pub use client::{Api, Client, Deletion, WatchStream};
pub use error::{Error, FieldError, FieldErrorKind, FieldManagerConflict, Result};
pub use field::{FieldOperator, FieldRequirement, FieldSelector};
pub use resource::{Resource, ResourceInfo, ResourceScope, Subresources};
pub use selector::{label_selector_from, parse_label_selector, SelectorError};
