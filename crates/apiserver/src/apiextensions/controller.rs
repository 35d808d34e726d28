//! The controller that serves CustomResourceDefinitions, as kube-apiserver's apiextensions
//! server does with its naming, establishing and finalizing controllers.
//!
//! It lists the CRDs through the registry's [`Client`] and then watches them, so CRDs already
//! in the store are served again after a restart and a new one is served within milliseconds
//! of its create. For each CRD it:
//!
//! - adds the `customresourcecleanup.apiextensions.k8s.io` finalizer;
//! - checks its names against the other CRDs of its group (`NamesAccepted`, with reasons
//!   `PluralConflict`, `SingularConflict`, `ShortNamesConflict`, `KindConflict`,
//!   `ListKindConflict`), registers each served version in the registry, drops versions no
//!   longer served, and reports `Established`, `status.acceptedNames` and
//!   `status.storedVersions`;
//! - once the CRD is being deleted: reports `Terminating`, deletes every instance, stops serving
//!   its versions and removes the finalizer (retrying every second while instances wait on
//!   finalizers of their own).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use capstan_api::{
    kube_core::{
        params::{DeleteParams, ListParams, PostParams, WatchParams},
        DynamicObject, WatchEvent,
    },
    Client, Error, ResourceInfo,
};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::definition::{Definition, Names, CLEANUP_FINALIZER};
use crate::registry::Registry;

/// How long to wait before retrying a CRD whose reconcile failed or waits on instances.
const RETRY: Duration = Duration::from_secs(1);

/// The running controller of one registry; see [`serve_custom_resources`](super::serve_custom_resources).
///
/// Cheap to clone; the controller stops when the last clone is dropped.
#[derive(Clone)]
pub struct CustomResourceController {
    running: Arc<Running>,
}

impl std::fmt::Debug for CustomResourceController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomResourceController")
            .field("synced", &*self.running.synced.borrow())
            .finish()
    }
}

struct Running {
    registry: Weak<Registry>,
    task: tokio::task::JoinHandle<()>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The controllers running now, one per registry at most.
static RUNNING: Mutex<Vec<Weak<Running>>> = Mutex::new(Vec::new());

impl CustomResourceController {
    /// Starts the controller of `registry` on the current tokio runtime, or returns the one
    /// already running for it.
    pub(super) fn start(registry: Arc<Registry>) -> Self {
        let mut running = RUNNING.lock();
        running.retain(|r| r.strong_count() > 0);
        let existing = running.iter().filter_map(Weak::upgrade).find(|r| {
            r.registry
                .upgrade()
                .is_some_and(|served| Arc::ptr_eq(&served, &registry))
        });
        if let Some(running) = existing {
            return CustomResourceController { running };
        }
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let weak = Arc::downgrade(&registry);
        let task = tokio::spawn(run(registry, synced_tx));
        let started = Arc::new(Running {
            registry: weak,
            task,
            synced,
        });
        running.push(Arc::downgrade(&started));
        CustomResourceController { running: started }
    }

