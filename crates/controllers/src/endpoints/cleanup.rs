//! Cleanup: removing what deleted Services leave behind (Endpoints or EndpointSlices), once
//! at start and whenever a Service is deleted.

use super::*;

// ---------------------------------------------------------------------------------------
// Cleanup of what deleted Services leave behind
// ---------------------------------------------------------------------------------------

/// Runs `sweep` for every Service key that is deleted (from the Service informer's feed) and,
/// once `synced` completes, for each key `leftovers` returns; until `shutdown`. A key whose
/// Service exists (again) in the cache is skipped; a failed sweep is retried with per-key
/// backoff.
pub(crate) async fn run_cleanup<S, F>(
    name: &'static str,
    services: Arc<SharedInformer<Service>>,
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
}
