//! The errors of network plugins.

use std::path::PathBuf;

/// The result of a network plugin call.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Why a network plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network configuration is missing or invalid (no conflist, bad JSON, unknown
    /// plugin type). Not retryable until the configuration changes.
    #[error("invalid network configuration{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    InvalidConfig {
        /// The file, when the configuration came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// A plugin binary is not on the search path.
    #[error("CNI plugin {plugin:?} not found in {search_path:?}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        search_path: Vec<PathBuf>,
    },
    /// A plugin ran and reported an error (CNI's error result).
    #[error("CNI plugin {plugin} failed (code {code}): {message}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    PluginFailed {
        /// The plugin type.
        plugin: String,
        /// CNI's error code (1–99 are the spec's, 100+ the plugin's); 0 when the plugin
        /// printed no CNI error result or an unusable result.
        code: u32,
        /// `msg`.
        message: String,
        /// `details`.
        details: String,
    },
    /// A plugin ran longer than the configured timeout and was killed. Retryable.
    #[error("CNI plugin {plugin} did not finish within {timeout:?}")]
    PluginTimedOut {
        /// The plugin type.
        plugin: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// No address is left in the range.
    #[error("no free address in {range}")]
    AddressExhausted {
        /// The range, as configured.
        range: String,
    },
    /// The attachment is already set up.
    #[error("attachment {container_id}/{ifname} already exists")]
    AlreadyExists {
        /// The sandbox id.
        container_id: String,
        /// The interface.
        ifname: String,
    },
    /// `check` found the attachment missing or changed.
    #[error("attachment {container_id}/{ifname} is not as it was set up: {message}")]
    CheckFailed {
        /// The sandbox id.
        container_id: String,
        /// The interface.
        ifname: String,
        /// What differs.
        message: String,
    },
    /// The request itself is invalid (empty container id, missing netns on add).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The network is not ready to set up attachments (its configuration is not there
    /// yet, or a fake was told to fail). Retryable.
    #[error("network unavailable: {0}")]
    Unavailable(String),
    /// Running a plugin or reading state failed at the OS level.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether retrying the same call later can succeed: OS failures and exhausted ranges
    /// (addresses are freed as pods go), timeouts and an unavailable network can, configuration and
    /// request errors cannot. A
    /// plugin's own error is retryable when its code is CNI's "try again later" (11).
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::Io { .. }
            | NetError::AddressExhausted { .. }
            | NetError::Unavailable(_)
            | NetError::PluginTimedOut { .. } => true,
            NetError::PluginFailed { code, .. } => *code == 11,
            _ => false,
        }
    }

    /// An [`NetError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let again = NetError::PluginFailed {
            plugin: "bridge".into(),
            code: 11,
            message: "busy".into(),
            details: String::new(),
        };
        assert!(again.is_retryable());
        let bad = NetError::InvalidConfig {
            path: Some("/etc/cni/net.d/10-pods.conflist".into()),
            message: "no plugins".into(),
        };
        assert!(!bad.is_retryable());
        assert_eq!(
            bad.to_string(),
            "invalid network configuration /etc/cni/net.d/10-pods.conflist: no plugins"
        );
    }
}
