//! Interactive access to containers: streaming exec and attach (a process's stdin, stdout,
//! stderr, terminal size and exit code), port forwarding into a pod's network namespace, and
//! resource usage. The kubelet's API serves these to `kubectl exec`, `attach`, `cp`,
//! `port-forward` and `top` (CRI's `Exec`, `Attach`, `PortForward` and `ContainerStats`).

use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::Result;

/// A byte stream read from a process (its stdout or stderr).
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;
/// A byte stream written to a process (its stdin). Shutting it down (or dropping it) closes
/// the process's stdin, which then reads end-of-file.
pub type ByteWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Both directions of a connection (a forwarded port).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connection into a pod's network namespace; shutting down its write half sends FIN.
pub type DuplexStream = Box<dyn Duplex>;

/// A terminal's size in character cells (Kubernetes' `TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// Which of a process's standard streams the caller wants, and whether it runs on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioOptions {
    /// Pass the caller's input to the process.
    pub stdin: bool,
    /// Return the process's standard output.
    pub stdout: bool,
    /// Return its standard error (never with `tty`: a terminal merges it into stdout).
    pub stderr: bool,
    /// Run on a pseudo-terminal: output is one stream and the size can change.
    pub tty: bool,
}

impl StdioOptions {
    /// Stdout and stderr, no stdin, no terminal (what `kubectl exec POD -- cmd` asks).
    pub fn output() -> Self {
        StdioOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }
}

/// Runs a command in a running container, streaming (CRI's `Exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingExecRequest {
    /// The container (it must be running: `FailedPrecondition` otherwise).
    pub container_id: String,
    /// The command and its arguments; must not be empty (`InvalidArgument`).
    pub cmd: Vec<String>,
    /// The streams wanted.
    pub stdio: StdioOptions,
}

/// Connects to the standard streams of a container's main process (CRI's `Attach`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container (it must be running: `FailedPrecondition` otherwise).
    pub container_id: String,
    /// The streams wanted. Stdin reaches the process only if the container was created with
    /// `stdin` open ([`ContainerConfig::stdin`](crate::ContainerConfig)); `tty` must match the
    /// container's.
    pub stdio: StdioOptions,
}

/// A process's side of an exec or attach session.
///
/// Each stream is `Some` when it was asked for (stderr is `None` with a terminal). The output
/// streams end when the process's do; `exit` resolves to the exit code once the process has
/// exited (for an attach: the container's main process), or to an error if the runtime lost
/// it (the container was removed). Dropping the session detaches from the process; for an
/// exec the process is then killed.
pub struct ProcessIo {
    /// The process's standard input.
    pub stdin: Option<ByteWriter>,
    /// Its standard output (with a terminal: everything the terminal shows).
    pub stdout: Option<ByteReader>,
    /// Its standard error.
    pub stderr: Option<ByteReader>,
    /// Terminal size changes (`Some` with a terminal).
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// The exit code.
    pub exit: BoxFuture<'static, Result<i32>>,
}

impl fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// A container's resource usage at one instant (CRI's `ContainerStats`, cAdvisor's figures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    /// The container's id.
    pub container_id: String,
    /// When it was measured.
    pub timestamp: SystemTime,
    /// CPU time used since the container started, in nanoseconds (cumulative).
    pub cpu_usage_core_nanoseconds: u64,
    /// The CPU rate over the runtime's last sampling window, in billionths of a core, when
    /// the runtime knows it; otherwise the kubelet derives it from two cumulative samples.
    pub cpu_usage_nano_cores: Option<u64>,
    /// Memory in use that cannot be reclaimed under pressure (`memory.current` less the
    /// inactive file cache): what `kubectl top` shows and what OOM decisions use.
    pub memory_working_set_bytes: u64,
    /// Total memory charged to the container (including page cache).
    pub memory_usage_bytes: u64,
}
