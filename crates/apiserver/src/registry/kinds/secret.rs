//! Secrets: `type: Opaque` by default, `stringData` merged into `data`, valid keys, at most
//! 1 MiB of data, the keys each common `type` requires, and an immutable `type`.

use base64::Engine;
use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::KindStrategy;
use crate::registry::{
    defaults::{ensure_map, set_default},
    validation::{
        data_size, decoded, map_at, validate_config_keys, validate_immutable_data, MAX_DATA_SIZE,
    },
};

/// The rules of `v1` Secrets.
pub(crate) struct SecretStrategy;

impl KindStrategy for SecretStrategy {
    /// `type: Opaque` when missing, and `stringData` moved into `data`, base64-encoded (a key
    /// in both takes `stringData`'s value), as Kubernetes' conversion does on every write: the
    /// stored Secret never has `stringData`.
    fn apply_defaults(&self, secret: &mut Value) {
        let root = ensure_map(secret);
        set_default(root, "type", "Opaque");
        merge_string_data(root);
    }

    fn validate(&self, secret: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_config_keys(secret, "data", causes);
        // Left only when defaulting did not run (a custom admission chain).
        validate_config_keys(secret, "stringData", causes);
        let size = data_size(secret, "data", true) + data_size(secret, "stringData", false);
        if size > MAX_DATA_SIZE {
            causes.push(FieldError::too_long("data", MAX_DATA_SIZE));
        }
        validate_type(secret, causes);
        if let Some(old) = old {
            let (new_type, old_type) = (secret.get("type"), old.get("type"));
            if new_type != old_type {
                causes.push(FieldError::invalid(
                    "type",
                    new_type.cloned().unwrap_or(Value::Null),
                    "field is immutable",
                ));
            }
            validate_immutable_data(secret, old, &["data"], causes);
        }
    }
}

/// Moves `stringData` into `data`, base64-encoding its values; `stringData` wins on a clash.
fn merge_string_data(root: &mut Map<String, Value>) {
    let Some(string_data) = root.remove("stringData") else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = root
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    let Value::Object(data) = data else {
        return;
    };
    for (key, value) in string_data {
        let text = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        data.insert(key, Value::String(encoded));
    }
}

/// The keys Kubernetes requires for each common Secret `type`.
fn validate_type(secret: &Value, causes: &mut Vec<FieldError>) {
    let data = map_at(secret, "data");
    let required = |key: &str, causes: &mut Vec<FieldError>| {
        causes.push(FieldError::required(format!("data[{key}]"), ""));
    };
    match secret.get("type").and_then(Value::as_str).unwrap_or("") {
        "kubernetes.io/service-account-token" => {
            let named = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .is_some_and(|name| !name.is_empty());
            if !named {
                causes.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        kind @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = match kind {
                "kubernetes.io/dockercfg" => ".dockercfg",
                _ => ".dockerconfigjson",
            };
            match data.get(key) {
                None => required(key, causes),
                Some(value) => {
                    let parsed = serde_json::from_slice::<Map<String, Value>>(&decoded(value));
                    if let Err(e) = parsed {
                        causes.push(FieldError::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            required("username", causes);
            required("password", causes);
        }
        "kubernetes.io/ssh-auth"
            if data
                .get("ssh-privatekey")
                .is_none_or(|v| decoded(v).is_empty()) =>
        {
            required("ssh-privatekey", causes);
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    required(key, causes);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use capstan_api::ResourceInfo;
    use serde_json::json;

    use super::*;
    use crate::registry::{defaults::apply_defaults, validation::validate};

    fn secrets() -> ResourceInfo {
        ResourceInfo::builtin("", "Secret").unwrap()
    }

    fn secret(body: Value) -> Value {
        let mut secret = body;
        secret["metadata"] = json!({"name": "s", "namespace": "default"});
        secret
    }

    fn problems(object: &Value, old: Option<&Value>) -> Vec<String> {
        validate(&secrets(), object, old)
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.body()))
            .collect()
    }

    #[test]
    fn string_data_is_merged_into_data_and_wins_a_clash() {
        let mut object = secret(json!({
            "data": {"a": "b2xk", "b": "Yg=="},
            "stringData": {"a": "new", "c": "see"},
        }));
        apply_defaults(&secrets(), &mut object);
        assert_eq!(object.get("stringData"), None);
        assert_eq!(
            object["data"],
            json!({"a": "bmV3", "b": "Yg==", "c": "c2Vl"})
        );
        assert_eq!(object["type"], "Opaque");
    }

    #[test]
    fn string_data_keys_are_validated_once_merged() {
        let mut object = secret(json!({"stringData": {"a/b": "x"}}));
        apply_defaults(&secrets(), &mut object);
        let found = problems(&object, None);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("data[a/b]: Invalid value: \"a/b\": a valid config key"));
        let unmerged = secret(json!({"stringData": {"a/b": "x"}}));
        assert!(problems(&unmerged, None)[0].starts_with("stringData[a/b]: Invalid value"));
    }

    #[test]
    fn tls_secrets_need_a_certificate_and_a_key() {
        let object = secret(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}));
        assert_eq!(
            problems(&object, None),
            vec!["data[tls.key]: Required value"]
        );
        let object = secret(json!({
            "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "YQ=="},
        }));
        assert!(problems(&object, None).is_empty());
    }

    #[test]
    fn docker_config_secrets_need_their_json() {
        let object = secret(json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}));
        assert_eq!(
            problems(&object, None),
            vec!["data[.dockerconfigjson]: Required value"]
        );
        let not_json = base64::engine::general_purpose::STANDARD.encode("nope");
        let object = secret(json!({
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": not_json},
        }));
        let found = problems(&object, None);
        assert!(
            found[0].starts_with(
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\""
            ),
            "{found:?}"
        );
        let config = base64::engine::general_purpose::STANDARD.encode(r#"{"auths":{}}"#);
        let object = secret(json!({
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config},
        }));
        assert!(problems(&object, None).is_empty());
    }

    #[test]
    fn basic_auth_ssh_and_service_account_token_secrets_need_their_keys() {
        let basic = secret(json!({"type": "kubernetes.io/basic-auth"}));
        assert_eq!(
            problems(&basic, None),
            vec![
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        let ssh = secret(json!({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}}));
        assert_eq!(
            problems(&ssh, None),
            vec!["data[ssh-privatekey]: Required value"]
        );
        let token = secret(json!({"type": "kubernetes.io/service-account-token"}));
        assert_eq!(
            problems(&token, None),
            vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
    }

    #[test]
    fn the_type_of_a_secret_is_immutable() {
        let old = secret(json!({"type": "Opaque"}));
        let new = secret(json!({"type": "kubernetes.io/basic-auth", "data": {"username": "YQ=="}}));
        assert_eq!(
            problems(&new, Some(&old)),
            vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }

    #[test]
    fn more_than_one_mebibyte_of_data_is_refused() {
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_DATA_SIZE + 1]);
        let object = secret(json!({"data": {"a": big}}));
        assert_eq!(
            problems(&object, None),
            vec!["data: Too long: may not be more than 1048576 bytes"]
        );
    }
}
