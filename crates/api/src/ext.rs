//! Kubernetes' helper functions as extension traits on the k8s-openapi types.
//!
//! Kubernetes' Go code answers the same small questions in many places: is this Pod ready,
//! does this toleration tolerate that taint, does this Node match a node selector. Capstan
//! answers each one here, once, with Kubernetes' rules; every other crate imports the trait
//! and calls the method. Each method names the Kubernetes function it mirrors.
//!
//! | Trait | Methods |
//! |---|---|
//! | [`PodExt`] | [`phase`](PodExt::phase), [`condition`](PodExt::condition), [`is_ready`](PodExt::is_ready), [`is_terminal`](PodExt::is_terminal), [`is_terminating`](PodExt::is_terminating), [`is_active`](PodExt::is_active), [`node_name`](PodExt::node_name), [`matches_node_selector_and_affinity`](PodExt::matches_node_selector_and_affinity) |
//! | [`PodSpecExt`] | [`matches_node_selector_and_affinity`](PodSpecExt::matches_node_selector_and_affinity) |
//! | [`NodeExt`] | [`condition`](NodeExt::condition), [`is_ready`](NodeExt::is_ready), [`taints`](NodeExt::taints) |
//! | [`TolerationExt`] | [`tolerates`](TolerationExt::tolerates) |
//! | [`TaintExt`] | [`is_tolerated_by`](TaintExt::is_tolerated_by) |
//! | [`NodeSelectorExt`], [`NodeSelectorTermExt`] | `matches` |
//! | [`ServiceExt`] | [`is_headless`](ServiceExt::is_headless), [`is_cluster_ip_set`](ServiceExt::is_cluster_ip_set) |
//! | [`MetaExt`] (any kind) | [`name_str`](MetaExt::name_str), [`namespace_str`](MetaExt::namespace_str) |
//!
//! ```
//! use capstan_api::ext::{NodeExt, PodExt, TaintExt};
//! use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
//!
//! let pod: Pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web"},
//!     "spec": {
//!         "containers": [],
//!         "nodeName": "n1",
//!         "tolerations": [{"key": "dedicated", "operator": "Exists"}],
//!     },
//!     "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
//! }))?;
//! assert!(pod.is_ready() && pod.is_active());
//! assert_eq!(pod.node_name(), Some("n1"));
//!
//! let node: Node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "n1"},
//!     "spec": {"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]},
//! }))?;
//! let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
//! assert!(node.taints().iter().all(|taint| taint.is_tolerated_by(tolerations)));
//! # Ok::<(), serde_json::Error>(())
//! ```

use kube_core::Resource;

use k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodCondition, PodSpec, Service, Taint, Toleration,
};

/// An object's name and namespace, borrowed: kube-core's [`ResourceExt`](kube_core::ResourceExt)
/// (`name_any`, `namespace`) without the allocation, for the hot paths of controllers and the
/// scheduler. Implemented for every kind (`kube_core::Resource`).
pub trait MetaExt {
    /// `metadata.name`, or `""` when the object has none (not yet created with
    /// `generateName`).
    fn name_str(&self) -> &str;
    /// `metadata.namespace`, or `""` for a cluster-scoped object (or one not yet defaulted).
    fn namespace_str(&self) -> &str;
}

impl<K: Resource> MetaExt for K {
    fn name_str(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    fn namespace_str(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or_default()
    }
}

/// Questions about a [`Pod`], answered as Kubernetes' `pkg/api/v1/pod` and controller helpers
/// answer them.
pub trait PodExt {
    /// `status.phase`, or `""` when the Pod has no status or no phase (the zero value Go code
    /// compares `pod.Status.Phase` against).
    fn phase(&self) -> &str;

    /// The first condition of `type_` in `status.conditions` (Kubernetes'
    /// `podutil.GetPodCondition`).
    fn condition(&self, type_: &str) -> Option<&PodCondition>;

    /// Whether the Pod's `Ready` condition has status `True` (Kubernetes'
    /// `podutil.IsPodReady`). Only the first `Ready` condition counts.
    fn is_ready(&self) -> bool;

    /// Whether the Pod has finished: phase `Succeeded` or `Failed` (Kubernetes'
    /// `podutil.IsPodTerminal`).
    fn is_terminal(&self) -> bool;

    /// Whether the Pod is being deleted: `metadata.deletionTimestamp` is set (Kubernetes'
    /// `pod.DeletionTimestamp != nil`).
    fn is_terminating(&self) -> bool;

