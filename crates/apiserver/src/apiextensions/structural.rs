//! Structural `openAPIV3Schema`s of CustomResourceDefinitions: validation with
//! kube-apiserver's field errors, pruning of unknown fields, and defaulting.
//!
//! The schema is read as the CRD carries it (JSON), node by node, so every keyword a
//! structural schema may hold is honoured where it stands: `type`, `nullable`, `properties`,
//! `additionalProperties`, `items`, `required`, `enum`, `minimum`/`maximum` (and their
//! `exclusive` forms), `multipleOf`, `minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`,
//! `minProperties`/`maxProperties`, `default`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource` and
//! `x-kubernetes-list-type: set`. Field errors read as kube-apiserver's (for example
//! `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer:
//! "string"`).

use std::collections::HashMap;

use capstan_api::FieldError;
use parking_lot::Mutex;
use serde_json::{Map, Value};

/// Joins a parent path and a property name the way Kubernetes prints field paths.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Joins a list path and an index: `spec.items[0]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The OpenAPI type name of a JSON value, as kube-openapi reports it in type errors.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Whether unknown fields under `schema` are kept.
pub(crate) fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The schema of `value`'s property `name` under `schema`: its own, or `additionalProperties`.
pub(crate) fn property_schema<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    properties(schema)
        .and_then(|props| props.get(name))
        .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()))
}

/// Fields every object has whatever its schema says: the root's and an embedded resource's.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

// ---------------------------------------------------------------------------------------------
// Pruning

