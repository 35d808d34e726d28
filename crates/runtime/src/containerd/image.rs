//! Images: importing OCI archives (blobs into the content store, layers unpacked into the
//! snapshotter, an image record), resolving image records into manifests and configs, and
//! the image calls of [`ContainerRuntime`](crate::ContainerRuntime).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use prost_types::FieldMask;
use serde::Deserialize;

use super::spec::ImageConfig;
use super::{internal, is_not_found, map_status, new_id, ContainerdRuntime};
use crate::error::{Result, RuntimeError};
use crate::oci::{self, sha256_digest};
use crate::types::{normalize_image_ref, rfc3339_nanos, Image, ImageSpec};

impl ContainerdRuntime {
    async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .inner
            .client
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| map_status(s, "image", digest))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend(chunk.map_err(|s| map_status(s, "image", digest))?.data);
        }
        Ok(data)
    }

    async fn has_content(&self, digest: &str) -> Result<bool> {
        match self
            .inner
            .client
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(map_status(s, "image", digest)),
        }
    }

    /// Writes a blob into the content store (a no-op when it is there), with `labels`.
    async fn write_content(
        &self,
        lease: &str,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if self.has_content(digest).await? {
            if !labels.is_empty() {
                let mask = FieldMask {
                    paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
                };
                self.inner
                    .client
                    .content()
                    .update(self.request(api::UpdateRequest {
                        info: Some(api::Info {
                            digest: digest.into(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    }))
                    .await
                    .map_err(|s| map_status(s, "image", digest))?;
            }
            return Ok(());
        }
        const CHUNK: usize = 1 << 20;
        let total = data.len() as i64;
        let reference = format!("capstan-import-{digest}");
        let mut messages = Vec::new();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(CHUNK).collect()
        };
        let last = chunks.len() - 1;
        let mut offset = 0i64;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let commit = i == last;
            messages.push(api::WriteContentRequest {
                action: if commit {
                    api::WriteAction::Commit as i32
                } else {
                    api::WriteAction::Write as i32
                },
                r#ref: reference.clone(),
                total,
                expected: if commit { digest.into() } else { String::new() },
                offset,
                data: chunk.to_vec(),
                labels: if commit {
                    labels.clone()
                } else {
                    HashMap::new()
                },
            });
            offset += chunk.len() as i64;
        }
        let request = self.leased(futures::stream::iter(messages), lease)?;
        let mut responses = match self.inner.client.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(map_status(s, "image", digest)),
        };
        while let Some(response) = responses.next().await {
            match response {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(map_status(s, "image", digest)),
            }
        }
        Ok(())
    }

    /// Unpacks layers into the snapshotter; returns the top layer's chain id.
    async fn unpack(
        &self,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<String> {
        let snapshotter = self.inner.config.snapshotter.clone();
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain = if parent.is_empty() {
                diff_id.clone()
            } else {
                sha256_digest(format!("{parent} {diff_id}").as_bytes())
            };
            let exists = self
                .inner
                .client
                .snapshots()
                .stat(self.request(snap::StatSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: chain.clone(),
                }))
                .await;
            match exists {
                Ok(_) => {
                    parent = chain;
                    continue;
                }
                Err(s) if is_not_found(&s) => {}
                Err(s) => return Err(map_status(s, "image", &chain)),
            }
            let key = format!("capstan-extract-{}-{chain}", new_id()?);
            let mounts = self
                .inner
                .client
                .snapshots()
                .prepare(self.leased(
                    snap::PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await
                .map_err(|s| map_status(s, "image", &chain))?
                .into_inner()
                .mounts;
            let applied = self
                .inner
                .client
                .diff()
                .apply(self.leased(
                    api::ApplyRequest {
                        diff: Some(layer.clone()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                )?)
                .await;
            let applied = match applied {
                Ok(r) => r.into_inner().applied,
                Err(s) => {
                    let _ = self.remove_snapshot(&key).await;
                    return Err(map_status(s, "image", &layer.digest));
                }
            };
            if applied.as_ref().map(|d| d.digest.as_str()) != Some(diff_id.as_str()) {
                let _ = self.remove_snapshot(&key).await;
                return Err(RuntimeError::InvalidArgument(format!(
                    "layer {} unpacked to {}, but the config says {diff_id}",
                    layer.digest,
                    applied.map(|d| d.digest).unwrap_or_default()
                )));
            }
            let committed = self
                .inner
                .client
                .snapshots()
                .commit(self.leased(
                    snap::CommitSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await;
            match committed {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {
                    let _ = self.remove_snapshot(&key).await;
                }
                Err(s) => return Err(map_status(s, "image", &chain)),
            }
            parent = chain;
        }
        Ok(parent)
    }

    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<()> {
        match self
            .inner
            .client
            .snapshots()
            .remove(self.request(snap::RemoveSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(map_status(s, "container", key)),
        }
    }

    /// Imports one manifest of an archive: its blobs, GC labels, layers and image record.
    async fn import_manifest(
        &self,
        lease: &str,
        archive: &[u8],
        name: &str,
        manifest_digest: &str,
    ) -> Result<Image> {
        let blob = |digest: &str| -> Result<&[u8]> {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                RuntimeError::InvalidArgument(format!("unsupported digest {digest:?}"))
            })?;
            let data =
                oci::tar_file(archive, &format!("blobs/sha256/{hex}"))?.ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "blob {digest} is missing from the archive"
                    ))
                })?;
            if sha256_digest(data) != digest {
                return Err(RuntimeError::InvalidArgument(format!(
                    "blob {digest} does not match its digest"
                )));
            }
            Ok(data)
        };
        let manifest_bytes = blob(manifest_digest)?;
        let manifest: Manifest = serde_json::from_slice(manifest_bytes).map_err(|e| {
            RuntimeError::InvalidArgument(format!("manifest {manifest_digest}: {e}"))
        })?;
        if manifest.layers.is_empty() && manifest.config.digest.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "{manifest_digest} is not an image manifest (image indexes are not supported)"
            )));
        }
        let config_bytes = blob(&manifest.config.digest)?;
        let config: ImageConfigFile = serde_json::from_slice(config_bytes)
            .map_err(|e| RuntimeError::InvalidArgument(format!("image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "the config of {name} lists {} layers, its manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let mut size = config_bytes.len() as u64;
        for layer in &manifest.layers {
            let data = blob(&layer.digest)?;
            size += data.len() as u64;
            self.write_content(lease, &layer.digest, data, HashMap::new())
                .await?;
        }
        let layers: Vec<Descriptor> = manifest
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: HashMap::new(),
            })
            .collect();
        let chain = self.unpack(lease, &layers, &config.rootfs.diff_ids).await?;
        let mut config_labels = HashMap::new();
        if !chain.is_empty() {
            config_labels.insert(
                format!(
                    "containerd.io/gc.ref.snapshot.{}",
                    self.inner.config.snapshotter
                ),
                chain,
            );
        }
        self.write_content(lease, &manifest.config.digest, config_bytes, config_labels)
            .await?;
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        );
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.write_content(lease, manifest_digest, manifest_bytes, manifest_labels)
            .await?;
        let image = api::Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: if manifest.media_type.is_empty() {
                    oci::MANIFEST_MEDIA_TYPE.into()
                } else {
                    manifest.media_type.clone()
                },
                digest: manifest_digest.into(),
                size: manifest_bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let images = self.inner.client.images();
        let created = images
            .clone()
            .create(self.request(api::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .clone()
                    .update(self.request(api::UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(FieldMask {
                            paths: vec!["target".into()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| map_status(s, "image", name))?;
            }
            Err(s) => return Err(map_status(s, "image", name)),
        }
        Ok(Image {
            id: manifest.config.digest.clone(),
            repo_tags: vec![name.to_string()],
            repo_digests: vec![format!(
                "{}@{manifest_digest}",
                name.rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map(|(repo, _)| repo)
                    .unwrap_or(name)
            )],
            size,
            pinned: false,
        })
    }

    /// An image record's manifest and config; `None` when its content is gone.
    async fn resolve(&self, image: &api::Image) -> Result<Option<ResolvedImage>> {
        let Some(target) = &image.target else {
            return Ok(None);
        };
        let manifest_bytes = match self.read_content(&target.digest).await {
            Ok(b) => b,
            Err(RuntimeError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| internal("decoding a manifest", e))?;
        let config_bytes = match self.read_content(&manifest.config.digest).await {
            Ok(b) => b,
            Err(RuntimeError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| internal("decoding an image config", e))?;
        let mut chain = String::new();
        for diff_id in &config.rootfs.diff_ids {
            chain = if chain.is_empty() {
                diff_id.clone()
            } else {
                sha256_digest(format!("{chain} {diff_id}").as_bytes())
            };
        }
        let size = manifest
            .layers
            .iter()
            .map(|l| l.size.max(0) as u64)
            .sum::<u64>()
            + config_bytes.len() as u64;
        let name = image.name.clone();
        let repo = name
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map(|(repo, _)| repo.to_string())
            .unwrap_or_else(|| name.clone());
        Ok(Some(ResolvedImage {
            image: Image {
                id: manifest.config.digest.clone(),
                repo_tags: vec![name],
                repo_digests: vec![format!("{repo}@{}", target.digest)],
                size,
                pinned: false,
            },
            config: config.config,
            chain_id: chain,
        }))
    }

    /// Finds an image by reference or id (`sha256:...` of its config).
    pub(super) async fn find_image(&self, reference: &str) -> Result<Option<ResolvedImage>> {
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "empty image reference".into(),
            ));
        }
        let normalized = normalize_image_ref(reference);
        if !normalized.starts_with("sha256:") {
            let response = self
                .inner
                .client
                .images()
                .get(self.request(api::GetImageRequest {
                    name: normalized.clone(),
                }))
                .await;
            return match response {
                Ok(r) => match r.into_inner().image {
                    Some(image) => self.resolve(&image).await,
                    None => Ok(None),
                },
                Err(s) if is_not_found(&s) => Ok(None),
                Err(s) => Err(map_status(s, "image", reference)),
            };
        }
        let mut found: Option<ResolvedImage> = None;
        for image in self.all_image_records().await? {
            if let Some(resolved) = self.resolve(&image).await? {
                if resolved.image.id == normalized {
                    match &mut found {
                        Some(f) => f.image.repo_tags.extend(resolved.image.repo_tags),
                        None => found = Some(resolved),
                    }
                }
            }
        }
        Ok(found)
    }

    async fn all_image_records(&self) -> Result<Vec<api::Image>> {
        Ok(self
            .inner
            .client
            .images()
            .list(self.request(api::ListImagesRequest::default()))
            .await
            .map_err(|s| map_status(s, "image", ""))?
            .into_inner()
            .images)
    }

    pub(super) async fn with_lease<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let id = format!("capstan-{}", new_id()?);
        let mut labels = HashMap::new();
        // Should this process die mid-way, containerd drops the lease after a day.
        labels.insert("containerd.io/gc.expire".to_string(), {
            let expire = SystemTime::now() + Duration::from_secs(86_400);
            rfc3339_nanos(expire)
        });
        self.inner
            .client
            .leases()
            .create(self.request(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| map_status(s, "image", &id))?;
        let result = f(id.clone()).await;
        let _ = self
            .inner
            .client
            .leases()
            .delete(self.request(api::DeleteRequest { id, sync: false }))
            .await;
        result
    }
}

/// An image found on the node.
pub(super) struct ResolvedImage {
    pub(super) image: Image,
    /// What the image's config sets for its containers.
    pub(super) config: ImageConfig,
    /// The chain id of its top layer: the parent snapshot of its containers' root filesystems.
    pub(super) chain_id: String,
}

#[derive(Deserialize)]
struct ManifestDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: i64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default = "empty_descriptor")]
    config: ManifestDescriptor,
    #[serde(default)]
    layers: Vec<ManifestDescriptor>,
}

