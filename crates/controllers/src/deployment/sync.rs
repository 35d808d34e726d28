//! Syncing a Deployment: claiming its ReplicaSets, the writes every strategy shares, finding
//! or creating the new ReplicaSet (revisions, collisions), and scaling without a rollout
//! (proportional scaling, pause).

use super::*;
use capstan_api::ext::MetaExt;
use capstan_api::kube_core::ResourceExt;

impl DeploymentReconciler {
    // -----------------------------------------------------------------------------------
    // Claiming
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `ClaimReplicaSets`: keeps, adopts and releases; returns those now owned.
    pub(super) async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &Selector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let namespace = d.namespace_str();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        let mut first_error = None;
        for rs in self.replica_sets.by_index(NAMESPACE_INDEX, namespace) {
            let matches = selector::matches(selector, rs.metadata.labels.as_ref());
            match controller_ref(&rs.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        claimed.push((*rs).clone());
                        continue;
                    }
                    if deleting {
                        continue;
                    }
                    let remaining: Vec<_> = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    if let Err(error) = self.patch_owners(&rs, remaining).await {
                        first_error.get_or_insert(error);
                    }
                }
                Some(_) => {}
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let allowed = match can_adopt {
                        Some(answer) => answer,
                        None => {
                            let fresh =
                                self.deployment_api(d).get_opt(name_of(&d.metadata)).await?;
                            let answer = fresh.is_some_and(|f| {
                                f.metadata.uid.as_deref() == Some(uid)
                                    && f.metadata.deletion_timestamp.is_none()
                            });
                            can_adopt = Some(answer);
                            answer
                        }
                    };
                    if !allowed {
                        continue;
                    }
                    let mut owners = rs.metadata.owner_references.clone().unwrap_or_default();
                    owners.push(controller_reference(d));
                    match self.patch_owners(&rs, owners).await {
                        Ok(Some(adopted)) => claimed.push(adopted),
                        Ok(None) => {}
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(claimed),
        }
    }

    /// Sets a ReplicaSet's ownerReferences, guarded by its resourceVersion; `None` if gone.
    pub(super) async fn patch_owners(
        &self,
        rs: &ReplicaSet,
        owners: Vec<OwnerReference>,
    ) -> Result<Option<ReplicaSet>, Error> {
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": rs.metadata.resource_version,
        }});
        let api = self.rs_api(rs.namespace_str());
        match api
            .patch(
                name_of(&rs.metadata),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Kubernetes' `getPodMapForDeployment`: the Pods (terminating ones too) matching the
    /// selector, by the uid of the claimed ReplicaSet controlling them.
    pub(super) fn pod_map(
        &self,
        d: &Deployment,
        selector: &Selector,
        rs_list: &[ReplicaSet],
    ) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|uid| (uid, Vec::new()))
            .collect();
        let namespace = d.namespace_str();
        for pod in self.pods.by_index(NAMESPACE_INDEX, namespace) {
            if !selector::matches(selector, pod.metadata.labels.as_ref()) {
                continue;
            }
            let Some(owner) = controller_ref(&pod.metadata) else {
                continue;
            };
            if let Some(pods) = map.get_mut(&owner.uid) {
                pods.push(pod);
            }
        }
        map
    }

    // -----------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------

    /// Writes `d`'s status (and first its revision annotation, if `annotations_changed`),
    /// replacing `d` with what the API returned.
    pub(super) async fn persist(
        &self,
        d: &mut Deployment,
        annotations_changed: bool,
    ) -> Result<(), Error> {
        let api = self.deployment_api(d);
        if annotations_changed {
            let revision = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::REVISION))
                .cloned();
            let patch = serde_json::json!({"metadata": {
                "annotations": {annotations::REVISION: revision},
                "resourceVersion": d.metadata.resource_version,
            }});
            let patched = api
                .patch(
                    name_of(&d.metadata),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            d.metadata = patched.metadata;
        }
        let updated = api.update_status(&PostParams::default(), d).await?;
        *d = updated;
        Ok(())
    }

    /// Kubernetes' `scaleReplicaSet`: sets the size and the replica annotations (one update,
    /// guarded by the resourceVersion), recording `ScalingReplicaSet` when the size changed.
    /// Returns whether the size changed and the ReplicaSet as it now is.
    pub(super) async fn scale_replica_set(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        new_scale: i32,
        operation: &str,
    ) -> Result<(bool, ReplicaSet), Error> {
        let old_scale = rs_replicas(rs);
        let size_changed = old_scale != new_scale;
        let mut copy = rs.clone();
        let annotations_changed =
            set_replicas_annotations(&mut copy, replicas(d), replicas(d) + max_surge(d));
        if !size_changed && !annotations_changed {
            return Ok((false, copy));
        }
        copy.spec.or_default_mut().replicas = Some(new_scale);
        let updated = self
            .rs_api(rs.namespace_str())
            .update(&PostParams::default(), &copy)
            .await?;
        if size_changed {
            self.recorder.normal(
                d,
                reasons::SCALING_REPLICA_SET,
                format!(
                    "Scaled {operation} replica set {} from {old_scale} to {new_scale}",
                    name_of(&updated.metadata)
                ),
            );
        }
        Ok((size_changed, updated))
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`.
    pub(super) async fn scale_and_record(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        new_scale: i32,
    ) -> Result<(bool, ReplicaSet), Error> {
        let current = rs_replicas(rs);
        if current == new_scale {
            return Ok((false, rs.clone()));
        }
        let operation = if current < new_scale { "up" } else { "down" };
        self.scale_replica_set(d, rs, new_scale, operation).await
    }

    // -----------------------------------------------------------------------------------
    // The new ReplicaSet and revisions
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: finds (and with `create`, creates)
    /// the new ReplicaSet, syncing its revision and the Deployment's.
    pub(super) async fn split_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Split, Error> {
        let new_index = find_new_replica_set(d, rs_list);
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_index)
            .map(|(_, rs)| rs.clone())
            .collect();
        let new_revision = max_revision(&old) + 1;
        let deadline = progress_deadline(d).is_some();

        if let Some(index) = new_index {
            let mut copy = rs_list[index].clone();
            let annotations_changed =
                set_new_replica_set_annotations(d, &mut copy, new_revision, true);
            let min_ready = d.spec.opt().and_then(|s| s.min_ready_seconds);
            let rs_min_ready = copy.spec.opt().and_then(|s| s.min_ready_seconds);
            if annotations_changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
                copy.spec.or_default_mut().min_ready_seconds = min_ready;
                let updated = self
                    .rs_api(copy.namespace_str())
                    .update(&PostParams::default(), &copy)
                    .await?;
                rs_list[index] = updated.clone();
                return Ok(Split {
                    new_rs: Some(updated),
                    old,
                });
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::REVISION))
                .cloned()
                .unwrap_or_default();
            let annotation_changed = set_deployment_revision(d, &revision);
            let mut status_changed = false;
            let mut status = d.status.clone().unwrap_or_default();
            if deadline && get_condition(&status, "Progressing").is_none() {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reasons::FOUND_NEW_RS,
                        format!("Found new replica set \"{}\"", name_of(&copy.metadata)),
                        self.now(),
                    ),
                );
                d.status = Some(status);
                status_changed = true;
            }
            if annotation_changed || status_changed {
                self.persist(d, annotation_changed).await?;
            }
            return Ok(Split {
                new_rs: Some(copy),
                old,
            });
        }
        if !create {
            return Ok(Split { new_rs: None, old });
        }

        // Create the new ReplicaSet.
        let spec = d.spec.clone().into_opt().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::pod_template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let namespace = d.namespace().unwrap_or_default();
        let name = format!("{}-{hash}", name_of(&d.metadata));
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                owner_references: Some(vec![controller_reference(d)]),
                labels,
                ..ObjectMeta::default()
            },
            spec: compat::value(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain(Some(&new_rs)).collect();
        let new_replicas = new_rs_new_replicas(d, &all, &new_rs);
        if let Some(spec) = new_rs.spec.opt_mut() {
            spec.replicas = Some(new_replicas);
        }
        set_new_replica_set_annotations(d, &mut new_rs, new_revision, false);

        let mut already_exists = false;
        let created = match self
            .rs_api(&namespace)
            .create(&PostParams::default(), &new_rs)
            .await
        {
            Ok(created) => created,
            Err(error) if error.is_already_exists() => {
                let existing = match self
                    .replica_sets
                    .get(&ObjectKey::namespaced(&namespace, &name))
                {
                    Some(rs) => (*rs).clone(),
                    None => self.rs_api(&namespace).get(&name).await?,
                };
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .opt()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &spec.template));
                if ours && same {
                    already_exists = true;
                    existing
                } else {
                    // A hash collision: hash again with a higher count on the next sync.
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    d.status = Some(status);
                    if self.persist(d, false).await.is_ok() {
                        tracing::info!(deployment = %name_of(&d.metadata), "found a hash collision");
                    }
                    return Err(error);
                }
            }
            Err(error) => {
                let message = format!("Failed to create new replica set \"{name}\": {error}");
                if deadline {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            reasons::FAILED_RS_CREATE,
                            &message,
                            self.now(),
                        ),
                    );
                    d.status = Some(status);
                    let _ = self.persist(d, false).await;
                }
                self.recorder.warning(d, reasons::FAILED_RS_CREATE, message);
                return Err(error);
            }
        };
        if !already_exists && new_replicas > 0 {
            self.recorder.normal(
                d,
                reasons::SCALING_REPLICA_SET,
                format!("Scaled up replica set {name} from 0 to {new_replicas}"),
            );
        }
        let annotation_changed = set_deployment_revision(d, &new_revision.to_string());
        let mut status_changed = false;
        if !already_exists && deadline {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    reasons::NEW_RS_CREATED,
                    format!("Created new replica set \"{name}\""),
                    self.now(),
                ),
            );
            d.status = Some(status);
            status_changed = true;
        }
        if annotation_changed || status_changed {
            self.persist(d, annotation_changed).await?;
        }
        rs_list.push(created.clone());
        Ok(Split {
            new_rs: Some(created),
            old,
        })
    }

    // -----------------------------------------------------------------------------------
    // Scaling (sync), pause
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet sized for another `spec.replicas`.
    pub(super) async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool, Error> {
        let split = self.split_and_sync_revision(d, rs_list, false).await?;
        let desired = replicas(d);
        Ok(split
            .all()
            .into_iter()
            .filter(|rs| is_active(rs))
            .any(|rs| {
                util::int_annotation(rs, annotations::DESIRED_REPLICAS)
                    .is_some_and(|n| n != desired)
            }))
    }

    /// Kubernetes' `scale`: resizes without rolling out.
    pub(super) async fn scale(&self, d: &Deployment, split: &mut Split) -> Result<(), Error> {
        let desired = replicas(d);
        if let Some(target) = find_active_or_latest(split.new_rs.as_ref(), &split.old) {
            if rs_replicas(&target) == desired {
                return Ok(());
            }
            let (_, updated) = self.scale_and_record(d, &target, desired).await?;
            replace(split, updated);
            return Ok(());
        }
        if is_saturated(d, split.new_rs.as_ref()) {
            for rs in split.old.clone().iter().filter(|rs| is_active(rs)) {
                let (_, updated) = self.scale_and_record(d, rs, 0).await?;
                replace(split, updated);
            }
            return Ok(());
        }
        if is_rolling_update(d) {
            let active: Vec<ReplicaSet> = split
                .all()
                .into_iter()
                .filter(|rs| is_active(rs))
                .cloned()
                .collect();
            let to_add = if desired > 0 {
                desired + max_surge(d)
            } else {
                0
            } - util::replica_count(&active);
            let operation = match to_add {
                n if n > 0 => "up",
                n if n < 0 => "down",
                _ => "",
            };
            let sizes = util::proportional_sizes(d, &active);
            for (name, size) in sizes {
                let Some(rs) = active.iter().find(|rs| name_of(&rs.metadata) == name) else {
                    continue;
                };
                let (_, updated) = self.scale_replica_set(d, rs, size, operation).await?;
                replace(split, updated);
            }
        }
        Ok(())
    }

    /// Kubernetes' `sync`: scaling and, while paused, cleanup, then the status.
    pub(super) async fn sync(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut split = self.split_and_sync_revision(d, rs_list, false).await?;
        self.scale(d, &mut split).await?;
        if is_paused(d) {
            self.cleanup(d, &split.old).await?;
        }
        let status = calculate_status(&split.all(), split.new_rs.as_ref(), d, self.now());
        if d.status.as_ref() != Some(&status) {
            d.status = Some(status);
            self.persist(d, false).await?;
        }
        Ok(Action::await_change())
    }

    /// Kubernetes' `checkPausedConditions`.
    pub(super) async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), Error> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let reason = get_condition(&status, "Progressing").and_then(|c| c.reason.clone());
        let paused = is_paused(d);
        let condition = if paused && reason.as_deref() != Some(reasons::PAUSED) {
            new_condition(
                "Progressing",
                "Unknown",
                reasons::PAUSED,
                "Deployment is paused",
                self.now(),
            )
        } else if !paused && reason.as_deref() == Some(reasons::PAUSED) {
            new_condition(
                "Progressing",
                "Unknown",
                reasons::RESUMED,
                "Deployment is resumed",
                self.now(),
            )
        } else {
            return Ok(());
        };
        set_condition(&mut status, condition);
        d.status = Some(status);
        self.persist(d, false).await
    }
}
