//! The scheduler's configuration file (`KubeSchedulerConfiguration` v1): strict decoding,
//! kube-scheduler's defaults and validation messages, profiles built through the registry,
//! and a scheduler serving two profiles.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_scheduler::config::{
    ConfigError, InterPodAffinityArgs, KubeSchedulerConfiguration, PluginArgs, PluginConfigEntry,
    PluginRef,
};
use capstan_scheduler::framework::{
    Code, CycleState, FilterPlugin, Framework, NodeInfo, NodeStatusMap, Plugin, PluginConfig,
    PluginRegistry, Profile, QueueSortPlugin, QueuedPodInfo, SchedulerPlugin, Status,
};
use capstan_scheduler::plugins::{find_candidates, find_candidates_among};
use capstan_scheduler::{default_framework, in_tree_registry, Error, Scheduler};
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/scheduler-config.yaml"
);

const HEADER: &str =
    "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

/// The in-tree plugins plus `Gold` (a Filter plugin letting only nodes labelled
/// `tier: gold` through) and `FifoSort` (a QueueSort plugin).
fn registry_with_custom_plugins(client: Arc<dyn Client>) -> (PluginRegistry, EventBroadcaster) {
    let events = EventBroadcaster::new(
        client.clone(),
        EventOptions::default().history_capacity(1000),
    );
    let mut registry = in_tree_registry(client, events.recorder("default-scheduler"));
    registry
        .register(Gold::NAME, |args| {
            if !args.is_null() && !args.is_object() {
                return Err(Error::InvalidArgs {
                    plugin: Gold::NAME.into(),
                    message: "the arguments must be an object".into(),
                });
            }
            Ok(Plugin::builder(Arc::new(Gold)).filter().build())
        })
        .unwrap();
    registry
        .register("FifoSort", |_| {
            Ok(Plugin::builder(Arc::new(FifoSort)).queue_sort().build())
        })
        .unwrap();
    (registry, events)
}

struct Gold;

impl Gold {
    const NAME: &'static str = "Gold";
    const REASON: &'static str = "node(s) are not gold";
}

impl SchedulerPlugin for Gold {
    fn name(&self) -> &str {
        Self::NAME
    }
}

impl FilterPlugin for Gold {
    fn filter(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let gold = node
            .node()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get("tier"))
            .is_some_and(|t| t == "gold");
        if gold {
            Status::success()
        } else {
            Status::unresolvable(Self::REASON)
        }
    }
}

struct FifoSort;

impl SchedulerPlugin for FifoSort {
    fn name(&self) -> &str {
        "FifoSort"
    }
}

impl QueueSortPlugin for FifoSort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        a.timestamp < b.timestamp
    }
}

fn config(body: &str) -> Result<KubeSchedulerConfiguration, ConfigError> {
    KubeSchedulerConfiguration::from_yaml(&format!("{HEADER}{body}"))
}