fn empty_descriptor() -> ManifestDescriptor {
    ManifestDescriptor {
        media_type: String::new(),
        digest: String::new(),
        size: 0,
    }
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: ImageConfig,
    #[serde(default)]
    rootfs: RootFs,
}

pub(super) async fn pull_image(runtime: &ContainerdRuntime, image: &ImageSpec) -> Result<String> {
    match runtime.find_image(&image.image).await? {
        Some(found) => Ok(found.image.id),
        None => Err(RuntimeError::ImagePullFailed {
            image: image.image.clone(),
            reason: format!(
                "{} is not on the node and this runtime fetches from no registry \
                 (import it with import_image)",
                normalize_image_ref(&image.image)
            ),
        }),
    }
}

pub(super) async fn image_status(
    runtime: &ContainerdRuntime,
    image: &ImageSpec,
) -> Result<Option<Image>> {
    Ok(runtime.find_image(&image.image).await?.map(|r| r.image))
}

pub(super) async fn list_images(runtime: &ContainerdRuntime) -> Result<Vec<Image>> {
    let mut by_id: BTreeMap<String, Image> = BTreeMap::new();
    for record in runtime.all_image_records().await? {
        if let Some(resolved) = runtime.resolve(&record).await? {
            match by_id.get_mut(&resolved.image.id) {
                Some(existing) => {
                    existing.repo_tags.extend(resolved.image.repo_tags);
                    existing.repo_digests.extend(resolved.image.repo_digests);
                }
                None => {
                    by_id.insert(resolved.image.id.clone(), resolved.image);
                }
            }
        }
    }
    Ok(by_id.into_values().collect())
}

pub(super) async fn remove_image(runtime: &ContainerdRuntime, image: &ImageSpec) -> Result<()> {
    let names: Vec<String> = match runtime.find_image(&image.image).await? {
        Some(found) => found.image.repo_tags,
        None => return Ok(()),
    };
    for name in names {
        match runtime
            .inner
            .client
            .images()
            .delete(runtime.request(api::DeleteImageRequest {
                name: name.clone(),
                sync: false,
                target: None,
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(map_status(s, "image", &name)),
        }
    }
    Ok(())
}

pub(super) async fn import_image(
    runtime: &ContainerdRuntime,
    archive: Bytes,
) -> Result<Vec<Image>> {
    let indexed = oci::read_index(&archive)?;
    if indexed.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "the archive's index.json names no image".into(),
        ));
    }
    runtime
        .with_lease(|lease| async move {
            let mut images = Vec::new();
            for entry in indexed {
                let name = normalize_image_ref(&entry.name);
                images.push(
                    runtime
                        .import_manifest(&lease, &archive, &name, &entry.digest)
                        .await?,
                );
            }
            Ok(images)
        })
        .await
}
