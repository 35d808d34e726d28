use super::*;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::k8s_openapi::NamespaceResourceScope;
use capstan_api::kube_core::params::PostParams;
use capstan_apiserver::testing::{client, create_namespace};

const NS: &str = "apps";

async fn within<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), test)
        .await
        .expect("the test finished in time")
}

/// Creates the namespaced object `value` of kind `K` in [`NS`].
async fn create<K>(client: &Arc<dyn Client>, value: serde_json::Value)
where
    K: capstan_api::Resource<Scope = NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    create_namespace(client.as_ref(), NS).await;
    let object: K = serde_json::from_value(value).expect("the object decodes");
    Api::<K>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &object)
        .await
        .expect("created");
}

async fn config_map(client: &Arc<dyn Client>, name: &str, data: serde_json::Value) {
    create::<ConfigMap>(
        client,
        serde_json::json!({"metadata": {"name": name}, "data": data}),
    )
    .await;
}

/// A Secret whose `data` holds `data`'s strings, base64-encoded as the API carries them.
async fn secret(client: &Arc<dyn Client>, name: &str, data: &[(&str, &str)]) {
    use base64::Engine;
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            (k.to_string(), serde_json::Value::String(encoded))
        })
        .collect();
    create::<Secret>(
        client,
        serde_json::json!({"metadata": {"name": name}, "data": data}),
    )
    .await;
}

/// A Pod in [`NS`] on `node-1` whose first container is `container` (JSON).
fn pod_with(container: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": NS, "uid": "uid-1",
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "hi \"there\""}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "builder",
                 "containers": [container]},
    }))
    .expect("a pod")
}

/// Resolves the first container of `pod` with the node `node-1` at `192.168.0.2`, Pod IPs
/// `10.244.0.5` and `fd00::5`, and `services`.
async fn resolve_with(
    client: &Arc<dyn Client>,
    pod: &Pod,
    services: &[(String, String)],
) -> Result<ContainerEnv, EnvError> {
    let pod_ips = ["10.244.0.5".to_string(), "fd00::5".to_string()];
    let inputs = EnvInputs {
        client,
        node_name: "node-1",
        host_ip: Some("192.168.0.2"),
        pod_ips: &pod_ips,
        services,
    };
    let container = pod.spec.as_ref().unwrap().containers[0].clone();
    resolve(&inputs, pod, &container).await
}

