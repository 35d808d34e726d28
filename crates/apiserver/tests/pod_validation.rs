//! Pod spec validation seen through the real `kubectl`: bad volumes, mounts and environments
//! in Pods and in workload templates are refused with Kubernetes' 422 `Invalid` messages, and
//! nothing is stored.
//!
//! Needs `kubectl` on the PATH (see `tests/support/kubectl.rs`).

mod support;

use std::time::Duration;

use capstan_api::testing::within;
use support::kubectl::Kubectl;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_a_pod_mounting_an_undefined_volume_fails_and_stores_nothing() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let path = kubectl.write(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: nginx\n    volumeMounts:\n    - name: x\n      mountPath: /data\n  volumes:\n  - name: data\n    emptyDir: {}\n",
        );
        let refused = kubectl.fails(&["apply", "-f", path.to_str().unwrap()]).await;
        assert!(
            refused.contains(
                r#"The Pod "web" is invalid: spec.containers[0].volumeMounts[0].name: Not found: "x""#
            ),
            "{refused}"
        );
        let none = kubectl.fails(&["get", "pod", "web"]).await;
        assert!(none.contains("NotFound"), "nothing was stored: {none}");

        // The same Pod with the mount fixed is accepted.
        let fixed = kubectl.write(
            "fixed.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: nginx\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    emptyDir: {}\n",
        );
        kubectl.ok(&["apply", "-f", fixed.to_str().unwrap()]).await;
        let mounted = kubectl
            .ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].volumeMounts[0].name}"])
            .await;
        assert!(mounted.starts_with("data"), "{mounted}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_template_with_bad_volumes_and_env_is_refused_with_every_cause() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let path = kubectl.write(
            "deploy.yaml",
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx
        env:
        - name: FROM
          valueFrom: {}
        volumeMounts:
        - name: a
          mountPath: /data
        - name: b
          mountPath: /data
      volumes:
      - name: a
        emptyDir: {}
      - name: b
        emptyDir: {}
        hostPath:
          path: /tmp
"#,
        );
        let refused = kubectl.fails(&["apply", "-f", path.to_str().unwrap()]).await;
        for cause in [
            r#"The Deployment "web" is invalid"#,
            "spec.template.spec.volumes[1].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.template.spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            r#"spec.template.spec.containers[0].volumeMounts[1].name: Not found: "b""#,
            r#"spec.template.spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/data": must be unique"#,
        ] {
            assert!(refused.contains(cause), "missing {cause:?} in {refused}");
        }
        let none = kubectl.fails(&["get", "deployment", "web"]).await;
        assert!(none.contains("NotFound"), "nothing was stored: {none}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_config_map_item_escaping_its_volume_is_refused() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let path = kubectl.write(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cfg\nspec:\n  securityContext:\n    runAsUser: -1\n  containers:\n  - name: app\n    image: nginx\n  volumes:\n  - name: config\n    configMap:\n      name: settings\n      defaultMode: 1024\n      items:\n      - key: a\n        path: ../a\n",
        );
        let refused = kubectl.fails(&["create", "-f", path.to_str().unwrap()]).await;
        for cause in [
            "spec.volumes[0].configMap.defaultMode: Invalid value: 1024: must be a number between 0 and 0777 (octal), both inclusive",
            r#"spec.volumes[0].configMap.items[0].path: Invalid value: "../a": must not contain '..'"#,
            "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
        ] {
            assert!(refused.contains(cause), "missing {cause:?} in {refused}");
        }
        let none = kubectl.fails(&["get", "pod", "cfg"]).await;
        assert!(none.contains("NotFound"), "nothing was stored: {none}");
    })
    .await;
}
