//! Protobuf message bytes → the JSON value Kubernetes' JSON encoding of the same object reads
//! as, walking the [`MessageTable`].

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::format::{go_duration, rfc3339, GO_ZERO_TIME_SECONDS};
use super::table::{Cardinality, Encoding, FieldType, MessageTable};
use super::wire::{Reader, WireValue};

/// The deepest nesting of messages a body may have (as `MAX_NESTING_DEPTH` for JSON bodies).
pub const MAX_MESSAGE_DEPTH: usize = 100;

/// What is wrong with a body, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The JSON path of the field being read (`spec.containers[0].ports`), empty at the root.
    pub path: String,
    /// What was wrong.
    pub message: String,
}

/// Reads `bytes` as the message at `index` of `table`.
///
/// Unknown field numbers are skipped; empty strings of singular fields are left out (Go's
/// marshaller writes every non-pointer string, JSON leaves empty ones out); a Go zero
/// `metav1.Time` is left out, as JSON's `null`. Errors: malformed wire data, a value of the
/// wrong wire type, text that is not UTF-8, a non-finite number, embedded JSON that does not
/// parse, or nesting deeper than [`MAX_MESSAGE_DEPTH`].
pub fn decode(table: &MessageTable, index: usize, bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut decoder = Decoder {
        table,
        path: Vec::new(),
    };
    Ok(decoder.message(index, bytes)?.unwrap_or(Value::Null))
}

struct Decoder<'t> {
    table: &'t MessageTable,
    path: Vec<String>,
}