fn var<'a>(env: &'a ContainerEnv, name: &str) -> Option<&'a str> {
    env.vars
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn env_from_takes_every_valid_key_behind_its_prefix_and_env_overrides_it() {
    within(async {
        let client = client();
        config_map(
            &client,
            "settings",
            serde_json::json!({"MODE": "fast", "1bad": "x", "LEVEL": "3", "9lives": "y"}),
        )
        .await;
        secret(&client, "creds", &[("USER", "admin"), ("PASS", "s3cret")]).await;
        let pod = pod_with(serde_json::json!({
            "name": "app", "image": "app",
            "envFrom": [
                {"configMapRef": {"name": "settings"}},
                {"prefix": "DB_", "secretRef": {"name": "creds"}},
                {"configMapRef": {"name": "absent", "optional": true}},
            ],
            "env": [{"name": "LEVEL", "value": "9"}],
        }));
        let env = resolve_with(&client, &pod, &[]).await.expect("resolved");
        assert_eq!(
            env.vars,
            pairs(&[
                ("LEVEL", "9"),
                ("MODE", "fast"),
                ("DB_PASS", "s3cret"),
                ("DB_USER", "admin"),
            ])
        );
        assert_eq!(
            env.warnings,
            vec![
                "Keys [1bad, 9lives] from the EnvFrom configMap apps/settings were skipped \
                 since they are considered invalid environment variable names."
                    .to_string()
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn key_references_read_config_maps_and_secrets_and_optional_ones_may_be_missing() {
    within(async {
        let client = client();
        config_map(&client, "settings", serde_json::json!({"mode": "fast"})).await;
        secret(&client, "creds", &[("password", "s3cret")]).await;
        let pod = pod_with(serde_json::json!({
            "name": "app", "image": "app",
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "NO_KEY", "valueFrom": {"configMapKeyRef":
                    {"name": "settings", "key": "other", "optional": true}}},
                {"name": "NO_MAP", "valueFrom": {"secretKeyRef":
                    {"name": "absent", "key": "k", "optional": true}}},
                {"name": "EMPTY"},
            ],
        }));
        let env = resolve_with(&client, &pod, &[]).await.expect("resolved");
        assert_eq!(
            env.vars,
            pairs(&[("MODE", "fast"), ("PASSWORD", "s3cret"), ("EMPTY", "")])
        );
    })
    .await;
}

#[tokio::test]
async fn missing_objects_and_keys_fail_with_kubernetes_messages() {
    within(async {
        let client = client();
        config_map(&client, "settings", serde_json::json!({"mode": "fast"})).await;
        secret(&client, "creds", &[("user", "admin")]).await;
        let cases = [
            (
                serde_json::json!({"configMapKeyRef": {"name": "absent", "key": "k"}}),
                EnvError::Missing("configmap \"absent\" not found".into()),
            ),
            (
                serde_json::json!({"configMapKeyRef": {"name": "settings", "key": "k"}}),
                EnvError::Missing("couldn't find key k in ConfigMap apps/settings".into()),
            ),
            (
                serde_json::json!({"secretKeyRef": {"name": "absent", "key": "k"}}),
                EnvError::Missing("secret \"absent\" not found".into()),
            ),
            (
                serde_json::json!({"secretKeyRef": {"name": "creds", "key": "password"}}),
                EnvError::Missing("couldn't find key password in Secret apps/creds".into()),
            ),
        ];
        for (value_from, want) in cases {
            let pod = pod_with(serde_json::json!({
                "name": "app", "image": "app",
                "env": [{"name": "X", "valueFrom": value_from}],
            }));
            assert_eq!(resolve_with(&client, &pod, &[]).await, Err(want));
        }
        let pod = pod_with(serde_json::json!({
            "name": "app", "image": "app",
            "envFrom": [{"secretRef": {"name": "gone"}}],
        }));
        assert_eq!(
            resolve_with(&client, &pod, &[]).await,
            Err(EnvError::Missing("secret \"gone\" not found".into()))
        );
    })
    .await;
}

#[tokio::test]
async fn field_references_give_the_pods_metadata_node_and_addresses() {
    within(async {
        let client = client();
        let fields = [
            ("metadata.name", "web"),
            ("metadata.namespace", NS),
            ("metadata.uid", "uid-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "hi \"there\""),
            ("metadata.labels", "app=\"web\"\ntier=\"front\""),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "builder"),
            ("status.hostIP", "192.168.0.2"),
            ("status.hostIPs", "192.168.0.2"),
            ("status.podIP", "10.244.0.5"),
            ("status.podIPs", "10.244.0.5,fd00::5"),
        ];
        let env: Vec<serde_json::Value> = fields
            .iter()
            .enumerate()
            .map(|(i, (path, _))| {
                serde_json::json!({"name": format!("F{i}"),
                                   "valueFrom": {"fieldRef": {"fieldPath": path}}})
            })
            .collect();
        let pod = pod_with(serde_json::json!({"name": "app", "image": "app", "env": env}));
        let resolved = resolve_with(&client, &pod, &[]).await.expect("resolved");
        for (i, (path, want)) in fields.iter().enumerate() {
            assert_eq!(var(&resolved, &format!("F{i}")), Some(*want), "{path}");
        }

        for (path, version, want) in [
            (
                "spec.hostname",
                None,
                "field label not supported: spec.hostname",
            ),
            (
                "spec.restartPolicy",
                None,
                "unsupported fieldPath: spec.restartPolicy",
            ),
            ("metadata.name", Some("v2"), "unsupported pod version: v2"),
        ] {
            let pod = pod_with(serde_json::json!({
                "name": "app", "image": "app",
                "env": [{"name": "X", "valueFrom":
                    {"fieldRef": {"fieldPath": path, "apiVersion": version}}}],
            }));
            let error = resolve_with(&client, &pod, &[]).await.unwrap_err();
            assert_eq!(error.to_string(), want);
        }
    })
    .await;
}

#[tokio::test]
async fn resource_references_divide_rounding_up_and_default_limits_to_allocatable() {
    within(async {
        let client = client();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}},
        }))
        .unwrap();
        Api::<Node>::cluster(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("node created");
        let reference = |name: &str, resource: &str, divisor: Option<&str>, of: Option<&str>| {
            serde_json::json!({"name": name, "valueFrom": {"resourceFieldRef":
                {"resource": resource, "divisor": divisor, "containerName": of}}})
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "app", "image": "app",
                 "resources": {"limits": {"memory": "64Mi"},
                               "requests": {"cpu": "250m", "memory": "32Mi"}},
                 "env": [
                     reference("CPU_LIMIT", "limits.cpu", None, None),
                     reference("CPU_LIMIT_M", "limits.cpu", Some("1m"), None),
                     reference("MEM_LIMIT", "limits.memory", None, None),
                     reference("MEM_LIMIT_MI", "limits.memory", Some("1Mi"), None),
                     reference("CPU_REQUEST", "requests.cpu", None, None),
                     reference("CPU_REQUEST_M", "requests.cpu", Some("1m"), None),
                     reference("STORAGE_REQUEST", "requests.ephemeral-storage", None, None),
                     reference("SIDE_MEM", "limits.memory", Some("1Gi"), Some("side")),
                 ]},
                {"name": "side", "image": "side"},
            ]},
        }))
        .unwrap();
        let env = resolve_with(&client, &pod, &[]).await.expect("resolved");
        let want = [
            ("CPU_LIMIT", "4"),
            ("CPU_LIMIT_M", "4000"),
            ("MEM_LIMIT", "67108864"),
            ("MEM_LIMIT_MI", "64"),
            ("CPU_REQUEST", "1"),
            ("CPU_REQUEST_M", "250"),
            ("STORAGE_REQUEST", "0"),
            ("SIDE_MEM", "8"),
        ];
        for (name, value) in want {
            assert_eq!(var(&env, name), Some(value), "{name}");
        }

        for (resource, of, want) in [
            (
                "limits.gpu",
                None,
                "unsupported container resource : limits.gpu",
            ),
            ("limits.cpu", Some("ghost"), "container ghost not found"),
        ] {
            let mut pod = pod.clone();
            pod.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(
                reference("X", resource, None, of),
            )
            .unwrap()]);
            let error = resolve_with(&client, &pod, &[]).await.unwrap_err();
            assert_eq!(error.to_string(), want);
        }
    })
    .await;
}

