//! The runtime's one error type.

use std::time::Duration;

/// What a [`ContainerRuntime`](crate::ContainerRuntime) call can fail with.
///
/// Every variant says whether a caller may retry the same request unchanged
/// ([`RuntimeError::is_retryable`]). The kubelet maps them onto container reasons:
/// `ImagePullFailed` is `ErrImagePull`, `ImageNotFound` on create is `ErrImageNeverPull`-like
/// (the image must be pulled first), and `Unavailable` means the node's runtime is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The named object does not exist (`kind` is `"sandbox"`, `"container"` or `"image"`).
    /// Not retryable. Stop and remove calls never return it: they are idempotent.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// The kind of object looked up.
        kind: &'static str,
        /// The id (or name) that was not found.
        id: String,
    },
    /// An object with the same identity exists: a sandbox with the same name, namespace, uid
    /// and attempt, or a container with the same name and attempt in the same sandbox.
    /// Not retryable (remove the old one first, or bump the attempt).
    #[error("{kind} {name:?} already exists (id {id})")]
    AlreadyExists {
        /// The kind of object (`"sandbox"` or `"container"`).
        kind: &'static str,
        /// The reserved name.
        name: String,
        /// The id of the object holding the name.
        id: String,
    },
    /// The image is not present on the node (create a container only after pulling it).
    /// Not retryable as is: pull the image, then retry.
    #[error("image {image:?} not found on the node")]
    ImageNotFound {
        /// The image reference as asked.
        image: String,
    },
    /// Pulling the image failed (Kubernetes' `ErrImagePull`; the kubelet backs off into
    /// `ImagePullBackOff`). Retryable, after a back-off.
    #[error("failed to pull image {image:?}: {reason}")]
    ImagePullFailed {
        /// The image reference as asked.
        image: String,
        /// Why the pull failed (as the registry or runtime said).
        reason: String,
    },
    /// The request is malformed (an empty name, an empty command, ...). Not retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the call: starting a container twice,
    /// exec in a container that is not running, creating a container in a stopped sandbox.
    /// Not retryable as is.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The runtime cannot be reached or is not ready. Retryable.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish in time (an exec past its timeout). Retryable.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A bug or an unexpected runtime failure. Not retryable.
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// Whether the same request may succeed if sent again later (after a back-off).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::ImagePullFailed { .. }
                | RuntimeError::Unavailable(_)
                | RuntimeError::Timeout(_)
        )
    }

    /// Whether this is [`RuntimeError::NotFound`] (of any kind) or
    /// [`RuntimeError::ImageNotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RuntimeError::NotFound { .. } | RuntimeError::ImageNotFound { .. }
        )
    }

    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        RuntimeError::NotFound {
            kind,
            id: id.into(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pull_failures_unavailability_and_timeouts_are_retryable() {
        assert!(RuntimeError::ImagePullFailed {
            image: "x".into(),
            reason: "503".into()
        }
        .is_retryable());
        assert!(RuntimeError::Unavailable("down".into()).is_retryable());
        assert!(RuntimeError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!RuntimeError::not_found("container", "abc").is_retryable());
        assert!(!RuntimeError::ImageNotFound { image: "x".into() }.is_retryable());
        assert!(!RuntimeError::InvalidArgument("x".into()).is_retryable());
        assert!(!RuntimeError::Internal("x".into()).is_retryable());
    }

    #[test]
    fn messages_name_the_object() {
        let e = RuntimeError::not_found("sandbox", "abc");
        assert_eq!(e.to_string(), "sandbox \"abc\" not found");
        assert!(e.is_not_found());
    }
}
