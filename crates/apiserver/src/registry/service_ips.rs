//! Service cluster IPs: the service CIDR and the allocator behind `spec.clusterIP`.
//!
//! Like kube-apiserver 1.33 (whose `MultiCIDRServiceAllocator` is on by default), every
//! allocated address is an `IPAddress` object in the store, under
//! `/registry/ipaddresses/<ip>`, naming the Service that holds it. The registry writes it in
//! the **same transaction** as the Service (create-if-absent), and deletes it in the same
//! transaction as the Service, so:
//!
//! - no two Services ever hold the same address, even with several registries on one store;
//! - a rejected or failed create leaves no address behind, and a delete frees it;
//! - after a restart the allocator knows every address in use: it reads the `IPAddress`
//!   objects (and, for data written without them, the Services) on first use.
//!
//! The allocator keeps an in-memory set of the addresses in use to pick free ones quickly; the
//! store's compare-and-swap stays the source of truth.

use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr, sync::Arc};

use capstan_api::{Error, FieldError, ResourceInfo, Result};
use capstan_store::{Range, Store};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::storage::{store_error, Companions};

/// The default service CIDR, kube-apiserver's `--service-cluster-ip-range` default.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// An IPv4 range for Service cluster IPs, e.g. `10.96.0.0/12`.
///
/// The network and broadcast addresses are never handed out, and the first host address
/// (`10.96.0.1`) is kept for the `kubernetes` Service: it is given only to a Service that asks
/// for it by `spec.clusterIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl ServiceCidr {
    /// The range `address/prefix_len`, with host bits of `address` cleared.
    ///
    /// Errors: [`Error::BadRequest`] for a prefix outside 8..=30 (too large to track, or too
    /// small to hold a Service).
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        if !(8..=30).contains(&prefix_len) {
            return Err(Error::bad_request(format!(
                "service CIDR {address}/{prefix_len}: the prefix length must be between 8 and 30"
            )));
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(ServiceCidr {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix_len,
        })
    }

    /// The network address, e.g. `10.96.0.0`.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length, e.g. `12`.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// How many addresses the range spans, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }

    /// The address kept for the `kubernetes` Service: the first host address.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.at(1)
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.network));
        (offset < self.size()).then_some(offset)
    }

    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// Offsets that may be handed out: neither network, broadcast, nor the `kubernetes`
    /// Service's address.
    fn dynamic_offsets(&self) -> std::ops::Range<u32> {
        2..self.size() - 1
    }
}

impl Default for ServiceCidr {
    fn default() -> Self {
        DEFAULT_SERVICE_CIDR
            .parse()
            .expect("the default CIDR parses")
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for ServiceCidr {
    type Err = Error;

    /// Parses `a.b.c.d/len`. Errors: [`Error::BadRequest`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        let invalid =
            || Error::bad_request(format!("invalid service CIDR {s:?}: expected a.b.c.d/len"));
        let (address, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        ServiceCidr::new(address, prefix)
    }
}

/// The `IPAddress` kind (`networking.k8s.io/v1`) that records an allocation in the store.
fn ip_address_info() -> ResourceInfo {
    ResourceInfo::new("networking.k8s.io", "v1", "IPAddress", "ipaddresses", false)
}

/// Why a requested address cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// Not an IPv4 address.
    Malformed,
    /// Outside the service CIDR, or its network or broadcast address.
    OutOfRange,
    /// Another Service holds it.
    Taken,
    /// Every address is in use.
    Exhausted,
}

/// Hands out cluster IPs from a [`ServiceCidr`]; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct ServiceIpAllocator {
    cidr: ServiceCidr,
    state: Mutex<Option<InUse>>,
}

/// The addresses known to be in use, as offsets into the range, and where the next search
/// starts.
#[derive(Debug)]
struct InUse {
    offsets: BTreeSet<u32>,
    cursor: u32,
}

impl ServiceIpAllocator {
    pub(crate) fn new(cidr: ServiceCidr) -> Self {
        ServiceIpAllocator {
            cidr,
            state: Mutex::new(None),
        }
    }

    pub(crate) fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    /// Loads the addresses in use from the store, once. Idempotent and cheap afterwards.
    pub(crate) async fn ensure_loaded(
        &self,
        store: &Arc<dyn Store>,
        services: &ResourceInfo,
    ) -> Result<()> {
        if self.state.lock().is_some() {
            return Ok(());
        }
        let mut offsets = BTreeSet::new();
        let addresses = store
            .range(Range::prefix(ip_address_info().storage_prefix()))
            .await
            .map_err(|e| store_error(e, &ip_address_info(), ""))?;
        for kv in &addresses.kvs {
            if let Some((_, name)) = ip_address_info().parse_key(&String::from_utf8_lossy(&kv.key))
            {
                if let Some(offset) = name.parse().ok().and_then(|ip| self.cidr.offset(ip)) {
                    offsets.insert(offset);
                }
            }
        }
        let stored_services = store
            .range(Range::prefix(services.storage_prefix()))
            .await
            .map_err(|e| store_error(e, services, ""))?;
        for kv in &stored_services.kvs {
            let Ok(service) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if let Some(offset) = cluster_ip(&service).and_then(|ip| self.cidr.offset(ip)) {
                offsets.insert(offset);
            }
        }
        let mut state = self.state.lock();
        if state.is_none() {
            *state = Some(InUse {
                offsets,
                cursor: self.cidr.dynamic_offsets().start,
            });
        }
        Ok(())
    }