/// The messages of an invalid configuration, as printed.
fn messages(result: Result<KubeSchedulerConfiguration, ConfigError>) -> Vec<String> {
    match result {
        Err(e @ ConfigError::Invalid(_)) => {
            e.field_errors().iter().map(ToString::to_string).collect()
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn frameworks(body: &str) -> Result<Vec<Framework>, ConfigError> {
    let (registry, _events) = registry_with_custom_plugins(capstan_apiserver::testing::client());
    config(body)
        .expect("a valid configuration")
        .frameworks(&registry)
}

#[test]
fn the_example_file_is_parsed_defaulted_and_validated() {
    let cfg = KubeSchedulerConfiguration::load(EXAMPLE).unwrap();
    assert_eq!(cfg.parallelism, Some(8));
    assert_eq!(cfg.parallelism(), 8);
    assert_eq!(cfg.percentage_of_nodes_to_score, Some(50));
    assert_eq!(
        cfg.pod_backoff(),
        (Duration::from_secs(2), Duration::from_secs(30))
    );
    let lease = cfg.leader_election().expect("leader election is on");
    assert_eq!(
        (lease.name.as_str(), lease.namespace.as_str()),
        ("kube-scheduler", "kube-system")
    );
    assert_eq!(lease.config.lease_duration, Duration::from_secs(20));
    assert_eq!(lease.config.renew_deadline, Duration::from_secs(15));
    assert_eq!(lease.config.retry_period, Duration::from_secs(3));
    assert_eq!(cfg.leader_election.resource_lock, "leases");

    let names: Vec<_> = cfg
        .profiles
        .iter()
        .map(|p| p.scheduler_name.as_deref())
        .collect();
    assert_eq!(names, [Some("default-scheduler"), Some("batch-scheduler")]);

    // The defaults merged into the second profile: three disabled, the rest in order.
    let batch = cfg.profiles[1].plugins.as_ref().unwrap();
    let multi_point: Vec<(&str, Option<i32>)> = batch
        .multi_point
        .enabled
        .iter()
        .map(|p| (p.name.as_str(), p.weight))
        .collect();
    assert_eq!(
        multi_point,
        [
            ("PrioritySort", None),
            ("NodeUnschedulable", None),
            ("NodeName", None),
            ("TaintToleration", Some(3)),
            ("NodeAffinity", Some(2)),
            ("NodePorts", None),
            ("NodeResourcesFit", Some(1)),
            ("InterPodAffinity", Some(2)),
            ("ImageLocality", Some(1)),
            ("DefaultBinder", None),
        ]
    );
    assert_eq!(
        batch.score.enabled,
        [PluginRef::weighted("NodeAffinity", 10)]
    );

    // Arguments: the given ones defaulted, then defaults for enabled plugins taking some.
    let configured: Vec<&str> = cfg.profiles[0]
        .plugin_config
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        configured,
        [
            "PodTopologySpread",
            "InterPodAffinity",
            "DefaultPreemption",
            "NodeAffinity",
            "NodeResourcesBalancedAllocation",
            "NodeResourcesFit",
        ]
    );
    assert_eq!(
        cfg.profiles[0].plugin_config[1].args,
        json!({"hardPodAffinityWeight": 10, "ignorePreferredTermsOfExistingPods": false})
    );
    assert_eq!(
        cfg.profiles[0].plugin_config[5].args["scoringStrategy"],
        json!({
            "type": "LeastAllocated",
            "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}],
            "requestedToCapacityRatio": null,
        })
    );
    let batch_args: Vec<&str> = cfg.profiles[1]
        .plugin_config
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        batch_args,
        ["InterPodAffinity", "NodeAffinity", "NodeResourcesFit"]
    );
    assert_eq!(
        PluginArgs::defaulted("InterPodAffinity"),
        Some(PluginArgs::InterPodAffinity(InterPodAffinityArgs {
            hard_pod_affinity_weight: Some(1),
            ignore_preferred_terms_of_existing_pods: false,
        }))
    );
}

#[tokio::test]
async fn the_example_file_builds_each_profile_with_its_plugins_and_weights() {
    let cfg = KubeSchedulerConfiguration::load(EXAMPLE).unwrap();
    let (registry, _events) = registry_with_custom_plugins(capstan_apiserver::testing::client());
    let fws = cfg.frameworks(&registry).unwrap();
    assert_eq!(fws.len(), 2);

    let default = &fws[0];
    assert_eq!(default.profile_name(), "default-scheduler");
    assert_eq!(default.percentage_of_nodes_to_score(), Some(50));
    assert_eq!(default.parallelism(), Some(8));
    // TaintToleration is named at Score, so it runs first there; ImageLocality is disabled
    // at Score but still runs its PreScore.
    assert_eq!(
        default.plugins_at("Score"),
        [
            "TaintToleration",
            "NodeAffinity",
            "NodeResourcesFit",
            "PodTopologySpread",
            "InterPodAffinity",
            "NodeResourcesBalancedAllocation",
        ]
    );
    assert!(default.plugins_at("PreScore").contains(&"ImageLocality"));
    assert_eq!(default.score_weight("TaintToleration"), Some(5));
    assert_eq!(default.score_weight("NodeAffinity"), Some(2));
    assert_eq!(default.score_weight("ImageLocality"), None);
    assert_eq!(default.plugins_at("PostFilter"), ["DefaultPreemption"]);
    assert_eq!(default.plugins_at("QueueSort"), ["PrioritySort"]);
    assert_eq!(default.plugins_at("Bind"), ["DefaultBinder"]);

    let batch = &fws[1];
    assert_eq!(batch.profile_name(), "batch-scheduler");
    assert_eq!(batch.percentage_of_nodes_to_score(), Some(100));
    assert_eq!(
        batch.plugins_at("Score"),
        [
            "NodeAffinity",
            "TaintToleration",
            "NodeResourcesFit",
            "InterPodAffinity",
            "ImageLocality",
        ]
    );
    assert_eq!(batch.score_weight("NodeAffinity"), Some(10));
    assert_eq!(batch.score_weight("TaintToleration"), Some(3));
    assert!(batch.plugins_at("PostFilter").is_empty());
    assert!(!batch.plugins_at("Filter").contains(&"PodTopologySpread"));
    assert_eq!(
        batch.plugins_at("Filter"),
        [
            "NodeUnschedulable",
            "NodeName",
            "TaintToleration",
            "NodeAffinity",
            "NodePorts",
            "NodeResourcesFit",
            "InterPodAffinity",
        ]
    );
}

#[tokio::test]
async fn an_empty_configuration_builds_the_default_framework() {
    let client = capstan_apiserver::testing::client();
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let registry = in_tree_registry(client.clone(), events.recorder("default-scheduler"));
    let cfg = config("").unwrap();
    assert_eq!(cfg, KubeSchedulerConfiguration::defaulted());
    assert_eq!(cfg.parallelism, Some(16));
    assert_eq!(cfg.percentage_of_nodes_to_score, Some(0));
    assert_eq!(
        cfg.pod_backoff(),
        (Duration::from_secs(1), Duration::from_secs(10))
    );
    let fws = cfg.frameworks(&registry).unwrap();
    let built = &fws[0];
    let default = default_framework(client, events.recorder("default-scheduler")).unwrap();
    assert_eq!(built.profile_name(), "default-scheduler");
    for point in [
        "QueueSort",
        "PreFilter",
        "Filter",
        "PostFilter",
        "PreScore",
        "Score",
        "Reserve",
        "Permit",
        "PreBind",
        "Bind",
        "PostBind",
    ] {
        let mut expected = default.plugins_at(point);
        let mut got = built.plugins_at(point);
        // kube-scheduler lists DefaultPreemption before the last two Score plugins; the
        // order only matters within a point.
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "{point}");
    }
    for plugin in default.plugins_at("Score") {
        assert_eq!(
            built.score_weight(plugin),
            default.score_weight(plugin),
            "{plugin}"
        );
    }
}

