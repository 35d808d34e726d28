//! A container's configuration from the API: its environment variables and its expanded
//! `command` and `args`, built as the kubelet's `makeEnvironmentVariables` builds them.
//!
//! In order:
//!
//! 1. `envFrom`: every key of each ConfigMap's `data` or Secret's `data`, behind the source's
//!    `prefix`; a later source replaces an earlier one's key. A key that is no valid variable
//!    name is skipped, and the Pod gets a warning Event `InvalidEnvironmentVariableNames`
//!    (`Keys [1bad, a b] from the EnvFrom configMap ns/name were skipped since they are
//!    considered invalid environment variable names.`).
//! 2. `env`, in order, replacing what `envFrom` set: a literal `value` with its `$(VAR)`
//!    references [expanded](expansion) against the variables defined so far and the Services'
//!    variables; or `valueFrom`: `configMapKeyRef`, `secretKeyRef`, `fieldRef` (the Pod's
//!    name, namespace, uid, labels and annotations, `spec.nodeName`,
//!    `spec.serviceAccountName`, `status.hostIP(s)`, `status.podIP(s)`) or `resourceFieldRef`
//!    (a container's limits or requests over a `divisor`, rounded up; a missing CPU, memory or
//!    ephemeral-storage limit reads as the Node's allocatable).
//! 3. The Services' variables ([`MasterServiceEnv`](crate::service_env::MasterServiceEnv))
//!    that the container does not set itself.
//!
//! `command` and `args` are then expanded against the result. A ConfigMap, Secret or key that
//! is missing and not `optional` is an [`EnvError`]: the pod worker reports the container as
//! waiting with `CreateContainerConfigError` and the error's text, records a `Failed` Event,
//! and tries again on its next sync, so the container starts once the object appears.

mod expansion;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::kube_core::ResourceExt;
use capstan_api::quantity::{parse_quantity, ParsedQuantity};
use capstan_api::{Api, Client};

use crate::volumes::sources::{field_value, Resolver};
use crate::volumes::VolumeError;

pub(crate) use expansion::expand;

/// The reason of the warning Event for `envFrom` keys that are no valid variable names.
pub(crate) const INVALID_NAMES_REASON: &str = "InvalidEnvironmentVariableNames";

/// Why a container's configuration could not be built. The pod worker shows the text as the
/// `CreateContainerConfigError` message and retries on its next sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    /// A ConfigMap or Secret that is not `optional` does not exist (`configmap "app" not
    /// found`), or lacks the key asked for (`couldn't find key k in ConfigMap ns/app`).
    /// Resolves itself once the object (or key) is created.
    #[error("{0}")]
    Missing(String),
    /// The API server could not be asked; retryable.
    #[error("{0}")]
    Api(String),
    /// A `fieldRef` or `resourceFieldRef` that cannot be resolved (an unsupported path, an
    /// unknown container, no host IP).
    #[error("{0}")]
    Invalid(String),
}

impl From<VolumeError> for EnvError {
    fn from(error: VolumeError) -> Self {
        match error {
            VolumeError::MissingSource { message } => EnvError::Missing(message),
            VolumeError::Api(message) => EnvError::Api(message),
            other => EnvError::Invalid(other.to_string()),
        }
    }
}

/// What a container's environment is built from besides its Pod and its spec.
pub(crate) struct EnvInputs<'a> {
    /// The kubelet's API client: ConfigMaps, Secrets and the Node are read through it.
    pub(crate) client: &'a Arc<dyn Client>,
    /// The node's name (its Node's allocatable defaults missing limits).
    pub(crate) node_name: &'a str,
    /// The node's IP (`status.hostIP`); `None` makes a `fieldRef` to it an error.
    pub(crate) host_ip: Option<&'a str>,
    /// The Pod's IPs, primary first (`status.podIP`, `status.podIPs`).
    pub(crate) pod_ips: &'a [String],
    /// The Services' variables, from
    /// [`MasterServiceEnv::variables`](crate::service_env::MasterServiceEnv::variables).
    pub(crate) services: &'a [(String, String)],
}

/// A container's resolved configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerEnv {
    /// The environment: `envFrom` and `env` variables, then the Services' variables not set
    /// by them. Each name once.
    pub(crate) vars: Vec<(String, String)>,
    /// `command` with its references expanded.
    pub(crate) command: Vec<String>,
    /// `args` with their references expanded.
    pub(crate) args: Vec<String>,
    /// Messages of the warning Events [`INVALID_NAMES_REASON`] to record, one per `envFrom`
    /// source with invalid keys.
    pub(crate) warnings: Vec<String>,
}

/// Variables in the order they were first set; setting one again replaces its value.
#[derive(Default)]
struct Ordered {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Ordered {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&at) => self.vars[at].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&at| self.vars[at].1.as_str())
    }
}

