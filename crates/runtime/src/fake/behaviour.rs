//! What containers of a fake image do, as scripted by an [`ImageBehaviour`] (start delay,
//! exit, crash loop, pull failure, log lines, exec handlers, files, listening ports, stdin
//! answers, resource usage), and the [`FakeRegistry`] that serves behaviours by image
//! reference.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::future::Future;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::io::DuplexStream;

use super::attach::StdinHandler;
use super::fs::ImageFile;
use super::ports::{echo_server, http_server, port_handler, PortHandler};
use super::process::{FakeProcess, StreamExecHandler};
use crate::types::{normalize_image_ref, ExecResponse, OutputStream};

/// How long a scripted exec takes and what it returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExecOutcome {
    /// What the command returns.
    pub response: ExecResponse,
    /// How long it runs; past the request's timeout the exec is a `Timeout` error.
    pub duration: Duration,
}

impl ExecOutcome {
    /// An outcome that takes `duration`.
    pub fn taking(response: ExecResponse, duration: Duration) -> Self {
        ExecOutcome { response, duration }
    }
}

impl From<ExecResponse> for ExecOutcome {
    fn from(response: ExecResponse) -> Self {
        ExecOutcome {
            response,
            duration: Duration::ZERO,
        }
    }
}

/// Answers an exec of one command: gets the full command line (`cmd[0]` included).
pub type ExecHandler = Arc<dyn Fn(&[String]) -> ExecOutcome + Send + Sync>;

/// One scripted log line: written `after` the container starts running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedLine {
    /// When, after the container started running.
    pub after: Duration,
    /// Which stream.
    pub stream: OutputStream,
    /// The text, without a newline.
    pub text: Bytes,
}

/// What containers of one image do, and how pulling it goes.
///
/// Built with [`ImageBehaviour::new`] (an image that runs forever, quietly) and the builder
/// methods. Every container keeps the behaviour its image had when it was created.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ImageBehaviour {
    /// Between `start_container` and the container running (it reports `Created` meanwhile).
    pub start_delay: Duration,
    /// Exit by itself this long after it starts running, with this code.
    pub exit_after: Option<(Duration, i32)>,
    /// Every container of the image crashes: exits with a non-zero code after
    /// `exit_after`'s time (1 s by default) and code (1 if unset or zero). A restarted
    /// container (the next attempt) crashes again, so the kubelet sees `CrashLoopBackOff`.
    pub crash_loop: bool,
    /// Pulls of the image fail with this reason (`ErrImagePull`).
    pub pull_error: Option<String>,
    /// Lines written to the log, at times relative to the start.
    pub log_lines: Vec<ScriptedLine>,
    /// Exec handlers by command name (`cmd[0]`, or its last path component). They answer
    /// both `exec_sync` and streaming execs (their output written at once). Without one, a
    /// streaming handler ([`ImageBehaviour::exec_stream`](field@Self::exec_stream)) or a
    /// built-in command (busybox-like: `echo`, `cat`, `ls`, `sh -c`, `tar`, ...) runs, and
    /// anything else exits 127 (`executable file not found`).
    pub exec: BTreeMap<String, ExecHandler>,
    /// Streaming exec handlers by command name: the handler runs as the process.
    pub exec_stream: BTreeMap<String, StreamExecHandler>,
    /// Files the image ships, by absolute path (containers start with them, plus the usual
    /// top-level directories and `/etc/hostname`).
    pub files: BTreeMap<String, ImageFile>,
    /// Ports its containers listen on, with what serves each connection.
    pub ports: BTreeMap<u16, PortHandler>,
    /// What the main process does with lines written to its stdin (when the container has
    /// stdin open and someone attaches); `None` echoes them to stdout, like `cat`.
    pub stdin_handler: Option<StdinHandler>,
    /// CPU use of a running container, in thousandths of a core (0 by default).
    pub cpu_millicores: u64,
    /// Memory use of a running container, in bytes (0 by default).
    pub memory_bytes: u64,
    /// The image has no built-in commands (a distroless image: no shell, no `tar`); only
    /// scripted commands run.
    pub no_builtins: bool,
    /// The exit code when stopped with a grace period (it handles SIGTERM); 0 by default.
    /// A container running its command line (see
    /// [`FakeRuntimeBuilder::run_commands`](super::FakeRuntimeBuilder::run_commands)) exits
    /// 143 (killed by SIGTERM) instead when this is 0.
    pub term_exit_code: i32,
    /// The image's size in bytes (1 MiB by default).
    pub size: Option<u64>,
    /// The image's default entrypoint (its config's `Entrypoint`): what a container runs
    /// when its config has no `command`, if the runtime runs commands
    /// ([`FakeRuntimeBuilder::run_commands`](super::FakeRuntimeBuilder::run_commands)).
    pub entrypoint: Vec<String>,
    /// Containers of the image never run their command line, even on a runtime that runs
    /// commands: the behaviour's script is all they do.
    pub ignore_command: bool,
}

