//! `kubectl exec`, `attach`, `cp` and `port-forward`: bytes in and out of containers, exit
//! codes, the service environment, and HTTP through a forwarded port.

use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::testing::within;
use capstan_api::Api;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{curl, read, read_lines, Harness};

/// Starts `kubectl port-forward` with `target` and `ports`; returns the child and the local
/// address kubectl listens on.
async fn forward(h: &Harness, target: &str, ports: &str) -> (tokio::process::Child, String) {
    let mut child = h.spawn(&["port-forward", target, ports]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    // `Forwarding from 127.0.0.1:43721 -> 8080`
    let local = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"))
        .to_string();
    // Keep reading, so kubectl never blocks on a full pipe.
    tokio::spawn(async move {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).await.is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (child, local)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_attach_cp_and_port_forward_carry_bytes_exit_codes_and_http() {
    within(Duration::from_secs(170), async {
        let h = Harness::start("streams", 1).await;
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "box"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                }]},
            }),
        )
        .await;

        // exec -i: 200 KB through `cat`, unchanged.
        let input: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i:05} of the input, padded to forty.\n").into_bytes())
            .collect();
        assert!(input.len() >= 200_000);
        let echoed = h
            .kubectl_with_input(&["exec", "-i", "box", "--", "cat"], &input)
            .await;
        assert!(echoed.ok(), "{}", echoed.stderr);
        assert_eq!(echoed.bytes.len(), input.len());
        assert!(echoed.bytes == input, "the bytes come back unchanged");

        // The command's exit code is kubectl's.
        let seven = h.kubectl(&["exec", "box", "--", "sh", "-c", "exit 7"]).await;
        assert_eq!(seven.code, 7, "{seven:?}");

        // The `kubernetes` Service's address in the environment.
        let kubernetes = Api::<Service>::namespaced(h.cluster().client(), "default")
            .get("kubernetes")
            .await
            .unwrap()
            .spec
            .unwrap();
        let env = h.kubectl(&["exec", "box", "--", "env"]).await;
        assert!(env.ok(), "{env:?}");
        let var = |name: &str| {
            env.stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {}", env.stdout))
                .to_string()
        };
        assert_eq!(
            Some(var("KUBERNETES_SERVICE_HOST")),
            kubernetes.cluster_ip.clone()
        );
        assert_eq!(
            var("KUBERNETES_SERVICE_PORT"),
            kubernetes.ports.as_ref().unwrap()[0].port.to_string()
        );

        // attach -i to a `cat` with stdin: a line sent comes back.
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "reader"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36", "command": ["cat"],
                    "stdin": true,
                }]},
            }),
        )
        .await;
        let mut attach = h.command(&["attach", "-i", "reader"]);
        attach.stdin(std::process::Stdio::piped());
        let mut attach = attach.spawn().unwrap();
        let mut to_pod = attach.stdin.take().unwrap();
        let mut from_pod = BufReader::new(attach.stdout.take().unwrap());
        to_pod.write_all(b"hello through attach\n").await.unwrap();
        to_pod.flush().await.unwrap();
        let line = read_lines(&mut from_pod, 1).await;
        assert_eq!(line, ["hello through attach"]);
        to_pod.write_all(b"and once more\n").await.unwrap();
        to_pod.flush().await.unwrap();
        assert_eq!(read_lines(&mut from_pod, 1).await, ["and once more"]);
        let _ = attach.kill().await;

        // Plain attach: the output written from now on.
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "talker"},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c",
                        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
                }]},
            }),
        )
        .await;
        let mut watching = h.spawn(&["attach", "talker"]);
        let mut seen = BufReader::new(watching.stdout.take().unwrap());
        let ticks: Vec<u64> = read_lines(&mut seen, 2)
            .await
            .iter()
            .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
            .collect();
        assert_eq!(ticks[1], ticks[0] + 1, "{ticks:?}");
        let _ = watching.kill().await;

        // cp: a directory into the Pod and back.
        let local = h.dir.join("upload");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("a.txt"), b"alpha\nbeta\n").unwrap();
        let binary: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(local.join("b.bin"), &binary).unwrap();
        let up = h
            .kubectl(&["cp", local.to_str().unwrap(), "box:/tmp/x"])
            .await;
        assert!(up.ok(), "{up:?}");
        let a = h.kubectl(&["exec", "box", "--", "cat", "/tmp/x/a.txt"]).await;
        assert_eq!(a.stdout, "alpha\nbeta\n", "{a:?}");
        let b = h.kubectl(&["exec", "box", "--", "cat", "/tmp/x/b.bin"]).await;
        assert!(b.bytes == binary, "b.bin in the Pod: {} bytes", b.bytes.len());
        let back = h.dir.join("download");
        let down = h
            .kubectl(&["cp", "box:/tmp/x", back.to_str().unwrap()])
            .await;
        assert!(down.ok(), "{down:?}");
        assert_eq!(read(&back.join("a.txt")), b"alpha\nbeta\n");
        assert!(read(&back.join("b.bin")) == binary, "b.bin back unchanged");

        // port-forward: HTTP to httpd in a Pod, then through its Service.
        h.run_pod(
            "default",
            json!({
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c",
                        "mkdir -p /www && echo hello > /www/index.html && httpd -f -p 8080 -h /www"],
                    "ports": [{"containerPort": 8080}],
                }]},
            }),
        )
        .await;
        let (mut pod_forward, address) = forward(&h, "pod/web", ":8080").await;
        let (status, body) = curl(&[&format!("http://{address}/")]).await;
        assert_eq!((status, body.as_str()), (200, "hello\n"));
        let _ = pod_forward.kill().await;
        let exposed = h
            .kubectl(&["expose", "pod", "web", "--port=80", "--target-port=8080"])
            .await;
        assert!(exposed.ok(), "{exposed:?}");
        let (mut service_forward, address) = forward(&h, "svc/web", ":80").await;
        let (status, body) = curl(&[&format!("http://{address}/index.html")]).await;
        assert_eq!((status, body.as_str()), (200, "hello\n"));
        let _ = service_forward.kill().await;
        h.shutdown().await;
    })
    .await;
}