#[test]
fn invalid_configurations_are_refused_with_kube_schedulers_messages() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "two profiles need a name each",
            "profiles:\n- schedulerName: ''\n- schedulerName: b\n",
            &["profiles[0].schedulerName: Required value"],
        ),
        (
            "percentageOfNodesToScore is a percentage",
            "percentageOfNodesToScore: 101\n",
            &["percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100]"],
        ),
        (
            "a profile's percentage too",
            "profiles:\n- percentageOfNodesToScore: -1\n",
            &["profiles[0].percentageOfNodesToScore: Invalid value: -1: not in valid range [0-100]"],
        ),
        (
            "profile names are unique",
            "profiles:\n- schedulerName: a\n- schedulerName: a\n",
            &[r#"profiles[1].schedulerName: Duplicate value: "profiles[0].schedulerName""#],
        ),
        (
            "the initial backoff is positive",
            "podInitialBackoffSeconds: 0\n",
            &["podInitialBackoffSeconds: Invalid value: 0: must be greater than 0"],
        ),
        (
            "the maximum backoff is not below the initial one",
            "podInitialBackoffSeconds: 10\npodMaxBackoffSeconds: 5\n",
            &["podMaxBackoffSeconds: Invalid value: 5: must be greater than or equal to PodInitialBackoffSeconds"],
        ),
        (
            "parallelism is positive",
            "parallelism: 0\n",
            &["parallelism: Invalid value: 0: should be an integer value greater than zero"],
        ),
        (
            "score weights are not negative",
            "profiles:\n- plugins:\n    score:\n      enabled:\n      - name: ImageLocality\n        weight: -1\n",
            &["profiles[0].plugins.score.enabled[0].weight: Invalid value: -1: must be greater than or equal to 0"],
        ),
        (
            "profiles share their queueSort",
            "profiles:\n- schedulerName: a\n- schedulerName: b\n  plugins:\n    queueSort:\n      enabled:\n      - name: FifoSort\n",
            &["profiles[1].plugins.queueSort: Invalid value: must be the same for all profiles"],
        ),
        (
            "only one queueSort plugin",
            "profiles:\n- plugins:\n    queueSort:\n      enabled:\n      - name: FifoSort\n      - name: PrioritySort\n",
            &["profiles[0].plugins.queueSort.Enabled: Invalid value: 2: only one queue sort plugin can be enabled"],
        ),
        (
            "the lease outlasts the renew deadline, on a Lease",
            "leaderElection:\n  leaseDuration: 5s\n  renewDeadline: 10s\n  resourceLock: endpoints\n",
            &[
                "leaderElection.leaseDuration: Invalid value: 10s: must be greater than `RenewDeadline`",
                r#"leaderElection.resourceLock: Invalid value: "endpoints": resourceLock value must be "leases""#,
            ],
        ),
        (
            "leader election durations are positive",
            "leaderElection:\n  retryPeriod: -2s\n",
            &["leaderElection.retryPeriod: Invalid value: -2s: must be greater than zero"],
        ),
        (
            "hardPodAffinityWeight is within [0, 100]",
            "profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n    args:\n      hardPodAffinityWeight: 101\n",
            &["profiles[0].pluginConfig[0].args.hardPodAffinityWeight: Invalid value: 101: not in valid range [0, 100]"],
        ),
        (
            "preemption looks at some nodes",
            "profiles:\n- pluginConfig:\n  - name: DefaultPreemption\n    args:\n      minCandidateNodesPercentage: 0\n      minCandidateNodesAbsolute: 0\n",
            &[
                "profiles[0].pluginConfig[0].args.minCandidateNodesPercentage: Invalid value: 0: cannot be zero at the same time as minCandidateNodesAbsolute",
                "profiles[0].pluginConfig[0].args.minCandidateNodesAbsolute: Invalid value: 0: cannot be zero at the same time as minCandidateNodesPercentage",
            ],
        ),
        (
            "preemption percentages are percentages",
            "profiles:\n- pluginConfig:\n  - name: DefaultPreemption\n    args:\n      minCandidateNodesPercentage: 120\n      minCandidateNodesAbsolute: -1\n",
            &[
                "profiles[0].pluginConfig[0].args.minCandidateNodesPercentage: Invalid value: 120: not in valid range [0, 100]",
                "profiles[0].pluginConfig[0].args.minCandidateNodesAbsolute: Invalid value: -1: not in valid range [0, inf)",
            ],
        ),
        (
            "System defaulting takes no constraints",
            "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: zone\n        whenUnsatisfiable: DoNotSchedule\n",
            &[r#"profiles[0].pluginConfig[0].args.defaultingType: Invalid value: "System": when .defaultConstraints are not empty"#],
        ),
        (
            "default constraints are checked one by one",
            "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultingType: List\n      defaultConstraints:\n      - maxSkew: 0\n        topologyKey: zone\n        whenUnsatisfiable: Sometimes\n      - maxSkew: 1\n        topologyKey: ''\n        whenUnsatisfiable: DoNotSchedule\n        labelSelector: {}\n      - maxSkew: 2\n        topologyKey: ''\n        whenUnsatisfiable: DoNotSchedule\n",
            &[
                "profiles[0].pluginConfig[0].args.defaultConstraints[0].maxSkew: Invalid value: 0: not in valid range (0, inf)",
                r#"profiles[0].pluginConfig[0].args.defaultConstraints[0].whenUnsatisfiable: Unsupported value: "Sometimes": supported values: "DoNotSchedule", "ScheduleAnyway""#,
                "profiles[0].pluginConfig[0].args.defaultConstraints[1].topologyKey: Required value: can not be empty",
                "profiles[0].pluginConfig[0].args.defaultConstraints[1].labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod",
                "profiles[0].pluginConfig[0].args.defaultConstraints[2].topologyKey: Required value: can not be empty",
                r#"profiles[0].pluginConfig[0].args.defaultConstraints[2]: Duplicate value: "{, DoNotSchedule}""#,
            ],
        ),
        (
            "an unknown defaulting type",
            "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultingType: Random\n",
            &[r#"profiles[0].pluginConfig[0].args.defaultingType: Unsupported value: "Random": supported values: "System", "List""#],
        ),
        (
            "Capstan's NodeResourcesFit scores LeastAllocated only",
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n",
            &[r#"profiles[0].pluginConfig[0].args.scoringStrategy.type: Unsupported value: "MostAllocated": supported values: "LeastAllocated""#],
        ),
        (
            "resource weights are within (0, 100]",
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: LeastAllocated\n        resources:\n        - name: cpu\n          weight: 101\n        - name: memory\n          weight: 1\n",
            &[
                "profiles[0].pluginConfig[0].args.scoringStrategy.resources[0].weight: Invalid value: 101: resource weight of cpu not in valid range (0, 100]",
                "profiles[0].pluginConfig[0].args.scoringStrategy.resources: Forbidden: Capstan's NodeResourcesFit scores cpu and memory with weight 1 each only",
            ],
        ),
        (
            "a plugin is configured once",
            "profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n  - name: InterPodAffinity\n",
            &[r#"profiles[0].pluginConfig[1]: Duplicate value: "InterPodAffinity""#],
        ),
        (
            "plugins removed from kube-scheduler",
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: EBSLimits\n",
            &[r#"profiles[0].plugins.filter.enabled[0]: Invalid value: "EBSLimits": was invalid in version "kubescheduler.config.k8s.io/v1" (KubeSchedulerConfiguration is version "kubescheduler.config.k8s.io/v1")"#],
        ),
        (
            "no extenders",
            "extenders:\n- urlPrefix: http://127.0.0.1:8888\n",
            &["extenders: Forbidden: scheduler extenders are not supported by Capstan"],
        ),
    ];
    for (name, body, expected) in cases {
        assert_eq!(messages(config(body)), *expected, "{name}");
    }
}

#[test]
fn arguments_of_another_kind_are_refused() {
    let err = config(
        "profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n    args:\n      kind: DefaultPreemptionArgs\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"decoding the configuration: profiles[0].pluginConfig[0].args.kind: "DefaultPreemptionArgs" is not "InterPodAffinityArgs""#
    );
    // A configuration built in code is checked the same way.
    let mut cfg = KubeSchedulerConfiguration::defaulted();
    cfg.profiles[0].plugin_config = vec![PluginConfigEntry {
        name: "InterPodAffinity".into(),
        args: json!({"kind": "DefaultPreemptionArgs"}),
    }];
    assert_eq!(
        messages(cfg.validate().map(|()| cfg.clone())),
        ["profiles[0].pluginConfig[0].args: Invalid value: has to match plugin args"]
    );
}

#[test]
fn every_problem_is_reported_at_once_as_kubernetes_aggregates_them() {
    let err = config("parallelism: -1\npercentageOfNodesToScore: 200\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "[parallelism: Invalid value: -1: should be an integer value greater than zero, \
         percentageOfNodesToScore: Invalid value: 200: not in valid range [0-100]]"
    );
    assert_eq!(err.field_errors().len(), 2);
    assert_eq!(err.field_errors()[0].field, "parallelism");
}

#[tokio::test]
async fn profiles_that_the_registry_cannot_build_are_refused_with_field_paths() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "an unknown Score plugin",
            "profiles:\n- plugins:\n    score:\n      enabled:\n      - name: Foo\n",
            r#"profiles[0].plugins.score.enabled[0]: Invalid value: "Foo": ScorePlugin "Foo" does not exist"#,
        ),
        (
            "an unknown multiPoint plugin",
            "profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: VolumeBinding\n",
            r#"profiles[0].plugins.multiPoint.enabled[13]: Invalid value: "VolumeBinding": plugin "VolumeBinding" does not exist"#,
        ),
        (
            "a plugin at a point it does not implement",
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: ImageLocality\n",
            r#"profiles[0].plugins.filter.enabled[0]: Invalid value: "ImageLocality": plugin "ImageLocality" does not extend FilterPlugin plugin"#,
        ),
        (
            "a plugin twice at one point",
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Gold\n      - name: Gold\n",
            r#"profiles[0].plugins.filter.enabled[1]: Invalid value: "Gold": plugin "Gold" already registered as "FilterPlugin""#,
        ),
        (
            "every default disabled leaves no QueueSort",
            "profiles:\n- plugins:\n    multiPoint:\n      disabled:\n      - name: '*'\n",
            r#"profiles[0].plugins.queueSort: Invalid value: only one queue sort plugin required for profile with scheduler name "default-scheduler", but got 0"#,
        ),
        (
            "no binder",
            "profiles:\n- plugins:\n    multiPoint:\n      disabled:\n      - name: DefaultBinder\n",
            r#"profiles[0].plugins.bind: Required value: at least one bind plugin is needed for profile with scheduler name "default-scheduler""#,
        ),
        (
            "QueueSort plugins that differ through multiPoint",
            "profiles:\n- schedulerName: a\n- schedulerName: b\n  plugins:\n    multiPoint:\n      enabled:\n      - name: FifoSort\n      disabled:\n      - name: PrioritySort\n",
            r#"profiles[1].plugins.queueSort: Invalid value: different queue sort plugins for profile "b": "FifoSort", first: "PrioritySort""#,
        ),
        (
            "arguments a factory refuses",
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Gold\n  pluginConfig:\n  - name: Gold\n    args: [1]\n",
            r#"profiles[0].pluginConfig[0].args: Invalid value: initializing plugin "Gold": invalid arguments for plugin "Gold": the arguments must be an object"#,
        ),
    ];
    for (name, body, expected) in cases {
        let err = frameworks(body).expect_err(name);
        let got: Vec<String> = err.field_errors().iter().map(ToString::to_string).collect();
        assert_eq!(got, [*expected], "{name}");
    }
}

#[tokio::test]
async fn a_custom_plugin_is_enabled_from_the_file_next_to_the_defaults() {
    let fws = frameworks(
        "profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: Gold\n    score:\n      disabled:\n      - name: '*'\n      enabled:\n      - name: ImageLocality\n        weight: 7\n",
    )
    .unwrap();
    let fw = &fws[0];
    assert_eq!(fw.plugins_at("Filter").last(), Some(&"Gold"));
    // `"*"` at Score keeps multiPoint out of Score: only the plugin enabled there scores.
    assert_eq!(fw.plugins_at("Score"), ["ImageLocality"]);
    assert_eq!(fw.score_weight("ImageLocality"), Some(7));
}

#[test]
fn unknown_fields_are_refused_all_at_once_with_their_paths() {
    let err = config(
        "percentageOfNodeToScore: 50\nprofiles:\n- schedulerName: a\n  plugins:\n    score:\n      enabled:\n      - name: TaintToleration\n        wieght: 2\n  pluginConfig:\n  - name: InterPodAffinity\n    args:\n      hardPodAffinityWeigth: 3\n",
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::UnknownFields(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"strict decoding error: unknown field "percentageOfNodeToScore", unknown field "profiles[0].plugins.score.enabled[0].wieght", unknown field "profiles[0].pluginConfig[0].args.hardPodAffinityWeigth""#
    );
}

#[test]
fn arguments_of_out_of_tree_plugins_reach_their_factory_as_written() {
    let cfg = config(
        "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Gold\n  pluginConfig:\n  - name: Gold\n    args:\n      anything: [1, 2]\n",
    )
    .unwrap();
    assert_eq!(
        cfg.profiles[0].plugin_config[0].args,
        json!({"anything": [1, 2]})
    );
}

#[test]
fn text_that_is_not_yaml_is_refused_with_the_parsers_position() {
    let err = KubeSchedulerConfiguration::from_yaml(&format!("{HEADER}profiles: [\n")).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("error converting YAML to JSON: "),
        "{message}"
    );
    assert!(message.contains("line"), "{message}");
}

#[test]
fn fields_left_empty_are_unset_as_go_reads_them() {
    let cfg = config(
        "parallelism:\nprofiles:\n- plugins:\n    score:\n      disabled:\n      enabled:\n  pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultConstraints:\n",
    )
    .unwrap();
    assert_eq!(cfg.parallelism, Some(16));
    assert_eq!(
        cfg.profiles[0].plugin_config[0].args,
        json!({"defaultConstraints": [], "defaultingType": "System"})
    );
}

#[test]
fn json_is_read_as_well() {
    let cfg = KubeSchedulerConfiguration::from_yaml(
        r#"{"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration", "parallelism": 4}"#,
    )
    .unwrap();
    assert_eq!(cfg.parallelism(), 4);
}

#[test]
fn a_wrong_kind_version_or_type_is_named() {
    let err = KubeSchedulerConfiguration::from_yaml(
        "apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"no kind "KubeSchedulerConfiguration" is registered for version "kubescheduler.config.k8s.io/v1beta3""#
    );
    let err = KubeSchedulerConfiguration::from_yaml("parallelism: 4\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Object 'Kind' is missing in '{"parallelism":4}'"#
    );
    let err = config("parallelism: many\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"decoding the configuration: parallelism: invalid type: string "many", expected i32"#
    );
    let err = config("leaderElection:\n  leaseDuration: 15\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("decoding the configuration: leaderElection.leaseDuration: "),
        "{err}"
    );
}

#[test]
fn leader_election_can_be_turned_off_and_moved() {
    let cfg = config("leaderElection:\n  leaderElect: false\n").unwrap();
    assert_eq!(cfg.leader_election(), None);
    let cfg =
        config("leaderElection:\n  resourceName: my-scheduler\n  resourceNamespace: schedulers\n")
            .unwrap();
    let lease = cfg.leader_election().unwrap();
    assert_eq!(
        (lease.name.as_str(), lease.namespace.as_str()),
        ("my-scheduler", "schedulers")
    );
    assert_eq!(lease.config.lease_duration, Duration::from_secs(15));
}

#[test]
fn a_missing_file_is_named() {
    let err = KubeSchedulerConfiguration::load("/nonexistent/scheduler.yaml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading /nonexistent/scheduler.yaml: "),
        "{err}"
    );
}

