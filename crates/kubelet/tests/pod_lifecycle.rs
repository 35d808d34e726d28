//! The kubelet end to end: an in-process API server over the memory store, the fake runtime
//! and a network double sharing one `FakeClock` that the tests advance by hand.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::kube_core::params::DeleteParams;
use capstan_runtime::fake::ImageBehaviour;
use capstan_runtime::{ContainerFilter, ContainerRuntime, ExecResponse, PodSandboxFilter};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_becomes_running_with_its_ip_and_ready() {
    within(LIMIT, async {
        let node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        node.create(pod("web-1", &[("web", "web")], json!({})))
            .await;
        let pod = node
            .wait_pod("web-1", "Running and Ready", |p| {
                phase(p) == "Running" && condition(p, "Ready") == Some("True")
            })
            .await;
        let status = pod.status.clone().unwrap();
        let attached = node.network.attached();
        assert_eq!(attached.len(), 1, "one network attachment");
        let ip = attached.values().next().unwrap().to_string();
        assert_eq!(status.pod_ip.as_deref(), Some(ip.as_str()));
        assert_eq!(status.pod_ips.unwrap()[0].ip, ip);
        assert_eq!(status.host_ip.as_deref(), Some("192.168.0.10"));
        assert!(status.start_time.is_some());
        for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(&pod, kind), Some("True"), "{kind}");
        }
        let web = container(&pod, "web").unwrap();
        assert!(web.ready);
        assert_eq!(web.restart_count, 0);
        assert!(web.container_id.as_deref().unwrap().starts_with("fake://"));
        assert!(web.image_id.starts_with("sha256:"));
        assert!(web.state.as_ref().unwrap().running.is_some());
        // The attachment names the sandbox's namespace and the pod.
        let add = &node.network.adds()[0];
        assert!(!add.netns.as_os_str().is_empty());
        assert_eq!(add.pod_name, "web-1");
        let events = node.events().await;
        let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
        assert_eq!(events[0].1, "Pulling image \"web\"");
        assert_eq!(
            events[1].1,
            "Successfully pulled image \"web\" in 0s (0s including waiting). Image size: 1048576 bytes."
        );
        assert_eq!(events[2].1, "Created container: web");
        assert_eq!(events[3].1, "Started container web");
        // Nothing changes, nothing is written, though the worker keeps syncing.
        let version = pod.metadata.resource_version.clone();
        let kubelet = node.kubelet.as_ref().unwrap();
        assert_eq!(kubelet.metrics().pod_workers, 1);
        for _ in 0..3 {
            let syncs = kubelet.metrics().pod_syncs;
            node.advance(1).await;
            node.wait("a sync", || kubelet.metrics().pod_syncs > syncs)
                .await;
        }
        assert_eq!(
            node.get("web-1").await.unwrap().metadata.resource_version,
            version
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_10_20_then_40_seconds_on_the_injected_clock() {
    within(LIMIT, async {
        let node = Node::start(vec![("crash", ImageBehaviour::new().crash_loop())]).await;
        node.create(pod("crashy", &[("app", "crash")], json!({})))
            .await;
        node.wait_pod("crashy", "Running", |p| phase(p) == "Running")
            .await;
        // Exits 1 s after each start. The first exit is restarted at once.
        node.advance(1).await;
        node.wait_pod("crashy", "restart 1", |p| {
            restarts(p, "app") == 1 && waiting_reason(p, "app").is_none()
        })
        .await;
        for (restarted, delay) in (1..).zip([10u64, 20, 40]) {
            node.advance(1).await; // it crashes again
            let pod = node
                .wait_pod("crashy", "CrashLoopBackOff", |p| {
                    waiting_reason(p, "app").as_deref() == Some("CrashLoopBackOff")
                })
                .await;
            let message = container(&pod, "app")
                .unwrap()
                .state
                .clone()
                .unwrap()
                .waiting
                .unwrap()
                .message
                .unwrap();
            assert!(
                message.starts_with(&format!(
                    "back-off {delay}s restarting failed container=app pod=crashy_default("
                )),
                "{message}"
            );
            assert_eq!(phase(&pod), "Running");
            let last = container(&pod, "app")
                .unwrap()
                .last_state
                .clone()
                .unwrap()
                .terminated
                .unwrap();
            assert_eq!(last.exit_code, 1);
            node.advance(delay - 1).await;
            let pod = node.get("crashy").await.unwrap();
            assert_eq!(
                restarts(&pod, "app"),
                restarted,
                "no restart before {delay}s"
            );
            assert_eq!(
                waiting_reason(&pod, "app").as_deref(),
                Some("CrashLoopBackOff")
            );
            node.advance(1).await;
            node.wait_pod("crashy", "the next restart", |p| {
                restarts(p, "app") == restarted + 1
            })
            .await;
        }
        assert!(node.events().await.iter().any(|(r, m)| r == "BackOff"
            && m.starts_with("Back-off restarting failed container app in pod crashy_default(")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_never_and_on_failure_end_as_kubernetes_says() {
    within(LIMIT, async {
        let node = Node::start(vec![
            (
                "ok",
                ImageBehaviour::new().exit_after(Duration::from_secs(1), 0),
            ),
            (
                "bad",
                ImageBehaviour::new().exit_after(Duration::from_secs(1), 3),
            ),
        ])
        .await;
        node.create(pod(
            "never-ok",
            &[("c", "ok")],
            json!({"restartPolicy": "Never"}),
        ))
        .await;
        node.create(pod(
            "never-bad",
            &[("c", "bad")],
            json!({"restartPolicy": "Never"}),
        ))
        .await;
        node.create(pod(
            "onfailure-ok",
            &[("c", "ok")],
            json!({"restartPolicy": "OnFailure"}),
        ))
        .await;
        node.create(pod(
            "onfailure-bad",
            &[("c", "bad")],
            json!({"restartPolicy": "OnFailure"}),
        ))
        .await;
        for name in ["never-ok", "never-bad", "onfailure-ok", "onfailure-bad"] {
            node.wait_pod(name, "Running", |p| phase(p) == "Running")
                .await;
        }
        node.advance(1).await;
        let done = node
            .wait_pod("never-ok", "Succeeded", |p| phase(p) == "Succeeded")
            .await;
        let terminated = container(&done, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (0, Some("Completed"))
        );
        assert_eq!(condition(&done, "Ready"), Some("False"));
        let failed = node
            .wait_pod("never-bad", "Failed", |p| phase(p) == "Failed")
            .await;
        let terminated = container(&failed, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (3, Some("Error"))
        );
        assert_eq!(restarts(&failed, "c"), 0);
        node.wait_pod("onfailure-ok", "Succeeded", |p| phase(p) == "Succeeded")
            .await;
        let retried = node
            .wait_pod("onfailure-bad", "a restart", |p| restarts(p, "c") == 1)
            .await;
        assert_eq!(phase(&retried), "Running");
        // Finished pods give their addresses back.
        node.wait("three attachments released", || {
            node.network.attached().len() == 1
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container_with_unhealthy_events() {
    within(LIMIT, async {
        let healthy = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (healthy.clone(), probes.clone());
        let image = ImageBehaviour::new().exec("check", move |_: &[String]| {
            count.fetch_add(1, Ordering::SeqCst);
            if flag.load(Ordering::SeqCst) {
                ExecResponse::new(0)
            } else {
                ExecResponse::new(1).stdout("not healthy")
            }
        });
        let node = Node::start(vec![("live", image)]).await;
        let mut spec = pod("live-1", &[("app", "live")], json!({}));
        spec["spec"]["containers"][0]["livenessProbe"] = json!({
            "exec": {"command": ["check"]}, "periodSeconds": 10, "failureThreshold": 3,
        });
        node.create(spec).await;
        node.wait_pod("live-1", "Running", |p| phase(p) == "Running")
            .await;
        node.wait("the first probe", || probes.load(Ordering::SeqCst) == 1)
            .await;
        healthy.store(false, Ordering::SeqCst);
        for run in 2..=3 {
            node.advance(10).await;
            node.wait("the next probe", || probes.load(Ordering::SeqCst) == run)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            restarts(&node.get("live-1").await.unwrap(), "app"),
            0,
            "two failures are tolerated"
        );
        node.advance(10).await;
        node.wait("the third failure", || probes.load(Ordering::SeqCst) >= 4)
            .await;
        healthy.store(true, Ordering::SeqCst);
        let pod = node
            .wait_pod("live-1", "a restart", |p| restarts(p, "app") == 1)
            .await;
        assert!(container(&pod, "app")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .running
            .is_some());
        let events = node.events().await;
        let unhealthy = events
            .iter()
            .filter(|(r, m)| r == "Unhealthy" && m == "Liveness probe failed: not healthy")
            .count();
        assert!(unhealthy >= 1, "{events:?}");
        assert!(
            node.has_event(
                "Killing",
                "Container app failed liveness probe, will be restarted"
            )
            .await
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_gates_the_ready_condition() {
    within(LIMIT, async {
        let node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        let mut spec = pod("ready-1", &[("web", "web")], json!({}));
        spec["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        spec["spec"]["containers"][0]["readinessProbe"] = json!({
            "httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2,
        });
        node.create(spec).await;
        let pod = node.wait_pod("ready-1", "Running", |p| phase(p) == "Running").await;
        assert_eq!(condition(&pod, "Ready"), Some("False"));
        assert!(!container(&pod, "web").unwrap().ready);
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert!(node.prober.calls().contains(&format!("http://{ip}:8080/ready")));
        node.prober.set(8080, true);
        node.advance(5).await;
        node.wait_pod("ready-1", "Ready", |p| condition(p, "Ready") == Some("True")).await;
        node.prober.set(8080, false);
        let calls = node.prober.calls().len();
        node.advance(5).await;
        node.wait("the next probe", || node.prober.calls().len() == calls + 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(condition(&node.get("ready-1").await.unwrap(), "Ready"), Some("True"), "one failure is tolerated");
        node.advance(5).await;
        let pod = node.wait_pod("ready-1", "not Ready", |p| condition(p, "Ready") == Some("False")).await;
        assert_eq!(restarts(&pod, "web"), 0, "readiness never restarts");
        assert!(node.has_event("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503").await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_before_the_app_containers() {
    within(LIMIT, async {
        let node = Node::start(vec![
            (
                "init-a",
                ImageBehaviour::new().exit_after(Duration::from_secs(2), 0),
            ),
            (
                "init-b",
                ImageBehaviour::new().exit_after(Duration::from_secs(3), 0),
            ),
            ("app", ImageBehaviour::new()),
        ])
        .await;
        let mut spec = pod("init-1", &[("app", "app")], json!({}));
        spec["spec"]["initContainers"] = json!([
            {"name": "a", "image": "init-a"}, {"name": "b", "image": "init-b"},
        ]);
        node.create(spec).await;
        let pod = node
            .wait_pod("init-1", "a running", |p| {
                container(p, "a")
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.running.as_ref())
                    .is_some()
            })
            .await;
        assert_eq!(phase(&pod), "Pending");
        assert_eq!(condition(&pod, "Initialized"), Some("False"));
        assert_eq!(
            waiting_reason(&pod, "app").as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(
            waiting_reason(&pod, "b").as_deref(),
            Some("PodInitializing")
        );
        let containers = node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap();
        assert_eq!(containers.len(), 1, "only the first init container runs");
        node.advance(2).await;
        node.wait_pod("init-1", "b running", |p| {
            container(p, "b")
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.running.as_ref())
                .is_some()
        })
        .await;
        node.advance(3).await;
        let pod = node
            .wait_pod("init-1", "Running", |p| phase(p) == "Running")
            .await;
        assert_eq!(condition(&pod, "Initialized"), Some("True"));
        let started: Vec<String> = node
            .events()
            .await
            .into_iter()
            .filter(|(r, _)| r == "Started")
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            started,
            [
                "Started container a",
                "Started container b",
                "Started container app"
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_delete_honours_the_grace_period_and_ends_with_the_pod_gone() {
    within(LIMIT, async {
        let node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        node.create(pod(
            "slow",
            &[("web", "web")],
            json!({"terminationGracePeriodSeconds": 7}),
        ))
        .await;
        node.create(pod("quick", &[("web", "web")], json!({})))
            .await;
        node.wait_pod("slow", "Running", |p| phase(p) == "Running")
            .await;
        node.wait_pod("quick", "Running", |p| phase(p) == "Running")
            .await;
        let sandboxes = node
            .fake
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap();
        assert_eq!(sandboxes.len(), 2);
        node.pods()
            .delete("slow", &DeleteParams::default())
            .await
            .unwrap();
        node.pods()
            .delete(
                "quick",
                &DeleteParams {
                    grace_period_seconds: Some(3),
                    ..DeleteParams::default()
                },
            )
            .await
            .unwrap();
        for name in ["slow", "quick"] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while node.get(name).await.is_some() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never went away"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut stops = node.runtime.stops.lock().clone();
        stops.sort();
        assert_eq!(
            stops,
            [
                ("web".to_string(), Duration::from_secs(3)),
                ("web".to_string(), Duration::from_secs(7))
            ]
        );
        assert!(node
            .fake
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
            .is_empty());
        assert!(node.network.attached().is_empty());
        let dels = node.network.dels();
        for sandbox in sandboxes {
            assert!(dels.contains(&sandbox.id));
        }
        let killing = node
            .events()
            .await
            .into_iter()
            .filter(|(r, m)| r == "Killing" && m == "Stopping container web")
            .count();
        assert!(killing >= 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_failure_shows_err_image_pull_then_image_pull_back_off() {
    within(LIMIT, async {
        let node = Node::start(vec![(
            "broken",
            ImageBehaviour::new().pull_error("manifest unknown"),
        )])
        .await;
        node.create(pod("pull-1", &[("app", "broken")], json!({})))
            .await;
        let pod = node
            .wait_pod("pull-1", "ErrImagePull", |p| {
                waiting_reason(p, "app").as_deref() == Some("ErrImagePull")
            })
            .await;
        assert_eq!(phase(&pod), "Pending");
        let message = container(&pod, "app")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
            .message
            .unwrap();
        assert!(
            message.starts_with("Failed to pull image \"broken\": "),
            "{message}"
        );
        node.advance(1).await;
        node.wait_pod("pull-1", "ImagePullBackOff", |p| {
            waiting_reason(p, "app").as_deref() == Some("ImagePullBackOff")
        })
        .await;
        assert_eq!(node.fake.metrics().image_pull_failures, 1);
        node.advance(9).await; // 10 s after the failure: pulled again, fails again
        node.wait("a second pull", || {
            node.fake.metrics().image_pull_failures == 2
        })
        .await;
        node.fake.registry().insert("broken", ImageBehaviour::new());
        node.advance(19).await; // held for 20 s now
        assert_eq!(node.fake.metrics().image_pull_failures, 2);
        assert_eq!(node.fake.metrics().images_pulled, 0);
        node.advance(1).await;
        node.wait_pod("pull-1", "Running", |p| phase(p) == "Running")
            .await;
        let events = node.events().await;
        assert!(events.contains(&("Failed".into(), "Error: ErrImagePull".into())));
        assert!(events.contains(&("BackOff".into(), "Back-off pulling image \"broken\"".into())));
        assert!(events.contains(&("Failed".into(), "Error: ImagePullBackOff".into())));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_adopts_running_pods_and_cleans_up_deleted_ones() {
    within(LIMIT, async {
        let mut node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        node.create(pod("keep", &[("web", "web")], json!({}))).await;
        node.create(pod("gone", &[("web", "web")], json!({}))).await;
        let keep = node
            .wait_pod("keep", "Running", |p| phase(p) == "Running")
            .await;
        node.wait_pod("gone", "Running", |p| phase(p) == "Running")
            .await;
        let gone_uid = node.get("gone").await.unwrap().metadata.uid.unwrap();
        let gone_sandbox = node
            .fake
            .list_pod_sandboxes(
                PodSandboxFilter::all().label(capstan_kubelet::POD_UID_LABEL, &gone_uid),
            )
            .await
            .unwrap()[0]
            .id
            .clone();
        // The kubelet dies; meanwhile the pod is force-deleted.
        node.kubelet.take().unwrap().stop();
        node.pods()
            .delete(
                "gone",
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
            )
            .await
            .unwrap();
        assert!(node.get("gone").await.is_none());
        let before = node.fake.metrics();
        node.start_kubelet().await;
        // Ready means leftovers are cleaned up.
        let sandboxes = node
            .fake
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap();
        assert_eq!(sandboxes.len(), 1);
        assert_ne!(sandboxes[0].id, gone_sandbox);
        assert!(node.network.dels().contains(&gone_sandbox));
        node.advance(2).await;
        node.advance(2).await;
        let after = node.fake.metrics();
        assert_eq!(
            after.containers_created, before.containers_created,
            "no duplicate containers"
        );
        assert_eq!(after.sandboxes_run, before.sandboxes_run, "no new sandbox");
        assert_eq!(
            node.fake
                .list_containers(ContainerFilter::all())
                .await
                .unwrap()
                .len(),
            1
        );
        let now = node.get("keep").await.unwrap();
        assert_eq!(phase(&now), "Running");
        assert_eq!(
            container(&now, "web").unwrap().container_id,
            container(&keep, "web").unwrap().container_id
        );
        assert_eq!(
            now.status.as_ref().unwrap().pod_ip,
            keep.status.as_ref().unwrap().pod_ip
        );
        // The adopted pod is still managed: deleting it stops it.
        node.pods()
            .delete("keep", &DeleteParams::default())
            .await
            .unwrap();
        node.wait("keep is stopped", || node.network.attached().is_empty())
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_probe_holds_back_the_other_probes_and_restarts_a_container_that_never_starts() {
    within(LIMIT, async {
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let image = ImageBehaviour::new()
            .exec("started", move |_: &[String]| {
                ExecResponse::new(if flag.load(Ordering::SeqCst) { 0 } else { 1 })
            })
            .exec("alive", |_: &[String]| ExecResponse::new(1).stdout("dead"));
        let node = Node::start(vec![("slow", image)]).await;
        let mut spec = pod("slow-1", &[("app", "slow")], json!({}));
        spec["spec"]["containers"][0]["startupProbe"] = json!({
            "exec": {"command": ["started"]}, "periodSeconds": 5, "failureThreshold": 2,
        });
        spec["spec"]["containers"][0]["livenessProbe"] = json!({
            "exec": {"command": ["alive"]}, "periodSeconds": 5, "failureThreshold": 1,
        });
        node.create(spec).await;
        let pod = node
            .wait_pod("slow-1", "Running", |p| phase(p) == "Running")
            .await;
        assert_eq!(container(&pod, "app").unwrap().started, Some(false));
        assert_eq!(condition(&pod, "Ready"), Some("False"));
        node.advance(5).await;
        node.wait_pod("slow-1", "a restart", |p| restarts(p, "app") == 1)
            .await;
        assert!(
            node.has_event(
                "Killing",
                "Container app failed startup probe, will be restarted"
            )
            .await
        );
        let events = node.events().await;
        assert!(
            !events
                .iter()
                .any(|(_, m)| m.starts_with("Liveness probe failed")),
            "liveness waits for startup: {events:?}"
        );
        // Once started, liveness runs (and here fails at once).
        started.store(true, Ordering::SeqCst);
        node.advance(5).await;
        node.wait("a liveness failure", || {
            futures_lite_block(node.has_event("Unhealthy", "Liveness probe failed: dead"))
        })
        .await;
    })
    .await;
}

/// Runs a short future to completion from a synchronous check.
fn futures_lite_block<F: std::future::Future<Output = bool>>(future: F) -> bool {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_fails_the_pod_or_is_restarted_per_policy() {
    within(LIMIT, async {
        let node = Node::start(vec![
            (
                "init-fail",
                ImageBehaviour::new().exit_after(Duration::from_secs(1), 2),
            ),
            ("app", ImageBehaviour::new()),
        ])
        .await;
        for (name, policy) in [("init-never", "Never"), ("init-always", "Always")] {
            let mut spec = pod(name, &[("app", "app")], json!({"restartPolicy": policy}));
            spec["spec"]["initContainers"] = json!([{"name": "setup", "image": "init-fail"}]);
            node.create(spec).await;
            node.wait_pod(name, "setup running", |p| {
                container(p, "setup")
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.running.as_ref())
                    .is_some()
            })
            .await;
        }
        node.advance(1).await;
        let failed = node
            .wait_pod("init-never", "Failed", |p| phase(p) == "Failed")
            .await;
        let setup = container(&failed, "setup").unwrap();
        assert_eq!(
            setup.state.clone().unwrap().terminated.unwrap().exit_code,
            2
        );
        assert_eq!(condition(&failed, "Initialized"), Some("False"));
        let retried = node
            .wait_pod("init-always", "setup restarted", |p| {
                restarts(p, "setup") == 1
            })
            .await;
        assert_eq!(phase(&retried), "Pending");
        let apps = node
            .fake
            .list_containers(
                ContainerFilter::all().label(capstan_kubelet::CONTAINER_NAME_LABEL, "app"),
            )
            .await
            .unwrap();
        assert!(
            apps.is_empty(),
            "no app container before the init containers succeed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_network_attach_leaves_nothing_behind_and_is_retried() {
    within(LIMIT, async {
        let node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        node.network.fail_adds(1);
        node.create(pod("net-1", &[("web", "web")], json!({})))
            .await;
        node.wait("a failed sandbox event", || {
            futures_lite_block(async {
                node.events().await.iter().any(|(r, m)| {
                    r == "FailedCreatePodSandBox" && m.contains("no free address in 10.244.0.0/24")
                })
            })
        })
        .await;
        let pod = node
            .wait_pod("net-1", "a status from the kubelet", |p| {
                container(p, "web").is_some()
            })
            .await;
        assert_eq!(phase(&pod), "Pending");
        assert_eq!(
            waiting_reason(&pod, "web").as_deref(),
            Some("ContainerCreating")
        );
        assert!(node
            .fake
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
            .is_empty());
        assert!(node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap()
            .is_empty());
        node.advance(1).await;
        let pod = node
            .wait_pod("net-1", "Running", |p| phase(p) == "Running")
            .await;
        assert!(pod.status.unwrap().pod_ip.is_some());
        assert_eq!(
            node.fake
                .list_pod_sandboxes(PodSandboxFilter::all())
                .await
                .unwrap()
                .len(),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_image_replaces_the_running_container() {
    within(LIMIT, async {
        let node = Node::start(vec![
            ("web:1", ImageBehaviour::new()),
            ("web:2", ImageBehaviour::new()),
        ])
        .await;
        node.create(pod("upgrade", &[("web", "web:1")], json!({})))
            .await;
        let mut pod = node
            .wait_pod("upgrade", "Running", |p| phase(p) == "Running")
            .await;
        let first_id = container(&pod, "web").unwrap().container_id.clone();
        pod.spec.as_mut().unwrap().containers[0].image = Some("web:2".into());
        node.pods()
            .update(&capstan_api::kube_core::params::PostParams::default(), &pod)
            .await
            .unwrap();
        let pod = node
            .wait_pod("upgrade", "the new image running", |p| {
                container(p, "web").is_some_and(|c| {
                    c.image == "web:2" && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
            })
            .await;
        let web = container(&pod, "web").unwrap();
        assert_ne!(web.container_id, first_id);
        assert_eq!(web.restart_count, 1);
        assert!(
            node.has_event(
                "Killing",
                "Container web definition changed, will be restarted"
            )
            .await
        );
        let running = node
            .fake
            .list_containers(ContainerFilter::all().state(capstan_runtime::ContainerState::Running))
            .await
            .unwrap();
        assert_eq!(running.len(), 1, "the old container is stopped");
    })
    .await;
}
