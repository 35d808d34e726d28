//! The typed arguments of the in-tree plugins (kube-scheduler's `<Plugin>Args` kinds), with
//! kube-scheduler's v1 defaults and validation messages, plus the settings Capstan's plugins
//! cannot honour (refused with a field error rather than ignored).

use std::collections::BTreeSet;

use capstan_api::k8s_openapi::api::core::v1::{NodeAffinity, TopologySpreadConstraint};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field::{FieldError, FieldErrors};
use super::strict::{child, decode};
use super::API_VERSION;
use crate::plugins::{
    DEFAULT_PREEMPTION, INTER_POD_AFFINITY, NODE_AFFINITY, NODE_RESOURCES_BALANCED_ALLOCATION,
    NODE_RESOURCES_FIT, POD_TOPOLOGY_SPREAD,
};

/// `DefaultPreemptionArgs`: how many nodes preemption looks at for candidates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultPreemptionArgs {
    /// At least this share of the nodes, in percent (default 10, `0..=100`).
    #[serde(default)]
    pub min_candidate_nodes_percentage: Option<i32>,
    /// At least this many nodes (default 100, `>= 0`).
    #[serde(default)]
    pub min_candidate_nodes_absolute: Option<i32>,
}

/// `InterPodAffinityArgs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterPodAffinityArgs {
    /// The Score weight of an existing pod's required affinity term that matches the pod
    /// (default 1, `0..=100`).
    #[serde(default)]
    pub hard_pod_affinity_weight: Option<i32>,
    /// Whether existing pods' preferred terms are left out of scoring.
    #[serde(default)]
    pub ignore_preferred_terms_of_existing_pods: bool,
}

/// `PodTopologySpreadArgs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTopologySpreadArgs {
    /// Constraints for pods without their own, under `defaultingType: List`.
    #[serde(default)]
    pub default_constraints: Vec<TopologySpreadConstraint>,
    /// `System` (Kubernetes' built-in defaults; the default) or `List`.
    #[serde(default)]
    pub defaulting_type: String,
}

/// A resource and its weight in a scoring strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// The resource's name (`cpu`, `memory`, ...).
    #[serde(default)]
    pub name: String,
    /// Its weight (0 means 1).
    #[serde(default)]
    pub weight: i64,
}

/// One point of a `RequestedToCapacityRatio` shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationShapePoint {
    /// Utilization, `0..=100`.
    #[serde(default)]
    pub utilization: i32,
    /// Score, `0..=10`.
    #[serde(default)]
    pub score: i32,
}

/// `RequestedToCapacityRatio`'s parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestedToCapacityRatioParam {
    /// The scoring function's points.
    #[serde(default)]
    pub shape: Vec<UtilizationShapePoint>,
}

/// NodeResourcesFit's `scoringStrategy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoringStrategy {
    /// `LeastAllocated`, `MostAllocated` or `RequestedToCapacityRatio`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// The resources scored, with weights (default cpu and memory, weight 1).
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    /// The shape for `RequestedToCapacityRatio`.
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

/// `NodeResourcesFitArgs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResourcesFitArgs {
    /// Resources the filter ignores.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Resource groups (the part before `/`) the filter ignores.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    /// How nodes are scored (default `LeastAllocated` over cpu and memory).
    #[serde(default)]
    pub scoring_strategy: Option<ScoringStrategy>,
}

/// `NodeResourcesBalancedAllocationArgs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResourcesBalancedAllocationArgs {
    /// The resources balanced (default cpu and memory, weight 1).
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

/// `NodeAffinityArgs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinityArgs {
    /// Node affinity added to every pod.
    #[serde(default)]
    pub added_affinity: Option<NodeAffinity>,
}

/// The typed arguments of one in-tree plugin.
#[derive(Clone, Debug, PartialEq)]
pub enum PluginArgs {
    /// `DefaultPreemption`'s.
    DefaultPreemption(DefaultPreemptionArgs),
    /// `InterPodAffinity`'s.
    InterPodAffinity(InterPodAffinityArgs),
    /// `NodeAffinity`'s.
    NodeAffinity(NodeAffinityArgs),
    /// `NodeResourcesBalancedAllocation`'s.
    NodeResourcesBalancedAllocation(NodeResourcesBalancedAllocationArgs),
    /// `NodeResourcesFit`'s.
    NodeResourcesFit(NodeResourcesFitArgs),
    /// `PodTopologySpread`'s.
    PodTopologySpread(PodTopologySpreadArgs),
}

