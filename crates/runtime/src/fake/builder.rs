//! [`FakeRuntimeBuilder`]: a fake runtime's node name, clock, registry, preloaded images and
//! pod IPs.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::ids::fnv1a;
use super::state::State;
use super::{FakeRegistry, FakeRuntime, ImageBehaviour, Inner};
use crate::clock::{Clock, FakeClock};
use crate::types::normalize_image_ref;

/// Builds a [`FakeRuntime`].
#[derive(Debug)]
pub struct FakeRuntimeBuilder {
    node_name: String,
    clock: Arc<dyn Clock>,
    registry: FakeRegistry,
    preload: Vec<String>,
    allow_unknown_pulls: bool,
    pod_ip_prefix: String,
    run_commands: bool,
}

impl FakeRuntimeBuilder {
    /// The node's name: part of every id, so runtimes of different nodes never share one.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// The clock (a fresh [`FakeClock`] by default).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock, shared.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The registry to pull from (a fresh one by default).
    pub fn registry(mut self, registry: FakeRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Serves `image` from the registry with `behaviour`.
    pub fn image(self, image: &str, behaviour: ImageBehaviour) -> Self {
        self.registry.insert(image, behaviour);
        self
    }

    /// Puts `image` on the node from the start (with the registry's behaviour, or the
    /// default one if the registry does not serve it).
    pub fn preload(mut self, image: &str) -> Self {
        self.preload.push(image.to_string());
        self
    }

    /// Pulls of images the registry does not serve succeed, with the default behaviour.
    pub fn allow_unknown_pulls(mut self, allow: bool) -> Self {
        self.allow_unknown_pulls = allow;
        self
    }

    /// Whether containers run their command line as their main process (off by default).
    ///
    /// When on, a container whose image does not script its main process (no log lines, no
    /// `exit_after`, no crash loop, no stdin handler and no
    /// [`ImageBehaviour::ignore_command`]; see [`ImageBehaviour::scripts_main_process`])
    /// and that has a command line (its config's `command`, or else the image's
    /// [`ImageBehaviour::entrypoint`], followed by its `args`) runs that command line from
    /// the moment it is running, with the same commands as `exec` (the image's handlers,
    /// then the built-ins: `sh`, `sleep`, `httpd`, ...), the container's environment and
    /// working directory:
    ///
    /// - what it writes to stdout and stderr becomes the container's log, line by line,
    ///   timestamped on the runtime's clock (with a terminal, both are stdout);
    /// - when it exits, the container exits with its code at that instant (`Completed` for
    ///   0, `Error` otherwise), so the kubelet's restart policy and back-off apply;
    /// - stopping the container kills it: exit code 143 (SIGTERM) unless the image's
    ///   [`ImageBehaviour::term_exit_code`](field@ImageBehaviour::term_exit_code) is
    ///   non-zero, 137 with a zero grace period;
    /// - with `stdin` open on the container, what attached sessions write reaches its stdin;
    /// - ports it listens on (`httpd -p PORT`) are reachable with `port_forward` while it
    ///   runs and refused after.
    ///
    /// A command that is neither scripted nor built in makes `start_container` fail and the
    /// container exit 128 (`StartError`), as runc's `executable file not found` does. Every
    /// running command is one tokio task (so `start_container` then needs a tokio runtime),
    /// which `sleep` parks on the clock: with a [`FakeClock`], the command line moves only
    /// when the test advances the clock. Off, containers of such images run forever
    /// quietly and no task is spawned.
    pub fn run_commands(mut self, on: bool) -> Self {
        self.run_commands = on;
        self
    }

    /// Sandbox IPs are `<prefix>.2` to `<prefix>.254` (`10.88.0` by default), reused once
    /// released. Simulations give each node its own prefix (its pod CIDR) so that pod IPs
    /// are unique across the cluster.
    pub fn pod_ip_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.pod_ip_prefix = prefix.into();
        self
    }

    /// The runtime.
    pub fn build(self) -> FakeRuntime {
        let node_hash = fnv1a(0xcbf2_9ce4_8422_2325, self.node_name.as_bytes());
        let mut state = State::default();
        for image in &self.preload {
            let behaviour = self.registry.get(image).unwrap_or_default();
            state.add_image(&normalize_image_ref(image), None, behaviour);
        }
        FakeRuntime {
            inner: Arc::new(Inner {
                node_name: self.node_name,
                node_hash,
                clock: self.clock,
                registry: self.registry,
                allow_unknown_pulls: self.allow_unknown_pulls,
                pod_ip_prefix: self.pod_ip_prefix,
                run_commands: self.run_commands,
                state: Mutex::new(state),
                changed: watch::Sender::new(0),
            }),
        }
    }
}

impl FakeRuntime {
    /// A builder with a fresh [`FakeClock`], an empty registry and node name `fake-node`.
    pub fn builder() -> FakeRuntimeBuilder {
        FakeRuntimeBuilder {
            node_name: "fake-node".into(),
            clock: Arc::new(FakeClock::new()),
            registry: FakeRegistry::new(),
            preload: Vec::new(),
            allow_unknown_pulls: false,
            pod_ip_prefix: "10.88.0".into(),
            run_commands: false,
        }
    }

    /// A runtime with the defaults of [`FakeRuntime::builder`].
    pub fn new() -> Self {
        Self::builder().build()
    }
}
