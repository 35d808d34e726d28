//! Cluster DNS: names of Services, answered from the API's Services and EndpointSlices.
//!
//! [`ClusterDns`] answers, for the cluster domain (`cluster.local` by default), as the
//! Kubernetes DNS specification describes:
//!
//! - `A`/`AAAA` for `<service>.<namespace>.svc.<domain>`: the Service's cluster IPs of that
//!   family; for a headless Service (`clusterIP: None`), the addresses of its ready
//!   endpoints (`conditions.ready` true or unset) in the EndpointSlices labelled
//!   `kubernetes.io/service-name=<service>`; for an `ExternalName` Service, a `CNAME` to
//!   the external name (not followed).
//! - `A`/`AAAA` for `<endpoint>.<service>.<namespace>.svc.<domain>` of a headless Service,
//!   where `<endpoint>` is the endpoint's `hostname`, else its address with dashes
//!   (`10-244-1-5`).
//! - `SRV` for `_<port>._<proto>.<service>.<namespace>.svc.<domain>` (a named port): the
//!   port and `<service>.<namespace>.svc.<domain>` as target, or one record per ready
//!   endpoint, targeting its endpoint name, for a headless Service; the targets' addresses
//!   go in the additional section.
//! - `NXDOMAIN` (with the zone's `SOA` in the authority section) for any other name in the
//!   cluster domain, and an empty `NOERROR` answer for a name that exists with no record of
//!   the asked type.
//! - `REFUSED` for every name outside the cluster domain: there is **no upstream
//!   forwarding**, so pods need another resolver for outside names.
//!
//! Answers are read from the informer caches at query time, so a change to a Service or
//! its endpoints is answered as soon as the informer has seen it. Records carry a TTL of
//! [`DEFAULT_TTL`] seconds. Pod records (`<ip>.<namespace>.pod.<domain>`) and reverse
//! lookups (`PTR`) are not served.
//!
//! [`hickory::DnsServer`] serves a [`ClusterDns`] over UDP and TCP with `hickory-server`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_net::dns::{hickory::DnsServer, ClusterDns, DEFAULT_DOMAIN};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! # async fn run(client: Arc<dyn capstan_api::Client>) -> Result<(), capstan_net::dns::DnsError> {
//! let factory = InformerFactory::new(client, ReflectorOptions::default());
//! let dns = ClusterDns::new(&factory, DEFAULT_DOMAIN)?;
//! dns.wait_for_sync().await;
//! let server = DnsServer::bind(dns, "10.96.0.10:53".parse().unwrap()).await?;
//! server.run_until(async { /* e.g. ctrl-c */ }).await?;
//! # Ok(()) }
//! ```

use capstan_api::compat::MaybeList;
use capstan_api::kube_core::ResourceExt;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use capstan_api::ext::ServiceExt;
use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use capstan_watch::{InformerFactory, ObjectKey, SharedInformer};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub mod hickory;
pub mod metrics;

/// The cluster domain Kubernetes uses by default.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The TTL of every record, in seconds (CoreDNS' `kubernetes` plugin default).
pub const DEFAULT_TTL: u32 = 5;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The EndpointSlice cache index of `<namespace>/<service>`.
const SLICES_BY_SERVICE: &str = "capstan.dev/dns-service";

/// Why the DNS server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be bound (address in use, not local, or not permitted).
    #[error("binding the DNS server on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's sockets failed while serving.
    #[error("serving DNS: {0}")]
    Serve(String),
}

/// The answer to one question: what goes in each section, and the response code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// `NoError`, `NXDomain` or `Refused`.
    pub code: ResponseCode,
    /// Whether the server is authoritative for the name (the cluster domain).
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the zone's SOA for negative answers).
    pub authority: Vec<Record>,
    /// The additional section (addresses of SRV targets).
    pub additionals: Vec<Record>,
}

