//! JSON in Go struct order: objects written with their keys where kube-apiserver writes them.
//!
//! kube-apiserver encodes built-in objects from Go structs, so their keys come in declaration
//! order: `kind` and `apiVersion` first (the inline `TypeMeta`), then `metadata`, `spec`,
//! `status`, and within each nested struct its fields in declaration order, which is the tag
//! order of the message table ([`MessageTable`]). Go maps (`labels`, `data`, ...) are written
//! with sorted keys; so are custom resources (unstructured in Go) and any kind the table does
//! not know. Lists are `kind`, `apiVersion`, `metadata`, `items`; watch events `type`, then
//! `object`; `Status` and `Table` follow their `meta/v1` structs.
//!
//! [`write`] walks a [`Value`] once and writes straight into a buffer, with `serde_json` for
//! scalars, strings and everything written sorted (a `serde_json::Map` iterates in key
//! order). Messages are resolved by index; a key the message does not declare is written
//! after the declared ones, in sorted order.

use serde_json::{Map, Value};

use super::table::{Cardinality, Encoding, FieldType, MessageTable};

/// The full name of `meta/v1` `ObjectMeta`.
const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `value` as JSON in struct order (see the module docs); values of unknown kinds come out
/// as `serde_json::to_vec` writes them.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write(&mut out, value);
    out
}

/// Appends `value` to `out` as JSON in struct order, resolving the layout from its
/// `apiVersion` and `kind` (or its shape, for a watch event).
pub fn write(out: &mut Vec<u8>, value: &Value) {
    write_any(MessageTable::builtin(), out, value);
}

/// Appends the watch event line body `{"type":<event_type>,"object":<object>}` to `out`, the
/// object in struct order.
pub fn write_event(out: &mut Vec<u8>, event_type: &str, object: &Value) {
    out.extend_from_slice(b"{\"type\":");
    let _ = serde_json::to_writer(&mut *out, event_type);
    out.extend_from_slice(b",\"object\":");
    write(out, object);
    out.push(b'}');
}

/// What an object's kind says of its body besides `kind` and `apiVersion`.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// The fields of this message.
    Message(usize),
    /// Only `metadata`, an `ObjectMeta` (this message): `PartialObjectMetadata`.
    Metadata(usize),
}

