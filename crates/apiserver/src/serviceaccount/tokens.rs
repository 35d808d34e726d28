//! `serviceaccounts/token` (TokenRequest) and the authentication of the tokens it issues,
//! over any [`Client`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_api::{Client, Error, ResourceInfo, Result};
use serde_json::{json, Value};

use super::claims::{ObjectRef, TokenClaims, TokenIssuer};
use super::TokenError;

/// The API version of `TokenRequest`.
pub const TOKEN_REQUEST_API_VERSION: &str = "authentication.k8s.io/v1";
/// The lifetime a TokenRequest without `expirationSeconds` gets (Kubernetes' default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for: ten minutes.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for: 2^32 seconds.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// How long a deleted service account's or Pod's tokens keep working after its
/// `deletionTimestamp`, as in Kubernetes (a graceful deletion's grace period, then a minute).
pub const DELETED_GRACE: Duration = Duration::from_secs(60);

/// Who a verified service account token names: the claims, with the user Kubernetes
/// derives from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountUser {
    /// `system:serviceaccount:<ns>:<name>`.
    pub name: String,
    /// The service account's uid.
    pub uid: String,
    /// `system:serviceaccounts`, `system:serviceaccounts:<ns>`.
    pub groups: Vec<String>,
    /// The bound objects and the credential id (see [`super::extra`]).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// kube-apiserver's service account token machinery over one [`Client`] (the registry):
