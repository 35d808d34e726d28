//! The errors of the service proxy and its backends.

/// The result of a proxy call.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// Why a proxy backend or the proxy loop failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The desired state is unusable (clashing cluster IPs, port 0, endpoints of another
    /// family). Nothing was changed; not retryable until the input changes.
    #[error("invalid proxy state for {service}: {message}")]
    InvalidState {
        /// The Service port at fault (`namespace/name:port`).
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A dataplane command ran and failed. For `iptables-restore` and `nft -f` the
    /// transaction was refused as a whole, so the dataplane is as before.
    #[error("{command} failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, without its input.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A dataplane command could not be started (usually: not installed).
    #[error("cannot run {command}: {source}")]
    CommandUnavailable {
        /// The program.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel has no IPVS, so the `ipvs` backend cannot work on this node.
    #[error("the kernel has no IPVS support ({reason}); load the ip_vs module or use the iptables or nftables backend")]
    IpvsUnavailable {
        /// What was checked.
        reason: String,
    },
    /// The proxy loop stopped because its backend or informers went away.
    #[error("the proxy loop stopped: {0}")]
    Stopped(String),
}

impl ProxyError {
    /// Whether retrying the same sync later can succeed: a failed or missing command can
    /// (tables busy, binary being installed), an invalid state or a kernel without IPVS
    /// cannot.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::CommandFailed { .. } | ProxyError::CommandUnavailable { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_failures_name_the_command_and_its_stderr() {
        let error = ProxyError::CommandFailed {
            command: "iptables-restore --noflush".into(),
            status: "exit status: 2".into(),
            stderr: "line 3: chain KUBE-SVC-X does not exist".into(),
        };
        assert_eq!(
            error.to_string(),
            "iptables-restore --noflush failed (exit status: 2): line 3: chain KUBE-SVC-X does not exist"
        );
        assert!(error.is_retryable());
        let invalid = ProxyError::InvalidState {
            service: "default/web".into(),
            message: "port 0".into(),
        };
        assert!(!invalid.is_retryable());
    }
}