/// Why a plugin's arguments could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ArgsProblem {
    /// A value of the wrong type, or the wrong `kind`: the message.
    Decode(String),
    /// Fields the arguments' kind does not have: their paths.
    Unknown(Vec<String>),
}

const LEAST_ALLOCATED: &str = "LeastAllocated";
const SCORING_STRATEGY_TYPES: [&str; 3] =
    [LEAST_ALLOCATED, "MostAllocated", "RequestedToCapacityRatio"];
/// kube-scheduler's `MaxCustomPriorityScore`.
const MAX_CUSTOM_PRIORITY_SCORE: i32 = 10;

fn default_resources() -> Vec<ResourceSpec> {
    ["cpu", "memory"]
        .into_iter()
        .map(|name| ResourceSpec {
            name: name.to_owned(),
            weight: 1,
        })
        .collect()
}

impl PluginArgs {
    /// Whether `plugin` takes typed arguments.
    pub fn is_typed(plugin: &str) -> bool {
        Self::empty(plugin).is_some()
    }

    /// The arguments of `plugin` with every field unset, or `None` for a plugin without
    /// typed arguments.
    fn empty(plugin: &str) -> Option<PluginArgs> {
        Some(match plugin {
            DEFAULT_PREEMPTION => PluginArgs::DefaultPreemption(Default::default()),
            INTER_POD_AFFINITY => PluginArgs::InterPodAffinity(Default::default()),
            NODE_AFFINITY => PluginArgs::NodeAffinity(Default::default()),
            NODE_RESOURCES_BALANCED_ALLOCATION => {
                PluginArgs::NodeResourcesBalancedAllocation(Default::default())
            }
            NODE_RESOURCES_FIT => PluginArgs::NodeResourcesFit(Default::default()),
            POD_TOPOLOGY_SPREAD => PluginArgs::PodTopologySpread(Default::default()),
            _ => return None,
        })
    }

    /// kube-scheduler's defaulted arguments for `plugin`, or `None` for a plugin without
    /// typed arguments.
    pub fn defaulted(plugin: &str) -> Option<PluginArgs> {
        let mut args = Self::empty(plugin)?;
        args.set_defaults();
        Some(args)
    }

