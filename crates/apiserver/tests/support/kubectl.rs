//! The real `kubectl` against an in-process API server.
//!
//! [`Kubectl`] binds an [`ApiServer`] on a free loopback port, writes a kubeconfig for it into a
//! temporary directory of its own (removed on drop), and runs `kubectl` against it:
//!
//! ```ignore
//! let kubectl = Kubectl::start().await;
//! let manifest = kubectl.write("settings.yaml", "apiVersion: v1\nkind: ConfigMap\n...");
//! kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
//! let missing = kubectl.fails(&["get", "configmap", "other"]).await;
//! assert!(missing.contains("NotFound"), "{missing}");
//! ```
//!
//! Needs `kubectl` on the PATH: Debian's `kubernetes-client` works, and `scripts/test` installs
//! it when missing. Every command gets `--kubeconfig` and a `--cache-dir` in the temporary
//! directory, so no two servers share kubectl's discovery cache and nothing is read from or
//! written to `~/.kube`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use capstan_apiserver::http::layers::ApiServerOptions;
use capstan_apiserver::http::{ApiServer, Kubeconfig};
use capstan_apiserver::registry::Registry;

/// A bound API server, its kubeconfig and a temporary directory for manifests; `kubectl` runs
/// against it. The server stops and the directory is removed on drop.
pub(crate) struct Kubectl {
    server: ApiServer,
    kubeconfig: PathBuf,
    dir: TempDir,
}

/// What one `kubectl` command did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub(crate) stdout: String,
    /// Its standard error (lossy UTF-8).
    pub(crate) stderr: String,
}

impl Outcome {
    /// Whether kubectl exited with 0.
    pub(crate) fn success(&self) -> bool {
        self.status.success()
    }
}

impl Kubectl {
    /// Serves a fresh [`capstan_apiserver::testing::registry`] with the default options
    /// (everyone anonymous, everything allowed).
    pub(crate) async fn start() -> Kubectl {
        Kubectl::serve(capstan_apiserver::testing::registry()).await
    }

    /// Serves `registry` with the default options.
    pub(crate) async fn serve(registry: Arc<Registry>) -> Kubectl {
        Kubectl::serve_with(registry, ApiServerOptions::default()).await
    }

    /// Serves `registry` with `options` (authentication, authorization, limits, ...). The
    /// kubeconfig has no credentials: requests are anonymous.
    pub(crate) async fn serve_with(registry: Arc<Registry>, options: ApiServerOptions) -> Kubectl {
        Kubectl::serve_with_kubeconfig(registry, options, |kubeconfig| kubeconfig).await
    }

    /// Serves `registry` with `options`, and writes the kubeconfig `configure` makes of the
    /// server's: e.g. with the CA of a TLS server (`ApiServerOptions::tls`) and a bearer token.
    pub(crate) async fn serve_with_kubeconfig(
        registry: Arc<Registry>,
        options: ApiServerOptions,
        configure: impl FnOnce(Kubeconfig) -> Kubeconfig,
    ) -> Kubectl {
        let server = ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("bind a loopback port");
        let dir = TempDir::new();
        let kubeconfig = dir.0.join("kubeconfig");
        configure(server.kubeconfig())
            .write(&kubeconfig)
            .expect("write the kubeconfig");
        Kubectl {
            server,
            kubeconfig,
            dir,
        }
    }

    /// The server kubectl talks to.
    pub(crate) fn server(&self) -> &ApiServer {
        &self.server
    }

    /// The server's address, for requests kubectl cannot make.
    pub(crate) fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// The server's base URL, e.g. `http://127.0.0.1:40123`.
    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    /// The kubeconfig every command is given.
    pub(crate) fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The temporary directory (removed on drop).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Writes `contents` to the file `name` in the temporary directory (a manifest for
    /// `kubectl apply -f`, say) and returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `kubectl` with this server's kubeconfig and cache directory, before any other argument.
    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.0.join("cache"));
        command
    }

    /// Runs `kubectl args` to the end, whatever its exit status.
    pub(crate) async fn run(&self, args: &[&str]) -> Outcome {
        let output = self
            .command()
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| missing(e));
        Outcome {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `kubectl args` in the background with its stdout piped (for `--watch`); the
    /// process is killed if the child is dropped before it ends.
    pub(crate) fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| missing(e))
    }

    /// Runs `kubectl args` and returns its stdout. Panics with its stderr if it fails, or if it
    /// succeeded while reporting that it couldn't get some of the server's discovery (which
    /// kubectl only warns about).
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let outcome = self.run(args).await;
        assert!(
            outcome.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            outcome.stderr
        );
        assert!(
            !outcome.stderr.contains("couldn't get"),
            "kubectl {}: {}",
            args.join(" "),
            outcome.stderr
        );
        outcome.stdout
    }

    /// Runs `kubectl args` expecting it to fail, and returns its stderr. Panics if it succeeds.
    pub(crate) async fn fails(&self, args: &[&str]) -> String {
        let outcome = self.run(args).await;
        assert!(
            !outcome.success(),
            "kubectl {} should have failed: {}",
            args.join(" "),
            outcome.stdout
        );
        outcome.stderr
    }
}

/// kubectl could not be started.
fn missing(error: std::io::Error) -> ! {
    panic!(
        "cannot run kubectl ({error}): install it (Debian's kubernetes-client) or run scripts/test"
    )
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "capstan-kubectl-{}-{nonce}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