/// [`create_token`](Self::create_token) answers TokenRequests, and
/// [`authenticate`](Self::authenticate) checks a bearer token's signature and claims, then
/// that its service account and bound objects still exist with the uids it names.
///
/// The HTTP server serves the first at `POST .../serviceaccounts/{name}/token` and chains the
/// second into its authenticators when `ApiServerOptions::service_account_tokens` is set.
#[derive(Clone)]
pub struct ServiceAccountTokens {
    issuer: TokenIssuer,
    client: Arc<dyn Client>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn info(kind: &str) -> ResourceInfo {
    ResourceInfo::builtin("", kind).expect("a built-in core kind")
}

async fn get(
    client: &dyn Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value> {
    let object = client.get(&info(kind), namespace, name).await?;
    serde_json::to_value(object).map_err(|e| Error::internal(e.to_string()))
}

fn uid_of(object: &Value) -> String {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Whether `object` was deleted more than [`DELETED_GRACE`] before `now`.
fn deleted_before_grace(object: &Value, now: SystemTime) -> bool {
    let Some(deletion) = object
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    else {
        return false;
    };
    match parse_rfc3339(deletion) {
        Some(at) => at + DELETED_GRACE < now,
        None => true,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what the registry writes); `None` otherwise.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let seconds = rfc3339_seconds(text)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`Z`, optional fraction).
fn rfc3339_seconds(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let time = time.split('.').next()?;
    let mut time_parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// RFC 3339 UTC, seconds precision, as Kubernetes writes `metav1.Time`.
fn format_rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn invalid_expiration(name: &str, seconds: i64, detail: &str) -> Error {
    Error::Invalid {
        kind: "TokenRequest.authentication.k8s.io".into(),
        name: name.to_string(),
        causes: vec![capstan_api::FieldError::invalid(
            "spec.expirationSeconds",
            seconds,
            detail,
        )],
    }
}

impl ServiceAccountTokens {
    /// Issues with `issuer`, reading service accounts and bound objects through `client`.
    pub fn new(issuer: TokenIssuer, client: Arc<dyn Client>) -> Self {
        ServiceAccountTokens { issuer, client }
    }

    /// The issuer.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// Answers a TokenRequest (`request`, the body as JSON) for the service account
    /// `namespace/name`, as kube-apiserver's `serviceaccounts/token` subresource: the
    /// request with `spec` defaulted (audiences: the API audiences; `expirationSeconds`:
    /// 3600, capped at the maximum expiration) and `status.token` and
    /// `status.expirationTimestamp` set.
    ///
    /// Errors: [`Error::Invalid`] for `expirationSeconds` under 600 or over 2^32 (`may not
    /// specify a duration less than 10 minutes`); [`Error::BadRequest`] for a name or
    /// namespace differing from the URL's, a `boundObjectRef` of another kind than Pod,
    /// Secret or Node (`cannot bind token to object of type /v1, Kind=...`), or a Pod running
    /// as another account; [`Error::NotFound`] for a missing account or bound object;
    /// [`Error::Conflict`] when the bound object's uid differs from the reference's.
    pub async fn create_token(&self, namespace: &str, name: &str, request: Value) -> Result<Value> {
        self.create_token_at(namespace, name, request, SystemTime::now())
            .await
    }

    async fn create_token_at(
        &self,
        namespace: &str,
        name: &str,
        mut request: Value,
        now: SystemTime,
    ) -> Result<Value> {
        if !request.is_object() {
            return Err(Error::bad_request("the body is not a TokenRequest object"));
        }
        if let Some(kind) = request.get("kind").and_then(Value::as_str) {
            if !kind.is_empty() && kind != "TokenRequest" {
                return Err(Error::bad_request(format!(
                    "the body is a {kind}, not a TokenRequest"
                )));
            }
        }
        let metadata = request
            .as_object_mut()
            .expect("checked")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if !metadata.is_object() {
            *metadata = json!({});
        }
        match metadata.get("name").and_then(Value::as_str) {
            Some(sent) if !sent.is_empty() && sent != name => {
                return Err(Error::bad_request(
                    "the name of the object does not match the name on the URL",
                ))
            }
            _ => metadata["name"] = Value::String(name.to_string()),
        }
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(sent) if !sent.is_empty() && sent != namespace => {
                return Err(Error::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => metadata["namespace"] = Value::String(namespace.to_string()),
        }
        let spec = request
            .as_object_mut()
            .expect("checked")
            .entry("spec")
            .or_insert_with(|| json!({}));
        if !spec.is_object() {
            *spec = json!({});
        }
        let requested = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(value) => value
                .as_i64()
                .ok_or_else(|| Error::bad_field("spec.expirationSeconds", "must be an integer"))?,
        };
        if requested < MIN_EXPIRATION_SECONDS {
            return Err(invalid_expiration(
                name,
                requested,
                "may not specify a duration less than 10 minutes",
            ));
        }
        if requested > MAX_EXPIRATION_SECONDS {
            return Err(invalid_expiration(
                name,
                requested,
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        let lifetime = self
            .issuer
            .lifetime(Duration::from_secs(requested.unsigned_abs()));
        spec["expirationSeconds"] = json!(lifetime.as_secs());
        let audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .filter(|list: &Vec<String>| !list.is_empty())
            .unwrap_or_else(|| self.issuer.api_audiences().to_vec());
        spec["audiences"] = json!(audiences);
        let bound = spec
            .get("boundObjectRef")
            .filter(|v| v.is_object())
            .cloned();

        let account = get(&*self.client, "ServiceAccount", Some(namespace), name).await?;
        let mut claims = TokenClaims::new(
            namespace,
            ObjectRef {
                name: name.to_string(),
                uid: uid_of(&account),
            },
            audiences,
            now,
            lifetime,
        );
        if let Some(reference) = bound {
            self.bind(&mut claims, namespace, name, &reference).await?;
        }
        let expires = now + lifetime;
        let token = self
            .issuer
            .sign(claims)
            .map_err(|e| Error::internal(format!("failed to generate token: {e}")))?;
        let root = request.as_object_mut().expect("checked");
        root.insert(
            "apiVersion".into(),
            Value::String(TOKEN_REQUEST_API_VERSION.into()),
        );
        root.insert("kind".into(), Value::String("TokenRequest".into()));
        root.insert(
            "status".into(),
            json!({"token": token, "expirationTimestamp": format_rfc3339(expires)}),
        );
        Ok(request)
    }

    /// Adds the bound object named by `reference` to `claims`, as kube-apiserver checks it.
    async fn bind(
        &self,
        claims: &mut TokenClaims,
        namespace: &str,
        account: &str,
        reference: &Value,
    ) -> Result<()> {
        let text = |key: &str| {
            reference
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind, name, uid) =
            (text("apiVersion"), text("kind"), text("name"), text("uid"));
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let found = match (group, kind.as_str()) {
            ("", "Pod") => {
                let pod = get(&*self.client, "Pod", Some(namespace), &name).await?;
                let runs_as = pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if runs_as != account {
                    return Err(Error::bad_request(format!(
                        "cannot bind token for serviceaccount {account:?} to pod running with \
                         serviceaccount {runs_as:?}"
                    )));
                }
                let reference = ObjectRef {
                    name: name.clone(),
                    uid: uid_of(&pod),
                };
                claims.kubernetes.pod = Some(reference);
                // The node the pod runs on, as Kubernetes records it.
                if let Some(node) = pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    let node_uid = get(&*self.client, "Node", None, node)
                        .await
                        .map(|node| uid_of(&node))
                        .unwrap_or_default();
                    claims.kubernetes.node = Some(ObjectRef {
                        name: node.to_string(),
                        uid: node_uid,
                    });
                }
                pod
            }
            ("", "Secret") => {
                let secret = get(&*self.client, "Secret", Some(namespace), &name).await?;
                claims.kubernetes.secret = Some(ObjectRef {
                    name: name.clone(),
                    uid: uid_of(&secret),
                });
                secret
            }
            ("", "Node") => {
                let node = get(&*self.client, "Node", None, &name).await?;
                claims.kubernetes.node = Some(ObjectRef {
                    name: name.clone(),
                    uid: uid_of(&node),
                });
                node
            }
            _ => {
                return Err(Error::bad_request(format!(
                    "cannot bind token to object of type {group}/{version}, Kind={kind}"
                )))
            }
        };
        let actual = uid_of(&found);
        if !uid.is_empty() && uid != actual {
            return Err(Error::Conflict {
                resource: kind.clone(),
                name,
                message: format!(
                    "the UID in the bound object reference ({uid}) does not match the UID in \
                     record ({actual}). The object might have been deleted and then recreated"
                ),
            });
        }
        Ok(())
    }

    /// Authenticates `token` at `now`: `Ok(None)` when it is not one of this issuer's
    /// (another authenticator may know it); the user when its signature, issuer, audience and
    /// times hold and its service account (and bound Pod, Secret or Node) still exist with the
    /// uids it names, not deleted more than a minute ago.
    ///
    /// Errors: the [`TokenError`] saying why a token of ours is refused.
    pub async fn authenticate_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> std::result::Result<Option<ServiceAccountUser>, TokenError> {
        if !self.issuer.is_ours(token) {
            return Ok(None);
        }
        let claims = self.issuer.verify_at(token, now)?;
        let namespace = claims.kubernetes.namespace.as_str();
        let reference = &claims.kubernetes.serviceaccount;
        self.check_alive("ServiceAccount", Some(namespace), reference, now)
            .await?;
        if let Some(pod) = &claims.kubernetes.pod {
            self.check_alive("Pod", Some(namespace), pod, now).await?;
        }
        if let Some(secret) = &claims.kubernetes.secret {
            self.check_alive("Secret", Some(namespace), secret, now)
                .await?;
        }
        if let (None, Some(node)) = (&claims.kubernetes.pod, &claims.kubernetes.node) {
            self.check_alive("Node", None, node, now).await?;
        }
        Ok(Some(ServiceAccountUser {
            name: claims.user_name(),
            uid: reference.uid.clone(),
            groups: claims.groups(),
            extra: claims.extra(),
        }))
    }

    /// [`authenticate_at`](Self::authenticate_at) the current time.
    ///
    /// Errors: as `authenticate_at`.
    pub async fn authenticate(
        &self,
        token: &str,
    ) -> std::result::Result<Option<ServiceAccountUser>, TokenError> {
        self.authenticate_at(token, SystemTime::now()).await
    }

    async fn check_alive(
        &self,
        kind: &'static str,
        namespace: Option<&str>,
        reference: &ObjectRef,
        now: SystemTime,
    ) -> std::result::Result<(), TokenError> {
        let what = || format!("{}/{}", namespace.unwrap_or_default(), reference.name);
        let object = match get(&*self.client, kind, namespace, &reference.name).await {
            Ok(object) => object,
            Err(error) if error.is_not_found() => {
                return Err(TokenError::Gone {
                    kind,
                    name: what(),
                    why: "not found".into(),
                })
            }
            Err(error) => return Err(TokenError::Lookup(error.to_string())),
        };
        if deleted_before_grace(&object, now) {
            return Err(TokenError::Gone {
                kind,
                name: what(),
                why: "has been deleted".into(),
            });
        }
        let uid = uid_of(&object);
        if uid != reference.uid {
            return Err(TokenError::Gone {
                kind,
                name: what(),
                why: format!("UID ({uid}) does not match claim ({})", reference.uid),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
