//! Containers' requests and limits as the node applies them: the Pod's QoS class
//! (`status.qosClass`), the cgroup settings and OOM score adjustment of each container
//! ([`container_resources`], handed to the runtime in
//! [`ContainerConfig::resources`](field@capstan_runtime::ContainerConfig::resources)), and a
//! Pod's effective requests ([`pod_requests`], what admission counts).
//!
//! The rules are Kubernetes': `pkg/apis/core/v1/helper/qos` for the class,
//! `pkg/kubelet/cm/helpers_linux.go` for shares and quota, `pkg/kubelet/qos/policy.go` for
//! the OOM score adjustment, and the scheduler's `PodRequests` for the requests. A request
//! that is absent where a limit is set counts as the limit, as Kubernetes' API defaulting
//! would have stored it. Quantities that do not parse count as absent (the API server
//! refuses such objects).

use std::collections::BTreeMap;

use capstan_api::k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::quantity::parse_quantity;
use capstan_runtime::LinuxContainerResources;

/// The CFS period the kubelet gives every container, in microseconds (`QuotaPeriod`).
pub const CPU_PERIOD_US: i64 = 100_000;
/// The smallest CFS quota, in microseconds (`MinQuotaPeriod`).
pub const MIN_CPU_QUOTA_US: i64 = 1_000;
/// The smallest CPU shares (`MinShares`): what a container without a CPU request gets.
pub const MIN_CPU_SHARES: i64 = 2;
/// The largest CPU shares (`MaxShares`).
pub const MAX_CPU_SHARES: i64 = 262_144;
/// Shares per CPU (`SharesPerCPU`).
const SHARES_PER_CPU: i64 = 1_024;
/// The OOM score adjustment of Guaranteed containers (and node-critical Pods).
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// The OOM score adjustment of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1_000;
/// The priority from which a Pod is critical (`SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A Pod's quality-of-service class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container sets CPU and memory limits equal to its requests.
    Guaranteed,
    /// Something is requested or limited, but not as Guaranteed needs.
    Burstable,
    /// No container requests or limits CPU or memory.
    BestEffort,
}

impl QosClass {
    /// The class as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A quantity in thousandths (CPU in millicores, memory in thousandths of a byte), wide
/// enough that sums never overflow; `None` when absent or unparsable.
fn milli(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<i128> {
    let quantity = list?.get(name)?;
    parse_quantity(&quantity.0)
        .ok()
        .map(|q| i128::from(q.milli_value()))
}

fn requests(container: &Container) -> Option<&BTreeMap<String, Quantity>> {
    container.resources.as_ref()?.requests.as_ref()
}

fn limits(container: &Container) -> Option<&BTreeMap<String, Quantity>> {
    container.resources.as_ref()?.limits.as_ref()
}

/// A container's request for `name` in thousandths: the request, else the limit (API
/// defaulting), else `None`.
fn effective_request(container: &Container, name: &str) -> Option<i128> {
    milli(requests(container), name).or_else(|| milli(limits(container), name))
}

/// The Pod's QoS class, as Kubernetes' `ComputePodQOS`: over the app and init containers,
/// CPU and memory only, positive amounts only. BestEffort when nothing is requested or
/// limited; Guaranteed when every container limits both and the summed requests equal the
/// summed limits; Burstable otherwise.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let mut requested: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limited: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let mut limits_found = 0;
        for name in ["cpu", "memory"] {
            if let Some(amount) = effective_request(container, name).filter(|a| *a > 0) {
                *requested.entry(name).or_default() += amount;
            }
            if let Some(amount) = milli(limits(container), name).filter(|a| *a > 0) {
                *limited.entry(name).or_default() += amount;
                limits_found += 1;
            }
        }
        if limits_found < 2 {
            guaranteed = false;
        }
    }
    if requested.is_empty() && limited.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requested.len() == limited.len()
        && requested
            .iter()
            .all(|(name, amount)| limited.get(name) == Some(amount))
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// CPU shares for `milli_cpu` thousandths of a core (`MilliCPUToShares`): 1024 per core,
/// at least [`MIN_CPU_SHARES`] (also for no request), at most [`MAX_CPU_SHARES`].
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu <= 0 {
        return MIN_CPU_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / 1_000).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
}

/// The CFS quota for a limit of `milli_cpu` thousandths of a core over `period`
/// microseconds (`MilliCPUToQuota`): 0 (no quota) without a limit, else at least
/// [`MIN_CPU_QUOTA_US`].
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period) / 1_000).max(MIN_CPU_QUOTA_US)
}

