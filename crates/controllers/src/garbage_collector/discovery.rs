//! Custom resource discovery: the monitors of custom kinds, started and stopped while the
//! collector runs as `CustomResourceDefinition`s become established and are deleted.

use std::collections::BTreeMap;

use crate::util::custom_resources::{custom_resource_definitions, ServedCustomKinds};

use super::*;

impl Shared {
    /// Starts the monitor of `resource` (replacing a running one of the same kind) and makes
    /// owner references to its kind resolvable.
    pub(super) fn spawn_monitor(self: &Arc<Self>, resource: ResourceInfo) {
        let key = group_kind(&resource);
        self.retired.lock().remove(&key);
        self.kinds.write().insert(key.clone(), resource.clone());
        let task = tokio::spawn(monitor(self.client.clone(), resource, self.changes.clone()));
        if let Some(previous) = self.monitors.lock().insert(key, task) {
            previous.abort();
        }
    }

    /// Stops the monitor of `key`; a `retired` kind's objects leave the graph and references
    /// to it count as absent from now on.
    pub(super) fn stop_monitor(&self, key: &GroupKind, retired: bool) {
        if retired {
            // Before the kind stops resolving, so that no lookup finds it unknown meanwhile.
            self.retired.lock().insert(key.clone());
        }
        self.kinds.write().remove(key);
        if let Some(task) = self.monitors.lock().remove(key) {
            task.abort();
        }
        let _ = self
            .changes
            .send(GraphEvent::Stopped(SyncKey::Kind(key.clone())));
        if retired {
            let _ = self.changes.send(GraphEvent::KindRetired(key.clone()));
        }
    }

    /// Every running monitor, taken out to be stopped.
    pub(super) fn take_monitors(&self) -> Vec<JoinHandle<()>> {
        self.monitors.lock().drain().map(|(_, task)| task).collect()
    }
}

