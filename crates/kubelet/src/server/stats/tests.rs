//! The sampler, the float format and the resource metrics' text.

use std::time::Duration;

use super::*;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200 + seconds)
}

fn stats(id: &str, seconds: u64, cpu: u64, rate: Option<u64>) -> ContainerStats {
    ContainerStats {
        container_id: id.into(),
        timestamp: at(seconds),
        cpu_usage_core_nanoseconds: cpu,
        cpu_usage_nano_cores: rate,
        memory_working_set_bytes: 0,
        memory_usage_bytes: 0,
    }
}

#[test]
fn the_cpu_rate_comes_from_the_runtime_or_from_two_samples() {
    let sampler = Sampler::default();
    assert_eq!(sampler.rate(&stats("a", 0, 1_000_000_000, None)), None);
    // 0.5 s of CPU over 2 s: a quarter of a core.
    assert_eq!(
        sampler.rate(&stats("a", 2, 1_500_000_000, None)),
        Some(250_000_000)
    );
    // The same sample again keeps the rate.
    assert_eq!(
        sampler.rate(&stats("a", 2, 1_500_000_000, None)),
        Some(250_000_000)
    );
    assert_eq!(sampler.rate(&stats("b", 0, 5, Some(42))), Some(42));
}

#[test]
fn floats_print_as_go_prints_them() {
    assert_eq!(go_float(0.0), "0");
    assert_eq!(go_float(1.5), "1.5");
    assert_eq!(go_float(123456.0), "123456");
    assert_eq!(go_float(1234567.0), "1.234567e+06");
    assert_eq!(go_float(1.7040672e9), "1.7040672e+09");
    assert_eq!(go_float(0.0001), "0.0001");
    assert_eq!(go_float(0.00001), "1e-05");
}

fn container(name: &str, cpu: u64, memory: u64) -> ContainerSummary {
    ContainerSummary {
        name: name.into(),
        start_time: time(at(1)),
        cpu: Some(CpuStats {
            time: time(at(10)),
            usage_nano_cores: None,
            usage_core_nano_seconds: cpu,
        }),
        memory: Some(MemoryStats {
            time: time(at(10)),
            usage_bytes: memory,
            working_set_bytes: memory,
        }),
    }
}

#[test]
fn resource_metrics_have_the_kubelets_names_labels_and_timestamps() {
    let pod = PodSummary {
        pod_ref: PodReference {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u".into(),
        },
        start_time: time(at(0)),
        containers: vec![container("app", 2_500_000_000, 1024)],
        cpu: Some(CpuStats {
            time: time(at(10)),
            usage_nano_cores: None,
            usage_core_nano_seconds: 2_500_000_000,
        }),
        memory: None,
    };
    let summary = Summary {
        node: NodeSummary {
            node_name: "n".into(),
            start_time: time(at(0)),
            cpu: pod.cpu.clone().unwrap(),
            memory: MemoryStats {
                time: time(at(10)),
                usage_bytes: 1024,
                working_set_bytes: 1024,
            },
        },
        pods: vec![pod],
        errors: 0,
    };
    let text = resource_metrics(&summary);
    let ms = 1_704_067_210_000u64;
    for line in [
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds".to_string(),
        "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        format!("container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web\"}} 2.5 {ms}"),
        format!("container_memory_working_set_bytes{{container=\"app\",namespace=\"default\",pod=\"web\"}} 1024 {ms}"),
        "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web\"} 1.704067201e+09".to_string(),
        format!("node_cpu_usage_seconds_total 2.5 {ms}"),
        format!("node_memory_working_set_bytes 1024 {ms}"),
        format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web\"}} 2.5 {ms}"),
        "resource_scrape_error 0".to_string(),
        "scrape_error 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // A pod without memory has no pod memory series; families are in name order.
    assert!(!text.contains("pod_memory_working_set_bytes{"));
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn label_values_are_escaped_for_the_text_format() {
    assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(escape("two\nlines"), r"two\nlines");
    assert_eq!(escape("web-1"), "web-1");
}
