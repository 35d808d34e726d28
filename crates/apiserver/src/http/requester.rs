//! Fields an object takes from the user who creates it over HTTP, whatever the client sent,
//! as kube-apiserver's strategies set them: a CertificateSigningRequest's `spec.username`,
//! `spec.uid`, `spec.groups` and `spec.extra`.
//!
//! The authentication layer puts the caller's [`UserInfo`] in the request's extensions; the
//! resource handler runs the request [`as_requester`], and the create path calls
//! [`set_requester_fields`] on the decoded object before the registry sees it. Objects created
//! in process (through the registry's `Client`) have no requester and keep what they carry.

use std::future::Future;

use capstan_api::kube_core::DynamicObject;
use capstan_api::ResourceInfo;
use serde_json::{Map, Value};

use super::layers::UserInfo;

tokio::task_local! {
    /// The authenticated user of the request being served.
    static REQUESTER: UserInfo;
}

/// The fields one kind takes from its creator.
struct RequesterFields {
    group: &'static str,
    kind: &'static str,
    /// Writes the user into the object's JSON (everything but `metadata`).
    set: fn(&mut Value, &UserInfo),
}

/// The kinds whose objects record their creator.
const KINDS: &[RequesterFields] = &[RequesterFields {
    group: "certificates.k8s.io",
    kind: "CertificateSigningRequest",
    set: certificate_signing_request,
}];

/// Runs `future` (a request's handling) with `user`, if any, as the requester that
/// [`set_requester_fields`] reads.
pub(crate) async fn as_requester<F: Future>(user: Option<UserInfo>, future: F) -> F::Output {
    match user {
        Some(user) => REQUESTER.scope(user, future).await,
        None => future.await,
    }
}

/// Sets the fields `object`, about to be created as `resource`, takes from the requester of
/// the request being served. Does nothing outside a request with an authenticated (or
/// anonymous) user, or for kinds that record no creator.
pub(crate) fn set_requester_fields(resource: &ResourceInfo, object: &mut DynamicObject) {
    let Some(fields) = KINDS
        .iter()
        .find(|k| k.group == resource.group() && k.kind == resource.kind())
    else {
        return;
    };
    let _ = REQUESTER.try_with(|user| (fields.set)(&mut object.data, user));
}

/// `spec.username`, `spec.uid` and `spec.groups` from `user`; `spec.extra` dropped (users
/// carry no extra attributes here).
fn certificate_signing_request(object: &mut Value, user: &UserInfo) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let spec = root
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    spec.insert("username".into(), Value::String(user.name.clone()));
    match &user.uid {
        Some(uid) => spec.insert("uid".into(), Value::String(uid.clone())),
        None => spec.remove("uid"),
    };
    if user.groups.is_empty() {
        spec.remove("groups");
    } else {
        spec.insert(
            "groups".into(),
            Value::Array(user.groups.iter().cloned().map(Value::String).collect()),
        );
    }
    spec.remove("extra");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn csr() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": { "name": "r" },
            "spec": { "username": "mallory", "groups": ["system:masters"],
                "uid": "forged", "extra": { "scopes": ["all"] }, "signerName": "a.io/b" },
        }))
        .unwrap()
    }

    fn resource(kind: &str) -> ResourceInfo {
        ResourceInfo::builtin("certificates.k8s.io", kind)
            .or_else(|| ResourceInfo::builtin("", kind))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_records_its_creator_whatever_the_client_sent() {
        let user = UserInfo::new("alice", ["devs", "system:authenticated"]);
        let object = as_requester(Some(user), async {
            let mut object = csr();
            set_requester_fields(&resource("CertificateSigningRequest"), &mut object);
            object
        })
        .await;
        assert_eq!(
            object.data["spec"],
            json!({ "username": "alice", "groups": ["devs", "system:authenticated"],
                "signerName": "a.io/b" })
        );
    }

    #[tokio::test]
    async fn without_a_requester_or_for_other_kinds_nothing_changes() {
        let mut object = csr();
        set_requester_fields(&resource("CertificateSigningRequest"), &mut object);
        assert_eq!(object.data["spec"]["username"], "mallory");
        let user = UserInfo::new("alice", ["devs"]);
        as_requester(Some(user), async {
            set_requester_fields(&resource("ConfigMap"), &mut object);
        })
        .await;
        assert_eq!(object.data["spec"]["username"], "mallory");
    }
}
