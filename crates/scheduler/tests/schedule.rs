//! The scheduling algorithm and the binding-cycle runners, with fake plugins.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_scheduler::cache::Snapshot;
use capstan_scheduler::framework::*;
use capstan_scheduler::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_scheduler::schedule::*;
use parking_lot::Mutex;

/// Fits the nodes whose names are in `fits` (all when `None`), counting calls.
#[derive(Default)]
struct Fake {
    fits: Option<HashSet<String>>,
    error_on: Option<String>,
    filters: AtomicUsize,
    /// Score = the number in the node's name (`n7` → 7), capped at 100.
    score_by_name: bool,
    reserve_fails: bool,
    log: Mutex<Vec<String>>,
    permit: Option<PermitDecision>,
    bind: Option<Status>,
}
impl SchedulerPlugin for Fake {
    fn name(&self) -> &str {
        "Fake"
    }
}
impl FilterPlugin for Fake {
    fn filter(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        self.filters.fetch_add(1, Ordering::SeqCst);
        if self.error_on.as_deref() == Some(node.name()) {
            return Status::error("boom");
        }
        match &self.fits {
            Some(f) if !f.contains(node.name()) => {
                Status::unschedulable("node(s) didn't match Pod's node affinity/selector")
            }
            _ => Status::success(),
        }
    }
}
impl ScorePlugin for Fake {
    fn score(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        if !self.score_by_name {
            return Ok(0);
        }
        Ok(node.name()[1..].parse::<i64>().unwrap().min(100))
    }
}
impl ReservePlugin for Fake {
    fn reserve(&self, _: &mut CycleState, _: &Pod, node: &str) -> Status {
        self.log.lock().push(format!("reserve {node}"));
        if self.reserve_fails {
            Status::error("no")
        } else {
            Status::success()
        }
    }
    fn unreserve(&self, _: &mut CycleState, _: &Pod, node: &str) {
        self.log.lock().push(format!("unreserve {node}"));
    }
}
impl PermitPlugin for Fake {
    fn permit(&self, _: &mut CycleState, _: &Pod, _: &str) -> PermitDecision {
        self.permit.clone().unwrap_or(PermitDecision::Allow)
    }
}
#[async_trait]
impl BindPlugin for Fake {
    async fn bind(&self, _: &CycleState, _: &Pod, node: &str) -> Status {
        self.log.lock().push(format!("bind {node}"));
        self.bind.clone().unwrap_or_default()
    }
}

fn framework(fake: Arc<Fake>, percentage: Option<u32>) -> Framework {
    let mut r = PluginRegistry::new();
    r.register("Fake", move |_| {
        Ok(Plugin::builder(fake.clone())
            .filter()
            .score()
            .reserve()
            .permit()
            .bind()
            .build())
    })
    .unwrap();
    let mut profile = Profile::new("p").with_plugin(PluginConfig::new("Fake").weight(2));
    profile.percentage_of_nodes_to_score = percentage;
    Framework::new(&r, &profile).unwrap()
}

fn snapshot(n: usize) -> Snapshot {
    Snapshot::from_nodes((0..n).map(|i| {
        let mut node = Node::default();
        node.metadata.name = Some(format!("n{i}"));
        NodeInfo::new(Arc::new(node))
    }))
}

fn fits(names: &[&str]) -> Option<HashSet<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn the_share_of_nodes_to_score_follows_kubernetes_adaptive_default() {
    let cases = [
        (None, 10, 10),
        (None, 99, 99),
        (None, 100, 100),
        (None, 200, 100),  // 48% of 200 = 96, at least 100
        (None, 1000, 420), // 50 - 8 = 42%
        (None, 5000, 500), // 50 - 40 = 10%
        (None, 6000, 300), // 50 - 48 = 2% -> 5%
        (Some(100), 5000, 5000),
        (Some(30), 1000, 300),
        (Some(1), 1000, 100),
        (Some(0), 1000, 420),
    ];
    for (pct, all, want) in cases {
        assert_eq!(
            num_feasible_nodes_to_find(pct, all),
            want,
            "{pct:?} of {all}"
        );
    }
}

#[test]
fn the_pod_goes_to_the_best_scoring_feasible_node() {
    let fake = Arc::new(Fake {
        fits: fits(&["n1", "n3", "n4"]),
        score_by_name: true,
        ..Default::default()
    });
    let fw = framework(fake, None);
    let mut start = 0;
    let r = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(6),
        &mut start,
    )
    .unwrap();
    assert_eq!(r.suggested_host, "n4");
    assert_eq!(r.feasible_nodes, 3);
    assert_eq!(r.evaluated_nodes, 6);
}

