//! Unit tests of the work queue, on tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use tokio::task::yield_now;
use tokio::time::{advance, timeout};

use super::*;

use capstan_api::testing::within;

/// How long a test may take before it fails as hung. On the paused clock it fires as soon
/// as nothing else can run.
const LIMIT: Duration = Duration::from_secs(60);

async fn yield_a_few_times() {
    for _ in 0..10 {
        yield_now().await;
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[tokio::test(start_paused = true)]
async fn a_key_added_twice_before_it_is_taken_is_processed_once() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);

        assert_eq!(*queue.get().await.unwrap(), "a");
        assert_eq!(*queue.get().await.unwrap(), "b");
        assert!(queue.is_empty());
        assert!(timeout(secs(1), queue.get()).await.is_err());
        assert_eq!(queue.metrics().adds, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_never_handed_to_two_workers_at_once() {
    within(LIMIT, async {
        const KEYS: usize = 4;
        let queue = WorkQueue::<usize>::new();
        let in_flight: Arc<Vec<AtomicBool>> =
            Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
        let overlaps = Arc::new(AtomicUsize::new(0));
        let processed = Arc::new(AtomicUsize::new(0));

        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (queue, in_flight) = (queue.clone(), Arc::clone(&in_flight));
                let (overlaps, processed) = (Arc::clone(&overlaps), Arc::clone(&processed));
                tokio::spawn(async move {
                    while let Some(key) = queue.get().await {
                        if in_flight[*key].swap(true, SeqCst) {
                            overlaps.fetch_add(1, SeqCst);
                        }
                        for _ in 0..3 {
                            yield_now().await;
                        }
                        in_flight[*key].store(false, SeqCst);
                        processed.fetch_add(1, SeqCst);
                        key.done();
                    }
                })
            })
            .collect();

        for round in 0..5_000 {
            queue.add(round % KEYS);
            yield_now().await;
        }
        queue.shut_down_with_drain().await;
        for worker in workers {
            worker.await.unwrap();
        }

        assert_eq!(overlaps.load(SeqCst), 0);
        assert!(processed.load(SeqCst) >= KEYS);
        let metrics = queue.metrics();
        assert_eq!((metrics.depth, metrics.processing), (0, 0));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_key_re_added_while_being_processed_runs_again_after_done() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add("a");
        let first = queue.get().await.unwrap();

        queue.add("a");
        queue.add("a");
        assert_eq!(queue.len(), 0, "a key in flight is not queued");
        assert!(timeout(secs(1), queue.get()).await.is_err());

        first.done();
        assert_eq!(*queue.get().await.unwrap(), "a");
        assert_eq!(queue.metrics().adds, 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_get_cancelled_after_being_woken_passes_the_key_to_another_waiting_worker() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        let first = tokio::spawn({
            let queue = queue.clone();
            async move { queue.get().await.map(|key| *key) }
        });
        let second = tokio::spawn({
            let queue = queue.clone();
            async move { queue.get().await.map(|key| *key) }
        });
        yield_a_few_times().await;

        queue.add("a");
        first.abort();
        assert_eq!(second.await.unwrap(), Some("a"));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_delayed_add_fires_after_its_delay_and_not_before() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("a", secs(10));
        assert_eq!(queue.metrics().waiting, 1);

        assert!(timeout(ms(9_999), queue.get()).await.is_err());
        assert_eq!(queue.len(), 0);

        assert_eq!(*queue.get().await.unwrap(), "a");
        assert_eq!(start.elapsed(), secs(10));
        assert_eq!(queue.metrics().waiting, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_adds_at_once() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add_after("a", Duration::ZERO);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.metrics().waiting, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_earliest_of_several_delayed_adds_of_a_key_wins() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("a", secs(10));
        queue.add_after("a", secs(3));
        queue.add_after("a", secs(7));
        assert_eq!(queue.metrics().waiting, 1);

        let key = queue.get().await.unwrap();
        assert_eq!((*key, start.elapsed()), ("a", secs(3)));
        key.done();

        assert!(
            timeout(secs(20), queue.get()).await.is_err(),
            "the superseded timers do not add the key again"
        );
    })
    .await;
}

#[test]
fn exponential_backoff_doubles_from_5ms_up_to_1000s_and_forget_resets_it() {
    let backoff = ExponentialBackoff::default();
    for expected in [5, 10, 20, 40, 80] {
        assert_eq!(backoff.when(&"a"), ms(expected));
    }
    let mut expected = ms(160);
    for _ in 5..100 {
        assert_eq!(backoff.when(&"a"), expected.min(secs(1000)));
        expected = expected.saturating_mul(2);
    }
    assert_eq!(backoff.when(&"a"), secs(1000));
    assert_eq!(backoff.retries(&"a"), 101);
    assert_eq!(backoff.when(&"b"), ms(5), "each key backs off on its own");

    backoff.forget(&"a");
    assert_eq!(backoff.retries(&"a"), 0);
    assert_eq!(backoff.when(&"a"), ms(5));
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_allows_a_burst_of_100_then_spaces_retries_by_100ms() {
    within(LIMIT, async {
        let bucket = TokenBucket::default();
        for key in 0..100 {
            assert_eq!(bucket.when(&key), Duration::ZERO);
        }
        assert_eq!(bucket.when(&100), ms(100));
        assert_eq!(bucket.when(&101), ms(200));
        assert_eq!(bucket.when(&102), ms(300));

        // One second refills ten tokens, three of which were reserved already.
        advance(secs(1)).await;
        for key in 0..7 {
            assert_eq!(bucket.when(&key), Duration::ZERO);
        }
        assert_eq!(bucket.when(&7), ms(100));
        assert_eq!(RateLimiter::<i32>::retries(&bucket, &7), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_of_waits_as_long_as_the_slower_limiter() {
    within(LIMIT, async {
        let limiter = MaxOf::new(ExponentialBackoff::default(), TokenBucket::new(1.0, 1));
        assert_eq!(limiter.when(&"a"), ms(5), "the backoff is slower");
        assert_eq!(limiter.when(&"a"), secs(1), "the bucket is slower");
        assert_eq!(limiter.retries(&"a"), 2);

        limiter.forget(&"a");
        assert_eq!(limiter.retries(&"a"), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_out_the_queued_keys_then_returns_none() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.shut_down();
        assert!(queue.is_shutting_down());

        assert_eq!(*queue.get().await.unwrap(), "a");
        assert_eq!(*queue.get().await.unwrap(), "b");
        assert!(queue.get().await.is_none());
        assert!(queue.get().await.is_none());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_wakes_a_waiting_get() {
    within(LIMIT, async {
        let queue = WorkQueue::<&str>::new();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.get().await.is_none() }
        });
        yield_a_few_times().await;

        queue.shut_down();
        assert!(waiting.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn adds_after_shutdown_are_ignored() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add_after("waiting", secs(1));
        queue.shut_down();

        queue.add("a");
        queue.add_after("b", secs(1));
        queue.add_rate_limited("c");

        assert!(queue.get().await.is_none());
        let metrics = queue.metrics();
        assert_eq!((metrics.adds, metrics.retries), (0, 0));
        assert_eq!((metrics.depth, metrics.waiting), (0, 0));
        assert_eq!(queue.num_requeues(&"c"), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shut_down_with_drain_waits_for_the_keys_in_flight() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add("a");
        let in_flight = queue.get().await.unwrap();

        assert!(timeout(secs(1), queue.shut_down_with_drain())
            .await
            .is_err());
        assert!(queue.is_shutting_down());

        let drain = tokio::spawn({
            let queue = queue.clone();
            async move { queue.shut_down_with_drain().await }
        });
        yield_a_few_times().await;
        assert!(!drain.is_finished());

        in_flight.done();
        drain.await.unwrap();
        assert!(queue.get().await.is_none());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn metrics_reflect_depth_adds_retries_and_latencies() {
    within(LIMIT, async {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        let metrics = queue.metrics();
        assert_eq!((metrics.depth, metrics.processing, metrics.adds), (2, 0, 2));

        advance(secs(3)).await;
        let a = queue.get().await.unwrap();
        advance(secs(1)).await;
        let b = queue.get().await.unwrap();
        advance(secs(2)).await;

        let metrics = queue.metrics();
        assert_eq!((metrics.depth, metrics.processing), (0, 2));
        assert_eq!(
            metrics.queue_latency,
            DurationStats {
                count: 2,
                sum: secs(7),
                max: secs(4),
                // Both between 1 s and 10 s.
                buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            }
        );
        assert_eq!(metrics.queue_latency.mean(), Some(ms(3_500)));
        assert_eq!(metrics.longest_running_processor, secs(3));
        assert_eq!(metrics.unfinished_work, secs(5));

        a.done();
        drop(b);
        queue.add_rate_limited("a");
        queue.add_rate_limited("a");

        let metrics = queue.metrics();
        assert_eq!(
            metrics.work_duration,
            DurationStats {
                count: 2,
                sum: secs(5),
                max: secs(3),
                buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            }
        );
        assert_eq!(
            (metrics.processing, metrics.unfinished_work),
            (0, Duration::ZERO)
        );
        assert_eq!((metrics.retries, metrics.waiting), (2, 1));
        assert_eq!(queue.num_requeues(&"a"), 2);
        queue.forget(&"a");
        assert_eq!(queue.num_requeues(&"a"), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_timer_task_ends_when_the_queue_is_dropped() {
    within(LIMIT, async {
        let before = alive_tasks();
        let queue = WorkQueue::new();
        queue.add_after("a", secs(3600));
        yield_a_few_times().await;
        assert_eq!(alive_tasks(), before + 1);

        drop(queue);
        yield_a_few_times().await;
        assert_eq!(alive_tasks(), before);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_timer_task_ends_at_shutdown_and_drops_the_delayed_keys() {
    within(LIMIT, async {
        let before = alive_tasks();
        let queue = WorkQueue::new();
        queue.add_after("a", secs(1));
        yield_a_few_times().await;
        assert_eq!(alive_tasks(), before + 1);

        queue.shut_down();
        yield_a_few_times().await;
        assert_eq!(alive_tasks(), before);
        assert_eq!(queue.metrics().waiting, 0);
        assert!(queue.get().await.is_none());
    })
    .await;
}