impl fmt::Debug for ImageBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBehaviour")
            .field("start_delay", &self.start_delay)
            .field("exit_after", &self.exit_after)
            .field("crash_loop", &self.crash_loop)
            .field("pull_error", &self.pull_error)
            .field("log_lines", &self.log_lines)
            .field("exec", &self.exec.keys().collect::<Vec<_>>())
            .field("exec_stream", &self.exec_stream.keys().collect::<Vec<_>>())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("ports", &self.ports.keys().collect::<Vec<_>>())
            .field("stdin_handler", &self.stdin_handler.is_some())
            .field("cpu_millicores", &self.cpu_millicores)
            .field("memory_bytes", &self.memory_bytes)
            .field("no_builtins", &self.no_builtins)
            .field("term_exit_code", &self.term_exit_code)
            .field("size", &self.size)
            .field("entrypoint", &self.entrypoint)
            .field("ignore_command", &self.ignore_command)
            .finish()
    }
}

impl ImageBehaviour {
    /// An image whose containers start at once and run until stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Containers run only `delay` after `start_container`.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// Containers exit with `code` once they ran for `after`.
    pub fn exit_after(mut self, after: Duration, code: i32) -> Self {
        self.exit_after = Some((after, code));
        self
    }

    /// Containers crash (see [`ImageBehaviour::crash_loop`](field@Self::crash_loop)).
    pub fn crash_loop(mut self) -> Self {
        self.crash_loop = true;
        self
    }

    /// Pulls fail with `reason`.
    pub fn pull_error(mut self, reason: impl Into<String>) -> Self {
        self.pull_error = Some(reason.into());
        self
    }

    /// Writes `text` to stdout `after` the start.
    pub fn log_line(mut self, after: Duration, text: impl Into<Bytes>) -> Self {
        self.log_lines.push(ScriptedLine {
            after,
            stream: OutputStream::Stdout,
            text: text.into(),
        });
        self.log_lines.sort_by_key(|l| l.after);
        self
    }

    /// Writes `text` to stderr `after` the start.
    pub fn stderr_line(mut self, after: Duration, text: impl Into<Bytes>) -> Self {
        self.log_lines.push(ScriptedLine {
            after,
            stream: OutputStream::Stderr,
            text: text.into(),
        });
        self.log_lines.sort_by_key(|l| l.after);
        self
    }

    /// Answers execs of `command` with `handler`.
    pub fn exec<F, O>(mut self, command: impl Into<String>, handler: F) -> Self
    where
        F: Fn(&[String]) -> O + Send + Sync + 'static,
        O: Into<ExecOutcome>,
    {
        self.exec
            .insert(command.into(), Arc::new(move |cmd| handler(cmd).into()));
        self
    }

    /// Runs streaming execs of `command` with `handler`: it gets the [`FakeProcess`] (stdio,
    /// argv, environment, files, terminal) and returns the exit code. `exec_sync` runs it
    /// too, with no stdin.
    pub fn exec_stream<F, Fut>(mut self, command: impl Into<String>, handler: F) -> Self
    where
        F: Fn(FakeProcess) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = i32> + Send + 'static,
    {
        self.exec_stream.insert(
            command.into(),
            Arc::new(move |process| Box::pin(handler(process))),
        );
        self
    }

    /// Ships a file at `path` (mode `0o644`) in the image.
    pub fn file(self, path: impl Into<String>, contents: impl Into<Bytes>) -> Self {
        self.file_with_mode(path, contents, 0o644)
    }

    /// Ships a file at `path` with permission bits `mode`.
    pub fn file_with_mode(
        mut self,
        path: impl Into<String>,
        contents: impl Into<Bytes>,
        mode: u32,
    ) -> Self {
        self.files.insert(
            path.into(),
            ImageFile {
                contents: contents.into(),
                mode,
            },
        );
        self
    }

    /// Listens on `port`: each forwarded connection is served by `handler`, which gets the
    /// server's side of the connection.
    pub fn port<F, Fut>(mut self, port: u16, handler: F) -> Self
    where
        F: Fn(DuplexStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.ports.insert(port, port_handler(handler));
        self
    }

    /// Listens on `port` with a ready-made handler ([`echo_server`], [`http_server`]).
    pub fn port_with(mut self, port: u16, handler: PortHandler) -> Self {
        self.ports.insert(port, handler);
        self
    }

