//! The dependency graph: every monitored object as a node (uid, identity, owners,
//! dependents), kept by the graph builder from the monitors' events, and the transitions
//! (owners gone, deletion started, finalizers added) that queue uids for the workers.

use super::*;

// ---------------------------------------------------------------------------------------------
// graph

/// What the graph needs of an object.
#[derive(Clone, Debug)]
pub(super) struct Meta {
    pub(super) identity: Identity,
    pub(super) deleting: bool,
    pub(super) finalizers: Vec<String>,
    pub(super) owners: Vec<OwnerReference>,
}

impl Meta {
    pub(super) fn of(resource: &ResourceInfo, object: &DynamicObject) -> Option<Meta> {
        let metadata = &object.metadata;
        Some(Meta {
            identity: Identity {
                api_version: resource.api_version(),
                kind: resource.kind().to_string(),
                namespace: metadata.namespace.clone().filter(|_| resource.namespaced()),
                name: metadata.name.clone()?,
                uid: metadata.uid.clone()?,
            },
            deleting: metadata.deletion_timestamp.is_some(),
            finalizers: metadata.finalizers.clone().unwrap_or_default(),
            owners: metadata.owner_references.clone().unwrap_or_default(),
        })
    }

    pub(super) fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    pub(super) fn waits_for_orphaning(&self) -> bool {
        self.deleting && self.has_finalizer(ORPHAN_FINALIZER)
    }

    pub(super) fn waits_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND_FINALIZER)
    }
}

pub(super) enum GraphEvent {
    /// Added (`old: None`) or updated.
    Upsert { old: Option<Meta>, new: Meta },
    /// Deleted, as a watch saw it.
    Delete(Meta),
    /// A worker verified that nothing with this identity exists.
    VirtualDelete(Identity),
    /// A monitor applied its first list, or the discovery its first list of CRDs.
    Synced(SyncKey),
    /// A monitor started: until the graph has synced, it waits for this one's first list too.
    Awaiting(SyncKey),
    /// A monitor stopped: nothing waits for its first list any more.
    Stopped(SyncKey),
    /// A custom kind's CRD was deleted, and every object of it with it: its nodes go.
    KindRetired(GroupKind),
}

/// What the graph waits for before it counts as synced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum SyncKey {
    /// The first list of one kind's monitor.
    Kind(GroupKind),
    /// The first list of `CustomResourceDefinition`s (which starts the monitors of the kinds
    /// established then).
    CustomResourceDiscovery,
}

#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) identity: Identity,
    pub(super) owners: Vec<OwnerReference>,
    pub(super) dependents: HashSet<String>,
    /// Seen through a watch; `false` for a virtual node (only referenced as an owner).
    pub(super) observed: bool,
    pub(super) being_deleted: bool,
    pub(super) deleting_dependents: bool,
}

#[derive(Default)]
pub(super) struct Graph {
    pub(super) nodes: HashMap<String, Node>,
}

/// Applies graph events in order; see the [module docs](self).
pub(super) async fn graph_builder(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<GraphEvent>,
    mut awaited: HashSet<SyncKey>,
) {
    let mut synced = awaited.is_empty();
    if synced {
        shared.synced.send_replace(true);
    }
    while let Some(event) = changes.recv().await {
        let mut graph = shared.graph.lock();
        match event {
            GraphEvent::Synced(key) | GraphEvent::Stopped(key) => {
                awaited.remove(&key);
                if !synced && awaited.is_empty() {
                    synced = true;
                    shared.synced.send_replace(true);
                }
            }
            GraphEvent::Awaiting(key) => {
                if !synced {
                    awaited.insert(key);
                }
            }
            GraphEvent::KindRetired(key) => retire_kind(&shared, &mut graph, &key),
            GraphEvent::Upsert { old, new } => upsert(&shared, &mut graph, old.as_ref(), &new),
            GraphEvent::Delete(meta) => {
                if graph.nodes.contains_key(&meta.identity.uid) {
                    remove_node(
                        &shared,
                        &mut graph,
                        &meta.identity.uid,
                        Some(&meta.identity),
                    );
                }
            }
            GraphEvent::VirtualDelete(identity) => virtual_delete(&shared, &mut graph, identity),
        }
    }
}

/// Removes every observed node of the kind `key` (its CRD and its objects are gone),
/// queueing their dependents.
pub(super) fn retire_kind(shared: &Shared, graph: &mut Graph, key: &GroupKind) {
    let gone: Vec<String> = graph
        .nodes
        .iter()
        .filter(|(_, node)| {
            node.observed
                && node.identity.kind == key.1
                && group_of(&node.identity.api_version) == key.0
        })
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in gone {
        remove_node(shared, graph, &uid, None);
    }
}

