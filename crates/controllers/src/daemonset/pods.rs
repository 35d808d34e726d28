//! Revisions and Pods: the template hash that names a revision, the daemon Pod built for a
//! Node, and the rolling-update arithmetic (`maxUnavailable`).

use super::*;

// ---------------------------------------------------------------------------------------
// Revisions
// ---------------------------------------------------------------------------------------

/// The `controller-revision-hash` of `template`: FNV-1a (64 bits) over its JSON, written in
/// Kubernetes' safe alphabet (no vowels, so it never spells a word). Equal templates give
/// equal hashes in every process.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in json {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|digit| ALPHABET[usize::from(digit - b'0') % ALPHABET.len()] as char)
        .collect()
}

pub(super) fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

// ---------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------

/// The Node a daemon Pod is for: its `spec.nodeName`, else the Node its required
/// `metadata.name` affinity names.
pub(super) fn target_node(pod: &Pod) -> Option<String> {
    if let Some(node) = pod.node_name() {
        return Some(node.to_string());
    }
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|field| {
            let values = field.values.as_deref().unwrap_or_default();
            (field.key == "metadata.name" && field.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

pub(super) fn created_at(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The Pod `ds` runs on `node`: the template (through the ReplicaSet controller's
/// [`pod_for`]), owned by the DaemonSet, labelled with the revision `hash`, with the
/// [`default_tolerations`], the required affinity to `node` and `spec.nodeName` set.
pub fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let mut template = ds
        .spec
        .opt()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    let mut pod = pod_for(ds, template);
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    add_tolerations(
        &mut tolerations,
        default_tolerations(spec.host_network == Some(true)),
    );
    spec.tolerations = Some(tolerations);
    // Kubernetes' ReplaceDaemonSetPodNodeNameNodeAffinity: one term, on the Node's name.
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    });
    spec.node_name = Some(node.to_string());
    pod
}

pub(super) fn max_unavailable(ds: &DaemonSet, desired: usize) -> usize {
    let strategy = ds.spec.opt().and_then(|s| s.update_strategy.as_ref());
    let value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let scaled = match value {
        IntOrString::Int(n) => n.max(0) as usize,
        IntOrString::String(s) => {
            let percent: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (percent * desired).div_ceil(100)
        }
    };
    // Kubernetes: an impossible configuration (no surge and no unavailability) means 1.
    if scaled == 0 && desired > 0 {
        1
    } else {
        scaled
    }
}

pub(super) fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .opt()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}
