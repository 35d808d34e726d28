//! CertificateSigningRequests (`certificates.k8s.io/v1`): Kubernetes' validation, and the
//! three ways a request is written, each changing its own part:
//!
//! - the object itself changes metadata only (`spec` is immutable, `status` is kept);
//! - `status` changes `status.certificate` and the conditions other than `Approved` and
//!   `Denied` (those are kept from the stored object);
//! - `approval` (`PUT .../certificatesigningrequests/{name}/approval`, what
//!   `kubectl certificate approve|deny` sends) changes `status.conditions` only.
//!
//! A request may not be both approved and denied. Nothing here signs: a signer fills
//! `status.certificate` of approved requests through `status`. With the `tls` feature and a
//! signing CA, the HTTP server runs one (`crate::certificates`); otherwise approved requests
//! stay unsigned. Over HTTP, `spec.username`, `spec.uid`, `spec.groups` and `spec.extra` are
//! the creator's, whatever the client sent.

use base64::Engine as _;
use capstan_api::{
    kube_core::{params::PostParams, DynamicObject},
    Error, FieldError, ResourceInfo, Result,
};
use serde_json::{Map, Value};

use super::KindStrategy;
use crate::registry::{
    object,
    update::Subresource,
    validation::{check_dns, NameRule},
    Registry,
};

/// The key usages a request may ask for, as Kubernetes lists them.
pub(crate) const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The condition types only `approval` may change.
const APPROVAL_TYPES: &[&str] = &["Approved", "Denied"];

/// The rules of CertificateSigningRequests.
pub(super) struct CertificateSigningRequestStrategy;

impl KindStrategy for CertificateSigningRequestStrategy {
    fn apply_defaults(&self, object: &mut Value) {
        // A condition without a status is true (Kubernetes' v1 defaulting).
        if let Some(conditions) = object
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
                if condition
                    .get("status")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    condition.insert("status".into(), Value::String("True".into()));
                }
            }
        }
    }

    fn validate(&self, object: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        let spec = super::spec_of(object);
        if old.is_none() {
            validate_request(spec.get("request"), causes);
        } else if old.map(|old| &old["spec"]) != object.get("spec") {
            causes.push(FieldError::forbidden(
                "spec",
                "updates to certificateSigningRequest spec are forbidden",
            ));
        }
        validate_signer_name(spec.get("signerName").and_then(Value::as_str), causes);
        if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64) {
            if seconds < 600 {
                causes.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    seconds,
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
        validate_usages(spec.get("usages"), causes);
        validate_conditions(object, causes);
    }

    fn prepare_main_update(&self, _info: &ResourceInfo, current: &Value, updated: &mut Value) {
        if let Some(root) = updated.as_object_mut() {
            for field in ["spec", "status"] {
                match current.get(field) {
                    Some(value) => root.insert(field.into(), value.clone()),
                    None => root.remove(field),
                };
            }
        }
    }

    fn prepare_status_update(&self, current: &Value, updated: &mut Value) {
        let status = updated
            .as_object_mut()
            .and_then(|root| root.remove("status"));
        let mut status = match status {
            Some(Value::Object(status)) => status,
            _ => Map::new(),
        };
        let kept: Vec<Value> = approval_conditions(current).cloned().collect();
        let others: Vec<Value> = conditions(&Value::Object(status.clone()))
            .filter(|c| !is_approval(c))
            .cloned()
            .collect();
        set_conditions(&mut status, kept.into_iter().chain(others).collect());
        let mut merged = current.clone();
        if let Some(root) = merged.as_object_mut() {
            root.insert("status".into(), Value::Object(status));
        }
        *updated = merged;
    }

    fn prepare_approval_update(&self, current: &Value, updated: &mut Value) {
        let approvals: Vec<Value> = updated
            .get("status")
            .map(|status| {
                conditions(status)
                    .filter(|c| is_approval(c))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut merged = current.clone();
        let Some(root) = merged.as_object_mut() else {
            return;
        };
        let status = root
            .entry("status")
            .or_insert_with(|| Value::Object(Map::new()));
        if !status.is_object() {
            *status = Value::Object(Map::new());
        }
        if let Some(status) = status.as_object_mut() {
            let others: Vec<Value> = conditions(&Value::Object(status.clone()))
                .filter(|c| !is_approval(c))
                .cloned()
                .collect();
            set_conditions(status, approvals.into_iter().chain(others).collect());
        }
        *updated = merged;
    }
}

/// `status.conditions` of `status` (an object's `status` or the object itself).
fn conditions(value: &Value) -> impl Iterator<Item = &Value> {
    value
        .get("conditions")
        .or_else(|| value.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_approval(condition: &Value) -> bool {
    condition
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| APPROVAL_TYPES.contains(&t))
}

fn approval_conditions(object: &Value) -> impl Iterator<Item = &Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| is_approval(c))
}

fn set_conditions(status: &mut Map<String, Value>, conditions: Vec<Value>) {
    if conditions.is_empty() {
        status.remove("conditions");
    } else {
        status.insert("conditions".into(), Value::Array(conditions));
    }
}

/// Whether `object` has a condition `type_` with status `True`.
pub(crate) fn has_condition(object: &Value, type_: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some(type_)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

/// The DER of the `CERTIFICATE REQUEST` PEM block of `pem`.
///
/// Errors: Kubernetes' texts for a missing block or one of another type.
pub(crate) fn request_der(pem: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let text =
        std::str::from_utf8(pem).map_err(|_| "PEM block type must be CERTIFICATE REQUEST")?;
    let begin = text
        .find("-----BEGIN ")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    if &rest[..label_end] != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let body = &rest[label_end + 5..];
    let end = body
        .find("-----END CERTIFICATE REQUEST-----")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    let base64: String = body[..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))
}

/// Whether `der` is a PKCS#10 request: parsed with x509-parser under `tls`, otherwise one
/// well-formed DER SEQUENCE spanning every byte.
fn parses_as_request(der: &[u8]) -> std::result::Result<(), String> {
    #[cfg(feature = "tls")]
    {
        use x509_parser::prelude::FromDer;
        x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map(|_| ())
            .map_err(|e| format!("x509: malformed certificate request: {e}"))
    }
    #[cfg(not(feature = "tls"))]
    {
        let malformed = || "x509: malformed certificate request".to_string();
        let (&tag, rest) = der.split_first().ok_or_else(malformed)?;
        let (&first, rest) = rest.split_first().ok_or_else(malformed)?;
        if tag != 0x30 {
            return Err(malformed());
        }
        let length = if first < 0x80 {
            (first as usize, rest)
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return Err(malformed());
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |n, b| (n << 8) | *b as usize);
            (length, &rest[count..])
        };
        if length.0 != length.1.len() {
            return Err(malformed());
        }
        Ok(())
    }
}

