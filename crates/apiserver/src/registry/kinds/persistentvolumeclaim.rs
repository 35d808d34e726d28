//! PersistentVolumeClaims: `volumeMode: Filesystem` by default.

use serde_json::Value;

use super::KindStrategy;
use crate::registry::{defaults::set_default, object};

/// The rules of `v1` PersistentVolumeClaims.
pub(crate) struct PersistentVolumeClaimStrategy;

impl KindStrategy for PersistentVolumeClaimStrategy {
    fn apply_defaults(&self, claim: &mut Value) {
        set_default(object::at_mut(claim, "spec"), "volumeMode", "Filesystem");
    }
}
