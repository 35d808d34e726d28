//! A container's environment, as Kubernetes' `ValidateEnv` and `ValidateEnvFrom` check it:
//! variable names, `valueFrom` with exactly one source and no `value`, key selectors, and
//! `envFrom` prefixes and sources.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{
    data::config_key_problems,
    downward_api::{validate_field_ref, validate_resource_field_ref, ENV_FIELD_PATHS},
    names::{check_dns, NameRule},
};

/// Whether variable names follow the relaxed rule (any printable ASCII but `=`), as the
/// `RelaxedEnvironmentVariableValidation` feature gate, on by default since Kubernetes 1.32,
/// makes them; otherwise the C-identifier-like rule of `IsEnvVarName`.
const RELAXED_ENV_VAR_NAMES: bool = true;

const ENV_VAR_NAME_MESSAGE: &str = "a valid environment variable name must consist of \
    alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. \
    'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is \
    '[-._a-zA-Z][-._a-zA-Z0-9]*')";

const RELAXED_ENV_VAR_NAME_MESSAGE: &str =
    "a valid environment variable name must consist only of printable ASCII characters other \
     than '='";

/// Why `name` is not an environment variable name (Kubernetes' `IsEnvVarName`).
pub(crate) fn env_var_name_problems(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_'));
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !(first_ok && rest_ok) {
        problems.push(ENV_VAR_NAME_MESSAGE);
    }
    match name {
        "." => problems.push("must not be '.'"),
        ".." => problems.push("must not be '..'"),
        _ if name.starts_with("..") => problems.push("must not start with '..'"),
        _ => {}
    }
    problems
}

/// Why `name` is not a relaxed environment variable name (`IsRelaxedEnvVarName`).
pub(crate) fn relaxed_env_var_name_problems(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if name.is_empty() {
        problems.push("environment variable name must be non-empty");
    }
    if name.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        problems.push(RELAXED_ENV_VAR_NAME_MESSAGE);
    }
    problems
}

fn name_problems(name: &str) -> Vec<&'static str> {
    if RELAXED_ENV_VAR_NAMES {
        relaxed_env_var_name_problems(name)
    } else {
        env_var_name_problems(name)
    }
}

fn str_at<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Checks the `env` of the container at `path`. Called by `pod_spec` for every container.
pub(crate) fn validate_env(
    container: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let list = container.get("env").and_then(Value::as_array);
    for (i, var) in list.into_iter().flatten().enumerate() {
        let empty = Map::new();
        let var = var.as_object().unwrap_or(&empty);
        let field = format!("{path}.env[{i}]");
        let name = str_at(var, "name");
        if name.is_empty() {
            causes.push(FieldError::required(format!("{field}.name"), ""));
        } else {
            for problem in name_problems(name) {
                causes.push(FieldError::invalid(format!("{field}.name"), name, problem));
            }
        }
        if let Some(from) = var.get("valueFrom").and_then(Value::as_object) {
            validate_value_from(from, !str_at(var, "value").is_empty(), &field, causes);
        }
    }
}