/// Whether the Pod is node-critical (`IsNodeCriticalPod`): critical (a static or mirror
/// Pod, or priority at least `SystemCriticalPriority`) and of priority class
/// `system-node-critical`.
fn is_node_critical(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let annotations = pod.metadata.annotations.as_ref();
    let source = annotations.and_then(|a| a.get("kubernetes.io/config.source"));
    let static_pod = source.is_some_and(|s| s != "api");
    let mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let by_priority = spec
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    (static_pod || mirror || by_priority)
        && spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
}

/// The Burstable adjustment for a memory request of `request` bytes: `1000 - 1000 ×
/// request / capacity`, kept above Guaranteed's (at least 3) and below BestEffort's (999
/// at most).
fn burstable_oom_score_adj(request: i64, memory_capacity: i64) -> i64 {
    let capacity = i128::from(memory_capacity.max(1));
    let adj = 1_000 - (1_000 * i128::from(request.max(0))) / capacity;
    let adj = i64::try_from(adj).unwrap_or(i64::MIN);
    adj.clamp(
        1_000 + GUARANTEED_OOM_SCORE_ADJ,
        BEST_EFFORT_OOM_SCORE_ADJ - 1,
    )
}

fn memory_request_bytes(container: &Container) -> i64 {
    let milli = effective_request(container, "memory").unwrap_or(0);
    i64::try_from(milli.div_euclid(1_000) + i128::from(milli.rem_euclid(1_000) != 0))
        .unwrap_or(i64::MAX)
}

/// The OOM score adjustment of `container`'s processes (`GetContainerOOMScoreAdjust`):
/// [`GUARANTEED_OOM_SCORE_ADJ`] for node-critical and Guaranteed Pods,
/// [`BEST_EFFORT_OOM_SCORE_ADJ`] for BestEffort ones, and for Burstable ones
/// `1000 - 1000 × memory request / memory_capacity` within 3..=999 (a sidecar, a
/// restartable init container, takes the lowest of that and the app containers'). Where
/// `memory_capacity` is the node's memory in bytes.
pub fn oom_score_adjust(pod: &Pod, container: &Container, memory_capacity: i64) -> i64 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    match qos_class(&spec) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let mut adj = burstable_oom_score_adj(memory_request_bytes(container), memory_capacity);
    let sidecar = container.restart_policy.as_deref() == Some("Always")
        && spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == container.name);
    if sidecar {
        for app in &spec.containers {
            adj = adj.min(burstable_oom_score_adj(
                memory_request_bytes(app),
                memory_capacity,
            ));
        }
    }
    adj
}

/// The runtime settings of `container` in `pod` (`generateLinuxContainerResources`): CPU
/// shares from the CPU request (the limit when no request is set), the CFS quota from the
/// CPU limit over a [`CPU_PERIOD_US`] period, the memory limit in bytes, and the OOM score
/// adjustment ([`oom_score_adjust`]; `memory_capacity` is the node's memory in bytes). No
/// pids limit: Kubernetes sets that per Pod, not per container.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> LinuxContainerResources {
    let as_i64 = |milli: i128| i64::try_from(milli).unwrap_or(i64::MAX);
    let cpu_request = milli(requests(container), "cpu");
    let cpu_limit = milli(limits(container), "cpu").unwrap_or(0);
    let shares = match cpu_request {
        None if cpu_limit != 0 => milli_cpu_to_shares(as_i64(cpu_limit)),
        request => milli_cpu_to_shares(as_i64(request.unwrap_or(0))),
    };
    let memory_limit = limits(container)
        .and_then(|l| l.get("memory"))
        .and_then(|q| parse_quantity(&q.0).ok())
        .map_or(0, |q| q.value().max(0));
    LinuxContainerResources::default()
        .cpu(
            shares,
            milli_cpu_to_quota(as_i64(cpu_limit), CPU_PERIOD_US),
            CPU_PERIOD_US,
        )
        .memory_limit(memory_limit)
        .oom_score_adj(oom_score_adjust(pod, container, memory_capacity))
}

