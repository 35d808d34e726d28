//! Time limits for async tests: every Capstan test (and yours) runs under one.
//!
//! - [`within`] and [`within_named`]: run a future, panic if it takes longer than a limit.
//! - [`eventually`] and [`eventually_some`]: poll a condition every [`POLL_INTERVAL`] until it
//!   holds, panic if it still does not after a limit.
//!
//! Each panics with the limit, what was awaited (when described) and the file and line of the
//! call, so a hung test points at the line that hung. They need a tokio runtime with the time
//! driver (`#[tokio::test]` has one).
//!
//! ```
//! use std::time::Duration;
//! use capstan_api::testing::{eventually, within};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let answer = within(Duration::from_secs(1), async { 42 }).await;
//! assert_eq!(answer, 42);
//!
//! let started = std::time::Instant::now();
//! eventually(Duration::from_secs(1), "50 ms to pass", || async move {
//!     started.elapsed() >= Duration::from_millis(50)
//! })
//! .await;
//! # });
//! ```

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

/// How often [`eventually`] and [`eventually_some`] check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs `future` to its end and returns its output.
///
/// # Panics
///
/// When `future` has not finished after `limit`: the message names the limit and the caller's
/// file and line.
#[track_caller]
pub fn within<F: Future>(limit: Duration, future: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    deadline(limit, future, move || {
        format!("test timed out after {limit:?} (within at {caller})")
    })
}

/// [`within`], with a description of what is awaited for the panic message.
///
/// # Panics
///
/// When `future` has not finished after `limit`: the message names `description`, the limit
/// and the caller's file and line.
#[track_caller]
pub fn within_named<F: Future>(
    limit: Duration,
    description: impl Into<String>,
    future: F,
) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    let description = description.into();
    deadline(limit, future, move || {
        format!("timed out after {limit:?} waiting for {description} (at {caller})")
    })
}

/// Runs `future` to its end, or panics with `message()` once `limit` has passed.
async fn deadline<F: Future>(
    limit: Duration,
    future: F,
    message: impl FnOnce() -> String,
) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{}", message()),
    }
}

/// Checks `condition` at once, then every [`POLL_INTERVAL`], until it returns `true`.
/// `description` says what is awaited ("3 running pods").
///
/// # Panics
///
/// When `condition` still returns `false` after `limit` (or its last check is still running
/// then): the message names `description`, the limit, the number of checks and the caller's
/// file and line.
#[track_caller]
pub fn eventually<C, Fut>(
    limit: Duration,
    description: impl Into<String>,
    mut condition: C,
) -> impl Future<Output = ()>
where
    C: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = Location::caller();
    let description = description.into();
    async move {
        poll(limit, &description, caller, move || {
            let check = condition();
            async move { check.await.then_some(()) }
        })
        .await
    }
}

/// Checks `condition` at once, then every [`POLL_INTERVAL`], until it returns `Some`, and
/// returns that value. `description` says what is awaited.
///
/// # Panics
///
/// When `condition` still returns `None` after `limit`; the message is [`eventually`]'s.
#[track_caller]
pub fn eventually_some<T, C, Fut>(
    limit: Duration,
    description: impl Into<String>,
    condition: C,
) -> impl Future<Output = T>
where
    C: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    let description = description.into();
    async move { poll(limit, &description, caller, condition).await }
}

async fn poll<T, C, Fut>(
    limit: Duration,
    description: &str,
    caller: &'static Location<'static>,
    mut condition: C,
) -> T
where
    C: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut checks = 0u64;
    let polling = async {
        loop {
            checks += 1;
            if let Some(value) = condition().await {
                return value;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    match tokio::time::timeout(limit, polling).await {
        Ok(value) => value,
        Err(_) => panic!(
            "condition not met after {limit:?} ({checks} checks): {description} (eventually at {caller})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn within_returns_the_output_of_a_future_that_finishes_in_time() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, 7);
        assert_eq!(
            within_named(Duration::from_secs(1), "seven", async { 7 }).await,
            7
        );
    }

    #[tokio::test]
    #[should_panic(expected = "test timed out after 50ms (within at crates/api/src/testing.rs:")]
    async fn within_panics_with_the_limit_and_the_calling_line() {
        within(SHORT, std::future::pending::<()>()).await;
    }

    #[tokio::test]
    #[should_panic(
        expected = "timed out after 50ms waiting for the answer (at crates/api/src/testing.rs:"
    )]
    async fn within_named_panics_with_the_description() {
        within_named(SHORT, "the answer", std::future::pending::<()>()).await;
    }

    #[tokio::test]
    async fn eventually_polls_until_the_condition_holds() {
        let checks = AtomicUsize::new(0);
        eventually(Duration::from_secs(1), "the third check", || async {
            checks.fetch_add(1, Ordering::SeqCst) + 1 >= 3
        })
        .await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn eventually_some_returns_the_first_value() {
        let checks = AtomicUsize::new(0);
        let value = eventually_some(Duration::from_secs(1), "a value", || async {
            let n = checks.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 2).then_some(n * 10)
        })
        .await;
        assert_eq!(value, 20);
    }

    #[tokio::test]
    #[should_panic(expected = "condition not met after 50ms (")]
    async fn eventually_panics_with_the_limit() {
        eventually(SHORT, "never", || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "checks): 3 running pods (eventually at crates/api/src/testing.rs:")]
    async fn eventually_panics_with_what_was_awaited_and_the_calling_line() {
        eventually(SHORT, "3 running pods", || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "): a value (eventually at")]
    async fn eventually_some_panics_with_what_was_awaited() {
        eventually_some(SHORT, "a value", || async { None::<u8> }).await;
    }
}
