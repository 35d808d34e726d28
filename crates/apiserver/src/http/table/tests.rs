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
    assert_eq!(row[5], "tools/ci");
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

#[test]
fn a_job_reports_success_criteria_met_and_its_first_condition_of_a_type_decides() {
    let job = |conditions: Value| json!({"status": {"conditions": conditions}});
    let status = |conditions| cells("batch", "Job", &job(conditions), NEW_YEAR)[1].clone();
    assert_eq!(
        status(json!([{"type": "SuccessCriteriaMet", "status": "True"}])),
        "SuccessCriteriaMet"
    );
    assert_eq!(
        status(json!([{"type": "FailureTarget", "status": "True"}])),
        "FailureTarget"
    );
    assert_eq!(
        status(json!([{"type": "Suspended", "status": "True"},
                      {"type": "FailureTarget", "status": "True"}])),
        "Suspended"
    );
    assert_eq!(
        status(json!([{"type": "Complete", "status": "False"},
                      {"type": "Complete", "status": "True"}])),
        "Running"
    );
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    assert_eq!(cells("batch", "Job", &deleting, NEW_YEAR)[1], "Terminating");
}

#[test]
fn a_cron_job_prints_a_missing_time_zone_as_none_and_a_set_one_as_written() {
    let zoned = json!({"spec": {"schedule": "@daily", "timeZone": "Etc/UTC", "suspend": true}});
    let row = cells("batch", "CronJob", &zoned, NEW_YEAR);
    assert_eq!(row[2], "Etc/UTC");
    assert_eq!(row[3], "True");
    let empty = json!({"spec": {"timeZone": ""}});
    assert_eq!(cells("batch", "CronJob", &empty, NEW_YEAR)[2], "");
    let unset = cells("batch", "CronJob", &json!({}), NEW_YEAR);
    assert_eq!(unset[2], "<none>");
    assert_eq!(unset[3], "<unset>");
}

