//! SPDY/3.1, the transport of `kubectl exec`/`attach`/`port-forward` before WebSockets (and,
//! tunnelled inside a WebSocket, of `kubectl port-forward` since 1.31): the framing
//! ([`frame`]) and a server-role session ([`session`]) that remote command and port forward
//! share.

pub(crate) mod dictionary;
pub(crate) mod frame;
pub(crate) mod session;

pub(crate) use session::{Session, SessionConfig, Stream};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
