//! What the built-in controllers share, as Kubernetes keeps it in
//! `pkg/controller/controller_utils.go`: the ReplicaSet, DaemonSet and Job controllers all
//! create Pods from a template, wait for their informer to see their own writes, and pick
//! which surplus Pods to delete the same way.
//!
//! - [`expectations`]: [`Expectations`], the creations and deletions a controller waits to
//!   observe before it acts on an owner again.
//! - [`ranking`]: [`is_pod_available`] and the deletion order ([`compare_for_deletion`],
//!   [`pods_to_delete`]).
//! - [`controller_ref`]: the controlling ownerReference ([`controller_ref()`],
//!   [`controlled_by`]) and the Pod built from a template under it ([`pod_for`]).
//! - [`batch`]: [`slow_start_batch`], API calls in batches of 1, 2, 4, ...
//! - [`custom_resources`]: the kinds an established `CustomResourceDefinition` serves
//!   ([`ServedCustomKinds`]), for the controllers that follow every served kind.
//!
//! Everything is re-exported here: import from `crate::util` (or `capstan_controllers::util`).

pub mod batch;
pub mod controller_ref;
pub mod custom_resources;
pub mod expectations;
pub mod ranking;

pub use batch::slow_start_batch;
pub use controller_ref::{controlled_by, controller_ref, pod_for};
pub use custom_resources::{list_served_custom_kinds, ServedCustomKinds};
pub use expectations::{Expectations, EXPECTATIONS_TTL};
pub use ranking::{compare_for_deletion, is_pod_available, pods_to_delete, POD_DELETION_COST};
