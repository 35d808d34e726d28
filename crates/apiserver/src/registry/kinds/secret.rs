//! Secrets: `type: Opaque` by default.

use serde_json::Value;

use super::KindStrategy;
use crate::registry::defaults::{ensure_map, set_default};

/// The rules of `v1` Secrets.
pub(crate) struct SecretStrategy;

impl KindStrategy for SecretStrategy {
    fn apply_defaults(&self, secret: &mut Value) {
        set_default(ensure_map(secret), "type", "Opaque");
    }
}
