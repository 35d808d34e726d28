//! HTTP GET probes on hyper, with the kubelet's rules (`pkg/probe/http`): one connection per
//! request, same-host redirects, default headers, the body read up to 10 KiB.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, LOCATION, REFERER, USER_AGENT,
};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

use super::conn::{dial, ConnectionTask};
use super::{authority, HttpGet, ProbeOutcome, PROBE_USER_AGENT};

/// How much of a response body a probe reads (Kubernetes' `maxRespBodyLength`).
pub(super) const MAX_BODY: usize = 10 * 1024;

/// How many requests one probe makes at most while following redirects (Go's client).
const MAX_REQUESTS: usize = 10;

/// A probe's URL: scheme, authority as written, host and port to dial, path with query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    /// The authority as written (`host`, `host:port`, `[::1]:80`): the default `Host`.
    authority: String,
    /// The host name or address, without brackets.
    host: String,
    port: u16,
    /// The path and query, percent-encoded where needed.
    path: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

impl Url {
    /// Parses `authority[/path]` after a scheme.
    fn from_parts(https: bool, rest: &str) -> Result<Url, String> {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("missing ']' in host {authority:?}"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, parse_port(port, default_port)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(format!("invalid port {after:?} after host")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port, default_port)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err("http: no Host in request URL".into());
        }
        Ok(Url {
            https,
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            path: normalize_path(path),
        })
    }

    /// Resolves a `Location` against this URL (RFC 3986 reference resolution).
    fn join(&self, location: &str) -> Result<Url, String> {
        let location = location.split('#').next().unwrap_or_default();
        if let Some((scheme, rest)) = split_scheme(location) {
            let https = match scheme.to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                other => return Err(format!("unsupported protocol scheme {other:?}")),
            };
            let rest = rest
                .strip_prefix("//")
                .ok_or_else(|| format!("unsupported protocol scheme {scheme:?}"))?;
            return Url::from_parts(https, rest);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::from_parts(self.https, rest);
        }
        let current = self.path.split('?').next().unwrap_or("/");
        let path = if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            format!("{current}{location}")
        } else {
            let dir = &current[..current.rfind('/').map_or(0, |at| at + 1)];
            format!("{dir}{location}")
        };
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query)),
            None => (path, None),
        };
        let mut path = remove_dot_segments(&path);
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        Ok(Url {
            path: normalize_path(&path),
            ..self.clone()
        })
    }
}

fn parse_port(port: &str, default: u16) -> Result<u16, String> {
    if port.is_empty() {
        return Ok(default);
    }
    port.parse()
        .map_err(|_| format!("invalid port {:?} after host", format!(":{port}")))
}

/// `scheme:` at the start of a reference, if any.
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Removes `.` and `..` segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// A probe path as Kubernetes sends it: no fragment, a leading `/` (empty is `/`), and bytes
/// that cannot appear in a request target percent-encoded.
pub(super) fn normalize_path(path: &str) -> String {
    let path = path.split('#').next().unwrap_or_default();
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for byte in path.bytes() {
        let plain = (0x21..0x7f).contains(&byte)
            && !matches!(
                byte,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            );
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request headers: the probe's own, then the defaults; `Host` taken out.
#[derive(Debug, Default)]
struct Headers {
    list: Vec<(HeaderName, HeaderValue)>,
    host: Option<String>,
}

fn request_headers(given: &[(String, String)]) -> Result<Headers, String> {
    let mut headers = Headers::default();
    for (name, value) in given {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("net/http: invalid header field name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("net/http: invalid header field value for {name:?}"))?;
        if header == HOST {
            if headers.host.is_none() && !value.is_empty() {
                headers.host = value.to_str().ok().map(str::to_string);
            }
            continue;
        }
        headers.list.push((header, value));
    }
    let first_empty = |list: &[(HeaderName, HeaderValue)], name: &HeaderName| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.is_empty())
    };
    match first_empty(&headers.list, &USER_AGENT) {
        None => headers
            .list
            .push((USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))),
        Some(true) => headers.list.retain(|(n, _)| n != USER_AGENT),
        Some(false) => {}
    }
    match first_empty(&headers.list, &ACCEPT) {
        None => headers.list.push((ACCEPT, HeaderValue::from_static("*/*"))),
        Some(true) => headers.list.retain(|(n, _)| n != ACCEPT),
        Some(false) => {}
    }
    Ok(headers)
}

