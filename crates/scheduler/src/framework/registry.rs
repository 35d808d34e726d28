//! Plugin factories, profiles, and the framework a profile builds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::interface::*;
use crate::error::{Error, Result};

/// One plugin instance with the extension points it takes part in.
///
/// Built with [`Plugin::builder`], which turns one `Arc<P>` into the trait objects of the
/// extension points `P` implements:
///
/// ```
/// # use std::sync::Arc;
/// # use capstan_scheduler::framework::*;
/// # use capstan_scheduler::k8s_openapi::api::core::v1::Pod;
/// struct AlwaysFits;
/// impl SchedulerPlugin for AlwaysFits {
///     fn name(&self) -> &str { "AlwaysFits" }
/// }
/// impl FilterPlugin for AlwaysFits {
///     fn filter(&self, _: &CycleState, _: &Pod, _: &NodeInfo) -> Status { Status::success() }
/// }
/// let plugin = Plugin::builder(Arc::new(AlwaysFits)).filter().build();
/// assert_eq!(plugin.name(), "AlwaysFits");
/// ```
#[derive(Clone)]
pub struct Plugin {
    name: String,
    pub(crate) pre_enqueue: Option<Arc<dyn PreEnqueuePlugin>>,
    pub(crate) queue_sort: Option<Arc<dyn QueueSortPlugin>>,
    pub(crate) pre_filter: Option<Arc<dyn PreFilterPlugin>>,
    pub(crate) filter: Option<Arc<dyn FilterPlugin>>,
    pub(crate) post_filter: Option<Arc<dyn PostFilterPlugin>>,
    pub(crate) pre_score: Option<Arc<dyn PreScorePlugin>>,
    pub(crate) score: Option<Arc<dyn ScorePlugin>>,
    pub(crate) reserve: Option<Arc<dyn ReservePlugin>>,
    pub(crate) permit: Option<Arc<dyn PermitPlugin>>,
    pub(crate) pre_bind: Option<Arc<dyn PreBindPlugin>>,
    pub(crate) bind: Option<Arc<dyn BindPlugin>>,
    pub(crate) post_bind: Option<Arc<dyn PostBindPlugin>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("extension_points", &self.extension_points())
            .finish()
    }
}

