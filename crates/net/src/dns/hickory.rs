//! The DNS server: a [`ClusterDns`] served over UDP and TCP with `hickory-server`.
//!
//! Each request carries one question of class IN; other requests get `FORMERR` (not one
//! question), `NOTIMP` (not a standard query) or `REFUSED` (another class). EDNS requests
//! get an EDNS response; UDP answers are truncated to the client's buffer (512 bytes
//! without EDNS) by `hickory-server`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Name};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::metrics::{DnsMetrics, Served};
use super::{ClusterDns, DnsError};
use hickory_server::net::xfer::Protocol;

/// How long a TCP connection may stay idle between requests.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running DNS server; see the [module docs](self). Dropping it stops serving.
pub struct DnsServer {
    server: Server<Handler>,
    addr: SocketAddr,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (with port 0, one free port for both) and starts serving
    /// `dns` at once.
    ///
    /// # Errors
    ///
    /// [`DnsError::Bind`] when either socket cannot be bound.
    pub async fn bind(dns: ClusterDns, addr: SocketAddr) -> Result<Self, DnsError> {
        Self::bind_with_metrics(dns, addr, DnsMetrics::new()).await
    }

    /// Binds and serves as [`bind`](Self::bind) does, counting every request in `metrics`
    /// (CoreDNS' `coredns_dns_*` series).
    ///
    /// # Errors
    ///
    /// [`DnsError::Bind`] when either socket cannot be bound.
    pub async fn bind_with_metrics(
        dns: ClusterDns,
        addr: SocketAddr,
        metrics: DnsMetrics,
    ) -> Result<Self, DnsError> {
        let bind_error = |addr, source| DnsError::Bind { addr, source };
        // With port 0, the UDP port picked may be taken for TCP: try a few.
        let mut tries = if addr.port() == 0 { 16 } else { 1 };
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(|e| bind_error(addr, e))?;
            let bound = udp.local_addr().map_err(|e| bind_error(addr, e))?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(error) if tries > 1 && error.kind() == std::io::ErrorKind::AddrInUse => {
                    tries -= 1;
                }
                Err(error) => return Err(bind_error(bound, error)),
            }
        };
        let addr = udp.local_addr().map_err(|e| bind_error(addr, e))?;
        let zone = format!("{}.", dns.domain());
        let mut server = Server::new(Handler {
            dns: Arc::new(dns),
            metrics,
            server: format!("dns://{addr}"),
            zone,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        tracing::info!(%addr, "cluster DNS serving on UDP and TCP");
        Ok(DnsServer { server, addr })
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    ///
    /// # Errors
    ///
    /// [`DnsError::Serve`] when a socket failed.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
        tokio::select! {
            () = shutdown => self.shutdown().await,
            done = self.server.block_until_done() => done.map_err(|e| DnsError::Serve(e.to_string())),
        }
    }

    /// Stops accepting requests and waits for the sockets' tasks to end.
    ///
    /// # Errors
    ///
    /// [`DnsError::Serve`] when a socket had failed.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Serve(e.to_string()))
    }
}

struct Handler {
    dns: Arc<ClusterDns>,
    metrics: DnsMetrics,
    /// `dns://<address>`, the metrics' `server` label.
    server: String,
    /// The cluster domain with its final dot, the metrics' `zone` label.
    zone: String,
}

impl Handler {
    /// Counts one request and its response in the metrics.
    fn record(&self, request: &Request, info: &ResponseInfo, took: Duration) {
        let question = request.request_info().ok().map(|info| {
            (
                Name::from(info.query.name()),
                info.query.query_type().to_string(),
            )
        });
        let (in_zone, qtype) = match &question {
            Some((name, qtype)) => (self.dns.in_zone(name), qtype.as_str()),
            None => (false, "other"),
        };
        let rcode = info.response_code;
        self.metrics.record(&Served {
            server: &self.server,
            zone: if in_zone { &self.zone } else { "." },
            tcp: request.protocol() != Protocol::Udp,
            ipv6: request.src().is_ipv6(),
            qtype,
            rcode,
            plugin: if in_zone && rcode != ResponseCode::ServFail {
                "kubernetes"
            } else {
                ""
            },
            took,
        });
    }

    fn failed(metadata: &Metadata) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(metadata);
        metadata.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header {
            metadata,
            counts: HeaderCounts::default(),
        })
    }
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let mut edns = None;
        if let Some(asked) = request.edns.as_ref() {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours.set_version(0);
            edns = Some(ours);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let refuse = |code| {
            MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code)
        };
        let sent = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            response.send_response(refuse(ResponseCode::NotImp)).await
        } else {
            match request.request_info() {
                Err(_) => response.send_response(refuse(ResponseCode::FormErr)).await,
                Ok(info) if info.query.query_class() != DNSClass::IN => {
                    response.send_response(refuse(ResponseCode::Refused)).await
                }
                Ok(info) => {
                    let name = Name::from(info.query.name());
                    let answer = self.dns.resolve(&name, info.query.query_type());
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.authoritative = answer.authoritative;
                    metadata.response_code = answer.code;
                    let message = builder.build(
                        metadata,
                        answer.answers.iter(),
                        answer.authority.iter(),
                        std::iter::empty(),
                        answer.additionals.iter(),
                    );
                    response.send_response(message).await
                }
            }
        };
        let info = sent.unwrap_or_else(|error| {
            tracing::warn!(%error, "sending a DNS response failed");
            Handler::failed(&request.metadata)
        });
        self.record(request, &info, started.elapsed());
        info
    }
}
