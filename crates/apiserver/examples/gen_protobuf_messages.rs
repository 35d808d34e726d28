//! Writes `crates/apiserver/src/protobuf/messages.txt`: the protobuf message table the API
//! server decodes `application/vnd.kubernetes.protobuf` bodies with.
//!
//! It reads the prost-generated sources of the `k8s-pb` crate (every Kubernetes message with
//! its `#[prost(...)]` field attributes), keeps the messages reachable from the served
//! built-in kinds and the option types clients send as bodies (`DeleteOptions`, `Eviction`,
//! `Scale`), and names each field's JSON property after the OpenAPI schemas the server
//! publishes (`Schemas::builtin()`), matching the proto field name case-insensitively without
//! underscores or punctuation.
//!
//! Regenerate (from the repository root) with
//!
//! ```text
//! cargo run -p capstan-apiserver --example gen_protobuf_messages -- \
//!     [path/to/k8s-pb-0.9.0/src] > crates/apiserver/src/protobuf/messages.txt
//! ```
//!
//! Without an argument the sources are looked up under `$CARGO_HOME/registry/src/*/`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use capstan_api::ResourceInfo;
use capstan_apiserver::schema::Schemas;
use serde_json::Value;

/// The k8s-pb release the table is generated from.
const K8S_PB: &str = "k8s-pb-0.9.0";

/// Messages decoded as bodies besides the served kinds.
const EXTRA_ROOTS: &[&str] = &[
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "k8s.io.api.policy.v1.Eviction",
    "k8s.io.api.autoscaling.v1.Scale",
    // The reviews: create-only kinds, never stored (kubectl sends them as protobuf).
    "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
    "k8s.io.api.authorization.v1.SubjectAccessReview",
    "k8s.io.api.authorization.v1.LocalSubjectAccessReview",
    "k8s.io.api.authorization.v1.SelfSubjectRulesReview",
    "k8s.io.api.authentication.v1.TokenReview",
    "k8s.io.api.authentication.v1.SelfSubjectReview",
    // `serviceaccounts/{name}/token` (kubectl create token).
    "k8s.io.api.authentication.v1.TokenRequest",
];

/// The JSON name of a field embedded inline (its fields are the parent's in JSON).
const INLINE: &str = "...";

/// One field as prost declares it.
struct RawField {
    tag: u32,
    rust_name: String,
    /// `optional`, `repeated` or `map`.
    cardinality: &'static str,
    /// The scalar type, or the message's proto full name.
    value_type: String,
    /// A map's key type.
    key_type: Option<String>,
}

/// One message: its proto package, its Rust name and fields.
struct RawMessage {
    package: String,
    rust_name: String,
    fields: Vec<RawField>,
}