fn validate_request(request: Option<&Value>, causes: &mut Vec<FieldError>) {
    let Some(encoded) = request.and_then(Value::as_str).filter(|r| !r.is_empty()) else {
        causes.push(FieldError::invalid(
            "spec.request",
            "",
            "PEM block type must be CERTIFICATE REQUEST",
        ));
        return;
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    if let Err(problem) = request_der(&pem).and_then(|der| parses_as_request(&der)) {
        causes.push(FieldError::invalid("spec.request", "<omitted>", problem));
    }
}

/// Kubernetes' signer name rule: a DNS subdomain, a `/`, and a path of at most 253 - len(domain)
/// qualified-name characters.
fn validate_signer_name(name: Option<&str>, causes: &mut Vec<FieldError>) {
    const FIELD: &str = "spec.signerName";
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        causes.push(FieldError::required(FIELD, ""));
        return;
    };
    let Some((domain, path)) = name.split_once('/') else {
        causes.push(FieldError::invalid(
            FIELD,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    if path.is_empty() || path.contains('/') {
        causes.push(FieldError::invalid(
            FIELD,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    }
    let mut problems = Vec::new();
    check_dns(FIELD, domain, NameRule::Dns1123Subdomain, &mut problems);
    if !problems.is_empty() || !domain.contains('.') {
        causes.push(FieldError::invalid(
            FIELD,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    }
    let qualified = path.len() <= 63
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && path.starts_with(|c: char| c.is_ascii_alphanumeric())
        && path.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !qualified {
        causes.push(FieldError::invalid(
            FIELD,
            name,
            "validating path: name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character",
        ));
    }
}

fn validate_usages(usages: Option<&Value>, causes: &mut Vec<FieldError>) {
    let usages = usages
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if usages.is_empty() {
        causes.push(FieldError::required(
            "spec.usages",
            "usages must be provided",
        ));
        return;
    }
    let mut seen = Vec::new();
    for (i, usage) in usages.iter().enumerate() {
        let text = usage.as_str().unwrap_or_default();
        let field = format!("spec.usages[{i}]");
        if !USAGES.contains(&text) {
            causes.push(FieldError::not_supported(
                field,
                text,
                USAGES.iter().copied(),
            ));
        } else if seen.contains(&text) {
            causes.push(FieldError::duplicate(field, text));
        } else {
            seen.push(text);
        }
    }
}

fn validate_conditions(object: &Value, causes: &mut Vec<FieldError>) {
    if has_condition(object, "Approved") && has_condition(object, "Denied") {
        causes.push(FieldError::invalid(
            "status.conditions",
            "",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
}

impl Registry {
    /// The `approval` subresource of a CertificateSigningRequest
    /// (`PUT /apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval`): writes
    /// `csr`'s `Approved` and `Denied` conditions and nothing else. With
    /// `metadata.resourceVersion` the write is conditional.
    ///
    /// Errors: [`Error::NotFound`] for a missing request, [`Error::Conflict`] for a stale
    /// `resourceVersion`, [`Error::Invalid`] when it would be both approved and denied.
    pub async fn update_approval(
        &self,
        resource: &ResourceInfo,
        csr: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        if resource.group() != "certificates.k8s.io"
            || resource.kind() != "CertificateSigningRequest"
        {
            return Err(Error::NotFound {
                resource: format!("{}/approval", resource.qualified_resource()),
                name: csr.metadata.name.clone().unwrap_or_default(),
            });
        }
        let state = self.resource_state(resource)?;
        let csr = object::from_dynamic(&state.info, csr)?;
        let updated = self
            .update_object(
                &state,
                None,
                csr,
                Subresource::Approval,
                params.dry_run,
                params.field_manager.as_deref(),
            )
            .await?;
        object::to_dynamic(updated)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn causes_of(object: &Value) -> Vec<String> {
        let mut causes = Vec::new();
        CertificateSigningRequestStrategy.validate(object, None, &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.detail))
            .collect()
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let pem = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    #[test]
    fn a_request_needs_a_certificate_request_block_a_signer_and_usages() {
        let object = json!({ "spec": { "request": pem_of("CERTIFICATE", &[0x30, 0]),
            "signerName": "nodomain", "usages": ["client auth", "bogus", "client auth"],
            "expirationSeconds": 60 } });
        assert_eq!(
            causes_of(&object),
            [
                "spec.request: PEM block type must be CERTIFICATE REQUEST",
                "spec.signerName: must be a fully qualified domain and path of the form \
                 'example.com/signer-name'",
                "spec.expirationSeconds: may not specify a duration less than 600 seconds (10 minutes)",
                &format!("spec.usages[1]: supported values: {}", USAGES.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")),
                "spec.usages[2]: ",
            ]
        );
        let empty = json!({ "spec": { "request": pem_of("CERTIFICATE REQUEST", &[1, 2]) } });
        let causes = causes_of(&empty);
        assert!(causes[0].starts_with("spec.request: x509: malformed certificate request"));
        assert_eq!(
            &causes[1..],
            ["spec.signerName: ", "spec.usages: usages must be provided"]
        );
    }

    #[test]
    fn a_request_cannot_be_both_approved_and_denied() {
        let object = json!({ "status": { "conditions": [
            { "type": "Approved", "status": "True" }, { "type": "Denied", "status": "True" } ] } });
        let mut causes = Vec::new();
        validate_conditions(&object, &mut causes);
        assert_eq!(
            causes[0].detail,
            "Approved and Denied conditions are mutually exclusive"
        );
    }

    #[test]
    fn status_updates_keep_the_stored_approval_and_approval_updates_keep_the_rest() {
        let current = json!({ "spec": { "signerName": "a.io/b" }, "status": {
            "conditions": [{ "type": "Approved", "status": "True" }] } });
        let mut status = json!({ "spec": { "signerName": "x.io/y" }, "status": {
            "certificate": "Y2VydA==", "conditions": [{ "type": "Denied", "status": "True" },
            { "type": "Failed", "status": "True" }] } });
        CertificateSigningRequestStrategy.prepare_status_update(&current, &mut status);
        assert_eq!(status["spec"]["signerName"], "a.io/b");
        assert_eq!(status["status"]["certificate"], "Y2VydA==");
        let types: Vec<_> = conditions(&status).map(|c| c["type"].clone()).collect();
        assert_eq!(types, ["Approved", "Failed"]);

        let mut approval = json!({ "status": { "certificate": "bm8=",
            "conditions": [{ "type": "Denied", "status": "True" }] } });
        CertificateSigningRequestStrategy.prepare_approval_update(&status, &mut approval);
        assert_eq!(approval["status"]["certificate"], "Y2VydA==");
        let types: Vec<_> = conditions(&approval).map(|c| c["type"].clone()).collect();
        assert_eq!(types, ["Denied", "Failed"]);
    }

    #[test]
    fn the_spec_of_a_request_is_immutable() {
        let old = json!({ "spec": { "signerName": "a.io/b", "usages": ["client auth"] } });
        let new = json!({ "spec": { "signerName": "a.io/c", "usages": ["client auth"] } });
        let mut causes = Vec::new();
        CertificateSigningRequestStrategy.validate(&new, Some(&old), &mut causes);
        assert_eq!(causes[0].field, "spec");
    }
}
