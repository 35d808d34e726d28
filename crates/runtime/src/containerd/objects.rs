//! Thin wrappers over containerd's container and task services: fetching, listing and
//! labelling the objects of one kind, and getting, signalling and waiting for tasks.

use std::collections::HashMap;
use std::time::SystemTime;

use containerd_client::services::v1 as api;
use containerd_client::tonic::Code;
use prost_types::FieldMask;

use super::{is_not_found, map_status, to_time, ContainerdRuntime, LABEL_KIND, SIGKILL};
use crate::error::Result;

impl ContainerdRuntime {
    pub(super) async fn get_object(
        &self,
        id: &str,
        kind: &'static str,
    ) -> Result<Option<api::Container>> {
        if id.is_empty() {
            return Ok(None);
        }
        let response = self
            .inner
            .client
            .containers()
            .get(self.request(api::GetContainerRequest { id: id.into() }))
            .await;
        match response {
            Ok(r) => Ok(r
                .into_inner()
                .container
                .filter(|c| c.labels.get(LABEL_KIND).map(String::as_str) == Some(kind))),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, kind, id)),
        }
    }

    pub(super) async fn list_objects(&self, kind: &str) -> Result<Vec<api::Container>> {
        let response = self
            .inner
            .client
            .containers()
            .list(self.request(api::ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_KIND}\"=={kind}")],
            }))
            .await
            .map_err(|s| map_status(s, "container", ""))?;
        let mut objects = response.into_inner().containers;
        objects.sort_by_key(|c| {
            c.created_at
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default()
        });
        Ok(objects)
    }

    pub(super) async fn set_labels(&self, id: &str, labels: &[(&str, String)]) -> Result<()> {
        let container = api::Container {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        let mask = FieldMask {
            paths: labels.iter().map(|(k, _)| format!("labels.{k}")).collect(),
        };
        self.inner
            .client
            .containers()
            .update(self.request(api::UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(mask),
            }))
            .await
            .map_err(|s| map_status(s, "container", id))?;
        Ok(())
    }

    pub(super) async fn get_task(
        &self,
        id: &str,
    ) -> Result<Option<containerd_client::types::v1::Process>> {
        match self
            .inner
            .client
            .tasks()
            .get(self.request(api::GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    pub(super) async fn list_tasks(
        &self,
    ) -> Result<HashMap<String, containerd_client::types::v1::Process>> {
        let response = self
            .inner
            .client
            .tasks()
            .list(self.request(api::ListTasksRequest::default()))
            .await
            .map_err(|s| map_status(s, "container", ""))?;
        Ok(response
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect())
    }

    pub(super) async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        match self
            .inner
            .client
            .tasks()
            .kill(self.request(api::KillRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                signal,
                all: exec_id.is_empty() && signal == SIGKILL,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Gone or already stopped: nothing to signal.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    /// Waits for a task (or exec process) to exit; `None` if it is gone.
    pub(super) async fn wait(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<Option<(u32, Option<SystemTime>)>> {
        match self
            .inner
            .client
            .tasks()
            .wait(self.request(api::WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some((r.exit_status, to_time(r.exited_at.as_ref()))))
            }
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }
}
