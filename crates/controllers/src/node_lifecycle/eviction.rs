//! The taint manager: evicting the Pods of tainted Nodes once their tolerations run out,
//! marking Pods of unhealthy Nodes not ready, and force-deleting Pods stuck terminating.

use super::*;
use capstan_api::ext::MetaExt;
use capstan_api::kube_core::ResourceExt;

impl NodeLifecycleController {
    /// The taint manager and the care of Pods on unhealthy nodes, over every node (`only` is
    /// `None`) or the named ones; returns when to run again for a pending eviction or
    /// force-deletion. Only a pass over every node forgets the state of Pods and taints it no
    /// longer sees.
    pub(super) async fn taint_manager_pass(
        &self,
        state: &mut State,
        only: Option<&BTreeSet<String>>,
    ) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut wake_at = |at: Instant| wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        let now = Instant::now();
        let wall = self.now();
        let mut seen_terminating = HashSet::new();
        let mut seen_marked = HashSet::new();
        let mut seen_taints = HashSet::new();
        let mut seen_evicted = HashSet::new();
        let nodes = match only {
            None => {
                let mut nodes = self.nodes.cache().list();
                nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                nodes
            }
            Some(names) => names
                .iter()
                .filter_map(|name| self.nodes.cache().get(&ObjectKey::cluster(name.as_str())))
                .collect(),
        };
        for node in nodes {
            let node_name = name_of(node.as_ref());
            let ready = node_ready_status(&node) == Some("True");
            let no_execute: Vec<Taint> = node
                .taints()
                .iter()
                .filter(|t| t.effect == taints::NO_EXECUTE)
                .cloned()
                .collect();
            for taint in &no_execute {
                let key = (node_name.clone(), taint.key.clone(), taint.value.clone());
                state.taint_seen.entry(key.clone()).or_insert(wall);
                seen_taints.insert(key);
            }
            if ready && no_execute.is_empty() {
                continue;
            }
            let mut pods = self.pods.cache().by_index(NODE_NAME_INDEX, &node_name);
            pods.sort_by(|a, b| {
                (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
                    .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
            });
            for pod in pods {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() {
                    if ready {
                        continue;
                    }
                    seen_terminating.insert(uid.clone());
                    let first = *state.terminating.entry(uid).or_insert(now);
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or(0)
                        .max(0);
                    let due = first + Duration::from_secs(grace as u64);
                    if now >= due {
                        self.force_delete(&pod, &node_name).await;
                    } else {
                        wake_at(due);
                    }
                    continue;
                }
                if !ready {
                    seen_marked.insert(uid.clone());
                    if !state.marked_not_ready.contains(&uid) && pod.is_ready() {
                        if self.mark_not_ready(&pod).await {
                            state.marked_not_ready.insert(uid.clone());
                        }
                    } else {
                        state.marked_not_ready.insert(uid.clone());
                    }
                }
                if no_execute.is_empty() {
                    continue;
                }
                let tolerations = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.tolerations.as_deref())
                    .unwrap_or_default();
                let eviction = eviction_time(tolerations, &no_execute, |taint| {
                    let seen = state
                        .taint_seen
                        .get(&(node_name.clone(), taint.key.clone(), taint.value.clone()))
                        .copied()
                        .unwrap_or(wall);
                    taint_start(taint, seen)
                });
                match eviction {
                    Eviction::Never => {}
                    Eviction::At(at) if at > wall => {
                        let left = wall.duration_until(at).unsigned_abs();
                        wake_at(now + left);
                    }
                    // Evicted already; the cache has not seen the deletion yet.
                    Eviction::Now | Eviction::At(_) if state.evicted.contains(&uid) => {
                        seen_evicted.insert(uid);
                    }
                    Eviction::Now | Eviction::At(_) => {
                        if self.evict(&pod).await {
                            state.evicted.insert(uid.clone());
                            seen_evicted.insert(uid);
                        }
                    }
                }
            }
        }
        if only.is_some() {
            return wake;
        }
        state
            .terminating
            .retain(|uid, _| seen_terminating.contains(uid));
        state
            .marked_not_ready
            .retain(|uid| seen_marked.contains(uid));
        state.taint_seen.retain(|key, _| seen_taints.contains(key));
        state.evicted.retain(|uid| seen_evicted.contains(uid));
        wake
    }

    /// Sets a Pod's Ready condition to False (Kubernetes' `MarkPodsNotReady`). Returns whether
    /// it is done (or nothing is left to do).
    pub(super) async fn mark_not_ready(&self, pod: &Pod) -> bool {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.namespace_str());
        let mut updated = pod.clone();
        let now = Time(self.now());
        if let Some(conditions) = updated.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for condition in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                condition.status = "False".into();
                condition.last_transition_time = Some(now.clone());
            }
        }
        match api.update_status(&PostParams::default(), &updated).await {
            Ok(written) => {
                self.recorder
                    .warning(&written, reasons::NODE_NOT_READY, "Node is not ready");
                true
            }
            Err(Error::NotFound { .. }) => true,
            Err(error) => {
                tracing::debug!(pod = %name_of(pod), %error, "node lifecycle: marking pod not ready failed; retrying");
                false
            }
        }
    }

    /// The taint manager's eviction: the Event, the `DisruptionTarget` condition, the delete.
    /// Returns whether the Pod is deleted (or being deleted, or gone).
    pub(super) async fn evict(&self, pod: &Pod) -> bool {
        let namespace = pod.namespace().unwrap_or_default();
        let name = name_of(pod);
        self.recorder.normal(
            pod,
            reasons::TAINT_MANAGER_EVICTION,
            format!("Marking for deletion Pod {namespace}/{name}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut current = pod.clone();
        for _ in 0..3 {
            let now = Time(self.now());
            let status = current.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "DisruptionTarget");
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(reasons::DELETION_BY_TAINT_MANAGER.into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(now),
                ..PodCondition::default()
            });
            match api.update_status(&PostParams::default(), &current).await {
                Err(error) if error.is_conflict() => match api.get_opt(&name).await {
                    Ok(Some(fresh)) if fresh.metadata.uid == pod.metadata.uid => current = fresh,
                    Ok(_) => return true,
                    Err(_) => return false,
                },
                _ => break,
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "node lifecycle: evicted");
                true
            }
            Err(Error::NotFound { .. }) => true,
            Err(error) if error.is_conflict() => true,
            Err(error) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "node lifecycle: eviction failed; retrying");
                false
            }
        }
    }

    /// Deletes a terminating Pod of a node that is not Ready for good (grace period 0).
    pub(super) async fn force_delete(&self, pod: &Pod, node: &str) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = name_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), %node, "node lifecycle: force-deleted a terminating pod of a node that is not ready")
            }
            Err(error) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "node lifecycle: force delete failed")
            }
        }
    }
}