async fn add_node(client: &Arc<dyn Client>, name: &str, labels: serde_json::Value) {
    let nodes: Api<Node> = Api::cluster(client.clone());
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    let mut created = nodes.create(&PostParams::default(), &node).await.unwrap();
    created.status = Some(
        serde_json::from_value(json!({
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        }))
        .unwrap(),
    );
    nodes
        .update_status(&PostParams::default(), &created)
        .await
        .unwrap();
}

fn pod(name: &str, scheduler: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{
                "name": "c",
                "image": "busybox",
                "resources": {"requests": {"cpu": "1"}},
            }],
        },
    }))
    .unwrap()
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    loop {
        let pod = pods.get(name).await.unwrap();
        if let Some(n) = pod.spec.and_then(|s| s.node_name) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_pod_naming_the_second_profile_is_scheduled_with_that_profiles_plugins() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let (registry, events) = registry_with_custom_plugins(client.clone());
        let cfg = config(
            "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 1\nprofiles:\n- schedulerName: default-scheduler\n- schedulerName: gold-scheduler\n  plugins:\n    multiPoint:\n      enabled:\n      - name: Gold\n",
        )
        .unwrap();
        let scheduler = Scheduler::from_config(
            client.clone(),
            &cfg,
            &registry,
            events.recorder("default-scheduler"),
        )
        .unwrap();
        let profiles: Vec<&str> = scheduler.frameworks().map(|f| f.profile_name()).collect();
        assert_eq!(profiles, ["default-scheduler", "gold-scheduler"]);
        let informers = InformerFactory::new(client.clone(), ReflectorOptions::default());
        let task = tokio::spawn(async move { scheduler.run(&informers).await });

        add_node(&client, "node01", json!({})).await;
        add_node(&client, "node02", json!({"tier": "gold"})).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        // Without Gold, requests of one CPU each would spread over both nodes.
        for i in 0..3 {
            let name = format!("gold-{i}");
            pods.create(&PostParams::default(), &pod(&name, "gold-scheduler"))
                .await
                .unwrap();
            assert_eq!(node_of(&pods, &name).await, "node02", "{name}");
        }
        // The default profile has no Gold: LeastAllocated picks the emptier node01.
        pods.create(&PostParams::default(), &pod("plain", "default-scheduler"))
            .await
            .unwrap();
        assert_eq!(node_of(&pods, "plain").await, "node01");

        pods.create(&PostParams::default(), &pod("gold-3", "gold-scheduler"))
            .await
            .unwrap();
        assert_eq!(node_of(&pods, "gold-3").await, "node02");
        // node02 is full now (4 CPUs): Gold rejects node01, NodeResourcesFit node02.
        pods.create(&PostParams::default(), &pod("gold-4", "gold-scheduler"))
            .await
            .unwrap();
        let message = loop {
            events.flush().await;
            let failed = events.history().into_iter().find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some("gold-4")
            });
            if let Some(e) = failed {
                break e.message.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            message.starts_with("0/2 nodes are available: ")
                && message.contains(Gold::REASON)
                && message.contains("Insufficient cpu"),
            "{message}"
        );
        // A pod naming no profile of this scheduler is left alone.
        pods.create(&PostParams::default(), &pod("other", "someone-else"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = pods.get("other").await.unwrap();
        assert_eq!(other.spec.and_then(|s| s.node_name), None);
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn a_scheduler_refuses_two_profiles_with_one_name() {
    let client = capstan_apiserver::testing::client();
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = events.recorder("default-scheduler");
    let one = default_framework(client.clone(), recorder.clone()).unwrap();
    let two = default_framework(client.clone(), recorder.clone()).unwrap();
    let err = Scheduler::with_profiles(client, vec![one, two], recorder).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid scheduler profile: duplicate profile with scheduler name "default-scheduler""#
    );
}

/// A node named `name` (also its hostname label) with `cpu` allocatable and `pods` on it.
fn node_info(name: &str, cpu: &str, pods: &[Pod]) -> Arc<NodeInfo> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}},
    }))
    .unwrap();
    let mut info = NodeInfo::new(Arc::new(node));
    for p in pods {
        let mut p = p.clone();
        p.spec.as_mut().unwrap().node_name = Some(name.to_owned());
        info.add_pod(Arc::new(p));
    }
    Arc::new(info)
}