    /// Reserves the next free address, searching on from the last one handed out. The caller
    /// must [`release`](Self::release) it if the Service is not stored.
    pub(crate) fn reserve_next(&self) -> Result<Ipv4Addr, Unavailable> {
        let mut guard = self.state.lock();
        let state = guard.get_or_insert_with(|| InUse {
            offsets: BTreeSet::new(),
            cursor: self.cidr.dynamic_offsets().start,
        });
        let range = self.cidr.dynamic_offsets();
        let span = range.end - range.start;
        for step in 0..span {
            let candidate = range.start + (state.cursor - range.start + step) % span;
            if state.offsets.insert(candidate) {
                state.cursor = if candidate + 1 >= range.end {
                    range.start
                } else {
                    candidate + 1
                };
                return Ok(self.cidr.at(candidate));
            }
        }
        Err(Unavailable::Exhausted)
    }

    /// Reserves `requested` ("10.96.0.10"). The caller must [`release`](Self::release) it if
    /// the Service is not stored.
    pub(crate) fn reserve(&self, requested: &str) -> Result<Ipv4Addr, Unavailable> {
        let ip: Ipv4Addr = requested.parse().map_err(|_| Unavailable::Malformed)?;
        let offset = self.cidr.offset(ip).ok_or(Unavailable::OutOfRange)?;
        if offset == 0 || offset == self.cidr.size() - 1 {
            return Err(Unavailable::OutOfRange);
        }
        let mut guard = self.state.lock();
        let state = guard.get_or_insert_with(|| InUse {
            offsets: BTreeSet::new(),
            cursor: self.cidr.dynamic_offsets().start,
        });
        if state.offsets.insert(offset) {
            Ok(ip)
        } else {
            Err(Unavailable::Taken)
        }
    }

    /// Marks `ip` as free again (after a delete, or a reservation that was not stored).
    pub(crate) fn release(&self, ip: Ipv4Addr) {
        if let (Some(offset), Some(state)) = (self.cidr.offset(ip), self.state.lock().as_mut()) {
            state.offsets.remove(&offset);
        }
    }

    /// The storage key recording `ip`'s allocation.
    pub(crate) fn key(ip: Ipv4Addr) -> String {
        ip_address_info()
            .key(None, &ip.to_string())
            .expect("an IP address is a valid name")
    }

    /// The `IPAddress` object recording that the Service `namespace/name` holds `ip`.
    pub(crate) fn record(ip: Ipv4Addr, namespace: &str, name: &str) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip.to_string(),
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
                },
            },
            "spec": {
                "parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name},
            },
        })
    }
}

/// The allocated cluster IP of a Service object, if it has one (not `None`, not empty).
pub(crate) fn cluster_ip(service: &Value) -> Option<Ipv4Addr> {
    service
        .get("spec")?
        .get("clusterIP")?
        .as_str()?
        .parse()
        .ok()
}

/// What a write does to cluster IP allocations. Dropped without [`commit`](Self::commit), it
/// gives back the address it reserved, so no failure path can leak one.
#[derive(Debug)]
pub(crate) struct IpPlan<'a> {
    allocator: Option<&'a ServiceIpAllocator>,
    /// Reserved in memory for this write; recorded in the store with it.
    reserved: Option<Ipv4Addr>,
    /// Whether the client asked for `reserved` by address.
    explicit: bool,
    /// Given up by this write; its record is deleted with it.
    released: Option<Ipv4Addr>,
}

impl<'a> IpPlan<'a> {
    /// A plan that touches no address.
    pub(crate) fn none() -> Self {
        IpPlan {
            allocator: None,
            reserved: None,
            explicit: false,
            released: None,
        }
    }

    /// A plan recording `ip`, the next free address, reserved from `allocator` for this write.
    pub(crate) fn reserved(allocator: &'a ServiceIpAllocator, ip: Ipv4Addr) -> Self {
        IpPlan {
            allocator: Some(allocator),
            reserved: Some(ip),
            ..IpPlan::none()
        }
    }