impl Plugin {
    /// Starts a plugin from its one instance.
    pub fn builder<P: SchedulerPlugin>(plugin: Arc<P>) -> PluginBuilder<P> {
        let name = plugin.name().to_owned();
        PluginBuilder {
            plugin,
            built: Plugin {
                name,
                pre_enqueue: None,
                queue_sort: None,
                pre_filter: None,
                filter: None,
                post_filter: None,
                pre_score: None,
                score: None,
                reserve: None,
                permit: None,
                pre_bind: None,
                bind: None,
                post_bind: None,
            },
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the extension points it takes part in, in cycle order.
    pub fn extension_points(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let points: [(&'static str, bool); 12] = [
            ("PreEnqueue", self.pre_enqueue.is_some()),
            ("QueueSort", self.queue_sort.is_some()),
            ("PreFilter", self.pre_filter.is_some()),
            ("Filter", self.filter.is_some()),
            ("PostFilter", self.post_filter.is_some()),
            ("PreScore", self.pre_score.is_some()),
            ("Score", self.score.is_some()),
            ("Reserve", self.reserve.is_some()),
            ("Permit", self.permit.is_some()),
            ("PreBind", self.pre_bind.is_some()),
            ("Bind", self.bind.is_some()),
            ("PostBind", self.post_bind.is_some()),
        ];
        for (name, on) in points {
            if on {
                v.push(name);
            }
        }
        v
    }
}

/// Declares the extension points of one plugin instance; see [`Plugin::builder`].
pub struct PluginBuilder<P> {
    plugin: Arc<P>,
    built: Plugin,
}

macro_rules! point {
    ($(#[$doc:meta])* $method:ident, $field:ident, $trait:ident) => {
        impl<P: $trait> PluginBuilder<P> {
            $(#[$doc])*
            pub fn $method(mut self) -> Self {
                self.built.$field = Some(self.plugin.clone() as Arc<dyn $trait>);
                self
            }
        }
    };
}

point!(
    /// Takes part in PreEnqueue.
    pre_enqueue, pre_enqueue, PreEnqueuePlugin
);
point!(
    /// Takes part in QueueSort.
    queue_sort, queue_sort, QueueSortPlugin
);
point!(
    /// Takes part in PreFilter.
    pre_filter, pre_filter, PreFilterPlugin
);
point!(
    /// Takes part in Filter.
    filter, filter, FilterPlugin
);
point!(
    /// Takes part in PostFilter.
    post_filter, post_filter, PostFilterPlugin
);
point!(
    /// Takes part in PreScore.
    pre_score, pre_score, PreScorePlugin
);
point!(
    /// Takes part in Score (and NormalizeScore).
    score, score, ScorePlugin
);
point!(
    /// Takes part in Reserve and Unreserve.
    reserve, reserve, ReservePlugin
);
point!(
    /// Takes part in Permit.
    permit, permit, PermitPlugin
);
point!(
    /// Takes part in PreBind.
    pre_bind, pre_bind, PreBindPlugin
);
point!(
    /// Takes part in Bind.
    bind, bind, BindPlugin
);
point!(
    /// Takes part in PostBind.
    post_bind, post_bind, PostBindPlugin
);

impl<P> PluginBuilder<P> {
    /// The finished plugin.
    pub fn build(self) -> Plugin {
        self.built
    }
}

/// Builds a plugin from its profile arguments (`null` when the profile gives none).
pub type PluginFactory = Arc<dyn Fn(&serde_json::Value) -> Result<Plugin> + Send + Sync>;

/// Plugin factories by name: the default plugins plus the user's own.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    factories: HashMap<String, PluginFactory>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.factories.keys().collect();
        names.sort();
        f.debug_struct("PluginRegistry")
            .field("plugins", &names)
            .finish()
    }
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory under `name`; a name registered twice is an error.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&serde_json::Value) -> Result<Plugin> + Send + Sync + 'static,
    ) -> Result<&mut Self> {
        let name = name.into();
        if self.factories.contains_key(&name) {
            return Err(Error::DuplicatePlugin(name));
        }
        self.factories.insert(name, Arc::new(factory));
        Ok(self)
    }

    /// Adds every factory of `other`; a name in both is an error.
    pub fn merge(&mut self, other: PluginRegistry) -> Result<&mut Self> {
        for (name, factory) in other.factories {
            if self.factories.contains_key(&name) {
                return Err(Error::DuplicatePlugin(name));
            }
            self.factories.insert(name, factory);
        }
        Ok(self)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Builds the plugin `name` with `args`.
    pub fn build(&self, name: &str, args: &serde_json::Value) -> Result<Plugin> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| Error::UnknownPlugin(name.to_owned()))?;
        let plugin = factory(args)?;
        if plugin.name() != name {
            return Err(Error::InvalidProfile(format!(
                "factory {name:?} built a plugin named {:?}",
                plugin.name()
            )));
        }
        Ok(plugin)
    }
}

/// One enabled plugin in a [`Profile`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// The registered name.
    pub name: String,
    /// The Score weight (ignored for plugins that do not score). `0` means 1, as in
    /// kube-scheduler; negative weights are refused.
    #[serde(default)]
    pub weight: i64,
    /// The arguments given to the factory.
    #[serde(default)]
    pub args: serde_json::Value,
}

impl PluginConfig {
    /// `name` with weight 1 and no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        PluginConfig {
            name: name.into(),
            weight: 0,
            args: serde_json::Value::Null,
        }
    }

    /// Sets the Score weight.
    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the arguments.
    pub fn args(mut self, args: serde_json::Value) -> Self {
        self.args = args;
        self
    }
}

/// A scheduler profile (kube-scheduler's `KubeSchedulerProfile` with `multiPoint`): each
/// enabled plugin takes part in every extension point it implements, in the order listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The `spec.schedulerName` this profile serves.
    pub scheduler_name: String,
    /// The enabled plugins, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Percentage of feasible nodes to find before scoring; `None` is Kubernetes' adaptive
    /// default.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
}

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

impl Profile {
    /// A profile named `scheduler_name` without plugins.
    pub fn new(scheduler_name: impl Into<String>) -> Self {
        Profile {
            scheduler_name: scheduler_name.into(),
            plugins: Vec::new(),
            percentage_of_nodes_to_score: None,
        }
    }

    /// Appends a plugin.
    pub fn with_plugin(mut self, plugin: PluginConfig) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Removes the plugin `name` (to disable a default plugin).
    pub fn without_plugin(mut self, name: &str) -> Self {
        self.plugins.retain(|p| p.name != name);
        self
    }
}

