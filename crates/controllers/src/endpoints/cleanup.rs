//! Cleanup: removing what deleted Services leave behind (Endpoints or EndpointSlices), once
//! at start and whenever a Service is deleted.

use super::*;
use futures::{Stream, StreamExt};

// ---------------------------------------------------------------------------------------
// Cleanup of what deleted Services leave behind
// ---------------------------------------------------------------------------------------

/// Runs `sweep` for every Service key that is deleted (from the Service informer's feed),
/// for every Service key `written` names (the controller's own objects, as they are added or
/// changed), and, once `synced` completes, for each key `leftovers` returns; until
/// `shutdown`. A key whose Service exists (again) in the cache is skipped; a failed sweep is
/// retried with per-key backoff.
///
/// `written` closes a race: a sync that read the Service just before its deletion may write
/// the Service's object after this cleanup swept it, and no later sync of a deleted Service
/// comes to remove it. That write shows up in `written` and is swept in turn.
pub(crate) async fn run_cleanup<S, F>(
    name: &'static str,
    services: Arc<SharedInformer<Service>>,
    written: impl Stream<Item = ObjectKey> + Send + 'static,
    synced: impl Future<Output = ()> + Send,
    leftovers: impl FnOnce() -> Vec<ObjectKey>,
    sweep: S,
    shutdown: ShutdownHandle,
) where
    S: Fn(ObjectKey) -> F,
    F: Future<Output = Result<(), Error>>,
{
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let mut deltas = services.subscribe();
    let feed_queue = queue.clone();
    let feed = tokio::spawn(async move {
        while let Some(delta) = deltas.recv().await {
            if let Delta::Deleted(service) = delta {
                feed_queue.add(ObjectKey::of(service.as_ref()));
            }
        }
    });
    let written_queue = queue.clone();
    let written_feed = tokio::spawn(async move {
        let mut written = std::pin::pin!(written);
        while let Some(key) = written.next().await {
            written_queue.add(key);
        }
    });
    let work = async {
        synced.await;
        for key in leftovers() {
            queue.add(key);
        }
        while let Some(key) = queue.get().await {
            if services.cache().get(&key).is_some() {
                queue.forget(&key);
                continue;
            }
            match sweep(key.key().clone()).await {
                Ok(()) => queue.forget(&key),
                Err(error) => {
                    tracing::warn!(controller = name, key = %*key, %error, "cleanup failed; retrying");
                    queue.add_rate_limited(key.key().clone());
                }
            }
        }
    };
    tokio::select! {
        () = shutdown.wait() => {}
        () = work => {}
    }
    queue.shut_down();
    feed.abort();
    written_feed.abort();
}

/// The Service keys of `informer`'s objects as they are added or changed, for those `key`
/// maps to one (the controller's own objects); the `written` feed of [`run_cleanup`].
pub(crate) fn written_keys<K: Resource>(
    informer: &SharedInformer<K>,
    key: impl Fn(&K) -> Option<ObjectKey> + Send + 'static,
) -> impl Stream<Item = ObjectKey> + Send + 'static {
    let deltas = informer.subscribe();
    futures::stream::unfold(deltas, |mut deltas| async move {
        let delta = deltas.recv().await?;
        Some((delta, deltas))
    })
    .filter_map(move |delta| {
        let written = match delta {
            Delta::Added(object) | Delta::Updated { new: object, .. } => key(&object),
            Delta::Deleted(_) => None,
        };
        futures::future::ready(written)
    })
}