    /// A plan recording `ip`, the address the client asked for, reserved for this write. It
    /// holds no allocator: the in-memory reservation is not handed back when the write fails.
    pub(crate) fn requested(ip: Ipv4Addr) -> Self {
        IpPlan {
            reserved: Some(ip),
            explicit: true,
            ..IpPlan::none()
        }
    }

    /// A plan giving `ip` (if any) back to `allocator` once the write is stored.
    pub(crate) fn released(allocator: &'a ServiceIpAllocator, ip: Option<Ipv4Addr>) -> Self {
        IpPlan {
            allocator: Some(allocator),
            released: ip,
            ..IpPlan::none()
        }
    }

    /// The write was stored: keep the reserved address, free the released one.
    pub(crate) fn commit(mut self) {
        self.reserved = None;
        if let (Some(allocator), Some(ip)) = (self.allocator, self.released) {
            allocator.release(ip);
        }
    }

    /// The store says someone else holds the reserved address: it stays marked as used here.
    /// When the client asked for that address, the error to return (another attempt cannot
    /// help); `None` when the next attempt may pick another.
    pub(crate) fn taken_elsewhere(mut self, info: &ResourceInfo, name: &str) -> Option<Error> {
        let explicit = self.explicit;
        let ip = self.reserved.take();
        explicit.then(|| ip_taken(info, name, ip))
    }

    /// The allocation records written and deleted in the same transaction as the object.
    pub(crate) fn companions(&self, namespace: Option<&str>, name: &str) -> Companions {
        let creates = self
            .reserved
            .map(|ip| {
                let record = ServiceIpAllocator::record(ip, namespace.unwrap_or_default(), name);
                let bytes = serde_json::to_vec(&record).expect("a record serializes");
                (ServiceIpAllocator::key(ip), bytes.into())
            })
            .into_iter()
            .collect();
        let deletes = self
            .released
            .map(ServiceIpAllocator::key)
            .into_iter()
            .collect();
        Companions { creates, deletes }
    }
}

impl Drop for IpPlan<'_> {
    fn drop(&mut self) {
        if let (Some(allocator), Some(ip)) = (self.allocator, self.reserved) {
            allocator.release(ip);
        }
    }
}

/// The error for a requested address someone else holds.
fn ip_taken(info: &ResourceInfo, name: &str, ip: Option<Ipv4Addr>) -> Error {
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    Error::Invalid {
        kind: info.qualified_kind(),
        name: name.to_string(),
        causes: vec![FieldError::invalid(
            "spec.clusterIP",
            ip.as_str(),
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_print() {
        let cidr: ServiceCidr = "10.96.0.7/12".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.96.0.0/12");
        assert_eq!(cidr.size(), 1 << 20);
        assert!(cidr.contains("10.111.255.255".parse().unwrap()));
        assert!(!cidr.contains("10.112.0.0".parse().unwrap()));
        assert_eq!(cidr.kubernetes_service_ip().to_string(), "10.96.0.1");
        assert_eq!(ServiceCidr::default(), cidr);
        for bad in ["10.96.0.0", "10.96.0.0/33", "10.96.0.0/31", "x/12"] {
            assert!(bad.parse::<ServiceCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dynamic_allocation_skips_reserved_and_taken_addresses() {
        let allocator = ServiceIpAllocator::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(
            allocator.reserve("10.0.0.3"),
            Ok("10.0.0.3".parse().unwrap())
        );
        let handed: Vec<String> = std::iter::from_fn(|| allocator.reserve_next().ok())
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(handed, ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(allocator.reserve_next(), Err(Unavailable::Exhausted));
        allocator.release("10.0.0.5".parse().unwrap());
        assert_eq!(allocator.reserve_next(), Ok("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn requests_outside_the_range_or_taken_are_refused() {
        let allocator = ServiceIpAllocator::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(allocator.reserve("nope"), Err(Unavailable::Malformed));
        assert_eq!(allocator.reserve("10.0.1.1"), Err(Unavailable::OutOfRange));
        assert_eq!(allocator.reserve("10.0.0.0"), Err(Unavailable::OutOfRange));
        assert_eq!(allocator.reserve("10.0.0.7"), Err(Unavailable::OutOfRange));
        assert!(
            allocator.reserve("10.0.0.1").is_ok(),
            "the kubernetes IP on request"
        );
        assert_eq!(allocator.reserve("10.0.0.1"), Err(Unavailable::Taken));
    }

    #[test]
    fn allocations_are_recorded_under_ipaddresses() {
        let ip = "10.96.0.10".parse().unwrap();
        assert_eq!(
            ServiceIpAllocator::key(ip),
            "/registry/ipaddresses/10.96.0.10"
        );
        let record = ServiceIpAllocator::record(ip, "default", "web");
        assert_eq!(record["spec"]["parentRef"]["name"], "web");
    }
}
