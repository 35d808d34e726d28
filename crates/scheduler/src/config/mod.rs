//! kube-scheduler's configuration file: `apiVersion: kubescheduler.config.k8s.io/v1`,
//! `kind: KubeSchedulerConfiguration`, in YAML or JSON.
//!
//! [`KubeSchedulerConfiguration::load`] (or [`from_yaml`](KubeSchedulerConfiguration::from_yaml))
//! does what kube-scheduler does with `--config`:
//!
//! 1. **Strict decoding**: a field the kind does not have is refused
//!    (`strict decoding error: unknown field "profiles[0].schedulerNmae"`), every such field
//!    at once, in the plugins' typed arguments too; a value of the wrong type names its path.
//! 2. **Defaulting** as kube-scheduler's v1 defaults ([`set_defaults`]): one
//!    `default-scheduler` profile when none is given, the default plugins merged with each
//!    profile's `plugins` (kube-scheduler's `mergePlugins`: a `disabled` entry, or `"*"` for
//!    all, drops a default plugin; an `enabled` entry with a default's name replaces it in
//!    place; the others are appended), default arguments for the plugins that take them,
//!    `parallelism` 16, backoff 1 s to 10 s, leader election on the `kube-scheduler` Lease in
//!    `kube-system` (15 s, 10 s, 2 s).
//! 3. **Validation** with kube-scheduler's messages, every problem collected as a
//!    [`FieldError`] (`profiles[1].schedulerName: Duplicate value: ...`,
//!    `percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100]`).
//!
//! [`KubeSchedulerConfiguration::frameworks`] then builds one
//! [`Framework`](crate::framework::Framework) per profile through a
//! [`PluginRegistry`](crate::framework::PluginRegistry) (the in-tree plugins and any the user
//! registered), expanding `multiPoint` per extension point as kube-scheduler's framework
//! does and reporting unknown plugins, plugins enabled at a point they do not implement, and
//! profiles without exactly one QueueSort plugin or without a Bind plugin as field errors.
//! [`Scheduler::from_config`](crate::Scheduler::from_config) runs the result.
//!
//! # What Capstan honours
//!
//! Everything above, plus `percentageOfNodesToScore` (global and per profile), `parallelism`
//! (a cap on the filtering threads, never more than the cores), `podInitialBackoffSeconds`
//! and `podMaxBackoffSeconds`, `leaderElection` (`leaderElect`, `leaseDuration`,
//! `renewDeadline`, `retryPeriod`, `resourceName`, `resourceNamespace`; the lock is always a
//! Lease), and the in-tree plugins' arguments: PodTopologySpread's `defaultingType` and
//! `defaultConstraints`, InterPodAffinity's `hardPodAffinityWeight` and
//! `ignorePreferredTermsOfExistingPods`, DefaultPreemption's `minCandidateNodesPercentage`
//! and `minCandidateNodesAbsolute`. Arguments of out-of-tree plugins are passed to their
//! factories as written.
//!
//! Accepted but without effect: `clientConnection` (components take a kubeconfig),
//! `enableProfiling`, `enableContentionProfiling`, and `delayCacheUntilActive` (a scheduler
//! fills its cache only once it leads anyway). Refused with a field error: `extenders`,
//! NodeResourcesFit's `ignoredResources`, `ignoredResourceGroups` and any scoring strategy
//! but `LeastAllocated` over cpu and memory with weight 1, NodeResourcesBalancedAllocation
//! over other resources, and NodeAffinity's `addedAffinity`. kube-scheduler plugins that
//! Capstan lacks (volume plugins, `SchedulingGates`, `DynamicResources`) may be disabled but
//! not enabled.
//!
//! [`set_defaults`]: KubeSchedulerConfiguration::set_defaults

mod args;
mod build;
mod defaults;
mod duration;
mod field;
mod strict;
mod validation;

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_controller::leader::LeaderElectionConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use args::{
    DefaultPreemptionArgs, InterPodAffinityArgs, NodeAffinityArgs,
    NodeResourcesBalancedAllocationArgs, NodeResourcesFitArgs, PluginArgs, PodTopologySpreadArgs,
    RequestedToCapacityRatioParam, ResourceSpec, ScoringStrategy, UtilizationShapePoint,
};
pub use defaults::default_plugins;
pub use duration::GoDuration;
pub use field::{BadValue, FieldError, FieldErrorType, FieldErrors};