/// How a top-level object is laid out.
enum Layout {
    /// A kind with a body.
    Kind(Body),
    /// A list whose items have this body.
    List(Body),
    /// A `meta/v1` type of fixed keys.
    Fixed(&'static [Slot]),
    /// Sorted keys.
    Sorted,
}

/// One key of a fixed layout and how its value is written.
struct Slot {
    name: &'static str,
    nested: Nested,
}

/// How the value of a [`Slot`] is written.
enum Nested {
    /// As a top-level value: resolved by its own kind, else sorted.
    Any,
    /// An object of these keys.
    Object(&'static [Slot]),
    /// A list of objects of these keys.
    Items(&'static [Slot]),
}

const fn slot(name: &'static str) -> Slot {
    Slot {
        name,
        nested: Nested::Any,
    }
}

const LIST_META: &[Slot] = &[
    slot("selfLink"),
    slot("resourceVersion"),
    slot("continue"),
    slot("remainingItemCount"),
];

const STATUS_CAUSE: &[Slot] = &[slot("reason"), slot("message"), slot("field")];

const STATUS_DETAILS: &[Slot] = &[
    slot("name"),
    slot("group"),
    slot("kind"),
    slot("uid"),
    Slot {
        name: "causes",
        nested: Nested::Items(STATUS_CAUSE),
    },
    slot("retryAfterSeconds"),
];

const STATUS: &[Slot] = &[
    slot("kind"),
    slot("apiVersion"),
    Slot {
        name: "metadata",
        nested: Nested::Object(LIST_META),
    },
    slot("status"),
    slot("message"),
    slot("reason"),
    Slot {
        name: "details",
        nested: Nested::Object(STATUS_DETAILS),
    },
    slot("code"),
];

const TABLE_COLUMN: &[Slot] = &[
    slot("name"),
    slot("type"),
    slot("format"),
    slot("description"),
    slot("priority"),
];

const TABLE_ROW: &[Slot] = &[slot("cells"), slot("conditions"), slot("object")];

const TABLE: &[Slot] = &[
    slot("kind"),
    slot("apiVersion"),
    Slot {
        name: "metadata",
        nested: Nested::Object(LIST_META),
    },
    Slot {
        name: "columnDefinitions",
        nested: Nested::Items(TABLE_COLUMN),
    },
    Slot {
        name: "rows",
        nested: Nested::Items(TABLE_ROW),
    },
];

const EVENT: &[Slot] = &[slot("type"), slot("object")];

/// The layout of a top-level object.
fn layout(table: &MessageTable, object: &Map<String, Value>) -> Layout {
    if object.len() == 2 && object.contains_key("type") && object.contains_key("object") {
        return Layout::Fixed(EVENT);
    }
    let (Some(Value::String(kind)), Some(Value::String(api_version))) =
        (object.get("kind"), object.get("apiVersion"))
    else {
        return Layout::Sorted;
    };
    if let Some(body) = body_of(table, api_version, kind) {
        return Layout::Kind(body);
    }
    match kind.as_str() {
        "Status" => return Layout::Fixed(STATUS),
        "Table" => return Layout::Fixed(TABLE),
        _ => {}
    }
    if let Some(item_kind) = kind.strip_suffix("List") {
        if let (Some(body), Some(Value::Array(_))) =
            (body_of(table, api_version, item_kind), object.get("items"))
        {
            return Layout::List(body);
        }
    }
    Layout::Sorted
}

/// The body of the kind `api_version`/`kind`, if it is built in.
fn body_of(table: &MessageTable, api_version: &str, kind: &str) -> Option<Body> {
    if kind == "PartialObjectMetadata" {
        return table.index_of(OBJECT_META).map(Body::Metadata);
    }
    table.kind(api_version, kind).map(Body::Message)
}

fn write_any(table: &MessageTable, out: &mut Vec<u8>, value: &Value) {
    let Value::Object(object) = value else {
        return scalar(out, value);
    };
    match layout(table, object) {
        Layout::Kind(body) => write_kind(table, out, body, object),
        Layout::List(body) => write_list(table, out, body, object),
        Layout::Fixed(slots) => write_fixed(table, out, slots, object),
        Layout::Sorted => scalar(out, value),
    }
}

/// Writes a value as `serde_json` does (objects with sorted keys).
fn scalar(out: &mut Vec<u8>, value: &Value) {
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and a `Vec` takes
    // every byte.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Writes `"name":`, preceded by a comma unless it is the object's first key.
fn key(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !std::mem::replace(first, false) {
        out.push(b',');
    }
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
}

/// An object of a kind: `kind`, `apiVersion`, the body's fields, then undeclared keys.
fn write_kind(table: &MessageTable, out: &mut Vec<u8>, body: Body, object: &Map<String, Value>) {
    out.push(b'{');
    let mut first = true;
    let mut written = 0;
    for name in ["kind", "apiVersion"] {
        if let Some(value) = object.get(name) {
            key(out, &mut first, name);
            scalar(out, value);
            written += 1;
        }
    }
    written += match body {
        Body::Message(index) => write_fields(table, out, &mut first, index, object),
        Body::Metadata(meta) => match object.get("metadata") {
            Some(value) => {
                key(out, &mut first, "metadata");
                write_message(table, out, meta, value);
                1
            }
            None => 0,
        },
    };
    if written < object.len() {
        for (name, value) in object {
            let declared = match body {
                Body::Message(index) => declares(table, index, name),
                Body::Metadata(_) => name == "metadata",
            };
            if !declared && name != "kind" && name != "apiVersion" {
                key(out, &mut first, name);
                scalar(out, value);
            }
        }
    }
    out.push(b'}');
}

/// A list: `kind`, `apiVersion`, `metadata`, `items` (each by its own kind, else `body`),
/// then other keys.
fn write_list(table: &MessageTable, out: &mut Vec<u8>, body: Body, object: &Map<String, Value>) {
    const HEAD: [&str; 4] = ["kind", "apiVersion", "metadata", "items"];
    out.push(b'{');
    let mut first = true;
    for name in HEAD {
        let Some(value) = object.get(name) else {
            continue;
        };
        key(out, &mut first, name);
        match (name, value) {
            ("metadata", Value::Object(metadata)) => write_fixed(table, out, LIST_META, metadata),
            ("items", Value::Array(items)) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match item {
                        Value::Object(o) if o.contains_key("kind") => write_any(table, out, item),
                        Value::Object(o) => write_kind(table, out, body, o),
                        _ => scalar(out, item),
                    }
                }
                out.push(b']');
            }
            _ => scalar(out, value),
        }
    }
    for (name, value) in object {
        if !HEAD.contains(&name.as_str()) {
            key(out, &mut first, name);
            scalar(out, value);
        }
    }
    out.push(b'}');
}

/// An object of fixed keys, then other keys sorted.
fn write_fixed(
    table: &MessageTable,
    out: &mut Vec<u8>,
    slots: &'static [Slot],
    object: &Map<String, Value>,
) {
    out.push(b'{');
    let mut first = true;
    let mut written = 0;
    for slot in slots {
        let Some(value) = object.get(slot.name) else {
            continue;
        };
        key(out, &mut first, slot.name);
        written += 1;
        match (&slot.nested, value) {
            (Nested::Any, _) => write_any(table, out, value),
            (Nested::Object(inner), Value::Object(o)) => write_fixed(table, out, inner, o),
            (Nested::Items(inner), Value::Array(items)) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match item {
                        Value::Object(o) => write_fixed(table, out, inner, o),
                        _ => scalar(out, item),
                    }
                }
                out.push(b']');
            }
            _ => scalar(out, value),
        }
    }
    if written < object.len() {
        for (name, value) in object {
            if !slots.iter().any(|slot| slot.name == name) {
                key(out, &mut first, name);
                scalar(out, value);
            }
        }
    }
    out.push(b'}');
}