/// The plugins of one profile, arranged per extension point: what a scheduling cycle runs.
#[derive(Clone, Debug)]
pub struct Framework {
    profile_name: String,
    percentage_of_nodes_to_score: Option<u32>,
    parallelism: Option<usize>,
    pub(crate) plugins: Vec<Plugin>,
    pub(crate) pre_enqueue: Vec<(String, Arc<dyn PreEnqueuePlugin>)>,
    pub(crate) queue_sort: Option<Arc<dyn QueueSortPlugin>>,
    pub(crate) pre_filter: Vec<(String, Arc<dyn PreFilterPlugin>)>,
    pub(crate) filter: Vec<(String, Arc<dyn FilterPlugin>)>,
    pub(crate) post_filter: Vec<(String, Arc<dyn PostFilterPlugin>)>,
    pub(crate) pre_score: Vec<(String, Arc<dyn PreScorePlugin>)>,
    pub(crate) score: Vec<(String, Arc<dyn ScorePlugin>, i64)>,
    pub(crate) reserve: Vec<(String, Arc<dyn ReservePlugin>)>,
    pub(crate) permit: Vec<(String, Arc<dyn PermitPlugin>)>,
    pub(crate) pre_bind: Vec<(String, Arc<dyn PreBindPlugin>)>,
    pub(crate) bind: Vec<(String, Arc<dyn BindPlugin>)>,
    pub(crate) post_bind: Vec<(String, Arc<dyn PostBindPlugin>)>,
}

