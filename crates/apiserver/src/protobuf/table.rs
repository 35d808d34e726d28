//! The message table: every protobuf message of the served kinds and body option types, read
//! once from the committed `messages.txt` (see the module docs of [`super`] for how it is
//! generated).

use std::collections::HashMap;
use std::sync::OnceLock;

/// The generated description of the messages.
const MESSAGES: &str = include_str!("messages.txt");

/// The JSON name of a field embedded inline.
pub const INLINE: &str = "...";

/// A field's scalar or message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// Bytes, base64 in JSON.
    Bytes,
    /// A boolean.
    Bool,
    /// A varint read as a signed 32-bit number.
    Int32,
    /// A varint read as a signed 64-bit number.
    Int64,
    /// A varint read as an unsigned 32-bit number.
    Uint32,
    /// A varint read as an unsigned 64-bit number.
    Uint64,
    /// A 64-bit float.
    Double,
    /// A 32-bit float.
    Float,
    /// A message: its index in [`MessageTable::messages`].
    Message(usize),
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// At most one (the last one read wins; messages merge).
    Optional,
    /// A list, packed or not.
    Repeated,
    /// A map of entries (key tag 1, value tag 2) with keys of this type.
    Map(FieldType),
}

/// One field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field number.
    pub tag: u32,
    /// The proto field name as prost spells it (`grace_period_seconds`).
    pub proto_name: String,
    /// The JSON property name (`gracePeriodSeconds`), or [`INLINE`] for a message embedded
    /// inline (Go's `json:",inline"`), whose fields are the parent's in JSON.
    pub json_name: String,
    /// Single, list or map.
    pub cardinality: Cardinality,
    /// The value type (a map's value type).
    pub value_type: FieldType,
}

/// How a message reads in JSON: most are objects, Kubernetes' special types are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON object of its fields.
    Object,
    /// `metav1.Time`: RFC 3339 in whole seconds.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration`: a Go duration string (`1h2m3s`).
    Duration,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `resource.Quantity`: its string.
    Quantity,
    /// Raw JSON bytes in field 1 (`RawExtension`, `FieldsV1`, apiextensions' `JSON`).
    RawJson,
    /// apiextensions' `JSONSchemaPropsOrArray`: a schema or a list of schemas.
    SchemaOrArray,
    /// apiextensions' `JSONSchemaPropsOrBool`: a boolean or a schema.
    SchemaOrBool,
    /// apiextensions' `JSONSchemaPropsOrStringArray`: a schema or a list of strings.
    SchemaOrStringArray,
    /// A message whose only field (1) is a repeated string, read as that list (`ExtraValue`).
    StringList,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The proto full name (`k8s.io.api.core.v1.Pod`).
    pub name: String,
    /// How it reads in JSON.
    pub encoding: Encoding,
    /// Its fields in tag order.
    pub fields: Vec<Field>,
}

impl Field {
    /// Whether the field is a message embedded inline.
    pub fn is_inline(&self) -> bool {
        self.json_name == INLINE
    }
}

impl Message {
    /// The field numbered `tag`, if the message declares it.
    pub fn field(&self, tag: u32) -> Option<&Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .map(|i| &self.fields[i])
    }

    /// The field whose JSON property is `json_name`, if any.
    pub fn field_named(&self, json_name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.json_name == json_name)
    }
}

/// Every message of the table, with the messages of the served kinds by apiVersion and kind.
#[derive(Debug)]
pub struct MessageTable {
    messages: Vec<Message>,
    by_name: HashMap<String, usize>,
    kinds: HashMap<(String, String), usize>,
}

impl MessageTable {
    /// The table of the committed `messages.txt`, parsed on first use.
    ///
    /// Panics if the committed file is malformed, which its unit tests rule out.
    pub fn builtin() -> &'static MessageTable {
        static TABLE: OnceLock<MessageTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            MessageTable::parse(MESSAGES).unwrap_or_else(|e| panic!("messages.txt: {e}"))
        })
    }

    /// Every message.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The message at `index` (from [`FieldType::Message`] or [`MessageTable::index_of`]).
    pub fn message(&self, index: usize) -> &Message {
        &self.messages[index]
    }

    /// The index of the message named `name` (`k8s.io.api.core.v1.Pod`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The index of the message of the served kind `api_version`/`kind` (`apps/v1`,
    /// `Deployment`).
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .get(&(api_version.to_string(), kind.to_string()))
            .copied()
    }

    /// Parses the table's text. Errors name the line that is wrong.
    pub fn parse(text: &str) -> Result<MessageTable, String> {
        // Two passes: names first, so fields can refer to messages declared later.
        let mut by_name = HashMap::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("message ") {
                let index = by_name.len();
                by_name.insert(name.trim().to_string(), index);
            }
        }
        let message_index = |name: &str| {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| format!("unknown message {name}"))
        };
        let mut messages: Vec<Message> = Vec::with_capacity(by_name.len());
        let mut kinds = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}", number + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [first, ..] if first.starts_with('#') => {}
                ["kind", api_version, kind, message] => {
                    let index = message_index(message).map_err(at)?;
                    kinds.insert((api_version.to_string(), kind.to_string()), index);
                }
                ["message", name] => messages.push(Message {
                    name: name.to_string(),
                    encoding: encoding_of(name),
                    fields: Vec::new(),
                }),
                [tag, proto_name, json_name, cardinality, value_type] => {
                    let tag = tag
                        .parse::<u32>()
                        .map_err(|e| at(format!("tag {tag:?}: {e}")))?;
                    let value_type = field_type(value_type, &message_index).map_err(at)?;
                    let cardinality = match *cardinality {
                        "optional" => Cardinality::Optional,
                        "repeated" => Cardinality::Repeated,
                        other => {
                            let key = other
                                .strip_prefix("map<")
                                .and_then(|k| k.strip_suffix('>'))
                                .ok_or_else(|| at(format!("cardinality {other:?}")))?;
                            Cardinality::Map(field_type(key, &message_index).map_err(at)?)
                        }
                    };
                    let message = messages
                        .last_mut()
                        .ok_or_else(|| at("a field before any message".into()))?;
                    if message.fields.last().is_some_and(|f| f.tag >= tag) {
                        return Err(at(format!("tag {tag} out of order")));
                    }
                    message.fields.push(Field {
                        tag,
                        proto_name: proto_name.to_string(),
                        json_name: json_name.to_string(),
                        cardinality,
                        value_type,
                    });
                }
                _ => return Err(at(format!("unreadable line {line:?}"))),
            }
        }
        Ok(MessageTable {
            messages,
            by_name,
            kinds,
        })
    }
}