impl Decoder<'_> {
    fn error(&self, message: impl Into<String>) -> DecodeError {
        let mut path = String::new();
        for segment in &self.path {
            if !path.is_empty() && !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(segment);
        }
        DecodeError {
            path,
            message: message.into(),
        }
    }

    /// A message's JSON value, or `None` for one JSON leaves out (a Go zero time).
    fn message(&mut self, index: usize, bytes: &[u8]) -> Result<Option<Value>, DecodeError> {
        if self.path.len() >= MAX_MESSAGE_DEPTH {
            return Err(self.error(format!(
                "messages nest deeper than {MAX_MESSAGE_DEPTH} levels"
            )));
        }
        let message = self.table.message(index);
        let fields = self.wire_fields(bytes)?;
        let last = |tag: u32| {
            fields
                .iter()
                .rev()
                .find(|(t, _)| *t == tag)
                .map(|(_, v)| *v)
        };
        Ok(Some(match message.encoding {
            Encoding::Object => return self.object(index, &fields).map(Some),
            Encoding::Time | Encoding::MicroTime => {
                let seconds = self.int(last(1), "seconds")?;
                let nanos = self.int(last(2), "nanos")?;
                if seconds == GO_ZERO_TIME_SECONDS && nanos == 0 {
                    return Ok(None);
                }
                let nanos = u32::try_from(nanos)
                    .ok()
                    .filter(|n| *n < 1_000_000_000)
                    .ok_or_else(|| self.error(format!("nanos {nanos} out of range")))?;
                let digits = if message.encoding == Encoding::Time {
                    0
                } else {
                    6
                };
                Value::String(rfc3339(seconds, nanos, digits))
            }
            Encoding::Duration => Value::String(go_duration(self.int(last(1), "duration")?)),
            Encoding::IntOrString => {
                if self.int(last(1), "type")? == 1 {
                    Value::String(self.text(last(3))?.unwrap_or_default())
                } else {
                    Value::from(self.int(last(2), "intVal")? as i32)
                }
            }
            Encoding::Quantity => Value::String(self.text(last(1))?.unwrap_or_else(|| "0".into())),
            Encoding::RawJson => match last(1) {
                None => return Ok(None),
                Some(value) => {
                    let raw = self.delimited(value)?;
                    if raw.is_empty() {
                        return Ok(None);
                    }
                    serde_json::from_slice(raw)
                        .map_err(|e| self.error(format!("embedded JSON does not parse: {e}")))?
                }
            },
            Encoding::StringList => Value::Array(
                fields
                    .iter()
                    .filter(|(tag, _)| *tag == 1)
                    .map(|(_, v)| {
                        self.text(Some(*v))
                            .map(|t| Value::from(t.unwrap_or_default()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Encoding::SchemaOrArray | Encoding::SchemaOrBool | Encoding::SchemaOrStringArray => {
                let object = self.object(index, &fields)?;
                let field_of = |tag: u32| message.field(tag).map(|f| f.json_name.as_str());
                let (schema, other) = match message.encoding {
                    Encoding::SchemaOrBool => (field_of(2), field_of(1)),
                    _ => (field_of(1), field_of(2)),
                };
                let get = |name: Option<&str>| name.and_then(|n| object.get(n)).cloned();
                match (message.encoding, get(schema), get(other)) {
                    (Encoding::SchemaOrBool, Some(schema), _) => schema,
                    (Encoding::SchemaOrBool, None, allows) => allows.unwrap_or(Value::Bool(false)),
                    (_, _, Some(list)) => list,
                    (_, schema, None) => schema.unwrap_or_else(|| Value::Object(Map::new())),
                }
            }
        }))
    }

    fn wire_fields<'b>(&self, bytes: &'b [u8]) -> Result<Vec<(u32, WireValue<'b>)>, DecodeError> {
        let mut reader = Reader::new(bytes);
        let mut fields = Vec::new();
        while !reader.is_empty() {
            fields.push(reader.field().map_err(|e| self.error(e))?);
        }
        Ok(fields)
    }

    fn object(
        &mut self,
        index: usize,
        fields: &[(u32, WireValue<'_>)],
    ) -> Result<Value, DecodeError> {
        let table = self.table;
        let message = table.message(index);
        let mut object = Map::new();
        for &(tag, value) in fields {
            // Unknown fields (newer Kubernetes versions) are skipped, as Go's decoder does.
            let Some(field) = message.field(tag) else {
                continue;
            };
            let name = field.json_name.as_str();
            match field.cardinality {
                Cardinality::Optional if field.is_inline() => {
                    // An embedded struct: its fields join this object's.
                    if let Some(embedded) = self.single(field.value_type, value)? {
                        let mut merged = Value::Object(std::mem::take(&mut object));
                        merge(&mut merged, embedded);
                        if let Value::Object(merged) = merged {
                            object = merged;
                        }
                    }
                }
                Cardinality::Optional => {
                    self.path.push(name.to_string());
                    let decoded = self.single(field.value_type, value)?;
                    self.path.pop();
                    match decoded {
                        None => {
                            object.remove(name);
                        }
                        Some(Value::String(text)) if text.is_empty() => {
                            object.remove(name);
                        }
                        Some(new) => match object.get_mut(name) {
                            // A message read twice merges, as protobuf specifies.
                            Some(old @ Value::Object(_)) if new.is_object() => merge(old, new),
                            _ => {
                                object.insert(name.to_string(), new);
                            }
                        },
                    }
                }
                Cardinality::Repeated => {
                    let mut items = match object.remove(name) {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    };
                    self.path.push(format!("{name}[{}]", items.len()));
                    let result = self.repeated(field.value_type, value, &mut items);
                    self.path.pop();
                    result?;
                    object.insert(name.to_string(), Value::Array(items));
                }
                Cardinality::Map(key_type) => {
                    self.path.push(name.to_string());
                    let (key, entry) = self.map_entry(key_type, field.value_type, value)?;
                    self.path.pop();
                    let map = object
                        .entry(name)
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(map) = map {
                        map.insert(key, entry);
                    }
                }
            }
        }
        Ok(Value::Object(object))
    }

    /// One value of a singular field (`None`: JSON leaves it out).
    fn single(
        &mut self,
        value_type: FieldType,
        value: WireValue<'_>,
    ) -> Result<Option<Value>, DecodeError> {
        match value_type {
            FieldType::Message(index) => {
                let bytes = self.delimited(value)?;
                self.message(index, bytes)
            }
            scalar => self.scalar(scalar, value).map(Some),
        }
    }

    /// Appends one wire value of a repeated field: a message, a scalar, or packed scalars.
    fn repeated(
        &mut self,
        value_type: FieldType,
        value: WireValue<'_>,
        items: &mut Vec<Value>,
    ) -> Result<(), DecodeError> {
        match (value_type, value) {
            (FieldType::String | FieldType::Bytes | FieldType::Message(_), _) => {
                let item = self.single(value_type, value)?;
                items.push(item.unwrap_or(Value::Null));
            }
            (scalar, WireValue::Delimited(packed)) => {
                let mut reader = Reader::new(packed);
                while !reader.is_empty() {
                    let element = match scalar {
                        FieldType::Double => reader.fixed64().map(WireValue::Fixed64),
                        FieldType::Float => reader.fixed32().map(WireValue::Fixed32),
                        _ => reader.varint().map(WireValue::Varint),
                    }
                    .map_err(|e| self.error(format!("packed list: {e}")))?;
                    items.push(self.scalar(scalar, element)?);
                }
            }
            (scalar, value) => items.push(self.scalar(scalar, value)?),
        }
        Ok(())
    }

    /// A map entry: key (1) and value (2), each defaulting to its type's zero value.
    fn map_entry(
        &mut self,
        key_type: FieldType,
        value_type: FieldType,
        value: WireValue<'_>,
    ) -> Result<(String, Value), DecodeError> {
        let bytes = self.delimited(value)?;
        let fields = self.wire_fields(bytes)?;
        let last = |tag: u32| {
            fields
                .iter()
                .rev()
                .find(|(t, _)| *t == tag)
                .map(|(_, v)| *v)
        };
        let key = match last(1) {
            None => String::new(),
            Some(key) => match self.scalar(key_type, key)? {
                Value::String(text) => text,
                other => other.to_string(),
            },
        };
        self.path.push(format!("[{key:?}]"));
        let entry = match (last(2), value_type) {
            (Some(value), _) => self.single(value_type, value)?.unwrap_or(Value::Null),
            (None, FieldType::Message(index)) => self.message(index, &[])?.unwrap_or(Value::Null),
            (None, FieldType::String | FieldType::Bytes) => Value::String(String::new()),
            (None, FieldType::Bool) => Value::Bool(false),
            (None, _) => Value::from(0),
        };
        self.path.pop();
        Ok((key, entry))
    }

    fn scalar(&self, value_type: FieldType, value: WireValue<'_>) -> Result<Value, DecodeError> {
        Ok(match (value_type, value) {
            (FieldType::String, value) => {
                Value::String(self.text(Some(value))?.unwrap_or_default())
            }
            (FieldType::Bytes, value) => Value::String(
                base64::engine::general_purpose::STANDARD.encode(self.delimited(value)?),
            ),
            (FieldType::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
            (FieldType::Int32, WireValue::Varint(v)) => Value::from(v as i64 as i32),
            (FieldType::Int64, WireValue::Varint(v)) => Value::from(v as i64),
            (FieldType::Uint32, WireValue::Varint(v)) => Value::from(v as u32),
            (FieldType::Uint64, WireValue::Varint(v)) => Value::from(v),
            (FieldType::Double, WireValue::Fixed64(bits)) => self.float(f64::from_bits(bits))?,
            (FieldType::Float, WireValue::Fixed32(bits)) => {
                self.float(f64::from(f32::from_bits(bits)))?
            }
            (expected, got) => {
                return Err(self.error(format!(
                    "expected a {expected:?} value, got wire type {}",
                    wire_name(&got)
                )))
            }
        })
    }

    fn float(&self, value: f64) -> Result<Value, DecodeError> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| self.error(format!("{value} is not a JSON number")))
    }

    /// A varint field as a signed number (0 when absent).
    fn int(&self, value: Option<WireValue<'_>>, name: &str) -> Result<i64, DecodeError> {
        match value {
            None => Ok(0),
            Some(WireValue::Varint(v)) => Ok(v as i64),
            Some(other) => Err(self.error(format!(
                "{name}: expected a varint, got wire type {}",
                wire_name(&other)
            ))),
        }
    }

    /// A string field's text (`None` when absent).
    fn text(&self, value: Option<WireValue<'_>>) -> Result<Option<String>, DecodeError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let bytes = self.delimited(value)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| self.error("a string is not valid UTF-8"))
    }

    fn delimited<'b>(&self, value: WireValue<'b>) -> Result<&'b [u8], DecodeError> {
        match value {
            WireValue::Delimited(bytes) => Ok(bytes),
            other => Err(self.error(format!(
                "expected length-delimited bytes, got wire type {}",
                wire_name(&other)
            ))),
        }
    }
}

fn wire_name(value: &WireValue<'_>) -> &'static str {
    match value {
        WireValue::Varint(_) => "varint",
        WireValue::Fixed64(_) => "fixed64",
        WireValue::Delimited(_) => "length-delimited",
        WireValue::Fixed32(_) => "fixed32",
    }
}

/// Merges `new` into `old` field by field (objects recursively; anything else replaces).
fn merge(old: &mut Value, new: Value) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in new {
                match old.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        old.insert(key, value);
                    }
                }
            }
        }
        (old, new) => *old = new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::wire::{put_delimited, put_key, put_varint, WireType};
    use proptest::prelude::*;
    use serde_json::json;

    fn index(name: &str) -> usize {
        MessageTable::builtin().index_of(name).unwrap()
    }

    fn decode_as(name: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
        decode(MessageTable::builtin(), index(name), bytes)
    }

    #[test]
    fn an_int_or_string_becomes_a_number_or_a_string() {
        let mut number = Vec::new();
        put_key(&mut number, 2, WireType::Varint);
        put_varint(&mut number, 8080);
        let mut text = Vec::new();
        put_key(&mut text, 1, WireType::Varint);
        put_varint(&mut text, 1);
        put_delimited(&mut text, 3, b"http");
        let mut port = Vec::new();
        put_delimited(&mut port, 4, &number);
        assert_eq!(
            decode_as("k8s.io.api.core.v1.ServicePort", &port).unwrap(),
            json!({"targetPort": 8080})
        );
        let mut port = Vec::new();
        put_delimited(&mut port, 4, &text);
        assert_eq!(
            decode_as("k8s.io.api.core.v1.ServicePort", &port).unwrap(),
            json!({"targetPort": "http"})
        );
    }

    #[test]
    fn secret_bytes_become_base64_and_unknown_tags_are_skipped() {
        let mut entry = Vec::new();
        put_delimited(&mut entry, 1, b"key");
        put_delimited(&mut entry, 2, b"\x00\xff");
        let mut secret = Vec::new();
        put_delimited(&mut secret, 2, &entry);
        put_delimited(&mut secret, 999, b"from a newer Kubernetes");
        assert_eq!(
            decode_as("k8s.io.api.core.v1.Secret", &secret).unwrap(),
            json!({"data": {"key": "AP8="}})
        );
    }

    #[test]
    fn packed_and_unpacked_repeated_numbers_both_read_as_lists() {
        let mut packed = Vec::new();
        let mut numbers = Vec::new();
        put_varint(&mut numbers, 1);
        put_varint(&mut numbers, 2);
        put_delimited(&mut packed, 3, &numbers);
        put_key(&mut packed, 3, WireType::Varint);
        put_varint(&mut packed, 3);
        let value = decode_as(
            "k8s.io.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
            &packed,
        )
        .unwrap();
        assert_eq!(value, json!({"values": [1, 2, 3]}));
    }

    #[test]
    fn a_zero_go_time_is_left_out_and_empty_strings_too() {
        let mut time = Vec::new();
        put_key(&mut time, 1, WireType::Varint);
        put_varint(&mut time, GO_ZERO_TIME_SECONDS as u64);
        let mut meta = Vec::new();
        put_delimited(&mut meta, 1, b"web");
        put_delimited(&mut meta, 2, b"");
        put_delimited(&mut meta, 8, &time);
        assert_eq!(
            decode_as("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", &meta).unwrap(),
            json!({"name": "web"})
        );
    }

    #[test]
    fn a_wrong_wire_type_names_the_field() {
        let mut meta = Vec::new();
        put_key(&mut meta, 1, WireType::Varint);
        put_varint(&mut meta, 1);
        let mut pod = Vec::new();
        put_delimited(&mut pod, 1, &meta);
        let error = decode_as("k8s.io.api.core.v1.Pod", &pod).unwrap_err();
        assert_eq!(error.path, "metadata.name");
        assert!(error.message.contains("length-delimited"), "{error:?}");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
        let mut bytes = Vec::new();
        for _ in 0..(MAX_MESSAGE_DEPTH + 5) {
            let mut outer = Vec::new();
            // JSONSchemaProps.not (28) is itself a JSONSchemaProps.
            put_delimited(&mut outer, 28, &bytes);
            bytes = outer;
        }
        let error = decode_as(
            "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
            &bytes,
        )
        .unwrap_err();
        assert!(error.message.contains("deeper"), "{error:?}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_whatever_the_message(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            which in 0usize..1000,
        ) {
            let table = MessageTable::builtin();
            let index = which % table.messages().len();
            let _ = decode(table, index, &bytes);
            let _ = crate::protobuf::decode_object(&bytes, "v1", "Pod");
        }
    }
}