/// The configuration's `apiVersion`.
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
/// The configuration's `kind`.
pub const KIND: &str = "KubeSchedulerConfiguration";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The text is neither YAML nor JSON (the parser's message, with its line and column).
    #[error("error converting YAML to JSON: {0}")]
    Syntax(String),
    /// `apiVersion` or `kind` is missing or is not `kubescheduler.config.k8s.io/v1`
    /// `KubeSchedulerConfiguration`.
    #[error("{0}")]
    Kind(String),
    /// A value has the wrong type: `<path>: <why>`.
    #[error("decoding the configuration: {0}")]
    Decode(String),
    /// Fields that the configuration's kinds do not have, by path (strict decoding).
    #[error("strict decoding error: {}", unknown_fields(.0))]
    UnknownFields(Vec<String>),
    /// The configuration is invalid: every problem found, with its field path.
    #[error("{0}")]
    Invalid(FieldErrors),
    /// The profiles' frameworks could not be put together (e.g. two with one name).
    #[error(transparent)]
    Build(crate::Error),
}

fn unknown_fields(paths: &[String]) -> String {
    let all: Vec<String> = paths
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    all.join(", ")
}

impl ConfigError {
    /// The field errors of an [`Invalid`](ConfigError::Invalid) configuration (none for the
    /// other variants).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => &errors.0,
            _ => &[],
        }
    }
}

/// kube-scheduler's `KubeSchedulerConfiguration` (v1). Unset fields are `None` (or empty)
/// until [`set_defaults`](Self::set_defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeSchedulerConfiguration {
    /// `kubescheduler.config.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `KubeSchedulerConfiguration`.
    #[serde(default)]
    pub kind: String,
    /// How many threads filter nodes at once, at most (default 16; Capstan uses no more
    /// than the cores).
    #[serde(default)]
    pub parallelism: Option<i32>,
    /// Leader election among the scheduler's replicas.
    #[serde(default)]
    pub leader_election: LeaderElectionConfiguration,
    /// The API connection (accepted; Capstan components take a kubeconfig instead).
    #[serde(default)]
    pub client_connection: ClientConnectionConfiguration,
    /// Accepted, without effect.
    #[serde(default)]
    pub enable_profiling: Option<bool>,
    /// Accepted, without effect.
    #[serde(default)]
    pub enable_contention_profiling: Option<bool>,
    /// The share of feasible nodes to find before scoring, for profiles that set none
    /// (`0..=100`; 0, the default, is Kubernetes' adaptive share).
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i32>,
    /// The first retry delay of a pod that failed an attempt, in seconds (default 1).
    #[serde(default)]
    pub pod_initial_backoff_seconds: Option<i64>,
    /// The longest retry delay, in seconds (default 10).
    #[serde(default)]
    pub pod_max_backoff_seconds: Option<i64>,
    /// The scheduling profiles, one per `spec.schedulerName`.
    #[serde(default)]
    pub profiles: Vec<KubeSchedulerProfile>,
    /// Scheduler extenders (refused: Capstan has none).
    #[serde(default)]
    pub extenders: Vec<Value>,
    /// Accepted, without effect (a Capstan scheduler fills its cache once it leads).
    #[serde(default)]
    pub delay_cache_until_active: bool,
}

/// component-base's `LeaderElectionConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionConfiguration {
    /// Whether replicas elect a leader (default true).
    #[serde(default)]
    pub leader_elect: Option<bool>,
    /// How long a Lease stays valid for the other candidates (default 15 s).
    #[serde(default)]
    pub lease_duration: GoDuration,
    /// How long the leader tries to renew before it stops leading (default 10 s).
    #[serde(default)]
    pub renew_deadline: GoDuration,
    /// How often candidates try (default 2 s).
    #[serde(default)]
    pub retry_period: GoDuration,
    /// The lock's kind; only `leases` (the default).
    #[serde(default)]
    pub resource_lock: String,
    /// The Lease's name (default `kube-scheduler`).
    #[serde(default)]
    pub resource_name: String,
    /// The Lease's namespace (default `kube-system`).
    #[serde(default)]
    pub resource_namespace: String,
}

/// component-base's `ClientConnectionConfiguration` (accepted, without effect).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnectionConfiguration {
    /// A kubeconfig path.
    #[serde(default)]
    pub kubeconfig: String,
    /// Accepted content types.
    #[serde(default)]
    pub accept_content_types: String,
    /// The content type sent.
    #[serde(default)]
    pub content_type: String,
    /// Queries per second.
    #[serde(default)]
    pub qps: f32,
    /// Burst of queries (must not be negative).
    #[serde(default)]
    pub burst: i32,
}

/// kube-scheduler's `KubeSchedulerProfile`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeSchedulerProfile {
    /// The `spec.schedulerName` this profile serves (`default-scheduler` by default when
    /// there is a single profile; required otherwise).
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// The share of feasible nodes to find before scoring (`0..=100`), overriding the
    /// global one.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i32>,
    /// The plugins enabled and disabled per extension point, merged with the defaults.
    #[serde(default)]
    pub plugins: Option<Plugins>,
    /// Plugin arguments, by plugin name.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfigEntry>,
}

