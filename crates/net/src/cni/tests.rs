//! Unit tests of the CNI backend, with script plugins that log every call.

use super::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A temporary directory with script plugins that log every call.
struct Scripts {
    root: PathBuf,
}

impl Scripts {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("capstan-cni-unit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("log")).unwrap();
        Scripts { root }
    }

    fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }

    fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// A plugin that logs its stdin and CNI_* environment, then runs `on_add` for ADD
    /// (other commands succeed silently, VERSION answers 0.4.0 and 1.0.0).
    fn plugin(&self, name: &str, on_add: &str) {
        let log = self.root.join("log");
        let text = format!(
            r#"#!/bin/sh
n=$(printf %03d "$(ls "{log}" | wc -l)")
cat > "{log}/$n-{name}-$CNI_COMMAND.json"
env | grep '^CNI_' | sort > "{log}/$n-{name}-$CNI_COMMAND.zenv"
case "$CNI_COMMAND" in
  VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
  ADD) {on_add} ;;
esac
"#,
            log = log.display()
        );
        let path = self.bin().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The calls so far: (plugin, command, stdin, environment).
    fn calls(&self) -> Vec<(String, String, Value, String)> {
        let mut names: Vec<_> = std::fs::read_dir(self.root.join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let stem = n.trim_end_matches(".json");
                let mut parts = stem.splitn(3, '-');
                let (_, plugin, command) =
                    (parts.next(), parts.next().unwrap(), parts.next().unwrap());
                let stdin = std::fs::read(self.root.join("log").join(&n)).unwrap();
                let env =
                    std::fs::read_to_string(self.root.join("log").join(format!("{stem}.zenv")))
                        .unwrap();
                (
                    plugin.to_owned(),
                    command.to_owned(),
                    serde_json::from_slice(&stdin).unwrap(),
                    env,
                )
            })
            .collect()
    }

    fn calls_brief(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(p, c, _, _)| format!("{p} {c}"))
            .collect()
    }

    fn network(&self, plugins: Value) -> CniNetwork {
        let config = NetworkConfig::from_value(json!({
            "name": "unit", "cniVersion": "1.0.0", "plugins": plugins
        }))
        .unwrap();
        CniNetwork::builder(config)
            .plugin_dirs([self.bin()])
            .cache_dir(self.cache())
            .timeout(Duration::from_secs(10))
            .build()
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const IPAM_RESULT: &str = r#"echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}'"#;
const LINK_RESULT: &str = r#"echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/n"}],"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}]}'"#;
const FAILURE: &str = r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad range","details":"10.9.0.0/24 is full"}'; exit 1"#;

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("the test finishes in time")
}

fn pod(id: &str) -> Attachment {
    Attachment::new(id, format!("/var/run/netns/{id}")).pod("default", "web-0", "uid-1")
}

#[test]
fn a_conflist_and_a_single_conf_are_validated() {
    let list = NetworkConfig::from_slice(
        br#"{"name":"pods","cniVersion":"0.4.0","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        None,
    )
    .unwrap();
    assert_eq!(list.name(), "pods");
    assert_eq!(list.cni_version(), "0.4.0");
    assert_eq!(list.plugins().len(), 2);
    assert!(list.plugins()[1].has_capability("portMappings"));
    assert!(!list.plugins()[0].has_capability("portMappings"));
    let single = NetworkConfig::from_value(
        json!({"name":"one","cniVersion":"1.0.0","type":"bridge","bridge":"cni0"}),
    )
    .unwrap();
    assert_eq!(single.plugins()[0].plugin_type(), "bridge");
    assert_eq!(single.plugins()[0].raw()["bridge"], "cni0");

    let path = Path::new("/etc/cni/net.d/10-bad.conflist");
    for (text, wanted) in [
        (
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
            "\"name\"",
        ),
        (
            r#"{"name":"x","plugins":[{"type":"bridge"}]}"#,
            "\"cniVersion\"",
        ),
        (
            r#"{"name":"x","cniVersion":"0.2.0","plugins":[{"type":"bridge"}]}"#,
            "not supported",
        ),
        (r#"{"name":"x","cniVersion":"1.0.0","plugins":[]}"#, "empty"),
        (
            r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"bridge":"b"}]}"#,
            "plugin 0 has no",
        ),
        (
            r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"../sh"}]}"#,
            "invalid type",
        ),
        (
            r#"{"name":"x y","cniVersion":"1.0.0","type":"bridge"}"#,
            "network name",
        ),
        (r#"{"name":"x","cniVersion":"1.0.0"}"#, "neither"),
        ("[1]", "not a JSON object"),
        ("{", "not valid JSON"),
    ] {
        let err = NetworkConfig::from_slice(text.as_bytes(), Some(path)).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, NetError::InvalidConfig { path: Some(_), .. }),
            "{message}"
        );
        assert!(
            message.contains("10-bad.conflist") && message.contains(wanted),
            "{message}"
        );
    }
}