/// Headers HTTP/2 forbids (RFC 9113 8.2.2); Go's HTTP/2 transport drops them.
fn connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

/// Runs one HTTP GET probe (see the module documentation of `prober`).
pub(super) async fn probe(target: &HttpGet, timeout: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + timeout;
    let scheme = target.scheme.to_ascii_lowercase();
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let first = Url {
        https: scheme == "https",
        authority: authority(host, target.port),
        host: host.to_string(),
        port: target.port,
        path: normalize_path(&target.path),
    };
    if scheme != "http" && scheme != "https" {
        return ProbeOutcome::Failure(format!(
            "Get \"{}\": unsupported protocol scheme {scheme:?}",
            target.url()
        ));
    }
    let mut headers = match request_headers(&target.headers) {
        Ok(headers) => headers,
        Err(error) => return ProbeOutcome::Failure(format!("Get \"{first}\": {error}")),
    };
    let given_referer = headers.list.iter().any(|(n, _)| n == REFERER);
    let mut current = first.clone();
    let mut requests = 0;
    loop {
        requests += 1;
        let (response, connection) =
            match timeout_at(deadline, send(&current, &headers)).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(error)) => {
                    return ProbeOutcome::Failure(format!("Get \"{current}\": {error}"))
                }
                Err(_) => {
                    return ProbeOutcome::Failure(format!(
                        "Get \"{current}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    ))
                }
            };
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| !l.is_empty() && matches!(status, 301 | 302 | 303 | 307 | 308));
        if let Some(location) = location {
            let next = match current.join(location) {
                Ok(next) => next,
                Err(error) => {
                    return ProbeOutcome::Failure(format!(
                        "Get \"{current}\": failed to parse Location header {location:?}: {error}"
                    ))
                }
            };
            // A redirect to another host ends the probe with this response.
            if next.host == first.host {
                if requests >= MAX_REQUESTS {
                    return ProbeOutcome::Failure(format!(
                        "Get \"{next}\": stopped after {MAX_REQUESTS} redirects"
                    ));
                }
                // A custom Host survives only relative redirects (Go's client).
                if split_scheme(location).is_some() || location.starts_with("//") {
                    headers.host = None;
                }
                // Go's client names the previous URL, unless leaving HTTPS for HTTP or the
                // probe sets its own Referer.
                if !given_referer {
                    headers.list.retain(|(n, _)| n != REFERER);
                    if !current.https || next.https {
                        if let Ok(referer) = HeaderValue::from_str(&current.to_string()) {
                            headers.list.push((REFERER, referer));
                        }
                    }
                }
                drop((response, connection));
                current = next;
                continue;
            }
        }
        let body = match timeout_at(deadline, read_body(response)).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return ProbeOutcome::Failure(error),
            Err(_) => {
                return ProbeOutcome::Failure(
                    "context deadline exceeded (Client.Timeout or context cancellation while reading body)"
                        .into(),
                )
            }
        };
        drop(connection);
        return match status {
            200..=299 => ProbeOutcome::Success,
            300..=399 => {
                ProbeOutcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
            }
            _ => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        };
    }
}