fn field_type(
    name: &str,
    message_index: &impl Fn(&str) -> Result<usize, String>,
) -> Result<FieldType, String> {
    Ok(match name {
        "string" => FieldType::String,
        "bytes" => FieldType::Bytes,
        "bool" => FieldType::Bool,
        "int32" => FieldType::Int32,
        "int64" => FieldType::Int64,
        "uint32" => FieldType::Uint32,
        "uint64" => FieldType::Uint64,
        "double" => FieldType::Double,
        "float" => FieldType::Float,
        message => FieldType::Message(message_index(message)?),
    })
}

/// Kubernetes' messages with a JSON form of their own, by proto full name.
fn encoding_of(name: &str) -> Encoding {
    const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
    const APIEXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.";
    let short = name.rsplit('.').next().unwrap_or_default();
    if let Some(meta) = name.strip_prefix(META) {
        return match meta {
            "Time" => Encoding::Time,
            "MicroTime" => Encoding::MicroTime,
            "Duration" => Encoding::Duration,
            "FieldsV1" => Encoding::RawJson,
            _ => Encoding::Object,
        };
    }
    match name {
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => return Encoding::IntOrString,
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => return Encoding::Quantity,
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => return Encoding::RawJson,
        _ => {}
    }
    if name.starts_with(APIEXTENSIONS) {
        return match short {
            "JSON" => Encoding::RawJson,
            "JSONSchemaPropsOrArray" => Encoding::SchemaOrArray,
            "JSONSchemaPropsOrBool" => Encoding::SchemaOrBool,
            "JSONSchemaPropsOrStringArray" => Encoding::SchemaOrStringArray,
            _ => Encoding::Object,
        };
    }
    if short == "ExtraValue" {
        return Encoding::StringList;
    }
    Encoding::Object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_table_parses_and_names_every_served_kind() {
        let table = MessageTable::builtin();
        for info in capstan_api::ResourceInfo::builtins() {
            if crate::schema::Schemas::builtin()
                .name_of(info.group(), info.version(), info.kind())
                .is_none()
            {
                continue;
            }
            let index = table
                .kind(&info.api_version(), info.kind())
                .unwrap_or_else(|| panic!("no message for {}", info.kind()));
            assert!(table.message(index).name.ends_with(info.kind()));
        }
        assert!(table
            .index_of("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions")
            .is_some());
    }

    #[test]
    fn fields_carry_their_json_names_from_the_openapi_schemas() {
        let table = MessageTable::builtin();
        let spec = table.message(table.index_of("k8s.io.api.core.v1.ServiceSpec").unwrap());
        assert_eq!(
            spec.field_named("clusterIP").unwrap().proto_name,
            "cluster_ip"
        );
        let meta = table.message(
            table
                .index_of("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")
                .unwrap(),
        );
        assert_eq!(meta.field(1).unwrap().json_name, "name");
        assert_eq!(meta.field(2).unwrap().json_name, "generateName");
    }

    #[test]
    fn special_messages_get_their_json_encodings() {
        let table = MessageTable::builtin();
        let encoding = |name: &str| table.message(table.index_of(name).unwrap()).encoding;
        assert_eq!(
            encoding("k8s.io.apimachinery.pkg.apis.meta.v1.Time"),
            Encoding::Time
        );
        assert_eq!(
            encoding("k8s.io.apimachinery.pkg.util.intstr.IntOrString"),
            Encoding::IntOrString
        );
        assert_eq!(
            encoding("k8s.io.apimachinery.pkg.api.resource.Quantity"),
            Encoding::Quantity
        );
    }

    #[test]
    fn a_malformed_table_names_the_line() {
        let error = MessageTable::parse("message a.B\n  1 x x optional c.D\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("c.D"), "{error}");
        let error =
            MessageTable::parse("message a.B\n  2 x x optional string\n  1 y y optional string\n")
                .unwrap_err();
        assert!(error.contains("out of order"), "{error}");
    }
}