/// kube-scheduler's `Plugins`: the plugins per extension point. `multiPoint` enables a
/// plugin at every point it implements; a point's own list overrides it there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    /// PreEnqueue.
    #[serde(default)]
    pub pre_enqueue: PluginSet,
    /// QueueSort (one plugin, the same for every profile).
    #[serde(default)]
    pub queue_sort: PluginSet,
    /// PreFilter.
    #[serde(default)]
    pub pre_filter: PluginSet,
    /// Filter.
    #[serde(default)]
    pub filter: PluginSet,
    /// PostFilter.
    #[serde(default)]
    pub post_filter: PluginSet,
    /// PreScore.
    #[serde(default)]
    pub pre_score: PluginSet,
    /// Score (with weights).
    #[serde(default)]
    pub score: PluginSet,
    /// Reserve.
    #[serde(default)]
    pub reserve: PluginSet,
    /// Permit.
    #[serde(default)]
    pub permit: PluginSet,
    /// PreBind.
    #[serde(default)]
    pub pre_bind: PluginSet,
    /// Bind.
    #[serde(default)]
    pub bind: PluginSet,
    /// PostBind.
    #[serde(default)]
    pub post_bind: PluginSet,
    /// Every point each plugin implements.
    #[serde(default)]
    pub multi_point: PluginSet,
}

impl Plugins {
    /// The per-point sets (not `multiPoint`), in cycle order: the field's name in the file,
    /// the extension point's name (as [`Framework::plugins_at`](crate::framework::Framework::plugins_at)
    /// takes it) and the set.
    pub fn extension_points(&self) -> [(&'static str, &'static str, &PluginSet); 12] {
        [
            ("preEnqueue", "PreEnqueue", &self.pre_enqueue),
            ("queueSort", "QueueSort", &self.queue_sort),
            ("preFilter", "PreFilter", &self.pre_filter),
            ("filter", "Filter", &self.filter),
            ("postFilter", "PostFilter", &self.post_filter),
            ("preScore", "PreScore", &self.pre_score),
            ("score", "Score", &self.score),
            ("reserve", "Reserve", &self.reserve),
            ("permit", "Permit", &self.permit),
            ("preBind", "PreBind", &self.pre_bind),
            ("bind", "Bind", &self.bind),
            ("postBind", "PostBind", &self.post_bind),
        ]
    }

    fn sets_mut(&mut self) -> [&mut PluginSet; 13] {
        [
            &mut self.multi_point,
            &mut self.pre_enqueue,
            &mut self.queue_sort,
            &mut self.pre_filter,
            &mut self.filter,
            &mut self.post_filter,
            &mut self.pre_score,
            &mut self.score,
            &mut self.reserve,
            &mut self.permit,
            &mut self.pre_bind,
            &mut self.bind,
            &mut self.post_bind,
        ]
    }
}

/// kube-scheduler's `PluginSet`: plugins enabled and disabled at one extension point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSet {
    /// Enabled, in the order they run (after the default plugins they do not replace).
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Default plugins disabled; `"*"` disables them all.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// kube-scheduler's `Plugin`: a plugin's name and, for Score, its weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    /// The registered name.
    #[serde(default)]
    pub name: String,
    /// The Score weight (unset or 0 means 1; must not be negative).
    #[serde(default)]
    pub weight: Option<i32>,
}

impl PluginRef {
    /// `name` without a weight.
    pub fn new(name: impl Into<String>) -> Self {
        PluginRef {
            name: name.into(),
            weight: None,
        }
    }

    /// `name` with a Score weight.
    pub fn weighted(name: impl Into<String>, weight: i32) -> Self {
        PluginRef {
            name: name.into(),
            weight: Some(weight),
        }
    }
}

/// kube-scheduler's `PluginConfig`: one plugin's arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfigEntry {
    /// The plugin's name.
    #[serde(default)]
    pub name: String,
    /// Its arguments: for the in-tree plugins, their typed [`PluginArgs`] (`apiVersion` and
    /// `kind` optional); for others, whatever their factory reads.
    #[serde(default)]
    pub args: Value,
}

