//! Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`), read into the
//! JSON value the same object's JSON body would be, so they follow the JSON path from there.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` envelope ([`envelope`]) whose `raw`
//! bytes are the object's message. The messages are described by a committed table
//! (`messages.txt`, parsed once by [`MessageTable::builtin`]): every message reachable from
//! the served built-in kinds and from `DeleteOptions`, `Eviction` and `Scale`, with each
//! field's number, proto name, JSON name, cardinality and type. [`decode`] walks the wire
//! bytes with it and spells Kubernetes' special types as their JSON does: `Time` and
//! `MicroTime` as RFC 3339, `Duration` as a Go duration, `IntOrString` as a number or a
//! string, `Quantity` as its string, `RawExtension`/`FieldsV1`/`JSON` as the embedded JSON,
//! `bytes` as base64.
//!
//! The table is generated from the `k8s-pb` crate's prost sources and the server's OpenAPI
//! schemas (for the JSON names); regenerate it after upgrading either with
//!
//! ```text
//! cargo run -p capstan-apiserver --example gen_protobuf_messages \
//!     > crates/apiserver/src/protobuf/messages.txt
//! ```
//!
//! A message's fields are in tag order: `MessageTable::builtin().message(i).fields`.

pub mod decode;
pub mod envelope;
pub mod format;
pub mod struct_order;
pub mod table;
pub mod wire;

use capstan_api::Error;
use serde_json::Value;

pub use decode::{decode, DecodeError};
pub use table::MessageTable;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The full name of `meta/v1` `DeleteOptions`.
pub const DELETE_OPTIONS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions";

/// Whether the served kind `api_version`/`kind` has a protobuf message (built-in kinds do,
/// custom resources do not).
pub fn serves(api_version: &str, kind: &str) -> bool {
    MessageTable::builtin().kind(api_version, kind).is_some()
}

/// Reads an object body: the JSON value of its message, with the envelope's `apiVersion`
/// and `kind` (or `api_version`/`kind` when the envelope names no kind), for the caller to
/// check against the target as it checks a JSON body.
///
/// Errors: [`Error::UnsupportedMediaType`] when `api_version`/`kind` has no message (custom
/// resources); [`Error::BadRequest`] for a malformed body, an envelope naming a kind without
/// a message, a content encoding, or malformed message bytes (naming the field).
pub fn decode_object(body: &[u8], api_version: &str, kind: &str) -> Result<Value, Error> {
    let table = MessageTable::builtin();
    if table.kind(api_version, kind).is_none() {
        return Err(Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - {MEDIA_TYPE} is served for \
                 built-in kinds only; {kind} accepts application/json, application/yaml"
            ),
        });
    }
    let envelope = unwrap(body)?;
    let (api_version, kind) = if envelope.kind.is_empty() {
        (api_version.to_string(), kind.to_string())
    } else {
        (envelope.api_version.clone(), envelope.kind.clone())
    };
    let index = table.kind(&api_version, &kind).ok_or_else(|| {
        Error::bad_field(
            "kind",
            format!("{kind} of {api_version} is not a built-in kind with a protobuf message"),
        )
    })?;
    let mut value = decode(table, index, envelope.raw).map_err(into_error)?;
    if let Value::Object(object) = &mut value {
        object.insert("apiVersion".into(), Value::String(api_version));
        object.insert("kind".into(), Value::String(kind));
    }
    Ok(value)
}

/// Reads an options body (`DeleteOptions`) as the message `message` (a proto full name,
/// e.g. [`DELETE_OPTIONS`]) whose kind is `kind`.
///
/// Errors: [`Error::BadRequest`] for a malformed body, an envelope of another kind, or
/// malformed message bytes.
pub fn decode_options(body: &[u8], message: &str, kind: &str) -> Result<Value, Error> {
    let table = MessageTable::builtin();
    let index = table
        .index_of(message)
        .ok_or_else(|| Error::internal(format!("no protobuf message {message}")))?;
    let envelope = unwrap(body)?;
    if !envelope.kind.is_empty() && envelope.kind != kind {
        return Err(Error::bad_field(
            "kind",
            format!("{} is not {kind}", envelope.kind),
        ));
    }
    decode(table, index, envelope.raw).map_err(into_error)
}

fn unwrap(body: &[u8]) -> Result<envelope::Envelope<'_>, Error> {
    let envelope = envelope::unwrap(body)
        .map_err(|e| Error::bad_request(format!("malformed protobuf body: {e}")))?;
    if !envelope.content_encoding.is_empty() {
        return Err(Error::bad_request(format!(
            "malformed protobuf body: content encoding {:?} is not supported",
            envelope.content_encoding
        )));
    }
    Ok(envelope)
}

fn into_error(error: DecodeError) -> Error {
    if error.path.is_empty() {
        Error::bad_request(format!("malformed protobuf body: {}", error.message))
    } else {
        Error::bad_field(error.path, format!("malformed protobuf: {}", error.message))
    }
}
