//! Node health: observing Nodes and Leases, marking Nodes whose heartbeats stopped
//! `Unknown`, zone disruption, and the NotReady/Unreachable taints.

use super::*;

impl NodeLifecycleController {
    pub(super) fn now(&self) -> Timestamp {
        (self.options.clock)()
    }

    /// Notes a heartbeat carried by a Node change.
    pub(super) fn on_node(&self, state: &mut State, delta: &Delta<Node>) {
        let node = delta.object();
        let name = name_of(node.as_ref());
        if let Delta::Deleted(_) = delta {
            if state.health.remove(&name).is_some() {
                self.recorder.normal(
                    node.as_ref(),
                    reasons::REMOVING_NODE,
                    format!("Removing Node {name} from Controller"),
                );
            }
            return;
        }
        self.observe(state, node);
    }

    pub(super) fn on_lease(&self, state: &mut State, lease: &Lease) {
        if lease.metadata.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE) {
            return;
        }
        let name = name_of(lease);
        if let Some(health) = state.health.get_mut(&name) {
            if renewed(health.lease_renew.as_ref(), renew_time(lease)) {
                health.lease_renew = renew_time(lease).cloned();
                health.probe = Instant::now();
            }
        }
    }

    /// Updates the node's heartbeat record from its current state and Lease.
    pub(super) fn observe(&self, state: &mut State, node: &Node) {
        let name = name_of(node);
        let now = Instant::now();
        let heartbeat = node
            .condition("Ready")
            .map(|c| c.last_heartbeat_time.clone());
        let lease_key = ObjectKey::namespaced(NODE_LEASE_NAMESPACE, name.clone());
        let lease = self.leases.cache().get(&lease_key);
        let lease_renew = lease.as_deref().and_then(renew_time).cloned();
        match state.health.get_mut(&name) {
            None => {
                self.recorder.normal(
                    node,
                    reasons::REGISTERED_NODE,
                    format!("Registered Node {name} in Controller"),
                );
                state.health.insert(
                    name,
                    NodeHealth {
                        probe: now,
                        ready_heartbeat: heartbeat,
                        lease_renew,
                    },
                );
            }
            Some(health) => {
                if health.ready_heartbeat != heartbeat {
                    health.ready_heartbeat = heartbeat;
                    health.probe = now;
                }
                if renewed(health.lease_renew.as_ref(), lease_renew.as_ref()) {
                    health.lease_renew = lease_renew;
                    health.probe = now;
                }
            }
        }
    }

    /// One node monitor pass: health of every node, zone states, then taints.
    pub(super) async fn monitor(&self, state: &mut State) {
        let mut nodes = self.nodes.cache().list();
        nodes.sort_by_key(|n| name_of(n.as_ref()));
        let mut current = Vec::with_capacity(nodes.len());
        for node in nodes {
            self.observe(state, &node);
            match self.update_health(state, node.clone()).await {
                Ok(node) => current.push(node),
                Err(error) => {
                    tracing::warn!(node = %name_of(node.as_ref()), %error, "node lifecycle: updating node health failed");
                    current.push(node);
                }
            }
        }
        self.handle_disruption(state, &current);
        for node in current {
            if let Err(error) = self.reconcile_taints(state, &node).await {
                tracing::debug!(node = %name_of(node.as_ref()), %error, "node lifecycle: updating taints failed; retrying next pass");
            }
        }
    }

    /// Sets the conditions of a node past its grace period to Unknown; returns the node as
    /// it is now. Retries conflicts on a fresh copy, up to five times.
    pub(super) async fn update_health(
        &self,
        state: &mut State,
        mut node: Arc<Node>,
    ) -> Result<Arc<Node>, Error> {
        let name = name_of(node.as_ref());
        let api: Api<Node> = Api::all(self.client.clone());
        for _ in 0..5 {
            let Some(health) = state.health.get(&name) else {
                return Ok(node);
            };
            let observed_ready = node_ready_status(&node).map(str::to_string);
            let grace = if observed_ready.is_none() {
                self.options.node_startup_grace_period
            } else {
                self.options.node_monitor_grace_period
            };
            if Instant::now().duration_since(health.probe) <= grace {
                return Ok(node);
            }
            let now = Time(self.now());
            let mut updated = (*node).clone();
            let creation = updated.metadata.creation_timestamp.clone();
            let status = updated.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            let mut changed = false;
            for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                match conditions.iter_mut().find(|c| c.type_ == type_) {
                    None => {
                        conditions.push(NodeCondition {
                            type_: type_.into(),
                            status: "Unknown".into(),
                            reason: Some(reasons::NODE_STATUS_NEVER_UPDATED.into()),
                            message: Some(NODE_STATUS_NEVER_UPDATED_MESSAGE.into()),
                            last_heartbeat_time: creation.clone(),
                            last_transition_time: Some(now.clone()),
                        });
                        changed = true;
                    }
                    Some(condition) if condition.status != "Unknown" => {
                        condition.status = "Unknown".into();
                        condition.reason = Some(reasons::NODE_STATUS_UNKNOWN.into());
                        condition.message = Some(NODE_STATUS_UNKNOWN_MESSAGE.into());
                        condition.last_transition_time = Some(now.clone());
                        changed = true;
                    }
                    Some(_) => {}
                }
            }
            if !changed {
                return Ok(node);
            }
            match api.update_status(&PostParams::default(), &updated).await {
                Ok(written) => {
                    if observed_ready.as_deref() == Some("True") {
                        self.recorder.normal(
                            &written,
                            reasons::NODE_NOT_READY,
                            format!("Node {name} status is now: NodeNotReady"),
                        );
                    }
                    tracing::info!(node = %name, "node lifecycle: node stopped posting status; conditions set to Unknown");
                    return Ok(Arc::new(written));
                }
                Err(error) if error.is_conflict() => {
                    let Some(fresh) = api.get_opt(&name).await? else {
                        return Ok(node);
                    };
                    node = Arc::new(fresh);
                    self.observe(state, &node);
                }
                Err(Error::NotFound { .. }) => return Ok(node),
                Err(error) => return Err(error),
            }
        }
        Ok(node)
    }

    /// Zone states from the nodes' Ready conditions, and the taint limiters that follow.
    pub(super) fn handle_disruption(&self, state: &mut State, nodes: &[Arc<Node>]) {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for node in nodes {
            let entry = counts.entry(zone_of(node)).or_default();
            if node_ready_status(node) == Some("True") {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let options = &self.options;
        let mut zones = HashMap::new();
        for (zone, (ready, not_ready)) in counts {
            let zone_state = zone_state(ready, not_ready, options.unhealthy_zone_threshold);
            let size = ready + not_ready;
            if state.zones.get(&zone).map(|(s, _)| *s) != Some(zone_state) {
                let rate = match zone_state {
                    ZoneState::Normal | ZoneState::FullDisruption => options.eviction_rate,
                    ZoneState::PartialDisruption if size > options.large_cluster_threshold => {
                        options.secondary_eviction_rate
                    }
                    ZoneState::PartialDisruption => 0.0,
                };
                tracing::info!(zone = %zone, state = ?zone_state, "node lifecycle: zone state");
                zones.insert(zone, (zone_state, TokenBucket::new(rate)));
            } else if let Some(kept) = state.zones.remove(&zone) {
                zones.insert(zone, kept);
            }
        }
        state.zones = zones;
        let all_disrupted = !state.zones.is_empty()
            && state
                .zones
                .values()
                .all(|(s, _)| *s == ZoneState::FullDisruption);
        if all_disrupted != state.all_disrupted {
            tracing::warn!(
                all_disrupted,
                "node lifecycle: every zone fully disrupted: {}",
                if all_disrupted {
                    "no NoExecute tainting until a node is Ready"
                } else {
                    "tainting resumes"
                }
            );
            state.all_disrupted = all_disrupted;
        }
    }

    /// Brings the controller's taints on `node` to what its conditions call for.
    pub(super) async fn reconcile_taints(
        &self,
        state: &mut State,
        node: &Node,
    ) -> Result<(), Error> {
        let name = name_of(node);
        let existing = node.taints();
        let mut wanted: Vec<Taint> = existing
            .iter()
            .filter(|t| !is_managed(t))
            .cloned()
            .collect();
        for key in no_schedule_taint_keys(node) {
            wanted.push(
                existing
                    .iter()
                    .find(|t| t.key == key && t.effect == taints::NO_SCHEDULE)
                    .cloned()
                    .unwrap_or_else(|| Taint {
                        key: key.into(),
                        effect: taints::NO_SCHEDULE.into(),
                        ..Taint::default()
                    }),
            );
        }
        let no_execute = match node_ready_status(node) {
            _ if state.all_disrupted => None,
            Some("False") => Some((taints::NOT_READY, taints::UNREACHABLE)),
            Some("Unknown") => Some((taints::UNREACHABLE, taints::NOT_READY)),
            _ => None,
        };
        if let Some((key, other)) = no_execute {
            if let Some(present) = existing
                .iter()
                .find(|t| t.key == key && t.effect == taints::NO_EXECUTE)
            {
                wanted.push(present.clone());
            } else if has_taint(node, other, taints::NO_EXECUTE)
                || state
                    .zones
                    .get_mut(&zone_of(node))
                    .is_some_and(|(_, bucket)| bucket.try_take())
            {
                // A swap is immediate; a new NoExecute taint waits for the zone's limiter.
                let now = self.now();
                state
                    .taint_seen
                    .insert((name.clone(), key.to_string(), None), now);
                wanted.push(Taint {
                    key: key.into(),
                    effect: taints::NO_EXECUTE.into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
            }
        }
        let key_of = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
        let before: BTreeSet<_> = existing.iter().map(key_of).collect();
        let after: BTreeSet<_> = wanted.iter().map(key_of).collect();
        if before == after {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": wanted},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let added: Vec<String> = after
            .difference(&before)
            .map(|(k, e, _)| format!("{k}:{e}"))
            .collect();
        let removed: Vec<String> = before
            .difference(&after)
            .map(|(k, e, _)| format!("{k}:{e}"))
            .collect();
        tracing::info!(node = %name, ?added, ?removed, "node lifecycle: taints updated");
        Ok(())
    }
}
