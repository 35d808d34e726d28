//! Processes in fake containers: what a streaming exec handler gets ([`FakeProcess`]), how a
//! command is dispatched (scripted streaming handler, scripted [`ExecHandler`](super::ExecHandler),
//! then the built-in commands), and the plumbing of a session: pipes for the stdio, one
//! tokio task per exec that ends with the handler, is cancelled when the session is dropped,
//! and is killed (exit code 137) when the container stops.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, Either};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::fs::FileView;
use super::pipe::pipe;
use super::ports::Listeners;
use super::{builtins, FakeRuntime, ImageBehaviour, SIGKILL_EXIT_CODE};
use crate::clock::Clock;
use crate::error::{Result, RuntimeError};
use crate::streaming::{ByteReader, ByteWriter, ProcessIo, StdioOptions, TerminalSize};
use crate::types::ContainerState;

/// Answers a streaming exec of one command (`cmd[0]`): runs as the process and returns its
/// exit code. Scripted with [`ImageBehaviour::exec_stream`](super::ImageBehaviour::exec_stream).
pub type StreamExecHandler = Arc<dyn Fn(FakeProcess) -> BoxFuture<'static, i32> + Send + Sync>;

/// A process running in a fake container, as a streaming exec handler sees it.
///
/// Reading `stdin` ends (end-of-file) when the caller closes its side; writes to `stdout`
/// and `stderr` fail with `BrokenPipe` once the caller stopped reading. With a terminal,
/// `stderr` writes to the same stream as `stdout`. If the session is dropped or the
/// container stops, the handler's future is dropped (the process is killed).
pub struct FakeProcess {
    /// The command line (`argv[0]` is the command as asked).
    pub argv: Vec<String>,
    /// The environment: `PATH`, `HOSTNAME`, the container's variables, `HOME` (and `TERM`
    /// with a terminal).
    pub env: Vec<(String, String)>,
    /// The working directory (the container's, `/` by default).
    pub cwd: String,
    /// The container's hostname.
    pub hostname: String,
    /// Standard input.
    pub stdin: ByteReader,
    /// Standard output.
    pub stdout: ByteWriter,
    /// Standard error.
    pub stderr: ByteWriter,
    /// The container's files.
    pub files: FileView,
    /// The terminal, if the process runs on one.
    pub terminal: Terminal,
    /// The runtime's clock (for sleeping: [`FakeProcess::sleep`]).
    pub clock: Arc<dyn Clock>,
    /// The ports of the sandbox's network namespace (for `httpd`).
    pub(super) listeners: Listeners,
}

