//! The Pod's volumes on the node: each volume gets a directory under the kubelet's root
//! (`<root>/pods/<uid>/volumes/<plugin>/<name>`, as the kubelet lays them out), and each
//! container's `volumeMounts` become bind mounts of those directories.
//!
//! Supported here: `projected` (service account tokens, ConfigMaps, Secrets and the downward
//! API, as service account admission mounts at `/var/run/secrets/kubernetes.io/serviceaccount`),
//! `configMap`, `secret`, `downwardAPI` and `emptyDir`. Files are written with the
//! [`atomic_writer`]. Tokens are requested through [`TokenSource`] (the API server's
//! `serviceaccounts/token`), bound to the Pod, and rewritten once 80% of their lifetime has
//! passed (or after 24 hours), as the kubelet's token manager does.
//!
//! A missing ConfigMap or Secret that is not `optional` fails the set-up with
//! [`VolumeError::MissingSource`]; the pod worker then reports `FailedMount` and retries.

pub(crate) mod atomic_writer;
pub(crate) mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount, Volume};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ResourceExt;
use capstan_api::{Api, Client};
use capstan_runtime as rt;
use parking_lot::Mutex;

use self::atomic_writer::FileContent;

/// Why a Pod's volumes could not be set up. The pod worker turns each into a `FailedMount`
/// Event and retries on its next sync.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VolumeError {
    /// A ConfigMap or Secret the Pod needs does not exist (and is not `optional`), or lacks
    /// a key an item names.
    #[error("{message}")]
    MissingSource {
        /// Kubernetes' text: `configmap "app" not found`,
        /// `configmap references non-existent config key: k`.
        message: String,
    },
    /// A service account token could not be obtained.
    #[error("failed to fetch token: {0}")]
    Token(String),
    /// The API server could not be asked.
    #[error("{0}")]
    Api(String),
    /// A container mounts a volume the Pod does not define, or a volume is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Setting up one volume failed (what the `FailedMount` Event says).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp {
        /// The volume's name.
        volume: String,
        /// Why.
        source: Box<VolumeError>,
    },
    /// The volume's directory could not be written.
    #[error("writing volume {volume:?}: {message}")]
    Io {
        /// The volume's name.
        volume: String,
        /// The error.
        message: String,
    },
}

/// A token issued for a Pod's service account (the answer to a `TokenRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires: SystemTime,
}

/// Obtains service account tokens bound to a Pod: the API server's
/// `serviceaccounts/{name}/token` subresource. Called by the kubelet when it sets up a
/// projected `serviceAccountToken` volume and again before the token expires.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A token for `service_account` in `pod`'s namespace, for `audiences` (empty: the API
    /// server's), valid for `expiration`, bound to `pod` (its name and uid).
    async fn token(
        &self,
        pod: &Pod,
        service_account: &str,
        audiences: &[String],
        expiration: Duration,
    ) -> Result<IssuedToken, VolumeError>;
}

/// Tokens from the API server: a `TokenRequest` through the ServiceAccount's `token`
/// subresource, bound to the Pod, as the kubelet asks for them.
pub struct ApiTokenSource {
    client: Arc<dyn Client>,
}

impl ApiTokenSource {
    /// Tokens requested through `client` (the kubelet's own API client).
    pub fn new(client: Arc<dyn Client>) -> Self {
        ApiTokenSource { client }
    }
}

impl std::fmt::Debug for ApiTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokenSource").finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenSource for ApiTokenSource {
    async fn token(
        &self,
        pod: &Pod,
        service_account: &str,
        audiences: &[String],
        expiration: Duration,
    ) -> Result<IssuedToken, VolumeError> {
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": service_account, "namespace": namespace},
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration.as_secs(),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name_any(),
                    "uid": pod.uid().unwrap_or_default(),
                },
            },
        });
        // Read as JSON: the generated type's field optionality differs between Kubernetes
        // versions.
        let answer: serde_json::Value = api
            .create_subresource(service_account, "token", &PostParams::default(), &request)
            .await
            .map_err(|e| VolumeError::Token(e.to_string()))?;
        let status = &answer["status"];
        let token = status["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                VolumeError::Token("the TokenRequest came back without a token".into())
            })?;
        let expires = status["expirationTimestamp"]
            .as_str()
            .and_then(|t| serde_json::from_value::<Time>(serde_json::Value::String(t.into())).ok())
            .ok_or_else(|| {
                VolumeError::Token("the TokenRequest came back without an expiry".into())
            })?;
        Ok(IssuedToken {
            token: token.to_string(),
            expires: expires.0.into(),
        })
    }
}

