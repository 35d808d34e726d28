//! The cost of writing objects in Go struct order (`protobuf::struct_order`) against
//! `serde_json`'s sorted keys, per object, for a Pod and a Deployment as a controller leaves
//! them.
//!
//! ```text
//! cargo bench -p capstan-apiserver --bench json_struct_order
//! ```

use capstan_apiserver::protobuf::struct_order;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c6f5-x2k9p", "generateName": "web-7d4b9c6f5-", "namespace": "default",
            "uid": "0b8f8a36-4a51-4a4b-9d8b-6a4f7f0a9a11", "resourceVersion": "123456",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c6f5", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T09:59:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c6f5",
                "uid": "5d7e3b8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2024-05-01T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
        },
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}],
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "nodeName": "node-1",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2024-05-01T10:00:05Z"},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2024-05-01T10:00:00Z"}
            ],
            "hostIP": "10.0.0.1", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": "2024-05-01T10:00:00Z", "qosClass": "Burstable",
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx:1.25",
                "imageID": "docker.io/library/nginx@sha256:abc", "containerID": "containerd://def", "started": true,
                "state": {"running": {"startedAt": "2024-05-01T10:00:04Z"}}}]
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "9",
            "generation": 3, "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-05-01T10:00:05Z",
                "lastTransitionTime": "2024-05-01T10:00:05Z", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability."}]}
    })
}

fn encoding(c: &mut Criterion) {
    for (name, object) in [("pod", pod()), ("deployment", deployment())] {
        let mut group = c.benchmark_group(name);
        group.bench_function("serde_json sorted", |b| {
            b.iter(|| serde_json::to_vec(std::hint::black_box(&object)).unwrap())
        });
        group.bench_function("struct order", |b| {
            b.iter(|| struct_order::to_vec(std::hint::black_box(&object)))
        });
        group.finish();
    }
}

criterion_group!(benches, encoding);
criterion_main!(benches);
