//! ConfigMaps: valid keys in `data` and `binaryData`, no key in both, at most 1 MiB in all,
//! and nothing changes once `immutable` is set.

use capstan_api::FieldError;
use serde_json::Value;

use super::KindStrategy;
use crate::registry::validation::{
    data_size, map_at, validate_config_keys, validate_immutable_data, MAX_DATA_SIZE,
};

/// The rules of `v1` ConfigMaps.
pub(crate) struct ConfigMapStrategy;

impl KindStrategy for ConfigMapStrategy {
    fn validate(&self, config: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_config_keys(config, "data", causes);
        let binary = map_at(config, "binaryData");
        for key in map_at(config, "data").keys() {
            if binary.contains_key(key) {
                causes.push(FieldError::invalid(
                    format!("data[{key}]"),
                    key.as_str(),
                    "duplicate of key present in binaryData",
                ));
            }
        }
        validate_config_keys(config, "binaryData", causes);
        let size = data_size(config, "data", false) + data_size(config, "binaryData", true);
        if size > MAX_DATA_SIZE {
            causes.push(FieldError::too_long("", MAX_DATA_SIZE));
        }
        if let Some(old) = old {
            validate_immutable_data(config, old, &["data", "binaryData"], causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use capstan_api::ResourceInfo;
    use serde_json::json;

    use crate::registry::validation::validate;

    fn problems(config: Value, old: Option<Value>) -> Vec<String> {
        let resource = ResourceInfo::builtin("", "ConfigMap").unwrap();
        let mut config = config;
        config["metadata"] = json!({"name": "settings", "namespace": "default"});
        validate(&resource, &config, old.as_ref())
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.body()))
            .collect()
    }

    use super::*;

    #[test]
    fn a_key_with_a_slash_is_invalid_in_kubernetes_words() {
        assert_eq!(
            problems(json!({"data": {"a/b": "1"}}), None),
            vec![
                "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of \
                 alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or \
                 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        assert_eq!(
            problems(json!({"binaryData": {"..x": "YQ=="}}), None),
            vec!["binaryData[..x]: Invalid value: \"..x\": must not start with '..'"]
        );
    }

    #[test]
    fn a_key_in_both_data_and_binary_data_is_refused() {
        let found = problems(
            json!({"data": {"a": "1"}, "binaryData": {"a": "YQ=="}}),
            None,
        );
        assert_eq!(
            found,
            vec!["data[a]: Invalid value: \"a\": duplicate of key present in binaryData"]
        );
    }

    #[test]
    fn more_than_one_mebibyte_in_all_is_refused() {
        let half = "a".repeat(MAX_DATA_SIZE / 2);
        assert!(problems(json!({"data": {"a": half, "b": half}}), None).is_empty());
        let found = problems(json!({"data": {"a": half, "b": half, "c": "x"}}), None);
        assert_eq!(
            found,
            vec![": Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn an_immutable_config_map_keeps_its_data() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert!(problems(
            json!({"immutable": true, "data": {"a": "1"}}),
            Some(old.clone())
        )
        .is_empty());
        let found = problems(json!({"data": {"a": "2"}}), Some(old));
        assert_eq!(
            found,
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
    }
}
