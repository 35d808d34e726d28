//! How objects are stored: JSON bytes under their storage key, with the resourceVersion
//! derived from the store's mod revision (never stored), as kube-apiserver does with etcd.

use bytes::Bytes;
use capstan_api::Error;
use capstan_store::{KeyValue, Revision};
use serde_json::Value;

/// Renders a store revision as a Kubernetes resourceVersion.
pub fn resource_version(revision: Revision) -> String {
    revision.to_string()
}

/// Parses a resourceVersion given by a client: `None` for an empty string ("any"/"latest",
/// depending on the call), the revision otherwise.
///
/// Errors: [`Error::BadRequest`] naming `metadata.resourceVersion` for anything that is not a
/// non-negative integer.
pub fn parse_resource_version(resource_version: &str) -> Result<Option<Revision>, Error> {
    if resource_version.is_empty() {
        return Ok(None);
    }
    match resource_version.parse::<Revision>() {
        Ok(revision) if revision >= 0 => Ok(Some(revision)),
        _ => Err(Error::bad_field(
            "metadata.resourceVersion",
            format!(
                "invalid resource version {resource_version:?}: must be a non-negative integer"
            ),
        )),
    }
}

/// Serializes an object for the store, without its resourceVersion (the store's revision is
/// the source of truth).
pub fn encode(object: &Value) -> Result<Bytes, Error> {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("encoding object: {e}")))
}

/// Reads an object from the store, setting `metadata.resourceVersion` to `revision` (the key's
/// mod revision, or the delete's revision for a deleted object).
pub fn decode_at(value: &[u8], revision: Revision) -> Result<Value, Error> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| Error::internal(format!("decoding stored object: {e}")))?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

/// Reads a stored key-value as an object at its mod revision.
pub fn decode(kv: &KeyValue) -> Result<Value, Error> {
    decode_at(&kv.value, kv.mod_revision)
}

/// Sets `metadata.resourceVersion`, creating `metadata` if needed.
pub fn set_resource_version(object: &mut Value, revision: Revision) {
    if let Some(root) = object.as_object_mut() {
        let metadata = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(
                "resourceVersion".into(),
                Value::String(resource_version(revision)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_bytes_never_carry_a_resource_version() {
        let object = json!({"metadata": {"name": "web", "resourceVersion": "12"}, "spec": {}});
        let bytes = encode(&object).unwrap();
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored["metadata"].get("resourceVersion"), None);
        assert_eq!(
            decode_at(&bytes, 40).unwrap()["metadata"]["resourceVersion"],
            "40"
        );
    }

    #[test]
    fn resource_versions_must_be_non_negative_integers() {
        assert_eq!(parse_resource_version("").unwrap(), None);
        assert_eq!(parse_resource_version("0").unwrap(), Some(0));
        assert_eq!(parse_resource_version("42").unwrap(), Some(42));
        for bad in ["-1", "abc", "1.5", " 3"] {
            let error = parse_resource_version(bad).unwrap_err();
            assert_eq!(error.code(), 400, "{bad}");
        }
    }
}
