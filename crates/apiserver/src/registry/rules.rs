//! The rules the registry itself owns, whatever the admission chain and the kind: the key of
//! a served kind, Kubernetes' error shapes, and namespace pinning.

use capstan_api::{Error, ResourceInfo, Result};
use serde_json::Value;

use super::object;

pub(super) fn kind_key(info: &ResourceInfo) -> (String, String, String) {
    (
        info.group().to_string(),
        info.version().to_string(),
        info.plural().to_string(),
    )
}

pub(super) fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

pub(super) fn not_found(info: &ResourceInfo, name: &str) -> Error {
    Error::NotFound {
        resource: info.qualified_resource(),
        name: name.to_string(),
    }
}

pub(super) fn conflict(info: &ResourceInfo, name: &str) -> Error {
    Error::Conflict {
        resource: info.qualified_resource(),
        name: name.to_string(),
        message: Error::OBJECT_MODIFIED.into(),
    }
}

/// Checks the call's namespace against the kind's scope and the object's
/// `metadata.namespace`, and fills the latter in.
///
/// Errors: [`Error::BadRequest`] for a namespace on a cluster-scoped kind, none on a
/// namespaced one, or an object naming another namespace.
pub(super) fn pin_namespace(
    info: &ResourceInfo,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<()> {
    match (info.namespaced(), namespace) {
        (true, None) => {
            return Err(Error::bad_field(
                "metadata.namespace",
                format!("a namespace is required for {}", info.qualified_resource()),
            ))
        }
        (false, Some(_)) => {
            return Err(Error::bad_field(
                "metadata.namespace",
                format!(
                    "{} is cluster-scoped and takes no namespace",
                    info.qualified_resource()
                ),
            ))
        }
        _ => {}
    }
    match (namespace, object::meta_str(object, "namespace")) {
        (Some(call), Some(given)) if call != given => Err(namespace_mismatch()),
        (None, Some(_)) => Err(namespace_mismatch()),
        (Some(call), None) => {
            object::set_meta(object, "namespace", Some(Value::String(call.to_string())));
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(super) fn namespace_mismatch() -> Error {
    Error::bad_field(
        "metadata.namespace",
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}
