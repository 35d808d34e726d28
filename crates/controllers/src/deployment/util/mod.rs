//! The pure parts of the Deployment controller: Kubernetes' `pkg/controller/deployment/util`
//! (hashing, revisions and annotations, fenceposts, proportions, sorting, conditions and
//! status), free of any I/O so each rule is unit-tested on its own.

use capstan_api::compat::{self, Maybe};
use std::cmp::Ordering;
use std::collections::BTreeMap;

use capstan_api::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet,
};
use capstan_api::k8s_openapi::api::core::v1::PodTemplateSpec;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{annotations, reasons, POD_TEMPLATE_HASH_LABEL};

mod accessors;
mod conditions;
mod copied_annotations;
mod hashing;
mod replica_sets;
mod scaling;
#[cfg(test)]
mod tests;

pub use accessors::*;
pub use conditions::*;
pub use copied_annotations::*;
pub use hashing::*;
pub use replica_sets::*;
pub use scaling::*;

/// The longest `deployment.kubernetes.io/revision-history` value kept (Kubernetes'
/// `maxRevHistoryLengthInChars`).
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The alphabet of Kubernetes' `rand.SafeEncodeString`: no vowels (no words), no `0`, `1`,
/// `3` (no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
