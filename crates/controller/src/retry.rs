//! Helpers shared by the controllers and the components built on them (scheduler, kubelet,
//! node IPAM).
//!
//! [`retry_on_conflict`] is client-go's `retry.RetryOnConflict`: read the latest object,
//! change it, write it with its resourceVersion, and on 409 Conflict (someone wrote in
//! between) do it all again, a bounded number of times. [`retry_on_error`] is the same loop
//! for any error a predicate accepts (client-go's `retry.OnError`). [`Retry`] says how many
//! attempts and how far apart.

use std::future::Future;
use std::time::Duration;

use capstan_api::Error;
use capstan_watch::backoff::{jitter, ExponentialDelay};

/// How many attempts [`retry_on_conflict`] makes and how long it waits between them
/// (client-go's `wait.Backoff` as the `retry` package uses it).
///
/// The wait after failed attempt `n` (0 for the first) is [`ExponentialDelay::delay`]`(n)`,
/// stretched by [`jitter`]. A plain number converts into [`Retry::immediate`]: that many
/// attempts, one right after the other, which is what Capstan's own components use (a
/// conflict means a newer object is already there to read, so there is nothing to wait for).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    attempts: u32,
    waits: ExponentialDelay,
    jitter: f64,
}

impl Retry {
    /// client-go's `retry.DefaultRetry`: 5 attempts, 10 ms apart, each wait stretched by up to
    /// 10 %. For conflicts, which are cured by reading again.
    pub const DEFAULT: Retry = Retry {
        attempts: 5,
        waits: ExponentialDelay::new(Duration::from_millis(10), Duration::MAX).with_factor(1),
        jitter: 0.1,
    };

    /// client-go's `retry.DefaultBackoff`: 4 attempts, waiting 10, 50 then 250 ms (each
    /// stretched by up to 10 %). For errors that need the other side to make progress.
    pub const DEFAULT_BACKOFF: Retry = Retry {
        attempts: 4,
        waits: ExponentialDelay::new(Duration::from_millis(10), Duration::MAX).with_factor(5),
        jitter: 0.1,
    };

    /// `attempts` attempts in all, with no wait between them. At least one attempt is
    /// always made, so 0 counts as 1.
    pub const fn immediate(attempts: u32) -> Retry {
        Retry::new(
            attempts,
            ExponentialDelay::new(Duration::ZERO, Duration::ZERO),
        )
    }

    /// `attempts` attempts in all (0 counts as 1), waiting `waits.delay(n)` after failed
    /// attempt `n`, without jitter.
    pub const fn new(attempts: u32, waits: ExponentialDelay) -> Retry {
        Retry {
            attempts,
            waits,
            jitter: 0.0,
        }
    }

    /// Stretches each wait by a random factor in `[1, 1 + factor)`.
    pub const fn with_jitter(mut self, factor: f64) -> Retry {
        self.jitter = factor;
        self
    }

    /// How many attempts are made at most (at least 1).
    pub const fn attempts(&self) -> u32 {
        if self.attempts == 0 {
            1
        } else {
            self.attempts
        }
    }

    /// The wait after failed attempt `attempt` (0 for the first), jitter included.
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let wait = self.waits.delay(attempt);
        if wait.is_zero() {
            return wait;
        }
        jitter(wait, self.jitter)
    }
}

impl From<u32> for Retry {
    /// [`Retry::immediate`].
    fn from(attempts: u32) -> Retry {
        Retry::immediate(attempts)
    }
}

/// Runs `attempt` until it succeeds, fails with anything but a 409 Conflict, or has been tried
/// `retry.attempts()` times; then returns its last result (so, when every attempt conflicted,
/// the last conflict). client-go's `retry.RetryOnConflict`.
///
/// `attempt` gets the attempt's number, 0 for the first. Each attempt should read the object
/// afresh (or use the one the caller already has on attempt 0, and re-read on the others) and
/// write it with the resourceVersion it read, so that a conflict means "changed since read" and
/// the next attempt works on the newer object. `retry` is a [`Retry`] or a number of attempts.
///
/// The closure returns a future; an `async` block that borrows what it needs (not `async
/// move`) keeps it callable more than once. The whole is `Send` when that future is, so it runs
/// inside reconcilers and spawned tasks.
///
/// ```no_run
/// # use capstan_api::{Api, Error, k8s_openapi::api::core::v1::ConfigMap};
/// # use capstan_api::kube_core::params::PostParams;
/// # async fn example(maps: Api<ConfigMap>) -> Result<(), Error> {
/// use capstan_controller::retry::{retry_on_conflict, Retry};
///
/// retry_on_conflict(Retry::DEFAULT, |_| async {
///     let mut map = maps.get("settings").await?;
///     map.data.get_or_insert_with(Default::default).insert("mode".into(), "on".into());
///     maps.update(&PostParams::default(), &map).await
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
pub async fn retry_on_conflict<T, F, Fut>(retry: impl Into<Retry>, attempt: F) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    retry_on_error(retry, Error::is_conflict, attempt).await
}