/// Amounts of the resources a Pod requests or a node offers: CPU in millicores, memory and
/// ephemeral storage in bytes, and other resources in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAmounts {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Other resources (extended resources, hugepages) in units, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl ResourceAmounts {
    /// Reads a resource list (`cpu: 500m`, `memory: 1Gi`, ...); `pods` is left out.
    /// Unparsable quantities count as zero.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut amounts = ResourceAmounts::default();
        for (name, quantity) in list {
            let Ok(parsed) = parse_quantity(&quantity.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => amounts.milli_cpu = parsed.milli_value(),
                "memory" => amounts.memory = parsed.value(),
                "ephemeral-storage" => amounts.ephemeral_storage = parsed.value(),
                "pods" => {}
                other => {
                    amounts.scalar.insert(other.to_string(), parsed.value());
                }
            }
        }
        amounts
    }

    /// Whether nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }

    /// Adds `other` to `self` (saturating).
    pub fn add(&mut self, other: &ResourceAmounts) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let slot = self.scalar.entry(name.clone()).or_default();
            *slot = slot.saturating_add(*amount);
        }
    }

    fn max_with(&mut self, other: &ResourceAmounts) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let slot = self.scalar.entry(name.clone()).or_default();
            *slot = (*slot).max(*amount);
        }
    }
}

/// A container's requests, a missing one defaulting to its limit.
fn container_requests(container: &Container) -> ResourceAmounts {
    let mut list = limits(container).cloned().unwrap_or_default();
    list.extend(requests(container).cloned().unwrap_or_default());
    ResourceAmounts::from_list(&list)
}

