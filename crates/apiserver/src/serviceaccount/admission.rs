//! Kubernetes' `ServiceAccount` admission plugin, as a mutating step of the registry's chain.

use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::{Error, ResourceInfo, Result};
use capstan_store::{Store, StoreExt};
use serde_json::{json, Value};

use crate::codec;
use crate::registry::admission::{AdmissionPhase, AdmissionRequest, AdmissionStep, Operation};

/// The service account a Pod without one runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected token volume's name (`kube-api-access-<5 characters>`).
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap holding the cluster's CA bundle in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle in [`ROOT_CA_CONFIG_MAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The lifetime the kubelet asks for the projected token (an hour and seven seconds, which
/// tells a token of this volume apart).
pub const PROJECTED_TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// How many times a Pod create looks for a missing `default` account before it is refused.
pub const DEFAULT_ACCOUNT_ATTEMPTS: u32 = 10;
/// The annotation of mirror pods (static pods' reflections), which are left alone.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Kubernetes' `ServiceAccount` admission plugin, for Pod creates:
///
/// - a Pod without `spec.serviceAccountName` gets `default` (and the deprecated
///   `spec.serviceAccount` the same);
/// - the service account must exist, else the create is [`Error::Forbidden`] (`pods "web" is
///   forbidden: error looking up service account ns/name: serviceaccount "name" not found`);
///   a missing `default` account is looked for again for a second or two first, since the
///   service account controller creates it just after its namespace;
/// - unless `automountServiceAccountToken` is false (the Pod's, else the account's), the
///   Pod gets the projected volume `kube-api-access-<5 random characters>` (a bound token at
///   `token`, lasting 3607 s, the `kube-root-ca.crt` ConfigMap's `ca.crt`, and the namespace
///   from the downward API; mode 0644) mounted read-only at
///   `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container
///   that has nothing mounted there;
/// - a Pod without `imagePullSecrets` gets the account's;
/// - mirror pods (annotation `kubernetes.io/config.mirror`) are left alone, and may not name
///   a service account or mount secrets (403).
///
/// It is an option of the registry, off in a bare [`Registry::new`](crate::registry::Registry::new)
/// (whose users create Pods with no controller making the `default` accounts), and turned on by
/// whoever also runs the service account controller: `registry.add_admission(ServiceAccountAdmission::new(store))`.
///
/// Each Pod create costs one point read of the account in the store.
pub struct ServiceAccountAdmission {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ServiceAccountAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAdmission")
            .finish_non_exhaustive()
    }
}

impl ServiceAccountAdmission {
    /// The step, reading service accounts from `store` (the registry's own).
    pub fn new(store: Arc<dyn Store>) -> Self {
        ServiceAccountAdmission { store }
    }

    /// The account `namespace/name`; `default` is looked for up to [`DEFAULT_ACCOUNT_ATTEMPTS`]
    /// times, 100 to 200 ms apart, as Kubernetes does, since the controller creates it just
    /// after its namespace (a namespace that does not exist is not waited for).
    async fn account(&self, namespace: &str, name: &str) -> Result<Option<Value>> {
        let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
            DEFAULT_ACCOUNT_ATTEMPTS
        } else {
            1
        };
        let pause = std::time::Duration::from_millis(100 + fastrand::u64(..100));
        for attempt in 0..attempts {
            if attempt > 0 {
                if self.read("Namespace", None, namespace).await?.is_none() {
                    return Ok(None);
                }
                tokio::time::sleep(pause).await;
            }
            if let Some(account) = self.read("ServiceAccount", Some(namespace), name).await? {
                return Ok(Some(account));
            }
        }
        Ok(None)
    }

    async fn read(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<Option<Value>> {
        let info = ResourceInfo::builtin("", kind).expect("a built-in core kind");
        let key = info.key(namespace, name)?;
        let stored = self
            .store
            .get(key)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        stored.map(|kv| codec::decode(&kv)).transpose()
    }
}

fn forbidden(request: &AdmissionRequest<'_>, why: impl std::fmt::Display) -> Error {
    let resource = request.resource.qualified_resource();
    let message = if request.name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {:?} is forbidden: {why}", request.name)
    };
    Error::Forbidden { message }
}

/// Five characters of Kubernetes' random-string alphabet (no vowels, no confusable digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// The projected volume Kubernetes mounts the service account token with.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {
                    "expirationSeconds": PROJECTED_TOKEN_EXPIRATION_SECONDS,
                    "path": "token",
                }},
                {"configMap": {
                    "name": ROOT_CA_CONFIG_MAP,
                    "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}],
                }},
                {"downwardAPI": {
                    "items": [{
                        "path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                    }],
                }},
            ],
            "defaultMode": 420,
        },
    })
}

