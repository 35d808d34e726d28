//! Paths inside volumes and containers (`items[].path`, `subPath`, `hostPath.path`) and file
//! modes, with Kubernetes' messages.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::str_at;

/// Kubernetes' message for a file mode outside 0..=0o777.
const FILE_MODE_MESSAGE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Checks that `path` has no `..` element (`validatePathNoBacksteps`): one error at most.
pub(crate) fn no_backsteps(path: &str, field: &str, causes: &mut Vec<FieldError>) {
    if path.split('/').any(|part| part == "..") {
        causes.push(FieldError::invalid(field, path, "must not contain '..'"));
    }
}

/// Checks that `path` is relative and has no `..` element (`validateLocalDescendingPath`).
pub(crate) fn local_descending_path(path: &str, field: &str, causes: &mut Vec<FieldError>) {
    if path.starts_with('/') {
        causes.push(FieldError::invalid(field, path, "must be a relative path"));
    }
    no_backsteps(path, field, causes);
}

/// Checks that `path` is relative, has no `..` element and does not start with `..`
/// (`ValidateLocalNonReservedPath`).
pub(crate) fn local_non_reserved_path(path: &str, field: &str, causes: &mut Vec<FieldError>) {
    local_descending_path(path, field, causes);
    if path.starts_with("..") && !path.starts_with("../") {
        causes.push(FieldError::invalid(field, path, "must not start with '..'"));
    }
}

/// Checks the file mode at `key` of `map` (`defaultMode`, `mode`), if set: 0 to 0777.
pub(crate) fn file_mode(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    if let Some(mode) = map.get(key).and_then(Value::as_i64) {
        if !(0..=0o777).contains(&mode) {
            causes.push(FieldError::invalid(
                format!("{path}.{key}"),
                mode,
                FILE_MODE_MESSAGE,
            ));
        }
    }
}

/// Checks one `KeyToPath` of a ConfigMap, Secret or projected source (`validateKeyToPath`).
pub(super) fn key_to_path(item: &Map<String, Value>, path: &str, causes: &mut Vec<FieldError>) {
    if str_at(item, "key").is_empty() {
        causes.push(FieldError::required(format!("{path}.key"), ""));
    }
    let target = str_at(item, "path");
    let target_field = format!("{path}.path");
    if target.is_empty() {
        causes.push(FieldError::required(&target_field, ""));
    }
    local_non_reserved_path(target, &target_field, causes);
    file_mode(item, "mode", path, causes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(check: fn(&str, &str, &mut Vec<FieldError>), path: &str) -> Vec<String> {
        let mut causes = Vec::new();
        check(path, "f", &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_descending_path_is_relative_without_backsteps() {
        assert!(problems(local_descending_path, "a/b..c/d").is_empty());
        assert_eq!(
            problems(local_descending_path, "/etc/../x"),
            [
                r#"f: Invalid value: "/etc/../x": must be a relative path"#,
                r#"f: Invalid value: "/etc/../x": must not contain '..'"#,
            ]
        );
    }

    #[test]
    fn a_non_reserved_path_may_not_start_with_two_dots() {
        assert_eq!(
            problems(local_non_reserved_path, "..data"),
            [r#"f: Invalid value: "..data": must not start with '..'"#]
        );
        assert_eq!(
            problems(local_non_reserved_path, "../x"),
            [r#"f: Invalid value: "../x": must not contain '..'"#]
        );
        assert!(problems(local_non_reserved_path, "data/..x").is_empty());
    }

    #[test]
    fn file_modes_are_between_zero_and_0777() {
        let mut causes = Vec::new();
        let map = serde_json::json!({"mode": 512, "defaultMode": 511});
        let map = map.as_object().unwrap();
        file_mode(map, "mode", "v", &mut causes);
        file_mode(map, "defaultMode", "v", &mut causes);
        assert_eq!(
            causes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["v.mode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive"]
        );
    }
}
