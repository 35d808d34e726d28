//! Running dataplane commands (`iptables-restore`, `nft`, `ipvsadm`), optionally inside a
//! named network namespace (`ip netns exec`).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{ProxyError, Result};

/// Where a backend runs its commands: the current network namespace, or a named one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Runner {
    netns: Option<String>,
}

impl Runner {
    pub(crate) fn new(netns: Option<String>) -> Self {
        Runner { netns }
    }

    /// Runs `program args…` with `input` on stdin and returns its stdout. A non-zero exit is
    /// [`ProxyError::CommandFailed`] with its stderr.
    pub(crate) async fn run(&self, program: &str, args: &[&str], input: &str) -> Result<String> {
        let mut argv: Vec<&str> = Vec::new();
        if let Some(netns) = &self.netns {
            argv.extend(["ip", "netns", "exec", netns.as_str()]);
        }
        argv.push(program);
        argv.extend(args);
        let line = argv.join(" ");
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProxyError::CommandUnavailable {
                command: argv[0].to_owned(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.as_bytes().to_vec();
        // Write on a task of its own so a command that fails early cannot block us on a full
        // pipe.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let output =
            child
                .wait_with_output()
                .await
                .map_err(|source| ProxyError::CommandUnavailable {
                    command: line.clone(),
                    source,
                })?;
        let _ = writer.await;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ProxyError::CommandFailed {
                command: line,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let runner = Runner::new(None);
            let out = runner.run("cat", &[], "hello").await.unwrap();
            assert_eq!(out, "hello");
            let error = runner
                .run("sh", &["-c", "echo broken >&2; exit 3"], "")
                .await
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                "sh -c echo broken >&2; exit 3 failed (exit status: 3): broken"
            );
            let missing = runner
                .run("capstan-no-such-binary", &[], "")
                .await
                .unwrap_err();
            assert!(matches!(missing, ProxyError::CommandUnavailable { .. }));
        })
        .await
        .unwrap();
    }
}