fn is_false(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(false)
}

/// Mounts the token volume into every container lacking a mount at [`TOKEN_MOUNT_PATH`], and
/// adds the volume when one needed it and the Pod has none yet.
fn mount_token(spec: &mut serde_json::Map<String, Value>) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|volumes| {
            volumes
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|name| name.starts_with(TOKEN_VOLUME_PREFIX))
                .map(str::to_string)
        });
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{}", random_suffix()));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !mounts.is_array() {
                *mounts = Value::Array(Vec::new());
            }
            let mounts = mounts.as_array_mut().expect("just made an array");
            let mounted = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !mounted {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if existing.is_none() && needed {
        let volumes = spec
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !volumes.is_array() {
            *volumes = Value::Array(Vec::new());
        }
        volumes
            .as_array_mut()
            .expect("just made an array")
            .push(token_volume(&name));
    }
}

#[async_trait]
impl AdmissionStep for ServiceAccountAdmission {
    fn name(&self) -> &str {
        "ServiceAccount"
    }

    fn phase(&self) -> AdmissionPhase {
        AdmissionPhase::Mutating
    }

    fn keeps_types(&self) -> bool {
        true
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, pod: &mut Value) -> Result<()> {
        let resource = request.resource;
        if request.operation != Operation::Create
            || request.subresource.is_some()
            || !resource.group().is_empty()
            || resource.kind() != "Pod"
        {
            return Ok(());
        }
        let Some(namespace) = request.namespace.filter(|ns| !ns.is_empty()) else {
            return Ok(());
        };
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|annotations| annotations.contains_key(MIRROR_POD_ANNOTATION));
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let named = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_string);
        if mirror {
            if named.is_some() {
                return Err(forbidden(
                    request,
                    "a mirror pod may not reference service accounts",
                ));
            }
            let mounts_secret = spec
                .get("volumes")
                .and_then(Value::as_array)
                .is_some_and(|volumes| volumes.iter().any(|v| v.get("secret").is_some()));
            if mounts_secret {
                return Err(forbidden(request, "a mirror pod may not reference secrets"));
            }
            return Ok(());
        }
        let account_name = named.unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
        spec.insert(
            "serviceAccountName".into(),
            Value::String(account_name.clone()),
        );
        spec.insert("serviceAccount".into(), Value::String(account_name.clone()));
        let Some(account) = self.account(namespace, &account_name).await? else {
            // A missing namespace is NamespaceLifecycle's 404, not a missing account.
            if self.read("Namespace", None, namespace).await?.is_none() {
                return Ok(());
            }
            return Err(forbidden(
                request,
                format!(
                    "error looking up service account {namespace}/{account_name}: \
                     serviceaccount {account_name:?} not found"
                ),
            ));
        };
        let automount = match spec.get("automountServiceAccountToken") {
            Some(Value::Bool(value)) => *value,
            _ => !is_false(account.get("automountServiceAccountToken")),
        };
        if automount {
            mount_token(spec);
        }
        let has_pull_secrets = spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
        if !has_pull_secrets {
            if let Some(secrets) = account
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .filter(|list| !list.is_empty())
            {
                spec.insert("imagePullSecrets".into(), Value::Array(secrets.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{within, LIMIT};
    use capstan_store::memory::MemoryStore;

    fn pods() -> ResourceInfo {
        ResourceInfo::builtin("", "Pod").unwrap()
    }

    fn request(resource: &ResourceInfo) -> AdmissionRequest<'_> {
        AdmissionRequest {
            operation: Operation::Create,
            subresource: None,
            resource,
            namespace: Some("team"),
            name: "web",
            old_object: None,
            dry_run: false,
        }
    }

    async fn store_with(objects: &[(&str, Option<&str>, Value)]) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for (kind, namespace, object) in objects {
            let info = ResourceInfo::builtin("", kind).unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            let key = info.key(*namespace, name).unwrap();
            store
                .create(key, codec::encode(object).unwrap())
                .await
                .unwrap();
        }
        store
    }

    fn account(automount: Option<bool>) -> (&'static str, Option<&'static str>, Value) {
        let mut account = json!({"metadata": {"name": "default", "namespace": "team"}});
        if let Some(automount) = automount {
            account["automountServiceAccountToken"] = automount.into();
        }
        ("ServiceAccount", Some("team"), account)
    }

    fn namespace() -> (&'static str, Option<&'static str>, Value) {
        ("Namespace", None, json!({"metadata": {"name": "team"}}))
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "app", "image": "nginx"},
                {"name": "own", "image": "nginx", "volumeMounts": [
                    {"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
        }})
    }

    #[tokio::test]
    async fn a_pod_gets_the_default_account_and_the_projected_token_volume() {
        let step = ServiceAccountAdmission::new(store_with(&[namespace(), account(None)]).await);
        let resource = pods();
        let mut pod = pod();
        within(LIMIT, step.admit(&request(&resource), &mut pod))
            .await
            .unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let name = volumes[0]["name"].as_str().unwrap();
        assert!(
            name.starts_with(TOKEN_VOLUME_PREFIX) && name.len() == 21,
            "{name}"
        );
        assert_eq!(volumes[0], token_volume(name));
        let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
        // Something already mounted there stays, alone.
        assert_eq!(
            spec["containers"][1]["volumeMounts"],
            json!([{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}])
        );
    }

    #[tokio::test]
    async fn automount_false_on_the_pod_or_the_account_mounts_nothing() {
        let resource = pods();
        let step =
            ServiceAccountAdmission::new(store_with(&[namespace(), account(Some(false))]).await);
        let mut from_account = pod();
        within(LIMIT, step.admit(&request(&resource), &mut from_account))
            .await
            .unwrap();
        assert!(from_account["spec"].get("volumes").is_none());
        let step = ServiceAccountAdmission::new(store_with(&[namespace(), account(None)]).await);
        let mut from_pod = pod();
        from_pod["spec"]["automountServiceAccountToken"] = false.into();
        within(LIMIT, step.admit(&request(&resource), &mut from_pod))
            .await
            .unwrap();
        assert!(from_pod["spec"].get("volumes").is_none());
        // The pod's `true` wins over the account's `false`.
        let step =
            ServiceAccountAdmission::new(store_with(&[namespace(), account(Some(false))]).await);
        let mut forced = pod();
        forced["spec"]["automountServiceAccountToken"] = true.into();
        within(LIMIT, step.admit(&request(&resource), &mut forced))
            .await
            .unwrap();
        assert_eq!(forced["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_missing_account_is_forbidden_in_kubernetes_words() {
        let step = ServiceAccountAdmission::new(store_with(&[namespace()]).await);
        let resource = pods();
        let mut pod = pod();
        pod["spec"]["serviceAccountName"] = "builder".into();
        let error = within(LIMIT, step.admit(&request(&resource), &mut pod))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "pods \"web\" is forbidden: error looking up service account team/builder: \
             serviceaccount \"builder\" not found"
        );
        // In a missing namespace, the namespace's 404 is left to NamespaceLifecycle.
        let step = ServiceAccountAdmission::new(store_with(&[]).await);
        let mut pod = self::pod();
        within(LIMIT, step.admit(&request(&resource), &mut pod))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_default_account_created_moments_later_is_waited_for() {
        let store = store_with(&[namespace()]).await;
        let step = ServiceAccountAdmission::new(store.clone());
        let resource = pods();
        let mut pod = pod();
        let (_, namespace, account) = account(None);
        let creator = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let info = ResourceInfo::builtin("", "ServiceAccount").unwrap();
            let key = info.key(namespace, "default").unwrap();
            store
                .create(key, codec::encode(&account).unwrap())
                .await
                .unwrap();
        });
        within(LIMIT, step.admit(&request(&resource), &mut pod))
            .await
            .unwrap();
        creator.await.unwrap();
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn mirror_pods_are_left_alone_and_may_not_name_an_account() {
        let step = ServiceAccountAdmission::new(store_with(&[namespace(), account(None)]).await);
        let resource = pods();
        let mut mirror = pod();
        mirror["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "x"});
        let before = mirror.clone();
        within(LIMIT, step.admit(&request(&resource), &mut mirror))
            .await
            .unwrap();
        assert_eq!(mirror, before);
        mirror["spec"]["serviceAccountName"] = "default".into();
        let error = within(LIMIT, step.admit(&request(&resource), &mut mirror))
            .await
            .unwrap_err();
        assert!(error
            .to_string()
            .contains("may not reference service accounts"));
    }

    #[tokio::test]
    async fn the_accounts_pull_secrets_are_copied_to_a_pod_without_any() {
        let mut with_secrets = account(None);
        with_secrets.2["imagePullSecrets"] = json!([{"name": "registry"}]);
        let step = ServiceAccountAdmission::new(store_with(&[namespace(), with_secrets]).await);
        let resource = pods();
        let mut pod = pod();
        within(LIMIT, step.admit(&request(&resource), &mut pod))
            .await
            .unwrap();
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "registry"}])
        );
    }
}