impl KubeSchedulerConfiguration {
    /// Reads `path`, then [`from_yaml`](Self::from_yaml).
    ///
    /// Errors: [`ConfigError::Read`], or as [`from_yaml`](Self::from_yaml).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Decodes (strictly), defaults and validates a configuration written in YAML or JSON.
    ///
    /// Errors: [`ConfigError::Syntax`], [`Kind`](ConfigError::Kind),
    /// [`Decode`](ConfigError::Decode), [`UnknownFields`](ConfigError::UnknownFields) or
    /// [`Invalid`](ConfigError::Invalid).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::decode(text)?;
        config.set_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Decodes strictly, without defaulting or validating.
    ///
    /// Errors: [`ConfigError::Syntax`], [`Kind`](ConfigError::Kind),
    /// [`Decode`](ConfigError::Decode) or [`UnknownFields`](ConfigError::UnknownFields).
    pub fn decode(text: &str) -> Result<Self, ConfigError> {
        let mut value: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        strict::drop_nulls(&mut value, Some("args"));
        let compact = || value.to_string();
        let Value::Object(object) = &value else {
            return Err(ConfigError::Kind(format!(
                "Object 'Kind' is missing in '{}'",
                compact()
            )));
        };
        let kind = match object.get("kind") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => {
                return Err(ConfigError::Kind(format!(
                    "Object 'Kind' is missing in '{}'",
                    compact()
                )))
            }
        };
        let version = match object.get("apiVersion") {
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            _ => {
                return Err(ConfigError::Kind(format!(
                    "Object 'apiVersion' is missing in '{}'",
                    compact()
                )))
            }
        };
        if kind != KIND || version != API_VERSION {
            return Err(ConfigError::Kind(format!(
                "no kind {kind:?} is registered for version {version:?}"
            )));
        }
        let (config, mut unknown) = strict::decode::<KubeSchedulerConfiguration>(&value, "")
            .map_err(ConfigError::Decode)?;
        for (i, profile) in config.profiles.iter().enumerate() {
            for (j, entry) in profile.plugin_config.iter().enumerate() {
                let path = format!("profiles[{i}].pluginConfig[{j}].args");
                match PluginArgs::decode(&entry.name, &entry.args, &path) {
                    None | Some(Ok(_)) => {}
                    Some(Err(args::ArgsProblem::Decode(e))) => {
                        return Err(ConfigError::Decode(e));
                    }
                    Some(Err(args::ArgsProblem::Unknown(fields))) => unknown.extend(fields),
                }
            }
        }
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownFields(unknown));
        }
        Ok(config)
    }

    /// The configuration with nothing set, defaulted: what kube-scheduler runs without
    /// `--config`.
    pub fn defaulted() -> Self {
        let mut config = KubeSchedulerConfiguration {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            ..Default::default()
        };
        config.set_defaults();
        config
    }

    /// Checks the configuration as kube-scheduler does, collecting every problem.
    ///
    /// Errors: [`ConfigError::Invalid`] listing them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = validation::validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The retry backoff of pods that failed an attempt: `podInitialBackoffSeconds` and
    /// `podMaxBackoffSeconds` (1 s and 10 s when unset or not positive).
    pub fn pod_backoff(&self) -> (Duration, Duration) {
        let seconds = |v: Option<i64>, default: u64| {
            Duration::from_secs(
                v.and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s > 0)
                    .unwrap_or(default),
            )
        };
        (
            seconds(self.pod_initial_backoff_seconds, 1),
            seconds(self.pod_max_backoff_seconds, 10),
        )
    }

    /// `parallelism` (16 when unset or not positive).
    pub fn parallelism(&self) -> usize {
        self.parallelism
            .and_then(|p| usize::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(defaults::PARALLELISM as usize)
    }

    /// The leader election the configuration asks for: `None` with `leaderElect: false`;
    /// otherwise the Lease's name and namespace and its timing (with Kubernetes' defaults
    /// for unset or non-positive durations).
    pub fn leader_election(&self) -> Option<LeaseSettings> {
        let le = &self.leader_election;
        if le.leader_elect == Some(false) {
            return None;
        }
        let duration = |d: GoDuration, default: Duration| {
            d.to_std().filter(|d| !d.is_zero()).unwrap_or(default)
        };
        let config = LeaderElectionConfig::default()
            .lease_duration(duration(le.lease_duration, Duration::from_secs(15)))
            .renew_deadline(duration(le.renew_deadline, Duration::from_secs(10)))
            .retry_period(duration(le.retry_period, Duration::from_secs(2)));
        let or = |v: &str, default: &str| {
            if v.is_empty() {
                default.to_owned()
            } else {
                v.to_owned()
            }
        };
        Some(LeaseSettings {
            name: or(&le.resource_name, defaults::LEASE_NAME),
            namespace: or(&le.resource_namespace, defaults::LEASE_NAMESPACE),
            config,
        })
    }
}

/// Where and how a scheduler's replicas elect their leader; see
/// [`KubeSchedulerConfiguration::leader_election`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name (`resourceName`).
    pub name: String,
    /// The Lease's namespace (`resourceNamespace`).
    pub namespace: String,
    /// Its timing (`leaseDuration`, `renewDeadline`, `retryPeriod`).
    pub config: LeaderElectionConfig,
}
