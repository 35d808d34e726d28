//! The outcome of a plugin call, kube-scheduler's `framework.Status`.

use std::borrow::Cow;
use std::fmt;

/// What a plugin call decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The plugin ran and the pod may go on (fits the node, scored, reserved, bound...).
    Success,
    /// The plugin failed for an internal reason; the pod is retried with backoff.
    Error,
    /// The pod does not fit, but preemption or a cluster change may make it fit.
    Unschedulable,
    /// The pod does not fit, and preemption cannot help on this node.
    UnschedulableAndUnresolvable,
    /// A Permit plugin asks the pod to wait (see [`PermitDecision`](super::PermitDecision)).
    Wait,
    /// The plugin has nothing to do for this pod: later calls of the same plugin in the cycle
    /// are skipped (PreFilter, PreScore) or the next plugin is asked (Bind).
    Skip,
}

/// A plugin's outcome: a [`Code`], the reasons a user reads, and the plugin that failed.
///
/// `Status` is kept apart from `Err`: a pod that does not fit is a normal outcome, not an
/// error. Success carries no reasons and allocates nothing. Reasons are `Cow<'static, str>`,
/// so the usual fixed reasons ("node(s) didn't match Pod's node affinity/selector") are not
/// copied per node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    reasons: Vec<Cow<'static, str>>,
    plugin: Option<Cow<'static, str>>,
}

impl Default for Status {
    fn default() -> Self {
        Status::success()
    }
}

impl Status {
    /// A status with `code` and one reason.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Self {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: None,
        }
    }

    /// Success, without reasons.
    pub const fn success() -> Self {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: None,
        }
    }

    /// `Unschedulable` with one reason.
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Code::Unschedulable, reason)
    }

    /// `UnschedulableAndUnresolvable` with one reason.
    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// `Error` with one reason.
    pub fn error(reason: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Code::Error, reason)
    }

    /// `Skip`, without reasons.
    pub const fn skip() -> Self {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: None,
        }
    }

    /// `Wait`, without reasons.
    pub const fn wait() -> Self {
        Status {
            code: Code::Wait,
            reasons: Vec::new(),
            plugin: None,
        }
    }

    /// Adds one more reason.
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    /// Records which plugin produced this status (the framework does this for every
    /// non-success status it returns).
    pub fn with_plugin(mut self, plugin: impl Into<Cow<'static, str>>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons, in order.
    pub fn reasons(&self) -> impl ExactSizeIterator<Item = &str> {
        self.reasons.iter().map(|r| r.as_ref())
    }

    /// The plugin that produced this status, when the framework recorded it.
    pub fn plugin(&self) -> Option<&str> {
        self.plugin.as_deref()
    }

    /// `code == Success`.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// `code == Skip`.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// `code == Wait`.
    pub fn is_wait(&self) -> bool {
        self.code == Code::Wait
    }

    /// Unschedulable or UnschedulableAndUnresolvable: the pod does not fit.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    /// Error.
    pub fn is_error(&self) -> bool {
        self.code == Code::Error
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(f, "{:?}", self.code);
        }
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(r)?;
        }
        Ok(())
    }
}