fn web_pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c"}]);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": spec,
    }))
    .unwrap()
}

/// InterPodAffinity's normalized scores for a `web` pod, by node, or `None` when it skips.
fn affinity_scores(args: serde_json::Value) -> Option<Vec<(String, i64)>> {
    let term = json!({
        "labelSelector": {"matchLabels": {"app": "web"}},
        "topologyKey": "kubernetes.io/hostname",
    });
    // One node holds a pod requiring web pods near it, the other one preferring them (5).
    let requiring = web_pod(
        "requiring",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}}),
    );
    let preferring = web_pod(
        "preferring",
        json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": term},
        ]}}}),
    );
    let nodes = [
        node_info("required", "4", &[requiring]),
        node_info("preferred", "4", &[preferring]),
    ];
    let profile = Profile::new("p").with_plugin(PluginConfig::new("InterPodAffinity").args(args));
    let fw = Framework::new(&capstan_scheduler::plugins::default_registry(), &profile).unwrap();
    let pod = web_pod("incoming", json!({}));
    let mut state = CycleState::new();
    let (_, s) = fw.run_pre_filter(&mut state, &pod, &nodes);
    assert!(s.is_success(), "{s}");
    assert!(fw.run_pre_score(&mut state, &pod, &nodes).is_success());
    if state.skips_score("InterPodAffinity") {
        return None;
    }
    let scores = fw.run_score(&state, &pod, &nodes).unwrap();
    Some(scores.into_iter().map(|s| (s.name, s.score)).collect())
}

