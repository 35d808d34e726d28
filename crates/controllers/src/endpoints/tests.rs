//! Unit tests of the Endpoints desired state.

use super::*;
use capstan_api::k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
};

fn service(ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        target_port: Some(target),
        ..ServicePort::default()
    }
}

fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: http_port,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    })
}

fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
    addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
}

#[test]
fn pods_with_different_named_ports_land_in_different_subsets() {
    let svc = service(vec![port("http", 80, IntOrString::String("http".into()))]);
    let pods = vec![
        pod("a", "10.0.0.2", true, 8080),
        pod("b", "10.0.0.1", false, 8080),
        pod("c", "10.0.0.3", true, 9090),
    ];
    let subsets = endpoint_subsets(&svc, &pods);
    assert_eq!(subsets.len(), 2);
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(ips(&subsets[0].addresses), ["10.0.0.2"]);
    assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.1"]);
    assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 9090);
    assert_eq!(ips(&subsets[1].addresses), ["10.0.0.3"]);
}

#[test]
fn ports_served_by_the_same_addresses_share_one_subset() {
    let svc = service(vec![
        port("http", 80, IntOrString::String("http".into())),
        port("metrics", 9100, IntOrString::Int(9100)),
    ]);
    let pods = vec![pod("a", "10.0.0.1", true, 8080)];
    let subsets = endpoint_subsets(&svc, &pods);
    assert_eq!(subsets.len(), 1);
    let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [8080, 9100]);
    let address = &subsets[0].addresses.as_ref().unwrap()[0];
    assert_eq!(address.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        address.target_ref.as_ref().unwrap().uid.as_deref(),
        Some("uid-a")
    );
}

/// Kubernetes lists the addresses of a Service without ports only when it is headless
/// (`clusterIP: None`), but labels the Endpoints headless whenever it has no cluster IP.
#[test]
fn only_a_headless_service_without_ports_lists_addresses_without_ports() {
    let pods = [pod("a", "10.0.0.1", true, 8080)];
    let cases = [
        (Some("None"), true, true),
        (Some(""), false, true),
        (None, false, true),
        (Some("10.96.0.10"), false, false),
    ];
    for (cluster_ip, listed, labelled) in cases {
        let mut svc = service(vec![]);
        svc.spec.as_mut().unwrap().cluster_ip = cluster_ip.map(str::to_string);
        let subsets = endpoint_subsets(&svc, &pods);
        assert_eq!(!subsets.is_empty(), listed, "{cluster_ip:?}");
        if listed {
            assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
            assert!(subsets[0].ports.is_none(), "{cluster_ip:?}");
        }
        let labels = desired_endpoints(&svc, &pods, None)
            .metadata
            .labels
            .unwrap();
        assert_eq!(
            labels.contains_key(HEADLESS_LABEL),
            labelled,
            "{cluster_ip:?}"
        );
    }
}

#[test]
fn publishing_not_ready_addresses_lists_every_pod_as_ready() {
    let mut svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let subsets = endpoint_subsets(&svc, &[pod("a", "10.0.0.1", false, 8080)]);
    assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
    assert!(subsets[0].not_ready_addresses.is_none());
}

#[test]
fn terminating_and_terminal_pods_and_pods_without_ip_are_left_out() {
    let svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
    let mut terminating = (*pod("a", "10.0.0.1", true, 8080)).clone();
    terminating.metadata.deletion_timestamp = Some(
        capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            capstan_api::k8s_openapi::jiff::Timestamp::now(),
        ),
    );
    let mut done = (*pod("b", "10.0.0.2", true, 8080)).clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut no_ip = (*pod("c", "", true, 8080)).clone();
    no_ip.status.as_mut().unwrap().pod_ip = None;
    let pods: Vec<Arc<Pod>> = [terminating, done, no_ip]
        .into_iter()
        .map(Arc::new)
        .collect();
    assert!(endpoint_subsets(&svc, &pods).is_empty());
}

#[test]
fn over_capacity_endpoints_are_truncated_keeping_ready_addresses() {
    let svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
    let pods: Vec<Arc<Pod>> = (0..1200)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.1.{}.{}", i / 250, i % 250),
                i < 900,
                8080,
            )
        })
        .collect();
    let endpoints = desired_endpoints(&svc, &pods, None);
    let subsets = endpoints.subsets.unwrap();
    let ready: usize = subsets.iter().map(|s| ips(&s.addresses).len()).sum();
    let not_ready: usize = subsets
        .iter()
        .map(|s| ips(&s.not_ready_addresses).len())
        .sum();
    assert_eq!((ready, not_ready), (900, 100));
    assert_eq!(
        endpoints.metadata.annotations.unwrap()[OVER_CAPACITY_ANNOTATION],
        "truncated"
    );
}

#[test]
fn a_named_port_must_match_the_protocol() {
    let mut udp = port("dns", 53, IntOrString::String("http".into()));
    udp.protocol = Some("UDP".into());
    assert_eq!(find_port(&pod("a", "10.0.0.1", true, 8080), &udp), None);
    let tcp = port("http", 80, IntOrString::String("http".into()));
    assert_eq!(
        find_port(&pod("a", "10.0.0.1", true, 8080), &tcp),
        Some(8080)
    );
}
