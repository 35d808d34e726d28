//! `pods/exec`, `pods/attach` and `pods/portforward`: a connection upgrade relayed to the
//! kubelet, then spliced.
//!
//! A request is a GET (WebSocket, `Sec-WebSocket-*` headers) or a POST (SPDY/3.1,
//! `X-Stream-Protocol-Version`) with `Connection: Upgrade`. Its options are checked first
//! (`command` for exec, at least one of `stdin`, `stdout`, `stderr` for exec and attach, the
//! container as for logs, a node assigned, a Pod not completed), then the kubelet's URL is
//! built as kube-apiserver's `ExecLocation`/`AttachLocation`/`PortForwardLocation` build it
//! (`/exec/{ns}/{pod}/{container}?command=..&input=1&output=1&error=1&tty=1`,
//! `/portForward/{ns}/{pod}?port=..`). The request goes there with its upgrade headers and the
//! server's kubelet credential (the caller's `Authorization` never leaves the server). The
//! kubelet's answer is relayed as it is; when it is 101, both upgraded connections are spliced
//! byte for byte until either side closes. A request without an upgrade is 400 `Upgrade
//! request required` once its options are valid, as kube-apiserver answers.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::Error;

use super::{
    choose_container, encode_query, kubelet_client, path_escape, query_bool, read_pod, StreamError,
    Streams,
};
use crate::http::layers::{Attributes, Decision, ResourceAttributes, UserInfo};

/// The three upgrade subresources of Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStream {
    /// `pods/exec`: run a command in a container.
    Exec,
    /// `pods/attach`: attach to a container's main process.
    Attach,
    /// `pods/portforward`: forward ports of the Pod's network namespace.
    PortForward,
}

impl PodStream {
    /// The subresource's name (`exec`, `attach`, `portforward`).
    pub fn subresource(self) -> &'static str {
        match self {
            PodStream::Exec => "exec",
            PodStream::Attach => "attach",
            PodStream::PortForward => "portforward",
        }
    }
}

/// The kubelet path and query a request's options name, before the Pod is known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamOptions {
    container: Option<String>,
    /// The kubelet's query pairs.
    query: Vec<(&'static str, String)>,
}

