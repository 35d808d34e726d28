//! The real `kubectl` against the API server on the in-memory store.
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client` works; `scripts/test` installs it
//! when missing) and the seed manifests in the repository's `examples/manifests`.
//! kubectl validates as it does against Kubernetes: it finds `fieldValidation` in the server's
//! OpenAPI v3 documents and leaves unknown fields to the server (strict by default). Recent
//! kubectl's typed `create <kind>` commands and its deletes send protobuf bodies
//! (`application/vnd.kubernetes.protobuf`), which the server decodes like JSON ones
//! (`kubectl_typed_create_commands_send_protobuf_and_succeed`).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_api::testing::within;
use support::kubectl::Kubectl;

/// Creates a ConfigMap from a manifest (`kubectl create -f`, which sends JSON).
async fn create_config_map(kubectl: &Kubectl, name: &str) {
    let path = kubectl.write(
        &format!("{name}.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n"),
    );
    kubectl.ok(&["create", "-f", path.to_str().unwrap()]).await;
}

/// Sends one HTTP/1.1 request (`head` holds the request line and headers, without the
/// blank line) with `body`, and returns the whole response as text.
async fn raw_request(address: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{head}\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Sends one HTTP/1.1 POST and returns the whole response as text.
async fn raw_post(
    address: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    let head = format!("POST {path} HTTP/1.1\r\nContent-Type: {content_type}");
    raw_request(address, &head, body).await
}

/// Sends one HTTP/1.1 GET with an `Accept` header and returns the whole response as text.
async fn raw_get(address: std::net::SocketAddr, path: &str, accept: &str) -> String {
    raw_request(
        address,
        &format!("GET {path} HTTP/1.1\r\nAccept: {accept}"),
        &[],
    )
    .await
}

fn manifests() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests");
    assert!(
        dir.is_dir(),
        "the seed manifests are expected at {} (the repository's examples/manifests)",
        dir.display()
    );
    dir
}

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_every_seed_manifest_and_reads_them_back() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let version = kubectl.ok(&["version", "-o", "json"]).await;
        assert!(version.contains("v1.33.0-capstan"), "{version}");
        let mut paths: Vec<_> = std::fs::read_dir(manifests())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in &paths {
            let applied = kubectl.ok(&["apply", "-f", path.to_str().unwrap()]).await;
            assert!(
                applied.contains("created")
                    || applied.contains("configured")
                    || applied.contains("unchanged"),
                "{}: {applied}",
                path.display()
            );
        }
        // Applying again changes nothing.
        let again = kubectl
            .ok(&[
                "apply",
                "-f",
                manifests()
                    .join("newkubia-deployment.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        assert!(again.contains("unchanged"), "{again}");

        let deployments = kubectl.ok(&["get", "deploy", "-o", "name"]).await;
        for name in [
            "deployment.apps/newkubia",
            "deployment.apps/nginx",
            "deployment.apps/web",
        ] {
            assert!(deployments.contains(name), "{deployments}");
        }
        let yaml = kubectl
            .ok(&["get", "deploy", "newkubia", "-o", "yaml"])
            .await;
        for defaulted in [
            "maxSurge: 25%",
            "revisionHistoryLimit: 10",
            "progressDeadlineSeconds: 600",
            "restartPolicy: Always",
        ] {
            assert!(
                yaml.contains(defaulted),
                "defaults are applied: {defaulted}\n{yaml}"
            );
        }
        let services = kubectl
            .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
            .await;
        assert!(
            services.starts_with("10."),
            "a cluster IP was allocated: {services}"
        );
        let wide = kubectl.ok(&["get", "pods", "-o", "wide"]).await;
        assert!(wide.contains("pod-example"), "{wide}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_labels_with_and_without_overwrite_and_deletes() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let node = std::env::temp_dir().join(format!("capstan-node-{}.yaml", std::process::id()));
        std::fs::write(
            &node,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node02\n",
        )
        .unwrap();
        kubectl.ok(&["apply", "-f", node.to_str().unwrap()]).await;
        let _ = std::fs::remove_file(&node);
        kubectl.ok(&["label", "nodes", "node02", "cz=bob"]).await;
        let conflict = kubectl
            .fails(&["label", "nodes", "node02", "cz=alice"])
            .await;
        assert!(conflict.contains("already has a value"), "{conflict}");
        kubectl
            .ok(&["label", "nodes", "node02", "cz=alice", "--overwrite"])
            .await;
        let selected = kubectl
            .ok(&["get", "nodes", "-l", "cz=alice", "-o", "name"])
            .await;
        assert_eq!(selected.trim(), "node/node02");
        let labels = kubectl
            .ok(&[
                "get",
                "node",
                "node02",
                "-o",
                "jsonpath={.metadata.labels.cz}",
            ])
            .await;
        assert_eq!(labels, "alice");
        kubectl.ok(&["delete", "node", "node02"]).await;
        let gone = kubectl.fails(&["get", "node", "node02"]).await;
        assert!(
            gone.contains("NotFound") || gone.contains("not found"),
            "{gone}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_streams_new_objects() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let watch = kubectl.spawn(&[
            "get",
            "configmaps",
            "--watch",
            "-o",
            "name",
            "--request-timeout=5s",
        ]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        create_config_map(&kubectl, "streamed").await;
        let output = tokio::time::timeout(Duration::from_secs(10), watch.wait_with_output())
            .await
            .expect("the watch ends by its timeout")
            .unwrap();
        let streamed = String::from_utf8_lossy(&output.stdout);
        assert!(streamed.contains("configmap/streamed"), "{streamed}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_status_and_the_server_keeps_serving() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let write =
            |name: &str, body: &str| kubectl.write(name, body).to_str().unwrap().to_string();
        let malformed = write("malformed.json", "{\"apiVersion\": \"v1\", ");
        let error = kubectl
            .fails(&[
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                &malformed,
            ])
            .await;
        assert!(
            error.contains("malformed JSON") || error.contains("BadRequest"),
            "{error}"
        );
        let wrong_kind = write(
            "wrong-kind.json",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#,
        );
        let error = kubectl
            .fails(&[
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                &wrong_kind,
            ])
            .await;
        assert!(error.contains("does not match"), "{error}");
        let invalid = write(
            "invalid.json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}}"#,
        );
        let error = kubectl
            .fails(&[
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                &invalid,
            ])
            .await;
        assert!(
            error.contains("metadata.name"),
            "the error names the field: {error}"
        );
        // A truncated protobuf body is a 400 Status, not a crash; a media type the server
        // does not speak is 415.
        let response = raw_post(
            kubectl.address(),
            "/api/v1/namespaces/default/configmaps",
            "application/vnd.kubernetes.protobuf",
            b"k8s\x00\x0a\x0f",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        assert!(response.contains("\"kind\":\"Status\""), "{response}");
        let response = raw_post(
            kubectl.address(),
            "/api/v1/namespaces/default/configmaps",
            "application/cbor",
            b"\xa0",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 415"), "{response}");
        let listed = kubectl.ok(&["get", "configmaps", "-o", "name"]).await;
        assert!(listed.trim().is_empty(), "nothing was stored: {listed}");
        create_config_map(&kubectl, "fine").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_kubernetes_columns() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        for manifest in [
            "newkubia-deployment.yaml",
            "pod-nodename.yaml",
            "rolling-update.yaml",
        ] {
            kubectl
                .ok(&["apply", "-f", manifests().join(manifest).to_str().unwrap()])
                .await;
        }
        let all = kubectl.ok(&["get", "deploy,pods"]).await;
        assert!(
            all.contains("READY   UP-TO-DATE   AVAILABLE   AGE"),
            "{all}"
        );
        assert!(all.contains("deployment.apps/newkubia   0/5"), "{all}");
        assert!(all.contains("READY   STATUS    RESTARTS   AGE"), "{all}");
        let wide = kubectl.ok(&["get", "pods", "-o", "wide"]).await;
        assert!(wide.contains("NODE"), "{wide}");
        assert!(wide.contains("node01"), "the bound node shows: {wide}");
        let services = kubectl.ok(&["get", "svc"]).await;
        assert!(
            services.contains("CLUSTER-IP") && services.contains("80/TCP"),
            "{services}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sorts_rows_by_any_field_of_the_whole_object() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        // Created in an order that neither names nor data sort into.
        for (name, rank) in [("bravo", "3"), ("alpha", "2"), ("charlie", "1")] {
            let path = kubectl.write(
                &format!("{name}.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  rank: \"{rank}\"\n"),
            );
            kubectl.ok(&["create", "-f", path.to_str().unwrap()]).await;
        }
        let names = |out: &str| {
            out.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().next().map(str::to_string))
                .collect::<Vec<_>>()
        };
        // `--sort-by` asks for `includeObject=Object`: a field outside the metadata sorts.
        let by_rank = kubectl
            .ok(&["get", "configmaps", "--sort-by=.data.rank"])
            .await;
        assert_eq!(names(&by_rank), ["charlie", "alpha", "bravo"], "{by_rank}");
        let by_name = kubectl
            .ok(&["get", "configmaps", "--sort-by=.metadata.name"])
            .await;
        assert_eq!(names(&by_name), ["alpha", "bravo", "charlie"], "{by_name}");
        // A policy Kubernetes does not define is a 400 naming the parameter.
        let response = raw_get(
            kubectl.address(),
            "/api/v1/namespaces/default/configmaps?includeObject=Everything",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        assert!(response.contains("\"kind\":\"Status\""), "{response}");
        assert!(response.contains("includeObject"), "{response}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scales_a_deployment_through_the_scale_subresource() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        kubectl
            .ok(&[
                "apply",
                "-f",
                manifests()
                    .join("newkubia-deployment.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        let scaled = kubectl
            .ok(&["scale", "deployment", "newkubia", "--replicas=3"])
            .await;
        assert!(scaled.contains("scaled"), "{scaled}");
        let replicas = kubectl
            .ok(&[
                "get",
                "deploy",
                "newkubia",
                "-o",
                "jsonpath={.spec.replicas} {.metadata.generation}",
            ])
            .await;
        assert_eq!(
            replicas, "3 2",
            "replicas changed and the generation moved on"
        );
        // A precondition on the current replicas that no longer holds is refused.
        let stale = kubectl
            .fails(&[
                "scale",
                "deployment",
                "newkubia",
                "--current-replicas=5",
                "--replicas=2",
            ])
            .await;
        assert!(
            stale.to_lowercase().contains("expected replicas to be 5"),
            "{stale}"
        );
        let unchanged = kubectl
            .ok(&[
                "get",
                "deploy",
                "newkubia",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .await;
        assert_eq!(unchanged, "3");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describes_a_pod_with_its_events_and_streams_new_events() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        kubectl
            .ok(&["apply", "-f", manifests().join("pod-nodename.yaml").to_str().unwrap()])
            .await;
        let uid = kubectl
            .ok(&["get", "pod", "pod-example", "-o", "jsonpath={.metadata.uid}"])
            .await;
        let watch = kubectl.spawn(&["get", "events", "--watch", "--request-timeout=5s"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let event = kubectl.write(
            "event.yaml",
            format!(
                "apiVersion: v1\nkind: Event\nmetadata:\n  name: pod-example.1\ninvolvedObject:\n  kind: Pod\n  name: pod-example\n  namespace: default\n  uid: {uid}\nreason: Scheduled\nmessage: Successfully assigned default/pod-example to node01\ntype: Normal\nsource:\n  component: default-scheduler\n"
            ),
        );
        kubectl
            .ok(&["create", "-f", event.to_str().unwrap()])
            .await;
        let output = tokio::time::timeout(Duration::from_secs(10), watch.wait_with_output())
            .await
            .expect("the watch ends by its timeout")
            .unwrap();
        let streamed = String::from_utf8_lossy(&output.stdout);
        assert!(streamed.contains("LAST SEEN   TYPE     REASON"), "{streamed}");
        assert!(
            streamed.contains("Normal   Scheduled   pod/pod-example   Successfully assigned default/pod-example to node01"),
            "the event streams as the seeds show it: {streamed}"
        );
        let described = kubectl.ok(&["describe", "pod", "pod-example"]).await;
        assert!(described.contains("Node:         node01"), "{described}");
        assert!(described.contains("Scheduled"), "describe lists the pod's events: {described}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_refuses_unknown_fields_strictly_and_warns_when_asked_to() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let path = kubectl.write(
            "typo.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: typo\nspec:\n  replicaz: 3\n  selector:\n    matchLabels: {app: typo}\n  template:\n    metadata:\n      labels: {app: typo}\n    spec:\n      containers:\n      - name: app\n        image: nginx\n        imagePullPolic: Always\n",
        );
        let file = path.to_str().unwrap();

        // kubectl's default, --validate=strict, leaves the check to the server.
        let refused = kubectl.fails(&["apply", "-f", file]).await;
        assert!(
            refused.contains(r#"strict decoding error: unknown field "spec.replicaz""#)
                && refused.contains(
                    r#"unknown field "spec.template.spec.containers[0].imagePullPolic""#
                ),
            "{refused}"
        );
        let none = kubectl.fails(&["get", "deploy", "typo"]).await;
        assert!(none.contains("NotFound"), "nothing was stored: {none}");

        // --validate=warn stores the object without the unknown fields, and says so.
        let output = kubectl.run(&["apply", "--validate=warn", "-f", file]).await;
        let stderr = &output.stderr;
        assert!(output.success(), "{stderr}");
        assert!(
            stderr.contains(r#"Warning: unknown field "spec.replicaz""#),
            "{stderr}"
        );
        // (The last-applied annotation keeps the manifest as written, as in Kubernetes.)
        let spec = kubectl
            .ok(&["get", "deploy", "typo", "-o", "jsonpath={.spec}"])
            .await;
        assert!(
            spec.contains("nginx") && !spec.contains("replicaz") && !spec.contains(r#""imagePullPolic":"#),
            "{spec}"
        );

        // kubectl patch has no --validate: the server's default, Warn, applies.
        let output = kubectl
            .run(&[
                "patch",
                "deploy",
                "typo",
                "--type=merge",
                "-p",
                r#"{"spec":{"paused":true,"pausd":true}}"#,
            ])
            .await;
        let stderr = &output.stderr;
        assert!(output.success(), "{stderr}");
        assert!(stderr.contains(r#"Warning: unknown field "spec.pausd""#), "{stderr}");
        let paused = kubectl
            .ok(&["get", "deploy", "typo", "-o", "jsonpath={.spec.paused}"])
            .await;
        assert_eq!(paused, "true");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_servers_openapi_schemas() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let replicas = kubectl.ok(&["explain", "deployment.spec.replicas"]).await;
        assert!(replicas.contains("Number of desired pods"), "{replicas}");
        let containers = kubectl.ok(&["explain", "pods.spec.containers"]).await;
        assert!(containers.contains("imagePullPolicy"), "{containers}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_create_commands_send_protobuf_and_succeed() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        for args in [
            &["create", "namespace", "team"][..],
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx",
                "--replicas=2",
                "--port=80",
            ],
            &["create", "job", "once", "--image=busybox"],
            &[
                "create",
                "cronjob",
                "tick",
                "--image=busybox",
                "--schedule=*/1 * * * *",
            ],
            &["create", "service", "clusterip", "web", "--tcp=80:8080"],
            &["create", "configmap", "settings", "--from-literal=a=b"],
            &["create", "secret", "generic", "token", "--from-literal=a=b"],
        ] {
            let created = kubectl.ok(args).await;
            assert!(created.contains("created"), "{}: {created}", args.join(" "));
        }
        let get = |args: &'static [&'static str]| {
            let kubectl = &kubectl;
            async move {
                let json = kubectl.ok(args).await;
                serde_json::from_str::<serde_json::Value>(&json).unwrap()
            }
        };
        let namespace = get(&["get", "namespace", "team", "-o", "json"]).await;
        assert_eq!(namespace["metadata"]["name"], "team");
        let deployment = get(&["get", "deployment", "web", "-o", "json"]).await;
        assert_eq!(deployment["spec"]["replicas"], 2);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "nginx");
        assert_eq!(container["ports"][0]["containerPort"], 80);
        // Defaulted as from JSON: the empty strings kubectl's protobuf carries read as unset.
        assert_eq!(container["imagePullPolicy"], "Always");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
        assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
        assert!(deployment["metadata"]["creationTimestamp"].is_string());
        let job = get(&["get", "job", "once", "-o", "json"]).await;
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox"
        );
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
        let cronjob = get(&["get", "cronjob", "tick", "-o", "json"]).await;
        assert_eq!(cronjob["spec"]["schedule"], "*/1 * * * *");
        let service = get(&["get", "service", "web", "-o", "json"]).await;
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        let config_map = get(&["get", "configmap", "settings", "-o", "json"]).await;
        assert_eq!(config_map["data"]["a"], "b");
        let secret = get(&["get", "secret", "token", "-o", "json"]).await;
        assert_eq!(secret["data"]["a"], "Yg==");
        assert_eq!(secret["type"], "Opaque");

        // Deletes send protobuf DeleteOptions (a grace period of 0 when forced).
        let deleted = kubectl
            .ok(&[
                "delete",
                "configmap",
                "settings",
                "--grace-period=0",
                "--force",
            ])
            .await;
        assert!(deleted.contains("deleted"), "{deleted}");
        let gone = kubectl.fails(&["get", "configmap", "settings"]).await;
        assert!(
            gone.contains("NotFound") || gone.contains("not found"),
            "{gone}"
        );
        let deleted = kubectl.ok(&["delete", "job", "once"]).await;
        assert!(deleted.contains("deleted"), "{deleted}");
        kubectl.fails(&["get", "job", "once"]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_cordons_the_node_and_deletes_its_pods() {
    within(LIMIT, async {
        let kubectl = Kubectl::start().await;
        let manifest = kubectl.write(
            "node-and-pod.yaml",
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\n\
             spec:\n  nodeName: worker\n  containers:\n  - name: web\n    image: nginx\n",
        );
        kubectl
            .ok(&["create", "-f", manifest.to_str().unwrap()])
            .await;
        // The Pod has no controller, so drain needs --force; it cordons the node, then
        // deletes the Pod (no eviction subresource here) with DeleteOptions in protobuf.
        let drained = kubectl
            .ok(&[
                "drain",
                "worker",
                "--force",
                "--grace-period=0",
                "--timeout=30s",
            ])
            .await;
        assert!(drained.contains("drained"), "{drained}");
        let node = kubectl
            .ok(&[
                "get",
                "node",
                "worker",
                "-o",
                "jsonpath={.spec.unschedulable}",
            ])
            .await;
        assert_eq!(node.trim(), "true");
        let pods = kubectl.ok(&["get", "pods", "-o", "name"]).await;
        assert!(pods.trim().is_empty(), "the pod is gone: {pods}");
    })
    .await;
}
