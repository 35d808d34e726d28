use capstan_api::ResourceInfo;
use serde_json::{json, Value};

use super::core::endpoint_list;
use super::*;

/// 2026-01-01T00:00:00Z.
const NEW_YEAR: i64 = 1_767_225_600;

fn builtin(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo::builtin(group, kind).unwrap_or_else(|| panic!("{kind} is built in"))
}

fn cells(group: &str, kind: &str, object: &Value, now: i64) -> Value {
    let options = TableOptions {
        version: MetaVersion::V1,
        include: IncludeObject::Metadata,
        with_columns: true,
        now,
    };
    row(&printer(&builtin(group, kind)), object, &options)["cells"].clone()
}

fn headers(group: &str, kind: &str, priority: i32) -> Vec<String> {
    printer(&builtin(group, kind))
        .columns
        .iter()
        .filter(|c| c.priority == priority)
        .map(|c| c.name.to_uppercase())
        .collect()
}

#[test]
fn durations_read_like_kubectl() {
    for (seconds, shown) in [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (303, "5m3s"),
        (600, "10m"),
        (11_400, "3h10m"),
        (100_000, "27h"),
        (187_200, "2d4h"),
        (3_000_000, "34d"),
        (65_664_000, "2y30d"),
    ] {
        assert_eq!(human_duration(seconds), shown, "{seconds}");
    }
}

#[test]
fn every_built_in_kind_prints_one_cell_per_column_even_for_an_empty_object() {
    for resource in ResourceInfo::builtins() {
        let printer = printer(&resource);
        let cells = (printer.cells)(&json!({}), NEW_YEAR);
        assert_eq!(
            cells.len(),
            printer.columns.len(),
            "{}",
            resource.qualified_kind()
        );
        assert!(
            printer
                .columns
                .iter()
                .filter(|c| c.format == "name")
                .count()
                <= 1,
            "{}",
            resource.qualified_kind()
        );
    }
}

#[test]
fn cron_jobs_and_jobs_show_kubernetes_columns() {
    assert_eq!(
        headers("batch", "CronJob", 0),
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    assert_eq!(
        headers("batch", "CronJob", 1),
        ["CONTAINERS", "IMAGES", "SELECTOR"]
    );
    assert_eq!(
        headers("batch", "Job", 0),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(
        headers("batch", "Job", 1),
        ["CONTAINERS", "IMAGES", "SELECTOR"]
    );
}

#[test]
fn a_cron_job_row_shows_schedule_zone_suspension_and_last_run() {
    let cron_job = json!({
        "metadata": {"name": "backup", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "suspend": false, "jobTemplate": {"spec": {
            "template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2026-01-01T00:00:30Z"},
    });
    assert_eq!(
        cells("batch", "CronJob", &cron_job, NEW_YEAR + 90),
        json!([
            "backup",
            "*/5 * * * *",
            "<none>",
            "False",
            1,
            "60s",
            "90s",
            "b",
            "busybox",
            "<none>"
        ])
    );
}

#[test]
fn a_job_row_shows_status_completions_and_duration() {
    let job = json!({
        "metadata": {"name": "pi", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"completions": 3, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                 "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 3, "startTime": "2026-01-01T00:00:00Z",
                   "completionTime": "2026-01-01T00:00:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]},
    });
    assert_eq!(
        cells("batch", "Job", &job, NEW_YEAR + 600),
        json!([
            "pi",
            "Complete",
            "3/3",
            "42s",
            "10m",
            "pi",
            "perl",
            "batch.kubernetes.io/controller-uid=u"
        ])
    );
    let running =
        json!({"spec": {"parallelism": 2}, "status": {"startTime": "2026-01-01T00:00:00Z"}});
    let row = cells("batch", "Job", &running, NEW_YEAR + 5);
    assert_eq!(row[1], "Running");
    assert_eq!(row[2], "0/1 of 2");
    assert_eq!(row[3], "5s");
}

#[test]
fn a_pod_row_shows_readiness_status_restarts_and_placement() {
    let pod = json!({
        "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "node01", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
            {"ready": true, "restartCount": 2, "state": {"running": {}}},
            {"ready": false, "restartCount": 1, "state": {"running": {}}}
        ]},
    });
    assert_eq!(
        cells("", "Pod", &pod, NEW_YEAR + 45),
        json!([
            "web-1",
            "1/2",
            "Running",
            "3",
            "45s",
            "10.244.1.5",
            "node01",
            "<none>",
            "<none>"
        ])
    );
}

#[test]
fn pod_status_reads_waiting_reasons_init_progress_and_deletion() {
    let crashing = json!({
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"finishedAt": "2026-01-01T00:00:00Z"}}}]},
    });
    let row = cells("", "Pod", &crashing, NEW_YEAR + 120);
    assert_eq!(row[2], "CrashLoopBackOff");
    assert_eq!(row[3], "4 (2m ago)");
    let initializing = json!({
        "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "state": {"running": {}}}]},
    });
    assert_eq!(cells("", "Pod", &initializing, NEW_YEAR)[2], "Init:1/2");
    let deleting = json!({
        "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running"},
    });
    assert_eq!(cells("", "Pod", &deleting, NEW_YEAR)[2], "Terminating");
}

