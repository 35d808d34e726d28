//! The event recorder's spam filter and aggregation over the in-process registry, on a fake
//! clock: client-go's defaults (a burst of 25 Events per source and object, one more every
//! 5 minutes), repeats patched into one Event, similar ones combined.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::ListParams;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions, COMBINED_MESSAGE_PREFIX};

const LIMIT: Duration = Duration::from_secs(10);

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

/// A clock the test moves, in whole seconds.
fn fake_clock() -> (
    Arc<AtomicI64>,
    impl Fn() -> Timestamp + Send + Sync + 'static,
) {
    let now = Arc::new(AtomicI64::new(1_750_000_000));
    let reading = now.clone();
    (now, move || {
        Timestamp::from_second(reading.load(Ordering::SeqCst)).unwrap()
    })
}

async fn events(client: &Arc<dyn Client>) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_source_may_record_25_events_about_an_object_then_one_per_5_minutes() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let (now, clock) = fake_clock();
        let broadcaster =
            EventBroadcaster::new(client.clone(), EventOptions::default().clock(clock));
        let kubelet = broadcaster.recorder("kubelet").with_host("node-1");
        let web = pod("web");
        for i in 0..30 {
            kubelet.normal(&web, format!("Reason{i}"), "something happened");
        }
        // Another object and another source are not held back by web's bucket.
        kubelet.normal(&pod("db"), "Pulled", "Pulled image");
        broadcaster
            .recorder("scheduler")
            .normal(&web, "Scheduled", "Assigned");
        broadcaster.flush().await;
        assert_eq!(events(&client).await.len(), 27);
        let metrics = broadcaster.metrics();
        assert_eq!((metrics.created, metrics.filtered), (27, 5));

        now.fetch_add(299, Ordering::SeqCst);
        kubelet.normal(&web, "Late", "too early still");
        broadcaster.flush().await;
        assert_eq!(broadcaster.metrics().filtered, 6);
        now.fetch_add(1, Ordering::SeqCst);
        kubelet.normal(&web, "Later", "a token came back");
        broadcaster.flush().await;
        assert_eq!(broadcaster.metrics().created, 28);
        assert!(events(&client)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Later")));
        broadcaster.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_repeat_patches_the_event_and_similar_ones_beyond_ten_are_combined() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let (now, clock) = fake_clock();
        let broadcaster =
            EventBroadcaster::new(client.clone(), EventOptions::default().clock(clock));
        let recorder = broadcaster.recorder("replicaset-controller");
        let web = pod("web");
        recorder.warning(&web, "FailedCreate", "quota exceeded");
        now.fetch_add(5, Ordering::SeqCst);
        recorder.warning(&web, "FailedCreate", "quota exceeded");
        broadcaster.flush().await;
        let written = events(&client).await;
        assert_eq!(written.len(), 1, "a repeat is no second object");
        let event = &written[0];
        assert_eq!(event.count, Some(2));
        let (first, last) = (
            event.first_timestamp.as_ref().unwrap().0,
            event.last_timestamp.as_ref().unwrap().0,
        );
        assert_eq!(last.as_second() - first.as_second(), 5);
        assert_eq!(broadcaster.metrics().patched, 1);

        for i in 0..12 {
            recorder.warning(&web, "FailedMount", format!("volume {i} missing"));
        }
        broadcaster.flush().await;
        let mounts: Vec<Event> = events(&client)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedMount"))
            .collect();
        let combined: Vec<&Event> = mounts
            .iter()
            .filter(|e| {
                e.message
                    .as_deref()
                    .unwrap()
                    .starts_with(COMBINED_MESSAGE_PREFIX)
            })
            .collect();
        assert_eq!(mounts.len(), 10, "nine on their own, then one combined");
        assert_eq!(combined.len(), 1);
        assert_eq!(combined[0].count, Some(3));
        assert_eq!(
            combined[0].message.as_deref(),
            Some(format!("{COMBINED_MESSAGE_PREFIX}volume 11 missing").as_str())
        );
        broadcaster.shutdown().await;
    })
    .await;
}