#[test]
fn hard_pod_affinity_weight_sets_how_much_existing_required_terms_attract() {
    let by = |pairs: &[(&str, i64)]| -> Option<Vec<(String, i64)>> {
        Some(pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect())
    };
    // Weight 1 (the default): the preferred term (5) wins.
    assert_eq!(
        affinity_scores(serde_json::Value::Null),
        by(&[("required", 0), ("preferred", 100)])
    );
    // Weight 10: the required term outweighs it.
    assert_eq!(
        affinity_scores(json!({"hardPodAffinityWeight": 10})),
        by(&[("required", 100), ("preferred", 0)])
    );
    // Existing pods' terms are ignored for a pod without preferred terms of its own.
    assert_eq!(
        affinity_scores(json!({
            "hardPodAffinityWeight": 10,
            "ignorePreferredTermsOfExistingPods": true,
        })),
        None
    );
}

#[tokio::test]
async fn in_tree_factories_refuse_invalid_arguments_with_the_field_errors() {
    let (registry, _events) = registry_with_custom_plugins(capstan_apiserver::testing::client());
    let refused = |plugin: &str, args: serde_json::Value| match registry.build(plugin, &args) {
        Err(Error::InvalidArgs { plugin, message }) => format!("{plugin}: {message}"),
        other => panic!("expected invalid arguments, got {other:?}"),
    };
    assert_eq!(
        refused("InterPodAffinity", json!({"hardPodAffinityWeight": 101})),
        "InterPodAffinity: hardPodAffinityWeight: Invalid value: 101: not in valid range [0, 100]"
    );
    assert_eq!(
        refused("DefaultPreemption", json!({"minCandidateNodesAbsolute": -1})),
        "DefaultPreemption: minCandidateNodesAbsolute: Invalid value: -1: not in valid range [0, inf)"
    );
    assert_eq!(
        refused("DefaultPreemption", json!({"minCandidateNodes": 1})),
        r#"DefaultPreemption: unknown field "minCandidateNodes""#
    );
    assert!(registry
        .build(
            "DefaultPreemption",
            &json!({"kind": "DefaultPreemptionArgs", "minCandidateNodesAbsolute": 1})
        )
        .is_ok());
}

