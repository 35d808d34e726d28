//! The monitors: one list and watch per monitored kind, over dynamic objects (metadata only),
//! feeding the graph builder; a watch that ends or expires is listed again.

use super::*;

// ---------------------------------------------------------------------------------------------
// monitors

/// Lists and watches one kind forever, sending graph events; the first complete list is
/// followed by [`GraphEvent::Synced`] with the kind's key.
pub(super) async fn monitor(
    client: Arc<dyn Client>,
    resource: ResourceInfo,
    changes: mpsc::UnboundedSender<GraphEvent>,
) {
    let mut known: HashMap<(Option<String>, String), Meta> = HashMap::new();
    let mut backoff = Backoff::default();
    let mut version: Option<String> = None;
    let mut synced = false;
    let send = |event: GraphEvent| {
        let _ = changes.send(event);
    };
    loop {
        let resource_version = match version.take() {
            Some(version) => version,
            None => match list_all(&*client, &resource).await {
                Ok((objects, resource_version)) => {
                    let mut seen = HashSet::new();
                    for object in &objects {
                        if let Some(meta) = Meta::of(&resource, object) {
                            seen.insert(key_of(&meta));
                            apply_upsert(&mut known, meta, &send);
                        }
                    }
                    let gone: Vec<_> = known
                        .keys()
                        .filter(|key| !seen.contains(*key))
                        .cloned()
                        .collect();
                    for key in gone {
                        if let Some(meta) = known.remove(&key) {
                            send(GraphEvent::Delete(meta));
                        }
                    }
                    if !synced {
                        synced = true;
                        send(GraphEvent::Synced(SyncKey::Kind(group_kind(&resource))));
                    }
                    resource_version
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        kind = resource.kind(),
                        %error,
                        "garbage collector: list failed, retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let params = WatchParams {
            bookmarks: true,
            timeout: Some(WATCH_TIMEOUT_SECONDS),
            ..WatchParams::default()
        };
        let mut current = resource_version.clone();
        let outcome = match client
            .watch(&resource, None, &params, &resource_version)
            .await
        {
            Err(error) => Err(error),
            Ok(mut events) => {
                let mut seen = 0usize;
                let mut failure = None;
                while let Some(event) = events.next().await {
                    seen += 1;
                    let object_version = match event {
                        Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                            if let Some(meta) = Meta::of(&resource, &object) {
                                apply_upsert(&mut known, meta, &send);
                            }
                            object.metadata.resource_version
                        }
                        Ok(WatchEvent::Deleted(object)) => {
                            if let Some(meta) = Meta::of(&resource, &object) {
                                known.remove(&key_of(&meta));
                                send(GraphEvent::Delete(meta));
                            }
                            object.metadata.resource_version
                        }
                        Ok(WatchEvent::Bookmark(bookmark)) => {
                            Some(bookmark.metadata.resource_version)
                        }
                        Ok(WatchEvent::Error(status)) => {
                            failure = Some(Error::from_status(*status));
                            break;
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    };
                    if let Some(v) = object_version.filter(|v| !v.is_empty()) {
                        current = v;
                    }
                }
                match failure {
                    Some(error) => Err(error),
                    None => Ok(seen),
                }
            }
        };
        match outcome {
            Ok(seen) => {
                if seen == 0 {
                    // A stream that ends at once would make us spin.
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                version = Some(current);
            }
            Err(error) if error.is_gone() || matches!(error, Error::Expired { .. }) => {
                tracing::info!(
                    kind = resource.kind(),
                    "garbage collector: watch history gone, relisting"
                );
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    kind = resource.kind(),
                    %error,
                    "garbage collector: watch failed, resuming in {delay:?}"
                );
                tokio::time::sleep(delay).await;
                version = Some(current);
            }
        }
    }
}

pub(super) fn key_of(meta: &Meta) -> (Option<String>, String) {
    (meta.identity.namespace.clone(), meta.identity.name.clone())
}

/// Records `meta` and sends an add or update; an object replaced under the same name (a new
/// uid) is sent as the old one's delete, then an add.
pub(super) fn apply_upsert(
    known: &mut HashMap<(Option<String>, String), Meta>,
    meta: Meta,
    send: &impl Fn(GraphEvent),
) {
    let old = known.insert(key_of(&meta), meta.clone());
    match old {
        Some(old) if old.identity.uid != meta.identity.uid => {
            send(GraphEvent::Delete(old));
            send(GraphEvent::Upsert {
                old: None,
                new: meta,
            });
        }
        old => send(GraphEvent::Upsert { old, new: meta }),
    }
}

pub(super) async fn list_all(
    client: &dyn Client,
    resource: &ResourceInfo,
) -> Result<(Vec<DynamicObject>, String), Error> {
    let mut params = ListParams {
        limit: Some(PAGE_SIZE),
        ..ListParams::default()
    };
    let mut objects = Vec::new();
    loop {
        let page = client.list(resource, None, &params).await?;
        objects.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => return Ok((objects, page.metadata.resource_version.unwrap_or_default())),
        }
    }
}
