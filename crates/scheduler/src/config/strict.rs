//! Strict decoding: a typed decode that reports the path of a wrongly typed value, and the
//! paths of the fields the type does not have (kube-scheduler refuses unknown fields).
//!
//! Unknown fields are found by decoding, encoding the typed value back (every field of the
//! configuration types is written, `null` when unset) and listing the input's keys that the
//! encoding lacks.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Drops the object entries whose value is `null`, as Go reads them (unset: an empty list,
/// no value), except inside the values of keys named `keep` (out-of-tree plugins' arguments
/// reach their factory as written).
pub(crate) fn drop_nulls(value: &mut Value, keep: Option<&str>) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for (key, v) in map.iter_mut() {
                if Some(key.as_str()) != keep {
                    drop_nulls(v, keep);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                drop_nulls(v, keep);
            }
        }
        _ => {}
    }
}

/// `path.key`, or `key` at the root.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Decodes `value` (found at `path`) as `T`. Returns it with the paths of the fields `T`
/// does not know.
///
/// Errors: `<path>: <why>` for a value of the wrong type.
pub(crate) fn decode<T: DeserializeOwned + Serialize>(
    value: &Value,
    path: &str,
) -> Result<(T, Vec<String>), String> {
    let typed: T = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let at = match (path.is_empty(), inner == ".") {
            (_, true) => path.to_owned(),
            (true, false) => inner,
            (false, false) if inner.starts_with('[') => format!("{path}{inner}"),
            (false, false) => format!("{path}.{inner}"),
        };
        if at.is_empty() {
            e.inner().to_string()
        } else {
            format!("{at}: {}", e.inner())
        }
    })?;
    let known = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_fields(value, &known, path, &mut unknown);
    Ok((typed, unknown))
}

fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input {
                let at = child(path, key);
                match known.get(key) {
                    Some(k) => unknown_fields(value, k, &at, out),
                    // An explicit null is as good as an absent field.
                    None if value.is_null() => {}
                    None => out.push(at),
                }
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (value, k)) in input.iter().zip(known).enumerate() {
                unknown_fields(value, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