/// Reads up to [`MAX_BODY`] bytes of the body (more is not an error: it is cut).
async fn read_body(response: Response<Incoming>) -> Result<String, String> {
    let mut body = response.into_body();
    let mut read = Vec::new();
    while read.len() < MAX_BODY {
        match body.frame().await {
            None => break,
            Some(Err(error)) => return Err(hyper_error(&error)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY - read.len();
                    read.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&read).into_owned())
}

/// hyper's error with its cause.
pub(super) fn hyper_error(error: &hyper::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// Connects to `url` (TLS for HTTPS) and sends one GET; returns the response head and the
/// connection's task, to be kept until the body is read.
async fn send(
    url: &Url,
    headers: &Headers,
) -> Result<(Response<Incoming>, ConnectionTask), String> {
    let stream = dial(&url.host, url.port).await?;
    if !url.https {
        return exchange(stream, false, url, headers).await;
    }
    #[cfg(feature = "https-probes")]
    {
        let (stream, h2) = super::tls::connect(stream, &url.host).await?;
        exchange(stream, h2, url, headers).await
    }
    #[cfg(not(feature = "https-probes"))]
    {
        drop(stream);
        Err("HTTPS probes need the kubelet's https-probes feature".into())
    }
}

async fn exchange<T>(
    io: T,
    h2: bool,
    url: &Url,
    headers: &Headers,
) -> Result<(Response<Incoming>, ConnectionTask), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let host = headers.host.as_deref().unwrap_or(&url.authority);
    let io = TokioIo::new(io);
    let mut request = Request::get(if h2 {
        let scheme = if url.https { "https" } else { "http" };
        format!("{scheme}://{host}{}", url.path)
    } else {
        url.path.clone()
    });
    for (name, value) in &headers.list {
        if !(h2 && connection_specific(name)) {
            request = request.header(name, value);
        }
    }
    if !h2 {
        request = request.header(HOST, host);
        if !headers.list.iter().any(|(n, _)| n == CONNECTION) {
            request = request.header(CONNECTION, "close");
        }
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| hyper_error(&e))?;
        let task = ConnectionTask::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| hyper_error(&e))?;
        Ok((response, task))
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(io)
            .await
            .map_err(|e| hyper_error(&e))?;
        let task = ConnectionTask::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| hyper_error(&e))?;
        Ok((response, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        let (scheme, rest) = text.split_once("://").unwrap();
        Url::from_parts(scheme == "https", rest).unwrap()
    }

    #[test]
    fn paths_get_a_leading_slash_lose_fragments_and_are_encoded() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("healthz?full=1"), "/healthz?full=1");
        assert_eq!(normalize_path("/a b#frag"), "/a%20b");
        assert_eq!(normalize_path("/é"), "/%C3%A9");
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base = url("http://10.0.0.1:8080/a/b?x=1");
        assert_eq!(
            base.join("/c").unwrap().to_string(),
            "http://10.0.0.1:8080/c"
        );
        assert_eq!(
            base.join("c").unwrap().to_string(),
            "http://10.0.0.1:8080/a/c"
        );
        assert_eq!(
            base.join("../c").unwrap().to_string(),
            "http://10.0.0.1:8080/c"
        );
        assert_eq!(
            base.join("?y=2").unwrap().to_string(),
            "http://10.0.0.1:8080/a/b?y=2"
        );
        let other = base.join("https://example.com/x").unwrap();
        assert_eq!(
            (other.https, other.host.as_str(), other.port),
            (true, "example.com", 443)
        );
        let v6 = base.join("//[fd00::1]:9000").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("fd00::1", 9000, "/")
        );
        assert!(base.join("ftp://example.com/").is_err());
    }

    #[test]
    fn default_headers_come_after_the_probes_own_and_can_be_removed() {
        let headers = request_headers(&[("X-Custom".into(), "1".into())]).unwrap();
        let names: Vec<_> = headers.list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-custom", "user-agent", "accept"]);
        let headers = request_headers(&[
            ("accept".into(), "".into()),
            ("Host".into(), "example.com".into()),
        ])
        .unwrap();
        let names: Vec<_> = headers.list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["user-agent"]);
        assert_eq!(headers.host.as_deref(), Some("example.com"));
        assert_eq!(
            request_headers(&[("bad name".into(), "1".into())]).unwrap_err(),
            "net/http: invalid header field name \"bad name\""
        );
    }
}