/// Writes the keys of `object` that message `index` declares (inline messages' at the
/// inline field's place), in tag order; returns how many it wrote.
fn write_fields(
    table: &MessageTable,
    out: &mut Vec<u8>,
    first: &mut bool,
    index: usize,
    object: &Map<String, Value>,
) -> usize {
    let mut written = 0;
    for field in &table.message(index).fields {
        if field.is_inline() {
            if let FieldType::Message(inner) = field.value_type {
                written += write_fields(table, out, first, inner, object);
            }
            continue;
        }
        if let Some(value) = object.get(field.json_name.as_str()) {
            key(out, first, &field.json_name);
            write_field(table, out, field.cardinality, field.value_type, value);
            written += 1;
        }
    }
    written
}

/// Whether message `index` (or a message inline in it) declares the JSON key `name`.
fn declares(table: &MessageTable, index: usize, name: &str) -> bool {
    table.message(index).fields.iter().any(|field| {
        if field.is_inline() {
            matches!(field.value_type, FieldType::Message(inner) if declares(table, inner, name))
        } else {
            field.json_name == name
        }
    })
}

/// A field's value: a message, a list of messages, a map of messages, or a scalar.
fn write_field(
    table: &MessageTable,
    out: &mut Vec<u8>,
    cardinality: Cardinality,
    value_type: FieldType,
    value: &Value,
) {
    let FieldType::Message(index) = value_type else {
        return scalar(out, value);
    };
    match (cardinality, value) {
        (Cardinality::Optional, _) => write_message(table, out, index, value),
        (Cardinality::Repeated, Value::Array(items)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_message(table, out, index, item);
            }
            out.push(b']');
        }
        (Cardinality::Map(_), Value::Object(entries)) => {
            out.push(b'{');
            let mut first = true;
            for (name, entry) in entries {
                key(out, &mut first, name);
                write_message(table, out, index, entry);
            }
            out.push(b'}');
        }
        _ => scalar(out, value),
    }
}

/// A value of message `index`, spelled as its JSON encoding says.
fn write_message(table: &MessageTable, out: &mut Vec<u8>, index: usize, value: &Value) {
    let message = table.message(index);
    match (message.encoding, value) {
        (Encoding::Object, Value::Object(object)) => {
            out.push(b'{');
            let mut first = true;
            let written = write_fields(table, out, &mut first, index, object);
            if written < object.len() {
                for (name, value) in object {
                    if !declares(table, index, name) {
                        key(out, &mut first, name);
                        scalar(out, value);
                    }
                }
            }
            out.push(b'}');
        }
        // Embedded JSON (a `RawExtension`): an object of its own kind, if any.
        (Encoding::RawJson, _) => write_any(table, out, value),
        (
            Encoding::SchemaOrArray | Encoding::SchemaOrBool | Encoding::SchemaOrStringArray,
            Value::Object(_) | Value::Array(_),
        ) => {
            let schema = message.fields.iter().find_map(|f| match f.value_type {
                FieldType::Message(schema) => Some(schema),
                _ => None,
            });
            match (schema, value) {
                (Some(schema), Value::Object(_)) => write_message(table, out, schema, value),
                (Some(schema), Value::Array(_)) if message.encoding == Encoding::SchemaOrArray => {
                    write_field(
                        table,
                        out,
                        Cardinality::Repeated,
                        FieldType::Message(schema),
                        value,
                    )
                }
                _ => scalar(out, value),
            }
        }
        _ => scalar(out, value),
    }
}

#[cfg(test)]
mod tests;