/// The kubelet's volume manager for one node.
pub(crate) struct VolumeManager {
    root: PathBuf,
    client: Arc<dyn Client>,
    tokens: Option<Arc<dyn TokenSource>>,
    /// When each Pod's volumes must be written again (token refresh), by uid.
    refresh: Mutex<HashMap<String, SystemTime>>,
}

/// Where one Pod's volumes are on the host, by volume name.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodVolumes {
    paths: BTreeMap<String, PathBuf>,
}

impl VolumeManager {
    pub(crate) fn new(
        root: PathBuf,
        client: Arc<dyn Client>,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        VolumeManager {
            root,
            client,
            tokens,
            refresh: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of the Pod with `uid`.
    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// Whether the Pod's volumes are due to be written again (a token nears its expiry).
    pub(crate) fn needs_refresh(&self, uid: &str, now: SystemTime) -> bool {
        self.refresh.lock().get(uid).is_some_and(|due| now >= *due)
    }

    /// When the Pod's volumes are next due (for the pod worker's wake-up).
    pub(crate) fn next_refresh(&self, uid: &str) -> Option<SystemTime> {
        self.refresh.lock().get(uid).copied()
    }

    /// Sets up (or brings up to date) every volume of `pod`. Idempotent: files whose content
    /// did not change are not rewritten.
    pub(crate) async fn set_up(
        &self,
        pod: &Pod,
        now: SystemTime,
    ) -> Result<PodVolumes, VolumeError> {
        let uid = pod.uid().unwrap_or_default();
        let mut volumes = PodVolumes::default();
        let mut due: Option<SystemTime> = None;
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let resolved = self
                .resolve(pod, volume, now, &mut due)
                .await
                .map_err(|source| VolumeError::SetUp {
                    volume: volume.name.clone(),
                    source: Box::new(source),
                })?;
            let Some((plugin, files)) = resolved else {
                continue;
            };
            let dir = self
                .pod_dir(&uid)
                .join("volumes")
                .join(plugin)
                .join(&volume.name);
            let io = |e: std::io::Error| VolumeError::Io {
                volume: volume.name.clone(),
                message: e.to_string(),
            };
            match files {
                Some(files) => {
                    atomic_writer::write(&dir, &files, now).map_err(io)?;
                }
                None => std::fs::create_dir_all(&dir).map_err(io)?,
            }
            volumes.paths.insert(volume.name.clone(), dir);
        }
        let mut refresh = self.refresh.lock();
        match due {
            Some(due) => refresh.insert(uid, due),
            None => refresh.remove(&uid),
        };
        Ok(volumes)
    }

    /// The plugin directory name and the files of one volume (`None`: a plain directory);
    /// `Ok(None)` for a volume type this kubelet leaves alone.
    async fn resolve(
        &self,
        pod: &Pod,
        volume: &Volume,
        now: SystemTime,
        due: &mut Option<SystemTime>,
    ) -> Result<Option<(&'static str, Option<Vec<FileContent>>)>, VolumeError> {
        let namespace = pod.namespace().unwrap_or_default();
        let resolver = sources::Resolver {
            client: &self.client,
            namespace: &namespace,
            pod,
        };
        if volume.empty_dir.is_some() {
            return Ok(Some(("kubernetes.io~empty-dir", None)));
        }
        if let Some(projected) = &volume.projected {
            let mut files = Vec::new();
            let default_mode = projected.default_mode.unwrap_or(0o644) as u32;
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let Some(tokens) = &self.tokens else {
                        return Err(VolumeError::Token(
                            "this kubelet has no token source".into(),
                        ));
                    };
                    let expiration = Duration::from_secs(
                        token.expiration_seconds.unwrap_or(3600).max(600) as u64,
                    );
                    let audiences: Vec<String> = token.audience.iter().cloned().collect();
                    let service_account = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "default".into());
                    let issued = tokens
                        .token(pod, &service_account, &audiences, expiration)
                        .await?;
                    let lifetime = issued.expires.duration_since(now).unwrap_or_default();
                    let refresh_at =
                        now + (lifetime.mul_f64(0.8)).min(Duration::from_secs(24 * 3600));
                    *due = Some(due.map_or(refresh_at, |d| d.min(refresh_at)));
                    files.push(FileContent {
                        path: token.path.clone(),
                        data: issued.token.into_bytes(),
                        mode: default_mode,
                    });
                }
                if let Some(config_map) = &source.config_map {
                    files.extend(
                        resolver
                            .config_map(
                                config_map.name.as_str(),
                                config_map.items.as_deref(),
                                config_map.optional.unwrap_or(false),
                                default_mode,
                            )
                            .await?,
                    );
                }
                if let Some(secret) = &source.secret {
                    files.extend(
                        resolver
                            .secret(
                                secret.name.as_str(),
                                secret.items.as_deref(),
                                secret.optional.unwrap_or(false),
                                default_mode,
                            )
                            .await?,
                    );
                }
                if let Some(downward) = &source.downward_api {
                    files.extend(resolver.downward_api(downward.items.as_deref(), default_mode)?);
                }
            }
            return Ok(Some(("kubernetes.io~projected", Some(files))));
        }
        if let Some(config_map) = &volume.config_map {
            let mode = config_map.default_mode.unwrap_or(0o644) as u32;
            let files = resolver
                .config_map(
                    config_map.name.as_str(),
                    config_map.items.as_deref(),
                    config_map.optional.unwrap_or(false),
                    mode,
                )
                .await?;
            return Ok(Some(("kubernetes.io~configmap", Some(files))));
        }
        if let Some(secret) = &volume.secret {
            let mode = secret.default_mode.unwrap_or(0o644) as u32;
            let name = secret.secret_name.clone().unwrap_or_default();
            let files = resolver
                .secret(
                    &name,
                    secret.items.as_deref(),
                    secret.optional.unwrap_or(false),
                    mode,
                )
                .await?;
            return Ok(Some(("kubernetes.io~secret", Some(files))));
        }
        if let Some(downward) = &volume.downward_api {
            let mode = downward.default_mode.unwrap_or(0o644) as u32;
            let files = resolver.downward_api(downward.items.as_deref(), mode)?;
            return Ok(Some(("kubernetes.io~downward-api", Some(files))));
        }
        Ok(None)
    }

    /// The uids of the Pods that have a directory here.
    pub(crate) fn pod_uids(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("pods"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the Pod's directory (after its containers are gone). Idempotent.
    pub(crate) fn tear_down(&self, uid: &str) {
        self.refresh.lock().remove(uid);
        let dir = self.pod_dir(uid);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "removing a pod's volumes");
            }
        }
    }
}