/// Runs `attempt` until it succeeds, fails with an error `retriable` refuses, or has been tried
/// `retry.attempts()` times; then returns its last result. client-go's `retry.OnError`;
/// [`retry_on_conflict`] is this with [`Error::is_conflict`].
pub async fn retry_on_error<T, E, F, Fut>(
    retry: impl Into<Retry>,
    mut retriable: impl FnMut(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let retry = retry.into();
    let mut number = 0;
    loop {
        match attempt(number).await {
            Err(error) if number + 1 < retry.attempts() && retriable(&error) => {
                let wait = retry.wait_after(number);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                number += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn conflict() -> Error {
        Error::Conflict {
            resource: "configmaps".into(),
            name: "settings".into(),
            message: Error::OBJECT_MODIFIED.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closure_that_conflicts_twice_then_succeeds_is_retried() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result = retry_on_conflict(Retry::DEFAULT, |attempt| {
            let calls = &calls;
            async move {
                assert_eq!(calls.fetch_add(1, Ordering::SeqCst), attempt);
                if attempt < 2 {
                    Err(conflict())
                } else {
                    Ok("written")
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), "written");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two waits of 10 ms, each stretched by less than 10 % (tokio's timer rounds each up to
        // the millisecond).
        let waited = start.elapsed();
        assert!(
            (Duration::from_millis(20)..=Duration::from_millis(22)).contains(&waited),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_that_always_conflicts_gives_up_with_the_conflict_after_n_attempts() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let error = retry_on_conflict(3, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(conflict())
        })
        .await
        .unwrap_err();
        assert!(error.is_conflict(), "{error}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::ZERO, "a plain count never waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_conflict_error_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let error = retry_on_conflict(Retry::DEFAULT, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::bad_request("no"))
        })
        .await
        .unwrap_err();
        assert_eq!(error.code(), 400);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn zero_attempts_still_makes_one() {
        let calls = AtomicU32::new(0);
        let result = retry_on_conflict(0, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(conflict())
        })
        .await;
        assert!(result.unwrap_err().is_conflict());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_on_error_retries_what_its_predicate_accepts() {
        let result: Result<(), &str> = retry_on_error(
            4,
            |e: &&str| *e == "again",
            |attempt| async move { Err(if attempt < 2 { "again" } else { "fatal" }) },
        )
        .await;
        assert_eq!(result, Err("fatal"));
    }

    #[test]
    fn the_client_go_presets_wait_as_client_go_does() {
        assert_eq!(Retry::DEFAULT.attempts(), 5);
        assert_eq!(Retry::DEFAULT_BACKOFF.attempts(), 4);
        let unjittered = Retry::DEFAULT_BACKOFF.with_jitter(0.0);
        let waits: Vec<u128> = (0..3)
            .map(|n| unjittered.wait_after(n).as_millis())
            .collect();
        assert_eq!(waits, [10, 50, 250]);
        for n in 0..4 {
            let wait = Retry::DEFAULT.wait_after(n);
            assert!(
                (Duration::from_millis(10)..Duration::from_millis(11)).contains(&wait),
                "{wait:?}"
            );
        }
        assert_eq!(Retry::from(3), Retry::immediate(3));
        assert_eq!(Retry::immediate(3).wait_after(2), Duration::ZERO);
    }

    #[tokio::test]
    async fn it_runs_on_a_spawned_task() {
        // The future is Send when the closure's is, so it can run on any worker thread.
        let task = tokio::spawn(async move {
            let calls = AtomicU32::new(0);
            let name = String::from("settings");
            retry_on_conflict(Retry::DEFAULT, |_| async {
                tokio::task::yield_now().await;
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(conflict())
                } else {
                    Ok(name.clone())
                }
            })
            .await
        });
        assert_eq!(task.await.unwrap().unwrap(), "settings");
    }
}
