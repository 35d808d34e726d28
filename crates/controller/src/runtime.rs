//! The controller runtime: the [`Reconciler`] SPI and the [`Controller`] that drives it.
//!
//! A controller makes the world match what one kind of object (the *primary* kind, `K`)
//! asks for. The runtime does the plumbing, in kube-rs' style, over capstan-watch's shared
//! informers and client-go work queue:
//!
//! ```text
//!  informer<K> ─────── key of the object ────────┐
//!  informer<Child> ─── key of its controller ────┤   WorkQueue<ObjectKey>      workers (≤ concurrency)
//!  informer<Other> ─── keys from your mapper ────┴─> dedup, one worker/key ──> reconcile(cache[key], ctx)
//!                                                    delays, per-key backoff        │
//!                           ▲                                                      ▼
//!                           └──────────── Action: Requeue(d) | AwaitChange | Backoff (or error_policy)
//! ```
//!
//! # Contracts
//!
//! - **Who calls what.** You implement [`Reconciler`] (or pass a closure through
//!   [`reconciler_fn`]), build a [`Controller`] and call [`Controller::run`]. The runtime
//!   calls [`Reconciler::reconcile`] from its workers and [`Reconciler::error_policy`] after
//!   each failure; nothing else calls them.
//! - **Triggers.** A key is queued when the primary object changes (added, updated,
//!   deleted), when a child it [owns](Controller::owns) changes (through the child's
//!   `ownerReferences` entry with `controller: true` naming `K`'s apiVersion and kind), when a
//!   [watched](Controller::watches) object changes (through your mapper), and when an
//!   [`Action`] asks for it. Changes are level-triggered: many changes before a worker takes
//!   the key give one reconcile, of the latest state.
//! - **What a reconcile sees.** The latest object in the primary informer cache, read when
//!   the worker takes the key. A key whose object is not cached (it was deleted) is *skipped*,
//!   not reconciled, and counted in [`MetricsSnapshot::skipped`]: clean up external state with
//!   finalizers, which keep the object (with a `deletionTimestamp`) until the reconciler
//!   removes them.
//! - **Ordering and concurrency.** At most [`Controller::concurrency`] reconciles run at once,
//!   and never two of the same key: a key that changes while being reconciled is queued again
//!   once that reconcile ends. Reconciles start only after every informer cache (primary,
//!   owned, watched) has synced.
//! - **Idempotency.** Reconcilers must be level-based and idempotent: the same state may be
//!   reconciled any number of times, and the cache may lag the API. See [`Reconciler`].
//! - **Errors.** A reconcile's `Err` is a failed attempt, never fatal: it is counted, logged,
//!   and [`Reconciler::error_policy`] decides when to retry (by default with per-key
//!   exponential backoff from the work queue's rate limiter, reset by the key's next success).
//!   A panicking reconcile is caught and treated as an error. [`ControllerError`] covers only
//!   the controller itself: misbuilt, or caches that do not sync in time.
//! - **Shutdown.** [`ShutdownHandle::shut_down`] (or a
//!   [`graceful_shutdown_on`](Controller::graceful_shutdown_on) signal) stops workers from
//!   taking keys; the reconciles in flight finish; then [`Controller::run`] returns `Ok(())`.
//!   Reconcilers can notice with [`Context::is_shutting_down`].
//! - **Bundling.** [`ManagedController`] holds a [`Controller`] with the reconciler it runs
//!   (and companion tasks), so a concrete controller is a type alias and a constructor.
//! - **Metrics.** [`Controller::metrics`] gives live counters (reconciles, errors, panics,
//!   skipped keys), reconcile durations and the work queue's figures (depth, retries,
//!   latencies) as a [`MetricsSnapshot`].
//!
//! # Example
//!
//! A controller for a custom `Widget` kind that keeps one ConfigMap per widget, reconciled
//! again when the ConfigMap changes (it is owned) and every five minutes:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
//! use capstan_api::kube_core::ObjectMeta;
//! use capstan_api::{Client, Resource};
//! use capstan_controller::runtime::{reconciler_fn, Action, Context, Controller};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! struct Widget {
//!     metadata: ObjectMeta,
//! }
//! capstan_api::resource!(Widget, group = "example.com", version = "v1", kind = "Widget", plural = "widgets", scope = Namespaced);
//!
//! async fn run(client: Arc<dyn Client>) -> Result<(), Box<dyn std::error::Error>> {
//!     let controller = Controller::<Widget>::from_client(client.clone())
//!         .owns::<ConfigMap>()
//!         .concurrency(8)
//!         .graceful_shutdown_on(async { /* e.g. tokio::signal::ctrl_c() */ });
//!     let reconciler = reconciler_fn(move |widget: Arc<Widget>, ctx: Context| {
//!         let client = client.clone();
//!         async move {
//!             // Read, compare, write only the difference (with an ownerReference back to
//!             // the widget, `controller: true`), e.g. through `Api::<ConfigMap>`.
//!             let _ = (client, widget, ctx.key());
//!             Ok::<_, capstan_api::Error>(Action::requeue(Duration::from_secs(300)))
//!         }
//!     });
//!     controller.run(reconciler).await?;
//!     Ok(())
//! }
//! ```