impl PodVolumes {
    /// The bind mounts of `container`'s `volumeMounts` (with `subPath`), read-only where the
    /// mount says so or the volume is one of the read-only kinds (projected, ConfigMap,
    /// Secret, downward API). A mount of a volume the kubelet did not set up is an error,
    /// unless the volume is of a kind it leaves alone (then the mount is skipped).
    pub(crate) fn mounts(
        &self,
        pod: &Pod,
        container: &Container,
    ) -> Result<Vec<rt::Mount>, VolumeError> {
        let defined: BTreeMap<&str, &Volume> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| (v.name.as_str(), v))
            .collect();
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let Some(volume) = defined.get(mount.name.as_str()) else {
                return Err(VolumeError::Invalid(format!(
                    "volume {:?} mounted by container {:?} is not defined by the pod",
                    mount.name, container.name
                )));
            };
            let Some(dir) = self.paths.get(&mount.name) else {
                continue;
            };
            let mut host = dir.clone();
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if !atomic_writer::valid_path(sub_path) {
                    return Err(VolumeError::Invalid(format!(
                        "subPath {sub_path:?} of volume {:?} must be a relative path without '..'",
                        mount.name
                    )));
                }
                host = host.join(sub_path);
            }
            let read_only_kind = volume.projected.is_some()
                || volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.downward_api.is_some();
            let mut bind = rt::Mount::new(path_string(&host), mount.mount_path.clone());
            bind.readonly = mount.read_only.unwrap_or(false) || read_only_kind;
            mounts.push(bind);
        }
        Ok(mounts)
    }

    /// The host directory of volume `name`.
    #[cfg(test)]
    pub(crate) fn path(&self, name: &str) -> Option<&Path> {
        self.paths.get(name).map(PathBuf::as_path)
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests;