    /// Listens on `port` with an echo server.
    pub fn echo_port(self, port: u16) -> Self {
        self.port_with(port, echo_server())
    }

    /// Listens on `port` with an HTTP/1.1 server answering every request with `status` and
    /// `body` (see [`http_server`]).
    pub fn http_port(self, port: u16, status: u16, body: impl Into<Bytes>) -> Self {
        self.port_with(port, http_server(status, body))
    }

    /// Answers lines written to the main process's stdin with `handler` (see
    /// [`StdinHandler`]).
    pub fn on_stdin<F, O>(mut self, handler: F) -> Self
    where
        F: Fn(&[u8]) -> O + Send + Sync + 'static,
        O: Into<Bytes>,
    {
        self.stdin_handler = Some(Arc::new(move |line| handler(line).into()));
        self
    }

    /// The image has no built-in commands (see
    /// [`ImageBehaviour::no_builtins`](field@Self::no_builtins)).
    pub fn without_builtins(mut self) -> Self {
        self.no_builtins = true;
        self
    }

    /// A running container uses `cpu_millicores` thousandths of a core and `memory_bytes`
    /// of memory (what `container_stats` reports; `FakeRuntime::set_usage` changes one
    /// container's).
    pub fn usage(mut self, cpu_millicores: u64, memory_bytes: u64) -> Self {
        self.cpu_millicores = cpu_millicores;
        self.memory_bytes = memory_bytes;
        self
    }

    /// Exit code on a graceful stop.
    pub fn term_exit_code(mut self, code: i32) -> Self {
        self.term_exit_code = code;
        self
    }

    /// The image's size.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// Sets the image's default entrypoint (see
    /// [`ImageBehaviour::entrypoint`](field@Self::entrypoint)): a container with no `command`
    /// runs `argv` followed by its `args`.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, argv: I) -> Self {
        self.entrypoint = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Containers never run their command line (see
    /// [`ImageBehaviour::ignore_command`](field@Self::ignore_command)).
    pub fn ignore_command(mut self) -> Self {
        self.ignore_command = true;
        self
    }

    /// Whether the behaviour scripts what the main process does (log lines, an exit, a crash
    /// loop, stdin answers, or an explicit [`ImageBehaviour::ignore_command`]), in which case
    /// a container's command line never runs.
    pub fn scripts_main_process(&self) -> bool {
        self.ignore_command
            || self.crash_loop
            || self.exit_after.is_some()
            || !self.log_lines.is_empty()
            || self.stdin_handler.is_some()
    }

    /// The command line a container of this image made from `command` and `args` runs, as
    /// CRI resolves it: `command` (or else the image's entrypoint) followed by `args`.
    /// `None` when that is empty or the behaviour scripts the main process.
    pub fn main_command(&self, command: &[String], args: &[String]) -> Option<Vec<String>> {
        if self.scripts_main_process() {
            return None;
        }
        let head = if command.is_empty() {
            &self.entrypoint
        } else {
            command
        };
        let argv: Vec<String> = head.iter().chain(args).cloned().collect();
        (!argv.is_empty()).then_some(argv)
    }

    /// When and how a container running since `running_at` exits by itself.
    pub(super) fn natural_exit(&self, running_at: SystemTime) -> Option<(SystemTime, i32)> {
        let (after, code) = match (self.crash_loop, self.exit_after) {
            (true, Some((after, code))) => (after, if code == 0 { 1 } else { code }),
            (true, None) => (Duration::from_secs(1), 1),
            (false, Some(exit)) => exit,
            (false, None) => return None,
        };
        Some((running_at + after, code))
    }
}

/// The images a fake registry serves, by normalised reference. Cheap to clone; clones share
/// the same images, so one registry can serve every fake node of a simulation.
#[derive(Debug, Clone, Default)]
pub struct FakeRegistry {
    images: Arc<RwLock<HashMap<String, Arc<ImageBehaviour>>>>,
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `image` (any reference form) with `behaviour`, replacing what was there.
    /// Containers created before keep their old behaviour.
    pub fn insert(&self, image: &str, behaviour: ImageBehaviour) {
        self.images
            .write()
            .insert(normalize_image_ref(image), Arc::new(behaviour));
    }

    /// Stops serving `image`.
    pub fn remove(&self, image: &str) {
        self.images.write().remove(&normalize_image_ref(image));
    }

    /// The behaviour of `image`, if served.
    pub fn get(&self, image: &str) -> Option<Arc<ImageBehaviour>> {
        self.images.read().get(&normalize_image_ref(image)).cloned()
    }
}
