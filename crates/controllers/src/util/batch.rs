//! Kubernetes' `slowStartBatch`: many similar API calls in growing batches, stopping at the
//! first batch with a failure, so a quota or a bad template costs one failed request.

use std::future::Future;

use capstan_api::Error;

/// Runs `count` calls of `call` in batches of 1, 2, 4, ..., stopping after the first batch
/// with a failure. Returns how many succeeded and the first error.
pub async fn slow_start_batch<F, Fut>(
    count: usize,
    initial: usize,
    call: F,
) -> (usize, Option<Error>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| call())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, error) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 4 {
                    Err(Error::internal("quota"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the fifth call (in the batch of 4) fails, the batch completes.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
        assert_eq!(ok, 6);
        assert!(error.is_some());
    }
}
