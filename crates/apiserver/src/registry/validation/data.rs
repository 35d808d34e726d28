//! The data maps of ConfigMaps and Secrets: config keys, the 1 MiB size limit and the
//! `immutable` flag.

use base64::Engine;
use capstan_api::FieldError;
use serde_json::{Map, Value};

/// The most data a ConfigMap or Secret may hold, in bytes (Kubernetes' `MaxSecretSize`).
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;

const CONFIG_KEY_MAX_LENGTH: usize = 253;

/// Kubernetes' message for a key with other characters.
const CONFIG_KEY_MESSAGE: &str =
    "a valid config key must consist of alphanumeric characters, '-', \
     '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
     '[-._a-zA-Z0-9]+')";

/// Why `key` is not a valid ConfigMap or Secret key (Kubernetes' `IsConfigMapKey`), one
/// message per problem; empty when it is valid.
pub(crate) fn config_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if key.len() > CONFIG_KEY_MAX_LENGTH {
        problems.push(format!(
            "must be no more than {CONFIG_KEY_MAX_LENGTH} characters"
        ));
    }
    let valid_chars = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_chars {
        problems.push(CONFIG_KEY_MESSAGE.to_string());
    }
    if key == "." {
        problems.push("must not be '.'".into());
    } else if key == ".." {
        problems.push("must not be '..'".into());
    } else if key.starts_with("..") {
        problems.push("must not start with '..'".into());
    }
    problems
}

/// Checks every key of the map at `field` (`data`, `binaryData`, `stringData`) of `object`,
/// naming each bad one `field[key]`.
pub(crate) fn validate_config_keys(object: &Value, field: &str, causes: &mut Vec<FieldError>) {
    for key in map_at(object, field).keys() {
        for problem in config_key_problems(key) {
            causes.push(FieldError::invalid(
                format!("{field}[{key}]"),
                key.as_str(),
                problem,
            ));
        }
    }
}

/// The map at `field` of `object`; empty when missing or not a map.
pub(crate) fn map_at<'a>(object: &'a Value, field: &str) -> &'a Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    object
        .get(field)
        .and_then(Value::as_object)
        .unwrap_or(&EMPTY)
}

/// The bytes behind a base64 `data` value (empty when it is not base64: decoding refused it
/// already).
pub(crate) fn decoded(value: &Value) -> Vec<u8> {
    value
        .as_str()
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .unwrap_or_default()
}

/// How many bytes the values of the map at `field` hold: plain strings as they are, base64
/// ones (`binary`) decoded.
pub(crate) fn data_size(object: &Value, field: &str, binary: bool) -> usize {
    map_at(object, field)
        .values()
        .map(|value| match (binary, value.as_str()) {
            (true, Some(text)) => decoded_len(text),
            (false, Some(text)) => text.len(),
            (_, None) => 0,
        })
        .sum()
}

/// The length of what a base64 text decodes to, without decoding it.
fn decoded_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

/// On an update of a ConfigMap or Secret whose stored version is `immutable: true`: the flag
/// stays set and `fields` (its data maps) do not change.
pub(crate) fn validate_immutable_data(
    object: &Value,
    old: &Value,
    fields: &[&str],
    causes: &mut Vec<FieldError>,
) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const DETAIL: &str = "field is immutable when `immutable` is set";
    if object.get("immutable").and_then(Value::as_bool) != Some(true) {
        causes.push(FieldError::forbidden("immutable", DETAIL));
    }
    for field in fields {
        if map_at(object, field) != map_at(old, field) {
            causes.push(FieldError::forbidden(*field, DETAIL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_follow_kubernetes() {
        for key in [
            "a",
            "key.name",
            "KEY_NAME",
            "key-name",
            ".dockerconfigjson",
            "tls.crt",
        ] {
            assert!(config_key_problems(key).is_empty(), "{key} is valid");
        }
        assert_eq!(
            config_key_problems("a/b"),
            vec![CONFIG_KEY_MESSAGE.to_string()]
        );
        assert_eq!(
            config_key_problems(""),
            vec![CONFIG_KEY_MESSAGE.to_string()]
        );
        assert_eq!(
            config_key_problems("."),
            vec!["must not be '.'".to_string()]
        );
        assert_eq!(
            config_key_problems(".."),
            vec!["must not be '..'".to_string()]
        );
        assert_eq!(
            config_key_problems("..a"),
            vec!["must not start with '..'".to_string()]
        );
        assert_eq!(config_key_problems(&"a".repeat(254)).len(), 1);
    }

    #[test]
    fn base64_sizes_count_decoded_bytes() {
        assert_eq!(decoded_len("YQ=="), 1);
        assert_eq!(decoded_len("YWI="), 2);
        assert_eq!(decoded_len("YWJj"), 3);
        assert_eq!(decoded_len(""), 0);
    }
}
