//! Resource amounts as the scheduler counts them, and Kubernetes quantities.

use std::collections::BTreeMap;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::quantity::parse_quantity;

/// CPU a container without a CPU request counts as when scoring (kube-scheduler's
/// `DefaultMilliCPURequest`, 0.1 core).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources a node offers and pods request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pods (allocatable only; a pod counts one).
    pub allowed_pods: i64,
    /// Other resources (extended resources, hugepages), in units (`value()`).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (`cpu`, `memory`, `ephemeral-storage`, `pods`, others).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            r.add_named(name, q);
        }
        r
    }

    fn add_named(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu += parse_milli(&q.0).unwrap_or(0),
            "memory" => self.memory += parse_value(&q.0).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage += parse_value(&q.0).unwrap_or(0),
            "pods" => self.allowed_pods += parse_value(&q.0).unwrap_or(0),
            other => {
                *self.scalar.entry(other.to_owned()).or_default() += parse_value(&q.0).unwrap_or(0)
            }
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pods += other.allowed_pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pods -= other.allowed_pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// A pod's effective requests, as kube-scheduler computes them: the sum of its
    /// containers' requests, at least each init container's, plus the pod overhead.
    /// With `non_zero`, containers without a CPU or memory request count the defaults
    /// ([`DEFAULT_MILLI_CPU_REQUEST`], [`DEFAULT_MEMORY_REQUEST`]), as scoring does.
    pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
        let mut sum = Resources::default();
        let Some(spec) = pod.spec.as_ref() else {
            return sum;
        };
        let requests_of = |c: &capstan_api::k8s_openapi::api::core::v1::Container| {
            let mut r = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(Resources::from_list)
                .unwrap_or_default();
            if non_zero {
                let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
                if !req.is_some_and(|m| m.contains_key("cpu")) {
                    r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
                }
                if !req.is_some_and(|m| m.contains_key("memory")) {
                    r.memory = DEFAULT_MEMORY_REQUEST;
                }
            }
            r
        };
        for c in &spec.containers {
            sum.add(&requests_of(c));
        }
        for c in spec.init_containers.iter().flatten() {
            sum.max_with(&requests_of(c));
        }
        if let Some(overhead) = &spec.overhead {
            sum.add(&Resources::from_list(overhead));
        }
        sum
    }
}

/// Parses a Kubernetes quantity into thousandths, rounding up (`"100m"` → 100, `"1"` → 1000);
/// `None` when it does not follow Kubernetes' grammar (the registry refuses such objects).
pub fn parse_milli(s: &str) -> Option<i64> {
    parse_quantity(s).ok().map(|q| q.milli_value())
}

/// Parses a Kubernetes quantity into units, rounding up (`"1Ki"` → 1024, `"1.5k"` → 1500);
/// `None` when it does not follow Kubernetes' grammar.
pub fn parse_value(s: &str) -> Option<i64> {
    parse_quantity(s).ok().map(|q| q.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly_and_round_up() {
        let cases: &[(&str, Option<i64>, Option<i64>)] = &[
            ("100m", Some(100), Some(1)),
            ("1", Some(1000), Some(1)),
            ("2.5", Some(2500), Some(3)),
            ("1Ki", Some(1024 * 1000), Some(1024)),
            ("1Gi", Some(1_073_741_824_000), Some(1_073_741_824)),
            ("1.5k", Some(1_500_000), Some(1500)),
            ("1e3", Some(1_000_000), Some(1000)),
            ("0.0001", Some(1), Some(1)),
            ("500M", Some(500_000_000_000), Some(500_000_000)),
            ("1x", None, None),
            ("", None, None),
            ("1GB", None, None),
            ("--1", None, None),
        ];
        for (s, milli, value) in cases {
            assert_eq!(parse_milli(s), *milli, "milli {s}");
            assert_eq!(parse_value(s), *value, "value {s}");
        }
    }
}