/// The ConfigMaps and Secrets read for one container, each at most once.
struct Objects<'a> {
    resolver: Resolver<'a>,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Objects<'_> {
    /// The ConfigMap `name`; `None` when it is missing and `optional`.
    async fn config_map(
        &mut self,
        name: &str,
        optional: bool,
    ) -> Result<Option<&ConfigMap>, EnvError> {
        if !matches!(self.config_maps.get(name), Some(Some(_))) {
            let found = self
                .resolver
                .fetch::<ConfigMap>("configmap", name, optional)
                .await?;
            self.config_maps.insert(name.to_string(), found);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    /// The Secret `name`; `None` when it is missing and `optional`.
    async fn secret(&mut self, name: &str, optional: bool) -> Result<Option<&Secret>, EnvError> {
        if !matches!(self.secrets.get(name), Some(Some(_))) {
            let found = self
                .resolver
                .fetch::<Secret>("secret", name, optional)
                .await?;
            self.secrets.insert(name.to_string(), found);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }
}

/// A Secret's values as text: `data`, and `stringData` where a client left it.
fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone());
    }
    data
}

/// Builds `container`'s environment and expands its `command` and `args` (see the
/// [module docs](self)). Reads ConfigMaps, Secrets and, for a `resourceFieldRef`, the Node;
/// writes nothing, so calling it again is harmless.
///
/// Errors: [`EnvError::Missing`] for a missing ConfigMap, Secret or key that is not
/// `optional`, [`EnvError::Api`] when the API server fails, [`EnvError::Invalid`] for a
/// reference that cannot be resolved.
pub(crate) async fn resolve(
    inputs: &EnvInputs<'_>,
    pod: &Pod,
    container: &Container,
) -> Result<ContainerEnv, EnvError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut objects = Objects {
        resolver: Resolver {
            client: inputs.client,
            namespace: &namespace,
            pod,
        },
        config_maps: HashMap::new(),
        secrets: HashMap::new(),
    };
    let mut vars = Ordered::default();
    let mut warnings = Vec::new();

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let (kind, name, data) = if let Some(reference) = &source.config_map_ref {
            let optional = reference.optional == Some(true);
            let Some(config_map) = objects.config_map(&reference.name, optional).await? else {
                continue;
            };
            let data = config_map.data.clone().unwrap_or_default();
            ("configMap", &reference.name, data)
        } else if let Some(reference) = &source.secret_ref {
            let optional = reference.optional == Some(true);
            let Some(secret) = objects.secret(&reference.name, optional).await? else {
                continue;
            };
            ("secret", &reference.name, secret_data(secret))
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (key, value) in data {
            let key = format!("{prefix}{key}");
            if is_env_var_name(&key) {
                vars.set(key, value);
            } else {
                invalid.push(key);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    let services: HashMap<&str, &str> = inputs
        .services
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut allocatable: Option<BTreeMap<String, Quantity>> = None;
    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                vars.get(name).or_else(|| services.get(name).copied())
            })
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_ref_value(field, pod, inputs)?
            } else if let Some(resource) = &from.resource_field_ref {
                if allocatable.is_none() {
                    allocatable = Some(node_allocatable(inputs).await?);
                }
                let allocatable = allocatable.as_ref().expect("just read");
                resource_field_value(resource, pod, container, allocatable)?
            } else if let Some(key_ref) = &from.config_map_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(config_map) = objects.config_map(&key_ref.name, optional).await? else {
                    continue;
                };
                match config_map.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                    Some(value) => value.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::Missing(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key_ref.key, key_ref.name
                        )))
                    }
                }
            } else if let Some(key_ref) = &from.secret_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(secret) = objects.secret(&key_ref.name, optional).await? else {
                    continue;
                };
                match secret_data(secret).remove(&key_ref.key) {
                    Some(value) => value,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::Missing(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key_ref.key, key_ref.name
                        )))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        vars.set(var.name.clone(), value);
    }

    for (name, value) in inputs.services {
        if vars.get(name).is_none() {
            vars.set(name.clone(), value.clone());
        }
    }
    let lookup = |name: &str| vars.get(name);
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand(item, lookup))
            .collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);
    Ok(ContainerEnv {
        vars: vars.vars,
        command,
        args,
        warnings,
    })
}

/// Whether `name` is a valid variable name as Kubernetes checks `envFrom` keys
/// (`IsEnvVarName`): `[-._a-zA-Z][-._a-zA-Z0-9]*`, neither `.` nor `..` nor starting with `..`.
pub(crate) fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    allowed(first)
        && chars.all(|c| allowed(c) || c.is_ascii_digit())
        && name != "."
        && !name.starts_with("..")
}

