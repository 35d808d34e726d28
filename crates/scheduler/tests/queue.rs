//! The scheduling queue on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use capstan_scheduler::framework::{pod_key, QueuedPodInfo};
use capstan_scheduler::k8s_openapi::api::core::v1::{Pod, PodSpec};
use capstan_scheduler::queue::{ClusterEvent, QueueLocation, SchedulingQueue};
use tokio::time::{timeout, Instant};

const LIMIT: Duration = Duration::from_secs(3600);

fn pod(name: &str, priority: i32) -> Arc<Pod> {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.spec = Some(PodSpec {
        priority: Some(priority),
        ..Default::default()
    });
    Arc::new(p)
}

async fn pop_name(q: &SchedulingQueue) -> String {
    let info: QueuedPodInfo = timeout(LIMIT, q.pop()).await.unwrap().unwrap();
    info.pod.metadata.name.clone().unwrap()
}

#[tokio::test(start_paused = true)]
async fn active_pods_pop_by_priority_then_arrival() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("low", 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add(pod("high", 10));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add(pod("low2", 0));
        assert_eq!(pop_name(&q).await, "high");
        assert_eq!(pop_name(&q).await, "low");
        assert_eq!(pop_name(&q).await, "low2");
        assert_eq!(q.counts(), (0, 0, 0, 3));
    })
    .await
    .unwrap();
}

#[test]
fn backoff_doubles_from_one_second_up_to_ten() {
    let q = SchedulingQueue::default();
    let got: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 10, 10]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pod_comes_back_after_its_backoff() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        let info = q.pop().await.unwrap();
        let started = Instant::now();
        q.requeue(info, false);
        assert_eq!(q.location("default/a"), Some(QueueLocation::Backoff));
        let info = q.pop().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(info.attempts, 2);
        q.requeue(info, false);
        let started = Instant::now();
        q.pop().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unschedulable_pod_waits_for_a_cluster_event() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        let info = q.pop().await.unwrap();
        q.requeue(info, true);
        assert_eq!(q.location("default/a"), Some(QueueLocation::Unschedulable));
        tokio::time::advance(Duration::from_secs(30)).await;
        q.move_all_to_active_or_backoff(ClusterEvent::NodeAdd);
        assert_eq!(q.location("default/a"), Some(QueueLocation::Active));
        assert_eq!(pop_name(&q).await, "a");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_event_during_backoff_moves_the_pod_to_backoff_not_active() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        let info = q.pop().await.unwrap();
        q.requeue(info, true);
        q.move_all_to_active_or_backoff(ClusterEvent::PodDelete);
        assert_eq!(q.location("default/a"), Some(QueueLocation::Backoff));
        let started = Instant::now();
        assert_eq!(pop_name(&q).await, "a");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_event_while_the_pod_is_in_flight_sends_it_to_backoff_instead_of_parking() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        let info = q.pop().await.unwrap();
        q.move_all_to_active_or_backoff(ClusterEvent::NodeAdd);
        q.requeue(info, true);
        assert_eq!(q.location("default/a"), Some(QueueLocation::Backoff));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn unschedulable_pods_are_flushed_after_five_minutes() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        let info = q.pop().await.unwrap();
        let started = Instant::now();
        q.requeue(info, true);
        assert_eq!(pop_name(&q).await, "a");
        assert_eq!(started.elapsed(), Duration::from_secs(300));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_update_of_an_unschedulable_pod_retries_it_and_deleted_pods_never_pop() {
    timeout(LIMIT, async {
        let q = SchedulingQueue::default();
        q.add(pod("a", 0));
        q.add(pod("gone", 5));
        q.delete("default/gone");
        let info = q.pop().await.unwrap();
        assert_eq!(pod_key(&info.pod), "default/a");
        q.requeue(info, true);
        tokio::time::advance(Duration::from_secs(2)).await;
        q.add(pod("a", 1));
        assert_eq!(q.location("default/a"), Some(QueueLocation::Active));
        let info = q.pop().await.unwrap();
        assert_eq!(info.priority(), 1);
        q.done("default/a");
        assert_eq!(q.location("default/a"), None);
        assert_eq!(q.counts(), (0, 0, 0, 0));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_closed_queue_wakes_its_waiter_with_none() {
    timeout(LIMIT, async {
        let q = Arc::new(SchedulingQueue::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.is_none() }
        });
        tokio::task::yield_now().await;
        q.close();
        assert!(waiter.await.unwrap());
    })
    .await
    .unwrap();
}