    /// Whether the Pod counts as a live replica: neither terminal nor terminating (Kubernetes'
    /// `controller.IsPodActive`).
    fn is_active(&self) -> bool;

    /// The Node the Pod is bound to: `spec.nodeName`, unless unset or empty.
    fn node_name(&self) -> Option<&str>;

    /// Whether `node` satisfies the Pod's `nodeSelector` and required node affinity; see
    /// [`PodSpecExt::matches_node_selector_and_affinity`]. A Pod without a spec matches every
    /// Node.
    fn matches_node_selector_and_affinity(&self, node: &Node) -> bool;
}

impl PodExt for Pod {
    fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or_default()
    }

    fn condition(&self, type_: &str) -> Option<&PodCondition> {
        self.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == type_)
    }

    fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }

    fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn is_active(&self) -> bool {
        !self.is_terminal() && !self.is_terminating()
    }

    fn node_name(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .node_name
            .as_deref()
            .filter(|n| !n.is_empty())
    }

    fn matches_node_selector_and_affinity(&self, node: &Node) -> bool {
        self.spec
            .as_ref()
            .is_none_or(|spec| spec.matches_node_selector_and_affinity(node))
    }
}

/// Questions about a [`PodSpec`] (a Pod's, or a workload's Pod template's).
pub trait PodSpecExt {
    /// Whether `node` satisfies the spec's `nodeSelector` (every pair is one of the Node's
    /// labels) and its required node affinity
    /// (`affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`, matched as
    /// [`NodeSelectorExt::matches`]); either one absent places no constraint. Kubernetes'
    /// `nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)`.
    fn matches_node_selector_and_affinity(&self, node: &Node) -> bool;
}

impl PodSpecExt for PodSpec {
    fn matches_node_selector_and_affinity(&self, node: &Node) -> bool {
        let labels = node.metadata.labels.as_ref();
        let selector_matches = self
            .node_selector
            .iter()
            .flatten()
            .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value));
        selector_matches
            && self
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .is_none_or(|required| required.matches(node))
    }
}

/// Questions about a [`Node`].
pub trait NodeExt {
    /// The first condition of `type_` in `status.conditions` (Kubernetes'
    /// `nodeutil.GetNodeCondition`).
    fn condition(&self, type_: &str) -> Option<&NodeCondition>;

    /// Whether the Node's `Ready` condition has status `True` (Kubernetes'
    /// `nodeutil.IsNodeReady`). Only the first `Ready` condition counts.
    fn is_ready(&self) -> bool;

    /// `spec.taints`, empty when unset.
    fn taints(&self) -> &[Taint];
}

impl NodeExt for Node {
    fn condition(&self, type_: &str) -> Option<&NodeCondition> {
        self.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == type_)
    }

    fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    fn taints(&self) -> &[Taint] {
        self.spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
    }
}

/// Whether a [`Toleration`] tolerates a [`Taint`].
pub trait TolerationExt {
    /// Whether this toleration tolerates `taint`, by Kubernetes' `Toleration.ToleratesTaint`
    /// (`k8s.io/api/core/v1/toleration.go`):
    ///
    /// 1. an empty or unset `effect` matches every effect, otherwise it must equal the taint's;
    /// 2. an empty or unset `key` matches every key, otherwise it must equal the taint's;
    /// 3. the `operator` defaults to `Equal`, which compares the values (unset counts as
    ///    empty); `Exists` ignores the value. So an empty key with `Exists` tolerates every
    ///    taint (of the effect), and an empty key with `Equal` every taint with the same value.
    ///
    /// Any other operator tolerates nothing. That includes the numeric `Lt` and `Gt`, which
    /// Kubernetes 1.35 added behind the alpha `TaintTolerationComparisonOperators` feature gate:
    /// Capstan runs with that gate off.
    fn tolerates(&self, taint: &Taint) -> bool;
}

impl TolerationExt for Toleration {
    fn tolerates(&self, taint: &Taint) -> bool {
        let effect = self.effect.as_deref().unwrap_or_default();
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
        let key = self.key.as_deref().unwrap_or_default();
        if !key.is_empty() && key != taint.key {
            return false;
        }
        match self.operator.as_deref().unwrap_or_default() {
            "" | "Equal" => {
                self.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
            }
            "Exists" => true,
            _ => false,
        }
    }
}

/// Questions about a [`Taint`].
pub trait TaintExt {
    /// Whether any of `tolerations` tolerates this taint ([`TolerationExt::tolerates`];
    /// Kubernetes' `v1helper.TolerationsTolerateTaint`).
    fn is_tolerated_by(&self, tolerations: &[Toleration]) -> bool;
}