use std::time::Duration;

mod controller;
mod managed;
mod metrics;
mod reconciler;

pub use capstan_watch::queue::{DurationStats, QueueMetrics};
pub use capstan_watch::ObjectKey;
pub use controller::{
    add_controller_index, controlled_or_orphans, controller_owner_key, controller_reference,
    Controller, ShutdownHandle, CONTROLLER_UID_INDEX, DEFAULT_CONCURRENCY,
};
pub use managed::ManagedController;
pub use metrics::{ControllerMetrics, MetricsSnapshot};
pub use reconciler::{
    reconciler_fn, Action, BackoffOnError, Context, ErrorPolicy, FnReconciler, Reconciler,
};

/// Why a [`Controller`] could not run. Reconcile errors are not here: they are the
/// reconciler's own type, handled by its [`Reconciler::error_policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// [`Controller::owns`] or [`Controller::watches`] named a kind, but the controller was
    /// built from a bare informer, with no [`InformerFactory`](capstan_watch::InformerFactory)
    /// to take that kind's informer from. A programming error, not retryable: build the
    /// controller with [`Controller::new`] or [`Controller::with_factory`], or pass the
    /// informer ([`Controller::owns_informer`], [`Controller::watches_informer`]).
    #[error("controller {controller}: no informer factory to watch {kind} with; give one, or the informer")]
    NoInformerFactory {
        /// The controller's name.
        controller: String,
        /// The kind that has no informer.
        kind: String,
    },
    /// The controller was given zero workers ([`Controller::concurrency`]). Not retryable.
    #[error("controller {controller}: concurrency must be at least 1")]
    ZeroConcurrency {
        /// The controller's name.
        controller: String,
    },
    /// Some caches did not sync within [`Controller::sync_timeout`]: the API is unreachable,
    /// or does not serve those kinds, or listing them is forbidden. Retryable: running the
    /// controller again waits again (the informers keep retrying meanwhile).
    #[error("controller {controller}: caches of {kinds:?} not synced within {timeout:?}")]
    CacheSyncTimeout {
        /// The controller's name.
        controller: String,
        /// The kinds whose caches had not synced.
        kinds: Vec<String>,
        /// The timeout that passed.
        timeout: Duration,
    },
}

impl ControllerError {
    /// Whether running the controller again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ControllerError::CacheSyncTimeout { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capstan_api::k8s_openapi::api::apps::v1::ReplicaSet;
    use capstan_api::k8s_openapi::api::core::v1::{Namespace, Pod};
    use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use capstan_api::kube_core::ObjectMeta;

    use super::*;

