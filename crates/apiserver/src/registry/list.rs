//! `list`: selectors, namespace scoping, `resourceVersion` semantics and paging with continue
//! tokens, as kube-apiserver serves a list from etcd.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use capstan_api::{
    field::FieldSelector,
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta,
    kube_core::{
        params::{ListParams, VersionMatch},
        DynamicObject, ObjectList, TypeMeta,
    },
    parse_label_selector, selector, Error, Result,
};
use capstan_store::{Range, Revision};
use serde::{Deserialize, Serialize};

use super::{object, storage::store_error, Registry, ResourceState};
use crate::codec;

/// The largest chunk read from the store at once while collecting a filtered page
/// (kube-apiserver's `maxLimit`).
const MAX_CHUNK: usize = 10_000;

/// The Kubernetes message for a continue token whose snapshot has been compacted.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use \
    the continue token in this response to retrieve the remainder of the results. Continuing \
    with the provided token results in an inconsistent list - objects that were created, \
    modified, or deleted between the time the first chunk was returned and now may show up in \
    the list.";

/// The Kubernetes message for an exact list `resourceVersion` that has been compacted.
const LIST_TOO_OLD: &str = "The resourceVersion for the provided list is too old.";

/// The version tag of a continue token, as kube-apiserver writes it.
const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// A continue token: where the next page starts and which snapshot it reads.
///
/// The wire form is kube-apiserver's: URL-safe base64 (no padding) of
/// `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<next key, relative to the list prefix>"}`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContinueToken {
    #[serde(rename = "v")]
    version: String,
    #[serde(rename = "rv")]
    revision: Revision,
    start: String,
}

impl ContinueToken {
    fn new(revision: Revision, start: String) -> Self {
        ContinueToken {
            version: TOKEN_VERSION.into(),
            revision,
            start,
        }
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a token serializes"))
    }