#[test]
fn preemption_stops_looking_after_the_configured_number_of_candidates() {
    let low = |name: &str| {
        let mut p = web_pod("x", json!({"priority": 0}));
        p.metadata.name = Some(name.to_owned());
        p.spec.as_mut().unwrap().containers[0].resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "1"}})).unwrap());
        p
    };
    let nodes: Vec<Arc<NodeInfo>> = (0..3)
        .map(|i| node_info(&format!("node{i}"), "1", &[low(&format!("low{i}"))]))
        .collect();
    let profile = Profile::new("p").with_plugin(PluginConfig::new("NodeResourcesFit"));
    let fw = Framework::new(&capstan_scheduler::plugins::default_registry(), &profile).unwrap();
    let mut urgent = low("urgent");
    urgent.spec.as_mut().unwrap().priority = Some(100);
    let mut state = CycleState::new();
    let _ = fw.run_pre_filter(&mut state, &urgent, &nodes);
    let filtered: NodeStatusMap = nodes
        .iter()
        .map(|n| (n.name().to_owned(), fw.run_filter(&state, &urgent, n)))
        .collect();
    assert!(filtered.values().all(|s| s.code() == Code::Unschedulable));
    // Kubernetes' defaults (10 %, at least 100) look at all three nodes.
    assert_eq!(find_candidates(&fw, &urgent, &nodes, &filtered).len(), 3);
    // `minCandidateNodesPercentage: 0`, `minCandidateNodesAbsolute: 1`: the first found.
    let few = find_candidates_among(&fw, &urgent, &nodes, &filtered, 0, 1);
    assert_eq!(few.len(), 1);
    assert_eq!(few[0].victims.len(), 1);
}
