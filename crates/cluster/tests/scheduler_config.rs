//! `capstan scheduler --config <file>` (and `capstan cluster --scheduler-config <file>`): the
//! flag parses, a bad file stops the command at start with kube-scheduler's messages, and a
//! good one runs its profiles.

use std::path::PathBuf;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::PostParams;
use capstan_api::Api;
use capstan_cluster::cli::{load_scheduler_config, Cli, ClusterArgs, Command};
use capstan_cluster::control_plane::{start_scheduler, ControlPlaneError, ControlPlaneOptions};
use clap::Parser;
use serde_json::json;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/scheduler-config.yaml"
);

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(text: &str) -> TempFile {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("capstan-scheduler-config-{nonce}.yaml"));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_scheduler_and_cluster_commands_take_a_configuration_file() {
    let cli = Cli::try_parse_from(["capstan", "scheduler", "--config", "sched.yaml"]).unwrap();
    let Command::Scheduler(args) = cli.command else {
        panic!("not the scheduler command");
    };
    assert_eq!(args.config, Some(PathBuf::from("sched.yaml")));
    let cluster =
        ClusterArgs::try_parse_from(["cluster", "--scheduler-config", "sched.yaml"]).unwrap();
    assert_eq!(cluster.scheduler_config, Some(PathBuf::from("sched.yaml")));
    assert_eq!(load_scheduler_config(None).unwrap(), None);
}

#[test]
fn an_invalid_file_is_refused_at_start_with_every_validation_message() {
    let file = TempFile::with(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\npercentageOfNodesToScore: 101\nprofiles:\n- schedulerName: a\n- schedulerName: a\n",
    );
    let err = load_scheduler_config(Some(&file.0)).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "scheduler configuration {}: [profiles[1].schedulerName: Duplicate value: \"profiles[0].schedulerName\", \
             percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100]]",
            file.0.display()
        )
    );
    let file = TempFile::with(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofile: []\n",
    );
    let err = load_scheduler_config(Some(&file.0)).unwrap_err();
    assert!(
        format!("{err:#}").ends_with(r#": strict decoding error: unknown field "profile""#),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_profile_the_plugins_cannot_build_stops_the_scheduler_at_start() {
    let file = TempFile::with(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    score:\n      enabled:\n      - name: Foo\n",
    );
    let mut options = ControlPlaneOptions::new("replica-0");
    options.scheduler_config = load_scheduler_config(Some(&file.0)).unwrap();
    let err = start_scheduler(capstan_apiserver::testing::client(), &options).unwrap_err();
    assert!(
        matches!(err, ControlPlaneError::SchedulerConfig(_)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"scheduler configuration: profiles[0].plugins.score.enabled[0]: Invalid value: "Foo": ScorePlugin "Foo" does not exist"#
    );
}

#[tokio::test]
async fn a_configured_scheduler_schedules_pods_of_its_second_profile() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let client = capstan_apiserver::testing::client();
        let mut options = ControlPlaneOptions::new("replica-0");
        options.scheduler_config = load_scheduler_config(Some(EXAMPLE.as_ref())).unwrap();
        let scheduler = start_scheduler(client.clone(), &options).unwrap();
        assert_eq!(scheduler.name(), "kube-scheduler/replica-0");

        let nodes: Api<Node> = Api::cluster(client.clone());
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "node01"}})).unwrap();
        let mut node = nodes.create(&PostParams::default(), &node).await.unwrap();
        node.status = Some(
            serde_json::from_value(json!({
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            }))
            .unwrap(),
        );
        nodes
            .update_status(&PostParams::default(), &node)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "batch", "namespace": "default"},
            "spec": {"schedulerName": "batch-scheduler", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        loop {
            let pod = pods.get("batch").await.unwrap();
            if let Some(node) = pod.spec.and_then(|s| s.node_name) {
                assert_eq!(node, "node01");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        scheduler.stop(Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}