impl std::fmt::Debug for FakeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProcess")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("hostname", &self.hostname)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl FakeProcess {
    /// The value of an environment variable.
    pub fn getenv(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the rest of stdin.
    pub async fn read_stdin(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.stdin.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// Writes to stdout; errors (the caller went away) are returned.
    pub async fn print(&mut self, text: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stdout.write_all(text.as_ref()).await?;
        self.stdout.flush().await
    }

    /// Writes to stderr.
    pub async fn eprint(&mut self, text: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stderr.write_all(text.as_ref()).await?;
        self.stderr.flush().await
    }

    /// Waits until the runtime's clock has moved `duration` on from now.
    pub fn sleep(
        &self,
        duration: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let clock = self.clock.clone();
        async move { clock_sleep(clock.as_ref(), duration).await }
    }

    /// A process with the same environment, files and clock, other stdio and no terminal.
    pub(super) fn sibling(
        &self,
        argv: Vec<String>,
        stdin: ByteReader,
        stdout: ByteWriter,
        stderr: ByteWriter,
    ) -> FakeProcess {
        FakeProcess {
            argv,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            hostname: self.hostname.clone(),
            stdin,
            stdout,
            stderr,
            files: self.files.clone(),
            terminal: Terminal::none(),
            clock: self.clock.clone(),
            listeners: self.listeners.clone(),
        }
    }
}

/// A process's terminal: whether there is one and its size as the caller last set it.
#[derive(Debug)]
pub struct Terminal {
    tty: bool,
    changes: Option<mpsc::Receiver<TerminalSize>>,
    last: Option<TerminalSize>,
}

impl Terminal {
    pub(super) fn none() -> Terminal {
        Terminal {
            tty: false,
            changes: None,
            last: None,
        }
    }

    /// A terminal whose size never changes (a container's own one).
    pub(super) fn tty() -> Terminal {
        Terminal {
            tty: true,
            changes: None,
            last: None,
        }
    }

    /// Whether the process runs on a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// The latest size the caller sent (after every change queued so far), if any.
    pub fn size(&mut self) -> Option<TerminalSize> {
        if let Some(changes) = &mut self.changes {
            while let Ok(size) = changes.try_recv() {
                self.last = Some(size);
            }
        }
        self.last
    }

    /// Waits for the next size change; `None` once the caller can send no more.
    pub async fn changed(&mut self) -> Option<TerminalSize> {
        let size = self.changes.as_mut()?.recv().await?;
        self.last = Some(size);
        Some(size)
    }
}

/// Waits until `clock` has moved `duration` on from now.
pub(super) async fn clock_sleep(clock: &dyn Clock, duration: Duration) {
    let deadline = clock.now().checked_add(duration);
    loop {
        let tick = clock.tick();
        match deadline {
            Some(deadline) if clock.now() >= deadline => return,
            _ => tick.await,
        }
    }
}

/// How a container stopped being there for a process.
pub(super) enum Gone {
    /// It exited, with this code.
    Exited(i32),
    /// It was removed.
    Removed,
}

/// Resolves once container `id` is no longer running (or never was).
pub(super) async fn until_not_running(runtime: &FakeRuntime, id: &str) -> Gone {
    loop {
        let tick = runtime.inner.clock.tick();
        let mut changed = runtime.inner.changed.subscribe();
        let now = runtime.inner.clock.now();
        {
            let state = runtime.inner.state.lock();
            let Some(record) = state.containers.get(id) else {
                return Gone::Removed;
            };
            let observed = record.observe(now);
            if observed.state != ContainerState::Running {
                return Gone::Exited(observed.exit_code.unwrap_or(SIGKILL_EXIT_CODE));
            }
        }
        let changed = std::pin::pin!(changed.changed());
        futures::future::select(tick, changed).await;
    }
}

/// What a new process in a container starts from.
#[derive(Debug, Clone)]
pub(super) struct ProcessBase {
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: String,
    pub(super) hostname: String,
    pub(super) files: FileView,
    pub(super) behaviour: Arc<ImageBehaviour>,
    pub(super) listeners: Listeners,
}

impl ProcessBase {
    /// A process of the container with this command line and stdio.
    pub(super) fn process(
        &self,
        argv: Vec<String>,
        stdin: ByteReader,
        stdout: ByteWriter,
        stderr: ByteWriter,
        terminal: Terminal,
        clock: Arc<dyn Clock>,
    ) -> FakeProcess {
        let mut env = self.env.clone();
        if terminal.tty {
            env.push(("TERM".into(), "xterm".into()));
        }
        FakeProcess {
            argv,
            env,
            cwd: self.cwd.clone(),
            hostname: self.hostname.clone(),
            stdin,
            stdout,
            stderr,
            files: self.files.clone(),
            terminal,
            clock,
            listeners: self.listeners.clone(),
        }
    }
}

/// Runs `process.argv` to completion: a scripted streaming handler gets the process, anything
/// else runs in place.
pub(super) async fn run(behaviour: Arc<ImageBehaviour>, mut process: FakeProcess) -> i32 {
    let name = process.argv[0].clone();
    if let Some(handler) = lookup(&behaviour.exec_stream, &name) {
        return handler(process).await;
    }
    let argv = process.argv.clone();
    let code = run_in_place(&behaviour, &mut process, argv).await;
    let _ = process.stdout.shutdown().await;
    let _ = process.stderr.shutdown().await;
    code
}

fn lookup<'a, T>(map: &'a std::collections::BTreeMap<String, T>, name: &str) -> Option<&'a T> {
    map.get(name)
        .or_else(|| map.get(name.rsplit('/').next().unwrap_or(name)))
}