fn validate_value_from(
    from: &Map<String, Value>,
    has_value: bool,
    var_path: &str,
    causes: &mut Vec<FieldError>,
) {
    let path = format!("{var_path}.valueFrom");
    let mut sources = 0;
    if let Some(field_ref) = from.get("fieldRef").and_then(Value::as_object) {
        sources += 1;
        let field = format!("{path}.fieldRef");
        validate_field_ref(field_ref, &ENV_FIELD_PATHS, &field, causes);
    }
    if let Some(resource_ref) = from.get("resourceFieldRef").and_then(Value::as_object) {
        sources += 1;
        let field = format!("{path}.resourceFieldRef");
        validate_resource_field_ref(resource_ref, false, &field, causes);
    }
    for key in ["configMapKeyRef", "secretKeyRef"] {
        if let Some(selector) = from.get(key).and_then(Value::as_object) {
            sources += 1;
            validate_key_selector(selector, &format!("{path}.{key}"), causes);
        }
    }
    let problem = if sources == 0 {
        Some("must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
    } else if has_value {
        Some("may not be specified when `value` is not empty")
    } else if sources > 1 {
        Some("may not have more than one field specified at a time")
    } else {
        None
    };
    if let Some(problem) = problem {
        causes.push(FieldError::invalid(path, "", problem));
    }
}

/// A `configMapKeyRef` or `secretKeyRef`: a DNS-1123 subdomain name and a config key.
fn validate_key_selector(selector: &Map<String, Value>, path: &str, causes: &mut Vec<FieldError>) {
    let name_field = format!("{path}.name");
    check_dns(
        &name_field,
        str_at(selector, "name"),
        NameRule::Dns1123Subdomain,
        causes,
    );
    let key = str_at(selector, "key");
    let key_field = format!("{path}.key");
    if key.is_empty() {
        causes.push(FieldError::required(key_field, ""));
    } else {
        for problem in config_key_problems(key) {
            causes.push(FieldError::invalid(&key_field, key, problem));
        }
    }
}

/// Checks the `envFrom` of the container at `path`: prefixes are variable names, and each item
/// has exactly one of `configMapRef` and `secretRef`, naming an object (a trailing `-` allowed).
pub(crate) fn validate_env_from(
    container: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let list_field = format!("{path}.envFrom");
    let list = container.get("envFrom").and_then(Value::as_array);
    for (i, item) in list.into_iter().flatten().enumerate() {
        let empty = Map::new();
        let item = item.as_object().unwrap_or(&empty);
        let field = format!("{list_field}[{i}]");
        let prefix = str_at(item, "prefix");
        if !prefix.is_empty() {
            for problem in name_problems(prefix) {
                causes.push(FieldError::invalid(
                    format!("{field}.prefix"),
                    prefix,
                    problem,
                ));
            }
        }
        let mut sources = 0;
        for key in ["configMapRef", "secretRef"] {
            let Some(source) = item.get(key).and_then(Value::as_object) else {
                continue;
            };
            sources += 1;
            let name_field = format!("{field}.{key}.name");
            let name = str_at(source, "name");
            if name.is_empty() {
                causes.push(FieldError::required(name_field, ""));
            } else {
                // A prefix name may end with `-`: Kubernetes checks it with that dash masked.
                let masked = match name.strip_suffix('-') {
                    Some(head) if !head.is_empty() => format!("{head}a"),
                    _ => name.to_string(),
                };
                let mut problems = Vec::new();
                check_dns(
                    &name_field,
                    &masked,
                    NameRule::Dns1123Subdomain,
                    &mut problems,
                );
                causes.extend(problems.into_iter().map(|problem| {
                    FieldError::invalid(problem.field.clone(), name, problem.detail)
                }));
            }
        }
        let problem = match sources {
            0 => Some("must specify one of: `configMapRef` or `secretRef`"),
            1 => None,
            _ => Some("may not have more than one field specified at a time"),
        };
        if let Some(problem) = problem {
            causes.push(FieldError::invalid(&list_field, "", problem));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(container: Value) -> Vec<String> {
        let mut causes = Vec::new();
        let container = container.as_object().unwrap();
        validate_env(container, "c", &mut causes);
        validate_env_from(container, "c", &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn strict_env_var_names_are_identifier_like() {
        assert!(env_var_name_problems("MY_ENV.NAME-1").is_empty());
        assert_eq!(env_var_name_problems("1ABC"), [ENV_VAR_NAME_MESSAGE]);
        assert_eq!(env_var_name_problems("..x"), ["must not start with '..'"]);
    }

    #[test]
    fn relaxed_env_var_names_refuse_only_equals_and_unprintables() {
        assert!(relaxed_env_var_name_problems("1 weird:name!").is_empty());
        assert_eq!(
            relaxed_env_var_name_problems("A=B"),
            [RELAXED_ENV_VAR_NAME_MESSAGE]
        );
        assert_eq!(
            relaxed_env_var_name_problems("tab\there"),
            [RELAXED_ENV_VAR_NAME_MESSAGE]
        );
    }

    #[test]
    fn an_env_var_needs_a_valid_name() {
        assert_eq!(
            problems(json!({"env": [{"value": "x"}, {"name": "A=B"}]})),
            [
                "c.env[0].name: Required value".to_string(),
                format!(r#"c.env[1].name: Invalid value: "A=B": {RELAXED_ENV_VAR_NAME_MESSAGE}"#),
            ]
        );
    }

    #[test]
    fn value_from_needs_exactly_one_source_and_no_value() {
        assert_eq!(
            problems(json!({"env": [{"name": "A", "valueFrom": {}}]})),
            ["c.env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"]
        );
        let both = json!({"env": [{"name": "A", "valueFrom": {
            "configMapKeyRef": {"name": "c", "key": "k"},
            "secretKeyRef": {"name": "s", "key": "k"}}}]});
        assert_eq!(
            problems(both),
            ["c.env[0].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"]
        );
        let with_value = json!({"env": [{"name": "A", "value": "v", "valueFrom": {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}]});
        assert_eq!(
            problems(with_value),
            ["c.env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"]
        );
    }

    #[test]
    fn key_selectors_need_a_name_and_a_config_key() {
        let selector = json!({"env": [{"name": "A", "valueFrom": {
            "secretKeyRef": {"name": "Bad", "key": ""}}}]});
        let found = problems(selector);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(
            "c.env[0].valueFrom.secretKeyRef.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            found[1],
            "c.env[0].valueFrom.secretKeyRef.key: Required value"
        );
    }

    #[test]
    fn env_from_needs_one_source_and_a_valid_prefix() {
        assert_eq!(
            problems(json!({"envFrom": [{"prefix": "P="}]})),
            [
                format!(r#"c.envFrom[0].prefix: Invalid value: "P=": {RELAXED_ENV_VAR_NAME_MESSAGE}"#),
                "c.envFrom: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`"
                    .to_string(),
            ]
        );
        let both =
            json!({"envFrom": [{"configMapRef": {"name": "a-"}, "secretRef": {"name": ""}}]});
        assert_eq!(
            problems(both),
            [
                "c.envFrom[0].secretRef.name: Required value",
                "c.envFrom: Invalid value: \"\": may not have more than one field specified at a time",
            ]
        );
    }
}
