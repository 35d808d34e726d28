//! The workers: `attemptToDelete` and `attemptToOrphan`, taking uids from their queues,
//! verifying owners against the API (live reads, never the cache alone), and deleting,
//! orphaning or removing finalizers, with per-uid backoff on failure.

use super::*;

// ---------------------------------------------------------------------------------------------
// workers

/// Why an attempt failed; every failure is retried with backoff.
#[derive(Debug)]
pub(super) enum Failure {
    Api(Error),
    /// An owner reference (or a virtual node) names a kind the collector was not given.
    UnknownKind(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Api(error)
    }
}

impl Failure {
    /// A 409 Conflict: the object changed since it was read.
    pub(super) fn is_conflict(&self) -> bool {
        matches!(self, Failure::Api(error) if error.is_conflict())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api(error) => error.fmt(f),
            Failure::UnknownKind(kind) => write!(f, "no monitored kind matches {kind}"),
        }
    }
}

pub(super) enum Outcome {
    Forget,
    Requeue,
}

pub(super) async fn delete_worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    work(
        &shared,
        &shared.attempt_to_delete,
        stop,
        "delete",
        |s, uid| Box::pin(attempt_to_delete(s, uid)),
    )
    .await;
}

pub(super) async fn orphan_worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    work(
        &shared,
        &shared.attempt_to_orphan,
        stop,
        "orphan",
        |s, uid| Box::pin(attempt_to_orphan(s, uid)),
    )
    .await;
}

pub(super) type Attempt<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Outcome, Failure>> + Send + 'a>>;

pub(super) async fn work(
    shared: &Shared,
    queue: &WorkQueue<String>,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
    attempt: for<'a> fn(&'a Shared, &'a str) -> Attempt<'a>,
) {
    loop {
        let uid = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            uid = queue.get() => match uid {
                Some(uid) => uid,
                None => return,
            },
        };
        if *stop.borrow() {
            return;
        }
        match attempt(shared, uid.key()).await {
            Ok(Outcome::Forget) => queue.forget(uid.key()),
            Ok(Outcome::Requeue) => queue.add_rate_limited(uid.key().clone()),
            Err(failure) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                match &failure {
                    Failure::UnknownKind(_) => tracing::debug!(
                        uid = uid.key().as_str(),
                        "garbage collector: {name}: {failure}; retrying"
                    ),
                    Failure::Api(_) => tracing::warn!(
                        uid = uid.key().as_str(),
                        "garbage collector: {name}: {failure}; retrying"
                    ),
                }
                queue.add_rate_limited(uid.key().clone());
            }
        }
    }
}

pub(super) fn requeue_if_unobserved(shared: &Shared, uid: &str) -> Outcome {
    // A virtual node that exists but was not seen yet: look again until the watch shows it,
    // or a node added and removed during a watch gap would stay forever (issue 56121).
    match shared.graph.lock().nodes.get(uid) {
        Some(node) if !node.observed => Outcome::Requeue,
        _ => Outcome::Forget,
    }
}

pub(super) fn resource_of(shared: &Shared, identity: &Identity) -> Result<ResourceInfo, Failure> {
    shared
        .resource_for(&identity.api_version, &identity.kind)
        .ok_or_else(|| Failure::UnknownKind(format!("{}/{}", identity.api_version, identity.kind)))
}

