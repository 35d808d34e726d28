//! Requests and limits on a node: the runtime gets each container's cgroup settings, the
//! Pod its QoS class, a container over its memory limit is `OOMKilled` (exit code 137) and
//! restarted per policy, and a Pod that does not fit the node is rejected at admission.
//! On the fake runtime, whose scripted usage enforces the memory limit.

mod support;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::DeleteParams;
use capstan_runtime::fake::ImageBehaviour;
use capstan_runtime::{ContainerFilter, ContainerRuntime, ContainerState, LinuxContainerResources};
use serde_json::json;
use support::*;

fn qos(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.qos_class.as_deref()
}

fn with_resources(name: &str, image: &str, resources: serde_json::Value) -> serde_json::Value {
    let mut pod = pod(name, &[("app", image)], json!({}));
    pod["spec"]["containers"][0]["resources"] = resources;
    pod
}

/// The id of the running container of Pod `pod`.
async fn running_container(node: &Node, pod: &str) -> String {
    let listed = node
        .fake
        .list_containers(ContainerFilter::all().state(ContainerState::Running))
        .await
        .unwrap();
    listed
        .into_iter()
        .find(|c| c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(pod))
        .unwrap_or_else(|| panic!("no running container of {pod}"))
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pod_gets_its_qos_class_and_each_container_its_cgroup_settings() {
    within(LIMIT, async {
        let node = Node::start(vec![("app", ImageBehaviour::new())]).await;
        node.create(with_resources(
            "guaranteed",
            "app",
            json!({"limits": {"cpu": "500m", "memory": "64Mi"}}),
        ))
        .await;
        node.create(with_resources(
            "burstable",
            "app",
            json!({"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1"}}),
        ))
        .await;
        node.create(with_resources("best-effort", "app", json!({})))
            .await;
        for (name, class) in [
            ("guaranteed", "Guaranteed"),
            ("burstable", "Burstable"),
            ("best-effort", "BestEffort"),
        ] {
            let pod = node
                .wait_pod(name, "Running", |p| phase(p) == "Running")
                .await;
            assert_eq!(qos(&pod), Some(class), "{name}");
        }
        let guaranteed = running_container(&node, "guaranteed").await;
        assert_eq!(
            node.fake.container_resources(&guaranteed).unwrap(),
            LinuxContainerResources::default()
                .cpu(512, 50_000, 100_000)
                .memory_limit(64 << 20)
                .oom_score_adj(-997)
        );
        // 1 GiB of the node's 8 GiB: 1000 - 1000 / 8.
        let burstable = running_container(&node, "burstable").await;
        assert_eq!(
            node.fake.container_resources(&burstable).unwrap(),
            LinuxContainerResources::default()
                .cpu(256, 100_000, 100_000)
                .oom_score_adj(875)
        );
        let best_effort = running_container(&node, "best-effort").await;
        assert_eq!(
            node.fake.container_resources(&best_effort).unwrap(),
            LinuxContainerResources::default()
                .cpu(2, 0, 100_000)
                .oom_score_adj(1000)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_oom_killed_and_restarted_per_policy() {
    within(LIMIT, async {
        let node = Node::start(vec![("app", ImageBehaviour::new().usage(10, 8 << 20))]).await;
        node.create(with_resources(
            "hungry",
            "app",
            json!({"limits": {"memory": "20Mi"}}),
        ))
        .await;
        let mut never = with_resources("once", "app", json!({"limits": {"memory": "20Mi"}}));
        never["spec"]["restartPolicy"] = json!("Never");
        node.create(never).await;
        for name in ["hungry", "once"] {
            node.wait_pod(name, "Running", |p| phase(p) == "Running")
                .await;
        }
        let first = running_container(&node, "hungry").await;
        let once = running_container(&node, "once").await;
        node.advance(1).await;
        // Within the limit nothing happens; over it, the kernel's OOM killer strikes.
        node.fake.set_usage(&first, 10, 20 << 20).unwrap();
        node.advance(1).await;
        assert_eq!(restarts(&node.get("hungry").await.unwrap(), "app"), 0);
        node.fake.set_usage(&first, 10, 21 << 20).unwrap();
        node.fake.set_usage(&once, 10, 64 << 20).unwrap();
        node.advance(1).await;
        let pod = node
            .wait_pod("hungry", "a restart after the OOM kill", |p| {
                restarts(p, "app") == 1
                    && container(p, "app")
                        .and_then(|c| c.state.as_ref())
                        .is_some_and(|s| s.running.is_some())
            })
            .await;
        let last = container(&pod, "app")
            .unwrap()
            .last_state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!(qos(&pod), Some("Burstable"));
        // The new attempt has the same limit.
        let second = running_container(&node, "hungry").await;
        assert_ne!(second, first);
        assert_eq!(
            node.fake
                .container_resources(&second)
                .unwrap()
                .memory_limit_in_bytes,
            20 << 20
        );
        // restartPolicy Never: the Pod fails with the OOM kill as its container's end.
        let failed = node
            .wait_pod("once", "Failed", |p| phase(p) == "Failed")
            .await;
        let terminated = container(&failed, "app")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!(restarts(&failed, "app"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_does_not_fit_the_node_is_rejected_with_out_of_cpu_and_never_started() {
    within(LIMIT, async {
        // The node has 4 CPUs, 8 GiB and 110 Pods.
        let node = Node::start(vec![("app", ImageBehaviour::new())]).await;
        node.create(with_resources(
            "big",
            "app",
            json!({"requests": {"cpu": "3"}}),
        ))
        .await;
        node.wait_pod("big", "Running", |p| phase(p) == "Running")
            .await;
        node.create(with_resources(
            "too-big",
            "app",
            json!({"requests": {"cpu": "2", "memory": "1Gi"}}),
        ))
        .await;
        let rejected = node
            .wait_pod("too-big", "Failed", |p| phase(p) == "Failed")
            .await;
        let status = rejected.status.clone().unwrap();
        assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
        assert_eq!(
            status.message.as_deref(),
            Some(
                "Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: 3000, capacity: 4000"
            )
        );
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
        assert!(
            node.has_event(
                "OutOfcpu",
                "Node didn't have enough resource: cpu, requested: 2000, used: 3000, capacity: 4000"
            )
            .await
        );
        // Memory also counts: 9 GiB is more than the node has.
        node.create(with_resources(
            "too-much-memory",
            "app",
            json!({"requests": {"memory": "9Gi"}}),
        ))
        .await;
        let rejected = node
            .wait_pod("too-much-memory", "Failed", |p| phase(p) == "Failed")
            .await;
        assert_eq!(
            rejected.status.unwrap().reason.as_deref(),
            Some("OutOfmemory")
        );
        // Nothing ran for the rejected Pods: one sandbox, one container.
        node.advance(2).await;
        assert_eq!(node.fake.metrics().sandboxes_run, 1);
        assert_eq!(node.fake.metrics().containers_created, 1);
        assert_eq!(
            phase(&node.get("too-big").await.unwrap()),
            "Failed",
            "a rejection is final"
        );
        // Once the big Pod is gone, its CPU is free for the next Pod.
        node.pods()
            .delete("big", &DeleteParams::default())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while node.get("big").await.is_some() {
            assert!(tokio::time::Instant::now() < deadline, "big never went away");
            node.advance(1).await;
        }
        node.create(with_resources(
            "fits-now",
            "app",
            json!({"requests": {"cpu": "2"}}),
        ))
        .await;
        node.wait_pod("fits-now", "Running", |p| phase(p) == "Running")
            .await;
    })
    .await;
}