impl Resolution {
    fn refused() -> Self {
        Resolution {
            code: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// Reads Services and their EndpointSlices; the informers in production, plain lists in
/// tests.
trait Catalog {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
}

struct Informers {
    services: Arc<SharedInformer<Service>>,
    slices: Arc<SharedInformer<EndpointSlice>>,
}

impl Catalog for Informers {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services
            .cache()
            .get(&ObjectKey::namespaced(namespace, name))
    }

    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .cache()
            .by_index(SLICES_BY_SERVICE, &format!("{namespace}/{service}"))
    }
}

/// The cluster domain's records, computed from the informer caches at each question; see
/// the [module docs](self). Cheap to share (`Arc`); every method is quick and never blocks.
pub struct ClusterDns {
    zone: Zone,
    informers: Informers,
}

impl std::fmt::Debug for ClusterDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDns")
            .field("domain", &self.zone.domain)
            .finish_non_exhaustive()
    }
}

impl ClusterDns {
    /// Answers for `domain` (e.g. [`DEFAULT_DOMAIN`]) from `factory`'s Service and
    /// EndpointSlice informers (started at once; see [`wait_for_sync`](Self::wait_for_sync)).
    ///
    /// # Errors
    ///
    /// [`DnsError::InvalidDomain`] when `domain` is not a DNS name.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(factory: &InformerFactory, domain: &str) -> Result<Self, DnsError> {
        let zone = Zone::new(domain, DEFAULT_TTL)?;
        let services = factory.informer::<Service>();
        let slices = factory.informer::<EndpointSlice>();
        slices
            .cache()
            .add_index(SLICES_BY_SERVICE, |slice: &EndpointSlice| {
                let namespace = slice.namespace().unwrap_or_default();
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
                    .map(|service| vec![format!("{namespace}/{service}")])
                    .unwrap_or_default()
            });
        Ok(ClusterDns {
            zone,
            informers: Informers { services, slices },
        })
    }

    /// Sets the TTL of every record (default [`DEFAULT_TTL`]).
    #[must_use]
    pub fn with_ttl(mut self, ttl: u32) -> Self {
        self.zone.ttl = ttl;
        self
    }

    /// The cluster domain, lowercase, without the final dot.
    pub fn domain(&self) -> &str {
        &self.zone.domain
    }

    /// The readiness check (`informer-sync`): passes once the Service and EndpointSlice
    /// caches have listed.
    pub fn readiness(&self) -> metrics::DnsReadiness {
        metrics::DnsReadiness {
            services: self.informers.services.cache().clone(),
            slices: self.informers.slices.cache().clone(),
        }
    }

    /// Waits until the Service and EndpointSlice caches have listed once; until then names
    /// are answered from what is cached (likely NXDOMAIN).
    pub async fn wait_for_sync(&self) {
        self.informers.services.wait_for_sync().await;
        self.informers.slices.wait_for_sync().await;
    }

    /// Answers the question `name`, `qtype` (class IN).
    pub fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution {
        self.zone.resolve(&self.informers, name, qtype)
    }

    /// Whether `name` is in the cluster domain (answered, not refused).
    pub(crate) fn in_zone(&self, name: &Name) -> bool {
        self.zone.relative(name).is_some()
    }
}

/// The cluster domain's fixed parts.
struct Zone {
    domain: String,
    origin: Name,
    soa: Record,
    ttl: u32,
}

/// What a name in the cluster domain points at.
enum Target<'a> {
    /// The apex, `svc.<domain>` or `<namespace>.svc.<domain>`: exist, hold no records.
    Empty,
    Service {
        namespace: &'a str,
        service: &'a str,
    },
    Endpoint {
        endpoint: &'a str,
        namespace: &'a str,
        service: &'a str,
    },
    Srv {
        port: &'a str,
        protocol: &'a str,
        namespace: &'a str,
        service: &'a str,
    },
}