/// The Pod's effective requests, as Kubernetes' `PodRequests` computes them for fitting:
/// the app containers' sum plus the sidecars' (restartable init containers), at least what
/// each other init container needs beside the sidecars started before it, plus the Pod's
/// overhead. A container without a request counts zero.
pub fn pod_requests(spec: &PodSpec) -> ResourceAmounts {
    let mut total = ResourceAmounts::default();
    for container in &spec.containers {
        total.add(&container_requests(container));
    }
    let mut sidecars = ResourceAmounts::default();
    let mut init_peak = ResourceAmounts::default();
    for container in spec.init_containers.iter().flatten() {
        let requests = container_requests(container);
        if container.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&requests);
            init_peak.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&requests);
            init_peak.max_with(&during);
        }
    }
    total.add(&sidecars);
    total.max_with(&init_peak);
    if let Some(overhead) = &spec.overhead {
        total.add(&ResourceAmounts::from_list(overhead));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn containers(resources: &[serde_json::Value]) -> Pod {
        let containers: Vec<_> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"name": format!("c{i}"), "image": "i", "resources": r}))
            .collect();
        pod(json!({"containers": containers}))
    }

    fn qos(resources: &[serde_json::Value]) -> QosClass {
        qos_class(containers(resources).spec.as_ref().unwrap())
    }

    #[test]
    fn the_qos_class_follows_kubernetes_rules() {
        assert_eq!(qos(&[json!({})]), QosClass::BestEffort);
        // Zero amounts and other resources do not count.
        assert_eq!(
            qos(&[json!({"requests": {"cpu": "0", "ephemeral-storage": "1Gi"}})]),
            QosClass::BestEffort
        );
        let equal = json!({"requests": {"cpu": "500m", "memory": "64Mi"},
                           "limits": {"cpu": "0.5", "memory": "64Mi"}});
        assert_eq!(qos(std::slice::from_ref(&equal)), QosClass::Guaranteed);
        // Limits alone: requests default to them.
        let limits_only = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(
            qos(&[limits_only.clone(), equal.clone()]),
            QosClass::Guaranteed
        );
        // One container without limits, or a request below its limit: Burstable.
        assert_eq!(qos(&[equal.clone(), json!({})]), QosClass::Burstable);
        assert_eq!(
            qos(&[json!({"requests": {"cpu": "100m", "memory": "64Mi"},
                         "limits": {"cpu": "200m", "memory": "64Mi"}})]),
            QosClass::Burstable
        );
        assert_eq!(
            qos(&[json!({"limits": {"memory": "64Mi"}})]),
            QosClass::Burstable
        );
        assert_eq!(
            qos(&[json!({"requests": {"cpu": "100m"}})]),
            QosClass::Burstable
        );
        // Init containers count.
        let with_init = pod(json!({
            "containers": [{"name": "a", "image": "i", "resources": equal}],
            "initContainers": [{"name": "b", "image": "i"}],
        }));
        assert_eq!(
            qos_class(with_init.spec.as_ref().unwrap()),
            QosClass::Burstable
        );
        assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
    }

    #[test]
    fn cpu_becomes_shares_and_quota_as_the_kubelet_converts_it() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(250_000), 256_000);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
        assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1_000);
        assert_eq!(milli_cpu_to_quota(10, CPU_PERIOD_US), 1_000);
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
        assert_eq!(milli_cpu_to_quota(2500, CPU_PERIOD_US), 250_000);
    }

    #[test]
    fn the_oom_score_adjustment_follows_the_qos_class() {
        let capacity = 8 << 30;
        let guaranteed = containers(&[json!({"limits": {"cpu": "1", "memory": "1Gi"}})]);
        let c = &guaranteed.spec.as_ref().unwrap().containers[0];
        assert_eq!(oom_score_adjust(&guaranteed, c, capacity), -997);
        let best_effort = containers(&[json!({})]);
        let c = &best_effort.spec.as_ref().unwrap().containers[0];
        assert_eq!(oom_score_adjust(&best_effort, c, capacity), 1000);
        // Burstable: 1000 - 1000 × 1Gi / 8Gi = 875.
        let burstable = containers(&[
            json!({"requests": {"memory": "1Gi"}}),
            json!({"requests": {"cpu": "1"}}),
            json!({"requests": {"memory": "8Gi"}}),
        ]);
        let cs = &burstable.spec.as_ref().unwrap().containers;
        assert_eq!(oom_score_adjust(&burstable, &cs[0], capacity), 875);
        // No memory request: 1000, lowered to 999 below BestEffort.
        assert_eq!(oom_score_adjust(&burstable, &cs[1], capacity), 999);
        // All the memory: 0, raised to 3 above Guaranteed.
        assert_eq!(oom_score_adjust(&burstable, &cs[2], capacity), 3);
        // A node-critical pod is protected like a Guaranteed one.
        let mut critical = best_effort.clone();
        let spec = critical.spec.as_mut().unwrap();
        spec.priority = Some(2_000_001_000);
        spec.priority_class_name = Some("system-node-critical".into());
        let c = critical.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(oom_score_adjust(&critical, &c, capacity), -997);
    }

    #[test]
    fn container_resources_come_from_requests_and_limits() {
        let p = containers(&[
            json!({"requests": {"cpu": "250m", "memory": "64Mi"},
                   "limits": {"cpu": "500m", "memory": "128Mi"}}),
            json!({"limits": {"cpu": "2"}}),
            json!({}),
        ]);
        let cs = &p.spec.as_ref().unwrap().containers;
        let capacity = 8 << 30;
        let first = container_resources(&p, &cs[0], capacity);
        assert_eq!(
            first,
            LinuxContainerResources::default()
                .cpu(256, 50_000, 100_000)
                .memory_limit(128 << 20)
                .oom_score_adj(1000 - (1000 * (64 << 20)) / capacity)
        );
        // No CPU request but a limit: the shares come from the limit.
        let second = container_resources(&p, &cs[1], capacity);
        assert_eq!(
            (
                second.cpu_shares,
                second.cpu_quota,
                second.memory_limit_in_bytes
            ),
            (2048, 200_000, 0)
        );
        // Nothing set: the minimum shares, no quota, no memory limit.
        let third = container_resources(&p, &cs[2], capacity);
        assert_eq!(
            (third.cpu_shares, third.cpu_quota, third.cpu_period),
            (2, 0, 100_000)
        );
        assert_eq!(third.pids_limit, None);
    }

    #[test]
    fn pod_requests_sum_containers_and_take_the_init_peak_and_overhead() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "image": "i", "resources": {"limits": {"cpu": "250m"}}},
            ],
            "initContainers": [
                {"name": "setup", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
            ],
            "overhead": {"cpu": "100m"},
        }));
        let requests = pod_requests(p.spec.as_ref().unwrap());
        assert_eq!(requests.milli_cpu, 2100);
        assert_eq!(requests.memory, 1 << 30);
        // A sidecar runs beside the app containers and the init containers after it.
        let p = pod(json!({
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m"}}},
            ],
            "initContainers": [
                {"name": "proxy", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "setup", "image": "i", "resources": {"requests": {"cpu": "1"}}},
            ],
        }));
        let requests = pod_requests(p.spec.as_ref().unwrap());
        assert_eq!(requests.milli_cpu, 1200);
        assert!(pod_requests(&PodSpec::default()).is_zero());
    }
}