#[tokio::test]
async fn resource_references_need_the_node_object() {
    within(async {
        let client = client();
        let pod = pod_with(serde_json::json!({
            "name": "app", "image": "app",
            "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
        }));
        let error = resolve_with(&client, &pod, &[]).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to find node object, expected a node"
        );
    })
    .await;
}

#[tokio::test]
async fn values_command_and_args_expand_references_to_earlier_variables_and_services() {
    within(async {
        let client = client();
        config_map(&client, "settings", serde_json::json!({"HOST": "db"})).await;
        let services = pairs(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("OVERRIDDEN", "from-service"),
        ]);
        let pod = pod_with(serde_json::json!({
            "name": "app", "image": "app",
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "PORT", "value": "5432"},
                {"name": "URL", "value": "pg://$(HOST):$(PORT)/$(LATER)"},
                {"name": "LATER", "value": "x"},
                {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
                {"name": "LITERAL", "value": "$$(PORT) costs $5"},
                {"name": "OVERRIDDEN", "value": "mine"},
            ],
            "command": ["/bin/$(HOST)", "$(UNDEFINED)"],
            "args": ["--url=$(URL)", "--later=$(LATER)", "$$(URL)", "--api=$(OVERRIDDEN)"],
        }));
        let env = resolve_with(&client, &pod, &services)
            .await
            .expect("resolved");
        assert_eq!(var(&env, "URL"), Some("pg://db:5432/$(LATER)"));
        assert_eq!(var(&env, "API"), Some("https://10.96.0.1:443"));
        assert_eq!(var(&env, "LITERAL"), Some("$(PORT) costs $5"));
        assert_eq!(env.command, vec!["/bin/db", "$(UNDEFINED)"]);
        assert_eq!(
            env.args,
            vec![
                "--url=pg://db:5432/$(LATER)",
                "--later=x",
                "$(URL)",
                "--api=mine"
            ]
        );
        // The Services' variables come last, each name once: the container's own win.
        let names: Vec<&str> = env.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "HOST",
                "PORT",
                "URL",
                "LATER",
                "API",
                "LITERAL",
                "OVERRIDDEN",
                "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT"
            ]
        );
        assert_eq!(var(&env, "OVERRIDDEN"), Some("mine"));
    })
    .await;
}

