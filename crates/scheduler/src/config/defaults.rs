//! kube-scheduler's v1 defaults (`SetDefaults_KubeSchedulerConfiguration`,
//! `getDefaultPlugins`, `mergePlugins`).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::args::PluginArgs;
use super::{
    GoDuration, KubeSchedulerConfiguration, KubeSchedulerProfile, PluginConfigEntry, PluginRef,
    PluginSet, Plugins,
};
use crate::framework::DEFAULT_SCHEDULER_NAME;
use crate::plugins::{
    DEFAULT_PREEMPTION, IMAGE_LOCALITY, INTER_POD_AFFINITY, NODE_AFFINITY, NODE_NAME, NODE_PORTS,
    NODE_RESOURCES_BALANCED_ALLOCATION, NODE_RESOURCES_FIT, NODE_UNSCHEDULABLE,
    POD_TOPOLOGY_SPREAD, PRIORITY_SORT, TAINT_TOLERATION,
};
use crate::DEFAULT_BINDER;

/// The default `parallelism`.
pub(crate) const PARALLELISM: i32 = 16;
/// The default Lease name (`resourceName`).
pub(crate) const LEASE_NAME: &str = "kube-scheduler";
/// The default Lease namespace (`resourceNamespace`).
pub(crate) const LEASE_NAMESPACE: &str = "kube-system";

/// The default plugins: kube-scheduler's default `multiPoint` list, in its order and with
/// its weights, less the plugins Capstan does not have (SchedulingGates and the volume
/// plugins).
pub fn default_plugins() -> Plugins {
    let enabled = [
        (PRIORITY_SORT, None),
        (NODE_UNSCHEDULABLE, None),
        (NODE_NAME, None),
        (TAINT_TOLERATION, Some(3)),
        (NODE_AFFINITY, Some(2)),
        (NODE_PORTS, None),
        (NODE_RESOURCES_FIT, Some(1)),
        (POD_TOPOLOGY_SPREAD, Some(2)),
        (INTER_POD_AFFINITY, Some(2)),
        (DEFAULT_PREEMPTION, None),
        (NODE_RESOURCES_BALANCED_ALLOCATION, Some(1)),
        (IMAGE_LOCALITY, Some(1)),
        (DEFAULT_BINDER, None),
    ]
    .into_iter()
    .map(|(name, weight)| PluginRef {
        name: name.to_owned(),
        weight,
    })
    .collect();
    Plugins {
        multi_point: PluginSet {
            enabled,
            disabled: Vec::new(),
        },
        ..Plugins::default()
    }
}

/// kube-scheduler's `mergePluginSet`: the defaults less the disabled ones (all with `"*"`),
/// each replaced in place by a custom entry of the same name, then the other custom ones.
fn merge_set(defaults: &PluginSet, custom: &PluginSet) -> PluginSet {
    let mut disabled: Vec<PluginRef> = custom
        .disabled
        .iter()
        .map(|p| PluginRef::new(p.name.clone()))
        .collect();
    disabled.extend(
        defaults
            .disabled
            .iter()
            .map(|p| PluginRef::new(p.name.clone())),
    );
    let disabled_names: HashSet<&str> = disabled.iter().map(|p| p.name.as_str()).collect();
    let custom_by_name: HashMap<&str, (usize, &PluginRef)> = custom
        .enabled
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), (i, p)))
        .collect();
    let mut replaced = HashSet::new();
    let mut enabled = Vec::new();
    if !disabled_names.contains("*") {
        for default in &defaults.enabled {
            if disabled_names.contains(default.name.as_str()) {
                continue;
            }
            match custom_by_name.get(default.name.as_str()) {
                Some((i, custom)) => {
                    replaced.insert(*i);
                    enabled.push((*custom).clone());
                }
                None => enabled.push(default.clone()),
            }
        }
    }
    // Custom plugins that replaced none (a repeated one too: building the framework
    // refuses it).
    for (i, p) in custom.enabled.iter().enumerate() {
        if !replaced.contains(&i) {
            enabled.push(p.clone());
        }
    }
    PluginSet { enabled, disabled }
}