#[test]
fn a_persistent_volume_prints_its_claim_capacity_classes_and_reason() {
    assert_eq!(
        headers("", "PersistentVolume", 0),
        [
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(headers("", "PersistentVolume", 1), ["VOLUMEMODE"]);
    let volume = json!({
        "metadata": {"name": "pv1", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "new",
                 "claimRef": {"namespace": "default", "name": "data"},
                 "volumeAttributesClassName": "gold", "volumeMode": "Filesystem"},
        "status": {"phase": "Released", "reason": "Recycled"},
    });
    assert_eq!(
        cells("", "PersistentVolume", &volume, NEW_YEAR + 30),
        json!([
            "pv1",
            "5Gi",
            "RWO,RWX",
            "Retain",
            "Released",
            "default/data",
            "old",
            "gold",
            "Recycled",
            "30s",
            "Filesystem"
        ])
    );
    let bare = cells("", "PersistentVolume", &json!({}), NEW_YEAR);
    assert_eq!(bare[1], "0");
    assert_eq!(bare[5], "");
    assert_eq!(bare[7], "<unset>");
    assert_eq!(bare[10], "<unset>");
    let unnamed_claim = json!({"spec": {"claimRef": {"namespace": "default"}}});
    assert_eq!(
        cells("", "PersistentVolume", &unnamed_claim, NEW_YEAR)[5],
        "default/"
    );
}

#[test]
fn a_claim_prints_the_attributes_class_it_asks_for_and_capacity_only_once_bound() {
    assert_eq!(
        headers("", "PersistentVolumeClaim", 0),
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    let claim = json!({
        "metadata": {"name": "data", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"volumeName": "pv1", "storageClassName": "standard",
                 "volumeAttributesClassName": "gold"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                   "currentVolumeAttributesClassName": "silver"},
    });
    assert_eq!(
        cells("", "PersistentVolumeClaim", &claim, NEW_YEAR),
        json!(["data", "Bound", "pv1", "0", "RWO", "standard", "gold", "0s", "<unset>"])
    );
    let pending = json!({"spec": {"storageClassName": "standard"},
        "status": {"phase": "Pending", "capacity": {"storage": "1Gi"}}});
    let row = cells("", "PersistentVolumeClaim", &pending, NEW_YEAR);
    assert_eq!(row[3], "");
    assert_eq!(row[4], "");
    assert_eq!(row[6], "<unset>");
}

#[test]
fn a_priority_class_prints_its_preemption_policy_or_nothing() {
    assert_eq!(
        headers("scheduling.k8s.io", "PriorityClass", 0),
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    let class = json!({"metadata": {"name": "high"}, "value": 1000, "globalDefault": true,
        "preemptionPolicy": "Never"});
    let row = cells("scheduling.k8s.io", "PriorityClass", &class, NEW_YEAR);
    assert_eq!(row[1], 1000);
    assert_eq!(row[2], true);
    assert_eq!(row[4], "Never");
    let bare = cells("scheduling.k8s.io", "PriorityClass", &json!({}), NEW_YEAR);
    assert_eq!(bare[4], "");
}

#[test]
fn hpa_targets_read_like_kubectl_for_utilization_values_and_v1_objects() {
    let cpu = |current: Value| {
        json!({
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": current},
        })
    };
    let row = cells(
        "autoscaling",
        "HorizontalPodAutoscaler",
        &cpu(json!([{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 50}}}])),
        NEW_YEAR,
    );
    assert_eq!(row[1], "Deployment/web");
    assert_eq!(row[2], "cpu: 50%/80%");
    assert_eq!(row[3], "<unset>");
    assert_eq!(row[4], 5);
    assert_eq!(row[5], 2);
    let unknown = cells(
        "autoscaling",
        "HorizontalPodAutoscaler",
        &cpu(Value::Null),
        NEW_YEAR,
    );
    assert_eq!(unknown[2], "cpu: <unknown>/80%");
    let many = json!({"spec": {"metrics": [
        {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}},
        {"type": "External", "external": {"target": {"averageValue": "30"}}},
        {"type": "Object", "object": {"target": {"value": "2"}}},
        {}
    ]}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &many, NEW_YEAR)[2],
        "<unknown>/1k, <unknown>/30 (avg) + 2 more..."
    );
    let v1 = json!({"spec": {"targetCPUUtilizationPercentage": 70},
        "status": {"currentCPUUtilizationPercentage": 35}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &v1, NEW_YEAR)[2],
        "cpu: 35%/70%"
    );
    let nothing = cells(
        "autoscaling",
        "HorizontalPodAutoscaler",
        &json!({}),
        NEW_YEAR,
    );
    assert_eq!(nothing[2], "<none>");
}

#[test]
fn ingress_hosts_name_the_first_three_and_addresses_are_sorted_without_repeats() {
    let ingress = |hosts: &[&str]| {
        json!({
            "spec": {"rules": hosts.iter().map(|h| json!({"host": h})).collect::<Vec<_>>()},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "10.0.0.9"}, {"hostname": "lb.example.com"}, {"ip": "10.0.0.1"},
                {"ip": "10.0.0.9"}]}},
        })
    };
    let row = cells(
        "networking.k8s.io",
        "Ingress",
        &ingress(&["", "a", "b", "c"]),
        NEW_YEAR,
    );
    assert_eq!(row[1], "<none>");
    assert_eq!(row[2], "a,b,c");
    assert_eq!(row[3], "10.0.0.1,10.0.0.9,lb.example.com");
    assert_eq!(row[4], "80");
    let more = cells(
        "networking.k8s.io",
        "Ingress",
        &ingress(&["a", "b", "c", "", "d"]),
        NEW_YEAR,
    );
    assert_eq!(more[2], "a,b,c + 2 more...");
    let unnamed = cells(
        "networking.k8s.io",
        "Ingress",
        &ingress(&["", ""]),
        NEW_YEAR,
    );
    assert_eq!(unnamed[2], "*");
    let classed = json!({"spec": {"ingressClassName": "nginx", "tls": [{}]}});
    let row = cells("networking.k8s.io", "Ingress", &classed, NEW_YEAR);
    assert_eq!(row[1], "nginx");
    assert_eq!(row[4], "80, 443");
}

#[test]
fn a_resource_quota_prints_requests_and_limits_from_its_status_before_its_age() {
    assert_eq!(
        headers("", "ResourceQuota", 0),
        ["NAME", "REQUEST", "LIMIT", "AGE"]
    );
    let quota = json!({
        "metadata": {"name": "compute", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"hard": {"pods": "10", "limits.cpu": "4"}},
        "status": {"hard": {"pods": "10", "requests.cpu": "2", "limits.cpu": "4"},
                   "used": {"pods": "3", "limits.cpu": "500m"}},
    });
    assert_eq!(
        cells("", "ResourceQuota", &quota, NEW_YEAR + 60),
        json!([
            "compute",
            "pods: 3/10, requests.cpu: 0/2",
            "limits.cpu: 500m/4",
            "60s"
        ])
    );
    let without_status = json!({"spec": {"hard": {"pods": "10"}}});
    let row = cells("", "ResourceQuota", &without_status, NEW_YEAR);
    assert_eq!(row[1], "");
    assert_eq!(row[2], "");
}

