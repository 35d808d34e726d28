//! kube-scheduler's `ValidateKubeSchedulerConfiguration`, with its messages.

use std::collections::{HashMap, HashSet};

use super::args::PluginArgs;
use super::field::{FieldError, FieldErrors};
use super::{KubeSchedulerConfiguration, KubeSchedulerProfile, PluginSet, API_VERSION};

/// Plugins removed from kube-scheduler by v1.
const INVALID_PLUGINS: [&str; 4] = [
    "AzureDiskLimits",
    "CinderLimits",
    "EBSLimits",
    "GCEPDLimits",
];

pub(crate) fn validate(cc: &KubeSchedulerConfiguration) -> FieldErrors {
    let mut errs = FieldErrors::default();
    if cc.client_connection.burst < 0 {
        errs.push(FieldError::invalid(
            "clientConnection.burst",
            cc.client_connection.burst,
            "must be non-negative",
        ));
    }
    validate_leader_election(cc, &mut errs);
    let parallelism = cc.parallelism.unwrap_or(0);
    if parallelism <= 0 {
        errs.push(FieldError::invalid(
            "parallelism",
            parallelism,
            "should be an integer value greater than zero",
        ));
    }
    if cc.profiles.is_empty() {
        errs.push(FieldError::required("profiles", ""));
    } else {
        let mut existing: HashMap<&str, usize> = HashMap::new();
        for (i, profile) in cc.profiles.iter().enumerate() {
            let path = format!("profiles[{i}]");
            validate_profile(&path, profile, &mut errs);
            let name = profile.scheduler_name.as_deref().unwrap_or("");
            if let Some(first) = existing.get(name) {
                errs.push(FieldError::duplicate(
                    format!("{path}.schedulerName"),
                    format!("profiles[{first}].schedulerName"),
                ));
            }
            existing.insert(name, i);
        }
        validate_common_queue_sort(&cc.profiles, &mut errs);
    }
    validate_percentage(
        "percentageOfNodesToScore",
        cc.percentage_of_nodes_to_score,
        &mut errs,
    );
    let initial = cc.pod_initial_backoff_seconds.unwrap_or(0);
    if initial <= 0 {
        errs.push(FieldError::invalid(
            "podInitialBackoffSeconds",
            initial,
            "must be greater than 0",
        ));
    }
    let max = cc.pod_max_backoff_seconds.unwrap_or(0);
    if max < initial {
        errs.push(FieldError::invalid(
            "podMaxBackoffSeconds",
            max,
            "must be greater than or equal to PodInitialBackoffSeconds",
        ));
    }
    if !cc.extenders.is_empty() {
        errs.push(FieldError::forbidden(
            "extenders",
            "scheduler extenders are not supported by Capstan",
        ));
    }
    errs
}

fn validate_leader_election(cc: &KubeSchedulerConfiguration, errs: &mut FieldErrors) {
    let le = &cc.leader_election;
    if le.leader_elect != Some(true) {
        return;
    }
    for (field, value) in [
        ("leaseDuration", le.lease_duration),
        ("renewDeadline", le.renew_deadline),
        ("retryPeriod", le.retry_period),
    ] {
        if value.as_nanos() <= 0 {
            errs.push(FieldError::invalid(
                format!("leaderElection.{field}"),
                super::BadValue::Plain(value.to_string()),
                "must be greater than zero",
            ));
        }
    }
    if le.lease_duration <= le.renew_deadline {
        // kube-scheduler prints the renew deadline here.
        errs.push(FieldError::invalid(
            "leaderElection.leaseDuration",
            super::BadValue::Plain(le.renew_deadline.to_string()),
            "must be greater than `RenewDeadline`",
        ));
    }
    for (field, value) in [
        ("resourceLock", &le.resource_lock),
        ("resourceNamespace", &le.resource_namespace),
        ("resourceName", &le.resource_name),
    ] {
        if value.is_empty() {
            errs.push(FieldError::required(format!("leaderElection.{field}"), ""));
        }
    }
    if le.resource_lock != "leases" {
        errs.push(FieldError::invalid(
            "leaderElection.resourceLock",
            le.resource_lock.as_str(),
            r#"resourceLock value must be "leases""#,
        ));
    }
}

