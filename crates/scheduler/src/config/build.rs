//! One [`Framework`] per profile, as kube-scheduler's `NewFramework` builds it: each
//! extension point's own `enabled` list, then `multiPoint` expanded onto every point its
//! plugins implement (where the point's list does not already name them and does not
//! disable them), Score weights from `score` then `multiPoint`.

use std::collections::{HashMap, HashSet};

use super::field::{BadValue, FieldError, FieldErrors};
use super::{ConfigError, KubeSchedulerConfiguration, KubeSchedulerProfile};
use crate::framework::{Framework, Plugin, PluginRegistry};

/// The plugins of one profile per extension point, before the framework is assembled.
struct Resolved {
    plugins: Vec<Plugin>,
    points: Vec<(&'static str, Vec<String>)>,
    weights: HashMap<String, i64>,
    queue_sort: Option<String>,
}

fn implements(plugin: &Plugin, point: &str) -> bool {
    plugin.extension_points().contains(&point)
}

/// Builds the plugins `profile` (at `path`) enables, and lists them per extension point.
fn resolve(
    path: &str,
    profile: &KubeSchedulerProfile,
    registry: &PluginRegistry,
    errs: &mut FieldErrors,
) -> Option<Resolved> {
    let before = errs.0.len();
    let name = profile.scheduler_name.clone().unwrap_or_default();
    let plugins = profile.plugins.clone().unwrap_or_default();
    let multi_point = &plugins.multi_point;

    // Build every plugin enabled somewhere, once, with its arguments.
    let mut built: HashMap<String, Plugin> = HashMap::new();
    let mut unknown: HashSet<&str> = HashSet::new();
    let args_of = |plugin: &str| {
        profile
            .plugin_config
            .iter()
            .position(|c| c.name == plugin)
            .map(|j| (j, &profile.plugin_config[j].args))
    };
    let mut enabled: Vec<(String, &str)> = multi_point
        .enabled
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("{path}.plugins.multiPoint.enabled[{i}]"),
                p.name.as_str(),
            )
        })
        .collect();
    for (key, _, set) in plugins.extension_points() {
        enabled.extend(set.enabled.iter().enumerate().map(|(i, p)| {
            (
                format!("{path}.plugins.{key}.enabled[{i}]"),
                p.name.as_str(),
            )
        }));
    }
    for (_, plugin) in &enabled {
        if built.contains_key(*plugin) || unknown.contains(plugin) {
            continue;
        }
        if !registry.contains(plugin) {
            unknown.insert(plugin);
            continue;
        }
        let (at, args) = match args_of(plugin) {
            Some((j, args)) => (format!("{path}.pluginConfig[{j}].args"), args.clone()),
            None => (format!("{path}.plugins"), serde_json::Value::Null),
        };
        match registry.build(plugin, &args) {
            Ok(p) => {
                built.insert((*plugin).to_owned(), p);
            }
            Err(e) => errs.push(FieldError::invalid(
                at,
                BadValue::Omitted,
                format!("initializing plugin {plugin:?}: {e}"),
            )),
        }
    }

    // Each point's own list (kube-scheduler's `updatePluginList`).
    let mut points: Vec<(&'static str, Vec<String>)> = Vec::new();
    for (key, point, set) in plugins.extension_points() {
        let mut list: Vec<String> = Vec::new();
        for (i, p) in set.enabled.iter().enumerate() {
            let at = format!("{path}.plugins.{key}.enabled[{i}]");
            if unknown.contains(p.name.as_str()) {
                errs.push(FieldError::invalid(
                    at,
                    p.name.as_str(),
                    format!("{point}Plugin {:?} does not exist", p.name),
                ));
                continue;
            }
            let Some(plugin) = built.get(&p.name) else {
                continue;
            };
            if !implements(plugin, point) {
                errs.push(FieldError::invalid(
                    at,
                    p.name.as_str(),
                    format!("plugin {:?} does not extend {point}Plugin plugin", p.name),
                ));
            } else if list.contains(&p.name) {
                errs.push(FieldError::invalid(
                    at,
                    p.name.as_str(),
                    format!(
                        "plugin {:?} already registered as \"{point}Plugin\"",
                        p.name
                    ),
                ));
            } else {
                list.push(p.name.clone());
            }
        }
        points.push((point, list));
    }
    for (i, p) in multi_point.enabled.iter().enumerate() {
        if unknown.contains(p.name.as_str()) {
            errs.push(FieldError::invalid(
                format!("{path}.plugins.multiPoint.enabled[{i}]"),
                p.name.as_str(),
                format!("plugin {:?} does not exist", p.name),
            ));
        }
    }

    // `multiPoint` onto each point (kube-scheduler's `expandMultiPointPlugins`): plugins the
    // point's list names keep their place first, then the multiPoint ones, then the rest of
    // the point's list.
    for ((_, _, set), (point, list)) in plugins.extension_points().into_iter().zip(&mut points) {
        let disabled: HashSet<&str> = set.disabled.iter().map(|p| p.name.as_str()).collect();
        if disabled.contains("*") {
            continue;
        }
        let mut overrides: HashSet<&str> = HashSet::new();
        let mut expanded: Vec<String> = Vec::new();
        for (i, p) in multi_point.enabled.iter().enumerate() {
            let Some(plugin) = built.get(&p.name) else {
                continue;
            };
            if !implements(plugin, point) || disabled.contains(p.name.as_str()) {
                continue;
            }
            if list.contains(&p.name) {
                overrides.insert(p.name.as_str());
                continue;
            }
            if expanded.contains(&p.name) {
                errs.push(FieldError::invalid(
                    format!("{path}.plugins.multiPoint.enabled[{i}]"),
                    p.name.as_str(),
                    format!(
                        "plugin {:?} already registered as \"{point}Plugin\"",
                        p.name
                    ),
                ));
                continue;
            }
            expanded.push(p.name.clone());
        }
        let (first, rest): (Vec<String>, Vec<String>) =
            list.drain(..).partition(|n| overrides.contains(n.as_str()));
        *list = first.into_iter().chain(expanded).chain(rest).collect();
    }

    let count = |point: &str| {
        points
            .iter()
            .find(|(p, _)| *p == point)
            .map_or(0, |(_, l)| l.len())
    };
    let queue_sorts = count("QueueSort");
    if errs.0.len() == before && queue_sorts != 1 {
        errs.push(FieldError::invalid(
            format!("{path}.plugins.queueSort"),
            BadValue::Omitted,
            format!(
                "only one queue sort plugin required for profile with scheduler name {name:?}, but got {queue_sorts}"
            ),
        ));
    }
    if errs.0.len() == before && count("Bind") == 0 {
        errs.push(FieldError::required(
            format!("{path}.plugins.bind"),
            format!("at least one bind plugin is needed for profile with scheduler name {name:?}"),
        ));
    }

    // Score weights: a point's own entry first, then multiPoint's; 0 (or unset) is 1.
    let mut weights = HashMap::new();
    for p in plugins.score.enabled.iter().chain(&multi_point.enabled) {
        if built.get(&p.name).is_some_and(|b| implements(b, "Score")) {
            weights
                .entry(p.name.clone())
                .or_insert_with(|| i64::from(p.weight.unwrap_or(0)).max(1));
        }
    }

    if errs.0.len() != before {
        return None;
    }
    let queue_sort = points
        .iter()
        .find(|(p, _)| *p == "QueueSort")
        .and_then(|(_, l)| l.first().cloned());
    // Keep the plugins in the order they were first enabled.
    let mut order: Vec<String> = Vec::new();
    for (_, plugin) in &enabled {
        if built.contains_key(*plugin) && !order.iter().any(|o| o == plugin) {
            order.push((*plugin).to_owned());
        }
    }
    let plugins = order.iter().filter_map(|n| built.remove(n)).collect();
    Some(Resolved {
        plugins,
        points,
        weights,
        queue_sort,
    })
}