/// Reads `identity` live: `None` when nothing with its uid is at its coordinates.
pub(super) async fn get_live(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
) -> Result<Option<DynamicObject>, Error> {
    if resource.namespaced() && identity.namespace.is_none() {
        // A namespaced kind named from a cluster-scoped object: it cannot be found.
        return Ok(None);
    }
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    match shared.client.get(resource, namespace, &identity.name).await {
        Ok(object) if object.metadata.uid.as_deref() == Some(identity.uid.as_str()) => {
            Ok(Some(object))
        }
        Ok(_) => Ok(None),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Kubernetes' `attemptToDeleteItem`: decides, from live reads, whether the object `uid`
/// must go, lose references, or wait.
pub(super) async fn attempt_to_delete(shared: &Shared, uid: &str) -> Result<Outcome, Failure> {
    let Some(item) = shared.graph.lock().nodes.get(uid).cloned() else {
        return Ok(Outcome::Forget);
    };
    // Being deleted is a one-way trip: its dependents are handled once it is gone.
    if item.being_deleted && !item.deleting_dependents {
        return Ok(Outcome::Forget);
    }
    let resource = match shared.lookup_kind(&item.identity.api_version, &item.identity.kind) {
        Ok(resource) => resource,
        Err(UnmonitoredKind::Retired) => {
            // Its CRD went with every object of it.
            shared.enqueue_virtual_delete(item.identity.clone());
            return Ok(Outcome::Forget);
        }
        Err(UnmonitoredKind::Unknown) => resource_of(shared, &item.identity)?,
    };
    let resource = &resource;
    let Some(latest) = get_live(shared, resource, &item.identity).await? else {
        shared.enqueue_virtual_delete(item.identity.clone());
        return Ok(Outcome::Forget);
    };
    if item.deleting_dependents {
        process_deleting_dependents(shared, &item, resource).await?;
        return Ok(requeue_if_unobserved(shared, uid));
    }
    let references = latest.metadata.owner_references.clone().unwrap_or_default();
    if references.is_empty() {
        return Ok(requeue_if_unobserved(shared, uid));
    }
    let Some(classes) = classify_references(shared, &item.identity, &references).await? else {
        // Invalid for good (a cluster-scoped object owned by a namespaced kind): leave it.
        return Ok(Outcome::Forget);
    };
    if !classes.solid.is_empty() {
        if classes.dangling.is_empty() && classes.waiting.is_empty() {
            return Ok(requeue_if_unobserved(shared, uid));
        }
        // Waiting owners are dropped too, or they would wait for this object forever.
        let drop: HashSet<String> = classes
            .dangling
            .iter()
            .chain(&classes.waiting)
            .map(|r| r.uid.clone())
            .collect();
        tracing::debug!(
            item = %item.identity,
            "garbage collector: removing references to absent or deleting owners"
        );
        patch_owner_references(shared, resource, &item.identity, |references| {
            let before = references.len();
            references.retain(|r| !drop.contains(&r.uid));
            references.len() != before
        })
        .await?;
    } else if !classes.waiting.is_empty() && !item.dependents.is_empty() {
        let cycle = {
            let graph = shared.graph.lock();
            item.dependents.iter().any(|d| {
                graph
                    .nodes
                    .get(d)
                    .is_some_and(|dependent| dependent.deleting_dependents)
            })
        };
        if cycle {
            // A dependent waits for us while we wait for it: stop blocking our owners.
            tracing::info!(
                item = %item.identity,
                "garbage collector: possible cycle; unblocking this object's owner references"
            );
            patch_owner_references(shared, resource, &item.identity, |references| {
                let mut changed = false;
                for reference in references.iter_mut() {
                    if reference.block_owner_deletion == Some(true) {
                        reference.block_owner_deletion = Some(false);
                        changed = true;
                    }
                }
                changed
            })
            .await?;
        }
        // An owner waits for us and we have dependents: delete them first.
        delete_object(
            shared,
            resource,
            &item.identity,
            PropagationPolicy::Foreground,
        )
        .await?;
    } else {
        // No owner left: collect it, honouring a policy its finalizers already ask for.
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let policy = if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        delete_object(shared, resource, &item.identity, policy).await?;
    }
    Ok(requeue_if_unobserved(shared, uid))
}

pub(super) struct Classes {
    /// Owners that exist and are not waiting for their dependents.
    pub(super) solid: Vec<OwnerReference>,
    /// Owners verified absent.
    pub(super) dangling: Vec<OwnerReference>,
    /// Owners being deleted in Foreground.
    pub(super) waiting: Vec<OwnerReference>,
}

/// Sorts `references` by what their owners are, reading each live (unless known absent).
/// `None` when a reference can never be valid.
pub(super) async fn classify_references(
    shared: &Shared,
    item: &Identity,
    references: &[OwnerReference],
) -> Result<Option<Classes>, Failure> {
    let mut classes = Classes {
        solid: Vec::new(),
        dangling: Vec::new(),
        waiting: Vec::new(),
    };
    for reference in references {
        let resource = match shared.lookup_kind(&reference.api_version, &reference.kind) {
            Ok(resource) => resource,
            Err(UnmonitoredKind::Retired) => {
                // Its CRD went with every object of it: the owner is gone.
                classes.dangling.push(reference.clone());
                continue;
            }
            Err(UnmonitoredKind::Unknown) => {
                return Err(Failure::UnknownKind(format!(
                    "{}/{}",
                    reference.api_version, reference.kind
                )))
            }
        };
        let resource = &resource;
        if resource.namespaced() && item.namespace.is_none() {
            tracing::warn!(
                %item,
                owner_kind = reference.kind.as_str(),
                owner = reference.name.as_str(),
                "garbage collector: a cluster-scoped object cannot be owned by a namespaced \
                 kind; ignoring it"
            );
            return Ok(None);
        }
        let owner = shared.owner_identity(item, reference);
        if shared.absent.lock().contains(&owner) {
            classes.dangling.push(reference.clone());
            continue;
        }
        match get_live(shared, resource, &owner).await? {
            None => {
                shared.absent.lock().add(owner);
                classes.dangling.push(reference.clone());
            }
            Some(live) => {
                let waits = live.metadata.deletion_timestamp.is_some()
                    && live
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND_FINALIZER);
                if waits {
                    classes.waiting.push(reference.clone());
                } else {
                    classes.solid.push(reference.clone());
                }
            }
        }
    }
    Ok(Some(classes))
}

/// An owner deleted in Foreground: queues its blocking dependents, and once none is left
/// removes its `foregroundDeletion` finalizer.
pub(super) async fn process_deleting_dependents(
    shared: &Shared,
    item: &Node,
    resource: &ResourceInfo,
) -> Result<(), Failure> {
    let blocking: Vec<(String, bool)> = {
        let graph = shared.graph.lock();
        item.dependents
            .iter()
            .filter_map(|uid| graph.nodes.get(uid).map(|node| (uid, node)))
            .filter(|(_, node)| {
                node.owners
                    .iter()
                    .any(|r| r.uid == item.identity.uid && r.block_owner_deletion == Some(true))
            })
            .map(|(uid, node)| (uid.clone(), node.deleting_dependents))
            .collect()
    };
    if blocking.is_empty() {
        tracing::debug!(
            owner = %item.identity,
            "garbage collector: no blocking dependent left; removing {FOREGROUND_FINALIZER}"
        );
        remove_finalizer(shared, resource, &item.identity, FOREGROUND_FINALIZER).await?;
        return Ok(());
    }
    for (uid, deleting_dependents) in blocking {
        if !deleting_dependents {
            shared.attempt_to_delete.add(uid);
        }
    }
    Ok(())
}

/// Kubernetes' `attemptToOrphanWorker`: strips the references to the owner `uid` from its
/// dependents, then its `orphan` finalizer.
pub(super) async fn attempt_to_orphan(shared: &Shared, uid: &str) -> Result<Outcome, Failure> {
    let Some(owner) = shared.graph.lock().nodes.get(uid).cloned() else {
        return Ok(Outcome::Forget);
    };
    let resource = resource_of(shared, &owner.identity)?;
    match get_live(shared, &resource, &owner.identity).await? {
        Some(live)
            if live.metadata.deletion_timestamp.is_some()
                && live
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == ORPHAN_FINALIZER) => {}
        // Gone, replaced, or no longer asking for orphaning: nothing to do.
        _ => return Ok(Outcome::Forget),
    }
    let dependents: Vec<Identity> = {
        let graph = shared.graph.lock();
        owner
            .dependents
            .iter()
            .filter_map(|d| graph.nodes.get(d).map(|n| n.identity.clone()))
            .collect()
    };
    let results: Vec<Result<(), Failure>> = futures::stream::iter(dependents)
        .map(|dependent| async move {
            let resource = resource_of(shared, &dependent)?;
            patch_owner_references(shared, &resource, &dependent, |references| {
                let before = references.len();
                references.retain(|r| r.uid != uid);
                references.len() != before
            })
            .await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    if let Some(failure) = results.into_iter().find_map(Result::err) {
        return Err(failure);
    }
    remove_finalizer(shared, &resource, &owner.identity, ORPHAN_FINALIZER).await?;
    Ok(Outcome::Forget)
}

/// Deletes `identity` (only that uid) with `policy`; NotFound is success.
pub(super) async fn delete_object(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    policy: PropagationPolicy,
) -> Result<(), Failure> {
    tracing::debug!(item = %identity, ?policy, "garbage collector: deleting");
    let params = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(identity.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    match shared
        .client
        .delete(resource, namespace, &identity.name, &params)
        .await
    {
        Ok(_) => {
            shared.counters.deletes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Read-modify-write of `identity`'s owner references with its resourceVersion, retried on
/// conflict. `edit` returns whether it changed anything. Done (Ok) when the object is gone or
/// replaced.
pub(super) async fn patch_owner_references(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    edit: impl Fn(&mut Vec<OwnerReference>) -> bool,
) -> Result<(), Failure> {
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    retry_on_error(MAX_CONFLICT_RETRIES, Failure::is_conflict, |_| async {
        let Some(latest) = get_live(shared, resource, identity).await? else {
            return Ok(());
        };
        let mut references = latest.metadata.owner_references.clone().unwrap_or_default();
        if !edit(&mut references) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": references,
                "resourceVersion": latest.metadata.resource_version,
            }
        });
        match shared
            .client
            .patch(
                resource,
                namespace,
                &identity.name,
                &Patch::Merge(patch),
                &PatchParams::default(),
            )
            .await
        {
            Ok(_) => {
                shared
                    .counters
                    .references_removed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    })
    .await
}

/// Removes `finalizer` from `identity` with its resourceVersion, retried on conflict. Done
/// (Ok) when the object is gone, replaced, or without the finalizer.
pub(super) async fn remove_finalizer(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    finalizer: &str,
) -> Result<(), Failure> {
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    retry_on_error(MAX_CONFLICT_RETRIES, Failure::is_conflict, |_| async {
        let Some(latest) = get_live(shared, resource, identity).await? else {
            return Ok(());
        };
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": kept,
                "resourceVersion": latest.metadata.resource_version,
            }
        });
        match shared
            .client
            .patch(
                resource,
                namespace,
                &identity.name,
                &Patch::Merge(patch),
                &PatchParams::default(),
            )
            .await
        {
            Ok(_) => {
                shared
                    .counters
                    .finalizers_removed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    })
    .await
}