/// kube-scheduler's `mergePlugins`.
pub(crate) fn merge_plugins(defaults: Plugins, custom: Option<&Plugins>) -> Plugins {
    let Some(custom) = custom else {
        return defaults;
    };
    let mut merged = defaults;
    let mut custom = custom.clone();
    for (m, c) in merged.sets_mut().into_iter().zip(custom.sets_mut()) {
        *m = merge_set(m, c);
    }
    merged
}

/// Every plugin name enabled anywhere in `plugins`, sorted (kube-scheduler's `pluginsNames`).
fn enabled_names(plugins: &Plugins) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = plugins
        .multi_point
        .enabled
        .iter()
        .map(|p| p.name.clone())
        .collect();
    for (_, _, set) in plugins.extension_points() {
        names.extend(set.enabled.iter().map(|p| p.name.clone()));
    }
    names
}

fn set_profile_defaults(profile: &mut KubeSchedulerProfile) {
    let plugins = merge_plugins(default_plugins(), profile.plugins.as_ref());
    // Default the arguments given; arguments that do not decode are left for validation.
    let mut configured = HashSet::new();
    for entry in &mut profile.plugin_config {
        configured.insert(entry.name.clone());
        if let Some(Ok(mut args)) = PluginArgs::decode(&entry.name, &entry.args, "") {
            args.set_defaults();
            entry.args = args.to_value();
        }
    }
    // Then add the default arguments of enabled plugins that take some.
    for name in enabled_names(&plugins) {
        if configured.contains(&name) {
            continue;
        }
        if let Some(args) = PluginArgs::defaulted(&name) {
            profile.plugin_config.push(PluginConfigEntry {
                name,
                args: args.to_value(),
            });
        }
    }
    profile.plugins = Some(plugins);
}

impl KubeSchedulerConfiguration {
    /// Applies kube-scheduler's v1 defaults: `parallelism` 16; one profile when none is
    /// given, named `default-scheduler` when it is the only one and unnamed; each profile's
    /// plugins merged with [`default_plugins`] and default arguments added for the enabled
    /// plugins that take some (and defaults filled into the arguments given);
    /// `percentageOfNodesToScore` 0 (adaptive); a Lease lock named `kube-scheduler` in
    /// `kube-system`, 15 s / 10 s / 2 s, leader election on; backoff 1 s to 10 s.
    /// Idempotent.
    pub fn set_defaults(&mut self) {
        self.parallelism.get_or_insert(PARALLELISM);
        if self.profiles.is_empty() {
            self.profiles.push(KubeSchedulerProfile::default());
        }
        if self.profiles.len() == 1 && self.profiles[0].scheduler_name.is_none() {
            self.profiles[0].scheduler_name = Some(DEFAULT_SCHEDULER_NAME.to_owned());
        }
        // Merging is idempotent: a merged set holds every default it did not disable.
        for profile in &mut self.profiles {
            set_profile_defaults(profile);
        }
        self.percentage_of_nodes_to_score.get_or_insert(0);
        let le = &mut self.leader_election;
        for (value, default) in [
            (&mut le.resource_lock, "leases"),
            (&mut le.resource_namespace, LEASE_NAMESPACE),
            (&mut le.resource_name, LEASE_NAME),
        ] {
            if value.is_empty() {
                *value = default.to_owned();
            }
        }
        le.leader_elect.get_or_insert(true);
        for (value, seconds) in [
            (&mut le.lease_duration, 15),
            (&mut le.renew_deadline, 10),
            (&mut le.retry_period, 2),
        ] {
            if value.is_zero() {
                *value = GoDuration::from_secs(seconds);
            }
        }
        self.pod_initial_backoff_seconds.get_or_insert(1);
        self.pod_max_backoff_seconds.get_or_insert(10);
        self.enable_profiling.get_or_insert(true);
        if self.enable_profiling == Some(true) {
            self.enable_contention_profiling.get_or_insert(true);
        }
    }
}
