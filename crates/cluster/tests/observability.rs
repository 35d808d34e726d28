//! Every component of the embedded cluster serves Kubernetes' metrics and health over HTTP:
//! a Deployment is run to completion, then every component's `/metrics` is scraped over
//! loopback and the series that the work must have moved are checked, and every component's
//! `/healthz`, `/livez` and `/readyz?verbose` answer as kube-apiserver formats them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(150);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET url` over HTTP/1.0: the status code and the body.
async fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("a plain HTTP URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let address: SocketAddr = authority.parse().unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The value of `series` (its name and labels exactly as exposed) in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn base(metrics_url: &str) -> &str {
    metrics_url.strip_suffix("/metrics").unwrap()
}

/// A DNS query for `name` (type A, class IN), by hand.
fn dns_query(name: &str) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

const POST_DEPLOYMENTS: &str = "apiserver_request_total{verb=\"POST\",dry_run=\"\",group=\"apps\",version=\"v1\",resource=\"deployments\",subresource=\"\",scope=\"resource\",component=\"apiserver\",code=\"201\"}";
const DEPLOYMENT_ADDS: &str = "workqueue_adds_total{name=\"deployment-controller\"}";
const SCHEDULED: &str =
    "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_serves_kubernetes_metrics_and_health_that_follow_the_work() {
    tokio::time::timeout(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-observability-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _dir = TempDir(dir.clone());
        let mut config =
            ClusterConfig::fake("127.0.0.1:0".parse().unwrap(), dir.join("kubeconfig"), 2);
        config.state_dir = dir.join("nodes");
        let cluster = EmbeddedCluster::start(config).await.expect("the cluster starts");
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .await
            .expect("the nodes become Ready");

        // One endpoint per component, on its own port (the API server on its own).
        let endpoints = cluster.metrics_endpoints();
        let names: Vec<&str> = endpoints.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kube-apiserver",
                "kube-controller-manager/replica-0",
                "kube-scheduler/replica-0",
                "kubelet/node01",
                "kube-proxy/node01",
                "kubelet/node02",
                "kube-proxy/node02",
                "coredns",
            ]
        );
        let url = |name: &str| {
            endpoints
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, url)| url.clone())
                .unwrap()
        };
        let scrape = |name: &str| {
            let url = url(name);
            async move {
                let (code, body) = get(&url).await;
                assert_eq!(code, 200, "{url}: {body}");
                body
            }
        };

        let before_api = scrape("kube-apiserver").await;
        let before_cm = scrape("kube-controller-manager/replica-0").await;
        let posts_before = value(&before_api, POST_DEPLOYMENTS).unwrap_or(0.0);
        let adds_before = value(&before_cm, DEPLOYMENT_ADDS).unwrap_or(0.0);

        // The work: a Deployment of 3 replicas, run until its Pods are Running.
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                }
            }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(cluster.client(), "default")
            .create(&PostParams::default(), &deployment)
            .await
            .expect("the Deployment is created");
        let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
        loop {
            let running = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The API server counted the create, with kube-apiserver's labels.
        let api = scrape("kube-apiserver").await;
        assert_eq!(
            value(&api, POST_DEPLOYMENTS),
            Some(posts_before + 1.0),
            "{api}"
        );
        assert!(api.contains("# TYPE apiserver_request_duration_seconds histogram"));
        assert!(api.contains("apiserver_current_inflight_requests{request_kind=\"mutating\"}"));
        // Every other component watches through it.
        assert!(
            api.lines()
                .filter(|l| l.starts_with("apiserver_registered_watchers{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
                >= 5.0,
            "{api}"
        );

        // The Deployment controller's queue saw the new Deployment.
        let cm = scrape("kube-controller-manager/replica-0").await;
        let adds = value(&cm, DEPLOYMENT_ADDS).expect("the deployment controller's queue");
        assert!(adds > adds_before, "{adds} after {adds_before}");
        for queue in [
            "replicaset-controller",
            "garbage_collector_attempt_to_delete",
        ] {
            assert!(
                cm.contains(&format!("workqueue_depth{{name=\"{queue}\"}}")),
                "{queue}: {cm}"
            );
        }
        assert!(cm.contains("# TYPE workqueue_work_duration_seconds histogram"));
        assert!(cm.contains("workqueue_retries_total{name=\"deployment-controller\"}"));

        // The scheduler scheduled them.
        let scheduler = scrape("kube-scheduler/replica-0").await;
        assert!(
            value(&scheduler, SCHEDULED).unwrap_or(0.0) >= 3.0,
            "{scheduler}"
        );
        assert!(scheduler.contains("scheduler_pending_pods{queue=\"active\"}"));
        assert!(scheduler.contains(
            "scheduler_scheduling_attempt_duration_seconds_count{result=\"scheduled\",profile=\"default-scheduler\"}"
        ));

        // The kubelets run them (their relist is once a second).
        let mut running_pods = 0.0;
        for _ in 0..50 {
            running_pods = 0.0;
            for node in ["kubelet/node01", "kubelet/node02"] {
                running_pods += value(&scrape(node).await, "kubelet_running_pods").unwrap();
            }
            if running_pods >= 3.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(running_pods >= 3.0, "kubelet_running_pods: {running_pods}");
        let kubelet = scrape("kubelet/node01").await;
        assert!(kubelet.contains("kubelet_running_containers{container_state=\"running\"}"));
        assert!(kubelet.contains("kubelet_pod_start_duration_seconds_count"));
        assert_eq!(value(&kubelet, "kubelet_node_name{node=\"node01\"}"), Some(1.0));

        // Each proxy synced its rules.
        for proxy in ["kube-proxy/node01", "kube-proxy/node02"] {
            let text = scrape(proxy).await;
            assert!(
                value(&text, "kubeproxy_sync_proxy_rules_duration_seconds_count").unwrap() > 0.0,
                "{proxy}: {text}"
            );
            assert!(
                value(&text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds").unwrap() > 0.0
            );
        }

        // Cluster DNS counts what it answers.
        let dns = cluster.dns().expect("cluster DNS runs").address();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&dns_query("nope.default.svc.cluster.local"), dns)
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        socket.recv_from(&mut answer).await.unwrap();
        assert_eq!(answer[3] & 0x0f, 3, "NXDOMAIN");
        let coredns = scrape("coredns").await;
        let responses = format!(
            "coredns_dns_responses_total{{server=\"dns://{dns}\",zone=\"cluster.local.\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"}}"
        );
        assert_eq!(value(&coredns, &responses), Some(1.0), "{coredns}");
        assert!(coredns.contains("coredns_dns_requests_total{"));

        // Health: every component, every endpoint, with its own checks.
        let checks = [
            ("kube-apiserver", "etcd"),
            ("kube-controller-manager/replica-0", "informer-sync"),
            ("kube-scheduler/replica-0", "sched-handler-sync"),
            ("kubelet/node01", "registered"),
            ("kube-proxy/node01", "proxy-rules-synced"),
            ("kubelet/node02", "registered"),
            ("kube-proxy/node02", "proxy-rules-synced"),
            ("coredns", "informer-sync"),
        ];
        for (component, check) in checks {
            let base = base(&url(component)).to_string();
            assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok".into()), "{component}");
            assert_eq!(get(&format!("{base}/livez")).await, (200, "ok".into()), "{component}");
            let (code, body) = get(&format!("{base}/readyz?verbose")).await;
            assert_eq!(code, 200, "{component}: {body}");
            assert_eq!(
                body,
                format!("[+]ping ok\n[+]{check} ok\nreadyz check passed\n"),
                "{component}"
            );
            assert_eq!(get(&format!("{base}/readyz/ping")).await, (200, "ok".into()));
            assert_eq!(
                get(&format!("{base}/readyz/{check}")).await,
                (200, "ok".into()),
                "{component}"
            );
            let (code, _) = get(&format!("{base}/readyz/no-such-check")).await;
            assert_eq!(code, 404, "{component}");
        }
        let (code, body) = get(&format!("{}/livez?verbose", base(&url("kubelet/node01")))).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "[+]ping ok\n[+]syncloop ok\nlivez check passed\n")
        );

        cluster.shutdown().await;
    })
    .await
    .expect("the test finishes in time");
}
