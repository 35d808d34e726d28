//! The kubelet's one error type.

use capstan_net::NetError;
use capstan_runtime::RuntimeError;

/// What building or running a [`Kubelet`](crate::Kubelet) can fail with.
///
/// Pod-level failures (an image that does not pull, a container that crashes) are not errors
/// of the kubelet: they are reported in the Pod's status and Events and retried with a
/// back-off. These variants are what the kubelet itself cannot get past.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The configuration is invalid (an empty node name, a zero heartbeat interval, ...).
    /// Nothing was started. Not retryable.
    #[error("invalid kubelet configuration: {0}")]
    InvalidConfig(String),
    /// A call to the API server failed. Retryable when the inner error is.
    #[error("API request failed while {context}: {source}")]
    Api {
        /// What the kubelet was doing.
        context: String,
        /// The API error.
        #[source]
        source: capstan_api::Error,
    },
    /// A call to the container runtime failed. Retryable when the inner error is.
    #[error("container runtime failed while {context}: {source}")]
    Runtime {
        /// What the kubelet was doing.
        context: String,
        /// The runtime error.
        #[source]
        source: RuntimeError,
    },
    /// A call to the network plugin failed. Retryable when the inner error is.
    #[error("network plugin failed while {context}: {source}")]
    Network {
        /// What the kubelet was doing.
        context: String,
        /// The plugin error.
        #[source]
        source: NetError,
    },
    /// The kubelet's HTTP API could not listen on its address (in use, not local). Nothing
    /// was started.
    #[error("serving the kubelet API on {address}: {source}")]
    Serve {
        /// The address.
        address: std::net::SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
}

impl KubeletError {
    pub(crate) fn api(context: impl Into<String>, source: capstan_api::Error) -> Self {
        KubeletError::Api {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn runtime(context: impl Into<String>, source: RuntimeError) -> Self {
        KubeletError::Runtime {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn network(context: impl Into<String>, source: NetError) -> Self {
        KubeletError::Network {
            context: context.into(),
            source,
        }
    }

    /// A 409 Conflict from the API server: the object changed since it was read.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, KubeletError::Api { source, .. } if source.is_conflict())
    }
}

/// The result type of this crate.
pub type Result<T, E = KubeletError> = std::result::Result<T, E>;