pub(super) fn upsert(shared: &Shared, graph: &mut Graph, old: Option<&Meta>, new: &Meta) {
    let uid = new.identity.uid.clone();
    let Some(existing) = graph.nodes.get(&uid) else {
        graph.nodes.insert(
            uid.clone(),
            Node {
                identity: new.identity.clone(),
                owners: new.owners.clone(),
                dependents: HashSet::new(),
                observed: true,
                being_deleted: new.deleting,
                deleting_dependents: false,
            },
        );
        add_dependent_to_owners(shared, graph, &uid, &new.owners);
        process_transitions(shared, graph, old, new);
        return;
    };

    if !existing.observed {
        // A virtual node, now seen: dependents that name it otherwise must be verified.
        if !existing.identity.same_coordinates(&new.identity) {
            let dependents: Vec<String> = existing.dependents.iter().cloned().collect();
            let (_, nonmatching) = partition_dependents(shared, graph, &dependents, &new.identity);
            for dependent in nonmatching {
                if let Some(node) = graph.nodes.get(&dependent) {
                    if new.identity.namespace.is_some()
                        && node.identity.namespace != new.identity.namespace
                    {
                        tracing::warn!(
                            dependent = %node.identity,
                            owner = %new.identity,
                            "garbage collector: OwnerRefInvalidNamespace: the owner is in \
                             another namespace than its dependent; the reference counts as \
                             absent"
                        );
                    }
                }
                shared.attempt_to_delete.add(dependent);
            }
        }
    }
    let node = graph.nodes.get_mut(&uid).expect("checked above");
    node.identity = new.identity.clone();
    node.observed = true;
    if new.deleting {
        node.being_deleted = true;
    }
    let (added, removed, changed) = references_diffs(&node.owners, &new.owners);
    if !(added.is_empty() && removed.is_empty() && changed.is_empty()) {
        node.owners = new.owners.clone();
        add_unblocked_owners_to_delete_queue(shared, graph, &removed, &changed);
        add_dependent_to_owners(shared, graph, &uid, &added);
        for reference in &removed {
            if let Some(owner) = graph.nodes.get_mut(&reference.uid) {
                owner.dependents.remove(&uid);
            }
        }
    }
    process_transitions(shared, graph, old, new);
}

/// Links `uid` under each of `owners`, creating (and queueing for verification) virtual
/// nodes for owners never seen. A reference that disagrees with the owner's known
/// coordinates queues the dependent for verification.
pub(super) fn add_dependent_to_owners(
    shared: &Shared,
    graph: &mut Graph,
    uid: &str,
    owners: &[OwnerReference],
) {
    let Some(dependent) = graph.nodes.get(uid).map(|n| n.identity.clone()) else {
        return;
    };
    let mut potentially_invalid = false;
    for reference in owners {
        let expected = shared.owner_identity(&dependent, reference);
        match graph.nodes.get_mut(&reference.uid) {
            None => {
                let mut node = Node {
                    identity: expected,
                    owners: Vec::new(),
                    dependents: HashSet::new(),
                    observed: false,
                    being_deleted: false,
                    deleting_dependents: false,
                };
                node.dependents.insert(uid.to_string());
                graph.nodes.insert(reference.uid.clone(), node);
                shared.attempt_to_delete.add(reference.uid.clone());
            }
            Some(owner) => {
                owner.dependents.insert(uid.to_string());
                if !owner.identity.same_coordinates(&expected) {
                    if owner.observed
                        && owner.identity.namespace.is_some()
                        && owner.identity.namespace != dependent.namespace
                    {
                        tracing::warn!(
                            %dependent,
                            owner = %owner.identity,
                            "garbage collector: OwnerRefInvalidNamespace: the owner is in \
                             another namespace than its dependent; the reference counts as \
                             absent"
                        );
                    }
                    potentially_invalid = true;
                }
            }
        }
    }
    if potentially_invalid {
        shared.attempt_to_delete.add(uid.to_string());
    }
}

/// An owner waiting for its blocking dependents gets another look when one of them stops
/// blocking it (reference removed, or `blockOwnerDeletion` turned off).
pub(super) fn add_unblocked_owners_to_delete_queue(
    shared: &Shared,
    graph: &Graph,
    removed: &[OwnerReference],
    changed: &[(OwnerReference, OwnerReference)],
) {
    let unblocked = removed
        .iter()
        .filter(|r| r.block_owner_deletion == Some(true))
        .chain(
            changed
                .iter()
                .filter(|(old, new)| {
                    old.block_owner_deletion == Some(true) && new.block_owner_deletion != Some(true)
                })
                .map(|(old, _)| old),
        );
    for reference in unblocked {
        if graph
            .nodes
            .get(&reference.uid)
            .is_some_and(|owner| owner.deleting_dependents)
        {
            shared.attempt_to_delete.add(reference.uid.clone());
        }
    }
}

pub(super) type ReferenceDiffs = (
    Vec<OwnerReference>,
    Vec<OwnerReference>,
    Vec<(OwnerReference, OwnerReference)>,
);

/// Owner references added, removed and changed, matched by uid.
pub(super) fn references_diffs(old: &[OwnerReference], new: &[OwnerReference]) -> ReferenceDiffs {
    let old_by_uid: HashMap<&str, &OwnerReference> =
        old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|r| r.uid.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for reference in new {
        match old_by_uid.get(reference.uid.as_str()) {
            None => added.push(reference.clone()),
            Some(previous) if *previous != reference => {
                changed.push(((*previous).clone(), reference.clone()));
            }
            Some(_) => {}
        }
    }
    let removed = old
        .iter()
        .filter(|r| !new_uids.contains(r.uid.as_str()))
        .cloned()
        .collect();
    (added, removed, changed)
}