#[test]
fn no_feasible_node_gives_kubernetes_message() {
    let fw = framework(
        Arc::new(Fake {
            fits: fits(&[]),
            ..Default::default()
        }),
        None,
    );
    let err = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(3),
        &mut 0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
    let ScheduleError::Unschedulable(fit) = err else {
        panic!("not unschedulable")
    };
    assert_eq!(fit.node_statuses["n0"].plugin(), Some("Fake"));
}

#[test]
fn a_filter_error_fails_the_attempt_instead_of_rejecting_the_node() {
    let fw = framework(
        Arc::new(Fake {
            error_on: Some("n1".into()),
            ..Default::default()
        }),
        None,
    );
    let err = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(3),
        &mut 0,
    )
    .unwrap_err();
    assert!(matches!(err, ScheduleError::Error(ref s) if s.plugin() == Some("Fake")));
}

#[test]
fn filtering_stops_after_enough_feasible_nodes() {
    let fake = Arc::new(Fake::default());
    let fw = framework(fake.clone(), None);
    let mut start = 0;
    let r = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(1000),
        &mut start,
    )
    .unwrap();
    assert_eq!(r.feasible_nodes, 420);
    assert_eq!(r.evaluated_nodes, 420);
    assert_eq!(fake.filters.load(Ordering::SeqCst), 420);
    assert_eq!(start, 420, "the next pod starts where this one stopped");
}

#[test]
fn past_the_first_nodes_filtering_goes_parallel_and_still_stops_early() {
    // 5,000 nodes: 500 must fit; the first 1,024 (filtered on the calling thread) do not.
    let fake = Arc::new(Fake {
        fits: Some((1024..5000).map(|i| format!("n{i}")).collect()),
        ..Default::default()
    });
    let fw = framework(fake.clone(), None);
    let r = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(5000),
        &mut 0,
    )
    .unwrap();
    assert_eq!(r.feasible_nodes, 500);
    assert_eq!(r.evaluated_nodes, 1524);
    let calls = fake.filters.load(Ordering::SeqCst);
    assert!((1524..5000).contains(&calls), "{calls} filter calls");
}

#[test]
fn a_pod_whose_nodes_are_mostly_rejected_is_filtered_against_every_node() {
    let fake = Arc::new(Fake {
        fits: fits(&["n2777"]),
        ..Default::default()
    });
    let fw = framework(fake.clone(), None);
    let r = schedule_pod(
        &fw,
        &mut CycleState::new(),
        &Pod::default(),
        &snapshot(3000),
        &mut 0,
    )
    .unwrap();
    assert_eq!(r.suggested_host, "n2777");
    assert_eq!(r.evaluated_nodes, 3000);
    assert_eq!(fake.filters.load(Ordering::SeqCst), 3000);
}

#[test]
fn equal_scores_are_broken_at_random() {
    let scores: Vec<NodeScore> = (0..4)
        .map(|i| NodeScore {
            name: format!("n{i}"),
            score: 10,
        })
        .chain([NodeScore {
            name: "low".into(),
            score: 1,
        }])
        .collect();
    let picked: HashSet<String> = (0..200).map(|_| select_host(&scores)).collect();
    assert_eq!(picked.len(), 4, "{picked:?}");
    assert!(!picked.contains("low"));
}

#[test]
fn a_failing_reserve_unreserves_and_permit_denials_win() {
    let fake = Arc::new(Fake {
        reserve_fails: true,
        permit: Some(PermitDecision::Wait(Duration::from_secs(5))),
        ..Default::default()
    });
    let fw = framework(fake.clone(), None);
    let mut state = CycleState::new();
    let s = fw.run_reserve(&mut state, &Pod::default(), "n1");
    assert!(s.is_error());
    assert_eq!(*fake.log.lock(), ["reserve n1", "unreserve n1"]);
    assert_eq!(
        fw.run_permit(&mut state, &Pod::default(), "n1"),
        PermitDecision::Wait(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn bind_plugins_that_skip_leave_binding_to_the_next_and_none_is_an_error() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let ok = framework(Arc::new(Fake::default()), None);
        let state = CycleState::new();
        assert!(ok
            .run_bind(&state, &Pod::default(), "n1")
            .await
            .is_success());
        let skipping = framework(
            Arc::new(Fake {
                bind: Some(Status::skip()),
                ..Default::default()
            }),
            None,
        );
        let s = skipping.run_bind(&state, &Pod::default(), "n1").await;
        assert!(s.is_error(), "{s}");
    })
    .await
    .unwrap();
}
