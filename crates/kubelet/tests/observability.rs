//! The kubelet's Prometheus series and health checks, on the fake runtime and clock.

mod support;

use capstan_runtime::fake::ImageBehaviour;
use prometheus_client::registry::Registry;
use serde_json::json;
use support::*;

fn scrape(node: &Node) -> String {
    let mut registry = Registry::default();
    node.kubelet
        .as_ref()
        .unwrap()
        .register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    text
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_containers_and_start_durations_are_served_as_kubernetes_names_them() {
    within(LIMIT, async {
        let node = Node::start(vec![("web", ImageBehaviour::new())]).await;
        let kubelet = node.kubelet.as_ref().unwrap();
        let health = kubelet.health();
        let ready = health.readyz.run("readyz", &[]).await;
        assert_eq!(
            ready.render(true),
            "[+]ping ok\n[+]registered ok\nreadyz check passed\n"
        );
        let live = health.livez.run("livez", &[]).await;
        assert_eq!(
            live.render(true),
            "[+]ping ok\n[+]syncloop ok\nlivez check passed\n"
        );
        let before = scrape(&node);
        assert_eq!(value(&before, "kubelet_running_pods"), Some(0.0));
        assert_eq!(
            value(&before, "kubelet_pod_start_duration_seconds_count"),
            Some(0.0)
        );

        node.create(pod("web-1", &[("web", "web"), ("side", "web")], json!({})))
            .await;
        node.wait_pod("web-1", "Running", |p| phase(p) == "Running")
            .await;
        // The relist runs every second of the node's clock.
        node.advance(1).await;
        node.wait("the relist to see the pod", || {
            node.kubelet.as_ref().unwrap().running_pods() == 1
        })
        .await;
        let after = scrape(&node);
        assert_eq!(value(&after, "kubelet_running_pods"), Some(1.0));
        assert_eq!(
            value(
                &after,
                "kubelet_running_containers{container_state=\"running\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &after,
                "kubelet_running_containers{container_state=\"exited\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&after, "kubelet_pod_start_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            value(&after, "kubelet_node_name{node=\"node-1\"}"),
            Some(1.0),
            "{after}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kubelet_fails_its_syncloop_check() {
    within(LIMIT, async {
        let mut node = Node::start(vec![]).await;
        let health = node.kubelet.as_ref().unwrap().health();
        assert!(health.livez.run("livez", &[]).await.passed());
        node.kubelet.take().unwrap().stop();
        // The main loop's task is aborted; its drop marks the loop ended.
        let mut report = health.livez.run("livez", &[]).await;
        for _ in 0..100 {
            if !report.passed() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            report = health.livez.run("livez", &[]).await;
        }
        assert_eq!(
            report.render(false),
            "[+]ping ok\n[-]syncloop failed: reason withheld\nlivez check failed\n"
        );
    })
    .await;
}