// Trait objects are not `Debug`; the framework prints the plugin names per point.
macro_rules! dbg_dyn {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for dyn $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
dbg_dyn!(
    PreEnqueuePlugin,
    QueueSortPlugin,
    PreFilterPlugin,
    FilterPlugin,
    PostFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    ReservePlugin,
    PermitPlugin,
    PreBindPlugin,
    BindPlugin,
    PostBindPlugin
);

impl Framework {
    /// Builds every plugin `profile` enables from `registry`.
    ///
    /// Errors: an unknown or repeated plugin, refused arguments, a negative weight, or more
    /// than one QueueSort plugin.
    pub fn new(registry: &PluginRegistry, profile: &Profile) -> Result<Framework> {
        let mut fw = Framework::empty(
            profile.scheduler_name.clone(),
            profile.percentage_of_nodes_to_score,
        );
        if let Some(p) = profile.percentage_of_nodes_to_score {
            if p > 100 {
                return Err(Error::InvalidProfile(format!(
                    "percentageOfNodesToScore {p} is over 100"
                )));
            }
        }
        let mut seen = HashSet::new();
        for cfg in &profile.plugins {
            if !seen.insert(cfg.name.as_str()) {
                return Err(Error::DuplicatePlugin(cfg.name.clone()));
            }
            if cfg.weight < 0 {
                return Err(Error::InvalidProfile(format!(
                    "plugin {:?} has a negative weight {}",
                    cfg.name, cfg.weight
                )));
            }
            let p = registry.build(&cfg.name, &cfg.args)?;
            let name = p.name().to_owned();
            let n = || name.clone();
            if let Some(q) = &p.queue_sort {
                if fw.queue_sort.is_some() {
                    return Err(Error::InvalidProfile(
                        "more than one QueueSort plugin is enabled".into(),
                    ));
                }
                fw.queue_sort = Some(q.clone());
            }
            macro_rules! push {
                ($($f:ident),*) => {$(
                    if let Some(x) = &p.$f {
                        fw.$f.push((n(), x.clone()));
                    }
                )*};
            }
            push!(
                pre_enqueue,
                pre_filter,
                filter,
                post_filter,
                pre_score,
                reserve,
                permit,
                pre_bind,
                bind,
                post_bind
            );
            if let Some(s) = &p.score {
                fw.score.push((n(), s.clone(), cfg.weight.max(1)));
            }
            fw.plugins.push(p);
        }
        Ok(fw)
    }

    /// A framework without plugins.
    fn empty(profile_name: String, percentage_of_nodes_to_score: Option<u32>) -> Framework {
        Framework {
            profile_name,
            percentage_of_nodes_to_score,
            parallelism: None,
            plugins: Vec::new(),
            pre_enqueue: Vec::new(),
            queue_sort: None,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            permit: Vec::new(),
            pre_bind: Vec::new(),
            bind: Vec::new(),
            post_bind: Vec::new(),
        }
    }

    /// Builds a framework from plugins already built, enabling each one only at the
    /// extension points `points` lists it under (kube-scheduler's per-point `enabled`
    /// lists, after `multiPoint` expansion): `points` gives, per point name (as
    /// [`Plugin::extension_points`] spells it), the plugin names in the order they run.
    /// `weights` are the Score weights (1 when missing or 0).
    ///
    /// Errors: a name not among `plugins`, a plugin listed at a point it does not
    /// implement, or more than one QueueSort plugin.
    pub(crate) fn from_points(
        profile_name: String,
        percentage_of_nodes_to_score: Option<u32>,
        plugins: Vec<Plugin>,
        points: &[(&str, Vec<String>)],
        weights: &HashMap<String, i64>,
    ) -> Result<Framework> {
        let mut fw = Framework::empty(profile_name, percentage_of_nodes_to_score);
        for (point, names) in points {
            for name in names {
                let p = plugins
                    .iter()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| Error::UnknownPlugin(name.clone()))?;
                let missing = || {
                    Error::InvalidProfile(format!("plugin {name:?} does not extend {point}Plugin"))
                };
                macro_rules! push {
                    ($f:ident) => {
                        fw.$f
                            .push((name.clone(), p.$f.clone().ok_or_else(missing)?))
                    };
                }
                match *point {
                    "PreEnqueue" => push!(pre_enqueue),
                    "QueueSort" => {
                        if fw.queue_sort.is_some() {
                            return Err(Error::InvalidProfile(
                                "more than one QueueSort plugin is enabled".into(),
                            ));
                        }
                        fw.queue_sort = Some(p.queue_sort.clone().ok_or_else(missing)?);
                    }
                    "PreFilter" => push!(pre_filter),
                    "Filter" => push!(filter),
                    "PostFilter" => push!(post_filter),
                    "PreScore" => push!(pre_score),
                    "Score" => {
                        let s = p.score.clone().ok_or_else(missing)?;
                        let w = weights.get(name.as_str()).copied().unwrap_or(0);
                        if w < 0 {
                            return Err(Error::InvalidProfile(format!(
                                "plugin {name:?} has a negative weight {w}"
                            )));
                        }
                        fw.score.push((name.clone(), s, w.max(1)));
                    }
                    "Reserve" => push!(reserve),
                    "Permit" => push!(permit),
                    "PreBind" => push!(pre_bind),
                    "Bind" => push!(bind),
                    "PostBind" => push!(post_bind),
                    other => {
                        return Err(Error::InvalidProfile(format!(
                            "unknown extension point {other:?}"
                        )))
                    }
                }
            }
        }
        fw.plugins = plugins;
        Ok(fw)
    }

    /// Caps the threads that filter nodes in parallel (kube-scheduler's `parallelism`);
    /// by default, and never more than, one per core.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = Some(parallelism.max(1));
        self
    }

    /// The cap on filtering threads, if one was set.
    pub fn parallelism(&self) -> Option<usize> {
        self.parallelism
    }

    /// The profile's scheduler name.
    pub fn profile_name(&self) -> &str {
        &self.profile_name
    }

    /// The profile's `percentageOfNodesToScore`, if set.
    pub fn percentage_of_nodes_to_score(&self) -> Option<u32> {
        self.percentage_of_nodes_to_score
    }

    /// The enabled plugins, in profile order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// The names of the plugins enabled at `point` (`"Filter"`, `"Score"`, ...), in the
    /// order they run there.
    pub fn plugins_at(&self, point: &str) -> Vec<&str> {
        fn names<T: ?Sized>(v: &[(String, Arc<T>)]) -> Vec<&str> {
            v.iter().map(|(n, _)| n.as_str()).collect()
        }
        match point {
            "PreEnqueue" => names(&self.pre_enqueue),
            "QueueSort" => self.queue_sort.iter().map(|q| q.name()).collect(),
            "PreFilter" => names(&self.pre_filter),
            "Filter" => names(&self.filter),
            "PostFilter" => names(&self.post_filter),
            "PreScore" => names(&self.pre_score),
            "Score" => self.score.iter().map(|(n, _, _)| n.as_str()).collect(),
            "Reserve" => names(&self.reserve),
            "Permit" => names(&self.permit),
            "PreBind" => names(&self.pre_bind),
            "Bind" => names(&self.bind),
            "PostBind" => names(&self.post_bind),
            _ => Vec::new(),
        }
    }

    /// The Score weight of `plugin`, if it scores.
    pub fn score_weight(&self, plugin: &str) -> Option<i64> {
        self.score
            .iter()
            .find(|(n, _, _)| n == plugin)
            .map(|(_, _, w)| *w)
    }

    /// The QueueSort plugin, if one is enabled.
    pub fn queue_sort(&self) -> Option<&Arc<dyn QueueSortPlugin>> {
        self.queue_sort.as_ref()
    }
}