#[test]
fn a_deployment_row_shows_ready_over_desired() {
    let deployment = json!({
        "metadata": {"name": "newkubia", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "newkubia"}},
                 "template": {"spec": {"containers": [{"name": "newkubia", "image": "luksa/kubia:v2"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    assert_eq!(
        cells("apps", "Deployment", &deployment, NEW_YEAR + 60),
        json!([
            "newkubia",
            "2/3",
            3,
            2,
            "60s",
            "newkubia",
            "luksa/kubia:v2",
            "app=newkubia"
        ])
    );
}

#[test]
fn label_selectors_read_like_kubernetes() {
    let selector = json!({
        "matchLabels": {"tier": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "zone", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"},
        ],
    });
    assert_eq!(
        super::format::label_selector(&selector),
        "app,env in (dev,prod),tier=web,!zone"
    );
    assert_eq!(super::format::label_selector(&json!({})), "<none>");
    assert_eq!(super::format::label_selector(&Value::Null), "<none>");
}

#[test]
fn events_read_like_kubectl_get_events_wide() {
    let event = json!({
        "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "type": "Normal", "reason": "ScalingReplicaSet",
        "involvedObject": {"kind": "Deployment", "name": "nginx"},
        "source": {"component": "deployment-controller"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 2,
        "message": "Scaled up replica set nginx-879cf7b8c to 1",
    });
    assert_eq!(
        cells("", "Event", &event, NEW_YEAR),
        json!([
            "0s",
            "Normal",
            "ScalingReplicaSet",
            "deployment/nginx",
            "",
            "deployment-controller",
            "Scaled up replica set nginx-879cf7b8c to 1",
            "0s",
            2,
            "e"
        ])
    );
}

#[test]
fn events_k8s_io_events_read_their_regarding_object_and_note() {
    let event = json!({
        "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "type": "Warning", "reason": "BackOff",
        "regarding": {"kind": "Pod", "name": "web-0"},
        "note": "Back-off restarting failed container",
        "reportingController": "kubelet", "reportingInstance": "node01",
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "deprecatedLastTimestamp": "2026-01-01T00:00:00Z",
    });
    let row = cells("events.k8s.io", "Event", &event, NEW_YEAR + 60);
    assert_eq!(
        row,
        json!([
            "60s",
            "Warning",
            "BackOff",
            "pod/web-0",
            "",
            "kubelet, node01",
            "Back-off restarting failed container",
            "60s",
            1,
            "e"
        ])
    );
}

#[test]
fn an_endpoints_row_lists_three_addresses_then_how_many_more() {
    let endpoints = json!({
        "metadata": {"name": "web"},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "ports": [{"port": 8080}, {"port": 9090}],
        }],
    });
    assert_eq!(
        endpoint_list(&endpoints),
        "10.0.0.1:8080,10.0.0.2:8080,10.0.0.1:9090 + 1 more..."
    );
    let one = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
    assert_eq!(endpoint_list(&one), "10.0.0.1:80");
    assert_eq!(endpoint_list(&json!({})), "<none>");
}

#[test]
fn services_show_their_external_address_by_type() {
    let balancer = json!({
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
                 "selector": {"app": "web"}},
    });
    let row = cells("", "Service", &balancer, NEW_YEAR);
    assert_eq!(row[1], "LoadBalancer");
    assert_eq!(row[2], "10.96.0.10");
    assert_eq!(row[3], "<pending>");
    assert_eq!(row[4], "80:30080/TCP");
    assert_eq!(row[6], "app=web");
    let external = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
    assert_eq!(cells("", "Service", &external, NEW_YEAR)[3], "example.com");
}

#[test]
fn kinds_without_a_kubernetes_printer_get_name_and_created_at() {
    let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2026-01-01T00:00:00Z"}});
    assert_eq!(
        headers("rbac.authorization.k8s.io", "Role", 0),
        ["NAME", "CREATED AT"]
    );
    assert_eq!(
        cells("rbac.authorization.k8s.io", "Role", &role, NEW_YEAR),
        json!(["reader", "2026-01-01T00:00:00Z"])
    );
    let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
    assert_eq!(printer(&widget).columns[1].type_, "date");
}

#[test]
fn bindings_storage_classes_and_budgets_read_like_kubectl() {
    let binding = json!({
        "metadata": {"name": "b"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                     {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}],
    });
    let row = cells(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        &binding,
        NEW_YEAR,
    );
    assert_eq!(row[1], "ClusterRole/view");
    assert_eq!(row[3], "alice");
    assert_eq!(row[4], "devs");
    assert_eq!(row[5], "tools:ci");
    let class = json!({
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path",
    });
    let row = cells("storage.k8s.io", "StorageClass", &class, NEW_YEAR);
    assert_eq!(
        row.as_array().unwrap()[..5],
        json!([
            "standard (default)",
            "rancher.io/local-path",
            "Delete",
            "Immediate",
            false
        ])
        .as_array()
        .unwrap()[..]
    );
    let budget = json!({"spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
    let row = cells("policy", "PodDisruptionBudget", &budget, NEW_YEAR);
    assert_eq!(
        row.as_array().unwrap()[1..4],
        [json!("2"), json!("N/A"), json!(1)]
    );
}

#[test]
fn rows_carry_the_whole_object_its_metadata_or_nothing_as_asked() {
    let map = json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "m", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"a": "b"},
    });
    let printer = printer(&builtin("", "ConfigMap"));
    let options = |include| TableOptions {
        version: MetaVersion::V1beta1,
        include,
        with_columns: true,
        now: NEW_YEAR,
    };
    let whole = row(&printer, &map, &options(IncludeObject::Object));
    assert_eq!(whole["object"], map);
    let metadata = row(&printer, &map, &options(IncludeObject::Metadata));
    assert_eq!(metadata["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(metadata["object"]["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(metadata["object"]["metadata"]["name"], "m");
    assert!(metadata["object"].get("data").is_none());
    let bare = row(&printer, &map, &options(IncludeObject::None));
    assert!(bare.get("object").is_none(), "{bare}");
    assert_eq!(bare["cells"], whole["cells"]);
    assert_eq!(bare["cells"], json!(["m", 1, "0s"]));
}

#[test]
fn include_object_reads_kubernetes_policy_names_and_defaults_to_metadata() {
    assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
    assert_eq!(
        IncludeObject::parse("Metadata"),
        Some(IncludeObject::Metadata)
    );
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("object"), None);
    assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
}

#[test]
fn a_table_carries_its_version_metadata_and_columns_only_when_asked() {
    let resource = builtin("", "Namespace");
    let options = TableOptions {
        version: MetaVersion::V1,
        include: IncludeObject::None,
        with_columns: false,
        now: NEW_YEAR,
    };
    let table = table(
        &resource,
        &[json!({"metadata": {"name": "a"}})],
        json!({"resourceVersion": "3"}),
        &options,
    );
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"]["resourceVersion"], "3");
    assert_eq!(table["columnDefinitions"], json!([]));
    assert_eq!(table["rows"][0]["cells"][0], "a");
}