    /// Parses a token. Errors: [`Error::BadRequest`] for anything this registry did not write.
    fn decode(token: &str) -> Result<Self> {
        let invalid = |why: &str| Error::bad_request(format!("continue key is not valid: {why}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| invalid("not base64"))?;
        let token: ContinueToken =
            serde_json::from_slice(&bytes).map_err(|_| invalid("not a continue token"))?;
        if token.version != TOKEN_VERSION {
            return Err(invalid(&format!(
                "incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
            )));
        }
        if token.revision <= 0 {
            return Err(invalid("incorrect encoded start resourceVersion"));
        }
        if token.start.is_empty() {
            return Err(invalid("encoded start key empty"));
        }
        Ok(token)
    }
}

/// Where a list starts reading, and at which revision.
struct Start {
    key: Bytes,
    /// Read at this revision (a continue token's snapshot, or an exact resourceVersion).
    revision: Option<Revision>,
    /// A resourceVersion the result must be at least as new as.
    not_older_than: Option<Revision>,
    from_token: bool,
}

impl Registry {
    /// Serves [`Client::list`](capstan_api::Client::list) for one kind.
    pub(super) async fn list_objects(
        &self,
        state: &ResourceState,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        let info = state.info();
        let labels = parse_label_selector(params.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""))?;
        fields.validate_for(info)?;
        let filtering = !labels.selects_all() || !fields.selects_all();
        let prefix = match namespace {
            Some(namespace) => info.namespace_prefix(namespace)?,
            None => info.storage_prefix(),
        };
        let limit = params.limit.filter(|&l| l > 0).map(|l| l as usize);
        let start = list_start(params, &prefix)?;
        let map_error = |error: capstan_store::Error| match error {
            capstan_store::Error::Compacted { .. } if start.from_token => Error::Expired {
                message: CONTINUE_EXPIRED.into(),
            },
            capstan_store::Error::Compacted { .. } => Error::Gone {
                message: LIST_TOO_OLD.into(),
            },
            other => store_error(other, info, ""),
        };

        let mut next = start.key.clone();
        let mut revision = start.revision;
        let mut chunk = limit.unwrap_or(0);
        let mut items = Vec::new();
        let mut last_key: Option<Bytes> = None;
        let mut has_more;
        let mut remaining;
        loop {
            let mut range = Range::prefix(prefix.clone()).limit(chunk);
            range.start = next.clone();
            if let Some(revision) = revision {
                range = range.at_revision(revision);
            }
            let response = self.store.range(range).await.map_err(map_error)?;
            let snapshot = *revision.get_or_insert(response.revision);
            if let Some(wanted) = start.not_older_than.filter(|&w| w > snapshot) {
                return Err(Error::Timeout {
                    message: format!("Too large resource version: {wanted}, current: {snapshot}"),
                });
            }
            has_more = response.more;
            let mut consumed = 0;
            for kv in &response.kvs {
                if limit.is_some_and(|limit| items.len() >= limit) {
                    has_more = true;
                    break;
                }
                consumed += 1;
                last_key = Some(kv.key.clone());
                let mut item = codec::decode(kv)?;
                state.strategy().to_served(&mut item);
                let selected = selector::matches(&labels, Some(&object::labels(&item)))
                    && fields.matches(&item);
                if selected {
                    object::set_types(info, &mut item);
                    items.push(object::to_dynamic(item)?);
                }
            }
            remaining = response.count - consumed;
            let Some(limit) = limit else { break };
            if !has_more || items.len() >= limit {
                break;
            }
            let Some(last) = &last_key else { break };
            next = after(last);
            chunk = (chunk * 2).min(MAX_CHUNK);
        }

        let snapshot = revision.expect("the first read sets the revision");
        let mut metadata = ListMeta {
            resource_version: Some(codec::resource_version(snapshot)),
            ..ListMeta::default()
        };
        if let (true, Some(_), Some(last)) = (has_more, limit, &last_key) {
            let relative = &after(last)[prefix.len()..];
            let token = ContinueToken::new(snapshot, String::from_utf8_lossy(relative).into());
            metadata.continue_ = Some(token.encode());
            if !filtering && remaining > 0 {
                metadata.remaining_item_count = Some(remaining);
            }
        }
        Ok(ObjectList {
            types: TypeMeta {
                api_version: info.api_version(),
                kind: format!("{}List", info.kind()),
            },
            metadata,
            items,
        })
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next.into()
}

/// Reads where and at which revision a list starts, from its continue token or its
/// `resourceVersion` and `resourceVersionMatch`.
fn list_start(params: &ListParams, prefix: &str) -> Result<Start> {
    let resource_version = params.resource_version.as_deref().unwrap_or("");
    if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        if !resource_version.is_empty() {
            return Err(Error::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let token = ContinueToken::decode(token)?;
        let mut key = prefix.as_bytes().to_vec();
        key.extend_from_slice(token.start.as_bytes());
        return Ok(Start {
            key: key.into(),
            revision: Some(token.revision),
            not_older_than: None,
            from_token: true,
        });
    }
    let revision = codec::parse_resource_version(resource_version)?;
    let latest = |not_older_than| Start {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        revision: None,
        not_older_than,
        from_token: false,
    };
    match (revision, &params.version_match) {
        (None, Some(_)) => Err(Error::bad_field(
            "resourceVersionMatch",
            "is forbidden unless resourceVersion is provided",
        )),
        (None, None) | (Some(0), None | Some(VersionMatch::NotOlderThan)) => Ok(latest(None)),
        (Some(0), Some(VersionMatch::Exact)) => Err(Error::bad_field(
            "resourceVersionMatch",
            "\"Exact\" is forbidden for resourceVersion \"0\"",
        )),
        (Some(revision), Some(VersionMatch::Exact)) => Ok(Start {
            revision: Some(revision),
            ..latest(None)
        }),
        (Some(revision), _) => Ok(latest(Some(revision))),
    }
}

#[cfg(test)]
mod compaction_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_in_kube_apiservers_format() {
        let token = ContinueToken::new(42, "default/web\0".into());
        let encoded = token.encode();
        let json = URL_SAFE_NO_PAD.decode(&encoded).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":42,"start":"default/web\u0000"}"#
        );
        assert_eq!(ContinueToken::decode(&encoded).unwrap(), token);
    }

    #[test]
    fn malformed_continue_tokens_are_bad_requests() {
        let forged = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for token in [
            "%%%".to_string(),
            forged("not json"),
            forged(r#"{"v":"v2","rv":1,"start":"a"}"#),
            forged(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#),
            forged(r#"{"v":"meta.k8s.io/v1","rv":3,"start":""}"#),
        ] {
            let error = ContinueToken::decode(&token).unwrap_err();
            assert_eq!(error.code(), 400, "{token}");
        }
    }

    #[test]
    fn resource_version_rules_follow_kubernetes() {
        let params =
            |rv: Option<&str>, exact: Option<VersionMatch>, token: Option<&str>| ListParams {
                resource_version: rv.map(str::to_string),
                version_match: exact,
                continue_token: token.map(str::to_string),
                ..ListParams::default()
            };
        let start = |p: ListParams| list_start(&p, "/registry/pods/");
        assert!(start(params(None, None, None)).unwrap().revision.is_none());
        assert!(start(params(Some("0"), None, None))
            .unwrap()
            .revision
            .is_none());
        let exact = start(params(Some("7"), Some(VersionMatch::Exact), None)).unwrap();
        assert_eq!(exact.revision, Some(7));
        let at_least = start(params(Some("7"), None, None)).unwrap();
        assert_eq!(
            (at_least.revision, at_least.not_older_than),
            (None, Some(7))
        );
        for bad in [
            params(None, Some(VersionMatch::Exact), None),
            params(Some("0"), Some(VersionMatch::Exact), None),
            params(Some("x"), None, None),
            params(Some("5"), None, Some("token")),
        ] {
            assert_eq!(start(bad).err().map(|e| e.code()), Some(400));
        }
    }
}
