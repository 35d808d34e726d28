//! Port forward: SPDY stream pairs (`portforward.k8s.io`, also tunnelled in a WebSocket as
//! `SPDY/3.1+portforward.k8s.io`) and the kubelet's native WebSocket channels
//! (`v4.channel.k8s.io`, with `ports` in the query).

pub(crate) mod spdy;
pub(crate) mod websocket;

use super::StreamError;

/// The SPDY protocol name.
pub(crate) const SPDY_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in a WebSocket.
pub(crate) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Why a forwarded port could not be used, in the kubelet's words (what kubectl prints after
/// "an error occurred forwarding ...").
pub(crate) fn forward_error(port: u16, pod: &str, error: &StreamError) -> String {
    format!(
        "error forwarding port {port} to pod {pod}, uid : {}",
        error.message
    )
}

/// Parses a `port` header or query value as the kubelet does.
pub(crate) fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(0) => Err(format!("invalid port: {value}")),
        Ok(port) => Ok(port),
        Err(error) => Err(format!("unable to parse \"{value}\" as a port: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_the_kubelet() {
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(parse_port("0").is_err());
        assert!(parse_port("http")
            .unwrap_err()
            .contains("unable to parse \"http\""));
        let error = StreamError {
            code: 500,
            reason: "InternalError".into(),
            message: "connection refused".into(),
        };
        assert_eq!(
            forward_error(80, "p", &error),
            "error forwarding port 80 to pod p, uid : connection refused"
        );
    }
}