/// Drops from `value` every field `schema` does not specify (unless
/// `x-kubernetes-preserve-unknown-fields` keeps them), returning their paths. `root` keeps
/// `apiVersion`, `kind` and `metadata`, as every object's.
pub fn prune(schema: &Value, value: &mut Value, root: bool) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, value, "", root, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, value: &mut Value, path: &str, keep_meta: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let preserve = preserves_unknown(schema);
            let additional = schema.get("additionalProperties");
            let keeps_all = matches!(additional, Some(Value::Bool(true)));
            let props = properties(schema);
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                let field_path = child(path, &name);
                if keep_meta && OBJECT_FIELDS.contains(&name.as_str()) {
                    if name == "metadata" {
                        continue;
                    }
                    if let (Some(sub), Some(v)) =
                        (props.and_then(|p| p.get(&name)), map.get_mut(&name))
                    {
                        prune_at(sub, v, &field_path, false, out);
                    }
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(&name))
                    .or_else(|| additional.filter(|s| s.is_object()));
                match sub {
                    Some(sub) => {
                        let embedded = flag(sub, "x-kubernetes-embedded-resource");
                        if let Some(v) = map.get_mut(&name) {
                            prune_at(sub, v, &field_path, embedded, out);
                        }
                    }
                    None if preserve || keeps_all => {}
                    None => {
                        map.remove(&name);
                        out.push(field_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                let embedded = flag(item_schema, "x-kubernetes-embedded-resource");
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item_schema, item, &index(path, i), embedded, out);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting

/// Fills every `default` of `schema` missing from `value` (absent, or `null` where the field is
/// not `nullable`), and drops `null`s of fields that are neither nullable nor defaulted, as
/// kube-apiserver does when it decodes a custom resource. Idempotent.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (name, sub) in props {
                    let nullable = flag(sub, "nullable");
                    match map.get(name) {
                        None => {
                            if let Some(default) = sub.get("default") {
                                map.insert(name.clone(), default.clone());
                            }
                        }
                        Some(Value::Null) if !nullable => match sub.get("default") {
                            Some(default) => {
                                map.insert(name.clone(), default.clone());
                            }
                            None => {
                                map.remove(name);
                            }
                        },
                        Some(_) => {}
                    }
                    if let Some(v) = map.get_mut(name) {
                        apply_defaults(sub, v);
                    }
                }
            }
            if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                let known = properties(schema);
                for (name, v) in map.iter_mut() {
                    if known.is_none_or(|k| !k.contains_key(name)) {
                        apply_defaults(sub, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Pushes to `causes` every way `value` breaks `schema`, naming fields as Kubernetes does.
/// `root` skips `apiVersion`, `kind` and `metadata`, which the registry checks for every kind.
pub fn validate(schema: &Value, value: &Value, root: bool, causes: &mut Vec<FieldError>) {
    Validator { causes }.node(schema, value, "", root);
}

struct Validator<'a> {
    causes: &'a mut Vec<FieldError>,
}

/// Go's `%v` of a float64: integral values without a fraction.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Validator<'_> {
    fn node(&mut self, schema: &Value, value: &Value, path: &str, root: bool) {
        let body = |message: String| format!("{path} in body {message}");
        if value.is_null() && (flag(schema, "nullable") || schema.get("type").is_none()) {
            return;
        }
        let int_or_string = flag(schema, "x-kubernetes-int-or-string");
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let found = type_name(value);
            let fits = match expected {
                "number" => matches!(found, "integer" | "number"),
                other => other == found,
            };
            if !fits && !int_or_string {
                self.causes.push(FieldError::type_invalid(
                    path,
                    found,
                    body(format!("must be of type {expected}: {found:?}")),
                ));
                return;
            }
        }
        if int_or_string && !matches!(type_name(value), "integer" | "string") {
            let found = type_name(value);
            self.causes.push(FieldError::type_invalid(
                path,
                found,
                body(format!("must be of type integer-or-string: {found:?}")),
            ));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                let supported: Vec<String> = allowed
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                self.causes
                    .push(FieldError::not_supported(path, value.clone(), supported));
            }
        }
        match value {
            Value::Number(n) => self.number(schema, value, n.as_f64().unwrap_or(0.0), path),
            Value::String(s) => self.string(schema, s, path),
            Value::Array(items) => self.array(schema, items, path),
            Value::Object(map) => self.object(schema, map, path, root),
            _ => {}
        }
    }

    fn number(&mut self, schema: &Value, value: &Value, n: f64, path: &str) {
        let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
        let mut fail = |message: String| {
            self.causes.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body {message}"),
            ));
        };
        if let Some(max) = limit("maximum") {
            if flag(schema, "exclusiveMaximum") && n >= max {
                fail(format!("should be less than {}", number_text(max)));
            } else if n > max {
                fail(format!(
                    "should be less than or equal to {}",
                    number_text(max)
                ));
            }
        }
        if let Some(min) = limit("minimum") {
            if flag(schema, "exclusiveMinimum") && n <= min {
                fail(format!("should be greater than {}", number_text(min)));
            } else if n < min {
                fail(format!(
                    "should be greater than or equal to {}",
                    number_text(min)
                ));
            }
        }
        if let Some(factor) = limit("multipleOf").filter(|f| *f > 0.0) {
            let quotient = n / factor;
            if (quotient - quotient.round()).abs() > 1e-9 {
                fail(format!("should be a multiple of {}", number_text(factor)));
            }
        }
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if chars > max {
                self.causes.push(FieldError::too_long(path, max as usize));
            }
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if chars < min {
                self.causes.push(FieldError::invalid(
                    path,
                    s,
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if let Some(regex) = compiled_pattern(pattern) {
                if !regex.is_match(s) {
                    self.causes.push(FieldError::invalid(
                        path,
                        s,
                        format!("{path} in body should match '{pattern}'"),
                    ));
                }
            }
        }
    }

    fn array(&mut self, schema: &Value, items: &[Value], path: &str) {
        let len = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if len > max {
                self.causes.push(FieldError::too_many(path, max as usize));
            }
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if len < min {
                self.causes.push(FieldError::invalid(
                    path,
                    len,
                    format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    self.causes
                        .push(FieldError::duplicate(index(path, i), item.clone()));
                }
            }
        }
        if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
            let embedded = flag(item_schema, "x-kubernetes-embedded-resource");
            for (i, item) in items.iter().enumerate() {
                self.node(item_schema, item, &index(path, i), embedded);
            }
        }
    }

    fn object(&mut self, schema: &Value, map: &Map<String, Value>, path: &str, root: bool) {
        let count = map.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if count > max {
                self.causes.push(FieldError::too_many(path, max as usize));
            }
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if count < min {
                self.causes.push(FieldError::invalid(
                    path,
                    count,
                    format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        if flag(schema, "x-kubernetes-embedded-resource") && !path.is_empty() {
            for field in ["apiVersion", "kind"] {
                if map
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    self.causes.push(FieldError::required(
                        child(path, field),
                        "must not be empty",
                    ));
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    self.causes
                        .push(FieldError::required(child(path, name), ""));
                }
            }
        }
        for (name, value) in map {
            if root && OBJECT_FIELDS.contains(&name.as_str()) {
                continue;
            }
            if let Some(sub) = property_schema(schema, name) {
                let embedded = flag(sub, "x-kubernetes-embedded-resource");
                self.node(sub, value, &child(path, name), embedded);
            }
        }
    }
}

/// `pattern` compiled once (ECMA-262 patterns as Go's RE2 reads them); `None` when it does not
/// compile, which the CRD's own validation reports.
fn compiled_pattern(pattern: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::LazyLock<Mutex<HashMap<String, Option<regex::Regex>>>> =
        std::sync::LazyLock::new(Mutex::default);
    let mut cache = CACHE.lock();
    if cache.len() > 4096 {
        cache.clear();
    }
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

/// Checks that every `pattern` under `schema` compiles, reporting the ones that do not at
/// `path` (the schema's own path in the CRD).
pub fn check_patterns(schema: &Value, path: &str, causes: &mut Vec<FieldError>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (key, sub) in map {
        let sub_path = child(path, key);
        if key == "pattern" {
            if let Some(pattern) = sub.as_str() {
                if let Err(e) = regex::Regex::new(pattern) {
                    causes.push(FieldError::invalid(
                        sub_path,
                        pattern,
                        format!("must be a valid regular expression, but isn't: {e}"),
                    ));
                }
            }
        } else if sub.is_object() {
            check_patterns(sub, &sub_path, causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                        "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                    },
                },
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            },
        })
    }

    fn messages(value: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&widget_schema(), &value, true, &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_wrong_type_reads_like_kube_apiserver() {
        assert_eq!(
            messages(json!({"spec": {"size": "small", "replicas": "3"}})),
            [
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
            ]
        );
    }

    #[test]
    fn bounds_enums_lengths_patterns_and_items_are_checked() {
        let found = messages(json!({"spec": {
            "size": "medium", "replicas": 11, "name": "ABCDEFG", "tags": [],
        }}));
        assert!(
            found.contains(
                &r#"spec.size: Unsupported value: "medium": supported values: "small", "large""#
                    .to_string()
            ),
            "{found:?}"
        );
        assert!(found.contains(&"spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10".to_string()), "{found:?}");
        assert!(
            found.contains(&"spec.name: Too long: may not be more than 5 bytes".to_string()),
            "{found:?}"
        );
        assert!(found.contains(&r#"spec.name: Invalid value: "ABCDEFG": spec.name in body should match '^[a-z]+$'"#.to_string()), "{found:?}");
        assert!(
            found.contains(
                &"spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"
                    .to_string()
            ),
            "{found:?}"
        );
    }

    #[test]
    fn required_fields_are_reported_by_path() {
        assert_eq!(messages(json!({"spec": {}})), ["spec.size: Required value"]);
    }

    #[test]
    fn int_or_string_nullable_and_preserved_fields_accept_their_values() {
        assert!(messages(
            json!({"spec": {"size": "small", "port": 80, "note": null, "free": {"x": 1}}})
        )
        .is_empty());
        assert!(messages(json!({"spec": {"size": "small", "port": "http"}})).is_empty());
        assert_eq!(
            messages(json!({"spec": {"size": "small", "port": true}})).len(),
            1
        );
    }

    #[test]
    fn an_embedded_resource_needs_api_version_and_kind() {
        let found = messages(json!({"spec": {"size": "small", "template": {"metadata": {}}}}));
        assert_eq!(
            found,
            [
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty",
            ]
        );
    }

    #[test]
    fn pruning_drops_unknown_fields_but_keeps_preserved_and_embedded_ones() {
        let mut object = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": "small", "color": "red", "free": {"anything": 1},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}},
            "extra": true,
        });
        let pruned = prune(&widget_schema(), &mut object, true);
        assert_eq!(pruned, ["extra", "spec.color"]);
        assert_eq!(object["spec"]["free"]["anything"], 1);
        assert_eq!(object["spec"]["template"]["kind"], "Pod");
        assert_eq!(object["metadata"]["name"], "w");
    }

    #[test]
    fn defaults_fill_missing_fields_and_replace_non_nullable_nulls() {
        let mut object = json!({"spec": {"size": "small"}});
        apply_defaults(&widget_schema(), &mut object);
        assert_eq!(object["spec"]["replicas"], 1);
        let mut object =
            json!({"spec": {"size": "small", "replicas": null, "name": null, "note": null}});
        apply_defaults(&widget_schema(), &mut object);
        assert_eq!(object["spec"]["replicas"], 1);
        assert!(object["spec"].get("name").is_none());
        assert!(object["spec"]["note"].is_null() && object["spec"].get("note").is_some());
    }

    #[test]
    fn invalid_patterns_are_reported_where_they_stand() {
        let mut causes = Vec::new();
        check_patterns(
            &json!({"properties": {"a": {"pattern": "("}}}),
            "schema",
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "schema.properties.a.pattern");
    }
}