/// Reads and checks the options of `stream` from `raw_query`.
///
/// Errors: 400 `you must specify at least 1 command` (exec), `you must specify at least 1
/// of stdin, stdout, stderr` (exec, attach), or a port that is not a number.
fn stream_options(stream: PodStream, raw_query: &str) -> Result<StreamOptions, Error> {
    let values = |name| crate::http::rest::query_values(raw_query, name);
    let container = values("container")
        .into_iter()
        .next()
        .filter(|c| !c.is_empty());
    let mut query = Vec::new();
    match stream {
        PodStream::Exec | PodStream::Attach => {
            let commands = values("command");
            if stream == PodStream::Exec && commands.is_empty() {
                return Err(Error::bad_request("you must specify at least 1 command"));
            }
            let flags = [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
            ]
            .map(|(option, param)| (param, query_bool(raw_query, option)));
            if flags.iter().all(|(_, set)| !set) {
                return Err(Error::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            for (param, set) in flags {
                if set {
                    query.push((param, "1".to_string()));
                }
            }
            if query_bool(raw_query, "tty") {
                query.push(("tty", "1".to_string()));
            }
            query.extend(commands.into_iter().map(|c| ("command", c)));
        }
        PodStream::PortForward => {
            let mut ports = Vec::new();
            for value in values("ports") {
                for port in value.split(',').filter(|p| !p.is_empty()) {
                    let port: i32 = port.trim().parse().map_err(|_| {
                        Error::bad_request(format!(
                            "strconv.ParseInt: parsing {port:?}: invalid syntax"
                        ))
                    })?;
                    ports.push(port.to_string());
                }
            }
            if !ports.is_empty() {
                query.push(("port", ports.join(",")));
            }
        }
    }
    Ok(StreamOptions { container, query })
}

/// The handler of `pods/exec`.
pub(crate) async fn exec(
    State(streams): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    serve(&streams, PodStream::Exec, &namespace, &name, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The handler of `pods/attach`.
pub(crate) async fn attach(
    State(streams): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    serve(&streams, PodStream::Attach, &namespace, &name, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The handler of `pods/portforward`.
pub(crate) async fn port_forward(
    State(streams): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    serve(&streams, PodStream::PortForward, &namespace, &name, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether `headers` ask for a connection upgrade (`Connection: Upgrade` and an `Upgrade`
/// header), as Kubernetes' `httpstream.IsUpgradeRequest`.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// What to check so that a WebSocket upgrade (a GET) of `stream` is also allowed `create`,
/// as the SPDY POST is (Kubernetes' `AuthorizePodWebsocketUpgradeCreatePermission`): `None`
/// for a POST, a GET without an upgrade (refused later), or when the server has no
/// authorizer in the request's extensions.
fn create_check(
    request: &Request,
    stream: PodStream,
    namespace: &str,
    name: &str,
) -> Option<(crate::http::reviews::ReviewBackends, Attributes)> {
    if request.method() != Method::GET || !is_upgrade_request(request.headers()) {
        return None;
    }
    let backends = request
        .extensions()
        .get::<crate::http::reviews::ReviewBackends>()
        .cloned()?;
    let attributes = Attributes {
        user: request
            .extensions()
            .get::<UserInfo>()
            .cloned()
            .unwrap_or_else(UserInfo::anonymous),
        verb: "create".into(),
        resource: Some(ResourceAttributes {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            subresource: Some(stream.subresource().into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
        }),
        path: request.uri().path().to_string(),
    };
    Some((backends, attributes))
}

/// Asks `backends`' authorizer about `attributes`; a denial is 403 in Kubernetes' words.
async fn decide(
    backends: crate::http::reviews::ReviewBackends,
    attributes: Attributes,
) -> Result<(), Error> {
    match backends.authorizer.authorize(&attributes).await {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(Error::Forbidden {
            message: attributes.forbidden_message(&reason),
        }),
    }
}

/// Refuses exec and attach into a Pod that has finished, in kubectl's words.
fn check_phase(stream: PodStream, pod: &Pod) -> Result<(), Error> {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    if !matches!(phase, "Succeeded" | "Failed") {
        return Ok(());
    }
    Err(Error::bad_request(match stream {
        PodStream::Exec => {
            format!("cannot exec into a container in a completed pod; current phase is {phase}")
        }
        PodStream::Attach => {
            format!("cannot attach to a container in a completed pod; current phase is {phase}")
        }
        PodStream::PortForward => {
            format!("unable to forward port because pod is not running. Current status={phase}")
        }
    }))
}

async fn serve(
    streams: &Streams,
    stream: PodStream,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> Result<Response, StreamError> {
    if let Some((backends, attributes)) = create_check(&request, stream, namespace, name) {
        decide(backends, attributes).await?;
    }
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let options = stream_options(stream, &raw_query)?;
    let pod = read_pod(streams, namespace, name).await?;
    let container = match stream {
        PodStream::PortForward => None,
        _ => Some(choose_container(&pod, options.container.as_deref())?),
    };
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::bad_request(format!("pod {name} does not have a host assigned")))?;
    check_phase(stream, &pod)?;
    if !is_upgrade_request(request.headers()) {
        return Err(Error::bad_request("Upgrade request required").into());
    }
    let kubelet = kubelet_client(request.extensions());
    let location = kubelet
        .node_location(streams.client(), &node)
        .await
        .map_err(super::log::location_error)?;
    let mut path = match &container {
        Some(container) => format!(
            "/{}/{}/{}/{}",
            stream.subresource(),
            path_escape(namespace),
            path_escape(name),
            path_escape(container)
        ),
        None => format!(
            "/portForward/{}/{}",
            path_escape(namespace),
            path_escape(name)
        ),
    };
    let query = encode_query(&options.query);
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let client_upgrade = hyper::upgrade::on(&mut request);
    let mut outgoing = axum::http::Request::builder()
        .method(request.method().clone())
        .uri(&path)
        .body(Body::empty())
        .map_err(|e| StreamError::unknown(500, e.to_string()))?;
    *outgoing.headers_mut() = forwarded_headers(request.headers(), true);
    let response = kubelet
        .send(&location, outgoing)
        .await
        .map_err(|e| StreamError::unknown(500, format!("error dialing backend: {e}")))?;
    Ok(relay(response, Some(client_upgrade)))
}

/// Hop-by-hop headers, which a proxy does not forward (RFC 9110), but for the upgrade pair
/// when upgrading.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers of a request relayed to a kubelet: the caller's, without its credentials,
/// `Host`, impersonation and (unless `upgrade`) hop-by-hop headers.
pub(crate) fn forwarded_headers(headers: &HeaderMap, upgrade: bool) -> HeaderMap {
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.as_str();
        let dropped = lower == "authorization"
            || lower == "host"
            || lower == "content-length"
            || lower.starts_with("impersonate-")
            || (HOP_BY_HOP.contains(&lower)
                && !(upgrade && matches!(lower, "connection" | "upgrade")));
        if !dropped {
            forwarded.append(name.clone(), value.clone());
        }
    }
    forwarded
}

/// Relays a kubelet's `response`: on 101 with `client_upgrade`, splices the two upgraded
/// connections in a task of their own and answers 101 with the kubelet's headers; otherwise
/// answers its status, headers (without hop-by-hop ones) and streamed body.
pub(crate) fn relay(
    mut response: axum::http::Response<hyper::body::Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let kubelet_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(client_upgrade, kubelet_upgrade));
            let mut answer = Response::new(Body::empty());
            *answer.status_mut() = status;
            *answer.headers_mut() = response.headers().clone();
            return answer;
        }
    }
    let (parts, body) = response.into_parts();
    let mut answer = Response::new(Body::new(body));
    *answer.status_mut() = status;
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != HeaderName::from_static("content-length")
        {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// Copies bytes both ways between the caller's and the kubelet's upgraded connections until
/// both directions end (each end's shutdown reaches the other side).
async fn splice(client: hyper::upgrade::OnUpgrade, kubelet: hyper::upgrade::OnUpgrade) {
    let (client, kubelet) = tokio::join!(client, kubelet);
    match (client, kubelet) {
        (Ok(client), Ok(kubelet)) => {
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut kubelet = hyper_util::rt::TokioIo::new(kubelet);
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                tracing::debug!("upgraded stream ended: {error}");
            }
        }
        (client, kubelet) => {
            tracing::debug!(
                client_ok = client.is_ok(),
                kubelet_ok = kubelet.is_ok(),
                "an upgrade did not complete"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_become_the_kubelet_query_as_kubernetes_builds_it() {
        let options = stream_options(
            PodStream::Exec,
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=true&container=app",
        )
        .unwrap();
        assert_eq!(options.container.as_deref(), Some("app"));
        assert_eq!(
            encode_query(&options.query),
            "command=sh&command=-c&command=echo+hi&input=1&output=1&tty=1"
        );
    }

    #[test]
    fn exec_needs_a_command_and_a_stream() {
        assert_eq!(
            stream_options(PodStream::Exec, "stdout=1")
                .unwrap_err()
                .to_string(),
            "you must specify at least 1 command"
        );
        assert_eq!(
            stream_options(PodStream::Exec, "command=ls")
                .unwrap_err()
                .to_string(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(stream_options(PodStream::Attach, "stdout=1").is_ok());
    }

    #[test]
    fn port_forward_ports_are_joined_into_one_port_parameter() {
        let options = stream_options(PodStream::PortForward, "ports=80&ports=443").unwrap();
        assert_eq!(encode_query(&options.query), "port=80%2C443");
        assert!(stream_options(PodStream::PortForward, "ports=http").is_err());
        assert!(stream_options(PodStream::PortForward, "")
            .unwrap()
            .query
            .is_empty());
    }

    #[test]
    fn upgrade_requests_need_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(!is_upgrade_request(&headers));
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade_request(&headers));
    }

    #[test]
    fn relayed_headers_drop_credentials_and_keep_the_upgrade_pair_only_when_upgrading() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer user".parse().unwrap());
        headers.insert("impersonate-user", "bob".parse().unwrap());
        headers.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        headers.append(
            "x-stream-protocol-version",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        headers.append(
            "x-stream-protocol-version",
            "v3.channel.k8s.io".parse().unwrap(),
        );
        let upgraded = forwarded_headers(&headers, true);
        assert!(upgraded.get(header::AUTHORIZATION).is_none());
        assert!(upgraded.get("impersonate-user").is_none());
        assert_eq!(
            upgraded.get_all("x-stream-protocol-version").iter().count(),
            2
        );
        assert_eq!(upgraded[header::UPGRADE], "SPDY/3.1");
        let plain = forwarded_headers(&headers, false);
        assert!(plain.get(header::UPGRADE).is_none());
        assert!(plain.get(header::CONNECTION).is_none());
    }
}