    /// Decodes `value` (found at `path`) as `plugin`'s arguments. `null` is every field
    /// unset; `apiVersion` and `kind` may be given and must then be
    /// `kubescheduler.config.k8s.io/v1` and `<plugin>Args`. `None` for a plugin without
    /// typed arguments.
    pub(crate) fn decode(
        plugin: &str,
        value: &Value,
        path: &str,
    ) -> Option<Result<PluginArgs, ArgsProblem>> {
        let empty = Self::empty(plugin)?;
        let mut value = value.clone();
        super::strict::drop_nulls(&mut value, None);
        if let Value::Object(map) = &mut value {
            let expected = format!("{plugin}Args");
            match map.remove("kind") {
                None | Some(Value::Null) => {}
                Some(Value::String(kind)) if kind == expected => {}
                Some(other) => {
                    return Some(Err(ArgsProblem::Decode(format!(
                        "{}: {other} is not {expected:?}",
                        child(path, "kind")
                    ))))
                }
            }
            match map.remove("apiVersion") {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) if v == API_VERSION => {}
                Some(other) => {
                    return Some(Err(ArgsProblem::Decode(format!(
                        "{}: {other} is not {API_VERSION:?}",
                        child(path, "apiVersion")
                    ))))
                }
            }
        }
        if value.is_null() {
            return Some(Ok(empty));
        }
        fn typed<T>(
            value: &Value,
            path: &str,
            wrap: fn(T) -> PluginArgs,
        ) -> Result<PluginArgs, ArgsProblem>
        where
            T: serde::de::DeserializeOwned + Serialize,
        {
            let (args, unknown) = decode::<T>(value, path).map_err(ArgsProblem::Decode)?;
            if unknown.is_empty() {
                Ok(wrap(args))
            } else {
                Err(ArgsProblem::Unknown(unknown))
            }
        }
        Some(match empty {
            PluginArgs::DefaultPreemption(_) => typed(&value, path, PluginArgs::DefaultPreemption),
            PluginArgs::InterPodAffinity(_) => typed(&value, path, PluginArgs::InterPodAffinity),
            PluginArgs::NodeAffinity(_) => typed(&value, path, PluginArgs::NodeAffinity),
            PluginArgs::NodeResourcesBalancedAllocation(_) => {
                typed(&value, path, PluginArgs::NodeResourcesBalancedAllocation)
            }
            PluginArgs::NodeResourcesFit(_) => typed(&value, path, PluginArgs::NodeResourcesFit),
            PluginArgs::PodTopologySpread(_) => typed(&value, path, PluginArgs::PodTopologySpread),
        })
    }

    /// What a plugin's factory makes of `args`: decoded strictly, defaulted and validated.
    ///
    /// Errors: [`Error::InvalidArgs`](crate::Error::InvalidArgs) for a plugin without typed
    /// arguments, an unknown field, a value of the wrong type or an invalid value (the
    /// message is the field errors').
    pub fn decode_for_plugin(plugin: &str, args: &Value) -> crate::Result<PluginArgs> {
        let invalid = |message: String| crate::Error::InvalidArgs {
            plugin: plugin.to_owned(),
            message,
        };
        let mut decoded = match Self::decode(plugin, args, "") {
            None => return Err(invalid("the plugin takes no typed arguments".to_owned())),
            Some(Err(ArgsProblem::Decode(e))) => return Err(invalid(e)),
            Some(Err(ArgsProblem::Unknown(fields))) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect();
                return Err(invalid(fields.join(", ")));
            }
            Some(Ok(a)) => a,
        };
        decoded.set_defaults();
        let mut errs = FieldErrors::default();
        decoded.validate("", &mut errs);
        if errs.is_empty() {
            Ok(decoded)
        } else {
            Err(invalid(errs.to_string()))
        }
    }

    /// Applies kube-scheduler's v1 defaults.
    pub fn set_defaults(&mut self) {
        match self {
            PluginArgs::DefaultPreemption(a) => {
                a.min_candidate_nodes_percentage.get_or_insert(10);
                a.min_candidate_nodes_absolute.get_or_insert(100);
            }
            PluginArgs::InterPodAffinity(a) => {
                a.hard_pod_affinity_weight.get_or_insert(1);
            }
            PluginArgs::NodeAffinity(_) => {}
            PluginArgs::NodeResourcesBalancedAllocation(a) => {
                if a.resources.is_empty() {
                    a.resources = default_resources();
                }
                for r in &mut a.resources {
                    if r.weight == 0 {
                        r.weight = 1;
                    }
                }
            }
            PluginArgs::NodeResourcesFit(a) => {
                let strategy = a.scoring_strategy.get_or_insert_with(|| ScoringStrategy {
                    type_: LEAST_ALLOCATED.to_owned(),
                    resources: default_resources(),
                    requested_to_capacity_ratio: None,
                });
                if strategy.resources.is_empty() {
                    strategy.resources = default_resources();
                }
                for r in &mut strategy.resources {
                    if r.weight == 0 {
                        r.weight = 1;
                    }
                }
            }
            PluginArgs::PodTopologySpread(a) => {
                if a.defaulting_type.is_empty() {
                    a.defaulting_type = "System".to_owned();
                }
            }
        }
    }

    /// Checks the (defaulted) arguments found at `path` as kube-scheduler does, with its
    /// messages, then refuses what Capstan's plugins cannot do.
    pub fn validate(&self, path: &str, errs: &mut FieldErrors) {
        match self {
            PluginArgs::DefaultPreemption(a) => validate_default_preemption(a, path, errs),
            PluginArgs::InterPodAffinity(a) => {
                let w = a.hard_pod_affinity_weight.unwrap_or(1);
                if !(0..=100).contains(&w) {
                    errs.push(FieldError::invalid(
                        child(path, "hardPodAffinityWeight"),
                        w,
                        "not in valid range [0, 100]",
                    ));
                }
            }
            PluginArgs::NodeAffinity(a) => {
                if a.added_affinity.is_some() {
                    errs.push(FieldError::forbidden(
                        child(path, "addedAffinity"),
                        "not supported by Capstan's NodeAffinity",
                    ));
                }
            }
            PluginArgs::NodeResourcesBalancedAllocation(a) => {
                let resources = child(path, "resources");
                let mut seen = BTreeSet::new();
                for (i, r) in a.resources.iter().enumerate() {
                    let at = format!("{resources}[{i}]");
                    if !seen.insert(r.name.as_str()) {
                        errs.push(FieldError::duplicate(child(&at, "name"), r.name.as_str()));
                    }
                    if r.weight != 1 {
                        errs.push(FieldError::invalid(
                            child(&at, "weight"),
                            r.weight,
                            "must be 1",
                        ));
                    }
                }
                if seen != BTreeSet::from(["cpu", "memory"]) {
                    errs.push(FieldError::forbidden(
                        resources,
                        "Capstan's NodeResourcesBalancedAllocation balances cpu and memory only",
                    ));
                }
            }
            PluginArgs::NodeResourcesFit(a) => validate_node_resources_fit(a, path, errs),
            PluginArgs::PodTopologySpread(a) => validate_pod_topology_spread(a, path, errs),
        }
    }

    /// The arguments as the plugin's factory reads them.
    pub fn to_value(&self) -> Value {
        let v = match self {
            PluginArgs::DefaultPreemption(a) => serde_json::to_value(a),
            PluginArgs::InterPodAffinity(a) => serde_json::to_value(a),
            PluginArgs::NodeAffinity(a) => serde_json::to_value(a),
            PluginArgs::NodeResourcesBalancedAllocation(a) => serde_json::to_value(a),
            PluginArgs::NodeResourcesFit(a) => serde_json::to_value(a),
            PluginArgs::PodTopologySpread(a) => serde_json::to_value(a),
        };
        v.expect("plugin arguments always encode")
    }
}

