//! Finding what a request names: the Pod in the kubelet's own view (its informer's cache of
//! the Pods bound to the node), and its containers in the runtime by the labels the pod
//! workers put on them.

use std::sync::{Arc, OnceLock};

use capstan_api::k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use capstan_runtime::{self as rt, ContainerRuntime};
use capstan_watch::{Cache, ObjectKey};

use crate::pod_worker::{CONTAINER_NAME_LABEL, POD_UID_LABEL};

/// The Pods bound to this node as the kubelet sees them: its informer's cache, set once the
/// kubelet's main loop has started it (empty until then).
#[derive(Debug, Default)]
pub(crate) struct PodView {
    cache: OnceLock<Cache<Pod>>,
}

impl PodView {
    /// Points the view at the kubelet's informer cache (first call wins).
    pub(crate) fn set(&self, cache: Cache<Pod>) {
        let _ = self.cache.set(cache);
    }

    /// Every Pod, sorted by namespace and name.
    pub(crate) fn list(&self) -> Vec<Arc<Pod>> {
        let mut pods = self.cache.get().map(Cache::list).unwrap_or_default();
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        pods
    }

    /// The Pod `namespace/name`.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.cache
            .get()?
            .get(&ObjectKey::namespaced(namespace, name))
    }
}

/// Whether the Pod's spec has a container, init container or ephemeral container `name`.
pub(crate) fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
}

/// The status of container `name` among the app, init and ephemeral containers' statuses.
fn container_status<'a>(status: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|s| s.name == name)
}

/// The runtime's id in a status's `containerID` (`containerd://<id>` → `<id>`).
pub(crate) fn runtime_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// Which container's log to read, decided from the Pod's status as the kubelet's
/// `validateContainerLogStatus` decides it. `Ok(None)`: the status does not list the
/// container yet (the caller then looks in the runtime); `Err`: the kubelet's text.
pub(crate) fn log_container_id(
    pod_name: &str,
    status: Option<&PodStatus>,
    container: &str,
    previous: bool,
) -> Result<Option<String>, String> {
    let Some(found) = status.and_then(|s| container_status(s, container)) else {
        return Ok(None);
    };
    let id = |id: &Option<String>| id.as_deref().filter(|i| !i.is_empty()).map(str::to_string);
    let last = found
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let state = found.state.clone().unwrap_or_default();
    let terminated_text = || format!("container {container:?} in pod {pod_name:?} is terminated");
    if previous {
        return match last.and_then(|t| id(&t.container_id)) {
            Some(id) => Ok(Some(id)),
            None => Err(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            )),
        };
    }
    if state.running.is_some() {
        return Ok(id(&found.container_id));
    }
    if let Some(terminated) = &state.terminated {
        return match id(&terminated.container_id).or_else(|| last.and_then(|t| id(&t.container_id)))
        {
            Some(id) => Ok(Some(id)),
            None => Err(terminated_text()),
        };
    }
    if let Some(last) = last {
        return id(&last.container_id).map(Some).ok_or_else(terminated_text);
    }
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let why = match reason.as_str() {
            "ErrImagePull" => "image can't be pulled".to_string(),
            "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            _ => reason,
        };
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        ));
    }
    Err(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
    ))
}

/// The attempts of container `name` of the Pod with `uid` in the runtime, newest first.
pub(crate) async fn attempts(
    runtime: &dyn ContainerRuntime,
    uid: &str,
    name: &str,
) -> rt::Result<Vec<rt::Container>> {
    let mut found = runtime
        .list_containers(
            rt::ContainerFilter::all()
                .label(POD_UID_LABEL, uid)
                .label(CONTAINER_NAME_LABEL, name),
        )
        .await?;
    found.sort_by(|a, b| {
        (b.metadata.attempt, b.created_at).cmp(&(a.metadata.attempt, a.created_at))
    });
    Ok(found)
}

