//! What containers of a fake image do, as scripted by an [`ImageBehaviour`] (start delay,
//! exit, crash loop, pull failure, log lines, exec handlers), and the [`FakeRegistry`] that
//! serves behaviours by image reference.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;

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
    /// Exec handlers by command name (`cmd[0]`). Without one, `true`, `false` and `echo`
    /// behave as in a shell and anything else exits 127 (`executable file not found`).
    pub exec: BTreeMap<String, ExecHandler>,
    /// The exit code when stopped with a grace period (it handles SIGTERM); 0 by default.
    pub term_exit_code: i32,
    /// The image's size in bytes (1 MiB by default).
    pub size: Option<u64>,
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
            .field("term_exit_code", &self.term_exit_code)
            .field("size", &self.size)
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

pub(super) fn builtin_exec(cmd: &[String]) -> ExecOutcome {
    match cmd[0].as_str() {
        "true" => ExecResponse::new(0).into(),
        "false" => ExecResponse::new(1).into(),
        "echo" => {
            let mut out = cmd[1..].join(" ");
            out.push('\n');
            ExecResponse::new(0).stdout(out).into()
        }
        other => ExecResponse::new(127)
            .stderr(format!(
                "exec: {other:?}: executable file not found in $PATH\n"
            ))
            .into(),
    }
}