fn main() {
    let source = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(find_k8s_pb);
    let mut messages = Vec::new();
    visit(&source, &source, &mut messages);
    let definitions = Schemas::builtin().definitions();
    // Lower-cased OpenAPI names, to give prost's Rust names (`CsiDriver`) their Kubernetes
    // spelling (`CSIDriver`).
    let openapi_by_lower: HashMap<String, &str> = definitions
        .keys()
        .map(|name| (name.to_lowercase(), name.as_str()))
        .collect();
    let mut by_proto: BTreeMap<String, (usize, Option<&str>)> = BTreeMap::new();
    let mut by_rust: HashMap<(String, String), String> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let openapi_package = message
            .package
            .replacen("k8s.io.", "io.k8s.", 1)
            .replace('_', "-");
        let lower = format!("{openapi_package}.{}", message.rust_name).to_lowercase();
        let openapi = openapi_by_lower.get(&lower).copied();
        let short = openapi
            .and_then(|o| o.rsplit('.').next())
            .unwrap_or(&message.rust_name);
        let full = format!("{}.{short}", message.package);
        by_rust.insert(
            (message.package.clone(), message.rust_name.clone()),
            full.clone(),
        );
        by_proto.insert(full, (index, openapi));
    }

    let mut kinds = Vec::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for info in ResourceInfo::builtins() {
        let Some(openapi) = Schemas::builtin().name_of(info.group(), info.version(), info.kind())
        else {
            continue;
        };
        let proto = openapi.replacen("io.k8s.", "k8s.io.", 1).replace(
            "k8s.io.apiextensions-apiserver.",
            "k8s.io.apiextensions_apiserver.",
        );
        if !by_proto.contains_key(&proto) {
            eprintln!("no message for {openapi}");
            continue;
        }
        kinds.push(format!(
            "kind {} {} {proto}",
            info.api_version(),
            info.kind()
        ));
        queue.push_back(proto);
    }
    queue.extend(EXTRA_ROOTS.iter().map(|s| s.to_string()));

    let mut emitted = BTreeMap::new();
    while let Some(name) = queue.pop_front() {
        if emitted.contains_key(&name) {
            continue;
        }
        let Some(&(index, openapi)) = by_proto.get(&name) else {
            panic!("message {name} is referenced but not declared");
        };
        let message = &messages[index];
        // Whether every field of the message named `embedded` is a property of this one.
        let inline_in = |embedded: &str, properties: &HashMap<String, String>| {
            by_proto.get(embedded).is_some_and(|&(embedded, _)| {
                messages[embedded].fields.iter().all(|f| {
                    properties.contains_key(&normalize(f.rust_name.trim_start_matches("r#")))
                })
            })
        };
        let properties: HashMap<String, String> = openapi
            .and_then(|o| definitions.get(o))
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().map(|k| (normalize(k), k.clone())).collect())
            .unwrap_or_default();
        let mut lines = Vec::new();
        let mut fields: Vec<&RawField> = message.fields.iter().collect();
        fields.sort_by_key(|f| f.tag);
        for field in fields {
            let value_type = resolve(&field.value_type, message, &by_rust);
            if value_type.contains('.') {
                queue.push_back(value_type.clone());
            }
            let proto_name = field.rust_name.trim_start_matches("r#");
            let json = match properties.get(&normalize(proto_name)) {
                Some(json) => json.clone(),
                // A message field the schema does not name is embedded inline in Go
                // (`json:",inline"`): its fields are the parent's in JSON.
                None if !properties.is_empty() && inline_in(&value_type, &properties) => {
                    eprintln!("inline: {name}.{proto_name}");
                    INLINE.to_string()
                }
                None => {
                    if !properties.is_empty() {
                        eprintln!("no JSON name for {name}.{proto_name}");
                    }
                    match proto_name {
                        // Go's `UID` fields, which prost spells `u_id`, are `uid` in JSON.
                        "u_id" => "uid".to_string(),
                        _ => lower_camel(proto_name),
                    }
                }
            };
            let cardinality = match &field.key_type {
                Some(key) => format!("map<{key}>"),
                None => field.cardinality.to_string(),
            };
            lines.push(format!(
                "  {} {proto_name} {json} {cardinality} {value_type}",
                field.tag
            ));
        }
        emitted.insert(name, lines);
    }

    println!("# The protobuf messages of the served built-in kinds and body option types.");
    println!("# Generated from {K8S_PB} by crates/apiserver/examples/gen_protobuf_messages.rs;");
    println!("# do not edit by hand. Lines: `kind <apiVersion> <Kind> <message>`, then per");
    println!("# message `message <proto full name>` and its fields in tag order as");
    println!("# `<tag> <proto name> <JSON name> optional|repeated|map<key type> <type>`; the JSON");
    println!("# name `{INLINE}` marks a message embedded inline (its fields are the parent's).");
    for kind in kinds {
        println!("{kind}");
    }
    for (name, lines) in emitted {
        println!("message {name}");
        for line in lines {
            println!("{line}");
        }
    }
}

fn find_k8s_pb() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registry = home.join("registry").join("src");
    for index in std::fs::read_dir(&registry).expect("the cargo registry sources") {
        let candidate = index
            .expect("a registry directory")
            .path()
            .join(K8S_PB)
            .join("src");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "{K8S_PB} is not under {}: pass its src directory",
        registry.display()
    );
}