/// The newest ready sandbox of the Pod with `uid`.
pub(crate) async fn ready_sandbox(
    runtime: &dyn ContainerRuntime,
    uid: &str,
) -> rt::Result<Option<rt::PodSandbox>> {
    let sandboxes = runtime
        .list_pod_sandboxes(
            rt::PodSandboxFilter::all()
                .label(POD_UID_LABEL, uid)
                .state(rt::PodSandboxState::Ready),
        )
        .await?;
    Ok(sandboxes
        .into_iter()
        .max_by_key(|s| (s.metadata.attempt, s.created_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(containers: serde_json::Value) -> PodStatus {
        serde_json::from_value(serde_json::json!({ "containerStatuses": containers })).unwrap()
    }

    fn one(state: serde_json::Value, last: serde_json::Value) -> PodStatus {
        status(serde_json::json!([{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "containerID": "fake://cur", "state": state, "lastState": last,
        }]))
    }

    #[test]
    fn the_log_container_follows_the_kubelets_rules() {
        let running = one(
            serde_json::json!({"running": {}}),
            serde_json::json!({"terminated": {"exitCode": 1, "containerID": "fake://old"}}),
        );
        assert_eq!(
            log_container_id("p", Some(&running), "c", false),
            Ok(Some("fake://cur".into()))
        );
        assert_eq!(
            log_container_id("p", Some(&running), "c", true),
            Ok(Some("fake://old".into()))
        );
        let fresh = one(serde_json::json!({"running": {}}), serde_json::json!({}));
        assert_eq!(
            log_container_id("p", Some(&fresh), "c", true),
            Err(r#"previous terminated container "c" in pod "p" not found"#.into())
        );
        let backoff = one(
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            serde_json::json!({"terminated": {"exitCode": 1, "containerID": "fake://old"}}),
        );
        assert_eq!(
            log_container_id("p", Some(&backoff), "c", false),
            Ok(Some("fake://old".into()))
        );
        for (reason, text) in [
            ("ContainerCreating", "ContainerCreating"),
            ("ErrImagePull", "image can't be pulled"),
            ("ImagePullBackOff", "trying and failing to pull image"),
        ] {
            let waiting = one(
                serde_json::json!({"waiting": {"reason": reason}}),
                serde_json::json!({}),
            );
            assert_eq!(
                log_container_id("p", Some(&waiting), "c", false),
                Err(format!(
                    r#"container "c" in pod "p" is waiting to start: {text}"#
                ))
            );
        }
        let unknown = one(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(
            log_container_id("p", Some(&unknown), "c", false),
            Err(r#"container "c" in pod "p" is waiting to start - no logs yet"#.into())
        );
        let gone = one(
            serde_json::json!({"terminated": {"exitCode": 0}}),
            serde_json::json!({}),
        );
        assert_eq!(
            log_container_id("p", Some(&gone), "c", false),
            Err(r#"container "c" in pod "p" is terminated"#.into())
        );
        assert_eq!(
            log_container_id("p", Some(&running), "other", false),
            Ok(None)
        );
        assert_eq!(log_container_id("p", None, "c", false), Ok(None));
    }

    #[test]
    fn containers_are_found_among_app_init_and_ephemeral_ones() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debugger"}],
            },
            "status": {"ephemeralContainerStatuses": [{
                "name": "debugger", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0, "containerID": "fake://dbg", "state": {"running": {}},
            }]},
        }))
        .unwrap();
        for name in ["app", "init", "debugger"] {
            assert!(has_container(&pod, name), "{name}");
        }
        assert!(!has_container(&pod, "other"));
        assert_eq!(
            log_container_id("p", pod.status.as_ref(), "debugger", false),
            Ok(Some("fake://dbg".into()))
        );
    }

    #[test]
    fn runtime_ids_lose_their_scheme() {
        assert_eq!(runtime_id("containerd://abc"), "abc");
        assert_eq!(runtime_id("abc"), "abc");
    }
}