impl KubeSchedulerConfiguration {
    /// Builds one [`Framework`] per profile from `registry`, in the profiles' order; call it
    /// on a defaulted, valid configuration (as [`load`](Self::load) returns). Each gets the
    /// profile's `percentageOfNodesToScore` (else the global one) and the `parallelism` cap.
    ///
    /// Errors: [`ConfigError::Invalid`] with every problem found: a plugin the registry does
    /// not have (`ScorePlugin "Foo" does not exist`), one enabled at a point it does not
    /// implement or twice at one point, arguments its factory refused, a profile without
    /// exactly one QueueSort plugin or without a Bind plugin, and profiles whose QueueSort
    /// plugins differ.
    pub fn frameworks(&self, registry: &PluginRegistry) -> Result<Vec<Framework>, ConfigError> {
        let mut errs = FieldErrors::default();
        let mut resolved = Vec::new();
        let mut first_queue_sort: Option<String> = None;
        for (i, profile) in self.profiles.iter().enumerate() {
            let path = format!("profiles[{i}]");
            let Some(r) = resolve(&path, profile, registry, &mut errs) else {
                continue;
            };
            let queue_sort = r.queue_sort.clone().unwrap_or_default();
            match &first_queue_sort {
                None => first_queue_sort = Some(queue_sort),
                Some(first) if *first != queue_sort => {
                    let name = profile.scheduler_name.as_deref().unwrap_or("");
                    errs.push(FieldError::invalid(
                        format!("{path}.plugins.queueSort"),
                        BadValue::Omitted,
                        format!(
                            "different queue sort plugins for profile {name:?}: {queue_sort:?}, first: {first:?}"
                        ),
                    ));
                }
                Some(_) => {}
            }
            resolved.push((profile, r));
        }
        if !errs.is_empty() {
            return Err(ConfigError::Invalid(errs));
        }
        let parallelism = self.parallelism();
        resolved
            .into_iter()
            .map(|(profile, r)| {
                let percentage = profile
                    .percentage_of_nodes_to_score
                    .or(self.percentage_of_nodes_to_score)
                    .and_then(|p| u32::try_from(p).ok());
                Framework::from_points(
                    profile.scheduler_name.clone().unwrap_or_default(),
                    percentage,
                    r.plugins,
                    &r.points,
                    &r.weights,
                )
                .map(|f| f.with_parallelism(parallelism))
                .map_err(ConfigError::Build)
            })
            .collect()
    }
}
