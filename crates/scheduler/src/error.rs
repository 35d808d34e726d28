//! The scheduler's error type.

/// Errors of the scheduler crate. Plugin outcomes are [`Status`](crate::framework::Status)
/// values, not errors: an `Error` means the framework itself could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A profile names a plugin that no factory in the registry builds. Not retryable.
    #[error("plugin {0:?} is not registered")]
    UnknownPlugin(String),
    /// Two factories, or two profile entries, share a plugin name. Not retryable.
    #[error("plugin {0:?} is registered or enabled twice")]
    DuplicatePlugin(String),
    /// A plugin's factory rejected its arguments. Not retryable.
    #[error("invalid arguments for plugin {plugin:?}: {message}")]
    InvalidArgs {
        /// The plugin's name.
        plugin: String,
        /// Why the arguments were refused.
        message: String,
    },
    /// The profile is inconsistent (for example two QueueSort plugins or a negative
    /// weight). Not retryable.
    #[error("invalid scheduler profile: {0}")]
    InvalidProfile(String),
    /// The scheduler cache refused a pod transition (assuming a pod it already has, or a
    /// pod without a node). Not retryable.
    #[error("scheduler cache: {0}")]
    Cache(String),
    /// A call to the API failed; retryable when the API error is.
    #[error(transparent)]
    Api(#[from] capstan_api::Error),
}

impl Error {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The scheduler crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
