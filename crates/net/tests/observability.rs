//! The service proxy's and cluster DNS' Prometheus series and readiness, against the
//! in-process API server over the memory store.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::health::HealthCheck;
use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_net::proxy::fake::FakeProxyBackend;
use capstan_net::proxy::{Proxier, ProxierMetrics, ProxierOptions, ProxyRulesSynced};
use capstan_watch::{InformerFactory, ReflectorOptions};
use prometheus_client::registry::Registry as Metrics;
use serde_json::json;

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

fn scrape(register: impl FnOnce(&mut Metrics)) -> String {
    let mut registry = Metrics::default();
    register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    text
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn create_service(client: &Arc<dyn Client>, name: &str) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_reports_kube_proxy_sync_series_and_is_ready_after_its_first_sync() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let metrics = Arc::new(ProxierMetrics::default());
        let ready = ProxyRulesSynced(metrics.clone());
        assert_eq!(
            ready.check().await,
            Err("the proxy rules have not been synced yet".into())
        );
        let before = scrape(|r| metrics.register(r));
        assert_eq!(
            value(&before, "kubeproxy_sync_proxy_rules_duration_seconds_count"),
            Some(0.0)
        );
        assert_eq!(
            value(&before, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
            Some(0.0)
        );

        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let proxier = Proxier::new(
            factory,
            Arc::new(FakeProxyBackend::new()),
            ProxierOptions {
                min_sync_period: Duration::from_millis(10),
                ..ProxierOptions::default()
            },
        )
        .with_metrics(metrics.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(proxier.run(async move {
            let _ = stopped.await;
        }));
        while !metrics.has_synced() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ready.check().await, Ok(()));
        create_service(&client, "web").await;
        while metrics.syncs() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = scrape(|r| metrics.register(r));
        assert!(value(&after, "kubeproxy_sync_proxy_rules_duration_seconds_count").unwrap() >= 2.0);
        assert!(
            value(
                &after,
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count"
            )
            .unwrap()
                >= 1.0
        );
        assert!(
            value(
                &after,
                "kubeproxy_sync_partial_proxy_rules_duration_seconds_count"
            )
            .unwrap()
                >= 1.0,
            "{after}"
        );
        let last = value(&after, "kubeproxy_sync_proxy_rules_last_timestamp_seconds").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - last).abs() < 60.0, "{last} vs {now}");
        assert!(
            value(
                &after,
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"
            )
            .unwrap()
                > 0.0
        );
        assert_eq!(
            value(&after, "kubeproxy_sync_proxy_rules_failures_total"),
            Some(0.0)
        );
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
    .await
}

#[cfg(feature = "dns")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_counts_requests_and_responses_as_coredns_does() {
    use capstan_net::dns::hickory::DnsServer;
    use capstan_net::dns::metrics::DnsMetrics;
    use capstan_net::dns::{ClusterDns, DEFAULT_DOMAIN};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::net::UdpSocket;

    async fn ask(server: std::net::SocketAddr, name: &str) -> Message {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&message.to_vec().unwrap(), server)
            .await
            .unwrap();
        let mut buffer = vec![0; 4096];
        let (len, _) = socket.recv_from(&mut buffer).await.unwrap();
        Message::from_vec(&buffer[..len]).unwrap()
    }

    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        create_service(&client, "web").await;
        let factory = InformerFactory::new(client.clone(), ReflectorOptions::default());
        let dns = ClusterDns::new(&factory, DEFAULT_DOMAIN).unwrap();
        let ready = dns.readiness();
        dns.wait_for_sync().await;
        assert_eq!(ready.check().await, Ok(()));
        assert_eq!(ready.name(), "informer-sync");
        let metrics = DnsMetrics::new();
        let server = DnsServer::bind_with_metrics(dns, "127.0.0.1:0".parse().unwrap(), metrics.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        ask(addr, "web.default.svc.cluster.local.").await;
        ask(addr, "web.default.svc.cluster.local.").await;
        ask(addr, "nope.default.svc.cluster.local.").await;
        ask(addr, "example.com.").await;
        let text = scrape(|r| metrics.register(r));
        let server_label = format!("dns://{addr}");
        let requests = format!(
            "coredns_dns_requests_total{{server=\"{server_label}\",zone=\"cluster.local.\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"}}"
        );
        assert_eq!(value(&text, &requests), Some(3.0), "{text}");
        let noerror = format!(
            "coredns_dns_responses_total{{server=\"{server_label}\",zone=\"cluster.local.\",view=\"\",rcode=\"NOERROR\",plugin=\"kubernetes\"}}"
        );
        assert_eq!(value(&text, &noerror), Some(2.0), "{text}");
        let nxdomain = format!(
            "coredns_dns_responses_total{{server=\"{server_label}\",zone=\"cluster.local.\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"}}"
        );
        assert_eq!(value(&text, &nxdomain), Some(1.0), "{text}");
        let refused = format!(
            "coredns_dns_responses_total{{server=\"{server_label}\",zone=\".\",view=\"\",rcode=\"REFUSED\",plugin=\"\"}}"
        );
        assert_eq!(value(&text, &refused), Some(1.0), "{text}");
        let durations = format!(
            "coredns_dns_request_duration_seconds_count{{server=\"{server_label}\",zone=\"cluster.local.\",view=\"\",type=\"A\"}}"
        );
        assert_eq!(value(&text, &durations), Some(3.0), "{text}");
        server.shutdown().await.unwrap();
    })
    .await
}