/// Parses every `.rs` file under `dir` (each module's package is its directory path).
fn visit(root: &Path, dir: &Path, messages: &mut Vec<RawMessage>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("a k8s-pb source directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            visit(root, &path, messages);
        } else if path.extension().is_some_and(|e| e == "rs") && dir != root {
            let relative = dir.strip_prefix(root).expect("under the root");
            let package = std::iter::once("k8s.io".to_string())
                .chain(relative.iter().map(|p| p.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(".");
            let text = std::fs::read_to_string(&path).expect("a k8s-pb source file");
            parse_file(&package, &text, messages);
        }
    }
}

fn parse_file(package: &str, text: &str, messages: &mut Vec<RawMessage>) {
    let mut current: Option<RawMessage> = None;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            // `pub struct Name {` or, for an empty message, `pub struct Name {}`.
            let name = rest
                .trim_end_matches("{}")
                .trim_end_matches('{')
                .trim()
                .to_string();
            if let Some(done) = current.take() {
                messages.push(done);
            }
            current = Some(RawMessage {
                package: package.to_string(),
                rust_name: name,
                fields: Vec::new(),
            });
        } else if let Some(attribute) = line.strip_prefix("#[prost(") {
            let attribute = attribute.trim_end_matches(")]");
            // The declaration may wrap: read until its closing comma.
            let mut declaration = String::new();
            for next in lines.by_ref() {
                declaration.push_str(next);
                let depth = declaration.matches('<').count() - declaration.matches('>').count();
                if depth == 0 && declaration.ends_with(',') {
                    break;
                }
            }
            let message = current.as_mut().expect("a field inside a struct");
            message.fields.push(parse_field(attribute, &declaration));
        }
    }
    if let Some(done) = current.take() {
        messages.push(done);
    }
}

fn parse_field(attribute: &str, declaration: &str) -> RawField {
    let tag = attribute
        .split("tag = \"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tag in #[prost({attribute})]"));
    let (name, rust_type) = declaration
        .trim_start_matches("pub ")
        .trim_end_matches(',')
        .split_once(':')
        .map(|(n, t)| (n.trim().to_string(), t.replace(' ', "").replace(",>", ">")))
        .unwrap_or_else(|| panic!("a field declaration: {declaration}"));
    if let Some(map) = attribute.strip_prefix("btree_map = \"") {
        let (key, value) = map
            .split('"')
            .next()
            .and_then(|kv| kv.split_once(", "))
            .expect("a map's key and value types");
        let value_type = if value == "message" {
            // The value type is the last generic argument.
            innermost(rust_type.rsplit(',').next().unwrap_or_default())
        } else {
            value.to_string()
        };
        return RawField {
            tag,
            rust_name: name,
            cardinality: "map",
            value_type,
            key_type: Some(key.to_string()),
        };
    }
    let mut parts = attribute.split(", ");
    let scalar = parts.next().unwrap_or_default();
    let cardinality = if attribute.contains("repeated") {
        "repeated"
    } else {
        "optional"
    };
    let value_type = match scalar {
        "message" => innermost(&rust_type),
        "bytes = \"vec\"" => "bytes".to_string(),
        other => other.to_string(),
    };
    RawField {
        tag,
        rust_name: name,
        cardinality,
        value_type,
        key_type: None,
    }
}

/// The type inside `Option<Box<...>>`, `Vec<...>` or a map's value position.
fn innermost(rust_type: &str) -> String {
    let mut inner = rust_type.trim_end_matches('>');
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::boxed::Box<",
        "::prost::alloc::vec::Vec<",
    ] {
        inner = inner.trim_start_matches(wrapper);
    }
    inner.to_string()
}

/// Resolves a Rust type path (relative with `super::`) from `message`'s module to a proto
/// full name; scalars stay as they are.
fn resolve(
    rust_type: &str,
    message: &RawMessage,
    by_rust: &HashMap<(String, String), String>,
) -> String {
    const SCALARS: &[&str] = &[
        "string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
    ];
    if SCALARS.contains(&rust_type) {
        return rust_type.to_string();
    }
    let mut package: Vec<&str> = message.package.split('.').collect();
    let mut segments: Vec<&str> = rust_type.split("::").collect();
    let name = segments.pop().expect("a type name");
    for segment in segments {
        match segment {
            "super" => {
                package.pop();
            }
            other => package.push(other),
        }
    }
    let key = (package.join("."), name.to_string());
    by_rust
        .get(&key)
        .cloned()
        .unwrap_or_else(|| panic!("unresolved type {rust_type} in {}", message.rust_name))
}

/// A name reduced to lower-case letters and digits, for matching proto to JSON names.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `grace_period_seconds` → `gracePeriodSeconds`, for messages without an OpenAPI schema.
fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