    /// Waits until every CRD stored when the controller started has been reconciled once
    /// (served, or refused for a name conflict).
    pub async fn synced(&self) {
        let mut synced = self.running.synced.clone();
        let _ = synced.wait_for(|done| *done).await;
    }
}

fn crd_resource() -> ResourceInfo {
    ResourceInfo::builtin("apiextensions.k8s.io", "CustomResourceDefinition")
        .expect("CustomResourceDefinition is a built-in kind")
}

fn to_json(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

fn from_json(value: Value) -> Result<DynamicObject, Error> {
    serde_json::from_value(value).map_err(|e| Error::internal(e.to_string()))
}

/// The controller's memory: the latest version of every CRD, and what it serves for each.
struct Controller {
    registry: Arc<Registry>,
    crds: HashMap<String, Value>,
    /// CRD name → the kinds registered for it and the inputs they were built from.
    served: HashMap<String, (Vec<ResourceInfo>, Value)>,
    /// CRDs to reconcile again at the next retry tick.
    retry: HashSet<String>,
}

async fn run(registry: Arc<Registry>, synced: tokio::sync::watch::Sender<bool>) {
    let mut controller = Controller {
        registry,
        crds: HashMap::new(),
        served: HashMap::new(),
        retry: HashSet::new(),
    };
    let resource = crd_resource();
    loop {
        let list = match controller
            .registry
            .list(&resource, None, &ListParams::default())
            .await
        {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!("listing CustomResourceDefinitions: {error}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let listed: HashMap<String, Value> = list
            .items
            .iter()
            .map(|crd| (crd.metadata.name.clone().unwrap_or_default(), to_json(crd)))
            .collect();
        let gone: Vec<String> = controller
            .crds
            .keys()
            .filter(|name| !listed.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            controller.forget(&name);
        }
        controller.crds = listed;
        let mut names: Vec<String> = controller.crds.keys().cloned().collect();
        names.sort();
        for name in names {
            controller.reconcile(&name).await;
        }
        synced.send_replace(true);
        let version = list.metadata.resource_version.unwrap_or_default();
        controller.watch(&resource, &version).await;
    }
}

impl Controller {
    /// Follows CRD changes from `version` until the watch ends.
    async fn watch(&mut self, resource: &ResourceInfo, version: &str) {
        let mut events = match self
            .registry
            .watch(resource, None, &WatchParams::default(), version)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::debug!("watching CustomResourceDefinitions: {error}");
                return;
            }
        };
        let mut ticker = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(WatchEvent::Added(crd) | WatchEvent::Modified(crd))) => {
                        let name = crd.metadata.name.clone().unwrap_or_default();
                        self.crds.insert(name.clone(), to_json(&crd));
                        self.reconcile(&name).await;
                        self.reconcile_group_of(&name).await;
                    }
                    Some(Ok(WatchEvent::Deleted(crd))) => {
                        let name = crd.metadata.name.clone().unwrap_or_default();
                        self.forget(&name);
                        let group = crd_group(&to_json(&crd));
                        self.reconcile_group(&group, &name).await;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::debug!("CustomResourceDefinition watch ended: {error}");
                        return;
                    }
                    None => return,
                },
                _ = ticker.tick() => {
                    let due: Vec<String> = self.retry.drain().collect();
                    for name in due {
                        self.reconcile(&name).await;
                    }
                }
            }
        }
    }

    /// A CRD is gone: stop serving it.
    fn forget(&mut self, name: &str) {
        self.crds.remove(name);
        self.retry.remove(name);
        if let Some((kinds, _)) = self.served.remove(name) {
            for kind in kinds {
                self.registry.unregister(&kind);
            }
        }
    }

    /// Reconciles the other CRDs of `name`'s group whose names are not accepted yet: a
    /// change may have freed the names they want.
    async fn reconcile_group_of(&mut self, name: &str) {
        let group = self.crds.get(name).map(crd_group).unwrap_or_default();
        self.reconcile_group(&group, name).await;
    }

    async fn reconcile_group(&mut self, group: &str, except: &str) {
        let waiting: Vec<String> = self
            .crds
            .iter()
            .filter(|(other, crd)| {
                *other != except && crd_group(crd) == group && !condition_true(crd, "NamesAccepted")
            })
            .map(|(other, _)| other.clone())
            .collect();
        for other in waiting {
            self.reconcile(&other).await;
        }
    }

    async fn reconcile(&mut self, name: &str) {
        let Some(crd) = self.crds.get(name).cloned() else {
            return;
        };
        let outcome = if crd["metadata"]["deletionTimestamp"].is_string() {
            self.finalize(name, crd).await
        } else {
            self.serve(name, crd).await
        };
        match outcome {
            Ok(Some(latest)) => {
                self.crds.insert(name.to_string(), latest);
            }
            Ok(None) => {}
            // A newer version is on its way through the watch.
            Err(Error::Conflict { .. }) => {}
            Err(Error::NotFound { .. }) => {}
            Err(error) => {
                tracing::warn!("serving CustomResourceDefinition {name}: {error}");
                self.retry.insert(name.to_string());
            }
        }
    }

    /// Serves a live CRD: finalizer, names, registration, status. Returns the CRD as written.
    async fn serve(&mut self, name: &str, mut crd: Value) -> Result<Option<Value>, Error> {
        let resource = crd_resource();
        if !has_finalizer(&crd) {
            let mut updated = crd.clone();
            let finalizers = updated["metadata"]
                .as_object_mut()
                .map(|m| m.entry("finalizers").or_insert_with(|| json!([])))
                .and_then(Value::as_array_mut);
            if let Some(finalizers) = finalizers {
                finalizers.push(CLEANUP_FINALIZER.into());
            }
            let written = self
                .registry
                .update(&resource, None, from_json(updated)?, &PostParams::default())
                .await?;
            crd = to_json(&written);
        }
        let definition = Definition::from_json(&crd);
        let requested = definition.names.clone();
        let previously_accepted = Names::from_json(&crd["status"]["acceptedNames"]);
        let conflict = self.name_conflict(name, &definition);
        let accepted = match (&conflict, previously_accepted.plural.is_empty()) {
            (None, _) => Some(requested.clone()),
            (Some(_), false) => Some(previously_accepted.clone()),
            (Some(_), true) => None,
        };
        let mut status = crd["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        let mut established_problem = None;
        if let Some(names) = &accepted {
            if let Err(problem) = self.register(name, &definition, names, &crd) {
                established_problem = Some(problem);
            }
            status["acceptedNames"] = names.to_json();
        }
        let names_condition = match &conflict {
            None => condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
            Some((reason, message)) => condition("NamesAccepted", false, reason, message),
        };
        let established = match (&accepted, &established_problem) {
            (Some(_), None) => condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
            (_, Some(problem)) => condition("Established", false, "Invalid", problem),
            (None, None) => condition(
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
            ),
        };
        set_condition(&mut status, names_condition);
        set_condition(&mut status, established);
        if let Some(storage) = definition.storage_version() {
            let stored = status["storedVersions"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut stored: Vec<Value> = stored;
            if !stored.iter().any(|v| v.as_str() == Some(&storage.name)) {
                stored.push(storage.name.clone().into());
            }
            status["storedVersions"] = Value::Array(stored);
        }
        if status == crd["status"] {
            return Ok(Some(crd));
        }
        let mut updated = crd.clone();
        updated["status"] = status;
        let written = self
            .registry
            .update_status(&resource, None, from_json(updated)?, &PostParams::default())
            .await?;
        Ok(Some(to_json(&written)))
    }

    /// Registers every served version of `definition` under `names` (unless already served
    /// from the same inputs) and unregisters the versions it no longer serves.
    ///
    /// Errors: the CRD's rules do not compile.
    fn register(
        &mut self,
        name: &str,
        definition: &Definition,
        names: &Names,
        crd: &Value,
    ) -> Result<(), String> {
        let inputs = json!({ "spec": crd["spec"], "names": names.to_json() });
        if self
            .served
            .get(name)
            .is_some_and(|(_, served_from)| *served_from == inputs)
        {
            return Ok(());
        }
        let kinds = definition.served_kinds(names)?;
        let infos: Vec<ResourceInfo> = kinds.iter().map(|(info, _)| info.clone()).collect();
        if let Some((previous, _)) = self.served.remove(name) {
            for old in previous {
                if !infos.iter().any(|info| same_kind(info, &old)) {
                    self.registry.unregister(&old);
                }
            }
        }
        for (info, strategy) in kinds {
            self.registry.register_custom(info, strategy);
        }
        super::publish_schemas(definition, names);
        self.served.insert(name.to_string(), (infos, inputs));
        Ok(())
    }

    /// The first name `name`'s CRD asks for that another CRD of its group holds, as
    /// kube-apiserver's naming controller reports it: `(reason, message)`.
    fn name_conflict(&self, name: &str, definition: &Definition) -> Option<(String, String)> {
        let requested = &definition.names;
        for (other_name, other) in &self.crds {
            if other_name == name || crd_group(other) != definition.group {
                continue;
            }
            let held = Names::from_json(&other["status"]["acceptedNames"]);
            if held.plural.is_empty() {
                continue;
            }
            let in_use = |value: &str| format!("{value:?} is already in use");
            if held.plural == requested.plural {
                return Some(("PluralConflict".into(), in_use(&requested.plural)));
            }
            if held.singular == requested.singular {
                return Some(("SingularConflict".into(), in_use(&requested.singular)));
            }
            for short in &requested.short_names {
                if held.short_names.contains(short) {
                    return Some(("ShortNamesConflict".into(), in_use(short)));
                }
            }
            if held.kind == requested.kind {
                return Some(("KindConflict".into(), in_use(&requested.kind)));
            }
            if held.list_kind == requested.list_kind {
                return Some(("ListKindConflict".into(), in_use(&requested.list_kind)));
            }
        }
        None
    }

    /// A CRD being deleted: `Terminating`, its instances deleted, its versions unserved, the
    /// finalizer removed.
    async fn finalize(&mut self, name: &str, crd: Value) -> Result<Option<Value>, Error> {
        let resource = crd_resource();
        if !has_finalizer(&crd) {
            return Ok(None);
        }
        let definition = Definition::from_json(&crd);
        let mut crd = crd;
        let mut status = crd["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        set_condition(
            &mut status,
            condition(
                "Terminating",
                true,
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            ),
        );
        if status != crd["status"] {
            let mut updated = crd.clone();
            updated["status"] = status;
            let written = self
                .registry
                .update_status(&resource, None, from_json(updated)?, &PostParams::default())
                .await?;
            crd = to_json(&written);
        }
        let storage = self.served.get(name).and_then(|(kinds, _)| {
            let version = definition.storage_version()?.name.clone();
            kinds.iter().find(|k| k.version() == version).cloned()
        });
        if let Some(storage) = storage {
            self.registry
                .delete_collection(
                    &storage,
                    None,
                    &DeleteParams::default(),
                    &ListParams::default(),
                )
                .await?;
            let left = self
                .registry
                .list(&storage, None, &ListParams::default().limit(1))
                .await?;
            if !left.items.is_empty() {
                self.retry.insert(name.to_string());
                let mut status = crd["status"].clone();
                set_condition(
                    &mut status,
                    condition(
                        "Terminating",
                        true,
                        "InstanceDeletionCheck",
                        "could not confirm zero CustomResources remaining: waiting for finalizers of the remaining instances",
                    ),
                );
                if status != crd["status"] {
                    let mut updated = crd.clone();
                    updated["status"] = status;
                    let written = self
                        .registry
                        .update_status(&resource, None, from_json(updated)?, &PostParams::default())
                        .await?;
                    return Ok(Some(to_json(&written)));
                }
                return Ok(Some(crd));
            }
        }
        if let Some((kinds, _)) = self.served.remove(name) {
            for kind in kinds {
                self.registry.unregister(&kind);
            }
        }
        let mut updated = crd.clone();
        if let Some(finalizers) = updated["metadata"]["finalizers"].as_array_mut() {
            finalizers.retain(|f| f.as_str() != Some(CLEANUP_FINALIZER));
        }
        let written = self
            .registry
            .update(&resource, None, from_json(updated)?, &PostParams::default())
            .await?;
        Ok(Some(to_json(&written)))
    }
}

/// Now, as Kubernetes writes times: RFC 3339 in whole seconds.
fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    capstan_api::k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn same_kind(a: &ResourceInfo, b: &ResourceInfo) -> bool {
    a.group() == b.group() && a.version() == b.version() && a.plural() == b.plural()
}

fn crd_group(crd: &Value) -> String {
    crd["spec"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn has_finalizer(crd: &Value) -> bool {
    crd["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f.as_str() == Some(CLEANUP_FINALIZER)))
}

fn condition_true(crd: &Value, kind: &str) -> bool {
    crd["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

/// Sets `new` among `status.conditions`, keeping the previous `lastTransitionTime` when the
/// condition's status did not change.
fn set_condition(status: &mut Value, mut new: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conditions = status["conditions"].as_array_mut().expect("an array");
    let existing = conditions.iter_mut().find(|c| c["type"] == new["type"]);
    match existing {
        Some(existing) => {
            let time = if existing["status"] == new["status"] {
                existing["lastTransitionTime"].clone()
            } else {
                Value::Null
            };
            new["lastTransitionTime"] = if time.is_string() { time } else { now().into() };
            *existing = new;
        }
        None => {
            new["lastTransitionTime"] = now().into();
            conditions.push(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut status = json!({"conditions": [{
            "type": "Established", "status": "True", "reason": "InitialNamesAccepted",
            "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z",
        }]});
        set_condition(
            &mut status,
            condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        );
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        set_condition(
            &mut status,
            condition("Established", false, "NotAccepted", "x"),
        );
        assert_ne!(
            status["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        set_condition(
            &mut status,
            condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
        );
        assert_eq!(status["conditions"].as_array().unwrap().len(), 2);
    }
}
