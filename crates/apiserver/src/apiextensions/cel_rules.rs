//! The CEL rules of a custom resource's schema (`x-kubernetes-validations`), evaluated with
//! cel-rust (the `cel` crate).
//!
//! Each rule is compiled once, when the kind is registered, against the standard environment
//! plus the strings, lists and math extensions. While an object is validated, a rule runs with
//! `self` bound to the value of the schema node it sits on; a transition rule (one that reads
//! `oldSelf`) runs only on updates whose stored object has a value there, with `oldSelf` bound
//! to it, as in kube-apiserver. A rule that does not evaluate to `true` fails with its
//! `message` or `failed rule: <rule>`, at the node's path (plus its `fieldPath`), with the
//! value shown as the node's type (`spec: Invalid value: "object": ...`).

use std::sync::{Arc, LazyLock};

use capstan_api::FieldError;
use cel::{objects::Key, Context, Env, Program, Value as CelValue};
use serde_json::Value;

use super::structural::{child, index, property_schema};

/// The environment every rule compiles and runs in.
static ENVIRONMENT: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // The extensions only declare functions; a clash would be a bug of the crate.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    let _ = env.add_extension(cel::extensions::math);
    Arc::new(env)
});

/// One compiled rule, where it sits in the schema.
struct Rule {
    /// The schema path of the node it sits on, as a list of steps.
    location: Vec<Step>,
    /// The node's `type` (`object`, `integer`, ...), shown as the failing value.
    node_type: String,
    source: String,
    message: Option<String>,
    field_path: Option<String>,
    reason: Option<String>,
    transition: bool,
    program: Program,
}

/// How to walk from a schema node to one below it.
#[derive(Clone, Debug)]
enum Step {
    /// A property (or any key of `additionalProperties`, with `None`).
    Property(Option<String>),
    /// Every item of a list.
    Items,
}

/// Every rule of one schema, compiled.
pub struct Rules {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.source))
            .finish()
    }
}

/// A rule that does not compile: its schema path and the compiler's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Where the rule sits, e.g. `spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`.
    pub path: String,
    /// The rule.
    pub rule: String,
    /// What the compiler said.
    pub message: String,
}

impl Rules {
    /// Compiles every rule under `schema`; `path` names the schema in errors.
    ///
    /// Errors: every rule that does not compile.
    pub fn compile(schema: &Value, path: &str) -> Result<Rules, Vec<CompileError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        collect(schema, path, &mut Vec::new(), &mut rules, &mut errors);
        if errors.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(errors)
        }
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs every rule against `object` (and `old`, the stored object on an update), pushing
    /// each failure to `causes`.
    pub fn validate(
        &self,
        schema: &Value,
        object: &Value,
        old: Option<&Value>,
        causes: &mut Vec<FieldError>,
    ) {
        for rule in &self.rules {
            let mut targets = Vec::new();
            locate(
                schema,
                object,
                old,
                &rule.location,
                String::new(),
                &mut targets,
            );
            for (path, value, old_value) in targets {
                if rule.transition && old_value.is_none() {
                    continue;
                }
                if let Some(error) = rule.check(&path, value, old_value) {
                    causes.push(error);
                }
            }
        }
    }
}

impl Rule {
    fn check(&self, path: &str, value: &Value, old: Option<&Value>) -> Option<FieldError> {
        let mut context = Context::with_env(ENVIRONMENT.clone());
        context.add_variable_from_value("self", to_cel(value));
        if let Some(old) = old {
            context.add_variable_from_value("oldSelf", to_cel(old));
        }
        let path = match &self.field_path {
            Some(field_path) => format!("{path}{field_path}"),
            None => path.to_string(),
        };
        let path = path.trim_start_matches('.').to_string();
        let detail = match self.program.execute(&context) {
            Ok(CelValue::Bool(true)) => return None,
            Ok(CelValue::Bool(false)) => self
                .message
                .clone()
                .unwrap_or_else(|| format!("failed rule: {}", self.source)),
            Ok(other) => format!(
                "rule did not evaluate to a boolean ({other:?}): {}",
                self.source
            ),
            Err(e) => format!("rule evaluation error: {e}: {}", self.source),
        };
        Some(match self.reason.as_deref() {
            Some("FieldValueForbidden") => FieldError::forbidden(path, detail),
            Some("FieldValueRequired") => FieldError::required(path, detail),
            Some("FieldValueDuplicate") => {
                let mut error = FieldError::duplicate(path, self.node_type.clone());
                error.detail = detail;
                error
            }
            _ => FieldError::invalid(path, self.node_type.clone(), detail),
        })
    }
}