fn validate_default_preemption(a: &DefaultPreemptionArgs, path: &str, errs: &mut FieldErrors) {
    let pct = a.min_candidate_nodes_percentage.unwrap_or(10);
    let abs = a.min_candidate_nodes_absolute.unwrap_or(100);
    let pct_path = child(path, "minCandidateNodesPercentage");
    let abs_path = child(path, "minCandidateNodesAbsolute");
    if !(0..=100).contains(&pct) {
        errs.push(FieldError::invalid(
            &pct_path,
            pct,
            "not in valid range [0, 100]",
        ));
    }
    if abs < 0 {
        errs.push(FieldError::invalid(
            &abs_path,
            abs,
            "not in valid range [0, inf)",
        ));
    }
    if pct == 0 && abs == 0 {
        errs.push(FieldError::invalid(
            pct_path,
            pct,
            "cannot be zero at the same time as minCandidateNodesAbsolute",
        ));
        errs.push(FieldError::invalid(
            abs_path,
            abs,
            "cannot be zero at the same time as minCandidateNodesPercentage",
        ));
    }
}

fn validate_node_resources_fit(a: &NodeResourcesFitArgs, path: &str, errs: &mut FieldErrors) {
    for (field, values) in [
        ("ignoredResources", &a.ignored_resources),
        ("ignoredResourceGroups", &a.ignored_resource_groups),
    ] {
        if !values.is_empty() {
            errs.push(FieldError::forbidden(
                child(path, field),
                "not supported by Capstan's NodeResourcesFit",
            ));
        }
    }
    let strategy_path = child(path, "scoringStrategy");
    let Some(strategy) = &a.scoring_strategy else {
        errs.push(FieldError::required(
            strategy_path,
            "ScoringStrategy field is required",
        ));
        return;
    };
    let type_path = child(&strategy_path, "type");
    if !SCORING_STRATEGY_TYPES.contains(&strategy.type_.as_str()) {
        let mut supported = SCORING_STRATEGY_TYPES;
        supported.sort_unstable();
        errs.push(FieldError::not_supported(
            &type_path,
            strategy.type_.as_str(),
            &supported,
        ));
    } else if strategy.type_ != LEAST_ALLOCATED {
        errs.push(FieldError::not_supported(
            &type_path,
            strategy.type_.as_str(),
            &[LEAST_ALLOCATED],
        ));
    }
    let resources_path = child(&strategy_path, "resources");
    for (i, r) in strategy.resources.iter().enumerate() {
        if r.weight <= 0 || r.weight > 100 {
            errs.push(FieldError::invalid(
                format!("{resources_path}[{i}].weight"),
                r.weight,
                format!("resource weight of {} not in valid range (0, 100]", r.name),
            ));
        }
    }
    let ratio_path = child(&strategy_path, "requestedToCapacityRatio");
    if strategy.type_ == "RequestedToCapacityRatio" {
        match &strategy.requested_to_capacity_ratio {
            None => errs.push(FieldError::required(
                ratio_path,
                "must be specified when type is RequestedToCapacityRatio",
            )),
            Some(r) => validate_shape(&r.shape, &child(&ratio_path, "shape"), errs),
        }
    } else if strategy.requested_to_capacity_ratio.is_some() {
        errs.push(FieldError::forbidden(
            ratio_path,
            "must be nil when type is not RequestedToCapacityRatio",
        ));
    }
    let mut resources: Vec<(&str, i64)> = strategy
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.weight))
        .collect();
    resources.sort_unstable();
    if resources != [("cpu", 1), ("memory", 1)] {
        errs.push(FieldError::forbidden(
            resources_path,
            "Capstan's NodeResourcesFit scores cpu and memory with weight 1 each only",
        ));
    }
}