fn validate_percentage(path: &str, value: Option<i32>, errs: &mut FieldErrors) {
    if let Some(p) = value {
        if !(0..=100).contains(&p) {
            errs.push(FieldError::invalid(path, p, "not in valid range [0-100]"));
        }
    }
}

fn invalid_plugin(path: String, name: &str) -> FieldError {
    FieldError::invalid(
        path,
        name,
        format!(
            "was invalid in version {API_VERSION:?} (KubeSchedulerConfiguration is version {API_VERSION:?})"
        ),
    )
}

fn validate_profile(path: &str, profile: &KubeSchedulerProfile, errs: &mut FieldErrors) {
    if profile.scheduler_name.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required(format!("{path}.schedulerName"), ""));
    }
    validate_percentage(
        &format!("{path}.percentageOfNodesToScore"),
        profile.percentage_of_nodes_to_score,
        errs,
    );
    if let Some(plugins) = &profile.plugins {
        let sets = plugins
            .extension_points()
            .into_iter()
            .map(|(key, _, set)| (key, set))
            .chain([("multiPoint", &plugins.multi_point)]);
        for (key, set) in sets {
            for (i, p) in set.enabled.iter().enumerate() {
                let at = format!("{path}.plugins.{key}.enabled[{i}]");
                if INVALID_PLUGINS.contains(&p.name.as_str()) {
                    errs.push(invalid_plugin(at.clone(), &p.name));
                }
                // kube-scheduler takes any int32; Capstan refuses weights that invert
                // scores.
                if let Some(w) = p.weight.filter(|w| *w < 0) {
                    errs.push(FieldError::invalid(
                        format!("{at}.weight"),
                        w,
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, entry) in profile.plugin_config.iter().enumerate() {
        let at = format!("{path}.pluginConfig[{i}]");
        if !seen.insert(entry.name.as_str()) {
            errs.push(FieldError::duplicate(&at, entry.name.as_str()));
        }
        if INVALID_PLUGINS.contains(&entry.name.as_str()) {
            errs.push(invalid_plugin(at, &entry.name));
            continue;
        }
        let args_path = format!("{at}.args");
        match PluginArgs::decode(&entry.name, &entry.args, &args_path) {
            None => {}
            Some(Ok(args)) => args.validate(&args_path, errs),
            Some(Err(_)) => errs.push(FieldError::invalid(
                args_path,
                super::BadValue::Omitted,
                "has to match plugin args",
            )),
        }
    }
}

/// kube-scheduler's `validateCommonQueueSort`: every profile's `queueSort` set (and its
/// plugin's arguments) must be the first profile's.
fn validate_common_queue_sort(profiles: &[KubeSchedulerProfile], errs: &mut FieldErrors) {
    let empty = PluginSet::default();
    let queue_sort = |p: &KubeSchedulerProfile| -> PluginSet {
        p.plugins
            .as_ref()
            .map_or_else(|| empty.clone(), |p| p.queue_sort.clone())
    };
    let canon = queue_sort(&profiles[0]);
    if canon.enabled.len() > 1 {
        errs.push(FieldError::invalid(
            "profiles[0].plugins.queueSort.Enabled",
            canon.enabled.len(),
            "only one queue sort plugin can be enabled",
        ));
    }
    let name = canon.enabled.first().map(|p| p.name.as_str());
    let args_of = |p: &KubeSchedulerProfile| {
        p.plugin_config
            .iter()
            .find(|c| Some(c.name.as_str()) == name)
            .map(|c| c.args.clone())
    };
    let canon_args = args_of(&profiles[0]);
    for (i, profile) in profiles.iter().enumerate().skip(1) {
        if queue_sort(profile) != canon {
            errs.push(FieldError::invalid(
                format!("profiles[{i}].plugins.queueSort"),
                super::BadValue::Omitted,
                "must be the same for all profiles",
            ));
        }
        if name.is_some() {
            if let Some(args) = args_of(profile) {
                if Some(&args) != canon_args.as_ref() {
                    errs.push(FieldError::invalid(
                        format!("profiles[{i}].pluginConfig.args"),
                        super::BadValue::Omitted,
                        "queueSort must be the same for all profiles",
                    ));
                }
            }
        }
    }
}