impl Zone {
    fn new(domain: &str, ttl: u32) -> Result<Self, DnsError> {
        let bad = |reason: String| DnsError::InvalidDomain {
            domain: domain.to_owned(),
            reason,
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.split('.').any(str::is_empty) {
            return Err(bad("empty label".to_owned()));
        }
        let origin = Name::from_ascii(format!("{domain}.")).map_err(|e| bad(e.to_string()))?;
        let soa_name = |label: &str| Name::from_ascii(format!("{label}.{domain}."));
        let soa = SOA::new(
            soa_name("ns.dns").map_err(|e| bad(e.to_string()))?,
            soa_name("hostmaster").map_err(|e| bad(e.to_string()))?,
            1,
            7200,
            1800,
            86400,
            ttl,
        );
        Ok(Zone {
            soa: Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            domain,
            origin,
            ttl,
        })
    }

    /// The name relative to the zone (`web.default.svc`), `Some("")` for the apex, `None`
    /// outside.
    fn relative(&self, name: &Name) -> Option<String> {
        let text = name.to_lowercase().to_ascii();
        let text = text.trim_end_matches('.');
        if text == self.domain {
            return Some(String::new());
        }
        text.strip_suffix(&self.domain)
            .and_then(|rest| rest.strip_suffix('.'))
            .map(str::to_owned)
    }

    fn resolve(&self, catalog: &impl Catalog, name: &Name, qtype: RecordType) -> Resolution {
        let Some(relative) = self.relative(name) else {
            return Resolution::refused();
        };
        let labels: Vec<&str> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('.').collect()
        };
        let target = match labels.as_slice() {
            [] | ["svc"] | [_, "svc"] => Some(Target::Empty),
            [service, namespace, "svc"] => Some(Target::Service { namespace, service }),
            [port, protocol, service, namespace, "svc"]
                if port.starts_with('_') && protocol.starts_with('_') =>
            {
                Some(Target::Srv {
                    port: &port[1..],
                    protocol: &protocol[1..],
                    namespace,
                    service,
                })
            }
            [endpoint, service, namespace, "svc"] => Some(Target::Endpoint {
                endpoint,
                namespace,
                service,
            }),
            _ => None,
        };
        // Answers are owned by the name as asked (case kept, for resolvers that randomise it).
        let owner = name.clone();
        let found = target.and_then(|target| self.records(catalog, &owner, target, qtype));
        let (code, answers, additionals) = match found {
            None => (ResponseCode::NXDomain, Vec::new(), Vec::new()),
            Some((answers, additionals)) => (ResponseCode::NoError, answers, additionals),
        };
        let mut authority = Vec::new();
        if answers.is_empty() && !(labels.is_empty() && qtype == RecordType::SOA) {
            authority.push(self.soa.clone());
        }
        let answers = if labels.is_empty() && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            vec![self.soa.clone()]
        } else {
            answers
        };
        Resolution {
            code,
            authoritative: true,
            answers,
            authority,
            additionals,
        }
    }

    /// The records of `target` of type `qtype` (answers, additionals); `None` when the name
    /// does not exist.
    fn records(
        &self,
        catalog: &impl Catalog,
        owner: &Name,
        target: Target<'_>,
        qtype: RecordType,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        match target {
            Target::Empty => Some((Vec::new(), Vec::new())),
            Target::Service { namespace, service } => {
                let svc = catalog.service(namespace, service)?;
                if let Some(external) = external_name(&svc) {
                    let cname =
                        Name::from_ascii(format!("{}.", external.trim_end_matches('.'))).ok()?;
                    let record =
                        Record::from_rdata(owner.clone(), self.ttl, RData::CNAME(CNAME(cname)));
                    return Some((vec![record], Vec::new()));
                }
                let ips = if svc.is_headless() {
                    ready_endpoints(&catalog.slices(namespace, service))
                        .into_iter()
                        .map(|e| e.address)
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                } else {
                    cluster_ips(&svc)
                };
                Some((self.address_records(owner, &ips, qtype), Vec::new()))
            }
            Target::Endpoint {
                endpoint,
                namespace,
                service,
            } => {
                let svc = catalog.service(namespace, service)?;
                if !svc.is_headless() {
                    return None;
                }
                let ips: Vec<IpAddr> = ready_endpoints(&catalog.slices(namespace, service))
                    .into_iter()
                    .filter(|e| e.name == endpoint)
                    .map(|e| e.address)
                    .collect();
                if ips.is_empty() {
                    return None;
                }
                Some((self.address_records(owner, &ips, qtype), Vec::new()))
            }
            Target::Srv {
                port,
                protocol,
                namespace,
                service,
            } => {
                let svc = catalog.service(namespace, service)?;
                let service_name = self.name(&[service, namespace, "svc"])?;
                // (target, port, addresses)
                let mut targets: Vec<(Name, u16, Vec<IpAddr>)> = Vec::new();
                if svc.is_headless() {
                    for endpoint in ready_endpoints(&catalog.slices(namespace, service)) {
                        let Some(number) = endpoint
                            .ports
                            .iter()
                            .find(|(n, p, _)| n == port && p == protocol)
                            .map(|(_, _, number)| *number)
                        else {
                            continue;
                        };
                        let name = self.name(&[&endpoint.name, service, namespace, "svc"])?;
                        match targets
                            .iter_mut()
                            .find(|(t, n, _)| *t == name && *n == number)
                        {
                            Some((_, _, ips)) => ips.push(endpoint.address),
                            None => targets.push((name, number, vec![endpoint.address])),
                        }
                    }
                } else if external_name(&svc).is_none() {
                    let number = svc
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.ports.as_ref())
                        .into_iter()
                        .flatten()
                        .find(|p| {
                            p.name
                                .as_deref()
                                .unwrap_or_default()
                                .eq_ignore_ascii_case(port)
                                && p.protocol
                                    .as_deref()
                                    .unwrap_or("TCP")
                                    .eq_ignore_ascii_case(protocol)
                        })
                        .and_then(|p| u16::try_from(p.port).ok());
                    if let Some(number) = number {
                        targets.push((service_name, number, cluster_ips(&svc)));
                    }
                }
                if targets.is_empty() {
                    return None;
                }
                if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    return Some((Vec::new(), Vec::new()));
                }
                let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
                let mut answers = Vec::new();
                let mut additionals = Vec::new();
                for (target, number, ips) in targets {
                    let srv = SRV::new(0, weight, number, target.clone());
                    answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::SRV(srv)));
                    additionals.extend(self.address_records(&target, &ips, RecordType::ANY));
                }
                Some((answers, additionals))
            }
        }
    }

    /// `labels` under the zone, as a fully qualified name.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        Name::from_ascii(labels.join("."))
            .ok()?
            .append_domain(&self.origin)
            .ok()
    }

    /// A records (for `A`), AAAA records (for `AAAA`) or both (for `ANY`) of `ips`.
    fn address_records(&self, owner: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
        ips.iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), self.ttl, rdata))
            .collect()
    }
}