#[tokio::test]
async fn service_links_give_the_namespaces_services_and_always_the_kubernetes_one() {
    within(async {
        let client = client();
        create_namespace(client.as_ref(), "default").await;
        let service = |ns: &str, name: &str, ip: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]},
            }))
            .unwrap()
        };
        for (ns, name, ip) in [
            ("default", "kubernetes", "10.96.0.1"),
            ("default", "other", "10.96.0.2"),
            (NS, "my-db", "10.96.0.3"),
            (NS, "headless", "None"),
        ] {
            create_namespace(client.as_ref(), ns).await;
            Api::<Service>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &service(ns, name, ip))
                .await
                .expect("service created");
        }
        let services = crate::service_env::MasterServiceEnv::new(client.clone());
        let host = |vars: &[(String, String)], name: &str| {
            vars.iter()
                .find(|(k, _)| k == &format!("{name}_SERVICE_HOST"))
                .map(|(_, v)| v.clone())
        };
        let linked = services.variables(NS, true).await;
        assert_eq!(host(&linked, "KUBERNETES").as_deref(), Some("10.96.0.1"));
        assert_eq!(host(&linked, "MY_DB").as_deref(), Some("10.96.0.3"));
        assert_eq!(host(&linked, "OTHER"), None);
        assert_eq!(host(&linked, "HEADLESS"), None);
        let unlinked = services.variables(NS, false).await;
        assert_eq!(host(&unlinked, "KUBERNETES").as_deref(), Some("10.96.0.1"));
        assert_eq!(host(&unlinked, "MY_DB"), None);

        // Read once per namespace and kept: a Service created now shows up only later.
        Api::<Service>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &service(NS, "late", "10.96.0.9"))
            .await
            .expect("service created");
        assert_eq!(host(&services.variables(NS, true).await, "LATE"), None);
        let fresh = crate::service_env::MasterServiceEnv::new(client.clone());
        assert_eq!(
            host(&fresh.variables(NS, true).await, "LATE").as_deref(),
            Some("10.96.0.9")
        );
    })
    .await;
}

#[test]
fn variable_names_follow_kubernetes_rules() {
    for name in [
        "A",
        "my.env-name",
        "MY_ENV.NAME",
        "MyEnvName1",
        "_x",
        "-x",
        ".x",
    ] {
        assert!(is_env_var_name(name), "{name}");
    }
    for name in ["", "1A", "a b", "a=b", ".", "..", "..x", "é"] {
        assert!(!is_env_var_name(name), "{name}");
    }
}