/// Queues what a policy needs when an object starts waiting for it: the owner for orphaning,
/// or (Foreground) its dependents and itself.
pub(super) fn process_transitions(
    shared: &Shared,
    graph: &mut Graph,
    old: Option<&Meta>,
    new: &Meta,
) {
    let uid = &new.identity.uid;
    if new.waits_for_orphaning() && !old.is_some_and(Meta::waits_for_orphaning) {
        tracing::debug!(owner = %new.identity, "garbage collector: orphaning dependents");
        shared.attempt_to_orphan.add(uid.clone());
        return;
    }
    if new.waits_for_dependents() && !old.is_some_and(Meta::waits_for_dependents) {
        let Some(node) = graph.nodes.get_mut(uid) else {
            return;
        };
        tracing::debug!(owner = %new.identity, "garbage collector: deleting dependents first");
        node.deleting_dependents = true;
        for dependent in &node.dependents {
            shared.attempt_to_delete.add(dependent.clone());
        }
        shared.attempt_to_delete.add(uid.clone());
    }
}

/// Dependents of `dependents` whose reference to `identity.uid` names `identity`'s
/// coordinates, and those whose reference names others.
pub(super) fn partition_dependents(
    shared: &Shared,
    graph: &Graph,
    dependents: &[String],
    identity: &Identity,
) -> (Vec<String>, Vec<String>) {
    let mut matching = Vec::new();
    let mut nonmatching = Vec::new();
    for uid in dependents {
        let Some(node) = graph.nodes.get(uid) else {
            continue;
        };
        let mut matches = false;
        let mut mismatches = false;
        for reference in node.owners.iter().filter(|r| r.uid == identity.uid) {
            if shared
                .owner_identity(&node.identity, reference)
                .same_coordinates(identity)
            {
                matches = true;
            } else {
                mismatches = true;
            }
        }
        if matches {
            matching.push(uid.clone());
        }
        if mismatches {
            nonmatching.push(uid.clone());
        }
    }
    (matching, nonmatching)
}

/// Removes `uid` from the graph, queueing its dependents (their owner is gone) and its owners
/// that wait for their dependents.
pub(super) fn remove_node(
    shared: &Shared,
    graph: &mut Graph,
    uid: &str,
    deleted: Option<&Identity>,
) {
    let Some(node) = graph.nodes.remove(uid) else {
        return;
    };
    for reference in &node.owners {
        if let Some(owner) = graph.nodes.get_mut(&reference.uid) {
            owner.dependents.remove(uid);
        }
    }
    if !node.dependents.is_empty() {
        shared
            .absent
            .lock()
            .add(deleted.cloned().unwrap_or_else(|| node.identity.clone()));
    }
    for dependent in &node.dependents {
        shared.attempt_to_delete.add(dependent.clone());
    }
    for reference in &node.owners {
        if graph
            .nodes
            .get(&reference.uid)
            .is_some_and(|owner| owner.deleting_dependents)
        {
            shared.attempt_to_delete.add(reference.uid.clone());
        }
    }
}

/// A worker found nothing at `deleted`'s coordinates (NotFound, or another uid there).
pub(super) fn virtual_delete(shared: &Shared, graph: &mut Graph, deleted: Identity) {
    let Some(existing) = graph.nodes.get(&deleted.uid) else {
        return;
    };
    let dependents: Vec<String> = existing.dependents.iter().cloned().collect();
    let (matching, nonmatching) = partition_dependents(shared, graph, &dependents, &deleted);
    if existing.observed {
        if !existing.identity.same_coordinates(&deleted) {
            // Seen elsewhere: only the dependents that name these coordinates lost an owner.
            if !matching.is_empty() {
                shared.absent.lock().add(deleted);
                for dependent in matching {
                    shared.attempt_to_delete.add(dependent);
                }
            }
            return;
        }
        remove_node(shared, graph, &deleted.uid, Some(&deleted));
        return;
    }
    if nonmatching.is_empty() {
        remove_node(shared, graph, &deleted.uid, Some(&deleted));
        return;
    }
    // Dependents disagree on where this owner is: keep the virtual node for them.
    if !matching.is_empty() {
        shared.absent.lock().add(deleted.clone());
        for dependent in matching {
            shared.attempt_to_delete.add(dependent);
        }
    }
    if existing.identity.same_coordinates(&deleted) {
        // Try the coordinates another dependent names next.
        let replacement = nonmatching.iter().find_map(|uid| {
            let node = graph.nodes.get(uid)?;
            node.owners
                .iter()
                .filter(|r| r.uid == deleted.uid)
                .map(|r| shared.owner_identity(&node.identity, r))
                .find(|identity| !identity.same_coordinates(&deleted))
        });
        if let Some(replacement) = replacement {
            if let Some(node) = graph.nodes.get_mut(&deleted.uid) {
                node.identity = replacement;
            }
            shared
                .attempt_to_delete
                .add_rate_limited(deleted.uid.clone());
        }
    }
}
