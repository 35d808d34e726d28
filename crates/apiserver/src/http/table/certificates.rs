//! The printer of CertificateSigningRequests, after Kubernetes' own
//! (`printCertificateSigningRequest`).

use serde_json::{json, Value};

use super::format::{age, human_duration, string, text};
use super::ColumnSpec;

type Found = Option<(&'static [ColumnSpec], fn(&Value, i64) -> Vec<Value>)>;

/// The printer of `kind` of `group`, for `certificates.k8s.io` kinds.
pub(super) fn printer(group: &str, kind: &str) -> Found {
    Some(match (group, kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            (CERTIFICATE_SIGNING_REQUEST, certificate_signing_request)
        }
        _ => return None,
    })
}

const CERTIFICATE_SIGNING_REQUEST: &[ColumnSpec] = &[
    ("Name", "string", 0),
    ("Age", "string", 0),
    ("SignerName", "string", 0),
    ("Requestor", "string", 0),
    ("RequestedDuration", "string", 0),
    ("Condition", "string", 0),
];

fn certificate_signing_request(csr: &Value, now: i64) -> Vec<Value> {
    let spec = &csr["spec"];
    let signer = match text(&spec["signerName"]) {
        signer if signer.is_empty() => "<none>".to_string(),
        signer => signer,
    };
    let duration = spec["expirationSeconds"]
        .as_i64()
        .map_or_else(|| "<none>".to_string(), human_duration);
    vec![
        string(&csr["metadata"]["name"]),
        json!(age(&csr["metadata"]["creationTimestamp"], now)),
        json!(signer),
        json!(text(&spec["username"])),
        json!(duration),
        json!(condition(csr)),
    ]
}

/// Kubernetes' `extractCSRStatus`: `Denied`, else `Approved`, else `Pending`; then `,Failed`
/// and `,Issued` when they apply.
fn condition(csr: &Value) -> String {
    let types: Vec<&str> = csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    let mut status = if types.contains(&"Denied") {
        "Denied"
    } else if types.contains(&"Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if types.contains(&"Failed") {
        status.push_str(",Failed");
    }
    if !text(&csr["status"]["certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(csr: Value) -> Vec<Value> {
        certificate_signing_request(&csr, 1_000_000)
    }

    #[test]
    fn a_request_prints_its_signer_requestor_duration_and_condition() {
        let row = cells(json!({
            "metadata": { "name": "alice", "creationTimestamp": "1970-01-12T13:46:40Z" },
            "spec": { "signerName": "kubernetes.io/kube-apiserver-client",
                "username": "alice", "expirationSeconds": 86400 },
            "status": { "certificate": "Y2VydA==",
                "conditions": [{ "type": "Approved", "status": "True" }] },
        }));
        assert_eq!(
            row,
            [
                json!("alice"),
                json!("0s"),
                json!("kubernetes.io/kube-apiserver-client"),
                json!("alice"),
                json!("24h"),
                json!("Approved,Issued"),
            ]
        );
    }

    #[test]
    fn conditions_print_denied_before_approved_then_failed_and_pending_without_any() {
        let with =
            |conditions: Value| condition(&json!({ "status": { "conditions": conditions } }));
        assert_eq!(with(json!([])), "Pending");
        assert_eq!(
            with(json!([{ "type": "Approved" }, { "type": "Failed" }])),
            "Approved,Failed"
        );
        assert_eq!(with(json!([{ "type": "Denied" }])), "Denied");
        let bare = cells(json!({ "metadata": { "name": "b" }, "spec": {} }));
        assert_eq!(bare[2], "<none>");
        assert_eq!(bare[4], "<none>");
    }
}