/// Walks `schema`, compiling each `x-kubernetes-validations` rule found at `location`.
fn collect(
    schema: &Value,
    path: &str,
    location: &mut Vec<Step>,
    rules: &mut Vec<Rule>,
    errors: &mut Vec<CompileError>,
) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(list) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for (i, spec) in list.iter().enumerate() {
            let source = spec["rule"].as_str().unwrap_or_default().to_string();
            let rule_path = format!("{path}.x-kubernetes-validations[{i}].rule");
            match ENVIRONMENT.compile(&source) {
                Ok(program) => {
                    let transition = program.references().has_variable("oldSelf");
                    let text = |key: &str| {
                        spec[key]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                    };
                    rules.push(Rule {
                        location: location.clone(),
                        node_type: map
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("object")
                            .to_string(),
                        source,
                        message: text("message"),
                        field_path: text("fieldPath"),
                        reason: text("reason"),
                        transition,
                        program,
                    });
                }
                Err(e) => errors.push(CompileError {
                    path: rule_path,
                    rule: source,
                    message: e.to_string(),
                }),
            }
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            location.push(Step::Property(Some(name.clone())));
            collect(
                sub,
                &format!("{path}.properties[{name}]"),
                location,
                rules,
                errors,
            );
            location.pop();
        }
    }
    if let Some(sub) = map.get("additionalProperties").filter(|s| s.is_object()) {
        location.push(Step::Property(None));
        collect(
            sub,
            &format!("{path}.additionalProperties"),
            location,
            rules,
            errors,
        );
        location.pop();
    }
    if let Some(sub) = map.get("items").filter(|s| s.is_object()) {
        location.push(Step::Items);
        collect(sub, &format!("{path}.items"), location, rules, errors);
        location.pop();
    }
}

/// Every value of `object` at `location` with its path and, for transition rules, the value
/// at the same place in `old` (list items are matched by index).
fn locate<'a>(
    schema: &Value,
    object: &'a Value,
    old: Option<&'a Value>,
    location: &[Step],
    path: String,
    out: &mut Vec<(String, &'a Value, Option<&'a Value>)>,
) {
    let Some((step, rest)) = location.split_first() else {
        if !object.is_null() {
            out.push((path, object, old));
        }
        return;
    };
    match step {
        Step::Property(Some(name)) => {
            if let (Some(value), Some(sub)) = (object.get(name), property_schema(schema, name)) {
                let old = old.and_then(|o| o.get(name));
                locate(sub, value, old, rest, child(&path, name), out);
            }
        }
        Step::Property(None) => {
            let Some(sub) = schema.get("additionalProperties") else {
                return;
            };
            if let Some(map) = object.as_object() {
                for (key, value) in map {
                    let old = old.and_then(|o| o.get(key));
                    locate(sub, value, old, rest, child(&path, key), out);
                }
            }
        }
        Step::Items => {
            let Some(sub) = schema.get("items") else {
                return;
            };
            if let Some(items) = object.as_array() {
                for (i, item) in items.iter().enumerate() {
                    let old = old.and_then(|o| o.get(i));
                    locate(sub, item, old, rest, index(&path, i), out);
                }
            }
        }
    }
}

/// A JSON value as CEL sees it: integers as `int` (or `uint` past `i64`), objects as maps with
/// string keys.
fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: std::collections::HashMap<Key, CelValue> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            CelValue::Map(cel::objects::Map {
                map: Arc::new(entries),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
                        {"rule": "!has(self.name) || self.name.startsWith('w')"},
                    ],
                    "properties": {
                        "replicas": {"type": "integer"},
                        "maxReplicas": {"type": "integer"},
                        "name": {"type": "string"},
                        "mode": {"type": "string", "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "mode is immutable"},
                        ]},
                        "ports": {"type": "array", "items": {"type": "integer", "x-kubernetes-validations": [
                            {"rule": "self > 0"},
                        ]}},
                    },
                },
            },
        })
    }

    fn failures(object: Value, old: Option<Value>) -> Vec<String> {
        let schema = schema();
        let rules = Rules::compile(&schema, "openAPIV3Schema").unwrap();
        let mut causes = Vec::new();
        rules.validate(&schema, &object, old.as_ref(), &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_failing_rule_reports_its_message_at_its_node() {
        assert_eq!(
            failures(json!({"spec": {"replicas": 5, "maxReplicas": 3}}), None),
            [r#"spec: Invalid value: "object": replicas must not exceed maxReplicas"#]
        );
    }

    #[test]
    fn a_rule_without_message_reports_the_rule() {
        assert_eq!(
            failures(
                json!({"spec": {"replicas": 1, "maxReplicas": 3, "name": "x"}}),
                None
            ),
            [
                r#"spec: Invalid value: "object": failed rule: !has(self.name) || self.name.startsWith('w')"#
            ]
        );
    }

    #[test]
    fn transition_rules_run_only_on_updates() {
        let object = json!({"spec": {"replicas": 1, "maxReplicas": 3, "mode": "b"}});
        assert!(failures(object.clone(), None).is_empty());
        let old = json!({"spec": {"replicas": 1, "maxReplicas": 3, "mode": "a"}});
        assert_eq!(
            failures(object, Some(old)),
            [r#"spec.mode: Invalid value: "string": mode is immutable"#]
        );
    }

    #[test]
    fn item_rules_run_on_every_item_with_its_index() {
        assert_eq!(
            failures(
                json!({"spec": {"replicas": 1, "maxReplicas": 3, "ports": [80, 0]}}),
                None
            ),
            [r#"spec.ports[1]: Invalid value: "integer": failed rule: self > 0"#]
        );
    }

    #[test]
    fn a_rule_that_does_not_compile_is_named_by_its_path() {
        let schema = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]});
        let errors = Rules::compile(&schema, "openAPIV3Schema").unwrap_err();
        assert_eq!(
            errors[0].path,
            "openAPIV3Schema.x-kubernetes-validations[0].rule"
        );
    }
}