fn validate_shape(shape: &[UtilizationShapePoint], path: &str, errs: &mut FieldErrors) {
    if shape.is_empty() {
        errs.push(FieldError::required(
            path,
            "at least one point must be specified",
        ));
        return;
    }
    for i in 1..shape.len() {
        if shape[i - 1].utilization >= shape[i].utilization {
            errs.push(FieldError::invalid(
                format!("{path}[{i}].utilization"),
                shape[i].utilization,
                "values must be sorted in increasing order",
            ));
            break;
        }
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=100).contains(&p.utilization) {
            errs.push(FieldError::invalid(
                format!("{path}[{i}].utilization"),
                p.utilization,
                "not in valid range [0, 100]",
            ));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE).contains(&p.score) {
            errs.push(FieldError::invalid(
                format!("{path}[{i}].score"),
                p.score,
                format!("not in valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]"),
            ));
        }
    }
}

fn validate_pod_topology_spread(a: &PodTopologySpreadArgs, path: &str, errs: &mut FieldErrors) {
    let defaulting = child(path, "defaultingType");
    match a.defaulting_type.as_str() {
        "System" if !a.default_constraints.is_empty() => errs.push(FieldError::invalid(
            defaulting,
            "System",
            "when .defaultConstraints are not empty",
        )),
        "System" | "List" => {}
        other => errs.push(FieldError::not_supported(
            defaulting,
            other,
            &["System", "List"],
        )),
    }
    let constraints = child(path, "defaultConstraints");
    for (i, c) in a.default_constraints.iter().enumerate() {
        let at = format!("{constraints}[{i}]");
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(
                child(&at, "maxSkew"),
                c.max_skew,
                "not in valid range (0, inf)",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(
                child(&at, "topologyKey"),
                "can not be empty",
            ));
        }
        let when = child(&at, "whenUnsatisfiable");
        match c.when_unsatisfiable.as_str() {
            "" => errs.push(FieldError::required(when, "can not be empty")),
            "DoNotSchedule" | "ScheduleAnyway" => {}
            other => errs.push(FieldError::not_supported(
                when,
                other,
                &["DoNotSchedule", "ScheduleAnyway"],
            )),
        }
        if c.label_selector.is_some() {
            errs.push(FieldError::forbidden(
                child(&at, "labelSelector"),
                "constraint must not define a selector, as they deduced for each pod",
            ));
        }
        if a.default_constraints[..i].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        }) {
            errs.push(FieldError::duplicate(
                &at,
                format!("{{{}, {}}}", c.topology_key, c.when_unsatisfiable),
            ));
        }
    }
}
