//! `kubectl logs`: following, tailing, selecting by time, timestamps, the previous attempt,
//! containers of a two-container Pod, a Deployment and a label selector.

use std::collections::BTreeSet;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::testing::{eventually, within};
use serde_json::json;
use tokio::io::BufReader;

use crate::support::{read_lines, Harness, LIMIT};

/// The number in a `tick N` line.
fn tick(line: &str) -> u64 {
    line.strip_prefix("tick ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("a tick line: {line:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_follows_tails_filters_and_reads_previous_attempts_and_other_containers() {
    within(Duration::from_secs(170), async {
        let h = Harness::start("logs", 1).await;
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "ticker"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c",
                        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
                }]},
            }),
        )
        .await;
        // Restarted after each exit, 10 s after the first one (the crash back-off).
        let crasher: Pod = serde_json::from_value(json!({
            "metadata": {"name": "crasher"},
            "spec": {"restartPolicy": "Always", "containers": [{
                "name": "app", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo attempt; exit 1"],
            }]},
        }))
        .unwrap();
        h.pods("default")
            .create(&PostParams::default(), &crasher)
            .await
            .unwrap();

        // -f: the lines written so far, then the new ones as they are written.
        let before = h.kubectl_until(&["logs", "ticker"], "tick 1").await;
        let written = before.stdout.lines().count();
        assert!(written >= 2, "{before:?}");
        let mut follow = h.spawn(&["logs", "-f", "ticker"]);
        let mut stdout = BufReader::new(follow.stdout.take().unwrap());
        let lines = read_lines(&mut stdout, written + 2).await;
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(tick(line), i as u64, "{lines:?}");
        }
        let _ = follow.kill().await;

        // --tail=2: the last two lines.
        let tail = h.kubectl(&["logs", "ticker", "--tail=2"]).await;
        assert!(tail.ok(), "{tail:?}");
        let tail: Vec<u64> = tail.stdout.lines().map(tick).collect();
        assert_eq!(tail.len(), 2, "{tail:?}");
        assert_eq!(tail[1], tail[0] + 1);
        assert!(tail[1] as usize > written, "{tail:?} after {written}");

        // --since=2s: only the lines of the last two seconds (one a second).
        let since = h.kubectl(&["logs", "ticker", "--since=2s"]).await;
        assert!(since.ok(), "{since:?}");
        let recent: Vec<u64> = since.stdout.lines().map(tick).collect();
        assert!(
            (1..=4).contains(&recent.len()) && recent[0] >= 2,
            "only the recent lines: {recent:?}"
        );

        // --timestamps: each line after its RFC 3339 time.
        let stamped = h
            .kubectl(&["logs", "ticker", "--timestamps", "--tail=3"])
            .await;
        assert!(stamped.ok(), "{stamped:?}");
        assert_eq!(stamped.stdout.lines().count(), 3, "{stamped:?}");
        for line in stamped.stdout.lines() {
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(
                time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
                "an RFC 3339 time: {line:?}"
            );
            tick(rest);
        }

        // --previous: after the first restart, the old attempt's output.
        let pods = h.pods("default");
        eventually(Duration::from_secs(45), "crasher restarted", || async {
            pods.get("crasher").await.is_ok_and(|p| {
                p.status
                    .and_then(|s| s.container_statuses)
                    .is_some_and(|c| c[0].restart_count >= 1)
            })
        })
        .await;
        let previous = h.kubectl(&["logs", "crasher", "--previous"]).await;
        assert!(previous.ok(), "{previous:?}");
        assert_eq!(previous.stdout, "attempt\n");

        // Two containers: -c picks one; without it kubectl takes the first and says so.
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "duo"},
                "spec": {"containers": [
                    {"name": "first", "image": "busybox:1.36",
                     "command": ["sh", "-c", "echo from first; sleep 3600"]},
                    {"name": "second", "image": "busybox:1.36",
                     "command": ["sh", "-c", "echo from second; sleep 3600"]},
                ]},
            }),
        )
        .await;
        let second = h
            .kubectl_until(&["logs", "duo", "-c", "second"], "from second")
            .await;
        assert_eq!(second.stdout, "from second\n", "{second:?}");
        let defaulted = h.kubectl_until(&["logs", "duo"], "from first").await;
        assert_eq!(defaulted.stdout, "from first\n", "{defaulted:?}");
        assert!(
            defaulted
                .stderr
                .contains("Defaulted container \"first\" out of: first, second"),
            "{defaulted:?}"
        );
        let all = h
            .kubectl(&["logs", "duo", "--all-containers", "--prefix"])
            .await;
        assert!(all.ok(), "{all:?}");
        let all: BTreeSet<&str> = all.stdout.lines().collect();
        assert_eq!(
            all,
            BTreeSet::from(["[pod/duo/first] from first", "[pod/duo/second] from second"])
        );

        // A Deployment's Pods: deploy/NAME reads one, -l all of them.
        let created = h
            .kubectl(&[
                "create",
                "deployment",
                "echoes",
                "--image=busybox:1.36",
                "--replicas=2",
                "--",
                "sh",
                "-c",
                "echo replica up; sleep 3600",
            ])
            .await;
        assert!(created.ok(), "{created:?}");
        let replicas: Vec<String> = {
            let pods = h.pods("default");
            eventually(LIMIT, "two echoes replicas Ready", || async {
                let list = pods
                    .list(&ListParams::default().labels("app=echoes"))
                    .await
                    .unwrap();
                list.items.len() == 2 && list.items.iter().all(capstan_api::ext::PodExt::is_ready)
            })
            .await;
            pods.list(&ListParams::default().labels("app=echoes"))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect()
        };
        let one = h
            .kubectl_until(&["logs", "deploy/echoes"], "replica up")
            .await;
        assert_eq!(one.stdout, "replica up\n", "{one:?}");
        let mut every = h.kubectl(&["logs", "-l", "app=echoes", "--prefix"]).await;
        for _ in 0..40 {
            if every.stdout.lines().count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            every = h.kubectl(&["logs", "-l", "app=echoes", "--prefix"]).await;
        }
        assert!(every.ok(), "{every:?}");
        let every: BTreeSet<String> = every.stdout.lines().map(str::to_string).collect();
        let expected: BTreeSet<String> = replicas
            .iter()
            .map(|name| format!("[pod/{name}/busybox] replica up"))
            .collect();
        assert_eq!(every, expected);
        h.shutdown().await;
    })
    .await;
}