/// Runs `argv` with `process`'s stdio and files, without giving the process away: scripted
/// [`ExecHandler`](super::ExecHandler)s, scripted streaming handlers (with no stdin), then the
/// built-in commands. Returns the exit code.
pub(super) fn run_in_place<'a>(
    behaviour: &'a Arc<ImageBehaviour>,
    process: &'a mut FakeProcess,
    argv: Vec<String>,
) -> BoxFuture<'a, i32> {
    Box::pin(async move {
        let name = argv[0].clone();
        if let Some(handler) = lookup(&behaviour.exec, &name) {
            let outcome = handler(&argv);
            if !outcome.duration.is_zero() {
                process.sleep(outcome.duration).await;
            }
            let _ = process.stdout.write_all(&outcome.response.stdout).await;
            let _ = process.stderr.write_all(&outcome.response.stderr).await;
            return outcome.response.exit_code;
        }
        if let Some(handler) = lookup(&behaviour.exec_stream, &name) {
            let (out_w, mut out_r) = pipe();
            let (err_w, mut err_r) = pipe();
            let child = process.sibling(
                argv,
                Box::pin(tokio::io::empty()),
                Box::pin(out_w),
                Box::pin(err_w),
            );
            let FakeProcess { stdout, stderr, .. } = process;
            let (code, _, _) = futures::join!(
                handler(child),
                tokio::io::copy(&mut out_r, stdout),
                tokio::io::copy(&mut err_r, stderr),
            );
            return code;
        }
        builtins::run(behaviour, process, argv).await
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `cmd` in container `id` as a streaming exec session.
pub(super) fn start_exec(
    runtime: FakeRuntime,
    id: String,
    base: ProcessBase,
    cmd: Vec<String>,
    stdio: StdioOptions,
) -> ProcessIo {
    let (stdin_client, stdin_process): (Option<ByteWriter>, ByteReader) = if stdio.stdin {
        let (w, r) = pipe();
        (Some(Box::pin(w)), Box::pin(r))
    } else {
        (None, Box::pin(tokio::io::empty()))
    };
    let (stdout_client, stdout_process): (Option<ByteReader>, Option<super::pipe::PipeWriter>) =
        if stdio.stdout {
            let (w, r) = pipe();
            let w = if stdio.tty { w.onlcr() } else { w };
            (Some(Box::pin(r)), Some(w))
        } else {
            (None, None)
        };
    let (stderr_client, stderr_process): (Option<ByteReader>, ByteWriter) = if stdio.tty {
        match &stdout_process {
            Some(w) => (None, Box::pin(w.clone())),
            None => (None, Box::pin(tokio::io::sink())),
        }
    } else if stdio.stderr {
        let (w, r) = pipe();
        (Some(Box::pin(r)), Box::pin(w))
    } else {
        (None, Box::pin(tokio::io::sink()))
    };
    let stdout_process: ByteWriter = match stdout_process {
        Some(w) => Box::pin(w),
        None => Box::pin(tokio::io::sink()),
    };
    let (resize, terminal) = if stdio.tty {
        let (tx, rx) = mpsc::channel(16);
        (
            Some(tx),
            Terminal {
                tty: true,
                changes: Some(rx),
                last: None,
            },
        )
    } else {
        (None, Terminal::none())
    };
    let behaviour = base.behaviour.clone();
    let process = base.process(
        cmd,
        stdin_process,
        stdout_process,
        stderr_process,
        terminal,
        runtime.inner.clock.clone(),
    );
    let task = tokio::spawn(async move {
        let running = std::pin::pin!(run(behaviour, process));
        let gone = std::pin::pin!(until_not_running(&runtime, &id));
        match futures::future::select(running, gone).await {
            Either::Left((code, _)) => Ok(code),
            Either::Right((Gone::Exited(_), _)) => Ok(SIGKILL_EXIT_CODE),
            Either::Right((Gone::Removed, _)) => {
                Err(RuntimeError::not_found("container", id.clone()))
            }
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    let exit = Box::pin(async move {
        let _guard = guard;
        match task.await {
            Ok(result) => result,
            Err(e) => Err(RuntimeError::Internal(format!("exec process lost: {e}"))),
        }
    });
    ProcessIo {
        stdin: stdin_client,
        stdout: stdout_client,
        stderr: stderr_client,
        resize,
        exit,
    }
}

/// Runs `cmd` with no stdin and collects its output (for `exec_sync`), until it exits, the
/// container stops (exit code 137) or `timeout` passes on the clock (`Timeout`).
pub(super) async fn run_collected(
    runtime: &FakeRuntime,
    id: &str,
    base: ProcessBase,
    cmd: Vec<String>,
    timeout: Option<Duration>,
) -> Result<(i32, Vec<u8>, Vec<u8>)> {
    let (out_w, out_r) = pipe();
    let (err_w, err_r) = pipe();
    let behaviour = base.behaviour.clone();
    let process = base.process(
        cmd,
        Box::pin(tokio::io::empty()),
        Box::pin(out_w),
        Box::pin(err_w),
        Terminal::none(),
        runtime.inner.clock.clone(),
    );
    let work = async move {
        let running = std::pin::pin!(run(behaviour, process));
        let gone = std::pin::pin!(until_not_running(runtime, id));
        let code = match futures::future::select(running, gone).await {
            Either::Left((code, _)) => code,
            Either::Right(_) => SIGKILL_EXIT_CODE,
        };
        code
    };
    let all = async move {
        let (code, out, err) = futures::join!(work, read_all(out_r), read_all(err_r));
        (code, out, err)
    };
    let clock = runtime.inner.clock.clone();
    let all = std::pin::pin!(all);
    match timeout {
        None => Ok(all.await),
        Some(limit) => {
            let deadline = std::pin::pin!(clock_sleep(clock.as_ref(), limit));
            match futures::future::select(all, deadline).await {
                Either::Left((done, _)) => Ok(done),
                Either::Right(_) => Err(RuntimeError::Timeout(limit)),
            }
        }
    }
}

async fn read_all(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = reader.read_to_end(&mut out).await;
    out
}

/// Writes all of `data`, then flushes.
pub(super) async fn write_out(
    writer: &mut (impl AsyncWrite + Unpin + ?Sized),
    data: &[u8],
) -> std::io::Result<()> {
    writer.write_all(data).await?;
    writer.flush().await
}

/// The time as the process sees it (for archive entries).
pub(super) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
