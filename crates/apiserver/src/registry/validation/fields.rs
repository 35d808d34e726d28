//! Field value validators shared by kinds: integers, counts, ports, protocols, percentages.

use capstan_api::FieldError;
use serde_json::{Map, Value};

/// The integer at `key`, if present: `Ok(None)` when missing or null, `Err` (pushed) when not
/// an integer.
pub(crate) fn integer(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    causes: &mut Vec<FieldError>,
) -> Option<i64> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(n) => Some(n),
            None => {
                causes.push(FieldError::type_invalid(
                    field,
                    value.clone(),
                    "must be an integer",
                ));
                None
            }
        },
    }
}

pub(crate) fn non_negative(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    causes: &mut Vec<FieldError>,
) {
    let field = format!("{path}.{key}");
    if let Some(n) = integer(map, key, &field, causes) {
        if n < 0 {
            causes.push(FieldError::invalid(
                field,
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
}

pub(crate) fn port_in_range(value: i64, field: String, causes: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&value) {
        causes.push(FieldError::invalid(
            field,
            value,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// An `IntOrString` that is a count or a percentage (`maxSurge`, `maxUnavailable`).
pub(crate) enum Amount {
    Count(i64),
    Percent(i64),
}

pub(crate) fn amount(value: &Value, field: &str, causes: &mut Vec<FieldError>) -> Option<Amount> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(n) if n >= 0 => Some(Amount::Count(n)),
            _ => {
                causes.push(FieldError::invalid(
                    field,
                    value.clone(),
                    "must be greater than or equal to 0",
                ));
                None
            }
        },
        Value::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(percent) if percent >= 0 && s.len() > 1 && !s.starts_with('+') => {
                Some(Amount::Percent(percent))
            }
            _ => {
                causes.push(FieldError::invalid(
                    field,
                    s.as_str(),
                    "a valid percent string must be a numeric string followed by an ending '%' \
                     (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
        other => {
            causes.push(FieldError::type_invalid(
                field,
                other.clone(),
                "must be an integer or a percentage",
            ));
            None
        }
    }
}

pub(crate) fn is_zero(amount: &Option<Amount>) -> bool {
    matches!(amount, Some(Amount::Count(0) | Amount::Percent(0)))
}

/// The protocols a port may name.
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// Checks a port's `protocol`, if set.
pub(crate) fn check_protocol(port: &Map<String, Value>, field: &str, causes: &mut Vec<FieldError>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !PROTOCOLS.contains(&protocol) {
            causes.push(FieldError::not_supported(
                format!("{field}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
}

/// IANA service names, as a named target port: at most 15 lowercase alphanumerics or `-`, with
/// a letter, no leading, trailing or double hyphen.
pub(crate) fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