impl TaintExt for Taint {
    fn is_tolerated_by(&self, tolerations: &[Toleration]) -> bool {
        tolerations.iter().any(|t| t.tolerates(self))
    }
}

/// Whether a Node matches a [`NodeSelector`].
pub trait NodeSelectorExt {
    /// Whether `node` matches any of the selector's terms ([`NodeSelectorTermExt::matches`]);
    /// a selector without terms matches no Node. Kubernetes' `nodeaffinity.NodeSelector.Match`
    /// (formerly `MatchNodeSelectorTerms`).
    fn matches(&self, node: &Node) -> bool;
}

impl NodeSelectorExt for NodeSelector {
    fn matches(&self, node: &Node) -> bool {
        self.node_selector_terms
            .iter()
            .any(|term| term.matches(node))
    }
}

/// Whether a Node matches a [`NodeSelectorTerm`].
pub trait NodeSelectorTermExt {
    /// Whether `node` meets every requirement of the term (Kubernetes' `nodeSelectorTerm.match`
    /// in `component-helpers/scheduling/corev1/nodeaffinity`). A term with neither
    /// `matchExpressions` nor `matchFields` matches no Node.
    ///
    /// - `matchExpressions` are on the Node's labels. `In` needs the label with one of the
    ///   values; `NotIn` needs it absent or with none of them; `Exists` and `DoesNotExist` need
    ///   it present or absent; `Gt` and `Lt` need it present, and it and the requirement's
    ///   single value both `i64` integers, compared. Any other operator matches nothing.
    /// - `matchFields` are on the Node's fields, of which only `metadata.name` has a value
    ///   (any other key is an absent field), with the same operators except `Gt` and `Lt`, which
    ///   field selectors do not have: they match nothing.
    ///
    /// Kubernetes' API server rejects some requirements that are evaluated here as written
    /// (`NotIn` without values, `Exists` with values, a field operator other than `In` or
    /// `NotIn`); Kubernetes' matcher treats such a term as matching nothing.
    fn matches(&self, node: &Node) -> bool;
}

impl NodeSelectorTermExt for NodeSelectorTerm {
    fn matches(&self, node: &Node) -> bool {
        let expressions = self.match_expressions.as_deref().unwrap_or_default();
        let fields = self.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        let labels = node.metadata.labels.as_ref();
        expressions.iter().all(|requirement| {
            let label = labels.and_then(|l| l.get(&requirement.key));
            requirement_matches(requirement, label.map(String::as_str), true)
        }) && fields.iter().all(|requirement| {
            let field = match requirement.key.as_str() {
                "metadata.name" => node.metadata.name.as_deref(),
                _ => None,
            };
            requirement_matches(requirement, field, false)
        })
    }
}

/// One requirement against `value` (`None`: absent); `numeric` allows `Gt` and `Lt`.
fn requirement_matches(
    requirement: &NodeSelectorRequirement,
    value: Option<&str>,
    numeric: bool,
) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let compare = |wanted: fn(i64, i64) -> bool| {
        let (Some(have), [bound]) = (value, values) else {
            return false;
        };
        match (have.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(have), Ok(bound)) => wanted(have, bound),
            _ => false,
        }
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" if numeric => compare(|have, bound| have > bound),
        "Lt" if numeric => compare(|have, bound| have < bound),
        _ => false,
    }
}

/// Questions about a [`Service`].
pub trait ServiceExt {
    /// Whether the Service is headless: `spec.clusterIP` is exactly `"None"` (Kubernetes'
    /// `service.Spec.ClusterIP == v1.ClusterIPNone`, and CoreDNS's `Service.Headless`). A
    /// Service without a cluster IP yet (unset or `""`) is not headless.
    fn is_headless(&self) -> bool;

    /// Whether the Service has a cluster IP: `spec.clusterIP` is neither unset, `""` nor
    /// `"None"` (Kubernetes' `helper.IsServiceIPSet`). The Endpoints and EndpointSlice
    /// controllers label a Service's objects headless when it is not.
    fn is_cluster_ip_set(&self) -> bool;
}

impl ServiceExt for Service {
    fn is_headless(&self) -> bool {
        cluster_ip(self) == "None"
    }

    fn is_cluster_ip_set(&self) -> bool {
        !matches!(cluster_ip(self), "" | "None")
    }
}

fn cluster_ip(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
