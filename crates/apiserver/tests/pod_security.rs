//! Pod Security Admission with the real kubectl: namespace labels, enforce refusing Pods (and
//! ephemeral containers) with Kubernetes' message, warnings printed for Pods and workload
//! templates, and the check of existing Pods when a namespace gets a stricter enforce level.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capstan_api::testing::within;
use capstan_apiserver::registry::admission::PodSecurityAdmission;
use capstan_apiserver::registry::Registry;
use capstan_store::memory::MemoryStore;
use support::kubectl::Kubectl;

const DEADLINE: Duration = Duration::from_secs(120);

/// A server whose registry runs the PodSecurity admission, as clusters do.
async fn server() -> Kubectl {
    let store: Arc<dyn capstan_store::Store> = Arc::new(MemoryStore::new());
    let registry =
        Arc::new(Registry::new(store.clone()).add_admission(PodSecurityAdmission::new(store)));
    Kubectl::serve(registry).await
}

/// A Pod meeting the restricted level.
const COMPLIANT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: compliant
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: app
    image: busybox
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
"#;

/// A Deployment sharing the host's network.
const HOST_NETWORK_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: edge
spec:
  selector:
    matchLabels:
      app: edge
  template:
    metadata:
      labels:
        app: edge
    spec:
      hostNetwork: true
      containers:
      - name: proxy
        image: nginx
"#;

#[tokio::test]
async fn enforce_restricted_refuses_a_plain_pod_and_admits_a_compliant_one() {
    within(DEADLINE, async {
        let kubectl = server().await;
        kubectl.ok(&["create", "namespace", "secure"]).await;
        kubectl
            .ok(&[
                "label",
                "namespace",
                "secure",
                "pod-security.kubernetes.io/enforce=restricted",
            ])
            .await;

        let refused = kubectl
            .fails(&["run", "x", "--image=busybox", "-n", "secure"])
            .await;
        assert!(
            refused.contains(
                "Error from server (Forbidden): pods \"x\" is forbidden: violates PodSecurity \
                 \"restricted:latest\": allowPrivilegeEscalation != false (container \"x\" must \
                 set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities \
                 (container \"x\" must set securityContext.capabilities.drop=[\"ALL\"]), \
                 runAsNonRoot != true (pod or container \"x\" must set \
                 securityContext.runAsNonRoot=true), seccompProfile (pod or container \"x\" must \
                 set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
            ),
            "{refused}"
        );
        let missing = kubectl.fails(&["get", "pod", "x", "-n", "secure"]).await;
        assert!(missing.contains("NotFound"), "{missing}");

        let manifest = kubectl.write("compliant.yaml", COMPLIANT);
        let outcome = kubectl
            .run(&["apply", "-n", "secure", "-f", manifest.to_str().unwrap()])
            .await;
        assert!(outcome.success(), "{}", outcome.stderr);
        assert!(!outcome.stderr.contains("Warning"), "{}", outcome.stderr);
        assert!(
            outcome.stdout.contains("pod/compliant created"),
            "{}",
            outcome.stdout
        );
    })
    .await;
}

#[tokio::test]
async fn warn_baseline_prints_a_warning_for_a_host_network_deployment() {
    within(DEADLINE, async {
        let kubectl = server().await;
        kubectl.ok(&["create", "namespace", "edge"]).await;
        kubectl
            .ok(&[
                "label",
                "namespace",
                "edge",
                "pod-security.kubernetes.io/warn=baseline",
            ])
            .await;
        let manifest = kubectl.write("edge.yaml", HOST_NETWORK_DEPLOYMENT);
        let outcome = kubectl
            .run(&["apply", "-n", "edge", "-f", manifest.to_str().unwrap()])
            .await;
        assert!(outcome.success(), "{}", outcome.stderr);
        assert!(
            outcome.stderr.contains(
                "Warning: would violate PodSecurity \"baseline:latest\": host namespaces \
                 (hostNetwork=true)"
            ),
            "{}",
            outcome.stderr
        );
        assert!(
            outcome.stdout.contains("deployment.apps/edge created"),
            "{}",
            outcome.stdout
        );

        // The same template in a namespace without labels: no warning.
        kubectl.ok(&["create", "namespace", "open"]).await;
        let outcome = kubectl
            .run(&["apply", "-n", "open", "-f", manifest.to_str().unwrap()])
            .await;
        assert!(outcome.success(), "{}", outcome.stderr);
        assert!(!outcome.stderr.contains("Warning"), "{}", outcome.stderr);
    })
    .await;
}

#[tokio::test]
async fn labelling_a_namespace_warns_about_existing_pods_that_would_be_refused() {
    within(DEADLINE, async {
        let kubectl = server().await;
        kubectl.ok(&["create", "namespace", "legacy"]).await;
        kubectl
            .ok(&[
                "run",
                "root",
                "--image=busybox",
                "-n",
                "legacy",
                "--overrides",
                r#"{"spec":{"hostPID":true}}"#,
            ])
            .await;
        let outcome = kubectl
            .run(&[
                "label",
                "namespace",
                "legacy",
                "pod-security.kubernetes.io/enforce=baseline",
            ])
            .await;
        assert!(outcome.success(), "{}", outcome.stderr);
        assert!(
            outcome.stderr.contains(
                "Warning: existing pods in namespace \"legacy\" violate the new PodSecurity \
                 enforce level \"baseline:latest\""
            ),
            "{}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains("Warning: root: host namespaces"),
            "{}",
            outcome.stderr
        );
        assert!(
            outcome.stdout.contains("namespace/legacy labeled"),
            "{}",
            outcome.stdout
        );

        let invalid = kubectl
            .fails(&[
                "label",
                "namespace",
                "legacy",
                "--overwrite",
                "pod-security.kubernetes.io/enforce=strict",
            ])
            .await;
        assert!(
            invalid.contains(
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": \
                 must be one of privileged, baseline, restricted"
            ),
            "{invalid}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_privileged_debug_container_is_refused_under_enforce_baseline() {
    within(DEADLINE, async {
        let kubectl = server().await;
        kubectl.ok(&["create", "namespace", "prod"]).await;
        kubectl
            .ok(&[
                "label",
                "namespace",
                "prod",
                "pod-security.kubernetes.io/enforce=baseline",
            ])
            .await;
        kubectl
            .ok(&["run", "web", "--image=nginx", "-n", "prod"])
            .await;
        let refused = kubectl
            .fails(&[
                "debug",
                "web",
                "-n",
                "prod",
                "--image=busybox",
                "--profile=sysadmin",
                "--container=debugger",
            ])
            .await;
        assert!(
            refused.contains(
                "pods \"web\" is forbidden: violates PodSecurity \"baseline:latest\": privileged \
                 (container \"debugger\" must not set securityContext.privileged=true)"
            ),
            "{refused}"
        );
        kubectl
            .ok(&[
                "debug",
                "web",
                "-n",
                "prod",
                "--image=busybox",
                "--profile=baseline",
                "--container=helper",
            ])
            .await;
    })
    .await;
}