/// Follows `CustomResourceDefinition`s forever (list, then watch; relisting when a watch
/// ends, which also resyncs periodically), keeping one monitor per kind of every established
/// CRD. Kinds in `fixed_kinds` are monitored already and left alone. After the first list is
/// applied, sends [`SyncKey::CustomResourceDiscovery`] as synced.
pub(super) async fn discover_custom_kinds(shared: Arc<Shared>, fixed_kinds: HashSet<GroupKind>) {
    let resource = custom_resource_definitions();
    let mut discovery = CustomKinds {
        shared,
        fixed_kinds,
        definitions: BTreeMap::new(),
        monitored: HashMap::new(),
    };
    let mut backoff = Backoff::default();
    let mut first_list = true;
    loop {
        let list = match discovery
            .shared
            .client
            .list(&resource, None, &ListParams::default())
            .await
        {
            Ok(list) => list,
            Err(error) => {
                if first_list && error.is_not_found() {
                    // CRDs are not served here: nothing to wait for at startup.
                    first_list = false;
                    discovery.send_synced();
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    %error,
                    "garbage collector: listing CustomResourceDefinitions failed, retrying in \
                     {delay:?}"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        discovery.definitions = list
            .items
            .iter()
            .filter_map(|crd| {
                let name = crd.metadata.name.clone()?;
                Some((name, Definition::of(crd)))
            })
            .collect();
        discovery.reconcile();
        if first_list {
            first_list = false;
            discovery.send_synced();
        }
        let version = list.metadata.resource_version.unwrap_or_default();
        if let Err(error) = discovery.follow(&resource, &version).await {
            if !(error.is_gone() || matches!(error, Error::Expired { .. })) {
                let delay = backoff.next_delay();
                tracing::warn!(
                    %error,
                    "garbage collector: watching CustomResourceDefinitions failed, relisting in \
                     {delay:?}"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The discovery's memory: every CRD and what it serves, and the monitors started for them.
struct CustomKinds {
    shared: Arc<Shared>,
    fixed_kinds: HashSet<GroupKind>,
    /// CRD name → the kind it defines and what it serves.
    definitions: BTreeMap<String, Definition>,
    /// The custom kinds monitored now, through which version.
    monitored: HashMap<GroupKind, ResourceInfo>,
}

impl CustomKinds {
    fn send_synced(&self) {
        let _ = self
            .shared
            .changes
            .send(GraphEvent::Synced(SyncKey::CustomResourceDiscovery));
    }

    /// Applies CRD events from `version` until the watch ends (`Ok`) or fails.
    async fn follow(&mut self, resource: &ResourceInfo, version: &str) -> Result<(), Error> {
        let params = WatchParams {
            timeout: Some(WATCH_TIMEOUT_SECONDS),
            ..WatchParams::default()
        };
        let mut events = self
            .shared
            .client
            .watch(resource, None, &params, version)
            .await?;
        while let Some(event) = events.next().await {
            match event? {
                WatchEvent::Added(crd) | WatchEvent::Modified(crd) => {
                    let Some(name) = crd.metadata.name.clone() else {
                        continue;
                    };
                    self.definitions.insert(name, Definition::of(&crd));
                }
                WatchEvent::Deleted(crd) => {
                    let Some(name) = crd.metadata.name.as_deref() else {
                        continue;
                    };
                    self.definitions.remove(name);
                }
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(status) => return Err(Error::from_status(*status)),
            }
            self.reconcile();
        }
        Ok(())
    }

    /// Starts, restarts and stops monitors so that exactly the kinds the CRDs serve now are
    /// monitored, each through its preferred version. A kind no CRD names any more is
    /// retired; one whose CRD stopped serving it (not established, no served version) only
    /// loses its monitor.
    fn reconcile(&mut self) {
        let mut wanted: HashMap<GroupKind, ResourceInfo> = HashMap::new();
        let defined: HashSet<&GroupKind> = self
            .definitions
            .values()
            .filter_map(|d| d.kind.as_ref())
            .collect();
        // Sorted by CRD name, so of two CRDs naming one kind the same one always wins.
        for definition in self.definitions.values() {
            let Some(served) = &definition.served else {
                continue;
            };
            let key = group_kind(&served.preferred);
            if !self.fixed_kinds.contains(&key) {
                wanted
                    .entry(key)
                    .or_insert_with(|| served.preferred.clone());
            }
        }
        let stale: Vec<GroupKind> = self
            .monitored
            .iter()
            .filter(|(key, resource)| {
                wanted
                    .get(*key)
                    .is_none_or(|want| !same_version(want, resource))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.monitored.remove(&key);
            // A CRD still defining the kind (not serving it now) keeps its objects stored.
            let retired = !defined.contains(&key);
            tracing::info!(
                group = key.0.as_str(),
                kind = key.1.as_str(),
                retired,
                "garbage collector: stopping the monitor of a custom kind"
            );
            self.shared.stop_monitor(&key, retired);
        }
        for (key, resource) in wanted {
            if self.monitored.contains_key(&key) {
                continue;
            }
            tracing::info!(
                group = key.0.as_str(),
                kind = key.1.as_str(),
                version = resource.version(),
                "garbage collector: monitoring a custom kind"
            );
            let _ = self
                .shared
                .changes
                .send(GraphEvent::Awaiting(SyncKey::Kind(key.clone())));
            self.shared.spawn_monitor(resource.clone());
            self.monitored.insert(key, resource);
        }
    }
}

/// One CRD as the discovery keeps it.
struct Definition {
    /// The group and kind it defines (`spec.group`, `spec.names.kind`), served or not.
    kind: Option<GroupKind>,
    /// What it serves now: nothing until it is established.
    served: Option<ServedCustomKinds>,
}

impl Definition {
    fn of(crd: &DynamicObject) -> Self {
        let served = ServedCustomKinds::of(crd);
        let spec = &crd.data["spec"];
        let kind = match &served {
            Some(served) => Some(group_kind(&served.preferred)),
            None => match (spec["group"].as_str(), spec["names"]["kind"].as_str()) {
                (Some(group), Some(kind)) => Some((group.to_string(), kind.to_string())),
                _ => None,
            },
        };
        Definition { kind, served }
    }
}

fn same_version(a: &ResourceInfo, b: &ResourceInfo) -> bool {
    a.version() == b.version() && a.plural() == b.plural() && a.namespaced() == b.namespaced()
}