#[test]
fn endpoints_whose_subsets_have_no_addresses_print_nothing() {
    let empty = json!({"subsets": [{"ports": [{"port": 80}]}]});
    assert_eq!(endpoint_list(&empty), "");
    let ipv6 = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
    assert_eq!(endpoint_list(&ipv6), "[fd00::1]:80");
}

#[test]
fn invalid_selectors_print_error_and_deployments_print_their_selector_bare() {
    let invalid = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
    assert_eq!(super::format::label_selector(&invalid), "<error>");
    let unknown = json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]});
    assert_eq!(super::format::label_selector(&unknown), "<error>");
    let deployment = |selector: Value| {
        cells(
            "apps",
            "Deployment",
            &json!({"spec": {"selector": selector}}),
            NEW_YEAR,
        )[7]
        .clone()
    };
    assert_eq!(deployment(json!({})), "");
    assert_eq!(deployment(invalid), "<invalid>");
    assert_eq!(
        deployment(json!({"matchLabels": {"app": "web"}})),
        "app=web"
    );
    let set = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}});
    assert_eq!(cells("apps", "ReplicaSet", &set, NEW_YEAR)[7], "app=web");
    assert_eq!(
        cells("apps", "ReplicaSet", &json!({}), NEW_YEAR)[7],
        "<none>"
    );
}

#[test]
fn a_node_reads_its_last_ready_condition_roles_and_addresses() {
    let node = json!({
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "",
            "kubernetes.io/role": "master", "node-role.kubernetes.io/": ""}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "Unknown"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0"},
        },
    });
    let row = cells("", "Node", &node, NEW_YEAR);
    assert_eq!(row[1], "NotReady,SchedulingDisabled");
    assert_eq!(row[2], "control-plane,master");
    assert_eq!(row[4], "v1.33.0");
    assert_eq!(row[5], "192.168.0.2");
    assert_eq!(row[6], "<none>");
    assert_eq!(row[7], "<unknown>");
    let unknown = cells("", "Node", &json!({}), NEW_YEAR);
    assert_eq!(unknown[1], "Unknown");
    assert_eq!(unknown[2], "<none>");
}

#[test]
fn a_load_balancer_service_lists_balancer_addresses_sorted_then_external_ips() {
    let service = json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.1"],
        "externalIPs": ["1.1.1.1"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}, {"ip": "2.2.2.2"}]}}});
    let row = cells("", "Service", &service, NEW_YEAR);
    assert_eq!(row[3], "2.2.2.2,5.5.5.5,1.1.1.1");
    assert_eq!(row[4], "<none>");
}

#[test]
fn a_certificate_signing_request_a_lease_and_an_endpoint_slice_read_like_kubectl() {
    assert_eq!(
        headers("certificates.k8s.io", "CertificateSigningRequest", 0),
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let lease = json!({"metadata": {"name": "kube-scheduler"},
        "spec": {"holderIdentity": "node1_abc"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &lease, NEW_YEAR)[1],
        "node1_abc"
    );
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &json!({}), NEW_YEAR)[1],
        ""
    );
    assert_eq!(
        headers("discovery.k8s.io", "EndpointSlice", 0),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    let slice = json!({
        "addressType": "IPv4",
        "ports": [{"port": 80}, {"name": "metrics"}, {}, {"port": 9090}],
        "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"]}, {"addresses": ["10.0.0.3", "10.0.0.4"]}],
    });
    let row = cells("discovery.k8s.io", "EndpointSlice", &slice, NEW_YEAR);
    assert_eq!(row[1], "IPv4");
    assert_eq!(row[2], "80,metrics,* + 1 more...");
    assert_eq!(row[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...");
    let empty = cells("discovery.k8s.io", "EndpointSlice", &json!({}), NEW_YEAR);
    assert_eq!(empty[2], "<unset>");
    assert_eq!(empty[3], "<unset>");
}
