//! The plugin SPI, the registry and profiles, with fake plugins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use capstan_scheduler::framework::*;
use capstan_scheduler::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_scheduler::Error;

struct AlwaysTrue;
impl SchedulerPlugin for AlwaysTrue {
    fn name(&self) -> &str {
        "AlwaysTrue"
    }
}
impl FilterPlugin for AlwaysTrue {
    fn filter(&self, _: &CycleState, _: &Pod, _: &NodeInfo) -> Status {
        Status::success()
    }
}

struct AlwaysFalse;
impl SchedulerPlugin for AlwaysFalse {
    fn name(&self) -> &str {
        "AlwaysFalse"
    }
}
impl FilterPlugin for AlwaysFalse {
    fn filter(&self, _: &CycleState, _: &Pod, _: &NodeInfo) -> Status {
        Status::unschedulable("always false")
    }
}

#[derive(Default)]
struct Counting {
    filters: AtomicUsize,
    skip_pre_filter: bool,
}
impl SchedulerPlugin for Counting {
    fn name(&self) -> &str {
        "Counting"
    }
}
impl PreFilterPlugin for Counting {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        _: &Pod,
        _: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status) {
        if self.skip_pre_filter {
            return (PreFilterResult::all_nodes(), Status::skip());
        }
        state.write("PreFilterCounting", 7usize);
        (PreFilterResult::all_nodes(), Status::success())
    }
}
impl FilterPlugin for Counting {
    fn filter(&self, state: &CycleState, _: &Pod, _: &NodeInfo) -> Status {
        self.filters.fetch_add(1, Ordering::SeqCst);
        match state.read::<usize>("PreFilterCounting") {
            Some(7) => Status::success(),
            _ => Status::error("missing pre-filter state"),
        }
    }
}
impl ScorePlugin for Counting {
    fn score(&self, _: &CycleState, _: &Pod, _: &NodeInfo) -> Result<i64, Status> {
        Ok(1)
    }
}

fn node(name: &str) -> NodeInfo {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    NodeInfo::new(Arc::new(n))
}

fn registry(counting: Arc<Counting>) -> PluginRegistry {
    let mut r = PluginRegistry::new();
    r.register("AlwaysTrue", |_| {
        Ok(Plugin::builder(Arc::new(AlwaysTrue)).filter().build())
    })
    .unwrap();
    r.register("AlwaysFalse", |_| {
        Ok(Plugin::builder(Arc::new(AlwaysFalse)).filter().build())
    })
    .unwrap();
    r.register("Counting", move |_| {
        Ok(Plugin::builder(counting.clone())
            .pre_filter()
            .filter()
            .score()
            .build())
    })
    .unwrap();
    r
}

#[test]
fn a_custom_plugin_is_built_from_the_registry_at_each_of_its_extension_points() {
    let r = registry(Arc::default());
    let profile = Profile::new("custom")
        .with_plugin(PluginConfig::new("AlwaysTrue"))
        .with_plugin(PluginConfig::new("Counting").weight(3));
    let fw = Framework::new(&r, &profile).unwrap();
    assert_eq!(fw.profile_name(), "custom");
    assert_eq!(fw.plugins_at("Filter"), vec!["AlwaysTrue", "Counting"]);
    assert_eq!(fw.plugins_at("PreFilter"), vec!["Counting"]);
    assert_eq!(fw.plugins_at("Score"), vec!["Counting"]);
    assert_eq!(fw.score_weight("Counting"), Some(3));
    assert_eq!(fw.score_weight("AlwaysTrue"), None);
    assert!(fw.queue_sort().is_none());
}

#[test]
fn a_zero_weight_means_one_and_a_negative_weight_is_refused() {
    let r = registry(Arc::default());
    let fw = Framework::new(
        &r,
        &Profile::new("p").with_plugin(PluginConfig::new("Counting")),
    )
    .unwrap();
    assert_eq!(fw.score_weight("Counting"), Some(1));
    let err = Framework::new(
        &r,
        &Profile::new("p").with_plugin(PluginConfig::new("Counting").weight(-1)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidProfile(_)), "{err}");
}

#[test]
fn unknown_and_repeated_plugins_are_refused() {
    let mut r = registry(Arc::default());
    let err = Framework::new(
        &r,
        &Profile::new("p").with_plugin(PluginConfig::new("Nope")),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::UnknownPlugin(ref n) if n == "Nope"),
        "{err}"
    );
    let twice = Profile::new("p")
        .with_plugin(PluginConfig::new("AlwaysTrue"))
        .with_plugin(PluginConfig::new("AlwaysTrue"));
    assert!(matches!(
        Framework::new(&r, &twice).unwrap_err(),
        Error::DuplicatePlugin(_)
    ));
    let err = r
        .register("AlwaysTrue", |_| {
            Ok(Plugin::builder(Arc::new(AlwaysTrue)).filter().build())
        })
        .err()
        .unwrap();
    assert!(matches!(err, Error::DuplicatePlugin(_)));
}