    fn owned_pod(namespace: &str, owners: Vec<OwnerReference>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some("web-abc".into()),
                owner_references: Some(owners),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn owner(
        api_version: &str,
        kind: &str,
        name: &str,
        controller: Option<bool>,
    ) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn the_controlling_owner_of_the_primary_kind_is_found_in_the_childs_namespace() {
        let pod = owned_pod(
            "prod",
            vec![
                owner("apps/v1", "ReplicaSet", "not-controller", None),
                owner("apps/v1", "Deployment", "other-kind", Some(true)),
                owner("apps/v1", "ReplicaSet", "web", Some(true)),
            ],
        );
        assert_eq!(
            controller_owner_key::<ReplicaSet, _>(&pod),
            Some(ObjectKey::namespaced("prod", "web"))
        );
    }

    #[test]
    fn owner_references_must_match_api_version_and_be_the_controller() {
        let wrong_version = owned_pod(
            "prod",
            vec![owner("apps/v1beta2", "ReplicaSet", "web", Some(true))],
        );
        assert_eq!(controller_owner_key::<ReplicaSet, _>(&wrong_version), None);
        let not_controller = owned_pod(
            "prod",
            vec![owner("apps/v1", "ReplicaSet", "web", Some(false))],
        );
        assert_eq!(controller_owner_key::<ReplicaSet, _>(&not_controller), None);
        assert_eq!(controller_owner_key::<ReplicaSet, _>(&Pod::default()), None);
    }

    #[test]
    fn a_cluster_scoped_owner_is_keyed_by_name_alone() {
        let pod = owned_pod("prod", vec![owner("v1", "Namespace", "prod", Some(true))]);
        assert_eq!(
            controller_owner_key::<Namespace, _>(&pod),
            Some(ObjectKey::cluster("prod"))
        );
    }

    #[tokio::test]
    async fn a_closure_reconciler_gets_the_context_and_its_error_policy_decides() {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let reconciler = reconciler_fn(|pod: Arc<Pod>, ctx: Context| async move {
                if ctx.retries() > 2 {
                    return Err(format!("{} failed too often", ctx.key()));
                }
                assert_eq!(pod.metadata.name.as_deref(), Some("web-abc"));
                Ok(Action::requeue(Duration::from_secs(ctx.retries().into())))
            })
            .with_error_policy(|_pod: Arc<Pod>, error: &String, ctx: &Context| {
                assert!(error.contains("prod/web-abc"));
                assert_eq!(ctx.controller(), "pods");
                Action::await_change()
            });
            let pod = Arc::new(owned_pod("prod", Vec::new()));
            let ctx = Context::new("pods", ObjectKey::namespaced("prod", "web-abc"));
            assert!(!ctx.is_shutting_down());
            assert_eq!(
                reconciler
                    .reconcile(pod.clone(), &ctx.clone().with_retries(1))
                    .await,
                Ok(Action::Requeue(Duration::from_secs(1)))
            );
            let ctx = ctx.with_retries(3);
            let error = reconciler.reconcile(pod.clone(), &ctx).await.unwrap_err();
            assert_eq!(
                reconciler.error_policy(pod.clone(), &error, &ctx),
                Action::AwaitChange
            );

            // Shared as a trait object, with the default policy.
            let shared: Arc<dyn Reconciler<Pod, Error = String>> =
                Arc::new(reconciler_fn(|_pod: Arc<Pod>, _ctx: Context| async {
                    Err::<Action, _>("nope".to_string())
                }));
            let error = shared.reconcile(pod.clone(), &ctx).await.unwrap_err();
            assert_eq!(shared.error_policy(pod, &error, &ctx), Action::Backoff);
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn only_a_sync_timeout_is_retryable() {
        let timeout = ControllerError::CacheSyncTimeout {
            controller: "widget".into(),
            kinds: vec!["Widget.example.com".into()],
            timeout: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable());
        assert!(timeout.to_string().contains("Widget.example.com"));
        assert!(!ControllerError::ZeroConcurrency {
            controller: "widget".into()
        }
        .is_retryable());
    }
}