fn external_name(service: &Service) -> Option<&str> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    spec.external_name
        .as_deref()
        .filter(|name| !name.is_empty())
}

/// The Service's cluster IPs (`clusterIPs`, else `clusterIP`), skipping what does not parse.
fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let listed = spec.cluster_ips.clone().unwrap_or_default();
    let all = if listed.is_empty() {
        spec.cluster_ip.clone().into_iter().collect()
    } else {
        listed
    };
    all.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// One ready endpoint address with its DNS name and the slice's ports
/// (name, lowercase protocol, number).
struct ReadyEndpoint {
    name: String,
    address: IpAddr,
    ports: Vec<(String, String, u16)>,
}

fn ready_endpoints(slices: &[Arc<EndpointSlice>]) -> Vec<ReadyEndpoint> {
    let mut all = Vec::new();
    for slice in slices {
        let ports: Vec<(String, String, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone()?.to_ascii_lowercase(),
                    p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for endpoint in slice.endpoints.items() {
            // An unset `ready` means ready (the API's documented meaning).
            if endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .is_some_and(|ready| !ready)
            {
                continue;
            }
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let name = endpoint
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| ip.to_string().replace(['.', ':'], "-"))
                    .to_ascii_lowercase();
                all.push(ReadyEndpoint {
                    name,
                    address: ip,
                    ports: ports.clone(),
                });
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use capstan_api::k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort,
    };
    use capstan_api::kube_core::ObjectMeta;

    #[derive(Default)]
    struct Lists {
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
    }

    impl Catalog for Lists {
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }

        fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(SERVICE_NAME_LABEL))
                            == Some(&service.to_owned())
                })
                .cloned()
                .collect()
        }
    }

    fn service(name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: Some((*n).into()),
                            port: *p,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    fn slice(
        service: &str,
        endpoints: &[(&str, Option<bool>, Option<&str>)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-abc")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: capstan_api::compat::value(
                endpoints
                    .iter()
                    .map(|(ip, ready, hostname)| Endpoint {
                        addresses: vec![(*ip).into()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..EndpointConditions::default()
                        }),
                        hostname: hostname.map(str::to_owned),
                        ..Endpoint::default()
                    })
                    .collect::<Vec<_>>(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        })
    }

    fn zone() -> Zone {
        Zone::new("Cluster.Local.", 5).unwrap()
    }

    fn ask(catalog: &Lists, name: &str, qtype: RecordType) -> Resolution {
        zone().resolve(catalog, &Name::from_ascii(name).unwrap(), qtype)
    }

    fn rdata(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    fn catalog() -> Lists {
        Lists {
            services: vec![
                service("web", "10.96.0.20", &[("http", 80)]),
                service("db", "None", &[("http", 8080)]),
            ],
            slices: vec![slice(
                "db",
                &[
                    ("10.244.1.5", Some(true), Some("db-0")),
                    ("10.244.2.6", None, None),
                    ("10.244.3.7", Some(false), None),
                ],
            )],
        }
    }

    #[test]
    fn a_cluster_ip_service_answers_its_address_in_any_case() {
        let answer = ask(&catalog(), "WEB.default.svc.cluster.local.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.authoritative);
        assert_eq!(rdata(&answer.answers), ["10.96.0.20"]);
        assert_eq!(answer.answers[0].ttl, 5);
        assert_eq!(
            answer.answers[0].name.to_ascii(),
            "WEB.default.svc.cluster.local."
        );
        // No AAAA: an empty answer with the SOA, not NXDOMAIN.
        let answer = ask(
            &catalog(),
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
        );
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.answers.is_empty());
        assert_eq!(answer.authority[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints_and_their_names() {
        let answer = ask(&catalog(), "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&answer.answers), ["10.244.1.5", "10.244.2.6"]);
        let named = ask(
            &catalog(),
            "db-0.db.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&named.answers), ["10.244.1.5"]);
        let dashed = ask(
            &catalog(),
            "10-244-2-6.db.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&dashed.answers), ["10.244.2.6"]);
        let not_ready = ask(
            &catalog(),
            "10-244-3-7.db.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(not_ready.code, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_records_name_the_port_and_the_targets() {
        let answer = ask(
            &catalog(),
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            rdata(&answer.answers),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(rdata(&answer.additionals), ["10.96.0.20"]);
        let headless = ask(
            &catalog(),
            "_http._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            rdata(&headless.answers),
            [
                "0 50 8080 db-0.db.default.svc.cluster.local.",
                "0 50 8080 10-244-2-6.db.default.svc.cluster.local."
            ]
        );
        let wrong_proto = ask(
            &catalog(),
            "_http._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(wrong_proto.code, ResponseCode::NXDomain);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_outside_names_are_refused() {
        for name in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
            "web.default.pod.cluster.local.",
        ] {
            let answer = ask(&catalog(), name, RecordType::A);
            assert_eq!(answer.code, ResponseCode::NXDomain, "{name}");
            assert_eq!(answer.authority.len(), 1, "{name}");
        }
        for name in [
            "example.com.",
            "cluster.local.example.com.",
            "xcluster.local.",
        ] {
            let answer = ask(&catalog(), name, RecordType::A);
            assert_eq!(answer.code, ResponseCode::Refused, "{name}");
            assert!(!answer.authoritative);
        }
        let apex = ask(&catalog(), "cluster.local.", RecordType::SOA);
        assert_eq!(apex.code, ResponseCode::NoError);
        assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn an_external_name_service_is_a_cname() {
        let mut external = (*service("ext", "", &[])).clone();
        let spec = external.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("db.example.com".into());
        spec.cluster_ip = None;
        let catalog = Lists {
            services: vec![Arc::new(external)],
            ..Lists::default()
        };
        let answer = ask(&catalog, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&answer.answers), ["db.example.com."]);
    }

    #[test]
    fn a_bad_domain_is_refused() {
        assert!(matches!(
            Zone::new("cluster..local", 5),
            Err(DnsError::InvalidDomain { .. })
        ));
        assert!(Zone::new("", 5).is_err());
    }
}