#[test]
fn a_factory_sees_the_profile_arguments_and_may_refuse_them() {
    let mut r = PluginRegistry::new();
    r.register("AlwaysTrue", |args| {
        if args.get("bad").is_some() {
            return Err(Error::InvalidArgs {
                plugin: "AlwaysTrue".into(),
                message: "bad is not allowed".into(),
            });
        }
        Ok(Plugin::builder(Arc::new(AlwaysTrue)).filter().build())
    })
    .unwrap();
    let ok = Profile::new("p").with_plugin(PluginConfig::new("AlwaysTrue"));
    assert!(Framework::new(&r, &ok).is_ok());
    let bad = Profile::new("p")
        .with_plugin(PluginConfig::new("AlwaysTrue").args(serde_json::json!({"bad": 1})));
    assert!(matches!(
        Framework::new(&r, &bad).unwrap_err(),
        Error::InvalidArgs { .. }
    ));
}

#[test]
fn a_profile_reads_from_kube_scheduler_style_json() {
    let profile: Profile = serde_json::from_value(serde_json::json!({
        "schedulerName": "custom",
        "percentageOfNodesToScore": 30,
        "plugins": [{"name": "AlwaysTrue"}, {"name": "Counting", "weight": 2}]
    }))
    .unwrap();
    assert_eq!(profile.percentage_of_nodes_to_score, Some(30));
    let fw = Framework::new(&registry(Arc::default()), &profile).unwrap();
    assert_eq!(fw.score_weight("Counting"), Some(2));
    assert_eq!(fw.percentage_of_nodes_to_score(), Some(30));
    let over: Profile = serde_json::from_value(serde_json::json!({
        "schedulerName": "x", "percentageOfNodesToScore": 101
    }))
    .unwrap();
    assert!(Framework::new(&registry(Arc::default()), &over).is_err());
}

#[test]
fn the_first_failing_filter_wins_and_names_its_plugin() {
    let counting = Arc::new(Counting::default());
    let r = registry(counting.clone());
    let profile = Profile::new("p")
        .with_plugin(PluginConfig::new("Counting"))
        .with_plugin(PluginConfig::new("AlwaysFalse"))
        .with_plugin(PluginConfig::new("AlwaysTrue"));
    let fw = Framework::new(&r, &profile).unwrap();
    let pod = Pod::default();
    let nodes = vec![Arc::new(node("n1"))];
    let mut state = CycleState::new();
    let (pre, s) = fw.run_pre_filter(&mut state, &pod, &nodes);
    assert!(s.is_success());
    assert_eq!(pre.node_names, None);
    let s = fw.run_filter(&state, &pod, &nodes[0]);
    assert_eq!(s.code(), Code::Unschedulable);
    assert_eq!(s.plugin(), Some("AlwaysFalse"));
    assert_eq!(s.reasons().collect::<Vec<_>>(), vec!["always false"]);
    assert_eq!(counting.filters.load(Ordering::SeqCst), 1);
}

#[test]
fn a_pre_filter_skip_turns_that_plugins_filter_off() {
    let counting = Arc::new(Counting {
        skip_pre_filter: true,
        ..Default::default()
    });
    let fw = Framework::new(
        &registry(counting.clone()),
        &Profile::new("p").with_plugin(PluginConfig::new("Counting")),
    )
    .unwrap();
    let pod = Pod::default();
    let mut state = CycleState::new();
    let (_, s) = fw.run_pre_filter(&mut state, &pod, &[]);
    assert!(s.is_success());
    assert!(state.skips_filter("Counting"));
    assert!(fw.run_filter(&state, &pod, &node("n1")).is_success());
    assert_eq!(counting.filters.load(Ordering::SeqCst), 0);
}

#[test]
fn pre_filter_results_intersect_and_an_empty_set_is_unresolvable() {
    let a = PreFilterResult::nodes(["n1", "n2"]);
    let b = PreFilterResult::nodes(["n2", "n3"]);
    assert_eq!(a.clone().merge(b), PreFilterResult::nodes(["n2"]));
    assert_eq!(
        a.clone().merge(PreFilterResult::all_nodes()),
        PreFilterResult::nodes(["n1", "n2"])
    );
    assert_eq!(
        PreFilterResult::nodes(["n1"]).merge(PreFilterResult::nodes(["n2"])),
        PreFilterResult::nodes(Vec::<String>::new())
    );
}

#[test]
fn cycle_state_is_keyed_by_name_and_typed() {
    let mut s = CycleState::new();
    s.write("A", 1u32);
    assert_eq!(s.read::<u32>("A"), Some(&1));
    assert_eq!(s.read::<u64>("A"), None);
    *s.read_mut::<u32>("A").unwrap() += 1;
    assert_eq!(s.remove::<u64>("A"), None);
    assert_eq!(s.remove::<u32>("A"), Some(2));
    assert_eq!(s.read::<u32>("A"), None);
}

#[test]
fn statuses_keep_their_reasons_and_success_is_the_default() {
    assert!(Status::default().is_success());
    let s = Status::unschedulable("a").with_reason("b");
    assert!(s.is_rejected());
    assert_eq!(s.to_string(), "a, b");
    assert!(Status::unresolvable("x").is_rejected());
    assert!(Status::error("x").is_error());
    assert!(Status::skip().is_skip());
    assert!(Status::wait().is_wait());
}
