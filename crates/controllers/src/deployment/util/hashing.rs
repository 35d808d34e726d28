//! The pod-template hash: Kubernetes' FNV-1a over the template's canonical JSON, and the
//! comparison of templates that ignores it.

use super::*;

// ---------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------

/// FNV-1a, 32 bits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fnv32a(pub(super) u32);

impl Fnv32a {
    pub(super) const OFFSET: u32 = 0x811c_9dc5;
    pub(super) const PRIME: u32 = 0x0100_0193;

    pub(super) fn new() -> Self {
        Fnv32a(Self::OFFSET)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u32::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// Writes `value` as JSON with object keys sorted, so equal values always print the same.
pub(super) fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Kubernetes' `rand.SafeEncodeString`: each character mapped into Kubernetes' safe alphabet (`bcdfghjklmnpqrstvwxz2456789`).
pub fn safe_encode(s: &str) -> String {
    s.chars()
        .map(|c| SAFE_ALPHABET[(c as usize) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of `template`: FNV-1a 32 over the template's canonical JSON (keys
/// sorted), then, if set, the collision count as 8 little-endian bytes (as Kubernetes'
/// `ComputeHash` writes it), printed in decimal and [safe-encoded](safe_encode).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let value = serde_json::to_value(template).unwrap_or(Value::Null);
    let mut printed = String::new();
    canonical_json(&value, &mut printed);
    let mut hasher = Fnv32a::new();
    hasher.write(printed.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hasher.write(&bytes);
    }
    safe_encode(&hasher.0.to_string())
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored
/// (Kubernetes' `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        serde_json::to_value(t).unwrap_or(Value::Null)
    };
    strip(a) == strip(b)
}
