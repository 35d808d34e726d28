//! Object and field names: Kubernetes' DNS-1123 and DNS-1035 rules, with its messages.

use capstan_api::FieldError;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character \
    (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const DNS1123_SUBDOMAIN_MESSAGE: &str =
    "a lowercase RFC 1123 subdomain must consist of lower \
    case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
    character (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric \
    characters or '-', start with an alphabetic character, and end with an alphanumeric \
    character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
    '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length limit.
pub(crate) fn is_label_body(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `s` is a DNS-1123 label: at most 63 lowercase alphanumerics or `-`, starting and
/// ending with an alphanumeric (Namespace names, container names).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX && is_label_body(s)
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123
/// label bodies (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_label_body)
}

/// Whether `s` is a DNS-1035 label: a DNS-1123 label starting with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Which rule an object name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    /// Only what keeps the storage key sound, checked when the key is built.
    PathSegment,
}

/// Checks `value` at `field` against a DNS rule, pushing at most one error.
pub(crate) fn check_dns(field: &str, value: &str, rule: NameRule, causes: &mut Vec<FieldError>) {
    let (valid, max, message) = match rule {
        NameRule::Dns1123Subdomain => (
            value.split('.').all(is_label_body),
            DNS1123_SUBDOMAIN_MAX,
            DNS1123_SUBDOMAIN_MESSAGE,
        ),
        NameRule::Dns1123Label => (
            is_label_body(value),
            DNS1123_LABEL_MAX,
            DNS1123_LABEL_MESSAGE,
        ),
        NameRule::Dns1035Label => (
            is_label_body(value) && value.as_bytes()[0].is_ascii_lowercase(),
            DNS1123_LABEL_MAX,
            DNS1035_LABEL_MESSAGE,
        ),
        NameRule::PathSegment => return,
    };
    if value.len() > max {
        causes.push(FieldError::invalid(
            field,
            value,
            format!("must be no more than {max} bytes"),
        ));
    } else if !valid {
        causes.push(FieldError::invalid(field, value, message));
    }
}
