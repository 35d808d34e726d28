//! Signing CertificateSigningRequests (feature `tls`), as kube-controller-manager's
//! `csrsigning` controller does with the cluster CA.
//!
//! A [`CsrSigner`] lists, then watches, CertificateSigningRequests through any `Client` (the
//! registry in process, or the API over HTTP), and for each request that is `Approved` (and
//! neither `Denied` nor `Failed`), has no certificate yet and names one of its signers
//! ([`KUBE_APISERVER_CLIENT`], [`KUBE_APISERVER_CLIENT_KUBELET`]), issues a certificate with a
//! [`SigningCa`] and writes it PEM-encoded to `status.certificate` through the status
//! subresource:
//!
//! - subject, subject alternative names and public key are the request's;
//! - key usages and extended key usages are `spec.usages` (`client auth`, optionally
//!   `digital signature` and `key encipherment`);
//! - validity starts five minutes before signing and lasts `spec.expirationSeconds`, at most
//!   and by default [`DEFAULT_VALIDITY`] (one year), never past the CA.
//!
//! A request that breaks its signer's rules (see [`check_request`]) gets the `Failed`
//! condition (reason `SignerValidationFailure`) instead. Requests for other signers are left
//! alone, for other signers to sign. Errors of the list or the watch are retried with a
//! backoff (from a fresh list).
//!
//! `http::ApiServer::bind_with` (feature `server`) runs one while it serves when
//! its TLS configuration carries a signing CA (`TlsConfig::with_signing_ca`; the self-signed
//! certificate directory's CA is one). Without TLS, or with TLS but no CA key, nothing signs:
//! approved requests stay without a certificate, as in a cluster without a signer.

mod sign;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use capstan_api::kube_core::params::{ListParams, PostParams, WatchParams};
use capstan_api::kube_core::{DynamicObject, WatchEvent};
use capstan_api::{Client, Error, ResourceInfo};
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use serde_json::{json, Value};

pub use sign::{
    check_request, SignError, SigningCa, SigningCaError, DEFAULT_VALIDITY, KUBE_APISERVER_CLIENT,
    KUBE_APISERVER_CLIENT_KUBELET,
};

/// The longest wait between retries of a failed list or watch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a failed list or watch.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The `csrsigning` controller: a task signing approved CertificateSigningRequests (see the
/// [module](self) documentation). It runs until dropped.
#[derive(Debug)]
pub struct CsrSigner {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CsrSigner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CsrSigner {
    /// Starts signing the requests `client` serves with `ca`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(client: Arc<dyn Client>, ca: SigningCa) -> Self {
        CsrSigner {
            task: tokio::spawn(run(client, ca)),
        }
    }
}

/// The CertificateSigningRequest resource.
fn resource() -> ResourceInfo {
    ResourceInfo::builtin("certificates.k8s.io", "CertificateSigningRequest")
        .expect("CertificateSigningRequest is a built-in kind")
}

async fn run(client: Arc<dyn Client>, ca: SigningCa) {
    let resource = resource();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match list_and_watch(&*client, &resource, &ca).await {
            // The watch ended (timeout, server closing it): list again at once.
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(error) => {
                tracing::warn!("signing certificate requests: {error}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Signs what the list shows, then what the watch reports, until the watch ends (`Ok`) or
/// fails.
async fn list_and_watch(
    client: &dyn Client,
    resource: &ResourceInfo,
    ca: &SigningCa,
) -> capstan_api::Result<()> {
    let list = client.list(resource, None, &ListParams::default()).await?;
    for request in list.items {
        handle(client, resource, ca, request).await;
    }
    let version = list.metadata.resource_version.unwrap_or_default();
    let mut events = client
        .watch(resource, None, &WatchParams::default(), &version)
        .await?;
    while let Some(event) = events.next().await {
        match event? {
            WatchEvent::Added(request) | WatchEvent::Modified(request) => {
                handle(client, resource, ca, request).await;
            }
            WatchEvent::Error(status) => return Err(Error::from_status(*status)),
            WatchEvent::Deleted(_) | WatchEvent::Bookmark(_) => {}
        }
    }
    Ok(())
}

/// Whether `request` (JSON) has the condition `type_` with status `True`.
fn has_condition(request: &Value, type_: &str) -> bool {
    request
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// What the signer does with a request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Nothing: not approved, denied, failed, already signed, or another signer's.
    Skip,
    /// Sign it.
    Sign,
}

fn decide(request: &Value) -> Decision {
    let signed = request
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    let ours = matches!(
        request.pointer("/spec/signerName").and_then(Value::as_str),
        Some(KUBE_APISERVER_CLIENT | KUBE_APISERVER_CLIENT_KUBELET)
    );
    if signed
        || !ours
        || !has_condition(request, "Approved")
        || has_condition(request, "Denied")
        || has_condition(request, "Failed")
    {
        Decision::Skip
    } else {
        Decision::Sign
    }
}

/// The request's status with a certificate for it, or with the `Failed` condition when the
/// signer refuses it. `Err` for a failure worth retrying later.
fn signed_status(ca: &SigningCa, request: &Value, now: SystemTime) -> Result<Value, SignError> {
    let mut status = match request.get("status") {
        Some(Value::Object(status)) => status.clone(),
        _ => serde_json::Map::new(),
    };
    let outcome = request_der(request).and_then(|der| {
        let spec = &request["spec"];
        let usages: Vec<&str> = spec["usages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let expiration = spec["expirationSeconds"].as_u64().map(Duration::from_secs);
        let signer = spec["signerName"].as_str().unwrap_or_default();
        ca.sign(signer, &der, &usages, expiration, now)
    });
    match outcome {
        Ok(certificate) => {
            status.insert(
                "certificate".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(certificate)),
            );
        }
        Err(SignError::Refused(message)) => {
            let now = crate::protobuf::format::rfc3339(unix_seconds(now), 0, 0);
            let conditions = status
                .entry("conditions")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(conditions) = conditions {
                conditions.push(json!({
                    "type": "Failed",
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": message,
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }));
            }
        }
        Err(error) => return Err(error),
    }
    Ok(Value::Object(status))
}

/// The DER of the request's `spec.request` (base64 of a PEM `CERTIFICATE REQUEST`).
fn request_der(request: &Value) -> Result<Vec<u8>, SignError> {
    let encoded = request
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| SignError::Refused(format!("unable to parse csr: {e}")))?;
    CertificateSigningRequestDer::from_pem_slice(&pem)
        .map(|der| der.as_ref().to_vec())
        .map_err(|e| SignError::Refused(format!("unable to parse csr: {e}")))
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Signs `request` if it should be, writing the result through the status subresource. A
/// conflict or a vanished request is left to the next event; other errors are logged.
async fn handle(
    client: &dyn Client,
    resource: &ResourceInfo,
    ca: &SigningCa,
    request: DynamicObject,
) {
    let name = request.metadata.name.clone().unwrap_or_default();
    let Ok(value) = serde_json::to_value(&request) else {
        return;
    };
    if decide(&value) == Decision::Skip {
        return;
    }
    let status = match signed_status(ca, &value, SystemTime::now()) {
        Ok(status) => status,
        Err(error) => {
            tracing::warn!(csr = %name, "not signed: {error}");
            return;
        }
    };
    let mut updated = request;
    updated.data["status"] = status;
    match client
        .update_status(resource, None, updated, &PostParams::default())
        .await
    {
        Ok(_) => tracing::info!(csr = %name, "certificate request signed or failed"),
        Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
        Err(error) => tracing::warn!(csr = %name, "writing the certificate: {error}"),
    }
}

#[cfg(test)]
mod tests;