/// The paths a `fieldRef` may name (Kubernetes' `ConvertDownwardAPIFieldLabel`).
const FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The value of a `fieldRef` for `pod` (the kubelet's `podFieldSelectorRuntimeValue`).
fn field_ref_value(
    selector: &ObjectFieldSelector,
    pod: &Pod,
    inputs: &EnvInputs<'_>,
) -> Result<String, EnvError> {
    if let Some(version) = selector.api_version.as_deref().filter(|v| !v.is_empty()) {
        if version != "v1" {
            return Err(EnvError::Invalid(format!(
                "unsupported pod version: {version}"
            )));
        }
    }
    let path = selector.field_path.as_str();
    let base = match path.strip_suffix("']").and_then(|p| p.split_once("['")) {
        Some((base, _)) if matches!(base, "metadata.annotations" | "metadata.labels") => base,
        Some(_) => "",
        None => path,
    };
    if !FIELD_PATHS.contains(&base) {
        return Err(EnvError::Invalid(format!(
            "field label not supported: {path}"
        )));
    }
    let spec = pod.spec.as_ref();
    let host_ip = || {
        inputs
            .host_ip
            .map(str::to_string)
            .ok_or_else(|| EnvError::Invalid("host IP unknown; known addresses: []".to_string()))
    };
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip()?,
        "status.podIP" => inputs.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => inputs.pod_ips.join(","),
        _ => field_value(pod, path)?,
    })
}

/// The Node's allocatable, which stands in for a container's missing limits.
async fn node_allocatable(inputs: &EnvInputs<'_>) -> Result<BTreeMap<String, Quantity>, EnvError> {
    let nodes: Api<Node> = Api::cluster(inputs.client.clone());
    match nodes.get(inputs.node_name).await {
        Ok(node) => Ok(node.status.and_then(|s| s.allocatable).unwrap_or_default()),
        Err(_) => Err(EnvError::Invalid(
            "failed to find node object, expected a node".to_string(),
        )),
    }
}

/// The limits Kubernetes fills in from the Node's allocatable when a container sets none.
const DEFAULTED_LIMITS: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// `container`'s limits with the missing (or zero) CPU, memory and ephemeral-storage limits
/// set to `allocatable` (Kubernetes' `MergeContainerResourceLimits`).
fn defaulted_limits(
    container: &Container,
    allocatable: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    for name in DEFAULTED_LIMITS {
        let unset = limits
            .get(*name)
            .is_none_or(|q| parse_quantity(&q.0).is_ok_and(|q| q.is_zero()));
        if unset {
            if let Some(amount) = allocatable.get(*name) {
                limits.insert(name.to_string(), amount.clone());
            }
        }
    }
    limits
}

/// The value of a `resourceFieldRef` (Kubernetes' `ExtractContainerResourceValue`): the
/// amount over the divisor (1 by default), rounded up; CPU counted in thousandths.
fn resource_field_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let spec = pod.spec.as_ref();
    let (limits, requests) = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => (
            defaulted_limits(container, allocatable),
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone()),
        ),
        Some(name) => {
            if let Some(c) = spec.and_then(|s| s.containers.iter().find(|c| c.name == name)) {
                (
                    defaulted_limits(c, allocatable),
                    c.resources.as_ref().and_then(|r| r.requests.clone()),
                )
            } else if let Some(c) = spec
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == name))
            {
                // Init containers named by another container are not defaulted.
                let resources = c.resources.clone().unwrap_or_default();
                (resources.limits.unwrap_or_default(), resources.requests)
            } else {
                return Err(EnvError::Invalid(format!("container {name} not found")));
            }
        }
    };
    let requests = requests.unwrap_or_default();
    let unsupported = || {
        EnvError::Invalid(format!(
            "unsupported container resource : {}",
            selector.resource
        ))
    };
    let (map, name) = match selector.resource.split_once('.') {
        Some(("limits", name)) => (&limits, name),
        Some(("requests", name)) => (&requests, name),
        _ => return Err(unsupported()),
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(unsupported());
    }
    let quantity = |q: Option<&Quantity>| -> Result<ParsedQuantity, EnvError> {
        let text = q.map_or("0", |q| q.0.as_str());
        parse_quantity(text).map_err(|e| EnvError::Invalid(format!("quantity {text:?}: {e}")))
    };
    let amount = quantity(map.get(name))?;
    let divisor = match quantity(selector.divisor.as_ref())? {
        d if d.is_zero() => parse_quantity("1").expect("a quantity"),
        d => d,
    };
    let (amount, divisor) = if name == "cpu" {
        (amount.milli_value(), divisor.milli_value())
    } else {
        (amount.value(), divisor.value())
    };
    Ok(ceil_div(amount, divisor).to_string())
}

/// `amount / divisor` rounded up, computed as Kubernetes does (in floating point).
fn ceil_div(amount: i64, divisor: i64) -> i64 {
    let divisor = if divisor <= 0 { 1 } else { divisor };
    (amount as f64 / divisor as f64).ceil() as i64
}
