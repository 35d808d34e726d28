//! Bad input and endings: the texts kubectl users see for a missing Pod, a missing
//! container and a finished Pod, and the sessions that end when their Pod is deleted.

use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::PostParams;
use capstan_api::testing::{eventually, within};
use serde_json::json;
use tokio::io::BufReader;

use crate::support::{exits_within, read_lines, Harness, LIMIT};

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reports_kubernetes_errors_and_sessions_end_with_their_pod() {
    within(Duration::from_secs(170), async {
        let h = Harness::start("endings", 1).await;
        let missing = h.kubectl(&["logs", "missing"]).await;
        assert_eq!(missing.code, 1, "{missing:?}");
        // kubectl 1.32 resolves the Pod with a GET first, and words the 404 this way.
        assert_eq!(
            missing.stderr.trim(),
            "error: error from server (NotFound): pods \"missing\" not found in namespace \"default\""
        );

        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c",
                        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
                }]},
            }),
        )
        .await;
        let nope = h.kubectl(&["logs", "p", "-c", "nope"]).await;
        assert_eq!(nope.code, 1, "{nope:?}");
        // The API server's 400, as kubectl prints a stream's error: its message alone.
        assert_eq!(
            nope.stderr.trim(),
            "error: container nope is not valid for pod p"
        );
        let no_previous = h.kubectl(&["logs", "p", "--previous"]).await;
        assert_eq!(no_previous.code, 1, "{no_previous:?}");
        assert!(
            no_previous
                .stderr
                .contains("previous terminated container \"app\" in pod \"p\" not found"),
            "{no_previous:?}"
        );

        // A finished Pod cannot be exec'ed into.
        let done: Pod = serde_json::from_value(json!({
            "metadata": {"name": "done"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "app", "image": "busybox:1.36", "command": ["echo", "bye"],
            }]},
        }))
        .unwrap();
        let pods = h.pods("default");
        pods.create(&PostParams::default(), &done).await.unwrap();
        eventually(LIMIT, "done Succeeded", || async {
            pods.get("done")
                .await
                .is_ok_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Succeeded"))
        })
        .await;
        let finished = h.kubectl(&["exec", "done", "--", "echo", "hi"]).await;
        assert_eq!(finished.code, 1, "{finished:?}");
        assert!(
            finished.stderr.contains(
                "cannot exec into a container in a completed pod; current phase is Succeeded"
            ),
            "{finished:?}"
        );
        let logs = h.kubectl(&["logs", "done"]).await;
        assert_eq!(
            logs.stdout, "bye\n",
            "a finished Pod's log stays readable: {logs:?}"
        );

        // `logs -f` and an `exec` session end once their Pod is deleted.
        let mut follow = h.spawn(&["logs", "-f", "p"]);
        let mut stdout = BufReader::new(follow.stdout.take().unwrap());
        read_lines(&mut stdout, 2).await;
        let mut session = h.spawn(&["exec", "p", "--", "sleep", "3600"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            exits_within(&mut session, Duration::from_millis(10)).await,
            None,
            "the exec session runs"
        );
        let deleted = h
            .kubectl(&["delete", "pod", "p", "--grace-period=0", "--force"])
            .await;
        assert!(deleted.ok(), "{deleted:?}");
        // Drain the followed output so kubectl never blocks writing it.
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut sink).await;
        });
        assert!(
            exits_within(&mut follow, Duration::from_secs(15))
                .await
                .is_some(),
            "kubectl logs -f ends with its Pod"
        );
        assert!(
            exits_within(&mut session, Duration::from_secs(15))
                .await
                .is_some(),
            "kubectl exec ends with its Pod"
        );
        drain.await.unwrap();

        // A normal delete (the grace period: the container is stopped) ends an exec -i
        // session as well.
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "q"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                }]},
            }),
        )
        .await;
        let mut interactive = h.command(&["exec", "-i", "q", "--", "cat"]);
        interactive.stdin(std::process::Stdio::piped());
        let mut interactive = interactive.spawn().unwrap();
        let mut to_pod = interactive.stdin.take().unwrap();
        let mut from_pod = BufReader::new(interactive.stdout.take().unwrap());
        tokio::io::AsyncWriteExt::write_all(&mut to_pod, b"still here\n")
            .await
            .unwrap();
        assert_eq!(read_lines(&mut from_pod, 1).await, ["still here"]);
        let deleted = h.kubectl(&["delete", "pod", "q", "--wait=false"]).await;
        assert!(deleted.ok(), "{deleted:?}");
        assert!(
            exits_within(&mut interactive, Duration::from_secs(20))
                .await
                .is_some(),
            "kubectl exec -i ends once its Pod is deleted"
        );
        drop(to_pod);
        h.shutdown().await;
    })
    .await;
}