#[test]
fn the_lowest_sorted_file_of_a_directory_wins_and_a_broken_one_is_named() {
    let scripts = Scripts::new();
    let dir = scripts.root.join("net.d");
    std::fs::create_dir_all(&dir).unwrap();
    let err = NetworkConfig::load_dir(&dir).unwrap_err();
    assert!(
        err.to_string().contains("no network configuration"),
        "{err}"
    );
    std::fs::write(
        dir.join("20-b.conflist"),
        r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("10-a.conf"),
        r#"{"name":"a","cniVersion":"1.0.0","type":"bridge"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("00-notes.txt"), "ignored").unwrap();
    let config = NetworkConfig::load_dir(&dir).unwrap();
    assert_eq!(config.name(), "a");
    assert_eq!(config.source(), Some(dir.join("10-a.conf").as_path()));
    std::fs::write(dir.join("05-broken.conflist"), r#"{"name":"c"}"#).unwrap();
    let err = NetworkConfig::load_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("05-broken.conflist"), "{err}");
}

#[test]
fn add_chains_results_and_injects_name_version_args_and_port_mappings() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    // `ports` prints a fixed result where a real one would pass on its prevResult.
    scripts.plugin("ports", IPAM_RESULT);
    let network = scripts.network(json!([
        {"type": "link", "bridge": "cbr0", "prevResult": {"stale": true}},
        {"type": "ports", "capabilities": {"portMappings": true}}
    ]));
    let mut attachment = pod("sandbox1");
    attachment.port_mappings = vec![crate::PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: "tcp".into(),
        host_ip: "127.0.0.1".into(),
    }];
    run(async {
        let result = network.add(&attachment).await.unwrap();
        assert_eq!(
            result.pod_ips(),
            vec!["10.9.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
    });
    let calls = scripts.calls();
    assert_eq!(scripts.calls_brief(), ["link ADD", "ports ADD"]);
    let (_, _, link_in, link_env) = &calls[0];
    assert_eq!(link_in["name"], "unit");
    assert_eq!(link_in["cniVersion"], "1.0.0");
    assert_eq!(link_in["bridge"], "cbr0");
    assert!(
        link_in.get("prevResult").is_none(),
        "the first plugin gets no prevResult"
    );
    assert!(link_in.get("runtimeConfig").is_none());
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=sandbox1",
        "CNI_NETNS=/var/run/netns/sandbox1",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1",
    ] {
        assert!(link_env.lines().any(|l| l == line), "{line} missing in {link_env}");
    }
    assert!(link_env.contains(&format!("CNI_PATH={}", scripts.bin().display())));
    let (_, _, ports_in, _) = &calls[1];
    assert_eq!(ports_in["prevResult"]["interfaces"][0]["name"], "eth0");
    assert_eq!(
        ports_in["runtimeConfig"]["portMappings"],
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
    );
    let cached = network.cached_result("sandbox1", "eth0").unwrap().unwrap();
    assert_eq!(cached.ips[0].address, "10.9.0.5/24".parse().unwrap());
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_and_may_repeat() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    scripts.plugin("ipam", IPAM_RESULT);
    let network = scripts.network(json!([{"type": "link"}, {"type": "ipam"}]));
    run(async {
        network.add(&pod("s1")).await.unwrap();
        let err = network.add(&pod("s1")).await.unwrap_err();
        assert!(matches!(err, NetError::AlreadyExists { .. }), "{err}");
        network.check(&pod("s1")).await.unwrap();
        network.del(&Attachment::new("s1", "")).await.unwrap();
        network.del(&Attachment::new("s1", "")).await.unwrap();
        let err = network.check(&pod("s1")).await.unwrap_err();
        assert!(matches!(err, NetError::CheckFailed { .. }), "{err}");
    });
    assert_eq!(
        scripts.calls_brief(),
        [
            "link ADD",
            "ipam ADD",
            "link CHECK",
            "ipam CHECK",
            "ipam DEL",
            "link DEL",
            "ipam DEL",
            "link DEL"
        ]
    );
    let calls = scripts.calls();
    assert_eq!(calls[3].2["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
    // The first DEL carries the cached result, the repeated one has none left.
    assert_eq!(calls[4].2["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
    assert!(calls[6].2.get("prevResult").is_none());
    assert!(calls[4].3.lines().any(|l| l == "CNI_NETNS="));
    assert!(network.cached_result("s1", "eth0").unwrap().is_none());
}

#[test]
fn a_corrupt_cache_entry_blocks_add_but_not_del() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    let network = scripts.network(json!([{"type": "link"}]));
    std::fs::create_dir_all(scripts.cache()).unwrap();
    let entry = scripts.cache().join("unit-s1-eth0");
    std::fs::write(&entry, "{torn").unwrap();
    run(async {
        let err = network.add(&pod("s1")).await.unwrap_err();
        assert!(
            matches!(err, NetError::InvalidConfig { path: Some(ref p), .. } if p == &entry),
            "{err}"
        );
        network.del(&pod("s1")).await.unwrap();
        assert!(!entry.exists());
        network.add(&pod("s1")).await.unwrap();
    });
    assert_eq!(scripts.calls_brief(), ["link DEL", "link ADD"]);
}

#[test]
fn a_failing_plugin_is_a_typed_error_and_undoes_the_plugins_before_it() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    scripts.plugin("broken", FAILURE);
    let network = scripts.network(json!([{"type": "link"}, {"type": "broken"}]));
    run(async {
        let err = network.add(&pod("s1")).await.unwrap_err();
        match &err {
            NetError::PluginFailed {
                plugin,
                code,
                message,
                details,
            } => {
                assert_eq!((plugin.as_str(), *code), ("broken", 7));
                assert_eq!(message, "bad range");
                assert_eq!(details, "10.9.0.0/24 is full");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(!err.is_retryable());
        assert!(network.cached_result("s1", "eth0").unwrap().is_none());
    });
    assert_eq!(
        scripts.calls_brief(),
        ["link ADD", "broken ADD", "broken DEL", "link DEL"]
    );
    assert_eq!(
        scripts.calls()[3].2["prevResult"]["interfaces"][0]["name"],
        "eth0"
    );
}

#[test]
fn a_plugin_without_a_cni_error_or_with_garbage_output_is_plugin_failed() {
    let scripts = Scripts::new();
    scripts.plugin("crash", "echo oops >&2; exit 3");
    scripts.plugin("garbage", "echo not-json");
    scripts.plugin(
        "old",
        r#"echo '{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}'"#,
    );
    run(async {
        for (plugin, wanted) in [
            ("crash", "oops"),
            ("garbage", "not JSON"),
            ("old", "unsupported cniVersion"),
        ] {
            let err = scripts
                .network(json!([{"type": plugin}]))
                .add(&pod("s1"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, NetError::PluginFailed { code: 0, .. }),
                "{err}"
            );
            assert!(err.to_string().contains(wanted), "{err}");
        }
    });
}

#[test]
fn a_missing_binary_is_plugin_not_found_before_anything_runs() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    let network = scripts.network(json!([{"type": "link"}, {"type": "no-such-plugin"}]));
    run(async {
        let err = network.add(&pod("s1")).await.unwrap_err();
        match &err {
            NetError::PluginNotFound {
                plugin,
                search_path,
            } => {
                assert_eq!(plugin, "no-such-plugin");
                assert_eq!(search_path, &vec![scripts.bin()]);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            network.status().await,
            Err(NetError::PluginNotFound { .. })
        ));
    });
    assert!(scripts.calls().is_empty());
}

#[test]
fn a_hanging_plugin_is_killed_after_the_timeout() {
    let scripts = Scripts::new();
    scripts.plugin("slow", "sleep 30");
    let config =
        NetworkConfig::from_value(json!({"name":"unit","cniVersion":"1.0.0","type":"slow"}))
            .unwrap();
    let network = CniNetwork::builder(config)
        .plugin_dirs([scripts.bin()])
        .cache_dir(scripts.cache())
        .timeout(Duration::from_millis(300))
        .build();
    run(async {
        let err = network.add(&pod("s1")).await.unwrap_err();
        assert!(matches!(err, NetError::PluginTimedOut { .. }), "{err}");
        assert!(err.is_retryable());
    });
}

#[test]
fn status_asks_each_plugin_for_its_versions() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    run(async {
        let network = scripts.network(json!([{"type": "link"}, {"type": "link"}]));
        network.status().await.unwrap();
        assert_eq!(
            network.plugin_versions("link").await.unwrap(),
            ["0.4.0", "1.0.0"]
        );
        let old = NetworkConfig::from_value(json!({"name":"u","cniVersion":"0.3.1","type":"link"}))
            .unwrap();
        let network = CniNetwork::builder(old)
            .plugin_dirs([scripts.bin()])
            .build();
        let err = network.status().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("does not support cniVersion 0.3.1"),
            "{err}"
        );
    });
    assert_eq!(
        scripts.calls_brief(),
        ["link VERSION", "link VERSION", "link VERSION"]
    );
}

#[test]
fn bad_attachments_are_refused_before_any_plugin_runs() {
    let scripts = Scripts::new();
    scripts.plugin("link", LINK_RESULT);
    let network = scripts.network(json!([{"type": "link"}]));
    run(async {
        for bad in [
            Attachment::new("", "/n"),
            Attachment::new("../etc", "/n"),
            Attachment {
                ifname: "a/b".into(),
                ..Attachment::new("s1", "/n")
            },
            Attachment {
                ifname: "much-too-long-name".into(),
                ..Attachment::new("s1", "/n")
            },
            Attachment::new("s1", ""),
        ] {
            let err = network.add(&bad).await.unwrap_err();
            assert!(matches!(err, NetError::InvalidArgument(_)), "{err}");
        }
        assert!(network.del(&Attachment::new("", "")).await.is_err());
    });
    assert!(scripts.calls().is_empty());
}
